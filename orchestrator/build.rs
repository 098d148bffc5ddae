//! Links this crate's test binaries against libtorch with an rpath (see kernels/link_args.rs).
fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not export DEP_TCH_LIBTORCH_LIB; build through ./x");
    link_args(std::path::Path::new(&lib));
}

include!("../kernels/link_args.rs");
