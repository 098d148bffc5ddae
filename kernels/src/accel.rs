//! The C++ shim (csrc/shim.cpp): bf16/fp16 autocast regions, caching-allocator memory
//! statistics, the fused AdamW kernel and gradient release. Only FFI glue lives here.
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, CStr};
use tch::{Device, Kind, Tensor};

type CTensor = *mut torch_sys::C_tensor; // at::Tensor* on the C++ side

extern "C" {
    fn vtab_free_message(m: *mut c_char);
    fn vtab_autocast_enter(
        dev: c_int,
        dtype: c_int,
        prev_en: *mut c_int,
        prev_dt: *mut c_int,
    ) -> *mut c_char;
    fn vtab_autocast_exit(dev: c_int, prev_en: c_int, prev_dt: c_int) -> *mut c_char;
    fn vtab_accel_memory(
        dev: c_int,
        a: *mut i64,
        pa: *mut i64,
        r: *mut i64,
        pr: *mut i64,
    ) -> *mut c_char;
    fn vtab_accel_reset_peak(dev: c_int) -> *mut c_char;
    fn vtab_fused_adamw(
        p: *const CTensor,
        g: *const CTensor,
        m: *const CTensor,
        v: *const CTensor,
        s: *const CTensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    fn vtab_clear_grad(t: CTensor) -> *mut c_char;
    fn vtab_set_tf32(enabled: c_int) -> *mut c_char;
    fn vtab_seeded_randperm(n: i64, seed: u64, out: *mut i64) -> *mut c_char;
    fn vtab_seeded_uniform(
        seed: u64,
        ts: *const CTensor,
        lo: *const f64,
        hi: *const f64,
        n: usize,
    ) -> *mut c_char;
}

/// `torch.randperm(n, generator=torch.Generator().manual_seed(seed))`: a generator of its own,
/// so other threads' draws cannot interleave (tch binds no generator objects).
pub fn seeded_randperm(n: i64, seed: u64) -> Result<Tensor> {
    let mut out = vec![0i64; n.max(0) as usize];
    check(unsafe { vtab_seeded_randperm(n, seed, out.as_mut_ptr()) })?;
    Ok(Tensor::from_slice(&out))
}

/// CPU fp32 tensors of `shapes`, filled in order with U(-bound, bound) from one generator
/// seeded with `seed`, as `t.uniform_(-b, b, generator=g)` for each would.
pub fn seeded_uniform(seed: u64, shapes: &[(&[i64], f64)]) -> Result<Vec<Tensor>> {
    seeded_uniform_of(seed, Kind::Float, shapes)
}

/// `seeded_uniform` for tensors of `kind` (a bf16 tensor's draw is not an fp32 draw rounded:
/// torch takes fewer random bits for it).
pub fn seeded_uniform_of(seed: u64, kind: Kind, shapes: &[(&[i64], f64)]) -> Result<Vec<Tensor>> {
    let ts: Vec<Tensor> = shapes
        .iter()
        .map(|(s, _)| Tensor::empty(*s, (kind, Device::Cpu)))
        .collect();
    let ptrs: Vec<CTensor> = ts.iter().map(raw).collect();
    let lo: Vec<f64> = shapes.iter().map(|(_, b)| -*b).collect();
    let hi: Vec<f64> = shapes.iter().map(|(_, b)| *b).collect();
    check(unsafe {
        vtab_seeded_uniform(seed, ptrs.as_ptr(), lo.as_ptr(), hi.as_ptr(), ptrs.len())
    })?;
    Ok(ts)
}

/// CPU fp32 tensors of `shapes`, filled in order from one generator seeded with `seed`, as
/// `torch.rand(shape, generator=g)` for each would (U[0, 1)).
pub fn seeded_rand(seed: u64, shapes: &[&[i64]]) -> Result<Vec<Tensor>> {
    let ts: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::empty(*s, (Kind::Float, Device::Cpu)))
        .collect();
    let ptrs: Vec<CTensor> = ts.iter().map(raw).collect();
    let (lo, hi) = (vec![0.0; ts.len()], vec![1.0; ts.len()]);
    check(unsafe {
        vtab_seeded_uniform(seed, ptrs.as_ptr(), lo.as_ptr(), hi.as_ptr(), ptrs.len())
    })?;
    Ok(ts)
}

fn check(msg: *mut c_char) -> Result<()> {
    if msg.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a malloc'ed NUL-terminated string owned by us.
    let s = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    unsafe { vtab_free_message(msg) };
    Err(Error::Shim(s))
}

fn raw(t: &Tensor) -> CTensor {
    t.as_ptr() as CTensor
}

/// An autocast region: ops inside run in `kind` (bf16 or f16) where autocast allows, as
/// `torch.autocast(device, dtype)` does. The previous state is restored on drop.
pub struct Autocast {
    dev: c_int,
    prev_enabled: c_int,
    prev_dtype: c_int,
}

impl Autocast {
    pub fn enter(device: Device, kind: Kind) -> Result<Self> {
        let dev = if device.is_cuda() { 1 } else { 0 };
        let dtype = match kind {
            Kind::BFloat16 => 15,
            Kind::Half => 5,
            other => {
                return Err(Error::Config(format!(
                    "autocast to {other:?} is not supported (bf16 or f16)"
                )))
            }
        };
        let (mut prev_enabled, mut prev_dtype) = (0, 0);
        check(unsafe { vtab_autocast_enter(dev, dtype, &mut prev_enabled, &mut prev_dtype) })?;
        Ok(Autocast {
            dev,
            prev_enabled,
            prev_dtype,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // Restoring thread-local flags cannot meaningfully fail; report and continue.
        if let Err(e) =
            check(unsafe { vtab_autocast_exit(self.dev, self.prev_enabled, self.prev_dtype) })
        {
            eprintln!("warning: leaving autocast: {e}");
        }
    }
}

/// Caching-allocator statistics of one accelerator device, in bytes (what
/// `torch.cuda.memory_stats()` reports, not nvidia-smi).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct MemoryStats {
    pub allocated: i64,
    pub peak_allocated: i64,
    pub reserved: i64,
    pub peak_reserved: i64,
}

/// Memory statistics for `device`; `None` on CPU (no caching allocator to ask).
pub fn memory_stats(device: Device) -> Result<Option<MemoryStats>> {
    let Device::Cuda(i) = device else {
        return Ok(None);
    };
    init_allocator(device);
    let mut s = MemoryStats::default();
    check(unsafe {
        vtab_accel_memory(
            i as c_int,
            &mut s.allocated,
            &mut s.peak_allocated,
            &mut s.reserved,
            &mut s.peak_reserved,
        )
    })?;
    Ok(Some(s))
}

/// `torch.cuda.reset_peak_memory_stats(device)`; a no-op on CPU.
pub fn reset_peak_memory(device: Device) -> Result<()> {
    match device {
        Device::Cuda(i) => {
            init_allocator(device);
            check(unsafe { vtab_accel_reset_peak(i as c_int) })
        }
        _ => Ok(()),
    }
}

/// The caching allocator of a device exists only after its first allocation; asking it
/// for statistics before that throws "Allocator not initialized". One tiny allocation
/// makes sure it exists.
fn init_allocator(device: Device) {
    let _ = Tensor::zeros([1], (Kind::Float, device));
}

/// Blocks until the device has finished its queued work (for timing).
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// One call of `torch._fused_adamw_` on a group of same-device fp32 tensors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fused_adamw(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    steps: &[Tensor],
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    eps: f64,
) -> Result<()> {
    let n = params.len();
    assert!(grads.len() == n && exp_avgs.len() == n && exp_avg_sqs.len() == n && steps.len() == n);
    if n == 0 {
        return Ok(());
    }
    let ptrs = |ts: &[Tensor]| ts.iter().map(raw).collect::<Vec<_>>();
    let (p, g, m, v, s) = (
        ptrs(params),
        ptrs(grads),
        ptrs(exp_avgs),
        ptrs(exp_avg_sqs),
        ptrs(steps),
    );
    check(unsafe {
        vtab_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            lr,
            betas.0,
            betas.1,
            weight_decay,
            eps,
        )
    })
}

/// Lets fp32 matmuls and convolutions on CUDA use TF32 tensor cores
/// (`torch.backends.cuda.matmul.allow_tf32 = True`, and the cuDNN flag). Process-wide.
pub fn set_tf32(enabled: bool) -> Result<()> {
    check(unsafe { vtab_set_tf32(c_int::from(enabled)) })
}

/// `param.grad = None`.
pub(crate) fn clear_grad(t: &Tensor) -> Result<()> {
    check(unsafe { vtab_clear_grad(raw(t)) })
}
