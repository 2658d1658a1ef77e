//! The service on a real TCP socket, checked by the PyTorch oracles in tests/oracle/:
//! receptive fields against autograd, parameters and FLOPs against torch.utils.flop_counter.
mod common;
use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, layerscope::app(layerscope::Config::default())).await.unwrap() });
    format!("http://{addr}")
}

fn oracle(what: &str, url: &str, n: &str) {
    let out = Command::new(common::python())
        .args(["tests/oracle/check.py", what, url, "--n", n])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run the python oracle");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{what} oracle failed:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_over_a_real_socket() {
    let url = serve().await;
    let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(buf.to_ascii_lowercase().contains("x-request-id:"), "{buf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptive_fields_agree_with_pytorch_autograd_on_220_random_specs() {
    let url = serve().await;
    tokio::task::spawn_blocking(move || oracle("rf", &url, "220")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_and_flops_agree_with_torch_flop_counter_on_presets_and_220_random_specs() {
    let url = serve().await;
    tokio::task::spawn_blocking(move || oracle("complexity", &url, "220"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn momentum_forms_agree_with_numpy_and_torch_optim_sgd_to_1e12() {
    let url = serve().await;
    tokio::task::spawn_blocking(move || oracle("momentum", &url, "200")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradient_norms_agree_with_pytorch_autograd_on_150_random_mlps_and_cnns() {
    let url = serve().await;
    tokio::task::spawn_blocking(move || oracle("gradient", &url, "150")).await.unwrap();
}

/// A bounded load test on loopback: heavy libtorch runs mixed with light analytic requests.
/// Only 200/429/503 may come back, and light requests stay responsive (a debug build's bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_gets_only_documented_answers_and_light_requests_stay_fast() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = layerscope::Config {
        queue: 2,
        ..layerscope::Config::default()
    };
    tokio::spawn(async move { axum::serve(listener, layerscope::app(cfg)).await.unwrap() });
    let url = format!("http://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::python())
            .args([
                "bench/load.py",
                &url,
                "--seconds",
                "6",
                "--heavy-clients",
                "3",
                "--light-clients",
                "4",
                "--max-requests",
                "800",
                "--light-p99-limit",
                "2.0",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
}
