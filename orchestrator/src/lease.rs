//! Node leases that hold on a store shared between hosts (NFS, Lustre, BeeGFS, a FUSE mount),
//! where `flock` may lock per host only or not at all, and a file made on one host may stay
//! invisible on another for a while. A lease is two things:
//! - an owner record `<store>/leases/<key>.owner`, created exclusively (a hard link of a
//!   private file, atomic on NFS too), naming who runs the node (host, pid, Slurm job), with a
//!   fencing token and a heartbeat its holder rewrites every `heartbeat`;
//! - the `flock` of `<store>/leases/<key>`: the fast path between processes of one host (the
//!   kernel drops it when its holder dies, kill -9 included).
//!
//! A record whose holder is dead is taken over: at once when the holder ran on this host (its
//! pid is gone, or its flock is free), after `stale` without a heartbeat when it ran on
//! another (host clocks must agree to well within `stale`, as Slurm's own munge requires).
//! A takeover first creates the tombstone `<key>.dead.<token>` exclusively, so that of two
//! processes that both saw the same dead holder only one replaces it. The holder checks its
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
        }
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

    /// Whether the holder still runs. `flock_free`: the lease's flock could be taken just now
    /// (None: flock does not work on this filesystem).
    pub fn alive(&self, flock_free: Option<bool>, timing: Timing) -> bool {
        if self.host == host_name() {
            let pid_alive = Path::new(&format!("/proc/{}", self.pid)).exists();
            // A holder of this host holds the flock for as long as its record exists.
            pid_alive && flock_free != Some(true)
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

/// Whether process `pid` of `host` still holds the lease of `key` (a staging directory of
/// another host is kept while this is so).
pub fn holds(root: &Path, key: &str, host: &str, pid: u32, timing: Timing) -> bool {
    owner(root, key).is_some_and(|o| o.host == host && o.pid == pid && o.alive(None, timing))
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

/// Whether the flock of `key` is free right now (taken and let go at once); None where the
/// filesystem cannot lock or the file cannot be opened.
pub fn flock_free(root: &Path, key: &str) -> Option<bool> {
    match try_flock(&lock_path(root, key)) {
        Ok(Flock::Held(_)) => Some(true),
        Ok(Flock::Busy) => Some(false),
        _ => None,
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

/// Removes the record of dead holder `dead`, unless another process is already doing so
/// (the tombstone `<key>.dead.<token>` is created exclusively and kept: one that saw the same
/// dead record through a stale cache finds it and backs off). Ok(true): removed by us.
fn take_over(root: &Path, key: &str, dead: &Owner) -> std::io::Result<bool> {
    let tomb = root
        .join("leases")
        .join(format!("{key}.dead.{}", dead.token));
    match std::fs::File::create_new(&tomb) {
        Ok(mut f) => {
            let _ = writeln!(f, "{}", serde_json::to_string(dead).expect("serialises"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    if owner(root, key).is_some_and(|o| o.token == dead.token) {
        match std::fs::remove_file(owner_path(root, key)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// What [`acquire`] found.
pub enum Acquired {
    Held(Lease),
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

/// Takes the lease of `key` if it is free or its holder is dead.
pub fn acquire(root: &Path, key: &str, timing: Timing) -> std::io::Result<Acquired> {
    std::fs::create_dir_all(root.join("leases"))?;
    let flock = match try_flock(&lock_path(root, key))? {
        Flock::Held(f) => Some(f),
        Flock::Busy => return Ok(Acquired::Busy(owner(root, key))),
        Flock::Unsupported => None,
    };
    let me = Owner::me();
    let path = owner_path(root, key);
    for _ in 0..3 {
        if create_record(&path, &me)? {
            return Ok(Acquired::Held(Lease::start(root, key, me, flock, timing)));
        }
        let Some(other) = owner(root, key) else {
            continue; // removed meanwhile, or being written: try again
        };
        // We hold the flock (if there is one): a holder of this host whose record is there
        // has died.
        let free = flock.as_ref().map(|_| true);
        if other.alive(free, timing) {
            return Ok(Acquired::Busy(Some(other)));
        }
        if !take_over(root, key, &other)? {
            return Ok(Acquired::Busy(Some(other)));
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
                        // Taken over (we stalled past `stale`), or removed: never write again.
                        Some(_) | None => {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
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

    /// The fencing check before a commit: Ok while the record is still ours.
    pub fn check(&self) -> Result<(), String> {
        let current = owner(&self.root, &self.key);
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
        if owner(&self.root, &self.key).is_some_and(|o| o.token == self.owner.token) {
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
        let Acquired::Held(l) = acquire(&root, "k", fast()).unwrap() else {
            panic!("free lease not taken")
        };
        assert_eq!(owner(&root, "k").unwrap().token, l.owner.token);
        // A second acquisition in this process: the flock is per open file, so it is Busy.
        match acquire(&root, "k", fast()).unwrap() {
            Acquired::Busy(Some(o)) => assert_eq!(o.pid, std::process::id()),
            _ => panic!("a held lease was taken twice"),
        }
        assert!(l.check().is_ok());
        drop(l);
        assert!(owner(&root, "k").is_none(), "record left behind");
        assert!(matches!(
            acquire(&root, "k", fast()).unwrap(),
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
        let Acquired::Held(l) = acquire(&root, "k", fast()).unwrap() else {
            panic!("a dead holder of this host blocked the lease")
        };
        assert!(root.join("leases/k.dead.dead").exists(), "no tombstone");
        drop(l);
        // Another host, beating recently: alive. Beating long ago: dead.
        let mut far = Owner::me();
        far.host = "elsewhere".into();
        far.token = "far".into();
        create_record(&owner_path(&root, "k"), &far).unwrap();
        assert!(matches!(
            acquire(&root, "k", fast()).unwrap(),
            Acquired::Busy(Some(o)) if o.host == "elsewhere"
        ));
        far.heartbeat_unix -= 10;
        rewrite_record(&owner_path(&root, "k"), &far).unwrap();
        let Acquired::Held(l) = acquire(&root, "k", fast()).unwrap() else {
            panic!("a silent holder of another host was not taken over")
        };
        // The old holder, were it only stalled, would find its lease gone.
        assert!(owner(&root, "k").unwrap().token != "far");
        drop(l);
        std::fs::remove_dir_all(&root).ok();
    }

    /// A taker that saw the same dead record late finds the tombstone and backs off, so it
    /// never removes the record of the process that took over first.
    #[test]
    fn a_late_taker_does_not_remove_the_new_holder_s_record() {
        let root = dir("late");
        std::fs::create_dir_all(root.join("leases")).unwrap();
        let mut dead = Owner::me();
        dead.host = "gone".into();
        dead.heartbeat_unix = 0;
        dead.token = "old".into();
        create_record(&owner_path(&root, "k"), &dead).unwrap();
        assert!(take_over(&root, "k", &dead).unwrap());
        let mut new = Owner::me();
        new.token = "new".into();
        assert!(create_record(&owner_path(&root, "k"), &new).unwrap());
        assert!(!take_over(&root, "k", &dead).unwrap());
        assert_eq!(owner(&root, "k").unwrap().token, "new");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn heartbeats_refresh_the_record_and_a_taken_over_holder_fails_its_check() {
        let root = dir("beat");
        let Acquired::Held(l) = acquire(&root, "k", fast()).unwrap() else {
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
