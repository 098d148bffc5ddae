//! Waiting on another run's lease: the driver takes the node's flock itself (blocking, in
//! a thread), lets go of it at once and reports the node; it never runs or retries a node.
use crate::exec::lease_path;
use crate::store::Store;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

pub struct Waiter {
    root: PathBuf,
    tx: Sender<String>,
    rx: Receiver<String>,
    waiting: BTreeSet<String>,
}

impl Waiter {
    pub fn new(store: &Store) -> Waiter {
        let (tx, rx) = channel();
        Waiter {
            root: store.root.clone(),
            tx,
            rx,
            waiting: BTreeSet::new(),
        }
    }

    /// Starts waiting for the lease of `key` to be free (one thread per waiting node; it
    /// ends when the holder ends, kill -9 included, since the kernel drops its flock).
    pub fn wait_for(&mut self, key: &str) {
        if !self.waiting.insert(key.to_string()) {
            return;
        }
        let path = lease_path(&self.root, key);
        let (tx, key) = (self.tx.clone(), key.to_string());
        std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path);
            // Cannot open the lease file: report it free; the node's own process will say
            // what is wrong when it tries.
            if let Ok(f) = file {
                let _ = f.lock();
                drop(f);
            }
            let _ = tx.send(key);
        });
    }

    /// Nodes whose lease became free since the last call.
    pub fn freed(&mut self) -> Vec<String> {
        let keys: Vec<String> = self.rx.try_iter().collect();
        for k in &keys {
            self.waiting.remove(k);
        }
        keys
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The waiter reports a node only after the holder lets go, without polling the node.
    #[test]
    fn reports_a_lease_when_its_holder_lets_go() {
        let dir = std::env::temp_dir().join(format!("vtab-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let path = lease_path(&store.root, "k1");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let held = std::fs::File::create(&path).unwrap();
        held.lock().unwrap();
        let mut w = Waiter::new(&store);
        w.wait_for("k1");
        w.wait_for("k1"); // a second wait on the same node is one wait
        std::thread::sleep(Duration::from_millis(200));
        assert!(w.freed().is_empty(), "reported while still held");
        assert_eq!(w.waiting(), 1);
        drop(held);
        let t0 = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() && t0.elapsed() < Duration::from_secs(5) {
            got = w.freed();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(got, ["k1"]);
        assert_eq!(w.waiting(), 0);
        // Free leases are reported at once.
        w.wait_for("k2");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(w.freed(), ["k2"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
