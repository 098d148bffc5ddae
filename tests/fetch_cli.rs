//! End-to-end: `plan` names the `fetch` command for missing weights, `vtab-orch fetch` gets
//! them from a fake Hugging Face hub on 127.0.0.1 (HF_ENDPOINT), and then `run` works: the
//! issue's `fetch && run` in miniature. Nothing here touches the internet.
#[path = "../orchestrator/tests/support/http.rs"]
mod http;

use http::{Route, Server};
use kernels::{VisionTransformer, VitConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NAME: &str = "vit_tiny_patch16_224.augreg_in21k";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-fetch-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small ViT whose weights file is named like a timm hub checkpoint.
fn suite(d: &Path) -> PathBuf {
    let path = d.join("suite.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"fetched\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n\
             [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
             weights = \"weights/{NAME}.safetensors\"\n\
             [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n\
             [methods.linear]\n"
        ),
    )
    .unwrap();
    path
}

/// timm-named weights of the suite's backbone (with a 1000-class head, as on the hub).
fn weights_bytes(d: &Path) -> Vec<u8> {
    let mut cfg = VitConfig::preset("vit_tiny_patch16_224").unwrap();
    (
        cfg.img_size,
        cfg.patch_size,
        cfg.embed_dim,
        cfg.depth,
        cfg.num_heads,
    ) = (16, 8, 24, 1, 2);
    tch::manual_seed(0);
    let mut vit = VisionTransformer::new(&cfg, tch::Device::Cpu).unwrap();
    let file = d.join("served.safetensors");
    kernels::checkpoint::save_timm(&mut vit, &file).unwrap();
    std::fs::read(&file).unwrap()
}

fn vtab(args: &[&str], hub: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .env("HF_ENDPOINT", hub)
        .env_remove("HF_TOKEN")
        .output()
        .expect("running vtab-orch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plan_names_fetch_and_fetch_then_run_is_the_whole_set_up() {
    let d = dir("weights");
    let s = suite(&d);
    let s = s.to_str().unwrap();
    let server = Server::start();
    let bytes = weights_bytes(&d);
    let path = format!("/timm/{NAME}/resolve/main/model.safetensors");
    let sha = format!("{:x}", Sha256::digest(&bytes));
    server.route(
        &path,
        Route {
            redirect: Some("/cdn/blob".into()),
            headers: vec![("x-linked-etag".into(), format!("\"{sha}\""))],
            ..Default::default()
        },
    );
    server.route(
        "/cdn/blob",
        Route {
            body: bytes.clone(),
            ..Default::default()
        },
    );

    // Missing weights: plan is an invalid suite (exit 2) whose error names the command.
    let o = vtab(&["plan", s, "--gpus", "none"], &server.base);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("vtab-orch fetch {s}")) && err.contains(NAME),
        "plan names the fetch command and the checkpoint:\n{err}"
    );

    // `--only data` leaves the weights alone; nothing was asked of the hub.
    let o = vtab(&["fetch", s, "--only", "data"], &server.base);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(server.requests(&path).is_empty());
    assert!(!d.join(format!("weights/{NAME}.safetensors")).exists());

    let o = vtab(&["fetch", s], &server.base);
    assert!(o.status.success(), "fetch failed:\n{}", stderr(&o));
    assert_eq!(
        std::fs::read(d.join(format!("weights/{NAME}.safetensors"))).unwrap(),
        bytes
    );
    let asked = server.requests(&path).len();
    assert!(asked > 0);

    // Everything is there now: a second fetch downloads nothing, and run works.
    let o = vtab(&["fetch", s], &server.base);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.requests(&path).len(), asked, "nothing fetched twice");
    let o = vtab(&["run", s, "--gpus", "none"], &server.base);
    assert!(o.status.success(), "run after fetch:\n{}", stderr(&o));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_hub_serving_other_bytes_than_it_publishes_leaves_no_weights() {
    let d = dir("tampered");
    let s = suite(&d);
    let s = s.to_str().unwrap();
    let server = Server::start();
    let path = format!("/timm/{NAME}/resolve/main/model.safetensors");
    server.route(
        &path,
        Route {
            body: b"not the published bytes".to_vec(),
            headers: vec![(
                "x-linked-etag".into(),
                format!("\"{:x}\"", Sha256::digest(b"other bytes")),
            )],
            ..Default::default()
        },
    );
    let o = vtab(&["fetch", s, "--only", "weights"], &server.base);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("sha256"), "{}", stderr(&o));
    let weights = d.join("weights");
    let left: Vec<_> = std::fs::read_dir(&weights)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().ends_with(".safetensors")),
        "no weights file in place after a checksum mismatch: {left:?}"
    );
    std::fs::remove_dir_all(&d).ok();
}
