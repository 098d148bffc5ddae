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

/// `squeue -h -t all -j ID,... -o %i|%T` -> job id -> state. Ok(None): Slurm does not know
/// any of these ids any more (squeue says "Invalid job id"); Err: squeue itself failed.
pub fn squeue(ids: &[String]) -> Result<Option<BTreeMap<String, String>>, String> {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%T", "-j", &ids.join(",")])
        .output()
        .map_err(|e| format!("squeue: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Invalid job id") {
            return Ok(None);
        }
        return Err(format!("squeue: {}", err.trim()));
    }
    Ok(Some(parse_pairs(&String::from_utf8_lossy(&out.stdout))))
}

/// `id|STATE` lines (squeue) -> map; array and het-job suffixes are not ours to see.
pub fn parse_pairs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split('|');
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .filter(|(id, _)| !id.is_empty())
        .collect()
}

/// An ended job's record from accounting: (state, exit code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub state: String,
    pub code: Option<i32>,
}

/// `sacct -n -P -X -j ID,... -o JobIDRaw,State,ExitCode`; where accounting storage is
/// disabled, the job completion log (`sacct -c`). The last record of a job wins (a
/// requeued job has one per start). Empty if neither answers.
pub fn sacct(ids: &[String]) -> BTreeMap<String, Ended> {
    let list = ids.join(",");
    let tries: [&[&str]; 2] = [
        &["-n", "-P", "-X", "-o", "JobIDRaw,State,ExitCode", "-j"],
        &["-c", "-n", "-P", "-o", "JobID,State,ExitCode", "-j"],
    ];
    for args in tries {
        let Ok(out) = Command::new("sacct").args(args).arg(&list).output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && !text.trim().is_empty() {
            return parse_sacct(&text);
        }
    }
    BTreeMap::new()
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
            },
        );
    }
    out
}

/// The id printed by `sbatch --parsable` ("42" or "42;cluster").
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let id = stdout.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
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
                code: Some(3)
            }
        );
        assert_eq!(a["5"].code, None);
        assert_eq!(a.len(), 3);
        assert_eq!(parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("42;gpu-cluster\n").as_deref(), Some("42"));
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
