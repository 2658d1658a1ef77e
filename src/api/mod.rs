//! HTTP layer: routing, shared state, and one module per endpoint group. Handlers stay thin:
//! parse, call `analysis` or `torch`, shape the answer.
pub mod body;
pub mod cache;
pub mod complexity;
pub mod contract;
pub mod diagnostics;
pub mod error;
pub mod grade;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod momentum;
pub mod presets;
pub mod receptive_field;
pub mod report;
pub mod script;
pub mod svg;
pub mod typed;
pub mod ui;
pub mod variants;

use crate::config::Config;
use crate::spec::{error::child, json::Obj, parse_model, ModelSpec, SpecError};
use crate::torch::pool::TorchPool;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::{ApiError, ApiResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What every handler shares: one reference count to bump per request (axum clones the state
/// into each middleware and extractor).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub pool: Arc<TorchPool>,
    pub metrics: Arc<metrics::Metrics>,
    pub limiter: Option<Arc<guard::RateLimiter>>,
    pub cache: cache::ResponseCache,
}

impl AppState {
    pub fn new(config: Config) -> AppState {
        tch::set_num_threads(config.torch_threads as i32);
        let pool = Arc::new(TorchPool::new(config.workers, config.queue));
        let limiter = (config.rate_limit_per_minute > 0)
            .then(|| Arc::new(guard::RateLimiter::new(config.rate_limit_per_minute, config.rate_limit_burst)));
        AppState(Arc::new(Shared {
            cache: cache::ResponseCache::new(config.response_cache_bytes),
            config: Arc::new(config),
            pool,
            metrics: Arc::default(),
            limiter,
        }))
    }

    /// Runs libtorch work on the pool, bounded by the request timeout.
    pub async fn run_torch<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let secs = self.config.request_timeout_secs;
        match tokio::time::timeout(Duration::from_secs(secs), self.pool.run(f)).await {
            Ok(r) => r.map_err(ApiError::from),
            Err(_) => Err(ApiError::busy(
                &format!("the libtorch run did not finish within the {secs} s request timeout"),
                5,
            )),
        }
    }

    /// Runs a libtorch check of an analytic answer: Ok(Err(reason)) when libtorch failed on it
    /// (the answer then stands alone and says why it was not checked, instead of a 500); a full
    /// queue or a timeout is still the 503 it always is.
    pub async fn run_check<T, F>(&self, f: F) -> ApiResult<Result<T, String>>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, String> + Send + 'static,
    {
        match self.run_torch(f).await {
            Ok(r) => Ok(r),
            Err(e) if e.status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(detail = %e.detail, "libtorch failed on a verification run");
                Ok(Err(e.detail))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the model under `key` of a request object.
    pub fn model(&self, obj: &Obj, key: &'static str) -> Result<ModelSpec, SpecError> {
        self.model_at(obj.raw(key), &obj.at(key))
    }

    /// Reads a request's model (`v`, found at `ptr`; `None` when the request has none).
    pub fn model_at(&self, v: Option<&serde_json::Value>, ptr: &str) -> Result<ModelSpec, SpecError> {
        let v = v.filter(|v| !v.is_null()).ok_or_else(|| {
            SpecError::invalid(
                ptr,
                "is required: {\"preset\": NAME} or {\"input_shape\": [...], \"layers\": [...]}",
            )
        })?;
        if v.get(body::UPLOADED).is_some() {
            // the ONNX file was the request body: read from the bytes, not from base64 text
            let upload = body::take_upload().ok_or_else(|| {
                SpecError::invalid(
                    child(ptr, body::UPLOADED),
                    "names the uploaded body, but this request uploaded none (send the file as an application/octet-stream body, or base64 in {\"onnx\": ...})",
                )
            })?;
            return crate::spec::onnx::model_from_onnx(upload.model, &upload.external, &child(ptr, "onnx"), &self.config.spec);
        }
        parse_model(v, ptr, &self.config.spec)
    }
}

/// The routes, as listed in openapi.yaml (a test keeps the two in step).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/ui/{asset}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.yaml"),
    ("get", "/metrics"),
    ("get", "/v1/info"),
    ("get", "/v1/presets"),
    ("get", "/v1/presets/{name}"),
    ("post", "/v1/receptive-field"),
    ("post", "/v1/complexity"),
    ("post", "/v1/gradient-diagnostics"),
    ("post", "/v1/momentum/equivalence"),
    ("post", "/v1/grade"),
    ("post", "/v1/variants"),
];

pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.config.cors_origins);
    let router = Router::new()
        .route("/", get(ui::index))
        .route("/ui/{asset}", get(ui::asset))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::handle))
        .route("/readyz", get(health::readyz))
        .route("/openapi.yaml", get(health::openapi))
        .route("/v1/info", get(health::info))
        .route("/v1/presets", get(presets::list))
        .route("/v1/presets/{name}", get(presets::one))
        .route(
            "/v1/receptive-field",
            post(receptive_field::handle).route_layer(middleware::from_fn_with_state(state.clone(), cache::layer)),
        )
        .route(
            "/v1/complexity",
            post(complexity::handle).route_layer(middleware::from_fn_with_state(state.clone(), cache::layer)),
        )
        .route("/v1/gradient-diagnostics", post(diagnostics::handle))
        .route("/v1/momentum/equivalence", post(momentum::handle))
        .route("/v1/grade", post(grade::handle))
        .route("/v1/variants", post(variants::handle))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(FrontLayer(state.clone()))
        .with_state(state);
    match cors {
        Some(c) => router.layer(c),
        None => router,
    }
}

/// CORS for an LMS web page calling the service from the browser.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT])
            .expose_headers([axum::http::HeaderName::from_static("x-request-id"), header::RETRY_AFTER]),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("no route {} {}; see GET /openapi.yaml", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// A bug must still answer in problem+json (and keep the connection), never drop it.
fn panic_to_problem(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    tracing::error!(panic = %msg, "handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
        "the server hit a bug while answering; it has been logged",
    )
    .into_response()
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the caller's `x-request-id` if it sent a sane one, else `ls-<pid>-<n>`.
fn request_id(req: &Request) -> HeaderValue {
    if let Some(v) = req.headers().get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c)) {
            return v.clone();
        }
    }
    // the process id once (getpid is a system call on every request otherwise)
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| format!("ls-{:x}-", std::process::id()));
    let mut id = String::with_capacity(prefix.len() + 20);
    id.push_str(prefix);
    let _ = std::fmt::Write::write_fmt(&mut id, format_args!("{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)));
    // the String's buffer becomes the header's bytes: no copy
    HeaderValue::try_from(id).expect("ids are header-safe")
}

/// The front of every route, as one tower layer (a middleware written with `from_fn` boxed the
/// route again and took the request apart and back for its extractor on every request: light
/// requests pay for every allocation, README "Benchmarks"). It gives every request an id,
/// checks API keys and the rate limit, returns the id in the `x-request-id` header, adds it to
/// problem+json bodies, and logs and counts the request.
#[derive(Clone)]
struct FrontLayer(AppState);

impl<S> tower::Layer<S> for FrontLayer {
    type Service = Front<S>;
    fn layer(&self, inner: S) -> Front<S> {
        Front {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Front<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for Front<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = std::time::Instant::now();
        let id = request_id(&req);
        let method = req.method().clone();
        let uri = req.uri().clone();
        let route = req.extensions().get::<axum::extract::MatchedPath>().cloned();
        let state = self.state.clone();
        // API keys and the rate limit (here: each layer costs every request)
        let run = match guard::check(&state, &req) {
            Some(refusal) => Err(refusal),
            None => {
                let upload = body::is_upload(&req);
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.call(req))) {
                    Ok(fut) => Ok((upload, fut)),
                    Err(panic) => Err(panic_to_problem(panic)),
                }
            }
        };
        Box::pin(async move {
            let resp = match run {
                Err(refusal) => refusal,
                // a raw model upload reaches the handler through this request's own slot
                // (body.rs); other requests need none
                Ok((true, fut)) => body::with_upload_slot(catching_panics(fut)).await,
                Ok((false, fut)) => catching_panics(fut).await,
            };
            let id_text = id.to_str().unwrap_or_default();
            let mut resp = with_request_id(resp, id_text).await;
            let status = resp.status().as_u16();
            let elapsed = started.elapsed();
            let route = route.as_ref().map(|m| m.as_str()).unwrap_or("unmatched");
            state.metrics.observe(method.as_str(), route, status, elapsed.as_secs_f64());
            if let Some(reason) = match status {
                401 => Some("unauthorized"),
                408 => Some("body_timeout"),
                413 => Some("too_large"),
                415 => Some("unsupported_media_type"),
                429 => Some("rate_limited"),
                503 => Some("busy"),
                _ => None,
            } {
                state.metrics.reject(reason);
            }
            crate::logging::request(id_text, method.as_str(), uri.path(), status, elapsed.as_micros() as u64);
            resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
            Ok(resp)
        })
    }
}

/// A handler's answer; a panic in any poll of it (a bug) becomes a 500 problem+json, and the
/// connection is kept.
async fn catching_panics(fut: impl std::future::Future<Output = Result<Response, std::convert::Infallible>>) -> Response {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| std::future::Future::poll(fut.as_mut(), cx))) {
            Ok(poll) => poll.map(|answer| answer.unwrap_or_else(|never| match never {})),
            Err(panic) => std::task::Poll::Ready(panic_to_problem(panic)),
        }
    })
    .await
}

/// A problem+json answer with the request's id added to its body; other answers as they are.
async fn with_request_id(resp: Response, id: &str) -> Response {
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!({}));
    v["request_id"] = serde_json::json!(id);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(v.to_string()))
}

/// What a libtorch run of `graph` at `batch` holds and does: parameters, output elements of every
/// layer, MACs. Checked against the limits before anything is allocated.
pub fn run_size(graph: &crate::spec::Graph, batch: u64) -> Result<crate::analysis::complexity::Counts, SpecError> {
    use crate::analysis::complexity::{self, Additions, Conventions, FlopRule, Options};
    Ok(complexity::table(
        graph,
        &Options {
            rule: FlopRule::Conventions(Conventions::default()),
            additions: Additions::Accumulate,
            batch,
            dtype_bytes: 8,
        },
    )?
    .totals)
}

/// `format=svg` in the query or body, or `Accept: image/svg+xml`, asks for a plot.
pub fn wants_svg(
    query: &std::collections::HashMap<String, String>,
    headers: &axum::http::HeaderMap,
    body_format: Option<&str>,
) -> ApiResult<bool> {
    match query.get("format").map(String::as_str).or(body_format) {
        Some("svg") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(SpecError::invalid("/format", format!("unknown format {other:?}; expected json or svg")).into()),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("image/svg+xml"))),
    }
}

/// An SVG response.
pub fn svg_response(svg: String) -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// JSON response with the right content type.
/// A typed answer as a JSON value (for the grading endpoint, which reads the analyses' answers).
pub fn answer_value(v: &impl serde::Serialize) -> ApiResult<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Serialization failed", e.to_string()))
}

pub fn json_response(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Serialization failed", e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A route whose service panics while it is called, before any future exists.
    #[derive(Clone)]
    struct PanicsInCall;

    impl tower::Service<Request> for PanicsInCall {
        type Response = Response;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request) -> Self::Future {
            panic!("a bug in call")
        }
    }

    fn app() -> Router {
        let state = AppState::new(Config::default());
        Router::new()
            .route("/fine", get(|| async { "fine" }))
            .route(
                "/poll",
                get(|| async {
                    tokio::task::yield_now().await;
                    if std::hint::black_box(true) {
                        panic!("a bug after the first poll");
                    }
                    "never"
                }),
            )
            .route_service("/call", PanicsInCall)
            .layer(FrontLayer(state.clone()))
            .with_state(state)
    }

    async fn get_with(app: &Router, path: &str, id: Option<&str>) -> (StatusCode, HeaderValue, serde_json::Value) {
        let mut req = Request::get(path);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        let resp = app.clone().oneshot(req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let id = resp.headers()["x-request-id"].clone();
        let problem = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let body = if problem {
            serde_json::from_slice(&bytes).unwrap()
        } else {
            serde_json::Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        };
        (status, id, body)
    }

    #[tokio::test]
    async fn a_panic_in_call_or_in_a_poll_is_a_problem_with_the_request_id() {
        let app = app();
        for path in ["/call", "/poll"] {
            let (status, id, body) = get_with(&app, path, Some("trace-42")).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
            assert_eq!(id, "trace-42");
            assert_eq!(body["request_id"], "trace-42", "{path}: {body}");
            assert_eq!(body["status"], 500, "{path}: {body}");
        }
        // and the router still answers
        assert_eq!(get_with(&app, "/fine", None).await.2, "fine");
    }

    #[tokio::test]
    async fn request_ids_are_the_callers_when_sane_and_fresh_otherwise() {
        let app = app();
        assert_eq!(get_with(&app, "/fine", Some("abc-1_2.3:4")).await.1, "abc-1_2.3:4");
        let long = "a".repeat(128);
        assert_eq!(get_with(&app, "/fine", Some(&long)).await.1, long.as_str());
        let mut seen = std::collections::HashSet::new();
        for bad in ["", "has space", "semi;colon", "ü", &"a".repeat(129), "quote\"", "slash/"] {
            let (_, id, _) = get_with(&app, "/fine", Some(bad)).await;
            let id = id.to_str().unwrap().to_string();
            assert_ne!(id, bad);
            assert!(id.starts_with(&format!("ls-{:x}-", std::process::id())), "{id}");
            assert!(id.rsplit('-').next().unwrap().parse::<u64>().is_ok(), "{id}");
            assert!(seen.insert(id), "ids repeat");
        }
        // a problem's body carries the fresh id too (the service's own router and fallback)
        let (status, id, body) = get_with(&router(AppState::new(Config::default())), "/nowhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["request_id"], id.to_str().unwrap());
    }
}
