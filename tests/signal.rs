//! 1-D signals `[C, L]` (audio, time series): conv1d, conv_transpose1d, 1-D pools and adaptive
//! pools, each its 2-D form on a height of 1. Hand-calculated ranges, exact sets, counts and
//! shapes, and every mistake a 4xx naming the field. (Random 1-D networks against PyTorch:
//! tests/oracle/check.py, `--signals`.)
mod common;
use common::*;
use serde_json::{json, Value};

fn audio() -> Value {
    json!({"input_shape": [2, 64], "layers": [
        {"type": "conv1d", "out_channels": 4, "kernel_size": 5, "stride": 2, "padding": 2, "name": "c1"},
        {"type": "batchnorm1d", "num_features": 4}, {"type": "relu"},
        {"type": "maxpool1d", "kernel_size": 3, "stride": 2, "padding": 1, "name": "pool"},
        {"type": "conv1d", "out_channels": 4, "kernel_size": 3, "dilation": 2, "groups": 2, "name": "c2"},
        {"type": "conv_transpose1d", "out_channels": 3, "kernel_size": 4, "stride": 2, "padding": 1, "name": "up"},
        {"type": "avgpool1d", "kernel_size": 2},
        {"type": "adaptive_avgpool1d", "output_size": 1},
        {"type": "flatten"}, {"type": "linear", "out_features": 5}]})
}

/// conv k5 s2 p2: output i reads 2i-2..2i+2; max pool k3 s2 p1 reads conv outputs 2j-1..2j+1,
/// so 4j-4..4j+4; a k3 dilation-2 conv reads pool outputs i, i+2, i+4: 4i-4..4i+20. One-based
/// (i and m shift by one): lo - jump + 1.
#[tokio::test]
async fn ranges_and_exact_sets_by_hand() {
    let r = post(
        "/v1/receptive-field",
        json!({"model": audio(), "position": {"layer": "c2", "index": [3], "channel": 1}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let layer = |name: &str| item(&v["layers"], "name", name).clone();
    assert_eq!(layer("c1")["output_shape"], json!([4, 32]));
    assert_eq!(
        layer("c1")["receptive_field"],
        json!({"length": {"size": 5, "jump": 2, "scale": 2, "lo": -2, "hi": 2, "text": "2i-2 <= m <= 2i+2"}})
    );
    assert_eq!(layer("pool")["receptive_field"]["length"]["text"], "4i-4 <= m <= 4i+4");
    assert_eq!(layer("c2")["receptive_field"]["length"]["text"], "4i-4 <= m <= 4i+20");
    assert_eq!(layer("c2")["kind"], "spatial");
    // a transposed conv with stride 2: a floor in the map
    assert_eq!(layer("up")["kind"], "rational");
    assert_eq!(layer("up")["output_shape"], json!([3, 24]));
    assert!(layer("up")["rational"]["length"]["text"].as_str().unwrap().contains("floor"));
    // unit 3 of channel 1 (group 1 reads input channels 2..3 of c2's input, all of c1's)
    let p = &v["position"];
    assert_eq!(p["input_positions"], json!([[8, 32]]));
    assert_eq!(p["input_channels"], json!([[0, 1]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["verification"]["executed"]["positions"], json!([[8, 32]]));

    // one-based, as the course writes it
    let one = post("/v1/receptive-field", json!({"model": audio(), "index_base": 1, "verify": false}))
        .await
        .json();
    assert_eq!(
        item(&one["layers"], "name", "c2")["receptive_field"]["length"]["text"],
        "4i-7 <= m <= 4i+17"
    );
}

/// Dilation and stride skip positions: conv k3 d4 after conv k2 s3 reads positions with holes.
#[tokio::test]
async fn holes_in_a_unit_are_exact() {
    let m = json!({"input_shape": [1, 40], "layers": [
        {"type": "conv1d", "out_channels": 1, "kernel_size": 2, "stride": 3},
        {"type": "conv1d", "out_channels": 1, "kernel_size": 3, "dilation": 4}]});
    let v = post("/v1/receptive-field", json!({"model": m, "position": {"index": [0]}}))
        .await
        .json();
    // second conv: first-conv outputs 0, 4, 8; each reads 3o..3o+1
    assert_eq!(v["position"]["input_positions"], json!([[0, 1], [12, 13], [24, 25]]));
    assert_eq!(v["verification"]["agrees"], true);
}

/// conv1d 2->4 k5 on 64 positions, stride 2: 32 outputs x 4 channels x 10 products each, the
/// same as conv2d with a (1, 5) kernel; PyTorch's weight is [4, 2, 5].
#[tokio::test]
async fn counts_and_parameter_shapes_by_hand() {
    let t = post("/v1/complexity", json!({"model": audio(), "verify": false})).await.json();
    let row = |name: &str| item(&t["rows"], "name", name).clone();
    assert_eq!(row("c1")["type"], "conv1d");
    assert_eq!(row("c1")["macs"], 128 * 10);
    assert_eq!(row("c1")["params"], 4 * 2 * 5 + 4);
    // pool: 16 outputs x 4 channels, 2 comparisons each
    assert_eq!(row("pool")["comparisons"], 64 * 2);
    // conv_transpose1d 4->3 k4: every input element (4 x 12) times 3 outputs x 4 taps
    assert_eq!(row("up")["params"], 4 * 3 * 4 + 3);
    assert_eq!(row("up")["multiplications"], 48 * 12);
    // fvcore counts aten::adaptive_avg_pool1d as nothing, and the row says so
    let f = post("/v1/complexity", json!({"model": audio(), "profile": "fvcore", "verify": false}))
        .await
        .json();
    let pool = f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "adaptive_avgpool1d")
        .unwrap();
    assert_eq!(pool["flops"], 0);
    assert!(pool["note"].as_str().unwrap().contains("adaptive_avg_pool1d"), "{pool}");

    let d = post("/v1/gradient-diagnostics", json!({"model": audio(), "inputs": {"batch_size": 2}})).await;
    assert_eq!(d.status, 200, "{}", d.text);
    let d = d.json();
    let shape = |path: &str| item(&d["layers"], "path", path)["weight_shape"].clone();
    assert_eq!(shape("0"), json!([4, 2, 5]));
    assert_eq!(shape("4"), json!([4, 2, 3]));
    assert_eq!(shape("5"), json!([4, 3, 4]));
}

/// The input is a signal when a 1-D layer reads it, also through element-wise layers; a
/// transposed sequence fed to conv1d is not one (its map says why), and a linear layer on a
/// signal reads every position.
#[tokio::test]
async fn what_makes_a_two_axis_tensor_a_signal() {
    let m = json!({"input_shape": [3, 20], "layers": [
        {"type": "relu"}, {"type": "conv1d", "out_channels": 2, "kernel_size": 3}, {"type": "linear", "out_features": 4}]});
    let v = post("/v1/receptive-field", json!({"model": m, "verify": false})).await.json();
    assert_eq!(v["layers"][0]["kind"], "spatial");
    assert_eq!(v["layers"][1]["receptive_field"]["length"]["text"], "i <= m <= i+2");
    assert_eq!(v["layers"][2]["kind"], "global");
    let seq = json!({"input_shape": [20, 3], "layers": [
        {"type": "linear", "out_features": 3}, {"type": "transpose", "dim0": 1, "dim1": 2}, {"type": "conv1d", "out_channels": 2, "kernel_size": 3}]});
    let v = post("/v1/receptive-field", json!({"model": seq, "position": {"index": [5]}}))
        .await
        .json();
    assert_eq!(v["layers"][0]["kind"], "token");
    assert_eq!(v["layers"][2]["kind"], "not_affine");
    // exact all the same: conv1d output position 5 reads transposed positions 5..7, tokens 5..7
    assert_eq!(v["position"]["input_tokens"], json!([[5, 7]]));
    assert_eq!(v["verification"]["agrees"], true);
}

#[tokio::test]
async fn mistakes_are_4xx_naming_the_field() {
    let refused = |layers: Value, input: Value| async move {
        let r = post(
            "/v1/complexity",
            json!({"model": {"input_shape": input, "layers": layers}, "verify": false}),
        )
        .await;
        let v = r.json();
        assert_eq!(r.status, 422, "{}", r.text);
        (
            v["pointer"].as_str().unwrap_or_default().to_string(),
            v["detail"].as_str().unwrap().to_string(),
        )
    };
    let (p, d) = refused(json!([{"type": "conv1d", "out_channels": 2, "kernel_size": 3}]), json!([1, 8, 8])).await;
    assert_eq!(p, "/model/layers/0");
    assert!(d.contains("conv1d needs a signal input [C, L] (channels, length)"), "{d}");
    let (p, d) = refused(json!([{"type": "conv1d", "out_channels": 2, "kernel_size": [3, 3]}]), json!([1, 8])).await;
    assert_eq!(p, "/model/layers/0/kernel_size");
    assert!(d.contains("expected an int or [l] (a 1-D layer), got a list of 2 items"), "{d}");
    let (p, d) = refused(json!([{"type": "conv1d", "out_channels": 2, "kernel_size": 9}]), json!([1, 8])).await;
    assert_eq!(p, "/model/layers/0/kernel_size");
    assert!(d.contains("the length window spans 9 positions"), "{d}");
    let (p, _) = refused(json!([{"type": "maxpool1d", "kernel_size": 2, "stride": 0}]), json!([1, 8])).await;
    assert_eq!(p, "/model/layers/0/stride");
    let (p, d) = refused(json!([{"type": "adaptive_avgpool1d", "output_size": null}]), json!([1, 8])).await;
    assert_eq!(p, "/model/layers/0/output_size");
    assert!(d.contains("required"), "{d}");
    let (p, d) = refused(
        json!([{"type": "conv1d", "out_channels": 2, "kernel_size": 3, "padding": 5, "padding_mode": "reflect"}]),
        json!([1, 4]),
    )
    .await;
    assert_eq!(p, "/model/layers/0/padding");
    assert!(
        d.contains("reflect padding of 5 must be smaller than the input's length (4)"),
        "{d}"
    );
    let (p, d) = refused(
        json!([{"type": "conv_transpose1d", "out_channels": 2, "kernel_size": 3, "stride": 2, "output_padding": 2}]),
        json!([1, 4]),
    )
    .await;
    assert_eq!(p, "/model/layers/0/output_padding");
    assert!(d.contains("output_padding (2) must be smaller"), "{d}");
}

/// Reflection padding by 2 mirrors positions: padded position 0 is input 2, so the first output
/// of a k1 conv after it reads input 2 alone, the last reads input 7 (mirror of 11 - 2 about 9).
#[tokio::test]
async fn pads_by_hand() {
    let m = json!({"input_shape": [1, 10], "layers": [
        {"type": "reflectionpad1d", "padding": 2}, {"type": "conv1d", "out_channels": 1, "kernel_size": 1},
        {"type": "zeropad1d", "padding": [0, 3]}]});
    let v = post("/v1/receptive-field", json!({"model": m, "position": {"layer": 1, "index": [0]}}))
        .await
        .json();
    assert_eq!(v["layers"][0]["output_shape"], json!([1, 14]));
    assert_eq!(v["layers"][0]["type"], "reflectionpad1d");
    assert_eq!(v["layers"][2]["output_shape"], json!([1, 17]));
    assert_eq!(v["position"]["input_positions"], json!([[2, 2]]));
    assert_eq!(v["verification"]["agrees"], true);
    let last = post("/v1/receptive-field", json!({"model": m, "position": {"layer": 1, "index": [13]}}))
        .await
        .json();
    assert_eq!(last["position"]["input_positions"], json!([[7, 7]]));
}

/// Grading reads a signal's range as its rows (positions i, m); columns it has none.
#[tokio::test]
async fn grading_a_signal_range() {
    let model = audio();
    let question = |id: &str, ask: &str, answer: &str| rf_question(&model, id, ask, answer);
    let r = post(
        "/v1/grade",
        json!({"questions": [
            // one-based, as grading counts by default
            question("right", "rows of layer c2", "4i-7 <= m <= 4i+17"),
            question("wrong", "rows of layer c2", "4i-7 <= m <= 4i+13"),
            question("cols", "cols of layer c2", "4i-4 <= n <= 4i+20")]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(item(&v["questions"], "id", "right")["correct"], true, "{v}");
    assert_eq!(item(&v["questions"], "id", "wrong")["correct"], false);
    let cols = item(&v["questions"], "id", "cols");
    assert!(cols.to_string().contains("1-D signal"), "{cols}");
}

/// nn.Upsample on a signal: linear (two weighted inputs per output, align_corners false) or
/// nearest, by a factor or to a size, an int or a one-element list; bilinear is for images.
#[tokio::test]
async fn upsampling_a_signal_by_hand() {
    let m = |up: Value| json!({"input_shape": [2, 8], "layers": [{"type": "conv1d", "out_channels": 2, "kernel_size": 1}, up]});
    let t = post(
        "/v1/complexity",
        json!({"model": m(json!({"type": "upsample", "mode": "linear", "scale_factor": [2]})), "verify": true}),
    )
    .await
    .json();
    let up = &t["rows"][1];
    assert_eq!(up["output_shape"], json!([2, 16]));
    assert_eq!(up["multiplications"], 2 * 32);
    assert_eq!(up["additions"], 32);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let f = post(
        "/v1/complexity",
        json!({"model": m(json!({"type": "upsample", "size": 24})), "profile": "fvcore", "verify": false}),
    )
    .await
    .json();
    assert_eq!(f["rows"][1]["output_shape"], json!([2, 24]));
    assert!(
        f["rows"][1]["note"].as_str().unwrap().contains("upsample_nearest1d"),
        "{}",
        f["rows"][1]
    );
    // nearest by 3: output i copies input floor(i/3)
    let r = post(
        "/v1/receptive-field",
        json!({"model": m(json!({"type": "upsample", "scale_factor": 3})), "position": {"index": [7]}}),
    )
    .await
    .json();
    assert_eq!(r["layers"][1]["kind"], "rational");
    assert_eq!(r["position"]["input_positions"], json!([[2, 2]]));
    assert_eq!(r["verification"]["agrees"], true);
    let p = assert_problem(
        &post(
            "/v1/complexity",
            json!({"model": m(json!({"type": "upsample", "mode": "bilinear", "scale_factor": 2})), "verify": false}),
        )
        .await,
        422,
        "/model/layers/1/mode",
    );
    assert!(
        p["detail"].as_str().unwrap().contains("a 1-D signal [C, L] takes mode \"linear\""),
        "{p}"
    );
}
