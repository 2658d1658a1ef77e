//! Links the binary against the libtorch that ships inside the PyPI `torch` wheel.
//!
//! torch-sys finds libtorch (LIBTORCH_USE_PYTORCH=1, or LIBTORCH=<the wheel's torch folder>) but
//! only tells *its* crate where the libraries are; the final binary still needs (a) an rpath so
//! it runs without LD_LIBRARY_PATH and (b) `torch_cuda` linked with `--no-as-needed`, otherwise
//! the linker drops it (nothing references it directly) and CUDA is silently never available
//! (tch-rs issue 907).
//!
//! Container builds set LAYERSCOPE_RPATH (e.g. `$ORIGIN/../torch/lib`, where the image keeps the
//! libraries) and, for the CPU image, LAYERSCOPE_CPU_ONLY=1 so that the binary does not need the
//! CUDA libraries at all.
use std::path::PathBuf;
use std::process::Command;

fn python() -> String {
    std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into())
}

/// The wheel's `torch` folder (holding `lib/`, `include/` and `version.py`).
fn torch_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(PathBuf::from(dir));
    }
    let out = Command::new(python())
        .args(["-c", "import torch, os; print(os.path.dirname(torch.__file__))"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `__version__ = '2.11.0+cu130'` from the wheel's version.py, without running Python.
fn torch_version(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split(['\'', '"']).nth(1)?.to_string())
}

/// Rust types for ONNX's protobuf messages, generated from the vendored `proto/onnx.proto`
/// (ONNX 1.23.2, Apache-2.0) by prost, with protox as the pure-Rust protobuf compiler so that no
/// `protoc` binary is needed.
fn onnx_types() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto compiles");
    // bytes fields as `bytes::Bytes`: decoding a file held in `Bytes` slices the weights out of
    // it instead of copying them
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(fds)
        .expect("prost generates the ONNX types");
}

fn main() {
    onnx_types();
    for var in ["LIBTORCH", "PYTHON_SYS_EXECUTABLE", "LAYERSCOPE_RPATH", "LAYERSCOPE_CPU_ONLY"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Some(dir) = torch_dir() else {
        println!("cargo:warning=could not locate torch; the binary will need LD_LIBRARY_PATH");
        println!("cargo:rustc-env=LAYERSCOPE_LIBTORCH_VERSION=unknown");
        return;
    };
    // Reported by GET /v1/info and every libtorch result.
    println!(
        "cargo:rustc-env=LAYERSCOPE_LIBTORCH_VERSION={}",
        torch_version(&dir).unwrap_or_else(|| "unknown".into())
    );
    let lib = dir.join("lib");
    let rpath = std::env::var("LAYERSCOPE_RPATH").unwrap_or_else(|_| lib.display().to_string());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");
    println!("cargo:rustc-link-search=native={}", lib.display());
    let cpu_only = std::env::var("LAYERSCOPE_CPU_ONLY").is_ok_and(|v| v == "1");
    if lib.join("libtorch_cuda.so").exists() && !cpu_only {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
