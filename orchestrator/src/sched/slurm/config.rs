//! The suite's `[slurm]` table: sbatch options for every job and the launcher's limits.
//! Parsed here (the suite parser only hands over the table); it runs nothing.
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Time limit of each job (sbatch `--time`, e.g. "2:00:00").
    pub time: Option<String>,
    /// Memory of each job (sbatch `--mem`, e.g. "32G").
    pub mem: Option<String>,
    /// Cores of each job; default: what the node declares (4 for prep, train, eval).
    pub cpus_per_task: Option<u32>,
    /// The generic resource a GPU node asks for (sbatch `--gres`).
    pub gres: String,
    /// Jobs of this run queued or running at once.
    pub max_jobs: usize,
    /// Seconds between two `squeue` calls, growing up to `max_poll_s` while nothing changes.
    pub poll_s: f64,
    pub max_poll_s: f64,
    /// The smallest `poll_s` accepted: a shared slurmctld's admins ask for no faster polling
    /// than every 30 s. Lowered only on a cluster of one's own (the tests' one).
    pub poll_floor_s: f64,
    /// Seconds before the time limit at which a job requeues itself (`--signal=B:USR1@N`).
    pub signal_s: u64,
    /// Times a preempted or timed-out node is submitted again before it counts as failed.
    pub max_requeues: u32,
    /// More sbatch arguments, e.g. ["--constraint=a100", "--exclusive"].
    pub extra_args: Vec<String>,
    /// Warm workers: at most this many pilot jobs at once (GPU and CPU ones together), each
    /// running node after node from the store's pool folder; 0: one job per node. Default
    /// (None): `max_jobs`, so as many nodes run at once as with one job per node.
    pub workers: Option<usize>,
    /// Seconds a warm worker waits for an assignment before it ends.
    pub worker_idle_s: f64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            account: None,
            qos: None,
            time: None,
            mem: None,
            cpus_per_task: None,
            gres: "gpu:1".into(),
            max_jobs: 100,
            poll_s: 30.0,
            max_poll_s: 180.0,
            poll_floor_s: 30.0,
            signal_s: 120,
            max_requeues: 3,
            extra_args: Vec::new(),
            workers: None,
            worker_idle_s: 60.0,
        }
    }
}

pub const KEYS: [&str; 16] = [
    "workers",
    "worker_idle_s",
    "partition",
    "account",
    "qos",
    "time",
    "mem",
    "cpus_per_task",
    "gres",
    "max_jobs",
    "poll_s",
    "max_poll_s",
    "poll_floor_s",
    "signal_s",
    "max_requeues",
    "extra_args",
];

/// The longest poll interval: a day (`Duration` and the back-off arithmetic stay in range).
pub const MAX_POLL_S: f64 = 86_400.0;
/// Upper bounds of the counts, far above any cluster's, so that no value truncates or
/// overflows where it is used.
const MAX_SIGNAL_S: u64 = 7 * 86_400;
const MAX_CPUS: u64 = 4_096;
const MAX_JOBS: u64 = 100_000;
const MAX_REQUEUES: u64 = 1_000;
const MAX_WORKERS: u64 = 10_000;

/// A problem with one key of `[slurm]`: (key, what is wrong and how to fix it).
pub type KeyError = (String, String);

impl SlurmConfig {
    /// Warm workers at once, where at most `max_jobs` jobs may be queued (the suite's, or the
    /// cluster's lower submit limit); 0: one job per node.
    pub fn pilots(&self, max_jobs: usize) -> usize {
        self.workers.unwrap_or(max_jobs).min(max_jobs)
    }

    /// Reads the table's known keys (the caller reports unknown ones); every error at once.
    pub fn parse(m: &serde_json::Map<String, Value>) -> (SlurmConfig, Vec<KeyError>) {
        let mut c = SlurmConfig::default();
        let mut errors = Vec::new();
        let mut err = |k: &str, msg: String| errors.push((format!("slurm.{k}"), msg));
        for (k, v) in m {
            let string = |err: &mut dyn FnMut(&str, String)| match v.as_str() {
                Some(s) if !s.trim().is_empty() => Some(s.to_string()),
                _ => {
                    err(k, format!("expected a non-empty string, found {v}"));
                    None
                }
            };
            let count = |err: &mut dyn FnMut(&str, String), min: u64, max: u64| match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    err(
                        k,
                        format!("expected an integer from {min} to {max}, found {v}"),
                    );
                    None
                }
            };
            let seconds = |err: &mut dyn FnMut(&str, String)| match v.as_f64() {
                Some(s) if s > 0.0 && s <= MAX_POLL_S && Duration::try_from_secs_f64(s).is_ok() => {
                    Some(s)
                }
                _ => {
                    err(
                        k,
                        format!(
                            "expected a number of seconds > 0 and at most {MAX_POLL_S}, found {v}"
                        ),
                    );
                    None
                }
            };
            match k.as_str() {
                "partition" => c.partition = string(&mut err),
                "account" => c.account = string(&mut err),
                "qos" => c.qos = string(&mut err),
                "time" => c.time = string(&mut err),
                "mem" => c.mem = string(&mut err),
                "gres" => c.gres = string(&mut err).unwrap_or(c.gres),
                "cpus_per_task" => {
                    c.cpus_per_task = count(&mut err, 1, MAX_CPUS).map(|n| n as u32)
                }
                "max_jobs" => {
                    c.max_jobs = count(&mut err, 1, MAX_JOBS).map_or(c.max_jobs, |n| n as usize)
                }
                "max_requeues" => {
                    c.max_requeues =
                        count(&mut err, 0, MAX_REQUEUES).map_or(c.max_requeues, |n| n as u32)
                }
                "signal_s" => c.signal_s = count(&mut err, 1, MAX_SIGNAL_S).unwrap_or(c.signal_s),
                "workers" => {
                    c.workers = count(&mut err, 0, MAX_WORKERS).map(|n| n as usize)
                }
                "worker_idle_s" => c.worker_idle_s = seconds(&mut err).unwrap_or(c.worker_idle_s),
                "poll_s" => c.poll_s = seconds(&mut err).unwrap_or(c.poll_s),
                "max_poll_s" => c.max_poll_s = seconds(&mut err).unwrap_or(c.max_poll_s),
                "poll_floor_s" => match v.as_f64() {
                    Some(f) if (0.0..=MAX_POLL_S).contains(&f) => c.poll_floor_s = f,
                    _ => err(
                        k,
                        format!("expected a number of seconds from 0 to {MAX_POLL_S}, found {v}"),
                    ),
                },
                "extra_args" => match v.as_array() {
                    Some(a) if a.iter().all(Value::is_string) => {
                        c.extra_args = a
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    }
                    _ => err(
                        k,
                        format!("expected a list of sbatch arguments such as [\"--exclusive\"], found {v}"),
                    ),
                },
                _ => {}
            }
        }
        if c.poll_s < c.poll_floor_s {
            err(
                "poll_s",
                format!(
                    "is {} but the floor is {} s: a shared Slurm controller must not be asked \
                     faster (admins ask for 30-180 s); on a cluster of your own set \
                     slurm.poll_floor_s lower",
                    c.poll_s, c.poll_floor_s
                ),
            );
        }
        if c.max_poll_s < c.poll_s {
            err(
                "max_poll_s",
                format!(
                    "is {} but poll_s is {}: the back-off cannot end below where it starts",
                    c.max_poll_s, c.poll_s
                ),
            );
        }
        errors.sort();
        (c, errors)
    }

    /// `--partition`, `--account`, `--qos`, `--time`, `--mem` for the keys that are set: what
    /// every job of the study asks for, node jobs and warm workers alike.
    pub fn placement_args(&self) -> Vec<String> {
        [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("time", &self.time),
            ("mem", &self.mem),
        ]
        .into_iter()
        .filter_map(|(flag, v)| v.as_ref().map(|v| format!("--{flag}={v}")))
        .collect()
    }

    /// `time` in seconds, from Slurm's forms ("MM", "MM:SS", "HH:MM:SS", "D-HH",
    /// "D-HH:MM", "D-HH:MM:SS"); None if unset or in another form.
    pub fn time_limit_s(&self) -> Option<u64> {
        let t = self.time.as_deref()?.trim();
        let (days, rest) = match t.split_once('-') {
            Some((d, r)) => (d.parse::<u64>().ok()?, r),
            None => (0, t),
        };
        let parts: Vec<u64> = rest
            .split(':')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<_>>()?;
        let (h, m, s) = match (t.contains('-'), parts.as_slice()) {
            (false, [m]) => (0, *m, 0),
            (false, [m, s]) => (0, *m, *s),
            (_, [h, m, s]) => (*h, *m, *s),
            (true, [h]) => (*h, 0, 0),
            (true, [h, m]) => (*h, *m, 0),
            _ => return None,
        };
        Some(((days * 24 + h) * 60 + m) * 60 + s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_read_in_slurm_s_forms() {
        let t = |s: &str| {
            SlurmConfig {
                time: Some(s.into()),
                ..SlurmConfig::default()
            }
            .time_limit_s()
        };
        assert_eq!(t("30"), Some(1800));
        assert_eq!(t("30:15"), Some(1815));
        assert_eq!(t("2:00:00"), Some(7200));
        assert_eq!(t("1-2"), Some(93_600));
        assert_eq!(t("1-00:30"), Some(88_200));
        assert_eq!(t("1-00:00:01"), Some(86_401));
        assert_eq!(t("infinite"), None);
        assert_eq!(SlurmConfig::default().time_limit_s(), None);
    }

    fn parse(toml_text: &str) -> (SlurmConfig, Vec<KeyError>) {
        let t: toml::Table = toml::from_str(toml_text).unwrap();
        let v = serde_json::to_value(t).unwrap();
        SlurmConfig::parse(v.as_object().unwrap())
    }

    #[test]
    fn keys_parse_and_bad_values_name_their_key() {
        let (c, e) = parse(
            "partition = \"gpu\"\naccount = \"lab\"\nqos = \"normal\"\ntime = \"1:00:00\"\nmem = \"16G\"\n\
             cpus_per_task = 8\ngres = \"gpu:a100:1\"\nmax_jobs = 20\npoll_floor_s = 1\npoll_s = 2\nmax_poll_s = 30.5\n\
             signal_s = 300\nmax_requeues = 0\nextra_args = [\"--exclusive\"]\n",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.partition.as_deref(), Some("gpu"));
        assert_eq!(c.cpus_per_task, Some(8));
        assert_eq!(c.gres, "gpu:a100:1");
        assert_eq!((c.max_jobs, c.poll_s, c.max_poll_s), (20, 2.0, 30.5));
        assert_eq!((c.signal_s, c.max_requeues), (300, 0));
        assert_eq!(c.extra_args, ["--exclusive"]);
        let (_, e) = parse(
            "partition = 3\nmax_jobs = 0\npoll_s = -1\nextra_args = \"--exclusive\"\ncpus_per_task = 1.5\n",
        );
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "slurm.cpus_per_task",
                "slurm.extra_args",
                "slurm.max_jobs",
                "slurm.partition",
                "slurm.poll_s"
            ]
        );
        let (_, e) = parse("poll_floor_s = 1\npoll_s = 10\nmax_poll_s = 5\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].1.contains("poll_s is 10"), "{e:?}");
        assert_eq!(parse("").0, SlurmConfig::default());
    }

    #[test]
    fn numbers_that_overflow_a_duration_or_a_count_name_their_key() {
        // 1e30 s panicked in Duration::from_secs_f64; 2^32 + 1 cpus truncated to 1.
        let (c, e) = parse(
            "poll_s = 1e30\nmax_poll_s = 1e300\ncpus_per_task = 4294967297\nmax_jobs = 9223372036854775807\n\
             max_requeues = 4294967296\nsignal_s = 9223372036854775807\n",
        );
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "slurm.cpus_per_task",
                "slurm.max_jobs",
                "slurm.max_poll_s",
                "slurm.max_requeues",
                "slurm.poll_s",
                "slurm.signal_s"
            ]
        );
        assert!(
            e.iter()
                .all(|(_, m)| m.contains("at most") || m.contains(" to ")),
            "{e:?}"
        );
        assert_eq!(c, SlurmConfig::default());
        let (c, e) = parse("poll_s = 86400\nmax_poll_s = 86400\n");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.poll_s, MAX_POLL_S);
    }

    /// By default nobody polls a shared controller faster than every 30 s; a test cluster
    /// lowers the floor explicitly.
    #[test]
    fn the_poll_interval_has_a_floor_that_only_an_explicit_key_lowers() {
        let d = SlurmConfig::default();
        assert_eq!(
            (d.poll_s, d.max_poll_s, d.poll_floor_s),
            (30.0, 180.0, 30.0)
        );
        let (_, e) = parse("poll_s = 5\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "slurm.poll_s");
        assert!(
            e[0].1.contains("floor is 30 s") && e[0].1.contains("poll_floor_s"),
            "{e:?}"
        );
        let (c, e) = parse("poll_floor_s = 0\npoll_s = 0.3\nmax_poll_s = 2\n");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!((c.poll_s, c.max_poll_s), (0.3, 2.0));
        let (_, e) = parse("poll_floor_s = -1\n");
        assert_eq!(e[0].0, "slurm.poll_floor_s");
    }
}
