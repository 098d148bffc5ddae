//! Links the fuzz targets against libtorch with an rpath, like the `vtab-orch` binary.
fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not export DEP_TCH_LIBTORCH_LIB; build through ./x fuzz");
    link_args(std::path::Path::new(&lib));
}

include!("../kernels/link_args.rs");
