//! Every failure becomes an RFC 9457 `application/problem+json` body naming the field.
use crate::spec::{ErrorKind, SpecError};
use crate::torch::pool::PoolError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::{self, RefOr};
use utoipa::{ToResponse, ToSchema};

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

/// Problem details (RFC 9457): the body of every error.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// JSON pointer of the offending field (`""` for the whole body).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub pointer: Option<String>,
    /// Every request's id (also in the `x-request-id` header and the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = true)]
    pub request_id: Option<String>,
    /// The configured limit the request went over.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Limit)]
    pub limit: Option<Limit>,
}

#[derive(Serialize, ToSchema)]
pub struct Limit {
    pub name: String,
    pub value: u64,
}

impl<'s> ToResponse<'s> for Problem {
    fn response() -> (&'s str, RefOr<openapi::Response>) {
        let content = openapi::ContentBuilder::new()
            .schema(Some(openapi::Ref::from_schema_name("Problem")))
            .build();
        let response = openapi::ResponseBuilder::new()
            .description("problem details (RFC 9457)")
            .content("application/problem+json", content)
            .build();
        ("Problem", response.into())
    }
}

/// The problem answers every POST route can give: 400 malformed JSON, 401 no or a wrong API
/// key, 408 body too slow, 413 over a limit, 415 not JSON, 422 invalid, 429 rate limit, 503 busy
/// (with Retry-After). A typed route lists it once in its `responses`.
pub struct Problems;

impl utoipa::IntoResponses for Problems {
    fn responses() -> std::collections::BTreeMap<String, RefOr<openapi::response::Response>> {
        [400, 401, 408, 413, 415, 422, 429, 503]
            .into_iter()
            .map(|status| (status.to_string(), openapi::Ref::from_response_name("Problem").into()))
            .collect()
    }
}

/// The problem answers every GET route under /v1 can give: 401 no or a wrong API key, 429 rate
/// limit.
pub struct ReadProblems;

impl utoipa::IntoResponses for ReadProblems {
    fn responses() -> std::collections::BTreeMap<String, RefOr<openapi::response::Response>> {
        [401, 429]
            .into_iter()
            .map(|status| (status.to_string(), openapi::Ref::from_response_name("Problem").into()))
            .collect()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank",
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail,
            pointer: self.pointer,
            request_id: None,
            limit: self.limit.map(|(name, value)| Limit { name, value }),
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
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
