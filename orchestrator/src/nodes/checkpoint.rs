//! Epoch checkpoints of a training node: when to write them (a time budget, a number of
//! epochs, and always when the process is asked to stop), writing them off the training
//! thread, and restoring them. Owns the checkpoint file; the training loop is `fit.rs`.
use super::EpochLog;
use super::{NodeError, Result};
use crate::suite::CheckpointEvery;
use kernels::train::Trainer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;
use tch::{Device, Tensor};

/// Resumable state at an epoch end, in one file replaced atomically (written, fsynced,
/// renamed): `ckpt.safetensors` holds the trainable tensors (`param.<name>`), the optimiser
/// state, and `meta.json` (this struct as UTF-8 bytes: epoch, optimiser step, epoch logs).
/// The data order and flips of epoch e are drawn from a generator seeded by (seed, e), so a
/// resumed run makes the same draws as an uninterrupted one.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    epoch: u64,
    step: u64,
    logs: Vec<EpochLog>,
}

pub const CKPT: &str = "ckpt.safetensors";

/// Set by SIGINT, SIGTERM or SIGUSR1 (Ctrl-C, a cancelled or preempted Slurm job): the
/// node writes a checkpoint at the end of the current epoch and stops.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop signal arrived (see [`Checkpoints`]).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// From now on, SIGINT, SIGTERM and SIGUSR1 ask this process to stop at its next safe point
/// instead of ending it at once: a training node checkpoints at the end of its epoch and
/// stops; other nodes (seconds of work) finish and commit. `exec` installs this, so that
/// no node dies half-written on Ctrl-C or a cancelled job.
pub fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// A training node's checkpoints: the folder, the policy, the last write and the write in
/// flight (at most one).
pub struct Checkpoints {
    dir: PathBuf,
    every: CheckpointEvery,
    last: Instant,
    last_epoch: u64,
    writing: Option<JoinHandle<Result<()>>>,
}

/// What the training loop does after an epoch.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterEpoch {
    Continue,
    /// A stop signal arrived; the checkpoint of this epoch is written (and synced).
    Stop,
}

impl Checkpoints {
    pub fn new(dir: &Path, every: CheckpointEvery) -> Self {
        Checkpoints {
            dir: dir.to_path_buf(),
            every,
            last: Instant::now(),
            last_epoch: 0,
            writing: None,
        }
    }

    /// Restores the checkpoint in the folder, if any; returns the epoch it ended and the logs
    /// so far. An unreadable one starts from scratch, with a warning.
    pub fn restore(&mut self, trainer: &mut Trainer) -> Result<Option<(u64, Vec<EpochLog>)>> {
        let restored = load(&self.dir, trainer)?;
        if let Some((epoch, _)) = &restored {
            self.last_epoch = *epoch;
        }
        Ok(restored)
    }

    /// After `epoch` (of `epochs`): writes a checkpoint when the policy says so, or when the
    /// process was asked to stop (then synchronously, and says to stop). The last epoch is
    /// never checkpointed (the node commits its result instead).
    pub fn after_epoch(
        &mut self,
        trainer: &Trainer,
        logs: &[EpochLog],
        epoch: u64,
        epochs: u64,
    ) -> Result<AfterEpoch> {
        let stop = STOP.load(Ordering::SeqCst);
        let due = match self.every {
            CheckpointEvery::Epochs(n) => epoch - self.last_epoch >= n,
            CheckpointEvery::Seconds(s) => self.last.elapsed().as_secs_f64() >= s,
        };
        if epoch == epochs || !(due || stop) {
            return Ok(AfterEpoch::Continue);
        }
        // The tensors are copied off the device (and off the live storage on the CPU) here,
        // on the training thread; encoding, writing and fsync happen on another.
        let named = snapshot(trainer, logs, epoch);
        self.finish()?;
        let dir = self.dir.clone();
        self.writing = Some(std::thread::spawn(move || write(&dir, named)));
        self.last = Instant::now();
        self.last_epoch = epoch;
        if stop {
            self.finish()?;
            return Ok(AfterEpoch::Stop);
        }
        Ok(AfterEpoch::Continue)
    }

    /// Waits for the write in flight, if any.
    pub fn finish(&mut self) -> Result<()> {
        match self.writing.take() {
            Some(h) => h
                .join()
                .map_err(|_| NodeError::Failed("the checkpoint writer panicked".into()))?,
            None => Ok(()),
        }
    }
}

/// Copies of everything a checkpoint holds, safe to write while training goes on.
fn snapshot(trainer: &Trainer, logs: &[EpochLog], epoch: u64) -> Vec<(String, Tensor)> {
    let off_device = |t: &Tensor| {
        if t.device() == Device::Cpu {
            t.detach().copy()
        } else {
            t.detach().to_device(Device::Cpu)
        }
    };
    let mut named: Vec<(String, Tensor)> = trainer
        .model
        .trainable()
        .iter()
        .map(|(n, t)| (format!("param.{n}"), off_device(t)))
        .collect();
    named.extend(
        trainer
            .opt
            .state()
            .into_iter()
            .map(|(n, t)| (n, off_device(&t))),
    );
    let meta = serde_json::to_vec(&Meta {
        epoch,
        step: trainer.step,
        logs: logs.to_vec(),
    })
    .expect("serialisable");
    named.push(("meta.json".into(), Tensor::from_slice(&meta)));
    named
}

/// Writes, fsyncs and renames into place: a reader sees the old checkpoint or the new one.
fn write(dir: &Path, named: Vec<(String, Tensor)>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(super::io_err(dir))?;
    let tmp = dir.join(format!("{CKPT}.tmp"));
    Tensor::write_safetensors(&named, &tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(super::io_err(&tmp))?;
    std::fs::rename(&tmp, dir.join(CKPT)).map_err(super::io_err(dir))
}

fn load(dir: &Path, trainer: &mut Trainer) -> Result<Option<(u64, Vec<EpochLog>)>> {
    let path = dir.join(CKPT);
    if !path.exists() {
        return Ok(None);
    }
    let read = || -> Result<(Meta, std::collections::BTreeMap<String, Tensor>)> {
        let mut all = kernels::checkpoint::read_safetensors(&path)?;
        let meta = all
            .remove("meta.json")
            .ok_or_else(|| NodeError::Failed("no meta.json".into()))?;
        let bytes: Vec<u8> = Vec::try_from(meta)?;
        let meta: Meta =
            serde_json::from_slice(&bytes).map_err(|e| NodeError::Failed(e.to_string()))?;
        Ok((meta, all))
    };
    let (meta, mut all) = match read() {
        Ok(x) => x,
        Err(e) => {
            eprintln!(
                "warning: ignoring unreadable checkpoint {}: {e}",
                path.display()
            );
            return Ok(None);
        }
    };
    let params = all
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("param.")
                .map(|n| (n.to_string(), v.shallow_clone()))
        })
        .collect();
    trainer.model.load_trainable_map(params, &path)?;
    all.retain(|k, _| !k.starts_with("param."));
    trainer.opt.load_state(&all)?;
    trainer.step = meta.step;
    Ok(Some((meta.epoch, meta.logs)))
}
