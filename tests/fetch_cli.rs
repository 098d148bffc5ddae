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
             [methods.linear]\n[methods.lora]\nr = 2\ntargets = \"qkv\"\n"
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
    kernels::checkpoint::save_timm(&mut vit, &file, kernels::checkpoint::HeadPolicy::Load).unwrap();
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

    // A peft export of a run on these weights names them by absolute path as its base.
    let out = d.join("exported");
    let o = vtab(
        &["export", s, "--run", "shape lora s0", out.to_str().unwrap()],
        &server.base,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(orchestrator::export::RECORD)).unwrap(),
    )
    .unwrap();
    let base = PathBuf::from(record["base_weights"].as_str().unwrap());
    assert!(base.is_absolute(), "{base:?}");
    assert_eq!(std::fs::read(&base).unwrap(), bytes);

    // Without the weights on this machine a run is still exported by its key (from the
    // store's specs); a label needs the suite's inputs and says to use the key.
    std::fs::rename(d.join("weights"), d.join("weights-away")).unwrap();
    let key = record["train_key"].as_str().unwrap();
    let o = vtab(
        &[
            "export",
            s,
            "--run",
            "shape lora s0",
            d.join("by-label").to_str().unwrap(),
        ],
        &server.base,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("only a train key"), "{}", stderr(&o));
    let by_key = d.join("by-key");
    let o = vtab(
        &[
            "export",
            s,
            "--run",
            &key[..10],
            "--format",
            "merged",
            by_key.to_str().unwrap(),
        ],
        &server.base,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let again: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(by_key.join(orchestrator::export::RECORD)).unwrap(),
    )
    .unwrap();
    assert_eq!(again["train_key"], key);
    assert!(record["top1"].is_number());
    assert_eq!(again["top1"], record["top1"], "the eval entry is found too");
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

/// A small VTAB-1k task folder (lists + PNGs; labels by colour) at `root`.
fn write_task(root: &Path, shift: u8) {
    let colours = [[200u8, 30, 30], [30, 200, 30]];
    let mut lists = [String::new(), String::new(), String::new(), String::new()];
    for i in 0..40u32 {
        let label = (i % 2) as usize;
        let name = format!("images/{i:03}.png");
        let path = root.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let rgb = colours[label].map(|c| c.saturating_add(shift + (i % 7) as u8));
        image::RgbImage::from_pixel(8, 8, image::Rgb(rgb))
            .save(&path)
            .unwrap();
        let line = format!("{name} {label}\n");
        match i {
            0..24 => lists[0] += &line,
            24..30 => lists[1] += &line,
            _ => lists[3] += &line,
        }
        if i < 30 {
            lists[2] += &line;
        }
    }
    let files = [
        "train800.txt",
        "val200.txt",
        "train800val200.txt",
        "test.txt",
    ];
    for (file, text) in files.iter().zip(lists) {
        std::fs::write(root.join(file), text).unwrap();
    }
}

/// `tar czf` of `dir`'s `vtab-1k/` folder (as the NOAH / vtab1k-pytorch archive has it).
fn tar_gz(dir: &Path, out: &Path) {
    let ok = Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg("vtab-1k")
        .status()
        .expect("running tar")
        .success();
    assert!(ok);
}

#[test]
fn vtab1k_archive_from_a_file_or_a_verified_url_is_unpacked_and_checked() {
    let d = dir("vtab1k");
    let suite = d.join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"v1k\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.a]\nformat = \"vtab1k\"\nroot = \"data/vtab-1k/task_a\"\n\
         [datasets.b]\nformat = \"vtab1k\"\nroot = \"data/vtab-1k/task_b\"\n\
         [methods.linear]\n",
    )
    .unwrap();
    let s = suite.to_str().unwrap();
    let installed = d.join("data/vtab-1k");

    // plan names the way in; fetch without the archive says how to give it (exit 1).
    let o = vtab(&["plan", s, "--gpus", "none"], "http://127.0.0.1:9");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--vtab1k FILE"), "{}", stderr(&o));
    let o = vtab(&["fetch", s], "http://127.0.0.1:9");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--vtab1k"), "{}", stderr(&o));

    // An archive without task_b: refused, nothing installed.
    let src = d.join("src");
    write_task(&src.join("vtab-1k/task_a"), 0);
    let partial = d.join("partial.tar.gz");
    tar_gz(&src, &partial);
    let o = vtab(&["fetch", s, "--vtab1k", partial.to_str().unwrap()], "x");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no task folder task_b"),
        "{}",
        stderr(&o)
    );
    assert!(
        !installed.join("task_a").exists(),
        "nothing moved into place"
    );

    // A task whose lists are broken: refused, naming the task.
    write_task(&src.join("vtab-1k/task_b"), 9);
    std::fs::remove_file(src.join("vtab-1k/task_b/val200.txt")).unwrap();
    let broken = d.join("broken.tar.gz");
    tar_gz(&src, &broken);
    let o = vtab(&["fetch", s, "--vtab1k", broken.to_str().unwrap()], "x");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("task task_b"), "{}", stderr(&o));
    assert!(!installed.exists(), "nothing moved into place");

    // A downloaded archive that fails the check is kept (it may be gigabytes) and named.
    let server = Server::start();
    let partial_bytes = std::fs::read(&partial).unwrap();
    server.route(
        "/lab/partial.tar.gz",
        Route {
            body: partial_bytes.clone(),
            ..Default::default()
        },
    );
    let partial_url = format!("{}/lab/partial.tar.gz", server.base);
    let partial_sha = format!("{:x}", Sha256::digest(&partial_bytes));
    let o = vtab(
        &[
            "fetch",
            s,
            "--vtab1k",
            &partial_url,
            "--vtab1k-sha256",
            &partial_sha,
        ],
        "x",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let kept = installed.join(format!(".{}-partial.tar.gz", &partial_sha[..12]));
    assert!(stderr(&o).contains("download is kept at"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&kept).unwrap(), partial_bytes);
    assert!(
        !installed.join("task_a").exists(),
        "nothing moved into place"
    );
    std::fs::remove_dir_all(&installed).unwrap();

    // A root that exists but is incomplete is refused before anything is unpacked.
    write_task(&src.join("vtab-1k/task_b"), 9);
    let good = d.join("vtab-1k.tar.gz");
    tar_gz(&src, &good);
    std::fs::create_dir_all(installed.join("task_a")).unwrap();
    std::fs::write(installed.join("task_a/train800.txt"), "").unwrap();
    let o = vtab(&["fetch", s, "--vtab1k", good.to_str().unwrap()], "x");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("move it away"), "{}", stderr(&o));
    assert!(
        !installed.join("task_b").exists(),
        "nothing moved into place"
    );
    std::fs::remove_dir_all(&installed).unwrap();

    // A URL needs its sha256 (exit 2); with it (and a query string, as presigned links have),
    // the download is verified, unpacked and checked.
    let bytes = std::fs::read(&good).unwrap();
    server.route(
        "/lab/vtab-1k.tar.gz?sig=abc",
        Route {
            body: bytes.clone(),
            ..Default::default()
        },
    );
    let url = format!("{}/lab/vtab-1k.tar.gz?sig=abc", server.base);
    let o = vtab(&["fetch", s, "--vtab1k", &url], "x");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--vtab1k-sha256"), "{}", stderr(&o));
    let sha = format!("{:x}", Sha256::digest(&bytes));
    let o = vtab(
        &["fetch", s, "--vtab1k", &url, "--vtab1k-sha256", &sha],
        "x",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let installed_tasks = |installed: &Path| {
        for t in ["task_a", "task_b"] {
            assert!(
                installed.join(t).join("test.txt").is_file(),
                "{t} installed"
            );
        }
        let mut left: Vec<_> = std::fs::read_dir(installed)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["task_a", "task_b"], "no staging or download left");
    };
    installed_tasks(&installed);

    // An archive made on a Mac (`__MACOSX/`) with one more level (`data/vtab-1k/<task>`),
    // installed from a file into a folder that is a symlink to another place.
    std::fs::remove_dir_all(&installed).unwrap();
    let nested = d.join("nested");
    std::fs::create_dir_all(nested.join("data")).unwrap();
    std::fs::rename(src.join("vtab-1k"), nested.join("data/vtab-1k")).unwrap();
    std::fs::create_dir_all(nested.join("__MACOSX/vtab-1k")).unwrap();
    // Also beside the tasks, where it must not be installed as one.
    std::fs::create_dir_all(nested.join("data/vtab-1k/__MACOSX")).unwrap();
    let mac = d.join("mac.tar.gz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&mac)
        .arg("-C")
        .arg(&nested)
        .args(["data", "__MACOSX"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let elsewhere = d.join("scratch");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &installed).unwrap();
    let o = vtab(&["fetch", s, "--vtab1k", mac.to_str().unwrap()], "x");
    assert!(o.status.success(), "{}", stderr(&o));
    installed_tasks(&elsewhere);
    let o = vtab(&["run", s, "--gpus", "none"], "x");
    assert!(o.status.success(), "run after fetch:\n{}", stderr(&o));
    std::fs::remove_dir_all(&d).ok();
}

/// A dataset with an official archive: `plan` names the archive and the command, and `fetch`
/// goes to `VTAB_ORCH_DATA_MIRROR` for it, refusing bytes that are not torchvision's (the
/// pinned md5), leaving nothing where the reader would look. (The happy path needs the real
/// archive's bytes; orchestrator/tests/fetch.rs covers it with a test catalogue entry.)
#[test]
fn a_missing_archive_dataset_is_named_and_fetched_only_from_verified_bytes() {
    let d = dir("mirror");
    let suite = d.join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"mirror\"\nstore = \"store\"\n[defaults]\nimg_size = 16\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.c]\nformat = \"cifar100\"\nroot = \"data/cifar-100-python\"\n[methods.linear]\n",
    )
    .unwrap();
    let s = suite.to_str().unwrap();
    let o = vtab(&["plan", s], "x");
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("vtab-orch fetch {s}")) && err.contains("cifar-100-python.tar.gz"),
        "{err}"
    );
    let server = Server::start();
    server.route(
        "/~kriz/cifar-100-python.tar.gz",
        Route {
            body: b"not the CIFAR-100 archive".to_vec(),
            ..Default::default()
        },
    );
    let o = Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(["fetch", s, "--only", "data"])
        .env("VTAB_ORCH_DATA_MIRROR", &server.base)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("checksum mismatch") && err.contains("eb9058c3a382ffc7106e4002c42a8d85"),
        "{err}"
    );
    assert!(!server.requests("/~kriz/cifar-100-python.tar.gz").is_empty());
    let data: Vec<_> = std::fs::read_dir(d.join("data"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(data.is_empty(), "nothing left in data/: {data:?}");
    std::fs::remove_dir_all(&d).ok();
}

/// `fetch --dir DIR` (relative to where it runs, not to the suite) puts the weights there and
/// prints the `--set` overrides; `plan` with them finds everything.
#[test]
fn fetch_dir_prints_overrides_that_plan_accepts() {
    let d = dir("dir");
    let s = suite(&d);
    let s = s.to_str().unwrap();
    let server = Server::start();
    let bytes = weights_bytes(&d);
    server.route(
        &format!("/timm/{NAME}/resolve/main/model.safetensors"),
        Route {
            body: bytes.clone(),
            headers: vec![(
                "x-linked-etag".into(),
                format!("\"{:x}\"", Sha256::digest(&bytes)),
            )],
            ..Default::default()
        },
    );
    let elsewhere = d.join("cwd");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(["fetch", s, "--dir", "shared-cache"])
        .current_dir(&elsewhere)
        .env("HF_ENDPOINT", &server.base)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let fetched = elsewhere.join(format!("shared-cache/{NAME}.safetensors"));
    assert_eq!(std::fs::read(&fetched).unwrap(), bytes);
    let err = stderr(&o);
    let sets: Vec<String> = err
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--set '")?.strip_suffix('\''))
        .map(String::from)
        .collect();
    assert_eq!(sets.len(), 1, "one override, for the weights:\n{err}");
    let mut args = vec!["plan", s, "--gpus", "none"];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    let o = vtab(&args, &server.base);
    assert!(o.status.success(), "plan with {sets:?}:\n{}", stderr(&o));

    // Two roots with the same last name would land on one folder under --dir: refused.
    let two = d.join("two.toml");
    std::fs::write(
        &two,
        "name = \"two\"\n[backbone]\narch = \"vit_tiny_patch16_224\"\n\
         [backbone.pretrain]\nimages = 10\n[datasets.a]\nformat = \"dtd\"\nroot = \"data/dtd\"\n\
         [datasets.b]\nformat = \"vtab1k\"\nroot = \"data/vtab-1k/dtd\"\n[methods.linear]\n",
    )
    .unwrap();
    let o = vtab(
        &[
            "fetch",
            two.to_str().unwrap(),
            "--dir",
            d.join("D").to_str().unwrap(),
        ],
        &server.base,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("would both go to"), "{}", stderr(&o));
    assert!(!d.join("D").exists(), "nothing fetched");
    std::fs::remove_dir_all(&d).ok();
}
