//! layerscope: exact receptive fields, parameter/FLOP tables, gradient diagnostics and momentum
//! checks for `torch.nn` layer specs, verified by running them in libtorch.
pub mod analysis;
pub mod api;
pub mod cli;
pub mod config;
pub mod logging;
pub mod server;
pub mod spec;
pub mod torch;

pub use api::AppState;
pub use config::Config;

/// The whole service as a router, for `main` and for tests (`tower::ServiceExt::oneshot`).
pub fn app(config: Config) -> axum::Router {
    api::router(AppState::new(config))
}
