mod common;
use common::*;
use serde_json::{json, Value};

fn pair<'a>(v: &'a Value, a: &str, b: &str) -> &'a Value {
    v["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["a"] == a && p["b"] == b)
        .unwrap_or_else(|| panic!("no pair {a} {b}"))
}

#[tokio::test]
async fn the_documented_witness_a_step_size_change_breaks_i_vs_ii() {
    // g = 1 every step, beta = 0.9, alpha 0.1 then 0.01, theta_0 = 0:
    // Form I:  theta_1 = -0.1, theta_2 = -0.1 - 0.01 + 0.9*(-0.1) = -0.2
    // Form II: v_1 = 1, theta_1 = -0.1; v_2 = 1 + 0.9 = 1.9, theta_2 = -0.1 - 0.019 = -0.119
    let r = post(
        "/v1/momentum/equivalence",
        json!({"theta0": [0.0], "gradients": [[1.0], [1.0]], "alpha": [0.1, 0.01], "beta": 0.9, "sutskever": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let theta = |form: &str, k: usize| v["trajectories"][form]["theta"][k][0].as_f64().unwrap();
    assert!((theta("form_i", 2) + 0.2).abs() < 1e-15);
    assert!((theta("form_ii", 2) + 0.119).abs() < 1e-15);
    assert_eq!(v["verdict"], "not_equivalent");
    assert_eq!(pair(&v, "form_i", "form_ii")["first_step_over_tolerance"], 2);
    assert_eq!(pair(&v, "form_i", "sutskever")["equivalent"], true);
    assert_eq!(pair(&v, "form_ii", "form_i_rescaled")["equivalent"], true);
    assert!(v["explanation"][0].as_str().unwrap().contains("alpha_k/alpha_(k-1)"));
}

#[tokio::test]
async fn constant_step_sizes_make_all_forms_equal_including_libtorch_sgd() {
    let grads: Vec<Vec<f64>> = (0..50).map(|k| vec![(k as f64).sin(), (k as f64 * 0.3).cos()]).collect();
    let r = post(
        "/v1/momentum/equivalence",
        json!({"theta0": [1.0, -2.0], "gradients": grads, "alpha": 0.05, "beta": 0.9, "sutskever": true, "pytorch_sgd": true}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["verdict"], "equivalent");
    assert_eq!(v["all_forms_equivalent"], true, "{}", serde_json::to_string(&v["pairs"]).unwrap());
    // Hand check of step 1: theta_1 = theta_0 - alpha * g_0 = [1 - 0.05*0, -2 - 0.05*1]
    assert_eq!(v["trajectories"]["form_ii"]["theta"][1], json!([1.0, -2.05]));
    assert_eq!(v["trajectories"]["form_ii"]["v"][1], json!([0.0, 1.0]));
}

#[tokio::test]
async fn dampening_and_weight_decay_are_explained() {
    let r = post("/v1/momentum/equivalence", json!({"theta0": [1.0], "gradients": [[1.0], [1.0], [1.0]], "alpha": 0.1, "beta": 0.5, "pytorch_sgd": {"dampening": 0.5, "weight_decay": 0.1}})).await;
    let v = r.json();
    assert_eq!(pair(&v, "form_ii", "pytorch_sgd")["equivalent"], false);
    let text = v["explanation"].to_string();
    assert!(text.contains("dampening") && text.contains("weight_decay"), "{text}");
}

#[tokio::test]
async fn objectives_named_tensors_and_summaries() {
    let r = post(
        "/v1/momentum/equivalence",
        json!({"theta0": {"w": {"shape": [2, 2], "values": [1, 2, 3, 4]}, "b": [0.5]}, "gradients": [{"w": [1, 1, 1, 1], "b": [1]}, {"w": [0, 0, 0, 0], "b": [2]}], "alpha": 0.1, "beta": 0.9, "return": "last"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["parameters"][0]["name"], "b");
    assert_eq!(v["returned_steps"], json!([0, 2]));
    let r = post("/v1/momentum/equivalence", json!({"theta0": [-1.2, 1.0], "objective": {"type": "rosenbrock"}, "steps": 200, "alpha": 0.001, "beta": 0.9, "return": {"every_n": 50}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["returned_steps"], json!([0, 50, 100, 150, 200]));
    assert!(v["explanation"].to_string().contains("own iterate"));
    let r = post("/v1/momentum/equivalence", json!({"theta0": [1.0, 1.0], "objective": {"type": "quadratic", "Q": [[2, 0], [0, 1]], "b": [1, 1]}, "steps": 5, "alpha": 0.1, "beta": 0.5, "format": "svg", "plot": "difference"})).await;
    assert!(r.content_type.starts_with("image/svg+xml"));
    assert!(r.text.starts_with("<svg") && r.text.contains("form_i vs form_ii"));
}

#[tokio::test]
async fn bad_input_names_the_field_and_step() {
    let base = |extra: Value| {
        let mut b = json!({"theta0": [0.0, 0.0], "gradients": [[1.0, 1.0], [1.0, 1.0]], "alpha": 0.1, "beta": 0.9});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    assert_problem(
        &post("/v1/momentum/equivalence", base(json!({"gradients": [[1.0, 1.0], [1.0]]}))).await,
        422,
        "/gradients/1",
    );
    assert_problem(
        &post("/v1/momentum/equivalence", base(json!({"gradients": []}))).await,
        422,
        "/gradients",
    );
    assert_problem(&post("/v1/momentum/equivalence", base(json!({"beta": 1.0}))).await, 422, "/beta");
    assert_problem(&post("/v1/momentum/equivalence", base(json!({"beta": -0.1}))).await, 422, "/beta");
    assert_problem(
        &post("/v1/momentum/equivalence", base(json!({"alpha": [0.1]}))).await,
        422,
        "/alpha",
    );
    assert_problem(
        &post("/v1/momentum/equivalence", base(json!({"gradients": [[1.0, "x"], [1.0, 1.0]]}))).await,
        422,
        "/gradients/0/1",
    );
    assert_problem(
        &post_raw(
            "/v1/momentum/equivalence",
            r#"{"theta0": [NaN], "gradients": [[1]], "alpha": 0.1, "beta": 0.5}"#.into(),
        )
        .await,
        400,
        "",
    );
    assert_problem(
        &post("/v1/momentum/equivalence", base(json!({"theta0": {"w": [1, 2]}}))).await,
        422,
        "/gradients/0",
    );
    assert_problem(
        &post("/v1/momentum/equivalence", base(json!({"device": "cuda"}))).await,
        if tch::Cuda::is_available() { 200 } else { 422 },
        "/device",
    );
    let many: Vec<Vec<f64>> = vec![vec![0.0]; 100_001];
    let r = post(
        "/v1/momentum/equivalence",
        json!({"theta0": [0.0], "gradients": many, "alpha": 0.1, "beta": 0.5}),
    )
    .await;
    let v = assert_problem(&r, 413, "/gradients");
    assert_eq!(v["limit"]["name"], "max_steps");
}

/// CPU and CUDA trajectories agree. Skipped, and says so, on machines without a GPU.
#[tokio::test]
async fn cpu_and_cuda_agree_when_a_gpu_is_present() {
    if !tch::Cuda::is_available() {
        eprintln!("SKIPPED cpu_and_cuda_agree_when_a_gpu_is_present: no CUDA device on this machine");
        return;
    }
    let body = |device: &str| json!({"theta0": [1.0, -1.0, 0.5], "objective": {"type": "rosenbrock"}, "steps": 100, "alpha": 0.0005, "beta": 0.9, "pytorch_sgd": true, "device": device});
    let cpu = post("/v1/momentum/equivalence", body("cpu")).await.json();
    let gpu = post("/v1/momentum/equivalence", body("cuda")).await.json();
    assert_eq!(gpu["device"], "cuda:0");
    for form in ["form_i", "form_ii", "pytorch_sgd"] {
        let (a, b) = (&cpu["trajectories"][form]["theta"], &gpu["trajectories"][form]["theta"]);
        for (x, y) in a
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .zip(b.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()))
        {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{form}: {x} vs {y}");
        }
    }
}

/// The typed request: misspelt keys get a hint, every wrong element is named by its pointer,
/// and the words are the API's own (exact texts, so a regression in the rewording shows).
#[tokio::test]
async fn typed_request_rejections_read_as_before() {
    let base = |extra: Value| {
        let mut b = json!({"theta0": {"w": [0.0, 0.0]}, "gradients": [{"w": [1.0, 1.0]}], "alpha": 0.1, "beta": 0.9});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (json!({"alpah": 0.1}), "/alpah", "unknown field \"alpah\" (did you mean \"alpha\"?); allowed here: theta0, gradients, objective, steps, alpha, beta, dtype, device, tolerance, sutskever, pytorch_sgd, return, format, plot"),
        (json!({"theta0": {"w": [0.0, "x"]}}), "/theta0/w/1", "expected a number, got a string \"x\""),
        (json!({"theta0": {"w": {"shape": [3], "values": [1, 2]}}}), "/theta0/w/values", "has 2 numbers but shape [3] needs 3"),
        (json!({"theta0": {"w": {"shape": [2], "vals": [1, 2]}}}), "/theta0/w/vals", "unknown field \"vals\" (did you mean \"values\"?); allowed here: shape, values"),
        (json!({"theta0": {"w": {"shape": [0], "values": []}}}), "/theta0/w/shape/0", "must be from 1 to 10000000, got 0"),
        (json!({"theta0": "w"}), "/theta0", "expected a list of numbers or an object of named tensors, got a string \"w\""),
        (json!({"alpha": [0.1, true]}), "/alpha/1", "expected a number, got the boolean true"),
        (json!({"alpha": -1}), "/alpha", "must be between 0 and 1000000000000, got -1"),
        (json!({"dtype": "float16"}), "/dtype", "unknown value \"float16\"; expected one of float64, float32"),
        (json!({"return": {"every_n": 0}}), "/return/every_n", "must be from 1 to 4294967295, got 0"),
        (json!({"return": "some"}), "/return", "unknown value \"some\"; expected one of full, last, none"),
        (json!({"pytorch_sgd": "yes"}), "/pytorch_sgd", "expected true, false or {dampening, nesterov, weight_decay}, got a string \"yes\""),
        (json!({"pytorch_sgd": {"nesterov": 1}}), "/pytorch_sgd/nesterov", "expected a boolean, got the integer 1"),
        (json!({"steps": 0}), "/steps", "must be from 1 to 100000, got 0"),
        (json!({"steps": 3}), "/steps", "says 3 but 1 gradients were given"),
        (json!({"objective": {"type": "cubic"}}), "/objective/type", "unknown value \"cubic\"; expected one of quadratic, rosenbrock"),
    ];
    for (extra, pointer, detail) in cases {
        let r = post("/v1/momentum/equivalence", base(extra.clone())).await;
        let v = assert_problem(&r, 422, pointer);
        assert_eq!(v["detail"], detail, "{extra}");
    }
    let r = post(
        "/v1/momentum/equivalence",
        json!({"theta0": [0.0], "gradients": [[1.0]], "beta": 0.9}),
    )
    .await;
    assert_eq!(assert_problem(&r, 422, "/alpha")["detail"], "is required");
    let r = post(
        "/v1/momentum/equivalence",
        json!({"theta0": [0.0, 0.0], "objective": {"type": "rosenbrock", "Q": [[1]]}, "steps": 2, "alpha": 0.1, "beta": 0.9}),
    )
    .await;
    assert_eq!(
        assert_problem(&r, 422, "/objective/Q")["detail"],
        "belongs to the quadratic objective"
    );
    let r = post(
        "/v1/momentum/equivalence",
        json!({"theta0": [0.0, 0.0], "objective": {"Q": [[1, 0], [0, 1]]}, "alpha": 0.1, "beta": 0.9}),
    )
    .await;
    assert_eq!(assert_problem(&r, 422, "/steps")["detail"], "is required with an objective");
}
