//! Asking Slurm about our jobs: one batched `squeue` call, `sacct` (or `sacct -c`, the job
//! completion log, where accounting is off) for jobs that left the queue. Parsing only.
use std::collections::BTreeMap;
use std::process::Command;

/// What a job's Slurm state means to the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Queued, running, or coming back (requeued, preempted, suspended, completing).
    Alive,
    /// Ended; its exit record says how.
    Ended,
    /// Ended without finishing its work through no fault of its own (time limit, preempted
    /// and not requeued by Slurm, node failure): submit it again.
    Lost,
}

/// Slurm's job state names (squeue %T, sacct State; "CANCELLED by 0" is CANCELLED).
pub fn phase(state: &str) -> Phase {
    match state.split_whitespace().next().unwrap_or("") {
        "COMPLETED" | "FAILED" | "CANCELLED" | "OUT_OF_MEMORY" | "DEADLINE" => Phase::Ended,
        "TIMEOUT" | "NODE_FAIL" | "BOOT_FAIL" => Phase::Lost,
        // PREEMPTED stays Alive while squeue lists it (with PreemptMode=REQUEUE it comes
        // back); once it has left the queue, sacct's PREEMPTED means it is lost.
        _ => Phase::Alive,
    }
}

/// A job as squeue lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub state: String,
    /// Where it runs or ran (`%N`), empty while pending.
    pub node: String,
    /// When it started (`%S`), where asked for.
    pub start: String,
    /// Its comment (`%k`), where asked for.
    pub comment: String,
}

/// A job id as `sbatch --parsable` gives it, split: ("42", Some("gpu")) for "42;gpu".
pub fn split_id(id: &str) -> (&str, Option<&str>) {
    match id.split_once(';') {
        Some((n, c)) => (n, Some(c)),
        None => (id, None),
    }
}

/// The `-M CLUSTER` arguments of a cluster (none for the default one).
pub fn cluster_args(cluster: Option<&str>) -> Vec<String> {
    cluster.map_or(Vec::new(), |c| vec!["-M".to_string(), c.to_string()])
}

/// Ids grouped by cluster: one call per cluster, never per job.
fn by_cluster(ids: &[String]) -> BTreeMap<Option<String>, Vec<String>> {
    let mut m: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for id in ids {
        let (n, c) = split_id(id);
        m.entry(c.map(str::to_string))
            .or_default()
            .push(n.to_string());
    }
    m
}

/// One `squeue -h -t all -o %i|%T|%N -j ID,...` per cluster -> full job id ("42" or
/// "42;gpu") -> what squeue lists. Ok(None): Slurm knows none of these ids any more (squeue
/// says "Invalid job id"); Err: squeue itself failed (a busy or unreachable controller).
pub fn squeue(ids: &[String]) -> Result<Option<BTreeMap<String, Listed>>, String> {
    let mut all = BTreeMap::new();
    let mut known = false;
    for (cluster, nums) in by_cluster(ids) {
        let out = Command::new("squeue")
            .args(cluster_args(cluster.as_deref()))
            .args(["-h", "-t", "all", "-o", "%i|%T|%N", "-j", &nums.join(",")])
            .output()
            .map_err(|e| format!("squeue: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("Invalid job id") {
                continue;
            }
            return Err(format!("squeue: {}", err.trim()));
        }
        known = true;
        for (n, l) in parse_listed(&String::from_utf8_lossy(&out.stdout)) {
            let id = cluster.as_ref().map_or(n.clone(), |c| format!("{n};{c}"));
            all.insert(id, l);
        }
    }
    Ok(known.then_some(all))
}

/// Every job of this user on `cluster` with its comment: `squeue --me -h -t all -o
/// %i|%T|%N|%S|%k` (one call; adoption and `status` pick theirs by comment).
pub fn squeue_mine(cluster: Option<&str>) -> Result<BTreeMap<String, Listed>, String> {
    let out = Command::new("squeue")
        .args(cluster_args(cluster))
        .args(["--me", "-h", "-t", "all", "-o", "%i|%T|%N|%S|%k"])
        .output()
        .map_err(|e| format!("squeue: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "squeue: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_listed(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .map(|(n, l)| (cluster.map_or(n.clone(), |c| format!("{n};{c}")), l))
        .collect())
}

/// `id|STATE[|NODE[|START[|COMMENT]]]` lines (squeue) -> map; a comment may itself hold `|`.
pub fn parse_listed(text: &str) -> BTreeMap<String, Listed> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().splitn(5, '|');
            let id = it.next()?.to_string();
            let state = it.next()?.to_string();
            let mut next = || it.next().unwrap_or("").to_string();
            let (node, start, comment) = (next(), next(), next());
            Some((
                id,
                Listed {
                    state,
                    node,
                    start,
                    comment,
                },
            ))
        })
        .filter(|(id, _)| !id.is_empty())
        .collect()
}

/// `id|STATE` lines (squeue) -> id -> state.
pub fn parse_pairs(text: &str) -> BTreeMap<String, String> {
    parse_listed(text)
        .into_iter()
        .map(|(id, l)| (id, l.state))
        .collect()
}

/// An ended job's record from accounting: (state, exit code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub state: String,
    pub code: Option<i32>,
    /// Where it ran last (sacct NodeList; empty if unknown).
    pub node: String,
}

/// `sacct -n -P -X -j ID,... -o JobIDRaw,State,ExitCode,NodeList` per cluster; where
/// accounting storage is disabled, the job completion log (`sacct -c`). The last record of a
/// job wins (a requeued job has one per start). A job neither answers for is absent: unknown,
/// not gone.
pub fn sacct(ids: &[String]) -> BTreeMap<String, Ended> {
    let mut all = BTreeMap::new();
    for (cluster, nums) in by_cluster(ids) {
        let list = nums.join(",");
        let tries: [&[&str]; 2] = [
            &[
                "-n",
                "-P",
                "-X",
                "-o",
                "JobIDRaw,State,ExitCode,NodeList",
                "-j",
            ],
            &[
                "-c",
                "-n",
                "-P",
                "-o",
                "JobID,State,ExitCode,NodeList",
                "-j",
            ],
        ];
        for args in tries {
            let Ok(out) = Command::new("sacct")
                .args(cluster_args(cluster.as_deref()))
                .args(args)
                .arg(&list)
                .output()
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && !text.trim().is_empty() {
                for (n, e) in parse_sacct(&text) {
                    let id = cluster.as_ref().map_or(n.clone(), |c| format!("{n};{c}"));
                    all.insert(id, e);
                }
                break;
            }
        }
    }
    all
}

/// `id|STATE|code:signal` lines -> the last record per job.
pub fn parse_sacct(text: &str) -> BTreeMap<String, Ended> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.trim().split('|').collect();
        if f.len() < 3 || f[0].is_empty() || f[0].contains('.') {
            continue; // job steps (123.batch) repeat the job
        }
        let mut cs = f[2].split(':');
        let code = cs.next().and_then(|c| c.parse::<i32>().ok());
        let signal = cs.next().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
        out.insert(
            f[0].to_string(),
            Ended {
                state: f[1].to_string(),
                code: if signal == 0 { code } else { None },
                node: f.get(3).map_or(String::new(), |n| n.to_string()),
            },
        );
    }
    out
}

/// The id printed by `sbatch --parsable`: "42", or "42;cluster" on a multi-cluster setup
/// (kept whole: later calls need `-M cluster`).
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let line = stdout.trim();
    let (id, cluster) = split_id(line);
    let cluster_ok = cluster.is_none_or(|c| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' || ch == '.')
    });
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) && cluster_ok)
        .then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_phases() {
        for s in [
            "PENDING",
            "RUNNING",
            "REQUEUED",
            "PREEMPTED",
            "COMPLETING",
            "SUSPENDED",
            "REQUEUE_HOLD",
        ] {
            assert_eq!(phase(s), Phase::Alive, "{s}");
        }
        for s in ["COMPLETED", "FAILED", "CANCELLED by 0", "OUT_OF_MEMORY"] {
            assert_eq!(phase(s), Phase::Ended, "{s}");
        }
        for s in ["TIMEOUT", "NODE_FAIL", "BOOT_FAIL"] {
            assert_eq!(phase(s), Phase::Lost, "{s}");
        }
    }

    #[test]
    fn squeue_sacct_and_sbatch_outputs_parse() {
        let q = parse_pairs("12|RUNNING\n13|PENDING\n\n");
        assert_eq!(q["12"], "RUNNING");
        assert_eq!(q.len(), 2);
        // sacct -c of a requeued job: one record per start, the last one counts; steps and
        // signals.
        let a = parse_sacct(
            "3|PENDING|0:0\n3|CANCELLED|0:0\n4|FAILED|3:0\n4.batch|FAILED|3:0\n5|CANCELLED|0:15\n",
        );
        assert_eq!(a["3"].state, "CANCELLED");
        assert_eq!(
            a["4"],
            Ended {
                state: "FAILED".into(),
                code: Some(3),
                node: String::new(),
            }
        );
        assert_eq!(a["5"].code, None);
        assert_eq!(a.len(), 3);
        assert_eq!(parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(
            parse_job_id("42;gpu-cluster\n").as_deref(),
            Some("42;gpu-cluster")
        );
        assert_eq!(split_id("42;gpu-cluster"), ("42", Some("gpu-cluster")));
        assert_eq!(cluster_args(Some("gpu")), ["-M", "gpu"]);
        assert_eq!(parse_job_id("42;bad cluster"), None);
        let l = parse_listed(
            "7|RUNNING|vn2|2026-12-04T01:02:03|vtab-orch node k store /s|x\n8|PENDING|\n",
        );
        assert_eq!(l["7"].start, "2026-12-04T01:02:03");
        assert_eq!(l["7"].node, "vn2");
        assert_eq!(l["7"].comment, "vtab-orch node k store /s|x");
        assert_eq!(l["8"].node, "");
        let n = parse_sacct("9|NODE_FAIL|0:0|vn3\n");
        assert_eq!(n["9"].node, "vn3");
        assert_eq!(parse_job_id("sbatch: error"), None);
    }

    #[test]
    fn odd_tool_output_parses_to_nothing_or_unknown_never_a_panic() {
        let odd = [
            "",
            "\n\n|\n||\n|||\n",
            "12\n|RUNNING\n12|\n",
            "99999999999999999999999999999|RUNNING|99999999999999999999:99999999999\n",
            "4|FAILED|:\n5|FAILED|x:y\n6|FAILED|-2147483649:0\n",
            "\u{feff}7|PENDING\r\n",
        ];
        for text in odd {
            let _ = parse_pairs(text);
            let _ = parse_job_id(text);
            for line in text.lines() {
                let _ = phase(line);
            }
            for ended in parse_sacct(text).values() {
                // Unparseable exit codes are unknown, not a number.
                assert!(ended.code.is_none_or(|c| c == 0), "{text:?}: {ended:?}");
            }
        }
        assert_eq!(parse_pairs("12\n|RUNNING\n").len(), 0);
        let a = parse_sacct("99999999999999999999999999999|RUNNING|99999999999999999999:0\n");
        assert_eq!(a["99999999999999999999999999999"].code, None);
        assert_eq!(
            parse_job_id(&"9".repeat(1000)).map(|id| id.len()),
            Some(1000)
        );
        assert_eq!(parse_job_id("12abc"), None);
        let lossy = String::from_utf8_lossy(b"4\xff|RUNNING\n");
        assert!(parse_pairs(&lossy).contains_key("4\u{fffd}"));
    }
}
