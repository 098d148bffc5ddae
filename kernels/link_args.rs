// Shared by kernels/build.rs and the top-level build.rs (through `include!`): link arguments
// for every binary and test of the including package.

/// rpath to libtorch (no LD_LIBRARY_PATH needed) and `--no-as-needed` around libtorch and
/// libtorch_cuda, which nothing references by symbol: without it CUDA is never initialised.
fn link_args(lib: &std::path::Path) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
