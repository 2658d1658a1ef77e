//! The service on a real TCP socket, checked by the PyTorch oracles in tests/oracle/:
//! receptive fields against autograd, parameters and FLOPs against torch.utils.flop_counter.
mod common;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn oracle(what: &str, n: &str) {
    let url = serve().await;
    python_ok(&["tests/oracle/check.py", what, &url, "--n", n], &[]).await;
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
async fn receptive_fields_agree_with_pytorch_autograd_on_220_random_specs_and_150_graphs() {
    oracle("rf", "220").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_and_flops_agree_with_torch_flop_counter_on_presets_220_random_specs_and_150_graphs() {
    oracle("complexity", "220").await;
}

/// Upsampling by any factor or to any size against autograd in float32 and float64: every
/// sampled unit's exact set, the per-layer range there, and refusals only where PyTorch's float
/// arithmetic places a position differently (tests/oracle/check.py `interp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsampling_by_any_factor_agrees_with_autograd_in_float32_and_float64() {
    oracle("interp", "150").await;
}

/// The presets against torchvision's own modules: sum(numel), FlopCounterMode, and the real
/// fvcore and ptflops on those modules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_agree_with_torchvision_modules_under_every_tool() {
    oracle("torchvision", "0").await;
}

/// Sequence models (token ids, embeddings, attention, LSTM/GRU/RNN, layernorm, residual
/// blocks) against PyTorch's own modules: parameters, FlopCounterMode, output shapes, the exact
/// tokens of a unit by autograd, and float64 gradients per named parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_models_agree_with_pytorch_modules_on_200_random_networks() {
    let url = serve().await;
    python_ok(&["tests/oracle/seq_check.py", &url, "--n", "200"], &[]).await;
}

/// ONNX files exported by torch.onnx.export (legacy and dynamo): torchvision's networks equal
/// the presets row by row; random networks agree with FlopCounterMode, sum(numel), autograd's
/// receptive fields and autograd's gradients with the file's weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_exports_agree_with_the_presets_and_with_pytorch_on_random_networks() {
    // vit_b_16's and r3d_18's float32 diagnostics with the file's weights run in this test
    // binary's debug build, beside the other suites' servers in the same process: the 120 s
    // production timeout is not what this oracle checks (a busy pool's 503 is
    // tests/operations.rs's), and these runs passed it on a busy CI machine (two fresh clones
    // this stop: 503 after 120 s, where the same request takes 3.5 s alone in a release build)
    let url = serve_with(layerscope::Config {
        request_timeout_secs: 900,
        ..layerscope::Config::default()
    })
    .await;
    python_ok(&["tests/oracle/onnx_check.py", &url, "--n", "80"], &[]).await;
}

/// TorchScript modules: gradients per named parameter against autograd on the original module,
/// measured receptive fields against the analytic exact sets, hostile modules refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torchscript_modules_agree_with_autograd_and_the_analytic_receptive_fields() {
    let url = serve().await;
    python_ok(&["tests/oracle/script_check.py", &url, "--n", "30"], &[]).await;
}

/// The Python client in clients/python: a torchvision module exported under the hood, a preset,
/// diagnostics with the module's weights against autograd, problem+json as one exception type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_agrees_with_pytorch() {
    let url = serve().await;
    // installed as a user would (`pip install ./clients/python`), into a folder of its own
    let dir = tempdir("client");
    let target = dir.join("site");
    python_ok(
        &[
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            target.to_str().unwrap(),
            "./clients/python",
        ],
        &[],
    )
    .await;
    python_ok(&["tests/oracle/client_check.py", &url], &[("PYTHONPATH", target.to_str().unwrap())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn momentum_forms_agree_with_numpy_and_torch_optim_sgd_to_1e12() {
    oracle("momentum", "200").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradient_norms_agree_with_pytorch_autograd_on_150_random_mlps_cnns_and_graphs() {
    oracle("gradient", "150").await;
}

/// A bounded load test on loopback: heavy libtorch runs mixed with light analytic requests.
/// Only 200/429/503 may come back, and light requests stay responsive (a debug build's bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_gets_only_documented_answers_and_light_requests_stay_fast() {
    let url = serve_with(layerscope::Config {
        queue: 2,
        ..layerscope::Config::default()
    })
    .await;
    let args = [
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
    ];
    python_ok(&args, &[]).await;
}
