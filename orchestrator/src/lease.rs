//! Node leases that hold on a store shared between hosts (NFS, Lustre, BeeGFS, a FUSE mount),
//! where `flock` may lock per host only or not at all, and a file made on one host may stay
//! invisible on another for a while. A lease is two things:
//! - an owner record `<store>/leases/<key>.owner`, created exclusively (a hard link of a
//!   private file, atomic on NFS too), naming who runs the node (host, pid, Slurm job), with a
//!   fencing token and a heartbeat its holder rewrites every `heartbeat`;
//! - the `flock` of `<store>/leases/<key>`: the fast path between processes of one host (the
//!   kernel drops it when its holder dies, kill -9 included).
//!
//! A holder that committed its node leaves its record behind marked `committed`: a process of
//! another host that cannot see the new entry yet (its filesystem caches the entry's absence)
//! finds that record when it tries to take the lease and knows the node is done, instead of
//! running it again. Such a record counts for `stale` only; after that the entry is visible
//! everywhere, and a record whose entry is gone (removed by `gc`, quarantined by `verify`) is
//! taken over like a dead holder's.
//!
//! A record whose holder is dead is taken over: at once when the holder ran on this host (no
//! process with its pid and start time), after `stale` without a heartbeat when it ran on
//! another (host clocks must agree to well within `stale`, as Slurm's own munge requires).
//! A takeover first renames the record aside (only one process can move one record) and judges
//! what it moved, read through that fresh name: another host's cache may have shown it an old
//! version (before a heartbeat or the commit) or a record since replaced; anything but the dead
//! record is put back. Decisions are never made on a cached read alone. The holder checks its
//! token right before it commits: one that was taken over (it stalled past `stale`) discards
//! its work instead of committing it.
use crate::store::host_name;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a holder proves it is alive, and after how long without that it counts as dead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub heartbeat: Duration,
    pub stale: Duration,
}

/// Defaults: a heartbeat every 30 s, dead after 300 s without one (ten missed beats, well
/// past the 30-60 s attribute caches of NFS and Lustre clients).
pub const DEFAULT_HEARTBEAT_S: f64 = 30.0;
pub const DEFAULT_STALE_S: f64 = 300.0;

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_secs_f64(DEFAULT_HEARTBEAT_S),
            stale: Duration::from_secs_f64(DEFAULT_STALE_S),
        }
    }
}

impl Timing {
    /// From `VTAB_ORCH_LEASE_HEARTBEAT_S` and `VTAB_ORCH_LEASE_STALE_S` (seconds; sbatch
    /// passes the driver's environment on to its jobs). `stale` is kept at three heartbeats
    /// or more; a value that does not parse is an error naming the variable.
    pub fn from_env() -> Result<Timing, String> {
        let var = |n: &str| std::env::var(n).ok();
        Timing::parse(
            var("VTAB_ORCH_LEASE_HEARTBEAT_S").as_deref(),
            var("VTAB_ORCH_LEASE_STALE_S").as_deref(),
        )
    }

    /// The two variables' values (None: unset).
    pub fn parse(heartbeat: Option<&str>, stale: Option<&str>) -> Result<Timing, String> {
        let read = |name: &str, v: Option<&str>, default: f64| -> Result<f64, String> {
            match v {
                None => Ok(default),
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
                    _ => Err(format!(
                        "{name}={v:?}: expected a number of seconds > 0 and at most 86400"
                    )),
                },
            }
        };
        let heartbeat = read(
            "VTAB_ORCH_LEASE_HEARTBEAT_S",
            heartbeat,
            DEFAULT_HEARTBEAT_S,
        )?;
        let stale = read("VTAB_ORCH_LEASE_STALE_S", stale, DEFAULT_STALE_S)?;
        if stale < 3.0 * heartbeat {
            return Err(format!(
                "VTAB_ORCH_LEASE_STALE_S={stale} must be at least three heartbeats (VTAB_ORCH_LEASE_HEARTBEAT_S={heartbeat})"
            ));
        }
        Ok(Timing {
            heartbeat: Duration::from_secs_f64(heartbeat),
            stale: Duration::from_secs_f64(stale),
        })
    }
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    /// The Slurm job it runs in, if any.
    pub job: Option<String>,
    /// Unique per acquisition: what the holder checks before it commits.
    pub token: String,
    pub since_unix: u64,
    pub heartbeat_unix: u64,
    /// The holder's start time (clock ticks since boot, /proc/PID/stat): with the pid, names
    /// one process of its host (a pid reused by another process is not the holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// When the holder committed the node (it holds nothing any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_unix: Option<u64>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Owner {
    fn me() -> Owner {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let (host, pid) = (host_name(), std::process::id());
        let token =
            blake3::hash(format!("{host}\n{pid}\n{nanos}").as_bytes()).to_hex()[..16].to_string();
        let now = now_unix();
        Owner {
            host,
            pid,
            job: std::env::var("SLURM_JOB_ID").ok(),
            token,
            since_unix: now,
            heartbeat_unix: now,
            start_ticks: start_ticks(pid),
            committed_unix: None,
        }
    }

    /// Whether it says its node was committed less than `stale` ago.
    pub fn committed_recently(&self, timing: Timing) -> bool {
        self.committed_unix
            .is_some_and(|t| now_unix().saturating_sub(t) < timing.stale.as_secs().max(1))
    }

    /// "pid 41 on vn2 (slurm job 17), for 12 s, last heartbeat 3 s ago"
    pub fn describe(&self) -> String {
        let now = now_unix();
        let job = self
            .job
            .as_ref()
            .map_or(String::new(), |j| format!(" (slurm job {j})"));
        format!(
            "pid {} on {}{job}, for {} s, last heartbeat {} s ago",
            self.pid,
            self.host,
            now.saturating_sub(self.since_unix),
            now.saturating_sub(self.heartbeat_unix)
        )
    }

    /// Whether the holder still runs: on this host, whether its process does (the flock is
    /// no proof of death: two mounts of one store on one host lock apart); on another, whether
    /// it beat its heart within `stale`.
    pub fn alive(&self, timing: Timing) -> bool {
        if self.committed_unix.is_some() {
            return false;
        }
        if self.host == host_name() {
            match (start_ticks(self.pid), self.start_ticks) {
                (None, _) => false,
                (Some(now), Some(then)) => now == then,
                (Some(_), None) => true,
            }
        } else {
            now_unix().saturating_sub(self.heartbeat_unix) < timing.stale.as_secs().max(1)
        }
    }
}

/// `<store>/leases/<key>`: the file whose flock a holder of this host takes.
pub fn lock_path(root: &Path, key: &str) -> PathBuf {
    root.join("leases").join(key)
}

/// `<store>/leases/<key>.owner`: the owner record.
pub fn owner_path(root: &Path, key: &str) -> PathBuf {
    root.join("leases").join(format!("{key}.owner"))
}

/// The owner record of `key`, if one exists and reads whole.
pub fn owner(root: &Path, key: &str) -> Option<Owner> {
    let text = std::fs::read_to_string(owner_path(root, key)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The start time of process `pid` of this host (field 22 of /proc/PID/stat, clock ticks
/// since boot); None if there is no such process.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)` one, which may hold spaces and parentheses.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether process `pid` of `host` still holds the lease of `key` (a staging directory of
/// another host is kept while this is so).
pub fn holds(root: &Path, key: &str, host: &str, pid: u32, timing: Timing) -> bool {
    owner(root, key).is_some_and(|o| o.host == host && o.pid == pid && o.alive(timing))
}

/// Whether an error of flock means the filesystem cannot lock (rather than a real failure).
fn cannot_lock(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    ) || e.kind() == std::io::ErrorKind::Unsupported
}

/// What trying the flock of a lease file gave.
enum Flock {
    Held(std::fs::File),
    Busy,
    Unsupported,
}

fn try_flock(path: &Path) -> std::io::Result<Flock> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Flock::Held(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Flock::Busy),
        Err(std::fs::TryLockError::Error(e)) if cannot_lock(&e) => Ok(Flock::Unsupported),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Writes `owner` to `path` if no record is there: a private file hard-linked to the name
/// (link fails if the name exists, atomically, on NFS too). Where hard links are not
/// supported, an exclusive create. Ok(false): a record exists.
fn create_record(path: &Path, owner: &Owner) -> std::io::Result<bool> {
    let text = serde_json::to_string(owner).expect("owner serialises");
    let private = path.with_extension(format!("owner.{}.new", owner.token));
    let mut f = std::fs::File::create(&private)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    let linked = std::fs::hard_link(&private, path);
    let result = match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // NFS may report a link that was made (a retransmitted request): the private file's
        // link count says.
        Err(_) if link_count(&private) == Some(2) => Ok(true),
        Err(e)
            if e.kind() == std::io::ErrorKind::Unsupported
                || e.raw_os_error() == Some(libc::EPERM) =>
        {
            match std::fs::File::create_new(path) {
                Ok(mut f) => f.write_all(text.as_bytes()).and(f.sync_all()).map(|_| true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&private);
    result
}

fn link_count(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.nlink())
}

/// Replaces `path` with `owner` (a rename over it: readers see the old or the new record).
fn rewrite_record(path: &Path, owner: &Owner) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("owner.{}.beat", owner.token));
    std::fs::write(
        &tmp,
        serde_json::to_string(owner).expect("owner serialises"),
    )?;
    std::fs::rename(&tmp, path)
}

/// What taking a dead holder's record over found.
enum TakeOver {
    /// The record moved aside was the dead one: the name is free.
    Done,
    /// The record there was another (fresher) one: it was put back.
    Restored(Owner),
    /// No record there any more.
    Gone,
}

/// Moves the record of holder `dead` aside (`<key>.dead.<its token>.<ours>`: a rename, which
/// only one process can do to one record) and judges what was moved, read through that new
/// name: a caching filesystem may have shown us an old version of the record (a holder that
/// beat its heart since, or committed) or another holder's. Anything but the dead record is
/// put back (a hard link to the name) and returned.
fn take_over(
    root: &Path,
    key: &str,
    dead: &Owner,
    me: &Owner,
    judge: &dyn Fn(&Owner) -> Option<Acquired>,
) -> std::io::Result<TakeOver> {
    let path = owner_path(root, key);
    let tomb = root
        .join("leases")
        .join(format!("{key}.dead.{}.{}", dead.token, me.token));
    match std::fs::rename(&path, &tomb) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TakeOver::Gone),
        Err(e) => return Err(e),
    }
    let moved: Option<Owner> = std::fs::read_to_string(&tomb)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let outcome = match moved {
        Some(m) if m.token == dead.token && judge(&m).is_none() => {
            let _ = std::fs::remove_file(&tomb);
            return Ok(TakeOver::Done);
        }
        Some(m) => TakeOver::Restored(m),
        None => TakeOver::Gone,
    };
    // Put it back; if a third process made a record meanwhile, that one stays (and the one
    // moved here fails its fencing check before committing).
    match std::fs::hard_link(&tomb, &path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => {
            if let Ok(text) = std::fs::read(&tomb) {
                if let Ok(mut f) = std::fs::File::create_new(&path) {
                    let _ = f.write_all(&text).and(f.sync_all());
                }
            }
        }
    }
    let _ = std::fs::remove_file(&tomb);
    Ok(outcome)
}

/// What [`acquire`] found.
pub enum Acquired {
    Held(Lease),
    /// Its last holder committed the node recently (its entry may not be visible here yet).
    Committed(Owner),
    /// Another process holds it (None: a process of this host holds its flock and its record
    /// cannot be read yet).
    Busy(Option<Owner>),
}

/// A held lease: a heartbeat thread keeps its record fresh until it is dropped, which removes
/// the record (if still ours) and lets go of the flock.
pub struct Lease {
    root: PathBuf,
    key: String,
    pub owner: Owner,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
    /// The flock, held for as long as the lease (None where the filesystem cannot lock).
    _flock: Option<std::fs::File>,
}

/// Takes the lease of `key` if it is free or its holder is dead. `entry_visible` says whether
/// the node's entry shows here: on a local filesystem, a record marked committed whose entry
/// is gone (removed since) is taken over at once.
pub fn acquire(
    root: &Path,
    key: &str,
    timing: Timing,
    entry_visible: &dyn Fn() -> bool,
) -> std::io::Result<Acquired> {
    std::fs::create_dir_all(root.join("leases"))?;
    let flock = match try_flock(&lock_path(root, key))? {
        Flock::Held(f) => Some(f),
        Flock::Busy => return Ok(Acquired::Busy(owner(root, key))),
        Flock::Unsupported => None,
    };
    let me = Owner::me();
    let path = owner_path(root, key);
    // What a record means for us: a live holder, a recent commit, or nothing (a dead holder).
    // On a local filesystem an entry shows at once: a commit whose entry is not there was
    // removed since (gc, verify) and counts for nothing; on a shared one it may be in flight.
    let shared = shared_filesystem(root).is_some();
    let judge = |o: &Owner| -> Option<Acquired> {
        if o.committed_recently(timing) && (shared || entry_visible()) {
            Some(Acquired::Committed(o.clone()))
        } else if o.alive(timing) {
            Some(Acquired::Busy(Some(o.clone())))
        } else {
            None
        }
    };
    for _ in 0..3 {
        if create_record(&path, &me)? {
            return Ok(Acquired::Held(Lease::start(root, key, me, flock, timing)));
        }
        let Some(other) = owner(root, key) else {
            continue; // removed meanwhile, or being written: try again
        };
        if let Some(a) = judge(&other) {
            return Ok(a);
        }
        match take_over(root, key, &other, &me, &judge)? {
            TakeOver::Done | TakeOver::Gone => continue,
            TakeOver::Restored(o) => {
                return Ok(judge(&o).unwrap_or(Acquired::Busy(Some(o))));
            }
        }
    }
    Ok(Acquired::Busy(owner(root, key)))
}

impl Lease {
    fn start(
        root: &Path,
        key: &str,
        owner: Owner,
        flock: Option<std::fs::File>,
        timing: Timing,
    ) -> Lease {
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let beat = {
            let (root, key, mut owner) = (root.to_path_buf(), key.to_string(), owner.clone());
            let (stop, lost) = (stop.clone(), lost.clone());
            std::thread::spawn(move || {
                let step = Duration::from_millis(100);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < timing.heartbeat {
                        continue;
                    }
                    waited = Duration::ZERO;
                    match self::owner(&root, &key) {
                        Some(o) if o.token == owner.token => {
                            owner.heartbeat_unix = now_unix();
                            let _ = rewrite_record(&owner_path(&root, &key), &owner);
                        }
                        // Taken over (we stalled past `stale`): never write again.
                        Some(_) => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // Moved aside for a moment by a process judging it (`take_over`).
                        None => {}
                    }
                }
            })
        };
        Lease {
            root: root.to_path_buf(),
            key: key.to_string(),
            owner,
            stop,
            lost,
            beat: Some(beat),
            _flock: flock,
        }
    }

    /// Marks the record committed (called right after the commit): it stays behind for
    /// `stale`, telling processes that cannot see the entry yet that the node is done.
    pub fn committed(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.beat.take() {
            let _ = t.join();
        }
        if owner(&self.root, &self.key).is_some_and(|o| o.token == self.owner.token) {
            self.owner.committed_unix = Some(now_unix());
            let _ = rewrite_record(&owner_path(&self.root, &self.key), &self.owner);
        }
    }

    /// The fencing check before a commit: Ok while the record is still ours.
    pub fn check(&self) -> Result<(), String> {
        // A record missing for a moment is being judged by another process (`take_over`).
        let mut current = owner(&self.root, &self.key);
        for _ in 0..20 {
            if current.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            current = owner(&self.root, &self.key);
        }
        match current {
            Some(o) if o.token == self.owner.token && !self.lost.load(Ordering::SeqCst) => Ok(()),
            Some(o) => Err(format!(
                "lost the lease of {}: taken over by {} (this process missed its heartbeats for longer than the lease's stale time); its work is discarded",
                self.key,
                o.describe()
            )),
            None => Err(format!(
                "lost the lease of {}: its owner record is gone; this process's work is discarded",
                self.key
            )),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.beat.take() {
            let _ = t.join();
        }
        let ours = owner(&self.root, &self.key)
            .is_some_and(|o| o.token == self.owner.token && o.committed_unix.is_none());
        if ours {
            let _ = std::fs::remove_file(owner_path(&self.root, &self.key));
        }
    }
}

/// What the store's filesystem does for leases, said once by `run` and `plan`: None on a local
/// disk where flock works; else what it cannot do and what vtab-orch does instead.
pub fn filesystem_notice(root: &Path, timing: Timing) -> Option<String> {
    let kind = shared_filesystem(root);
    let dir = root.join("leases");
    let _ = std::fs::create_dir_all(&dir);
    let flock = try_flock(&dir.join(".probe"));
    let stale = timing.stale.as_secs_f64();
    match (kind, flock) {
        (_, Ok(Flock::Unsupported)) => Some(format!(
            "the store's filesystem{} cannot flock: leases are owner records only (a dead holder on this host is found by its pid, on another host after {stale:.0} s without a heartbeat)",
            kind.map_or(String::new(), |k| format!(" ({k})"))
        )),
        (Some(k), _) => Some(format!(
            "the store is on {k}, which other hosts may share: flock is trusted only between processes of one host; leases are owner records with heartbeats (a holder on another host counts as dead after {stale:.0} s without one), and an entry finished elsewhere may show up here late"
        )),
        (None, _) => None,
    }
}

/// The name of a network or FUSE filesystem holding `path` (statfs magic numbers), None for a
/// local one.
pub fn shared_filesystem(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    match s.f_type as u64 {
        0x6969 => Some("NFS"),
        0x6573_5546 => Some("a FUSE filesystem"),
        0x0BD0_0BD0 => Some("Lustre"),
        0x1983_0326 => Some("BeeGFS"),
        0x4750_4653 => Some("GPFS"),
        0xFF53_4D42 | 0xFE53_4D42 => Some("SMB/CIFS"),
        0x0102_1997 => Some("9p"),
        _ => None,
    }
}

/// Removes the owner records nobody needs any more: holders that committed more than the
/// stale time ago, and holders that died (on this host: their process is gone; on another:
/// no heartbeat for the stale time). Each goes the way of a
/// takeover (moved aside, judged through its new name, put back if it turned out fresh), so
/// a record made or renewed meanwhile stays. Returns how many went. (`gc --yes` calls it.)
pub fn sweep(root: &Path, timing: Timing) -> usize {
    let Ok(rd) = std::fs::read_dir(root.join("leases")) else {
        return 0;
    };
    let keep = |o: &Owner| -> Option<Acquired> {
        (o.alive(timing) || o.committed_recently(timing)).then(|| Acquired::Busy(Some(o.clone())))
    };
    let me = Owner::me();
    let mut removed = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".owner") else {
            continue;
        };
        let Some(o) = owner(root, key) else { continue };
        if keep(&o).is_some() {
            continue;
        }
        if let Ok(TakeOver::Done) = take_over(root, key, &o, &me, &keep) {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vtab-lease-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn fast() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(200),
            stale: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_held_lease_is_busy_for_others_and_free_once_dropped() {
        let root = dir("held");
        let Acquired::Held(l) = acquire(&root, "k", fast(), &|| false).unwrap() else {
            panic!("free lease not taken")
        };
        assert_eq!(owner(&root, "k").unwrap().token, l.owner.token);
        // A second acquisition in this process: the flock is per open file, so it is Busy.
        match acquire(&root, "k", fast(), &|| false).unwrap() {
            Acquired::Busy(Some(o)) => assert_eq!(o.pid, std::process::id()),
            _ => panic!("a held lease was taken twice"),
        }
        assert!(l.check().is_ok());
        drop(l);
        assert!(owner(&root, "k").is_none(), "record left behind");
        assert!(matches!(
            acquire(&root, "k", fast(), &|| false).unwrap(),
            Acquired::Held(_)
        ));
        std::fs::remove_dir_all(&root).ok();
    }

    /// A record of a dead process of this host (no flock held) is taken over at once; one of
    /// another host only once its heartbeat is older than `stale`.
    #[test]
    fn dead_holders_are_taken_over_live_ones_are_not() {
        let root = dir("dead");
        std::fs::create_dir_all(root.join("leases")).unwrap();
        let mut dead = Owner::me();
        dead.pid = u32::MAX - 7; // no such process
        dead.token = "dead".into();
        create_record(&owner_path(&root, "k"), &dead).unwrap();
        let Acquired::Held(l) = acquire(&root, "k", fast(), &|| false).unwrap() else {
            panic!("a dead holder of this host blocked the lease")
        };
        assert_eq!(owner(&root, "k").unwrap().token, l.owner.token);
        drop(l);
        // Another host, beating recently: alive. Beating long ago: dead.
        let mut far = Owner::me();
        far.host = "elsewhere".into();
        far.token = "far".into();
        create_record(&owner_path(&root, "k"), &far).unwrap();
        assert!(matches!(
            acquire(&root, "k", fast(), &|| false).unwrap(),
            Acquired::Busy(Some(o)) if o.host == "elsewhere"
        ));
        far.heartbeat_unix -= 10;
        rewrite_record(&owner_path(&root, "k"), &far).unwrap();
        let Acquired::Held(l) = acquire(&root, "k", fast(), &|| false).unwrap() else {
            panic!("a silent holder of another host was not taken over")
        };
        // The old holder, were it only stalled, would find its lease gone.
        assert!(owner(&root, "k").unwrap().token != "far");
        drop(l);
        std::fs::remove_dir_all(&root).ok();
    }

    /// A taker acting on an old view of the record (a caching filesystem showed it the dead
    /// holder's after another took over, or before the holder beat its heart or committed)
    /// judges what it moved aside, read fresh, and puts anything but the dead record back.
    #[test]
    fn a_taker_with_a_stale_view_puts_the_live_record_back() {
        let root = dir("late");
        std::fs::create_dir_all(root.join("leases")).unwrap();
        let mut dead = Owner::me();
        dead.host = "gone".into();
        dead.heartbeat_unix = 0;
        dead.token = "old".into();
        create_record(&owner_path(&root, "k"), &dead).unwrap();
        let judge = |o: &Owner| -> Option<Acquired> {
            (o.alive(fast()) || o.committed_unix.is_some()).then(|| Acquired::Busy(Some(o.clone())))
        };
        let me = Owner::me();
        assert!(matches!(
            take_over(&root, "k", &dead, &me, &judge).unwrap(),
            TakeOver::Done
        ));
        assert!(owner(&root, "k").is_none());
        // Another took it over meanwhile; a late taker still sees `dead`.
        let mut new = Owner::me();
        new.token = "new".into();
        assert!(create_record(&owner_path(&root, "k"), &new).unwrap());
        assert!(matches!(
            take_over(&root, "k", &dead, &me, &judge).unwrap(),
            TakeOver::Restored(o) if o.token == "new"
        ));
        assert_eq!(owner(&root, "k").unwrap().token, "new");
        // The dead holder's own record, fresher than the view: it beat its heart since.
        std::fs::remove_file(owner_path(&root, "k")).unwrap();
        let mut beating = dead.clone();
        beating.heartbeat_unix = now_unix();
        create_record(&owner_path(&root, "k"), &beating).unwrap();
        assert!(matches!(
            take_over(&root, "k", &dead, &me, &judge).unwrap(),
            TakeOver::Restored(o) if o.token == "old"
        ));
        assert_eq!(
            owner(&root, "k").unwrap().heartbeat_unix,
            beating.heartbeat_unix
        );
        let left: Vec<_> = std::fs::read_dir(root.join("leases")).unwrap().collect();
        assert_eq!(left.len(), 1, "only the record stays: {left:?}");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn heartbeats_refresh_the_record_and_a_taken_over_holder_fails_its_check() {
        let root = dir("beat");
        let Acquired::Held(l) = acquire(&root, "k", fast(), &|| false).unwrap() else {
            panic!()
        };
        let mut o = owner(&root, "k").unwrap();
        o.heartbeat_unix = 0;
        rewrite_record(&owner_path(&root, "k"), &o).unwrap();
        let t0 = std::time::Instant::now();
        while owner(&root, "k").unwrap().heartbeat_unix == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "no heartbeat");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Another process takes it over (as after a long stall).
        let mut thief = Owner::me();
        thief.host = "thief".into();
        thief.token = "thief".into();
        rewrite_record(&owner_path(&root, "k"), &thief).unwrap();
        let e = l.check().unwrap_err();
        assert!(
            e.contains("taken over by pid") && e.contains("thief"),
            "{e}"
        );
        drop(l);
        // Dropping a lost lease leaves the new holder's record alone.
        assert_eq!(owner(&root, "k").unwrap().token, "thief");
        std::fs::remove_dir_all(&root).ok();
    }

    /// `sweep` removes the records of holders that committed or died more than the stale
    /// time ago, and leaves a live holder's and a recent commit's.
    #[test]
    fn sweep_removes_only_records_nobody_needs() {
        let root = dir("sweep");
        let held = |k: &str| match acquire(&root, k, fast(), &|| false).unwrap() {
            Acquired::Held(l) => l,
            _ => panic!("{k} not free"),
        };
        let live = held("live");
        let mut recent = held("recent");
        recent.committed();
        drop(recent);
        let mut old = held("old");
        old.committed();
        drop(old);
        let mut rec = owner(&root, "old").unwrap();
        rec.committed_unix = Some(rec.committed_unix.unwrap() - 3600);
        rewrite_record(&owner_path(&root, "old"), &rec).unwrap();
        let mut dead = owner(&root, "live").unwrap();
        dead.token = "dead".into();
        dead.heartbeat_unix -= 3600;
        dead.pid = u32::MAX;
        std::fs::File::create_new(owner_path(&root, "dead"))
            .unwrap()
            .write_all(serde_json::to_string(&dead).unwrap().as_bytes())
            .unwrap();
        assert_eq!(sweep(&root, fast()), 2);
        assert!(owner(&root, "old").is_none() && owner(&root, "dead").is_none());
        assert!(owner(&root, "live").is_some() && owner(&root, "recent").is_some());
        drop(live);
        std::fs::remove_dir_all(&root).ok();
    }

    /// A committed record tells others the node is done while its entry may be invisible to
    /// them; on a local filesystem (where the entry must show) a missing entry means it was
    /// removed since, and an old committed record counts for nothing.
    #[test]
    fn a_committed_record_says_done_for_a_while_then_is_taken_over() {
        let root = dir("committed");
        let Acquired::Held(mut l) = acquire(&root, "k", fast(), &|| false).unwrap() else {
            panic!()
        };
        l.committed();
        drop(l);
        let rec = owner(&root, "k").expect("a committed record stays");
        assert!(rec.committed_unix.is_some() && !rec.alive(fast()));
        // A local filesystem, entry visible: done. Entry gone: taken over.
        assert!(matches!(
            acquire(&root, "k", fast(), &|| true).unwrap(),
            Acquired::Committed(_)
        ));
        let Acquired::Held(l) = acquire(&root, "k", fast(), &|| false).unwrap() else {
            panic!("a committed record of this host without its entry blocked the lease")
        };
        drop(l);
        // An old one counts for nothing.
        let mut far = rec.clone();
        far.host = "far".into();
        far.token = "far".into();
        rewrite_record(&owner_path(&root, "k"), &far).unwrap();
        assert!(matches!(
            acquire(&root, "k", fast(), &|| true).unwrap(),
            Acquired::Committed(o) if o.host == "far"
        ));
        far.committed_unix = Some(far.committed_unix.unwrap() - 10);
        rewrite_record(&owner_path(&root, "k"), &far).unwrap();
        assert!(matches!(
            acquire(&root, "k", fast(), &|| false).unwrap(),
            Acquired::Held(_)
        ));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn lease_timing_is_checked_naming_the_variable() {
        assert_eq!(Timing::parse(None, None), Ok(Timing::default()));
        let t = Timing::parse(Some("1"), Some("3")).unwrap();
        assert_eq!(t.stale, Duration::from_secs(3));
        for (h, s, name) in [
            (Some("0"), None, "VTAB_ORCH_LEASE_HEARTBEAT_S"),
            (Some("x"), None, "VTAB_ORCH_LEASE_HEARTBEAT_S"),
            (None, Some("1e9"), "VTAB_ORCH_LEASE_STALE_S"),
            (Some("10"), Some("20"), "at least three heartbeats"),
        ] {
            let e = Timing::parse(h, s).unwrap_err();
            assert!(e.contains(name), "{e}");
        }
    }
}
