//! Running in production: API keys, rate limits, CORS, metrics, back-pressure, slow clients,
//! and graceful shutdown on SIGTERM.
mod common;
use axum::body::Body;
use axum::http::Request;
use common::*;
use layerscope::Config;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn api_keys_guard_v1_but_not_health() {
    let cfg = Config {
        api_keys: vec!["s3cret".into(), "other".into()],
        ..Config::default()
    };
    let r = send(cfg.clone(), get_with("/v1/info", &[])).await;
    assert_eq!(r.status, 401);
    assert!(r.content_type.starts_with("application/problem+json"));
    assert_eq!(
        send(cfg.clone(), get_with("/v1/info", &[("authorization", "Bearer s3cre")]))
            .await
            .status,
        401
    );
    assert_eq!(
        send(cfg.clone(), get_with("/v1/info", &[("authorization", "Bearer other")]))
            .await
            .status,
        200
    );
    assert_eq!(send(cfg.clone(), get_with("/healthz", &[])).await.status, 200);
    assert_eq!(send(cfg.clone(), get_with("/metrics", &[])).await.status, 200);
    assert_eq!(send(cfg, get_with("/openapi.yaml", &[])).await.status, 200);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let app = layerscope::app(Config {
        rate_limit_per_minute: 6,
        rate_limit_burst: 2,
        ..Config::default()
    });
    use tower::ServiceExt;
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..3 {
        let resp = app.clone().oneshot(get_with("/v1/presets", &[])).await.unwrap();
        statuses.push(resp.status().as_u16());
        retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    }
    assert_eq!(statuses, vec![200, 200, 429]);
    assert_eq!(retry.as_deref(), Some("10"));
    // health is never limited
    assert_eq!(app.oneshot(get_with("/healthz", &[])).await.unwrap().status(), 200);
}

#[tokio::test]
async fn cors_for_an_lms_page() {
    let cfg = Config {
        cors_origins: vec!["https://lms.example.edu".into()],
        ..Config::default()
    };
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/v1/grade")
        .header("origin", "https://lms.example.edu")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .unwrap();
    let app = layerscope::app(cfg);
    use tower::ServiceExt;
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "https://lms.example.edu"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = layerscope::app(Config::default());
    use tower::ServiceExt;
    let post = |b: serde_json::Value| {
        Request::post("/v1/complexity")
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap()
    };
    app.clone()
        .oneshot(post(json!({"model": {"preset": "vgg_stem"}, "verify": false})))
        .await
        .unwrap();
    app.clone().oneshot(post(json!({"model": {"preset": "nope"}}))).await.unwrap();
    app.clone()
        .oneshot(post(json!({"model": {"preset": "vgg_stem"}, "pad": "x".repeat(5 << 20)})))
        .await
        .unwrap();
    let resp = app.oneshot(get_with("/metrics", &[])).await.unwrap();
    use http_body_util::BodyExt;
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains(r#"layerscope_http_requests_total{method="POST",route="/v1/complexity",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"layerscope_http_requests_total{method="POST",route="/v1/complexity",status="422"} 1"#));
    assert!(
        text.contains(r#"layerscope_http_request_duration_seconds_bucket{method="POST",route="/v1/complexity",status="200",le="+Inf"} 1"#)
    );
    assert!(text.contains(r#"layerscope_rejections_total{reason="too_large"} 1"#));
    assert!(text.contains("layerscope_worker_queue_depth 0"));
}

fn heavy_request() -> serde_json::Value {
    let mut layers = Vec::new();
    // one libtorch job of about a second on two cores
    for _ in 0..8 {
        layers.push(json!({"type": "linear", "out_features": 1024}));
        layers.push(json!({"type": "sigmoid"}));
    }
    json!({"model": {"input_shape": [1024], "layers": layers}, "inputs": {"batch_size": 1024}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_and_light_requests_stay_fast() {
    // one worker and room for one waiting job: a running heavy job plus a queued one fill it
    let state = layerscope::AppState::new(Config {
        workers: 1,
        queue: 1,
        ..Config::default()
    });
    let app = layerscope::api::router(state.clone());
    use std::sync::atomic::Ordering::SeqCst;
    use tower::ServiceExt;
    let spawn_heavy = || {
        let app = app.clone();
        tokio::spawn(async move {
            let req = Request::post("/v1/gradient-diagnostics")
                .header("content-type", "application/json")
                .body(Body::from(heavy_request().to_string()))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = spawn_heavy();
    while state.pool.stats.busy.load(SeqCst) == 0 {
        assert!(
            Instant::now() < deadline && !running.is_finished(),
            "the first heavy run never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = spawn_heavy();
    while state.pool.stats.queued.load(SeqCst) == 0 {
        assert!(
            Instant::now() < deadline && !waiting.is_finished(),
            "the second heavy run never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // libtorch work queued behind the heavy run: refused at once, with Retry-After
    let req = Request::post("/v1/complexity")
        .header("content-type", "application/json")
        .body(Body::from(json!({"model": {"preset": "vgg_stem"}}).to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    // analytic work never waits for libtorch
    let started = Instant::now();
    let req = Request::post("/v1/receptive-field")
        .header("content-type", "application/json")
        .body(Body::from(json!({"model": {"preset": "resnet50"}, "verify": false}).to_string()))
        .unwrap();
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "light request took {:?}",
        started.elapsed()
    );
    assert_eq!(running.await.unwrap(), 200);
    assert_eq!(waiting.await.unwrap(), 200);
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            layerscope::app(Config {
                body_timeout_secs: 1,
                ..Config::default()
            }),
        )
        .await
        .unwrap()
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/complexity HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"mo")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("server answered")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let (mut child, port) = spawn_binary(&[]);
    let body = heavy_request().to_string();
    let request = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "POST /v1/gradient-diagnostics HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let reply = request.join().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{}", &reply[..reply.len().min(300)]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() > Duration::from_millis(50),
        "the in-flight request was not waited for"
    );
}

#[test]
fn a_client_trickling_its_headers_is_cut_off() {
    use std::io::{Read, Write};
    let (mut child, port) = spawn_binary(&[("LAYERSCOPE_HEADER_TIMEOUT_SECS", "1")]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf); // the server closes the connection (after a 408 or without one)
    let waited = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(waited < Duration::from_secs(5), "the connection stayed open {waited:?}");
    assert!(
        buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

/// The real binary's logs (stdout and stderr, to pipes) after one `GET /healthz`, with this
/// log filter and format.
fn logs_of_one_request(filter: &str, format: &str) -> String {
    use std::io::Read;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .env("LAYERSCOPE_ADDR", format!("127.0.0.1:{port}"))
        .env("LAYERSCOPE_LOG", filter)
        .env("LAYERSCOPE_LOG_FORMAT", format)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-request-id: caller-7\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // the log writer writes every 50 ms
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Text logs written to a file or a pipe (not a terminal) carry no ANSI colour codes, which log
/// collectors would store as garbage; the request's line (written directly, logging::request)
/// is tracing-subscriber's default text for the event, and the log filter decides on it as on
/// any event of the `layerscope::api` target.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let logs = logs_of_one_request("info", "text");
    assert!(!logs.contains('\u{1b}'), "colour codes in a pipe: {logs:?}");
    let line = logs
        .lines()
        .find(|l| l.contains("/healthz"))
        .unwrap_or_else(|| panic!("the request was logged: {logs}"));
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert_eq!(stamp.len(), "2026-12-07T13:47:55.123456Z".len(), "{line}");
    assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{line}");
    let rest = rest.strip_prefix(" INFO layerscope::api: request request_id=caller-7 method=GET path=\"/healthz\" status=200 micros=");
    let micros = rest.unwrap_or_else(|| panic!("{line}"));
    assert!(micros.parse::<u64>().is_ok(), "{line}");
    // the filter: other events on, the request's target off
    let logs = logs_of_one_request("info,layerscope::api=warn", "text");
    assert!(logs.contains("layerscope listening") && !logs.contains("/healthz"), "{logs}");
    let logs = logs_of_one_request("warn", "text");
    assert!(!logs.contains("/healthz"), "{logs}");
    // JSON logs keep the event, with its fields as JSON
    let logs = logs_of_one_request("info", "json");
    let line = logs.lines().find(|l| l.contains("/healthz")).unwrap_or_else(|| panic!("{logs}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["target"], "layerscope::api", "{line}");
    assert_eq!(v["fields"]["request_id"], "caller-7", "{line}");
    assert_eq!(v["fields"]["path"], "/healthz", "{line}");
    assert_eq!(v["fields"]["status"], 200, "{line}");
}
