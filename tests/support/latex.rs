//! Compiling a LaTeX fragment the way a paper would, shared by the test crates that check the
//! report's LaTeX (`#[path = ".../tests/support/latex.rs"] mod pdflatex;` beside `mod skip;`).
//! Must not decide what the fragment holds.
use std::path::Path;
use std::process::Command;

/// Wraps `tex` (a `tabular`) in a minimal document with booktabs, in a landscape page, and
/// runs `pdflatex -halt-on-error` on it in `dir`; panics with pdflatex's log if it fails.
/// Says SKIPPED (`super::skip`) where pdflatex or booktabs is not installed: `./x test`
/// installs both where apt works, and then requires them.
pub fn compiles(dir: &Path, tex: &str, test: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let doc = format!(
        "\\documentclass{{article}}\n\\usepackage[T1]{{fontenc}}\n\\usepackage{{booktabs}}\n\
         \\usepackage[margin=1cm,landscape]{{geometry}}\n\\begin{{document}}\n\\begin{{table}}\n\
         \\centering\\footnotesize\n{tex}\\end{{table}}\n\\end{{document}}\n"
    );
    std::fs::write(dir.join("table.tex"), doc).unwrap();
    let run = Command::new("pdflatex")
        .args(["-halt-on-error", "-interaction=nonstopmode", "table.tex"])
        .current_dir(dir)
        .output();
    let out = match run {
        Ok(o) => o,
        Err(e) => {
            return super::skip::skipped("pdflatex", test, &format!("cannot run pdflatex: {e}"))
        }
    };
    let log = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && log.contains("booktabs.sty' not found") {
        return super::skip::skipped(
            "pdflatex",
            test,
            "booktabs.sty is not installed (Debian: texlive-latex-recommended)",
        );
    }
    assert!(
        out.status.success(),
        "pdflatex failed on the report's LaTeX:\n{log}"
    );
    let pdf = dir
        .join("table.pdf")
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(pdf > 1000, "pdflatex wrote no PDF:\n{log}");
}
