//! The terminal view of a run: consumes scheduler events. On a terminal, an overall bar and
//! one line per running node (epoch, loss, img/s); otherwise (logs, CI) one line per event.
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use orchestrator::sched::Event;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// `eprintln!` that survives a closed stderr (`run ... 2>&1 | tee log`, then Ctrl-C ends tee):
/// the line is lost, the driver goes on to cancel its jobs instead of dying on the write.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use say;

pub enum View {
    Lines {
        done: usize,
        total: usize,
    },
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
        nodes: BTreeMap<String, ProgressBar>,
    },
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("            | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// "epoch 3/10 loss 1.2345 812 img/s" for a training progress line, if it is one.
fn progress_text(data: &serde_json::Value) -> Option<String> {
    if let Some(ep) = data.get("resumed_after_epoch") {
        return Some(format!("resumed from the checkpoint of epoch {ep}"));
    }
    if let Some(ep) = data.get("epoch") {
        return Some(format!(
            "epoch {ep}/{} loss {:.4} {:.0} img/s",
            data["epochs"],
            data["loss"].as_f64().unwrap_or(f64::NAN),
            data["img_s"].as_f64().unwrap_or(0.0)
        ));
    }
    data.get("done")
        .map(|d| format!("{d}/{} images", data["total"]))
}

impl View {
    /// Bars on an interactive terminal, lines otherwise.
    pub fn new(total: usize) -> View {
        if !std::io::stderr().is_terminal() {
            return View::Lines { done: 0, total };
        }
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} nodes  {elapsed_precise} (eta {eta})  {msg}",
            )
            .expect("valid template"),
        );
        View::Bars {
            multi,
            overall,
            nodes: BTreeMap::new(),
        }
    }

    pub fn on(&mut self, e: &Event) {
        match self {
            View::Lines { done, total } => lines(done, *total, e),
            View::Bars {
                multi,
                overall,
                nodes,
            } => match e {
                Event::Cached { .. } => overall.inc(1),
                Event::Started {
                    key, label, slot, ..
                } => {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {prefix}: {msg}")
                            .expect("valid template"),
                    );
                    bar.set_prefix(format!("{label} ({slot})"));
                    bar.enable_steady_tick(std::time::Duration::from_millis(200));
                    nodes.insert(key.clone(), bar);
                }
                Event::Progress { key, data, .. } => {
                    if let (Some(bar), Some(text)) = (nodes.get(key), progress_text(data)) {
                        bar.set_message(text);
                    }
                }
                Event::Finished { key, label, wall_s } => {
                    if let Some(bar) = nodes.remove(key) {
                        bar.finish_and_clear();
                    }
                    overall.inc(1);
                    overall.set_message(format!("last: {label} ({wall_s:.1} s)"));
                }
                Event::Failed {
                    key,
                    label,
                    log,
                    tail,
                } => {
                    if let Some(bar) = nodes.remove(key) {
                        bar.finish_and_clear();
                    }
                    overall.inc(1);
                    let _ = multi.println(format!(
                        "FAILED {label}\n            log: {}\n{}",
                        log.display(),
                        indent(tail)
                    ));
                }
                Event::Blocked { label, by, .. } => {
                    overall.inc(1);
                    let _ = multi.println(format!("blocked {label}  (input {by} failed)"));
                }
                Event::Waiting { label, holder, .. } => {
                    let _ = multi.println(format!("waiting {label}  ({})", held_by(holder)));
                }
                Event::Requeued { label, why, .. } => {
                    let _ = multi.println(format!("requeued {label}  ({why})"));
                }
                Event::Adopted { label, job, .. } => {
                    let _ = multi.println(format!(
                        "adopted {label}  (slurm job {job}, submitted by an earlier run)"
                    ));
                }
                Event::Interrupted { cancelled } => {
                    let _ = multi.println(format!(
                        "interrupted: stopped {cancelled} running node(s); training nodes saved a checkpoint and resume from it on the next run"
                    ));
                }
            },
        }
    }

    pub fn finish(&self) {
        if let View::Bars { overall, .. } = self {
            overall.finish();
        }
    }
}

fn lines(done: &mut usize, total: usize, e: &Event) {
    match e {
        Event::Cached { .. } => *done += 1,
        Event::Started { label, slot, .. } => {
            say!("[{done:>4}/{total}] start  {label}  ({slot})")
        }
        Event::Progress { label, data, .. } => {
            if data.get("done").is_none() {
                if let Some(text) = progress_text(data) {
                    say!("            {label}: {text}");
                }
            }
        }
        Event::Finished { label, wall_s, .. } => {
            *done += 1;
            say!("[{done:>4}/{total}] done   {label}  ({wall_s:.1} s)");
        }
        Event::Failed {
            label, log, tail, ..
        } => {
            *done += 1;
            say!(
                "[{done:>4}/{total}] FAILED {label}\n            log: {}\n{}",
                log.display(),
                indent(tail)
            );
        }
        Event::Blocked { label, by, .. } => {
            *done += 1;
            say!("[{done:>4}/{total}] blocked {label}  (input {by} failed)");
        }
        Event::Waiting { label, holder, .. } => {
            say!("[{done:>4}/{total}] waiting {label}  ({})", held_by(holder))
        }
        Event::Requeued { label, why, .. } => {
            say!("[{done:>4}/{total}] requeued {label}  ({why})")
        }
        Event::Adopted { label, job, .. } => {
            say!("[{done:>4}/{total}] adopted {label}  (slurm job {job}, submitted by an earlier run)")
        }
        Event::Interrupted { cancelled } => {
            say!("interrupted: stopped {cancelled} running node(s); training nodes saved a checkpoint and resume from it on the next run")
        }
    }
}

/// Who executes a node this run waits on.
fn held_by(holder: &Option<String>) -> String {
    match holder {
        Some(h) => format!("another vtab-orch process holds its lease: {h}"),
        None => "another vtab-orch process holds its lease".into(),
    }
}
