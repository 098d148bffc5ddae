//! Builds the C++ shim (csrc/shim.cpp) against the libtorch that torch-sys found, and links
//! this crate's binaries and tests so that they find libtorch (rpath) and keep libtorch_cuda
//! (rustc links with --as-needed, which would drop it: CUDA would then never be seen).
use std::{env, path::PathBuf};

fn main() {
    let lib = PathBuf::from(
        env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not export DEP_TCH_LIBTORCH_LIB; run through ./x (it sets LIBTORCH_USE_PYTORCH=1)"),
    );
    let include = lib
        .parent()
        .expect("libtorch lib dir has a parent")
        .join("include");
    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .compile("vtab_shim");
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    link_args(&lib);
}

include!("link_args.rs");
