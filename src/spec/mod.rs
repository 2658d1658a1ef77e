//! The layer spec shared by every endpoint: types, parsing, presets and shape inference.
pub mod error;
pub mod interp;
pub mod json;
pub mod onnx;
pub mod ops;
pub mod parse;
pub mod presets;
pub mod shape;
pub mod types;

pub use crate::merges;
pub use error::{ErrorKind, SpecError, SpecResult};
pub use parse::{parse_model, SpecLimits};
pub use shape::{infer, Above, Graph, Node, Window};
pub use types::*;
