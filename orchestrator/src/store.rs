//! The content-addressed store: `<root>/<kind>/<key>/` holding artifacts and a
//! `manifest.json` written last. Writes are staged under `<root>/tmp/` and renamed into
//! place, so a killed run never leaves an entry that looks finished.
use crate::hash::Fingerprint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid manifest: {msg}")]
    Manifest { path: PathBuf, msg: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub blake3: String,
    pub bytes: u64,
    /// Modification time (ns since the epoch) when hashed: an unchanged size and mtime
    /// skip re-hashing on every plan; `vtab-orch verify` always re-hashes.
    pub mtime_ns: u128,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub key: String,
    pub label: String,
    /// What "the same node" means across suite edits (dataset/method/seed), for `plan`'s
    /// "what changed" reasons.
    pub identity: String,
    pub fingerprint: Fingerprint,
    pub artifacts: BTreeMap<String, Artifact>,
    pub wall_s: f64,
    pub host: String,
    pub code_version: String,
    pub finished_unix: u64,
    /// The run (`<store>/runs/<id>.jsonl`) whose driver launched it, where known: a driver
    /// that saw none of a node's output (a shared filesystem shows it late) still tells a node
    /// it ran from one another run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

pub const MANIFEST: &str = "manifest.json";
/// The folders of entries: one per node kind (`node::KINDS`).
pub const KINDS: [&str; 5] = {
    let k = crate::node::KINDS;
    [k[0].name, k[1].name, k[2].name, k[3].name, k[4].name]
};

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// blake3 of a file's content, hex.
pub fn digest_file(path: &Path) -> Result<String, StoreError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

impl Store {
    /// Opens (creating) a store and marks it with CACHEDIR.TAG so backup tools skip it.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(root.join("tmp")).map_err(io(root))?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            std::fs::write(&tag, "Signature: 8a477f597d28d172789f06886806bc55\n# vtab-orch store: results and caches.\n").map_err(io(&tag))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The root without creating anything (for read-only commands).
    pub fn at(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn entry(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(key)
    }

    pub fn manifest(&self, kind: &str, key: &str) -> Option<Manifest> {
        let p = self.entry(kind, key).join(MANIFEST);
        let text = std::fs::read_to_string(&p).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// True iff the entry's manifest is complete and every artifact matches it (size and
    /// mtime as recorded, else a fresh blake3 equal to the recorded one).
    pub fn is_complete(&self, kind: &str, key: &str) -> bool {
        let Some(m) = self.manifest(kind, key) else {
            return false;
        };
        m.key == key && m.kind == kind && self.artifacts_match(&m, false).is_empty()
    }

    /// The artifacts of `m` that do not match (missing, resized, or with another digest);
    /// `rehash` re-hashes even when size and mtime are unchanged.
    pub fn artifacts_match(&self, m: &Manifest, rehash: bool) -> Vec<String> {
        let dir = self.entry(&m.kind, &m.key);
        let mut bad = Vec::new();
        for (name, a) in &m.artifacts {
            let p = dir.join(name);
            let ok = match std::fs::metadata(&p) {
                Err(_) => false,
                Ok(meta) if meta.len() != a.bytes => false,
                Ok(meta) if !rehash && mtime_ns(&meta) == a.mtime_ns => true,
                Ok(_) => digest_file(&p).map(|d| d == a.blake3).unwrap_or(false),
            };
            if !ok {
                bad.push(name.clone());
            }
        }
        bad
    }

    /// A fresh staging directory for one node's outputs.
    pub fn stage(&self, key: &str) -> Result<PathBuf, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.root.join("tmp").join(format!(
            "{key}@{}@{}@{nanos}",
            host_name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Hashes the staged artifacts, writes the manifest last (fsynced), and renames the
    /// staging directory into place, replacing any incomplete entry.
    pub fn commit(&self, staged: &Path, mut manifest: Manifest) -> Result<PathBuf, StoreError> {
        manifest.artifacts.clear();
        for e in std::fs::read_dir(staged).map_err(io(staged))? {
            let e = e.map_err(io(staged))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == MANIFEST || !e.file_type().map_err(io(staged))?.is_file() {
                continue;
            }
            let p = e.path();
            let f = std::fs::File::open(&p).map_err(io(&p))?;
            f.sync_all().map_err(io(&p))?;
            let meta = f.metadata().map_err(io(&p))?;
            let blake3 = digest_file(&p)?;
            manifest.artifacts.insert(
                name,
                Artifact {
                    blake3,
                    bytes: meta.len(),
                    mtime_ns: mtime_ns(&meta),
                },
            );
        }
        let mp = staged.join(MANIFEST);
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        std::fs::write(&mp, text).map_err(io(&mp))?;
        std::fs::File::open(&mp)
            .and_then(|f| f.sync_all())
            .map_err(io(&mp))?;
        let dest = self.entry(&manifest.kind, &manifest.key);
        std::fs::create_dir_all(dest.parent().expect("entry has a parent")).map_err(io(&dest))?;
        // Another process (another host, on a shared store) committed the same key first: its
        // entry stays, and a reader of it never sees the directory swapped underneath.
        if self.is_complete(&manifest.kind, &manifest.key) {
            return self.discard(staged, dest);
        }
        if dest.exists() {
            // An incomplete or corrupt entry: move it aside first, then remove it.
            let trash = self.root.join("tmp").join(format!(
                "{}@{}@{}@trash",
                manifest.key,
                host_name(),
                std::process::id()
            ));
            std::fs::rename(&dest, &trash).map_err(io(&dest))?;
            std::fs::remove_dir_all(&trash).map_err(io(&trash))?;
        }
        match std::fs::rename(staged, &dest) {
            Ok(()) => Ok(dest),
            // Lost the race between the check above and the rename ("Directory not empty"):
            // entries appear only by renaming a complete staging folder, so a destination that
            // exists now is complete even where this host's cache does not show it yet.
            Err(e)
                if self.is_complete(&manifest.kind, &manifest.key)
                    || matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) =>
            {
                self.discard(staged, dest)
            }
            Err(e) => Err(io(&dest)(e)),
        }
    }

    /// Drops a staged result whose entry is already complete; returns the entry.
    fn discard(&self, staged: &Path, dest: PathBuf) -> Result<PathBuf, StoreError> {
        std::fs::remove_dir_all(staged).map_err(io(staged))?;
        Ok(dest)
    }

    /// Removes staging directories left by dead processes (a run killed while a node was
    /// writing). Names are `<key>@<host>@<pid>@<nanos|trash>`. One of this host is dead when
    /// its pid is; one of another host when `holder_alive(key, host, pid)` says so (its lease
    /// is gone or held by another process) and it was not touched for `min_age` (a directory
    /// made just now may belong to a lease this host cannot see yet).
    pub fn clean_stale_staging(
        &self,
        holder_alive: &dyn Fn(&str, &str, u32) -> bool,
        min_age: std::time::Duration,
    ) -> usize {
        let Ok(rd) = std::fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        let host = host_name();
        let mut removed = 0;
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let parts: Vec<&str> = name.split('@').collect();
            let (4, Ok(pid)) = (
                parts.len(),
                parts.get(2).map_or(Ok(0), |p| p.parse::<u32>()),
            ) else {
                continue;
            };
            let dead = if parts[1] == host {
                !Path::new(&format!("/proc/{pid}")).exists()
            } else {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= min_age);
                old && !holder_alive(parts[0], parts[1], pid)
            };
            if dead && std::fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Every entry directory of the store: (kind, key).
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for kind in KINDS {
            if let Ok(rd) = std::fs::read_dir(self.root.join(kind)) {
                for e in rd.filter_map(|e| e.ok()) {
                    out.push((
                        kind.to_string(),
                        e.file_name().to_string_lossy().into_owned(),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    /// Re-hashes every artifact. Entries that do not match their manifest (or have none) are
    /// moved to `<store>/quarantine/` so that the next run recomputes exactly those nodes.
    /// Returns (entry, what is wrong) for each.
    pub fn verify(&self) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        for (kind, key) in self.entries() {
            let problem = match self.manifest(&kind, &key) {
                None => Some("no readable manifest (incomplete entry)".to_string()),
                Some(m) => {
                    let wrong = self.artifacts_match(&m, true);
                    (!wrong.is_empty()).then(|| {
                        format!("artifact(s) differ from the manifest: {}", wrong.join(", "))
                    })
                }
            };
            if let Some(p) = problem {
                let q = self.root.join("quarantine").join(format!("{kind}-{key}"));
                let _ = std::fs::create_dir_all(self.root.join("quarantine"));
                let _ = std::fs::remove_dir_all(&q);
                let moved = std::fs::rename(self.entry(&kind, &key), &q).is_ok();
                let note = if moved {
                    format!("{p}; moved to {}", q.display())
                } else {
                    p
                };
                bad.push((format!("{kind}/{key}"), note));
            }
        }
        bad
    }

    /// Manifests of every complete-looking entry of `kind` (for "what changed" reasons).
    pub fn manifests(&self, kind: &str) -> Vec<Manifest> {
        let Ok(rd) = std::fs::read_dir(self.root.join(kind)) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join(MANIFEST)).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect()
    }
}

/// Why a node of the last run that tried it has no entry: `<store>/failures/<key>.json`,
/// written by the scheduler when the node failed or was blocked, removed when it ends again.
/// A select reads it to say why a candidate lost.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub label: String,
    /// The tail of its log and the error it reported (empty when blocked).
    pub reason: String,
    /// The failed node that blocked it, if it was blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
}

impl Failure {
    /// One line for a table: the error the node reported, else its log's last line.
    pub fn short(&self) -> String {
        let lines: Vec<&str> = self
            .reason
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let line = lines
            .iter()
            .find(|l| l.starts_with("error:"))
            .or(lines.iter().find(|l| l.contains("out of memory")))
            .or(lines.last())
            .copied()
            .unwrap_or("failed (no message)");
        let line = line.strip_prefix("error:").unwrap_or(line).trim();
        // "node <key>: what happened": the key says nothing a reader needs here.
        let line = match line.strip_prefix("node ").and_then(|r| r.split_once(": ")) {
            Some((key, rest)) if key.chars().all(|c| c.is_ascii_hexdigit()) => rest,
            _ => line,
        };
        line.to_string()
    }
}

pub fn failure_path(store: &Store, key: &str) -> PathBuf {
    store.root.join("failures").join(format!("{key}.json"))
}

/// Writes `f` for node `key` (whole, then renamed into place).
pub fn write_failure(store: &Store, key: &str, f: &Failure) -> std::io::Result<()> {
    let path = failure_path(store, key);
    std::fs::create_dir_all(path.parent().expect("failures dir"))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(f).expect("serialises"))?;
    std::fs::rename(&tmp, &path)
}

/// Why node `key` failed, following a blocked node to the failure that blocked it:
/// (the failed node's label, its failure). None where nothing was recorded.
pub fn failure(store: &Store, key: &str) -> Option<(String, Failure)> {
    let read = |k: &str| -> Option<Failure> {
        serde_json::from_slice(&std::fs::read(failure_path(store, k)).ok()?).ok()
    };
    let mut f = read(key)?;
    // A chain of blocked nodes ends at a failed one (bounded, in case of a bad file).
    for _ in 0..16 {
        let Some(by) = f.blocked_by.clone() else {
            break;
        };
        match read(&by) {
            Some(next) => f = next,
            None => break,
        }
    }
    Some((f.label.clone(), f))
}

/// This machine's name as the OS reports it (uname/gethostname, not a file that may be
/// missing): staging directories carry it so that cleanup on a shared store only touches
/// this host's. A host whose name cannot be read gets a name no other host shares.
pub fn host_name() -> String {
    match gethostname::gethostname().into_string() {
        Ok(h) if !h.is_empty() && !h.contains('@') => h,
        _ => format!("unnamed-{:016x}", machine_id()),
    }
}

/// A per-boot-stable identifier for a host without a usable name: /etc/machine-id where
/// present, else the boot id; hashed so it fits a file name.
fn machine_id() -> u64 {
    let id = ["/etc/machine-id", "/proc/sys/kernel/random/boot_id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let h = blake3::hash(id.trim().as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure's one line: the node's error without its key, else an out-of-memory line,
    /// else the log's last line; a blocked node's record leads to the failure that blocked it.
    #[test]
    fn a_failure_reads_as_one_line_and_blocked_nodes_lead_to_it() {
        let f = |reason: &str| Failure {
            label: "train x".into(),
            reason: reason.into(),
            blocked_by: None,
        };
        assert_eq!(
            f("step 1\nerror: node 0af3: non-finite loss in epoch 1").short(),
            "non-finite loss in epoch 1"
        );
        assert_eq!(
            f("a\nCUDA out of memory. Tried\nhint: lower it").short(),
            "CUDA out of memory. Tried"
        );
        assert_eq!(f("a\nlast words\n").short(), "last words");
        assert_eq!(f("").short(), "failed (no message)");
        let root = std::env::temp_dir().join(format!("vtab-failures-{}", std::process::id()));
        let store = Store::at(&root);
        write_failure(&store, "t", &f("error: diverged")).unwrap();
        let blocked = Failure {
            label: "eval x".into(),
            reason: String::new(),
            blocked_by: Some("t".into()),
        };
        write_failure(&store, "e", &blocked).unwrap();
        let (label, why) = failure(&store, "e").unwrap();
        assert_eq!(
            (label.as_str(), why.short().as_str()),
            ("train x", "diverged")
        );
        assert!(failure(&store, "none").is_none());
        std::fs::remove_dir_all(&root).ok();
    }
    use std::time::Duration;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vtab-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn manifest(key: &str) -> Manifest {
        Manifest {
            kind: "prep".into(),
            key: key.into(),
            label: "prep x".into(),
            identity: "x".into(),
            fingerprint: Fingerprint::new("prep"),
            artifacts: BTreeMap::new(),
            wall_s: 0.0,
            host: host_name(),
            code_version: "test".into(),
            finished_unix: 0,
            run: None,
        }
    }

    #[test]
    fn commit_then_complete_and_corruption_detected() {
        let root = tmp("commit");
        let s = Store::open(&root).unwrap();
        assert!(root.join("CACHEDIR.TAG").exists());
        assert!(!s.is_complete("prep", "k1"));
        let st = s.stage("k1").unwrap();
        std::fs::write(st.join("a.bin"), b"hello").unwrap();
        s.commit(&st, manifest("k1")).unwrap();
        assert!(s.is_complete("prep", "k1"));
        // Same size, different bytes, newer mtime: detected by re-hashing.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(s.entry("prep", "k1").join("a.bin"), b"hellp").unwrap();
        assert!(!s.is_complete("prep", "k1"));
        // Truncation.
        std::fs::write(s.entry("prep", "k1").join("a.bin"), b"he").unwrap();
        assert!(!s.is_complete("prep", "k1"));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn verify_quarantines_a_flipped_byte_even_with_the_old_mtime() {
        let root = tmp("verify");
        let s = Store::open(&root).unwrap();
        for k in ["good", "bad"] {
            let st = s.stage(k).unwrap();
            std::fs::write(st.join("a.bin"), b"hello").unwrap();
            s.commit(&st, manifest(k)).unwrap();
        }
        // Flip a byte and restore the mtime: only a re-hash can see it.
        let p = s.entry("prep", "bad").join("a.bin");
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::write(&p, b"hellp").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(
            s.is_complete("prep", "bad"),
            "size and mtime unchanged: the cheap check trusts it"
        );
        let bad = s.verify();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].0 == "prep/bad" && bad[0].1.contains("a.bin"),
            "{bad:?}"
        );
        assert!(!s.is_complete("prep", "bad") && s.is_complete("prep", "good"));
        std::fs::remove_dir_all(&root).ok();
    }

    /// Two processes finished the same node: the second commit leaves the first entry as it
    /// is (same directory, same files) and removes its own staging folder.
    #[test]
    fn a_commit_over_a_complete_entry_discards_itself() {
        use std::os::unix::fs::MetadataExt;
        let root = tmp("commit-twice");
        let s = Store::open(&root).unwrap();
        let first = s.stage("k").unwrap();
        std::fs::write(first.join("a.bin"), b"first").unwrap();
        let dest = s.commit(&first, manifest("k")).unwrap();
        let inode = std::fs::metadata(&dest).unwrap().ino();
        let second = s.stage("k").unwrap();
        std::fs::write(second.join("a.bin"), b"other").unwrap();
        assert_eq!(s.commit(&second, manifest("k")).unwrap(), dest);
        assert!(!second.exists(), "the second staging folder is removed");
        assert_eq!(std::fs::metadata(&dest).unwrap().ino(), inode);
        assert_eq!(std::fs::read(dest.join("a.bin")).unwrap(), b"first");
        assert!(s.is_complete("prep", "k"));
    }

    /// Staging of a dead process of this host goes at once; another host's only when its
    /// lease says its holder is gone and it is older than the given age.
    #[test]
    fn stale_staging_of_dead_holders_is_removed_on_every_host() {
        let root = tmp("stale-staging");
        let store = Store::open(&root).unwrap();
        let me = host_name();
        let names = [
            format!("a@{me}@{}@1", u32::MAX - 3),
            format!("b@{me}@{}@1", std::process::id()),
            "c@far@5@1".to_string(),
            "d@far@6@1".to_string(),
        ];
        for n in &names {
            std::fs::create_dir_all(root.join("tmp").join(n)).unwrap();
        }
        let alive = |key: &str, host: &str, pid: u32| key == "d" && host == "far" && pid == 6;
        // Too young to judge another host's folders.
        assert_eq!(
            store.clean_stale_staging(&alive, Duration::from_secs(3600)),
            1
        );
        assert!(!root.join("tmp").join(&names[0]).exists());
        assert_eq!(store.clean_stale_staging(&alive, Duration::ZERO), 1);
        assert!(
            root.join("tmp").join(&names[1]).exists(),
            "a live process's"
        );
        assert!(
            !root.join("tmp").join(&names[2]).exists(),
            "a dead holder's"
        );
        assert!(root.join("tmp").join(&names[3]).exists(), "a live holder's");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn entry_without_manifest_is_not_complete() {
        let root = tmp("partial");
        let s = Store::open(&root).unwrap();
        std::fs::create_dir_all(s.entry("prep", "k2")).unwrap();
        std::fs::write(s.entry("prep", "k2").join("a.bin"), b"x").unwrap();
        assert!(!s.is_complete("prep", "k2"));
        // A commit replaces the partial entry.
        let st = s.stage("k2").unwrap();
        std::fs::write(st.join("a.bin"), b"y").unwrap();
        s.commit(&st, manifest("k2")).unwrap();
        assert!(s.is_complete("prep", "k2"));
        std::fs::remove_dir_all(&root).ok();
    }
}
