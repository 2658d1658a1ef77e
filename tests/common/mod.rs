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

/// The service on a real socket (127.0.0.1, a free port) for the rest of the test; its base URL.
pub async fn serve_with(config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(config)).await.unwrap() });
    format!("http://{addr}")
}

pub async fn serve() -> String {
    serve_with(Config::default()).await
}

/// Runs a Python script with torch's interpreter (off the async runtime), prints what it said,
/// asserts that it exited 0, and returns its output.
pub async fn python_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(python())
            .args(&args)
            .envs(env)
            .env("PYTHONWARNINGS", "ignore")
            .output()
            .expect("run python");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{text}");
        assert!(out.status.success(), "{args:?} failed:\n{text}");
        text
    })
    .await
    .unwrap()
}

/// Starts the real binary on a free port with these environment variables and waits until it
/// accepts connections.
pub fn spawn_binary(env: &[(&str, &str)]) -> (std::process::Child, u16) {
    use std::time::{Duration, Instant};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .env("LAYERSCOPE_ADDR", format!("127.0.0.1:{port}"))
        .env("LAYERSCOPE_LOG", "warn")
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}
