//! Gives the `trainer` binary an rpath to libtorch (and the CUDA runtime libraries that
//! libtorch_cpu links), so it runs without LD_LIBRARY_PATH. On a CUDA build libtorch_cuda must
//! be linked explicitly: nothing references it by symbol, and `--as-needed` would drop it.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=EFQ_CUDA_LIBS");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    if let Ok(extra) = std::env::var("EFQ_CUDA_LIBS") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
