mod common;
use common::*;
use serde_json::{json, Value};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[tokio::test]
async fn one_unit_sigmoid_chain_matches_the_closed_form() {
    // y1 = s(a1 x + b1), y2 = s(a2 y1 + b2), y3 = a3 y2 + b3.
    // dy3/db1 = a3 s'(~y2) a2 s'(~y1),  dy3/db2 = a3 s'(~y2),  dy3/db3 = 1.
    let (a1, b1, a2, b2, a3, b3, x) = (0.7, -0.3, -1.9, 0.4, 2.5, 0.1, 1.3);
    let t1 = a1 * x + b1;
    let y1 = sigmoid(t1);
    let t2 = a2 * y1 + b2;
    let y2 = sigmoid(t2);
    let d = |t: f64| sigmoid(t) * (1.0 - sigmoid(t));
    let want_b1 = a3 * d(t2) * a2 * d(t1);
    let want_b2 = a3 * d(t2);
    let body = json!({
        "model": {"input_shape": [1], "layers": [
            {"type": "linear", "out_features": 1}, {"type": "sigmoid"},
            {"type": "linear", "out_features": 1}, {"type": "sigmoid"},
            {"type": "linear", "out_features": 1}]},
        "parameters": {"0": {"weight": [[a1]], "bias": [b1]}, "2": {"weight": [[a2]], "bias": [b2]}, "4": {"weight": [[a3]], "bias": [b3]}},
        "inputs": {"values": [[x]]},
        "objective": {"output_unit": 0},
        "dtype": "float64"
    });
    let r = post("/v1/gradient-diagnostics", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let bias = |i: usize| v["layers"][i]["bias_grad"]["frobenius"].as_f64().unwrap();
    assert!((bias(0) - want_b1.abs()).abs() < 1e-15, "{} vs {want_b1}", bias(0));
    assert!((bias(1) - want_b2.abs()).abs() < 1e-15);
    assert!((bias(2) - 1.0).abs() < 1e-15);
    // dy3/da1 = dy3/db1 * x
    assert!((v["layers"][0]["weight_grad"]["frobenius"].as_f64().unwrap() - (want_b1 * x).abs()).abs() < 1e-15);
    // The bound: layer 0 gets (1/4)^2 |a2| |a3|; layer 2 gets (1/4) |a3|
    assert!((v["layers"][0]["bias_grad_bound"].as_f64().unwrap() - 0.0625 * a2.abs() * a3.abs()).abs() < 1e-12);
    assert!((v["layers"][1]["bias_grad_bound"].as_f64().unwrap() - 0.25 * a3.abs()).abs() < 1e-12);
    assert_eq!(v["layers"][0]["bound_holds"], true);
    // pre-activation statistics of the first sigmoid
    assert!((v["activations"][0]["max_abs_pre_activation"].as_f64().unwrap() - t1.abs()).abs() < 1e-15);
    assert!((v["activations"][0]["mean_derivative"].as_f64().unwrap() - d(t1)).abs() < 1e-15);
    let _ = (y2, b3);
}

/// ReLU6 is PyTorch's hardtanh(0, 6): no gradient where the pre-activation is exactly 0 or 6
/// (clamp would pass one there). Three samples with pre-activations 0, 6 and 3 through
/// linear(1) -> relu6 -> linear(1), all weights 1 and biases 0: the first bias's gradient is 1
/// (the sample at 3 alone), and a batchnorm's after it, and its weight's, by hand too.
#[tokio::test]
async fn relu6_passes_no_gradient_at_its_corners() {
    let body = json!({
        "model": {"input_shape": [1], "layers": [
            {"type": "linear", "out_features": 1}, {"type": "relu6"},
            {"type": "linear", "out_features": 1}]},
        "parameters": {"0": {"weight": [[1.0]], "bias": [0.0]}, "2": {"weight": [[1.0]], "bias": [0.0]}},
        "inputs": {"values": [[0.0], [6.0], [3.0]]},
        "dtype": "float64"
    });
    let r = post("/v1/gradient-diagnostics", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["layers"][0]["bias_grad"]["frobenius"], 1.0, "{v}");
    // dL/dw1 = sum of x where 0 < x < 6: 3
    assert_eq!(v["layers"][0]["weight_grad"]["frobenius"], 3.0, "{v}");
    // the last layer sees relu6(x) = 0, 6, 3: its weight's gradient is 9, its bias's 3
    assert_eq!(v["layers"][1]["weight_grad"]["frobenius"], 9.0, "{v}");
    assert_eq!(v["layers"][1]["bias_grad"]["frobenius"], 3.0, "{v}");
    assert_eq!(v["other_parameters"], json!([]), "{v}");
}

/// A normalization layer's affine weight and bias are reported beside the weight table, by
/// PyTorch's name: batchnorm1d over 2 features at its init (weight 1, bias 0, running mean 0,
/// variance 1, eps 1e-5) between two linear layers with given weights, by hand.
#[tokio::test]
async fn normalization_tensors_have_their_gradients_beside_the_table() {
    let body = json!({
        "model": {"input_shape": [1], "layers": [
            {"type": "linear", "out_features": 2}, {"type": "batchnorm1d", "num_features": 2},
            {"type": "linear", "out_features": 1}]},
        "parameters": {"0": {"weight": [[1.0], [2.0]], "bias": [0.0, 0.0]}, "2": {"weight": [[3.0, 4.0]], "bias": [0.0]}},
        "inputs": {"values": [[1.0], [-2.0]]},
        "dtype": "float64"
    });
    let r = post("/v1/gradient-diagnostics", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let others = v["other_parameters"].as_array().unwrap();
    let names: Vec<&str> = others.iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert_eq!(names, ["1.weight", "1.bias"], "{v}");
    // y = W2 bn(W1 x); bn(h) = gamma h / sqrt(1 + eps) + beta at init: dL/dbeta_j = sum over
    // samples of W2_j = 2 W2_j; dL/dgamma_j = W2_j sum(h_j) / sqrt(1 + eps), sum(h) = W1 (1 - 2)
    let s = (1.0f64 + 1e-5).sqrt();
    let beta = (36.0f64 + 64.0).sqrt();
    let gamma = ((3.0 * -1.0 / s).powi(2) + (4.0 * -2.0 / s).powi(2)).sqrt();
    assert!((others[1]["grad"]["frobenius"].as_f64().unwrap() - beta).abs() < 1e-12, "{v}");
    assert!((others[0]["grad"]["frobenius"].as_f64().unwrap() - gamma).abs() < 1e-12, "{v}");
    assert_eq!(others[0]["type"], "batchnorm");
    assert_eq!(others[0]["shape"], json!([2]));
}

fn deep_mlp(activation: &str, depth: usize) -> Value {
    let mut layers = Vec::new();
    for _ in 0..depth {
        layers.push(json!({"type": "linear", "out_features": 64}));
        layers.push(json!({"type": activation}));
    }
    layers.push(json!({"type": "linear", "out_features": 1}));
    json!({"input_shape": [64], "layers": layers})
}

#[tokio::test]
async fn deep_sigmoid_with_small_weights_vanishes_and_relu_with_kaiming_does_not() {
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": deep_mlp("sigmoid", 10), "init": {"type": "normal", "std": 0.01}, "inputs": {"batch_size": 32}}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["verdict"], "vanishing", "{}", r.text);
    assert!(v["first_vanishing_layer"].is_string());
    assert!(v["layers"].as_array().unwrap().iter().all(|l| l["bound_holds"] == true));
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": deep_mlp("relu", 10), "init": "kaiming_normal", "inputs": {"batch_size": 32}}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["verdict"], "healthy", "{}", serde_json::to_string(&v["layers"]).unwrap());
    assert!(v["activations"][0]["dead_fraction"].is_number());
}

#[tokio::test]
async fn same_seed_same_answer_and_sweeps() {
    let body = json!({"model": deep_mlp("sigmoid", 3), "init": {"type": "xavier_uniform", "seed": 7}, "inputs": {"batch_size": 4, "seed": 3}, "sweep": {"depths": [1, 2, 3], "scales": [0.5, 2.0]}});
    let a = post("/v1/gradient-diagnostics", body.clone()).await.json();
    let b = post("/v1/gradient-diagnostics", body).await.json();
    assert_eq!(a["layers"], b["layers"]);
    assert_eq!(a["sweep"], b["sweep"]);
    assert_eq!(a["sweep"].as_array().unwrap().len(), 6);
    // each extra sigmoid block multiplies dL/db_1 by at most 1/4 * ||A||: deeper shrinks it more
    let ratio = |d: u64| {
        a["sweep"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["depth"] == d && r["scale"] == 0.5)
            .unwrap()["first_to_last_bias_grad_ratio"]
            .as_f64()
            .unwrap()
    };
    assert!(ratio(3) < ratio(1));
    let svg = post(
        "/v1/gradient-diagnostics?format=svg",
        json!({"model": deep_mlp("sigmoid", 3), "sweep": {"depths": [1, 2, 4]}}),
    )
    .await;
    assert!(svg.content_type.starts_with("image/svg+xml") && svg.text.contains("<polyline"));
}

#[tokio::test]
async fn cnns_run_and_report_no_mlp_bound() {
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": {"input_shape": [3, 16, 16], "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "batchnorm2d"}, {"type": "relu"},
            {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"}, {"type": "linear", "out_features": 2}]},
            "objective": {"type": "mse", "targets": [[1, 0], [0, 1]]}, "inputs": {"batch_size": 2}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert!(v["layers"][0]["bias_grad_bound"].is_null());
    assert!(v["bound_note"].as_str().unwrap().contains("MLPs"));
}

#[tokio::test]
async fn limits_and_bad_input() {
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": {"preset": "vgg16"}, "inputs": {"batch_size": 4000}}),
    )
    .await;
    let v = r.json();
    assert!(r.status == 413, "{}", r.text);
    assert!(v["limit"]["name"].as_str().unwrap().starts_with("max_run_"), "{v}");
    assert_problem(
        &post(
            "/v1/gradient-diagnostics",
            json!({"model": deep_mlp("relu", 1), "inputs": {"batch_size": 100000}}),
        )
        .await,
        422,
        "/inputs/batch_size",
    );
    assert_problem(
        &post("/v1/gradient-diagnostics", json!({"model": deep_mlp("relu", 1), "init": "lecun"})).await,
        422,
        "/init",
    );
    assert_problem(
        &post(
            "/v1/gradient-diagnostics",
            json!({"model": deep_mlp("relu", 1), "parameters": {"0": {"weight": [1, 2, 3]}}}),
        )
        .await,
        422,
        "/parameters/0/weight",
    );
    assert_problem(
        &post(
            "/v1/gradient-diagnostics",
            json!({"model": deep_mlp("relu", 1), "objective": {"output_unit": 5}}),
        )
        .await,
        422,
        "/objective/output_unit",
    );
    assert_problem(
        &post(
            "/v1/gradient-diagnostics",
            json!({"model": deep_mlp("relu", 1), "inputs": {"values": [1, 2, 3]}}),
        )
        .await,
        422,
        "/inputs/values",
    );
    if !tch::Cuda::is_available() {
        let v = assert_problem(
            &post("/v1/gradient-diagnostics", json!({"model": deep_mlp("relu", 1), "device": "cuda"})).await,
            422,
            "/device",
        );
        assert!(v["detail"].as_str().unwrap().contains("no CUDA"));
        let r = post("/v1/gradient-diagnostics", json!({"model": deep_mlp("relu", 1), "device": "auto"}))
            .await
            .json();
        assert_eq!(r["device"], "cpu");
        assert!(r["device_note"].as_str().unwrap().contains("fell back"));
    }
}

/// CPU and CUDA agree to 1e-4 relative. Skipped, and says so, on machines without a GPU.
#[tokio::test]
async fn cpu_and_cuda_agree_when_a_gpu_is_present() {
    if !tch::Cuda::is_available() {
        eprintln!("SKIPPED cpu_and_cuda_agree_when_a_gpu_is_present: no CUDA device on this machine");
        return;
    }
    let body = |device: &str| json!({"model": deep_mlp("sigmoid", 6), "init": {"type": "normal", "std": 0.1, "seed": 1}, "inputs": {"batch_size": 64}, "device": device});
    let cpu = post("/v1/gradient-diagnostics", body("cpu")).await.json();
    let gpu = post("/v1/gradient-diagnostics", body("cuda")).await.json();
    assert_eq!(gpu["device"], "cuda:0");
    for (a, b) in cpu["layers"].as_array().unwrap().iter().zip(gpu["layers"].as_array().unwrap()) {
        let (x, y) = (
            a["weight_grad"]["frobenius"].as_f64().unwrap(),
            b["weight_grad"]["frobenius"].as_f64().unwrap(),
        );
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1e-30), "{x} vs {y}");
    }
}

/// A max pool window of padding only (dilation and ceil_mode on a 1x1 map): PyTorch 2.11 gives
/// -inf there and its backward writes through index -1, corrupting the heap (the server died on
/// it). Refused before libtorch runs, naming the layer; the server lives on.
#[tokio::test]
async fn a_max_pool_window_of_padding_only_is_refused_before_libtorch() {
    let model = json!({"input_shape": [3, 1, 1], "layers": [
        {"type": "maxpool2d", "kernel_size": 2, "stride": 1, "padding": 1, "ceil_mode": true, "dilation": 2},
        {"type": "flatten"}, {"type": "linear", "out_features": 1}]});
    let r = post("/v1/gradient-diagnostics", json!({"model": model})).await;
    let v = assert_problem(&r, 422, "/model/layers/0");
    assert!(v["detail"].as_str().unwrap().contains("output row 0 reads only padding"), "{v}");
    // the same pool on a 3x3 map has an input element in every window: it runs
    let mut ok = model.clone();
    ok["input_shape"] = json!([3, 3, 3]);
    let r = post("/v1/gradient-diagnostics", json!({"model": ok})).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Weights whose products overflow (1e300 entries) have no spectral norm to report: null, not a
/// 500, on both methods (eigvalsh for a side up to 64, Lanczos above).
#[tokio::test]
async fn overflowing_weights_have_a_null_spectral_norm() {
    for n in [30usize, 70] {
        let w: Vec<f64> = (0..n * n).map(|i| if i % 7 == 0 { 1e300 } else { 1.0 }).collect();
        let r = post(
            "/v1/gradient-diagnostics",
            json!({"model": {"input_shape": [n], "layers": [{"type": "linear", "out_features": n, "bias": false}]},
                   "parameters": {"0": {"weight": w}}, "inputs": {"batch_size": 1}, "dtype": "float64"}),
        )
        .await;
        assert_eq!(r.status, 200, "{n}: {}", r.text);
        let v = r.json();
        assert!(v["layers"][0]["spectral_norm"].is_null(), "{n}: {}", v["layers"][0]);
    }
}

/// nn.PReLU by hand, in every analysis. Diagnostics: input [3] -> prelu(3 slopes a = [0.5, -2,
/// 1]) -> linear [[1, 1, 1]], sum of outputs, batch x1 = [1, -2, -3], x2 = [-1, 4, -0.5]:
/// prelu(x1) = [1, 4, -3], prelu(x2) = [-0.5, 4, -0.5], so dL/dW = [0.5, 8, -3.5]; dL/da_j = sum
/// of min(0, x_j) = [-1, -2, -3.5]; g' = [1, -2, 1] and [0.5, 1, 1] (mean 2.5/6); sup g' =
/// max(1, max |a|) = 2. Counts on [3, 4, 4]: 3 slopes, 48 activations; ptflops's module and F.prelu
/// hooks count 48 each (one when called as F.prelu); fvcore and FlopCounterMode count none.
#[tokio::test]
async fn prelu_by_hand() {
    let body = json!({
        "model": {"input_shape": [3], "layers": [
            {"type": "prelu", "num_parameters": 3}, {"type": "linear", "out_features": 1}]},
        "parameters": {"0": {"weight": [0.5, -2.0, 1.0]}, "1": {"weight": [[1.0, 1.0, 1.0]], "bias": [0.0]}},
        "inputs": {"values": [[1.0, -2.0, -3.0], [-1.0, 4.0, -0.5]]},
        "dtype": "float64"
    });
    let r = post("/v1/gradient-diagnostics", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
    assert!(close(&v["layers"][0]["weight_grad"]["frobenius"], 76.5f64.sqrt()), "{v}");
    let others = &v["other_parameters"];
    assert_eq!(
        (others[0]["path"].as_str(), &others[0]["shape"]),
        (Some("0.weight"), &json!([3])),
        "{v}"
    );
    assert!(close(&others[0]["grad"]["frobenius"], 17.25f64.sqrt()), "{v}");
    let act = &v["activations"][0];
    assert_eq!(act["activation"], "prelu");
    assert!(
        close(&act["mean_derivative"], 2.5 / 6.0) && close(&act["max_derivative"], 2.0),
        "{act}"
    );
    // PyTorch's init: every slope 0.25 (sup g' 1), whatever the request's init
    let mut default = body.clone();
    default["parameters"].as_object_mut().unwrap().remove("0");
    let v = post("/v1/gradient-diagnostics", default).await.json();
    assert!(close(&v["activations"][0]["max_derivative"], 1.0), "{v}");
    // wrong sizes: the slopes' count against num_parameters, and num_parameters against the channels
    let mut bad = body.clone();
    bad["parameters"]["0"]["weight"] = json!([1.0]);
    assert_problem(&post("/v1/gradient-diagnostics", bad).await, 422, "/parameters/0/weight");
    let mut bad = body;
    bad["model"]["layers"][0]["num_parameters"] = json!(5);
    assert_problem(&post("/v1/gradient-diagnostics", bad).await, 422, "/model/layers/0/num_parameters");

    let image = |functional: bool| {
        json!({"input_shape": [2, 4, 4], "layers": [
            {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
            {"type": "prelu", "num_parameters": 3, "functional": functional}]})
    };
    let row = |v: &Value| item(&v["rows"], "path", "1").clone();
    let v = post("/v1/complexity", json!({"model": image(false)})).await.json();
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    let r = row(&v);
    assert_eq!((r["params"].as_u64(), r["activations"].as_u64()), (Some(3), Some(48)), "{r}");
    for (profile, functional, want) in [
        ("ptflops", false, 96),
        ("ptflops", true, 48),
        ("fvcore", false, 0),
        ("torch_flop_counter", false, 0),
    ] {
        let v = post("/v1/complexity", json!({"model": image(functional), "profile": profile}))
            .await
            .json();
        assert_eq!(
            row(&v)["flops"].as_u64(),
            Some(want),
            "{profile} functional {functional}: {}",
            row(&v)
        );
    }
    let v = post("/v1/complexity", json!({"model": image(false), "profile": "fvcore"}))
        .await
        .json();
    assert!(row(&v)["note"].as_str().unwrap_or("").contains("aten::prelu"), "{}", row(&v));
    // element-wise: the conv's window, verified by the probe
    let v = post("/v1/receptive-field", json!({"model": image(false)})).await.json();
    assert_eq!(v["layers"][1]["receptive_field"]["height"]["text"], "i-1 <= m <= i+1", "{v}");
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
}
