//! `GET /v1/presets`: the built-in networks with their full specs.
use super::error::ApiError;
use super::json_response;
use crate::spec::presets;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

fn entry(name: &str) -> serde_json::Value {
    let spec = presets::get(name).expect("listed preset exists");
    json!({"name": name, "description": presets::describe(name), "spec": spec})
}

pub async fn list() -> Response {
    json_response(&json!({"presets": presets::NAMES.iter().map(|n| entry(n)).collect::<Vec<_>>()}))
}

pub async fn one(Path(name): Path<String>) -> Result<Response, ApiError> {
    if presets::get(&name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Unknown preset",
            format!("no preset {name:?}; known: {}", presets::NAMES.join(", ")),
        ));
    }
    Ok(json_response(&entry(&name)))
}
