//! Liveness, readiness, service information and the OpenAPI document.
use super::error::ReadProblems;
use super::{json_response, AppState};
use crate::torch::device::libtorch_version;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;

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

/// What `GET /v1/info` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub service: &'static str,
    pub version: &'static str,
    pub libtorch_version: &'static str,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub torch_threads: i32,
    pub workers: usize,
    pub queue_capacity: usize,
    /// Jobs waiting for a libtorch worker now.
    pub queued: u64,
    /// Workers running a job now.
    pub busy: u64,
    pub limits: Limits,
}

/// The configured limits (README, "Configuration and limits"); a request over one gets a 413
/// naming it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_model_bytes: u64,
    pub max_json_depth: u64,
    pub max_layers: u64,
    pub max_nesting: u64,
    pub max_dim: u64,
    pub max_run_params: u64,
    pub max_run_activations: u64,
    pub max_run_macs: u64,
    pub max_run_recurrent_steps: u64,
    pub max_batch: u64,
    pub max_steps: u64,
    pub max_tensor_elements: u64,
    pub request_timeout_secs: u64,
}

/// Service and libtorch versions, CUDA availability, worker pool and limits.
#[utoipa::path(
    get,
    path = "/v1/info",
    operation_id = "info",
    tag = "service",
    responses(
        (status = 200, description = "info", body = Info),
        ReadProblems,
    )
)]
pub async fn info(State(state): State<AppState>) -> Response {
    let cuda = tch::Cuda::is_available();
    let s = &state.pool.stats;
    let c = &state.config;
    json_response(&Info {
        service: "layerscope",
        version: env!("CARGO_PKG_VERSION"),
        libtorch_version: libtorch_version(),
        cuda_available: cuda,
        cuda_device_count: if cuda { tch::Cuda::device_count() } else { 0 },
        torch_threads: tch::get_num_threads(),
        workers: state.pool.workers(),
        queue_capacity: state.pool.queue_capacity(),
        queued: s.queued.load(Ordering::Relaxed) as u64,
        busy: s.busy.load(Ordering::Relaxed) as u64,
        limits: Limits {
            max_body_bytes: c.max_body_bytes as u64,
            max_model_bytes: c.max_model_bytes as u64,
            max_json_depth: c.max_json_depth as u64,
            max_layers: c.spec.max_layers as u64,
            max_nesting: c.spec.max_depth as u64,
            max_dim: c.spec.max_dim,
            max_run_params: c.max_run_params,
            max_run_activations: c.max_run_activations,
            max_run_macs: c.max_run_macs,
            max_run_recurrent_steps: c.max_run_recurrent_steps,
            max_batch: c.max_batch,
            max_steps: c.max_steps,
            max_tensor_elements: c.max_tensor_elements,
            request_timeout_secs: c.request_timeout_secs,
        },
    })
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}
