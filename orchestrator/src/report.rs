//! Tables and plots from finished runs (summary CSV, method x dataset table, SVG plots).
