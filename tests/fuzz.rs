//! Hostile traffic against the live server: a schemathesis run generated from openapi.yaml (no
//! 5xx, every response matching the spec) and hand-written hostile requests over a real socket.
mod common;
use common::python_ok;
use common::serve;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_spec_violation() {
    let url = serve().await;
    let python = common::python();
    let out = tokio::task::spawn_blocking(move || {
        let bin = std::path::Path::new(&python).with_file_name("schemathesis");
        Command::new(bin)
            .args([
                "run",
                &format!("{url}/openapi.yaml"),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "25",
                "--request-timeout",
                "60",
                "--seed",
                "20261127",
                "--generation-database",
                "none",
            ])
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis (installed by scripts/torch-env.sh)")
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_megabyte_body_is_refused_with_413() {
    let url = serve().await;
    let addr = url.trim_start_matches("http://").to_string();
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let size = 100 << 20;
        let _ = write!(
            s,
            "POST /v1/complexity HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        );
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..100 {
            if s.write_all(&chunk).is_err() {
                break; // the server stopped reading after its limit: fine
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{}", &reply[..reply.len().min(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_half_valid_requests_never_get_a_5xx() {
    let url = serve().await;
    python_ok(&["tests/oracle/hostile.py", &url, "7", "400"], &[]).await;
}
