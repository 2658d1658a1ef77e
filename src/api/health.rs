//! Liveness, readiness, service information and the OpenAPI document.
use super::{json_response, AppState};
use crate::torch::device::libtorch_version;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::Ordering;

pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// The process is up.
pub async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

/// libtorch answers and the worker pool runs jobs.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state
        .pool
        .run(|| tch::Tensor::from_slice(&[1.0f64, 2.0]).sum(tch::Kind::Double).double_value(&[]))
        .await
    {
        Ok(v) if v == 3.0 => json_response(&json!({"status": "ready", "workers": state.pool.workers()})),
        Ok(_) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json"), (header::RETRY_AFTER, "2")],
            json!({"status": "not ready"}).to_string(),
        )
            .into_response(),
    }
}

pub async fn info(State(state): State<AppState>) -> Response {
    let cuda = tch::Cuda::is_available();
    let s = &state.pool.stats;
    json_response(&json!({
        "service": "layerscope",
        "version": env!("CARGO_PKG_VERSION"),
        "libtorch_version": libtorch_version(),
        "cuda_available": cuda,
        "cuda_device_count": if cuda { tch::Cuda::device_count() } else { 0 },
        "torch_threads": tch::get_num_threads(),
        "workers": state.pool.workers(),
        "queue_capacity": state.pool.queue_capacity(),
        "queued": s.queued.load(Ordering::Relaxed),
        "busy": s.busy.load(Ordering::Relaxed),
        "limits": {
            "max_body_bytes": state.config.max_body_bytes,
            "max_model_bytes": state.config.max_model_bytes,
            "max_json_depth": state.config.max_json_depth,
            "max_layers": state.config.spec.max_layers,
            "max_nesting": state.config.spec.max_depth,
            "max_dim": state.config.spec.max_dim,
            "max_run_params": state.config.max_run_params,
            "max_run_activations": state.config.max_run_activations,
            "max_run_macs": state.config.max_run_macs,
            "max_run_recurrent_steps": state.config.max_run_recurrent_steps,
            "max_batch": state.config.max_batch,
            "max_steps": state.config.max_steps,
            "max_tensor_elements": state.config.max_tensor_elements,
            "request_timeout_secs": state.config.request_timeout_secs,
        },
    }))
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}
