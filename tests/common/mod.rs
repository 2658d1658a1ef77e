//! Helpers shared by the integration tests: one router per test, requests through `oneshot`.
#![allow(dead_code)]
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use layerscope::{app, Config};
use serde_json::{json, Value};
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
    only_keys(info, &allowed, "infoQuestion.json");
    for key in ["uuid", "type", "title", "topic"] {
        assert!(info[key].is_string(), "{key} is required");
    }
    let uuid = info["uuid"].as_str().unwrap();
    let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
    assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert!(["Calculation", "MultipleChoice", "Checkbox", "File", "MultipleTrueFalse", "v3"].contains(&info["type"].as_str().unwrap()));
    assert!(["Internal", "External", "Manual"].contains(&info["gradingMethod"].as_str().unwrap()));
    assert!(info["tags"].as_array().unwrap().iter().all(Value::is_string));
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
    only_keys(ext, &ext_allowed, "externalGradingOptions");
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

/// openapi.yaml as JSON.
pub fn spec() -> Value {
    let y: serde_yaml::Value = serde_yaml::from_str(include_str!("../../openapi.yaml")).unwrap();
    serde_json::to_value(y).unwrap()
}

pub fn root_lookup(root: &Value, r: &str) -> Value {
    let mut target = root;
    for part in r.trim_start_matches("#/").split('/') {
        target = &target[part];
    }
    target.clone()
}

/// The plain object schemas (properties and required, merged) that an allOf/oneOf/$ref of objects
/// stands for: one per way of choosing an alternative in each oneOf.
fn alternatives(root: &Value, schema: &Value) -> Vec<Value> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return alternatives(root, &root_lookup(root, r));
    }
    if let Some(any) = schema.get("oneOf").and_then(Value::as_array) {
        return any.iter().flat_map(|s| alternatives(root, s)).collect();
    }
    let mut out = vec![json!({"type": "object", "required": [], "properties": {}})];
    let own = json!({"required": schema.get("required").cloned().unwrap_or(json!([])), "properties": schema.get("properties").cloned().unwrap_or(json!({}))});
    let parts: Vec<Value> = schema.get("allOf").and_then(Value::as_array).cloned().unwrap_or_default();
    for part in parts.iter().chain([&own]) {
        let choices = if part.get("allOf").is_some() || part.get("oneOf").is_some() || part.get("$ref").is_some() {
            alternatives(root, part)
        } else {
            vec![part.clone()]
        };
        out = out
            .iter()
            .flat_map(|m| {
                choices.iter().map(move |c| {
                    let mut m = m.clone();
                    for k in c["required"].as_array().into_iter().flatten() {
                        m["required"].as_array_mut().unwrap().push(k.clone());
                    }
                    for (k, val) in c["properties"].as_object().into_iter().flatten() {
                        m["properties"][k] = val.clone();
                    }
                    m
                })
            })
            .collect();
    }
    out
}

/// A small JSON-schema validator for the OpenAPI subset the document uses.
pub fn validate(root: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let mut target = root;
        for part in r.trim_start_matches("#/").split('/') {
            target = &target[part];
        }
        return validate(root, target, v, at, errors);
    }
    if v.is_null() && schema.get("nullable") == Some(&json!(true)) {
        return;
    }
    if schema.get("allOf").is_some() {
        // Each way of satisfying the parts (a oneOf inside a part is one way per alternative),
        // merged so that each part's properties are allowed by the others; the value must match
        // one of them.
        let mut best: Option<Vec<String>> = None;
        for merged in alternatives(root, schema) {
            let mut e = Vec::new();
            validate(root, &merged, v, at, &mut e);
            if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                best = Some(e);
            }
        }
        errors.extend(best.unwrap_or_default());
        return;
    }
    if let Some(any) = schema.get("oneOf").and_then(Value::as_array) {
        if !any.iter().any(|s| {
            let mut e = Vec::new();
            validate(root, s, v, at, &mut e);
            e.is_empty()
        }) {
            errors.push(format!("{at}: matches no oneOf alternative"));
        }
    }
    // OpenAPI 3.1: `type` is a name or a list of names ("null" among them).
    let is = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    };
    let ok = match schema.get("type") {
        Some(Value::String(t)) => is(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(is),
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: expected {}, got {v}", schema["type"]));
        return;
    }
    if v.is_null() {
        return;
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for k in req {
            if v.get(k.as_str().unwrap()).is_none() {
                errors.push(format!("{at}: missing required {k}"));
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if props.is_some() || schema.get("additionalProperties").is_some() {
            for (k, val) in obj {
                match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                    (Some(s), _) => validate(root, s, val, &format!("{at}/{k}"), errors),
                    (None, Some(Value::Bool(false))) => {
                        errors.push(format!("{at}: field {k} is not allowed (additionalProperties: false)"))
                    }
                    (None, Some(extra)) if extra.is_object() => validate(root, extra, val, &format!("{at}/{k}"), errors),
                    (None, None) if schema.get("allOf").is_none() => errors.push(format!("{at}: field {k} is not in the spec")),
                    _ => {}
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate().take(50) {
            validate(root, items, x, &format!("{at}/{i}"), errors);
        }
    }
}

/// Validates `v` against the named schema of openapi.yaml's components; the problems found.
pub fn schema_errors(name: &str, v: &Value) -> Vec<String> {
    let s = spec();
    let mut errors = Vec::new();
    validate(&s, &s["components"]["schemas"][name], v, "", &mut errors);
    errors
}

/// The element of the array `list` whose `key` is `value` (a panic naming it if there is none).
pub fn item<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no {key} {value:?} in {list}"))
}

/// Asserts that every key of `object` is one of `allowed`.
pub fn only_keys(object: &Value, allowed: &[&str], what: &str) {
    for key in object.as_object().unwrap_or_else(|| panic!("{what} is not an object")).keys() {
        assert!(allowed.contains(&key.as_str()), "{key} is not a {what} property");
    }
}

/// An empty folder under the system's temporary directory, named for this test process.
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("layerscope-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary's command line: its exit code, standard output and standard error.
pub fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A receptive-field grading question on `model`.
pub fn rf_question(model: &Value, id: &str, ask: &str, answer: &str) -> Value {
    json!({"id": id, "kind": "receptive_field", "model": model, "ask": ask, "answer": answer})
}
