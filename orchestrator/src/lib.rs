//! vtab-orch orchestrator: suite parsing, the content-hashed DAG, the store, the scheduler,
//! the node executors, datasets and the report. Reads top-down in the order below.
pub mod datasets;
pub mod report;
