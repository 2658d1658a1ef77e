//! The JSON body extractor: content type, size and nesting are checked here, once, so that
//! handlers only see a parsed `serde_json::Value`.
use super::error::ApiError;
use super::AppState;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde_json::Value;

pub struct JsonBody(pub Value);

fn depth(v: &Value) -> usize {
    // Iterative, so a hostile document cannot overflow the stack here.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

/// Reads a whole body under the size limit (413) and the body timeout (408).
pub async fn read_body(body: axum::body::Body, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    let secs = state.config.body_timeout_secs;
    let read = tokio::time::timeout(std::time::Duration::from_secs(secs), axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                format!("the request body did not arrive within {secs} s"),
            )
            .at("")
        })?;
    read.map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            format!("the body is larger than {limit} bytes"),
        )
        .at("");
        e.limit = Some(("max_body_bytes".into(), limit as u64));
        e
    })
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let mime = ct.split(';').next().unwrap_or("").trim();
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Unsupported media type",
                    format!("the body must be JSON (content-type: application/json), got {mime:?}; with curl add -H 'content-type: application/json'"),
                ));
            }
        }
        let bytes = read_body(req.into_body(), state).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            let what = if e.to_string().contains("recursion limit") {
                "the JSON is nested too deeply".to_string()
            } else {
                e.to_string()
            };
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "Malformed JSON",
                format!("the body is not valid JSON: {what}"),
            )
            .at("")
        })?;
        let d = depth(&value);
        if d > state.config.max_json_depth {
            let mut e = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                format!("the JSON is nested {d} levels deep; the limit is {}", state.config.max_json_depth),
            )
            .at("");
            e.limit = Some(("max_json_depth".into(), state.config.max_json_depth as u64));
            return Err(e);
        }
        Ok(JsonBody(value))
    }
}
