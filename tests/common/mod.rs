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

/// A PrairieLearn question's info.json against PrairieLearn's infoQuestion.json schema (its rules
/// written out: the allowed keys, required fields, the uuid pattern, the enums), plus what the
/// layerscope grader needs: external grading with networking on, a time budget under the timeout.
pub fn check_prairielearn_info(info: &Value) {
    let allowed = [
        "comment",
        "uuid",
        "type",
        "title",
        "topic",
        "tags",
        "clientFiles",
        "clientTemplates",
        "template",
        "gradingMethod",
        "singleVariant",
        "showCorrectAnswer",
        "partialCredit",
        "options",
        "externalGradingOptions",
        "dependencies",
        "workspaceOptions",
    ];
    for key in info.as_object().unwrap().keys() {
        assert!(allowed.contains(&key.as_str()), "{key} is not an infoQuestion.json property");
    }
    for key in ["uuid", "type", "title", "topic"] {
        assert!(info[key].is_string(), "{key} is required");
    }
    let uuid = info["uuid"].as_str().unwrap();
    let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
    assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert!(["Calculation", "MultipleChoice", "Checkbox", "File", "MultipleTrueFalse", "v3"].contains(&info["type"].as_str().unwrap()));
    assert!(["Internal", "External", "Manual"].contains(&info["gradingMethod"].as_str().unwrap()));
    for key in ["tags"] {
        assert!(info[key].as_array().unwrap().iter().all(Value::is_string));
    }
    for key in ["singleVariant", "partialCredit"] {
        assert!(info[key].is_null() || info[key].is_boolean());
    }
    assert_eq!(info["gradingMethod"], "External");
    let ext = &info["externalGradingOptions"];
    let ext_allowed = [
        "comment",
        "enabled",
        "image",
        "entrypoint",
        "serverFilesCourse",
        "timeout",
        "enableNetworking",
        "environment",
    ];
    for key in ext.as_object().unwrap().keys() {
        assert!(ext_allowed.contains(&key.as_str()), "{key}");
    }
    assert!(
        ext["image"].is_string() && ext["entrypoint"].is_string(),
        "image and entrypoint are required"
    );
    assert!(ext["serverFilesCourse"].as_array().unwrap().iter().all(Value::is_string));
    assert!(ext["environment"].is_object());
    assert_eq!(ext["enableNetworking"], true, "the grader must reach the service");
    let timeout = ext["timeout"].as_u64().expect("timeout is an integer");
    let budget: f64 = ext["environment"]["LAYERSCOPE_TIME_BUDGET"].as_str().unwrap().parse().unwrap();
    assert!(budget < timeout as f64, "the grader gives up before PrairieLearn does");
}
