//! Hostile and mistaken input: always a 4xx problem+json naming the field, never a 500.
mod common;
use common::*;
use serde_json::json;

fn model(layers: serde_json::Value) -> serde_json::Value {
    json!({"model": {"input_shape": [3, 32, 32], "layers": layers}, "verify": false})
}

/// These layers on a 3x32x32 input must be refused with 422 at `pointer`.
async fn refused(layers: serde_json::Value, pointer: &str) -> serde_json::Value {
    assert_problem(&post("/v1/complexity", model(layers)).await, 422, pointer)
}

#[tokio::test]
async fn malformed_json_is_400() {
    let r = post_raw("/v1/complexity", "{\"model\": ".into()).await;
    assert_problem(&r, 400, "");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    use axum::body::Body;
    use axum::http::Request;
    let req = Request::post("/v1/complexity")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("a=b"))
        .unwrap();
    let r = send(layerscope::Config::default(), req).await;
    assert_eq!(r.status, 415);
    assert!(r.content_type.starts_with("application/problem+json"));
}

#[tokio::test]
async fn unknown_layer_types_and_fields() {
    refused(json!([{"type": "conv4d"}]), "/model/layers/0/type").await;
    // a known type names its first missing argument
    refused(json!([{"type": "conv3d"}]), "/model/layers/0/out_channels").await;
    let v = refused(
        json!([{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "strid": 2}]),
        "/model/layers/0/strid",
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("unknown field"));
    let v = refused(
        json!([{"type": "conv2d", "out_channels": 4, "kernal_size": 3}]),
        "/model/layers/0/kernel_size",
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("kernal_size"), "{v}");
    assert_problem(
        &post("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "colour": 1})).await,
        422,
        "/colour",
    );
    assert_problem(
        &post("/v1/complexity", json!({"model": {"preset": "vgg99"}})).await,
        422,
        "/model/preset",
    );
}

/// A reshape that PyTorch could not do is refused at the field that makes it impossible.
#[tokio::test]
async fn reshapes_that_cannot_be_done_name_the_field() {
    // model() gives [3, 32, 32]: 3072 elements
    for (layer, pointer, words) in [
        (
            json!({"type": "reshape", "shape": [5, -1]}),
            "/model/layers/0/shape",
            "3072 elements",
        ),
        (json!({"type": "reshape", "shape": [-1, -1]}), "/model/layers/0/shape", "only one"),
        (
            json!({"type": "reshape", "shape": [0, 3072]}),
            "/model/layers/0/shape/0",
            "at least 1",
        ),
        (
            json!({"type": "view", "shape": [1, 1, 1, 3072]}),
            "/model/layers/0/shape",
            "1 to 3 sizes",
        ),
        (
            json!({"type": "reshape", "shape": [1099511627776u64, 1099511627776u64, 1]}),
            "/model/layers/0/shape/0",
            "at most",
        ),
        (
            json!({"type": "unflatten", "dim": 1, "unflattened_size": [2, 2]}),
            "/model/layers/0/unflattened_size",
            "multiply",
        ),
        (
            json!({"type": "unflatten", "dim": 4, "unflattened_size": [3]}),
            "/model/layers/0/dim",
            "not a sample axis",
        ),
        (
            json!({"type": "unflatten", "dim": 3, "unflattened_size": [2, 4, 2, 2]}),
            "/model/layers/0/unflattened_size",
            "1 to 3",
        ),
        (
            json!({"type": "unflatten", "dim": 3, "unflattened_size": [4, 8]}),
            "/model/layers/0/unflattened_size",
            "at most 3",
        ),
        (
            json!({"type": "flatten", "start_dim": 3, "end_dim": 1}),
            "/model/layers/0/start_dim",
            "after end_dim",
        ),
        (
            json!({"type": "flatten", "start_dim": 0}),
            "/model/layers/0/start_dim",
            "batch axis",
        ),
    ] {
        let v = refused(json!([layer]), pointer).await;
        assert!(v["detail"].as_str().unwrap().contains(words), "{layer}: {v}");
    }
}

#[tokio::test]
async fn sizes_must_be_positive_whole_numbers() {
    refused(
        json!([{"type": "conv2d", "out_channels": 0, "kernel_size": 3}]),
        "/model/layers/0/out_channels",
    )
    .await;
    refused(
        json!([{"type": "conv2d", "out_channels": -4, "kernel_size": 3}]),
        "/model/layers/0/out_channels",
    )
    .await;
    refused(
        json!([{"type": "conv2d", "out_channels": 4.5, "kernel_size": 3}]),
        "/model/layers/0/out_channels",
    )
    .await;
    refused(
        json!([{"type": "conv2d", "out_channels": 4, "kernel_size": [3, 0]}]),
        "/model/layers/0/kernel_size/1",
    )
    .await;
    refused(
        json!([{"type": "conv2d", "out_channels": 4, "kernel_size": 1_000_000_000_000u64}]),
        "/model/layers/0/kernel_size",
    )
    .await;
    assert_problem(
        &post_raw(
            "/v1/complexity",
            r#"{"model": {"input_shape": [3, 32, 1e400], "layers": []}}"#.into(),
        )
        .await,
        400,
        "",
    );
    assert_problem(
        // [3, 32] is a sequence now (3 tokens of 32 features), [3, 32, 32, 2] a volume; five
        // axes are nothing
        &post("/v1/complexity", json!({"model": {"input_shape": [3, 8, 32, 32, 2], "layers": []}})).await,
        422,
        "/model/input_shape",
    );
    assert_problem(
        &post("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "batch_size": 0})).await,
        422,
        "/batch_size",
    );
}

#[tokio::test]
async fn shapes_that_do_not_connect() {
    refused(
        json!([{"type": "conv2d", "out_channels": 4, "kernel_size": 40}]),
        "/model/layers/0/kernel_size",
    )
    .await;
    refused(
        json!([{"type": "flatten"}, {"type": "linear", "in_features": 100, "out_features": 10}]),
        "/model/layers/1/in_features",
    )
    .await;
    refused(json!([{"type": "linear", "out_features": 10}]), "/model/layers/0").await;
    refused(
        json!([{"type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3}]),
        "/model/layers/0/in_channels",
    )
    .await;
    refused(
        json!([{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "groups": 2}]),
        "/model/layers/0/groups",
    )
    .await;
    refused(json!([{"type": "concat", "branches": [[{"type": "conv2d", "out_channels": 4, "kernel_size": 3}], [{"type": "conv2d", "out_channels": 4, "kernel_size": 1}]]}]), "/model/layers/0/branches/1").await;
    refused(
        json!([{"type": "residual", "body": [{"type": "conv2d", "out_channels": 4, "kernel_size": 1}]}]),
        "/model/layers/0",
    )
    .await;
    refused(
        json!([{"type": "maxpool2d", "kernel_size": 2, "padding": 2}]),
        "/model/layers/0/padding",
    )
    .await;
    refused(
        json!([{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same"}]),
        "/model/layers/0/padding",
    )
    .await;
}

#[tokio::test]
async fn deep_nesting_and_big_bodies_hit_limits() {
    let mut layer = json!({"type": "relu"});
    for _ in 0..40 {
        layer = json!({"type": "concat", "branches": [[layer]]});
    }
    let r = post("/v1/complexity", json!({"model": {"input_shape": [1, 4, 4], "layers": [layer]}})).await;
    assert!(r.status == 413 || r.status == 422, "{}", r.text);
    let v = r.json();
    assert!(v["limit"]["name"].is_string(), "{v}");
    let huge = format!("{{\"model\": {{\"preset\": \"vgg_stem\"}}, \"pad\": \"{}\"}}", "x".repeat(5 << 20));
    let r = post_raw("/v1/complexity", huge).await;
    let v = assert_problem(&r, 413, "");
    assert_eq!(v["limit"]["name"], "max_body_bytes");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(post_raw("/v1/complexity", deep).await.status, 400);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let r = get("/v1/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.content_type.starts_with("application/problem+json"));
    let r = get("/v1/complexity").await;
    assert_eq!(r.status, 405);
    assert!(r.content_type.starts_with("application/problem+json"));
}

#[tokio::test]
async fn strides_stacked_past_64_bits_are_not_affine_not_an_error() {
    let layers: Vec<serde_json::Value> = (0..5)
        .map(|_| json!({"type": "conv2d", "out_channels": 1, "kernel_size": 1, "stride": 1048576}))
        .collect();
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"input_shape": [1, 4, 4], "layers": layers}, "verify": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["layers"][4]["kind"], "not_affine");
}

/// A libtorch failure while checking an analytic answer is reported in the answer (the check did
/// not run, and why), never as a 500; a full queue stays a 503.
#[tokio::test]
async fn a_failed_libtorch_check_is_a_reason_not_a_500() {
    let state = layerscope::AppState::new(layerscope::Config::default());
    let failed = state
        .run_check(|| -> Result<u32, String> { panic!("simulated libtorch error") })
        .await
        .expect("not an HTTP error");
    assert!(failed.unwrap_err().contains("simulated libtorch error"));
    let fine = state.run_check(|| Ok::<u32, String>(7)).await.expect("not an HTTP error");
    assert_eq!(fine, Ok(7));
}

/// The typed complexity and receptive-field requests: every rejection names the field, says why
/// in plain words, and hints at a misspelt key (exact texts, so a regression in the wording shows).
#[tokio::test]
async fn typed_analysis_requests_name_the_field_and_say_why() {
    let cases = [
        ("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "conventons": {}}), "/conventons",
         "unknown field \"conventons\" (did you mean \"conventions\"?); allowed here: model, conventions, profile, batch_size, dtype, verify, format"),
        ("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "profile": "fvcor"}), "/profile",
         "unknown value \"fvcor\"; expected one of none, fvcore, ptflops, torch_flop_counter, torchvision"),
        ("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "conventions": {"flops": "3mac"}}), "/conventions/flops",
         "unknown value \"3mac\"; expected one of mults_plus_adds, 2mac, mac"),
        ("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "conventions": {"count_pooling": "yes"}}), "/conventions/count_pooling",
         "expected a boolean, got a string \"yes\""),
        ("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "batch_size": 0}), "/batch_size", "must be from 1 to 4096, got 0"),
        ("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "batch_size": 1.5}), "/batch_size",
         "expected a whole number, got the number 1.5"),
        ("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "profile": "fvcore", "conventions": {"flops": "mac"}}), "/profile",
         "give either a profile or conventions.flops, not both: a profile fixes how FLOPs are counted"),
        ("/v1/complexity", json!({"profile": "fvcore"}), "/model", "is required: {\"preset\": NAME} or {\"input_shape\": [...], \"layers\": [...]}"),
        ("/v1/receptive-field", json!({"model": {"preset": "vgg_stem"}, "position": {"layer": true}}), "/position/layer",
         "expected a layer index, path or name, got the boolean true"),
        ("/v1/receptive-field", json!({"model": {"preset": "vgg_stem"}, "position": {"layer": -1}}), "/position/layer",
         "expected a layer index (a whole number from 0), path or name, got the integer -1"),
        ("/v1/receptive-field", json!({"model": {"preset": "vgg_stem"}, "position": {"indx": [1, 1]}}), "/position/indx",
         "unknown field \"indx\" (did you mean \"index\"?); allowed here: layer, index, channel"),
        ("/v1/receptive-field", json!({"model": {"preset": "vgg_stem"}, "position": {"index": [1, "a"]}}), "/position/index/1",
         "expected a whole number, got a string \"a\""),
        ("/v1/receptive-field", json!({"model": {"preset": "vgg_stem"}, "index_base": 2}), "/index_base", "must be 0 or 1, got 2"),
    ];
    for (path, body, pointer, detail) in cases {
        let r = post(path, body.clone()).await;
        let v = assert_problem(&r, 422, pointer);
        assert_eq!(v["detail"], detail, "{path} {body}");
    }
    // a whole number written as a float is the integer, as the hand-read fields always took it
    let r = post(
        "/v1/complexity",
        json!({"model": {"preset": "vgg_stem"}, "batch_size": 2.0, "verify": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["batch_size"], 2);
}

/// The typed gradient-diagnostics request: the same care (exact texts).
#[tokio::test]
async fn typed_diagnostics_requests_name_the_field_and_say_why() {
    let mlp = json!({"input_shape": [2], "layers": [{"type": "linear", "out_features": 2}, {"type": "sigmoid"}, {"type": "linear", "out_features": 1}]});
    let with = |extra: serde_json::Value| {
        let mut b = json!({"model": mlp});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (json!({"init": "xavier"}), "/init",
         "unknown value \"xavier\"; expected one of model, pytorch_default, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal, normal, uniform"),
        (json!({"init": {"type": "normal", "std": -1}}), "/init/std", "must be between 0 and 1000000, got -1"),
        (json!({"init": {"type": "normal", "sdt": 1}}), "/init/sdt",
         "unknown field \"sdt\" (did you mean \"std\"?); allowed here: type, std, bound, scale, seed"),
        (json!({"init": "model"}), "/init", "init \"model\" uses the weights of a model file ({\"onnx\": ...}); this model has none"),
        (json!({"parameters": {"0": {"wieght": [1, 2, 3, 4]}}}), "/parameters/0/wieght", "unknown field \"wieght\"; allowed here: weight, bias"),
        (json!({"parameters": {"0": {"weight": [[1, 2], [3, "x"]]}}}), "/parameters/0/weight/1/1",
         "expected a number or a (nested) list of numbers, got a string \"x\""),
        (json!({"parameters": {"0": {"weight": [1, 2, 3]}}}), "/parameters/0/weight",
         "has 3 numbers; layer 0 needs 4 (PyTorch's weight shape, row-major)"),
        (json!({"inputs": {"values": [1, 2], "seed": 3}}), "/inputs/seed",
         "belongs to a drawn batch: give values, or batch_size, distribution, bound and seed"),
        (json!({"inputs": {"values": [1, 2, 3]}}), "/inputs/values",
         "has 3 numbers: expected a multiple of the input size 2 (one sample is [2])"),
        (json!({"inputs": {"distribution": "gauss"}}), "/inputs/distribution", "unknown value \"gauss\"; expected one of normal, uniform"),
        (json!({"objective": "mse"}), "/objective",
         "expected \"sum_output\" (the others need {type, unit or targets}), got a string \"mse\""),
        (json!({"objective": {"type": "output_unit", "unit": 1}}), "/objective/unit", "must be at most 0, got 1"),
        (json!({"objective": {"type": "mse"}}), "/objective/targets", "is required for mse"),
        (json!({"thresholds": {"vanishing_ratio": 2}}), "/thresholds/vanishing_ratio", "must be between 0 and 1, got 2"),
        (json!({"sweep": {"depths": [1, 2], "block": [2, 1]}}), "/sweep/block", "expected [start, end) with start < end"),
        (json!({"sweep": {}}), "/sweep", "give depths, scales or both"),
        (json!({"spectral_tolerance": 0.5}), "/spectral_tolerance", "must be between 0 and 0.1, got 0.5"),
        (json!({"dtype": "float16"}), "/dtype", "unknown value \"float16\"; expected one of float32, float64"),
    ];
    for (extra, pointer, detail) in cases {
        let r = post("/v1/gradient-diagnostics", with(extra.clone())).await;
        let v = assert_problem(&r, 422, pointer);
        assert_eq!(v["detail"], detail, "{extra}");
    }
}

/// The typed grading request (exact texts).
#[tokio::test]
async fn typed_grading_requests_name_the_field_and_say_why() {
    let q = |extra: serde_json::Value| {
        let mut q = json!({"id": "a", "ask": "total params", "model": {"preset": "vgg_stem"}});
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        json!({"questions": [q]})
    };
    let cases = [
        (q(json!({"kind": "complexty"})), "/questions/0/kind",
         "unknown value \"complexty\"; expected one of receptive_field, complexity, gradient, momentum"),
        (q(json!({"modle": {}})), "/questions/0/modle",
         "unknown field \"modle\" (did you mean \"model\"?); allowed here: id, kind, ask, model, request, answer, points, tolerance, index_base, number_locale, partial_credit"),
        (q(json!({"tolerance": {"sigfigs": 3, "decimals": 2}})), "/questions/0/tolerance",
         "give one kind of tolerance: {absolute, relative}, {sigfigs} or {decimals}"),
        (q(json!({"tolerance": {"sigfigs": 20}})), "/questions/0/tolerance/sigfigs", "must be from 1 to 15, got 20"),
        (q(json!({"index_base": 2})), "/questions/0/index_base", "must be 0 or 1, got 2"),
        (q(json!({"partial_credit": {"bias_forgoten": 0.3}})), "/questions/0/partial_credit/bias_forgoten",
         "unknown field \"bias_forgoten\"; allowed here: bias_forgotten, macs_for_flops, additions_convention, wrong_input_channels, index_base, swapped_letters"),
        (q(json!({"partial_credit": {"bias_forgotten": 2}})), "/questions/0/partial_credit/bias_forgotten", "must be between 0 and 1, got 2"),
        (q(json!({"request": [1]})), "/questions/0/request", "expected the analysis endpoint's request body (an object)"),
        (json!({"questions": [{"id": "a"}]}), "/questions/0/ask", "is required"),
        (json!({"problem_set": "course", "reveal": "all"}), "/reveal", "unknown value \"all\"; expected one of none, hints, answers"),
        (json!({"problem_set": "variant"}), "/seed", "is required with problem_set \"variant\" (the variant's seed)"),
        (json!({"problem_set": "course", "partial_credit": "some"}), "/partial_credit",
         "expected true, false or {mistake: fraction of the points}, got a string \"some\""),
    ];
    for (body, pointer, detail) in cases {
        let r = post("/v1/grade", body.clone()).await;
        let v = assert_problem(&r, 422, pointer);
        assert_eq!(v["detail"], detail, "{body}");
    }
}
