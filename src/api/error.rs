//! Every failure becomes an RFC 9457 `application/problem+json` body naming the field.
use crate::spec::{ErrorKind, SpecError};
use crate::torch::pool::PoolError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    pub pointer: Option<String>,
    pub limit: Option<(String, u64)>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            title,
            detail: detail.into(),
            pointer: None,
            limit: None,
            retry_after: None,
        }
    }

    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    pub fn busy(what: &str, retry_after: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Server busy",
            format!("{what}; retry after {retry_after} s"),
        );
        e.retry_after = Some(retry_after);
        e
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        let (status, title) = match e.kind {
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid request"),
            ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Request too large"),
            ErrorKind::Unavailable => (StatusCode::UNPROCESSABLE_ENTITY, "Not available on this server"),
        };
        ApiError {
            status,
            title,
            detail: e.message,
            pointer: Some(e.pointer),
            limit: e.limit,
            retry_after: None,
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy { queue } => {
                ApiError::busy(&format!("all libtorch workers are busy and {queue} requests are already queued"), 2)
            }
            PoolError::Panicked(msg) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "libtorch failed",
                format!("libtorch reported an error: {msg}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(p) = &self.pointer {
            body["pointer"] = json!(if p.is_empty() { "" } else { p.as_str() });
        }
        if let Some((name, value)) = &self.limit {
            body["limit"] = json!({"name": name, "value": value});
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// libtorch errors carry a C++ backtrace after the message: keep the message only.
pub fn libtorch_message(msg: &str) -> &str {
    let end = msg.find("\nException raised from").unwrap_or(msg.len()).min(2000);
    &msg[..msg.floor_char_boundary_compat(end)]
}

trait FloorBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}
