//! Waiting on another process's lease (`crate::lease`): the driver looks at the owner records
//! of the nodes it waits on (about once a second) and reports a node once its record is gone or
//! its holder is dead; the node's own process then takes the lease over. It never runs or
//! retries a node itself.
use crate::lease::{owner, Owner, Timing};
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the waited-on owner records are read.
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub struct Waiter {
    root: PathBuf,
    timing: Timing,
    waiting: BTreeMap<String, Option<Owner>>,
    next_look: Instant,
}

impl Waiter {
    pub fn new(store: &Store, timing: Timing) -> Waiter {
        Waiter {
            root: store.root.clone(),
            timing,
            waiting: BTreeMap::new(),
            next_look: Instant::now(),
        }
    }

    /// Starts waiting on the lease of `key`; returns its holder as seen now (None: the record
    /// cannot be read, e.g. not visible here yet).
    pub fn wait_for(&mut self, key: &str) -> Option<Owner> {
        let holder = owner(&self.root, key);
        self.waiting.insert(key.to_string(), holder.clone());
        holder
    }

    /// Nodes whose lease became free (or whose holder died) since the last call.
    pub fn freed(&mut self) -> Vec<String> {
        if self.waiting.is_empty() || Instant::now() < self.next_look {
            return Vec::new();
        }
        self.next_look = Instant::now() + LOOK_EVERY;
        let freed: Vec<String> = self
            .waiting
            .keys()
            .filter(|k| match owner(&self.root, k) {
                None => true,
                // Committed: its process exits at once, and the node is found done.
                Some(o) if o.committed_unix.is_some() => true,
                Some(o) => !o.alive(self.timing),
            })
            .cloned()
            .collect();
        for k in &freed {
            self.waiting.remove(k);
        }
        freed
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{acquire, Acquired};

    /// The waiter reports a node only after the holder lets go.
    #[test]
    fn reports_a_lease_when_its_holder_lets_go() {
        let dir = std::env::temp_dir().join(format!("vtab-waiter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let Acquired::Held(held) =
            acquire(&store.root, "k1", Timing::default(), &|| false).unwrap()
        else {
            panic!("free lease not taken");
        };
        let mut w = Waiter::new(&store, Timing::default());
        let holder = w.wait_for("k1").expect("holder named");
        assert_eq!(holder.pid, std::process::id());
        std::thread::sleep(Duration::from_millis(1200));
        assert!(w.freed().is_empty(), "reported while still held");
        assert_eq!(w.waiting(), 1);
        drop(held);
        let t0 = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() && t0.elapsed() < Duration::from_secs(10) {
            got = w.freed();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(got, ["k1"]);
        assert_eq!(w.waiting(), 0);
        // A lease nobody holds is reported at the next look.
        w.wait_for("k2");
        let t0 = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() && t0.elapsed() < Duration::from_secs(10) {
            got = w.freed();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(got, ["k2"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
