//! The shipped real-study suites (suites/*.toml) stay valid and say what they compare with:
//! vtab1k-all reads only the official VTAB-1k lists, vtab1k-vitb16 reads them by default and
//! offers the native-archive draws as a commented block, and the shipped reference table names
//! the suites' datasets. (Their data roots are not here; only parsing is checked.)
use orchestrator::datasets::Format;
use orchestrator::report::load_reference;
use orchestrator::suite::{self, Source, Suite};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> Suite {
    suite::load(path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn format_of(s: &Suite, name: &str) -> Format {
    match &s.datasets[name].source {
        Source::Real(r) => r.format.clone(),
        Source::Synthetic { .. } => panic!("{name} is synthetic"),
    }
}

fn reference_datasets() -> BTreeSet<String> {
    let r = load_reference(&repo().join("docs/reference/vpetl-vitb16-in21k.csv")).unwrap();
    r.rows.into_iter().map(|r| r.dataset).collect()
}

#[test]
fn vtab1k_all_reads_only_the_official_lists() {
    let s = load(&repo().join("suites/vtab1k-all.toml"));
    assert_eq!(s.datasets.len(), 19);
    for name in s.datasets.keys() {
        assert_eq!(format_of(&s, name), Format::Vtab1k, "{name}");
    }
    // The reference table matches the suite's dataset names one for one.
    let names: BTreeSet<String> = s.datasets.keys().cloned().collect();
    assert_eq!(names, reference_datasets());
    assert!(!s.runs.is_empty());
}

/// The vitb16 suite with its "VTAB-1k-sized draws" block uncommented.
fn with_draws(text: &str) -> String {
    let start = text
        .find("# --- VTAB-1k-sized draws")
        .expect("the draws block");
    let end = text
        .find("# --- end of VTAB-1k-sized draws")
        .expect("its end");
    let block: String = text[start..end]
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    format!("{}{block}\n", &text[..start])
}

#[test]
fn vtab1k_vitb16_defaults_to_the_lists_and_offers_the_draws() {
    let path = repo().join("suites/vtab1k-vitb16.toml");
    let s = load(&path);
    let names: Vec<&str> = s.datasets.keys().map(String::as_str).collect();
    assert_eq!(names, ["cifar100", "dtd", "eurosat"]);
    for name in names {
        assert_eq!(format_of(&s, name), Format::Vtab1k, "{name}");
        assert!(reference_datasets().contains(name), "{name}");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("VTAB-1k-sized draws"));

    // The offered native-archive variant parses too, beside the lists.
    let dir: PathBuf = std::env::temp_dir().join(format!("vtab-suites-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let draws = dir.join("vtab1k-vitb16-draws.toml");
    std::fs::write(&draws, with_draws(&text)).unwrap();
    let s = load(&draws);
    for (name, format) in [
        ("cifar100", Format::Vtab1k),
        ("cifar100_draw", Format::Cifar100),
        ("eurosat_draw", Format::Eurosat),
        ("dtd_draw", Format::Dtd),
    ] {
        assert_eq!(format_of(&s, name), format, "{name}");
        assert!(s.runs.iter().any(|r| r.dataset == name), "{name} has runs");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
