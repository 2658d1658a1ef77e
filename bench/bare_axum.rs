//! The baseline for `bench/light.py`: a bare axum 0.8 server with no middleware, on the same
//! tokio runtime settings as layerscope. `GET /healthz` answers "ok"; `POST /echo` parses the JSON
//! body and serializes it back, the least any JSON endpoint does.
//!
//!   cargo run --release --example bare_axum -- 127.0.0.1:8099
use axum::routing::{get, post};
use axum::{Json, Router};

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8099".into());
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/echo", post(|Json(v): Json<serde_json::Value>| async move { Json(v) }));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
