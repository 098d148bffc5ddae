//! CUDA wiring: when the machine has an NVIDIA GPU, libtorch must see it (libtorch_cuda
//! linked with --no-as-needed), bf16 autocast must take effect and the allocator statistics
//! must read. Without a GPU this test says loudly that it checked nothing.
use kernels::accel::{memory_stats, reset_peak_memory, Autocast};
use tch::{Device, Kind, Tensor};

#[path = "../../tests/support/skip.rs"]
mod skip;

fn machine_has_nvidia_gpu() -> bool {
    std::path::Path::new("/dev/nvidia0").exists()
        || std::path::Path::new("/proc/driver/nvidia/gpus").exists()
}

#[test]
fn cuda_is_wired_when_a_gpu_is_present() {
    if !machine_has_nvidia_gpu() {
        let why = format!(
            "no NVIDIA GPU on this machine (tch::Cuda::is_available() = {})",
            tch::Cuda::is_available()
        );
        skip::skipped("gpu", "cuda_is_wired_when_a_gpu_is_present", &why);
        return;
    }
    assert!(tch::Cuda::is_available(), "an NVIDIA GPU is present but libtorch does not see CUDA: is libtorch_cuda linked (--no-as-needed)?");
    let dev = Device::Cuda(0);
    reset_peak_memory(dev).unwrap();
    let a = Tensor::randn([256, 256], (Kind::Float, dev));
    let y = {
        let _ac = Autocast::enter(dev, Kind::BFloat16).unwrap();
        a.matmul(&a)
    };
    assert_eq!(y.kind(), Kind::BFloat16, "bf16 autocast did not apply");
    let stats = memory_stats(dev).unwrap().expect("CUDA memory stats");
    assert!(
        stats.peak_allocated >= 256 * 256 * 4,
        "peak allocated {} is too small",
        stats.peak_allocated
    );
}

#[test]
fn autocast_on_cpu_is_scoped() {
    let a = Tensor::randn([8, 8], (Kind::Float, Device::Cpu));
    {
        let _ac = Autocast::enter(Device::Cpu, Kind::BFloat16).unwrap();
        assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
    }
    assert_eq!(
        a.matmul(&a).kind(),
        Kind::Float,
        "autocast leaked out of its scope"
    );
    assert!(memory_stats(Device::Cpu).unwrap().is_none());
}
