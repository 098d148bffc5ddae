// What tch 0.24 does not bind: bf16 autocast, caching-allocator statistics, the fused
// AdamW kernel and dropping a gradient. Tensors cross as `at::Tensor*` (tch's C_tensor).
// Every entry point catches C++ exceptions and returns them as a message: nothing unwinds
// into Rust.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/autocast_mode.h>
#include <cstring>
#include <string>
#include <vector>

namespace {
char *dup_message(const std::exception &e) {
  std::string s = e.what();
  char *out = static_cast<char *>(malloc(s.size() + 1));
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}
std::vector<at::Tensor> gather(at::Tensor **ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; i++) v.push_back(*ts[i]);
  return v;
}
}  // namespace

extern "C" {

void vtab_free_message(char *m) { free(m); }

// Enter an autocast region on `device_type` (0 = CPU, 1 = CUDA) casting to `dtype`
// (5 = f16, 15 = bf16, ATen's ScalarType numbering). Returns the previous enabled flag.
char *vtab_autocast_enter(int device_type, int dtype, int *prev_enabled, int *prev_dtype) {
  try {
    at::DeviceType dev = device_type == 1 ? at::kCUDA : at::kCPU;
    *prev_enabled = at::autocast::is_autocast_enabled(dev);
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(dtype));
    at::autocast::increment_nesting();
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

char *vtab_autocast_exit(int device_type, int prev_enabled, int prev_dtype) {
  try {
    at::DeviceType dev = device_type == 1 ? at::kCUDA : at::kCPU;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(prev_dtype));
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

// Caching-allocator statistics of the current accelerator (bytes, aggregate pool).
char *vtab_accel_memory(int device, int64_t *allocated, int64_t *peak_allocated,
                        int64_t *reserved, int64_t *peak_reserved) {
  try {
    auto s = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = s.allocated_bytes[agg].current;
    *peak_allocated = s.allocated_bytes[agg].peak;
    *reserved = s.reserved_bytes[agg].current;
    *peak_reserved = s.reserved_bytes[agg].peak;
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

char *vtab_accel_reset_peak(int device) {
  try {
    at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

// torch._fused_adamw_ over n parameters (one decay group). `steps` are float32 scalars
// that the caller has already incremented, as torch.optim.AdamW(fused=True) does.
char *vtab_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                       at::Tensor **exp_avg_sqs, at::Tensor **steps, size_t n, double lr,
                       double beta1, double beta2, double weight_decay, double eps) {
  try {
    auto p = gather(params, n), g = gather(grads, n), m = gather(exp_avgs, n),
         v = gather(exp_avg_sqs, n), s = gather(steps, n);
    std::vector<at::Tensor> none;
    at::_fused_adamw_(p, g, m, v, none, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

// torch.backends.cuda.matmul.allow_tf32 / torch.backends.cudnn.allow_tf32.
char *vtab_set_tf32(int enabled) {
  try {
    at::globalContext().setAllowTF32CuBLAS(enabled != 0);
    at::globalContext().setAllowTF32CuDNN(enabled != 0);
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

// param.grad = None (frees the gradient instead of zeroing it).
char *vtab_clear_grad(at::Tensor *t) {
  try {
    t->mutable_grad().reset();
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

// Seeded draws from a CPU generator of their own, as `torch.Generator().manual_seed(seed)`
// makes one: torch's default generator is shared by every thread, so reseeding it and then
// drawing is not reproducible while other threads draw.

// torch.randperm(n, generator=g) into `out` (n int64).
char *vtab_seeded_randperm(int64_t n, uint64_t seed, int64_t *out) {
  try {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto t = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
    std::memcpy(out, t.data_ptr<int64_t>(), n * sizeof(int64_t));
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

// ts[i].uniform_(-bounds[i], bounds[i], generator=g) for i in order, one generator.
char *vtab_seeded_uniform(uint64_t seed, at::Tensor **ts, const double *lo, const double *hi,
                          size_t n) {
  try {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    for (size_t i = 0; i < n; i++) ts[i]->uniform_(lo[i], hi[i], gen);
    return nullptr;
  } catch (const std::exception &e) {
    return dup_message(e);
  }
}

}  // extern "C"
