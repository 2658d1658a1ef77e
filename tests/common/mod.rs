//! Helpers shared by the integration tests: one router per test, requests through `oneshot`.
#![allow(dead_code)]
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use layerscope::{app, Config};
use serde_json::Value;
use tower::ServiceExt;

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

pub async fn send(config: Config, req: Request<Body>) -> Reply {
    let resp = app(config).oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn post(path: &str, body: Value) -> Reply {
    post_raw(path, body.to_string()).await
}

pub async fn post_raw(path: &str, body: String) -> Reply {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    send(Config::default(), req).await
}

pub async fn get(path: &str) -> Reply {
    send(Config::default(), Request::get(path).body(Body::empty()).unwrap()).await
}

/// Asserts a problem+json answer with the given status and pointer.
pub fn assert_problem(r: &Reply, status: u16, pointer: &str) -> Value {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "content type {}",
        r.content_type
    );
    let v = r.json();
    assert_eq!(v["status"], status);
    assert_eq!(v["pointer"], pointer, "{}", r.text);
    assert!(v["detail"].as_str().unwrap().len() > 5);
    assert!(v["request_id"].is_string());
    v
}

/// The Python interpreter that has torch (set up by scripts/torch-env.sh).
pub fn python() -> String {
    std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into())
}
