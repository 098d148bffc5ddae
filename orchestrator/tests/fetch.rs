//! Downloads against a loopback HTTP server started in this process: archives the tests build
//! themselves and a fake Hugging Face hub. Nothing here touches the internet.
use orchestrator::datasets::{Format, RealSource};
use orchestrator::fetch::{
    download, fetch_archive, fetch_weights, unpack, Archive, ArchiveKind, Checksum, Client,
    FetchError, Quiet, UnpackLimits, WeightsRef, DATA_MIRROR_ENV,
};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use support::http::{Route, Server};

mod support;

fn client() -> Client {
    let mut c = Client::new();
    c.attempts = 3;
    c.backoff = Duration::from_millis(10);
    c
}

fn limits() -> UnpackLimits {
    UnpackLimits::default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn md5(b: &[u8]) -> String {
    hex(&md5::Md5::digest(b))
}

/// A tar.gz with `(path, bytes)` entries; paths are written raw into the header, so `..` and
/// absolute names get through (as in a hostile archive).
fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn dtd_archive() -> Vec<u8> {
    tar_gz(&[
        ("dtd/images/banded/a.jpg", b"jpeg bytes"),
        ("dtd/labels/train1.txt", b"banded/a.jpg\n"),
        ("dtd/labels/val1.txt", b"banded/a.jpg\n"),
        ("dtd/labels/test1.txt", b"banded/a.jpg\n"),
    ])
}

/// The catalogue's DTD entry with the fixture's md5 (the real md5 is for the real archive).
fn dtd_entry(md5: &str) -> Archive {
    Archive {
        url: "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
        file_name: "dtd-r1.0.1.tar.gz",
        kind: ArchiveKind::TarGz,
        md5: Box::leak(md5.to_string().into_boxed_str()),
        inner: "dtd",
    }
}

fn dtd_source(root: &Path) -> RealSource {
    RealSource {
        format: Format::Dtd,
        root: root.to_path_buf(),
        dtd_split: None,
        train_csv: None,
        test_csv: None,
    }
}

const DTD_PATH: &str = "/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz";

/// Tests that set process environment variables run one at a time.
static ENV: Mutex<()> = Mutex::new(());

#[test]
fn dataset_archive_through_the_mirror_unpacks_into_the_readers_layout() {
    let _g = ENV.lock().unwrap();
    let server = Server::start();
    let data = dtd_archive();
    server.route(
        DTD_PATH,
        Route {
            body: data.clone(),
            ..Default::default()
        },
    );
    std::env::set_var(DATA_MIRROR_ENV, &server.base);
    let tmp = tempdir("mirror");
    let src = dtd_source(&tmp.join("data/dtd"));
    let r = fetch_archive(&client(), &src, &dtd_entry(&md5(&data)), &mut Quiet);
    std::env::remove_var(DATA_MIRROR_ENV);
    assert_eq!(r.unwrap(), tmp.join("data/dtd"));
    assert!(tmp.join("data/dtd/labels/test1.txt").is_file());
    assert!(orchestrator::datasets::check_source(&src).is_ok());
    // Only the unpacked folder is left: no archive, .part or staging folder.
    let left: Vec<_> = std::fs::read_dir(tmp.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("dtd")]);
}

#[test]
fn an_interrupted_download_resumes_with_range() {
    let server = Server::start();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    server.route(
        "/big.bin",
        Route {
            body: body.clone(),
            drop_after: Some(70_000),
            ..Default::default()
        },
    );
    let tmp = tempdir("resume");
    let dest = tmp.join("big.bin");
    let url = format!("{}/big.bin", server.base);
    let sum = Checksum::Sha256(sha256(&body));
    download(&client(), &url, &dest, &sum, &[], "by hand", &mut Quiet).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!tmp.join("big.bin.part").exists());
    let reqs = server.requests("/big.bin");
    assert_eq!(reqs.len(), 2, "one dropped GET, one resumed GET");
    assert_eq!(reqs[0].1.get("range"), None);
    assert_eq!(
        reqs[1].1.get("range").map(String::as_str),
        Some("bytes=70000-")
    );
}

#[test]
fn a_wrong_checksum_is_an_error_and_leaves_nothing() {
    let server = Server::start();
    server.route(
        "/f.bin",
        Route {
            body: b"not what you wanted".to_vec(),
            ..Default::default()
        },
    );
    let tmp = tempdir("checksum");
    let dest = tmp.join("f.bin");
    let url = format!("{}/f.bin", server.base);
    let sum = Checksum::Md5("0".repeat(32));
    let err = download(&client(), &url, &dest, &sum, &[], "by hand", &mut Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("expected md5 000"), "{err}");
    assert!(!dest.exists() && !tmp.join("f.bin.part").exists());
}

#[test]
fn a_404_is_an_error_naming_the_url() {
    let server = Server::start();
    let tmp = tempdir("404");
    let url = format!("{}/nope.tar.gz", server.base);
    let sum = Checksum::Md5("0".repeat(32));
    let dest = tmp.join("nope.tar.gz");
    let err = download(&client(), &url, &dest, &sum, &[], "by hand", &mut Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Http { status: 404, .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(
        server.requests("/nope.tar.gz").len(),
        1,
        "a 404 is not retried"
    );
    assert!(std::fs::read_dir(&tmp).unwrap().next().is_none());
}

#[test]
fn without_a_network_the_error_says_what_was_tried_and_how_to_place_files() {
    // A port nobody listens on: bind, read the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempdir("offline");
    let url = format!("http://127.0.0.1:{port}/x.zip");
    let sum = Checksum::Md5("0".repeat(32));
    let dest = tmp.join("x.zip");
    let err = download(
        &client(),
        &url,
        &dest,
        &sum,
        &[],
        "put x.zip in data/",
        &mut Quiet,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, FetchError::Network { attempts: 3, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&url) && msg.contains("put x.zip in data/"),
        "{msg}"
    );
}

#[test]
fn path_traversal_and_escaping_links_are_rejected_and_nothing_is_left() {
    let tmp = tempdir("traversal");
    let hostile: [&[(&str, &[u8])]; 2] = [
        &[("ok/a.txt", b"a"), ("ok/../../evil.txt", b"evil")],
        &[("/tmp/vtab-orch-evil-abs.txt", b"evil")],
    ];
    for (i, entries) in hostile.into_iter().enumerate() {
        let archive = tmp.join(format!("bad{i}.tar.gz"));
        std::fs::write(&archive, tar_gz(entries)).unwrap();
        let staging = tmp.join(format!("stage{i}"));
        let err = unpack(&archive, ArchiveKind::TarGz, &staging, &limits()).unwrap_err();
        assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{err}");
        assert!(
            !staging.exists(),
            "a failed unpack removes its staging folder"
        );
    }
    assert!(!tmp.join("evil.txt").exists());
    assert!(!Path::new("/tmp/vtab-orch-evil-abs.txt").exists());
    // A zip with `..`.
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("../evil.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"evil").unwrap();
    let archive = tmp.join("bad.zip");
    std::fs::write(&archive, z.finish().unwrap().into_inner()).unwrap();
    let err = unpack(
        &archive,
        ArchiveKind::Zip,
        &tmp.join("stage-zip"),
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{err}");
    assert!(!tmp.join("stage-zip").exists());
}

#[test]
fn a_traversal_archive_from_the_mirror_leaves_no_dataset_folder() {
    let _g = ENV.lock().unwrap();
    let server = Server::start();
    let data = tar_gz(&[("dtd/labels/train1.txt", b"x"), ("dtd/../../../evil", b"x")]);
    server.route(
        DTD_PATH,
        Route {
            body: data.clone(),
            ..Default::default()
        },
    );
    std::env::set_var(DATA_MIRROR_ENV, &server.base);
    let tmp = tempdir("mirror-bad");
    let src = dtd_source(&tmp.join("data/dtd"));
    let err = fetch_archive(&client(), &src, &dtd_entry(&md5(&data)), &mut Quiet).unwrap_err();
    std::env::remove_var(DATA_MIRROR_ENV);
    assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{err}");
    assert!(!tmp.join("data/dtd").exists());
    assert!(!tmp.join("data/.dtd.unpacking").exists());
}

#[test]
fn weights_from_the_hub_at_hf_endpoint_are_checked_against_its_sha256() {
    let _g = ENV.lock().unwrap();
    let server = Server::start();
    let weights = b"pretend safetensors".repeat(1000);
    let path = "/timm/vit_tiny_patch16_224.augreg_in21k/resolve/main/model.safetensors";
    server.route(
        path,
        Route {
            redirect: Some("/cdn/blob".into()),
            headers: vec![("x-linked-etag".into(), format!("\"{}\"", sha256(&weights)))],
            ..Default::default()
        },
    );
    server.route(
        "/cdn/blob",
        Route {
            body: weights.clone(),
            ..Default::default()
        },
    );
    std::env::set_var("HF_ENDPOINT", &server.base);
    std::env::set_var("HF_TOKEN", "hf_test_token");
    let tmp = tempdir("hub");
    let dest = tmp.join("weights/vit_tiny_patch16_224.augreg_in21k.safetensors");
    let w = WeightsRef::from_file_name("vit_tiny_patch16_224.augreg_in21k.safetensors").unwrap();
    let r = fetch_weights(&client(), &w, &dest, &mut Quiet);
    // A hub serving other bytes than the sha256 it publishes is refused.
    server.route(
        "/cdn/blob",
        Route {
            body: b"tampered".to_vec(),
            ..Default::default()
        },
    );
    let bad = fetch_weights(&client(), &w, &tmp.join("w2/x.safetensors"), &mut Quiet);
    std::env::remove_var("HF_ENDPOINT");
    std::env::remove_var("HF_TOKEN");
    r.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), weights);
    let reqs = server.requests(path);
    assert!(reqs.iter().any(|(m, _)| m == "HEAD"));
    assert!(reqs
        .iter()
        .all(|(_, h)| h.get("authorization").map(String::as_str) == Some("Bearer hf_test_token")));
    assert!(matches!(bad.unwrap_err(), FetchError::Checksum { .. }));
    assert!(!tmp.join("w2/x.safetensors").exists());
}

/// One entry of [`tar_gz_typed`]: path, type, link target or data.
type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

/// A tar.gz built entry by entry.
fn tar_gz_typed(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        if kind.is_symlink() || kind.is_hard_link() {
            h.set_size(0);
            b.append_link(&mut h, name, std::str::from_utf8(data).unwrap())
                .unwrap();
        } else {
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Every file or link named `name` under `dir` (links not followed).
fn find_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            found.push(p.clone());
        }
        if e.file_type().unwrap().is_dir() {
            found.extend(find_named(&p, name));
        }
    }
    found
}

/// Issue 19's escape: `a/b -> ..`, `a/b/c -> ..`, `a/b/c/d -> ..`, then a file through the
/// chain. Each link alone stays inside; followed in turn they leave three levels up. Links,
/// hard links, devices, pipes and a name given twice are all refused before anything can use
/// them, the message names the entry, and nothing exists afterwards, inside or outside.
#[test]
fn links_devices_and_duplicates_are_refused_and_nothing_is_written_anywhere() {
    use tar::EntryType::{Char, Fifo, Link, Regular, Symlink};
    let tmp = tempdir("contained");
    let deep = tmp.join("x/y/z");
    std::fs::create_dir_all(&deep).unwrap();
    let cases: [(&str, Vec<Entry>, &str); 6] = [
        (
            "chain",
            vec![
                ("a/keep.txt", Regular, b"k"),
                ("a/b", Symlink, b".."),
                ("a/b/c", Symlink, b".."),
                ("a/b/c/d", Symlink, b".."),
                ("a/b/c/d/ESCAPED.txt", Regular, b"escaped"),
            ],
            "`a/b` is a symbolic link",
        ),
        (
            "inner-link",
            vec![("a/t.txt", Regular, b"t"), ("a/l", Symlink, b"t.txt")],
            "`a/l` is a symbolic link",
        ),
        (
            "hard-link",
            vec![("a/t.txt", Regular, b"t"), ("a/h", Link, b"a/t.txt")],
            "`a/h` is a hard link",
        ),
        ("device", vec![("a/dev", Char, b"")], "`a/dev` is a device"),
        (
            "fifo",
            vec![("a/p", Fifo, b"")],
            "`a/p` is a device or pipe",
        ),
        (
            "twice",
            vec![
                ("a/ESCAPED.txt", Regular, b"1"),
                ("a/ESCAPED.txt", Regular, b"2"),
            ],
            "appears twice",
        ),
    ];
    for (name, entries, expect) in cases {
        let archive = tmp.join(format!("{name}.tar.gz"));
        std::fs::write(&archive, tar_gz_typed(&entries)).unwrap();
        let staging = deep.join(format!("stage-{name}"));
        let err = unpack(&archive, ArchiveKind::TarGz, &staging, &limits()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(expect), "{name}: {msg}");
        assert!(msg.contains("nothing was unpacked"), "{name}: {msg}");
        assert!(!staging.exists(), "{name}: the staging folder is removed");
    }
    assert_eq!(
        find_named(&tmp, "ESCAPED.txt"),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(find_named(&tmp, "keep.txt").is_empty());
    // A zip link is refused the same way.
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.add_symlink("a/up", "..", zip::write::SimpleFileOptions::default())
        .unwrap();
    let archive = tmp.join("link.zip");
    std::fs::write(&archive, z.finish().unwrap().into_inner()).unwrap();
    let err = unpack(
        &archive,
        ArchiveKind::Zip,
        &deep.join("stage-zl"),
        &limits(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`a/up` is a symbolic link"),
        "{err}"
    );
    assert!(!deep.join("stage-zl").exists());
    // A staging folder that already exists is not filled (it may be a link to elsewhere).
    std::fs::create_dir(deep.join("taken")).unwrap();
    let ok = tmp.join("ok.tar.gz");
    std::fs::write(&ok, tar_gz(&[("f.txt", b"f")])).unwrap();
    assert!(unpack(&ok, ArchiveKind::TarGz, &deep.join("taken"), &limits()).is_err());
    assert!(!deep.join("taken/f.txt").exists());
}

/// 64 MiB of zeros compresses about 1,000x: the default ratio (100x beyond the first MiB)
/// stops it long before the end, in a zip and in a tar.gz; entry and byte limits hold too, and
/// an archive within the limits unpacks.
#[test]
fn compression_bombs_and_oversized_archives_stop_at_their_limit() {
    let tmp = tempdir("bombs");
    let zeros = vec![0u8; 64 << 20];
    let tar = tmp.join("bomb.tar.gz");
    std::fs::write(
        &tar,
        tar_gz_typed(&[("zeros.bin", tar::EntryType::Regular, &zeros)]),
    )
    .unwrap();
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflate = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9));
    z.start_file("zeros.bin", deflate).unwrap();
    z.write_all(&zeros).unwrap();
    let zip = tmp.join("bomb.zip");
    std::fs::write(&zip, z.finish().unwrap().into_inner()).unwrap();
    for (archive, kind) in [(&tar, ArchiveKind::TarGz), (&zip, ArchiveKind::Zip)] {
        assert!(std::fs::metadata(archive).unwrap().len() < 1 << 20);
        let staging = tmp.join("stage-bomb");
        let err = unpack(archive, kind, &staging, &limits()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::Limit { .. }), "{msg}");
        assert!(
            msg.contains("expands more than 100x") && msg.contains("--max-ratio"),
            "{msg}"
        );
        assert!(!staging.exists());
        // Trusted by the user: a higher ratio lets it through.
        let lenient = UnpackLimits {
            max_ratio: 10_000,
            ..limits()
        };
        unpack(archive, kind, &staging, &lenient).unwrap();
        assert_eq!(
            std::fs::metadata(staging.join("zeros.bin")).unwrap().len(),
            64 << 20
        );
        std::fs::remove_dir_all(&staging).unwrap();
    }
    // A GNU long name of 64 MiB: the tar reader itself would inflate it into memory.
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(zeros.len() as u64);
    h.set_cksum();
    b.append(&h, &zeros[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let long = tmp.join("long-name.tar.gz");
    std::fs::write(&long, b.into_inner().unwrap().finish().unwrap()).unwrap();
    let err = unpack(&long, ArchiveKind::TarGz, &tmp.join("s0"), &limits()).unwrap_err();
    assert!(err.to_string().contains("header records"), "{err}");
    assert!(!tmp.join("s0").exists());
    // 100 entries of 1 MiB zeros: each alone within 1 MiB + 100x its own compressed size,
    // together 100 MiB from an archive of about 100 KiB.
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..100 {
        z.start_file(format!("z{i}.bin"), deflate).unwrap();
        z.write_all(&zeros[..1 << 20]).unwrap();
    }
    let spread = tmp.join("spread.zip");
    std::fs::write(&spread, z.finish().unwrap().into_inner()).unwrap();
    let err = unpack(&spread, ArchiveKind::Zip, &tmp.join("s00"), &limits()).unwrap_err();
    assert!(err.to_string().contains("expands more than 100x"), "{err}");
    assert!(!tmp.join("s00").exists());
    let many: Vec<(String, &[u8])> = (0..5).map(|i| (format!("f{i}.txt"), &b"x"[..])).collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let archive = tmp.join("many.tar.gz");
    std::fs::write(&archive, tar_gz(&many)).unwrap();
    let few = UnpackLimits {
        max_entries: 4,
        ..limits()
    };
    let err = unpack(&archive, ArchiveKind::TarGz, &tmp.join("s1"), &few).unwrap_err();
    assert!(err.to_string().contains("more than 4 entries"), "{err}");
    let small = UnpackLimits {
        max_bytes: 4,
        ..limits()
    };
    let err = unpack(&archive, ArchiveKind::TarGz, &tmp.join("s2"), &small).unwrap_err();
    assert!(err.to_string().contains("more than 4 bytes"), "{err}");
    assert!(!tmp.join("s1").exists() && !tmp.join("s2").exists());
    unpack(&archive, ArchiveKind::TarGz, &tmp.join("s3"), &limits()).unwrap();
    assert_eq!(std::fs::read_dir(tmp.join("s3")).unwrap().count(), 5);
}

/// A download larger than the client's cap is refused: announced (before a byte is written)
/// or streamed without a length (stopped at the cap); no `.part` file is left either way.
#[test]
fn downloads_over_the_size_limit_are_refused_and_deleted() {
    let server = Server::start();
    let body = vec![7u8; 10_000];
    server.route(
        "/announced",
        Route {
            body: body.clone(),
            ..Default::default()
        },
    );
    server.route(
        "/streamed",
        Route {
            body: body.clone(),
            no_length: true,
            ..Default::default()
        },
    );
    let tmp = tempdir("too-large");
    let mut c = client();
    c.max_download_bytes = 4096;
    let sum = Checksum::Sha256(sha256(&body));
    for (path, expect) in [
        ("/announced", "announces 10000 bytes"),
        ("/streamed", "past 4096 bytes"),
    ] {
        let dest = tmp.join(&path[1..]);
        let url = format!("{}{path}", server.base);
        let err = download(&c, &url, &dest, &sum, &[], "", &mut Quiet).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{msg}");
        assert!(
            msg.contains(expect) && msg.contains("--max-download-gib"),
            "{msg}"
        );
        assert!(!dest.exists());
        assert!(
            std::fs::read_dir(&tmp).unwrap().next().is_none(),
            "no .part left"
        );
    }
    // Within the limit, the same streamed body downloads.
    c.max_download_bytes = 10_000;
    let dest = tmp.join("ok");
    download(
        &c,
        &format!("{}/streamed", server.base),
        &dest,
        &sum,
        &[],
        "",
        &mut Quiet,
    )
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-orch-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
