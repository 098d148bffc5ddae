//! Identity at execution: a node's key was made from its inputs at planning time; `prep`
//! refuses dataset files changed since then instead of storing them under the old key.
use orchestrator::datasets::{Format, RealSource, Split};
use orchestrator::graph::{Node, PrepNode};
use orchestrator::suite::Source;
use std::path::Path;

fn write_folder(root: &Path) {
    for (class, shade) in [("a", 40u8), ("b", 200)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..6u8 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([shade, i, 0]))
                .save(root.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
}

#[test]
fn prep_refuses_files_changed_since_planning() {
    let d = std::env::temp_dir().join(format!("vtab-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let root = d.join("data");
    write_folder(&root);
    let source = RealSource {
        format: Format::Imagefolder,
        root: root.clone(),
        dtd_split: None,
        train_csv: None,
        test_csv: None,
    };
    let planned = orchestrator::datasets::fingerprint(&source).unwrap();
    let node = Node::Prep(PrepNode {
        dataset: "folder".into(),
        source: Source::Real(source),
        source_digest: planned,
        split: Split::Test,
        img_size: 8,
        sample_seed: 0,
    });
    let key = node.fingerprint().key();
    let store = orchestrator::store::Store::open(&d.join("store")).unwrap();
    let spec = orchestrator::exec::write_spec(&store, &key, &node).unwrap();

    // One file replaced between plan and exec (a different size: the fingerprint sees it).
    image::RgbImage::from_pixel(9, 9, image::Rgb([1, 2, 3]))
        .save(root.join("a/0.png"))
        .unwrap();
    let err = orchestrator::exec::exec(&store.root, &key, &spec, true)
        .expect_err("a changed source must be refused")
        .to_string();
    assert!(err.contains("changed since the suite was planned"), "{err}");
    assert!(
        !store.is_complete("prep", &key),
        "nothing stored under the old key"
    );
    std::fs::remove_dir_all(&d).ok();
}
