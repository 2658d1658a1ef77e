pub mod analysis;
pub mod spec;
