//! What happens in a run, as events: the terminal view consumes them and every one is
//! appended, with its time, to `<store>/runs/<run-id>.jsonl`. Nothing here prints.
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Cached {
        key: String,
        label: String,
    },
    /// The node's process holds its lease and begins (`slot`: gpu0.1, cpu, slurm job 42).
    Started {
        key: String,
        label: String,
        slot: String,
        /// The CUDA_VISIBLE_DEVICES the node's process saw (None: not set).
        devices: Option<String>,
    },
    /// A JSON progress line from the node (epoch, loss, img/s, ...).
    Progress {
        key: String,
        label: String,
        data: serde_json::Value,
    },
    Finished {
        key: String,
        label: String,
        wall_s: f64,
    },
    Failed {
        key: String,
        label: String,
        log: PathBuf,
        tail: String,
    },
    Blocked {
        key: String,
        label: String,
        by: String,
    },
    /// Another `vtab-orch run` holds the node's lease: this run waits on the lease and
    /// looks again when it is free.
    Waiting {
        key: String,
        label: String,
        /// Who holds it, as its owner record says ("pid 41 on vn2 (slurm job 17), ...").
        holder: Option<String>,
    },
    /// The node's cluster job, submitted by an earlier driver that died, still runs: this run
    /// watches it instead of submitting the node again.
    Adopted {
        key: String,
        label: String,
        job: String,
    },
    /// A cluster job of the node is submitted again (preempted, timed out).
    Requeued {
        key: String,
        label: String,
        why: String,
    },
    /// The run was interrupted (Ctrl-C, SIGTERM); its jobs were cancelled.
    Interrupted {
        cancelled: usize,
    },
}

/// A run's identity: UTC time and process id, e.g. `20261128T064102Z-4242`.
pub fn new_run_id() -> String {
    let secs = now_unix() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        std::process::id()
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The run record: one JSON object per line, `{"t": unix seconds, "event": ..., ...}`.
pub struct Record {
    pub path: PathBuf,
    file: Option<std::fs::File>,
}

impl Record {
    /// Opens `<store>/runs/<run_id>.jsonl`. A record that cannot be written is not fatal
    /// (the run goes on; `path` says where it would have been).
    pub fn create(store_root: &Path, run_id: &str) -> Record {
        let path = store_root.join("runs").join(format!("{run_id}.jsonl"));
        let file = std::fs::create_dir_all(path.parent().expect("runs dir"))
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
            })
            .ok();
        Record { path, file }
    }

    pub fn write(&mut self, e: &Event) {
        let Some(f) = self.file.as_mut() else { return };
        let mut v = serde_json::to_value(e).expect("events serialise");
        if let Some(m) = v.as_object_mut() {
            m.insert("t".into(), serde_json::json!(now_unix()));
        }
        // One write per line: readers (a report, a second terminal) never see half a line.
        let _ = f.write_all(format!("{v}\n").as_bytes());
    }
}

/// The events of a run record, in order (lines that do not parse are skipped).
pub fn read_record(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_timestamps() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_420), (2025, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let id = new_run_id();
        assert_eq!(
            id.len(),
            "20261128T064102Z".len() + 1 + std::process::id().to_string().len()
        );
        assert!(id.ends_with(&format!("Z-{}", std::process::id())), "{id}");
    }

    #[test]
    fn the_record_holds_one_timed_json_object_per_event() {
        let dir = std::env::temp_dir().join(format!("vtab-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = Record::create(&dir, "r1");
        r.write(&Event::Started {
            key: "k".into(),
            label: "train x".into(),
            slot: "gpu0.0".into(),
            devices: Some("GPU-aaa".into()),
        });
        r.write(&Event::Finished {
            key: "k".into(),
            label: "train x".into(),
            wall_s: 1.5,
        });
        let ev = read_record(&dir.join("runs/r1.jsonl"));
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["event"], "started");
        assert_eq!(ev[0]["slot"], "gpu0.0");
        assert_eq!(ev[1]["event"], "finished");
        assert_eq!(ev[1]["wall_s"], 1.5);
        assert!(ev[1]["t"].as_f64().unwrap() >= ev[0]["t"].as_f64().unwrap());
        std::fs::remove_dir_all(&dir).ok();
    }
}
