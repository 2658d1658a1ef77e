//! Pure math over a shape-inferred [`crate::spec::Graph`]: no HTTP, no libtorch.
pub mod answers;
pub mod complexity;
pub mod gradient;
pub mod intervals;
pub mod momentum;
pub mod receptive_field;
pub mod rng;
pub mod variants;
