//! Everything that touches libtorch. Nothing here is called on the async runtime: handlers
//! hand closures to [`pool::TorchPool`].
pub mod device;
pub mod diagnostics;
pub mod momentum;
pub mod net;
pub mod pool;
pub mod probe;
pub mod shapes;
