//! Everything that touches libtorch. Nothing here is called on the async runtime: handlers
//! hand closures to [`pool::TorchPool`].
pub mod device;
pub mod diagnostics;
pub mod momentum;
pub mod net;
pub mod pool;
pub mod probe;
pub mod script;
pub mod shapes;

/// A tensor's values, flattened, as f64 on the CPU: how results leave a worker as plain data.
pub fn to_f64_vec(t: &tch::Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu).flatten(0, -1)).unwrap_or_default()
}
