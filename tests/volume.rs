//! Volumes `[C, D, H, W]` (video clips, scans): conv3d, the 3-D pools and batchnorm3d. Hand-
//! calculated ranges, exact sets, counts and shapes, grading of a slice range, and every mistake
//! a 4xx naming the field. (Random 3-D networks against PyTorch: tests/oracle/check.py,
//! `--volumes`.)
mod common;
use common::*;
use serde_json::{json, Value};

fn clip() -> Value {
    json!({"input_shape": [3, 8, 20, 20], "layers": [
        {"type": "conv3d", "out_channels": 4, "kernel_size": [3, 7, 7], "stride": [1, 2, 2], "padding": [1, 3, 3], "bias": false, "name": "c1"},
        {"type": "batchnorm3d", "num_features": 4}, {"type": "relu"},
        {"type": "maxpool3d", "kernel_size": [1, 3, 3], "stride": [1, 2, 2], "padding": [0, 1, 1], "name": "pool"},
        {"type": "conv3d", "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1, "dilation": [2, 1, 1], "name": "c2"},
        {"type": "adaptive_avgpool3d", "output_size": 1, "name": "gap"},
        {"type": "flatten"}, {"type": "linear", "out_features": 5, "name": "fc"}]})
}

/// c1 (k 3x7x7, s 1x2x2, p 1x3x3): slice k reads k-1..k+1, row i reads 2i-3..2i+3. The pool
/// (k 1x3x3, s 1x2x2, p 0x1x1) reads c1 rows 2i-1..2i+1: input rows 4i-5..4i+5. c2 (k3 s2 p1,
/// dilation 2 in depth) reads pool slices 2k-1, 2k+1, 2k+3 (input 2k-2..2k+4) and pool rows
/// 2i-1..2i+1 (input 8i-9..8i+9).
#[tokio::test]
async fn ranges_and_exact_sets_by_hand() {
    let r = post(
        "/v1/receptive-field",
        json!({"model": clip(), "position": {"layer": "c2", "index": [1, 1, 2], "channel": 2}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let layer = |name: &str| item(&v["layers"], "name", name).clone();
    assert_eq!(layer("c1")["output_shape"], json!([4, 8, 10, 10]));
    assert_eq!(
        layer("c1")["receptive_field"]["depth"],
        json!({"size": 3, "jump": 1, "scale": 1, "lo": -1, "hi": 1, "text": "k-1 <= p <= k+1"})
    );
    assert_eq!(layer("c1")["receptive_field"]["height"]["text"], "2i-3 <= m <= 2i+3");
    assert_eq!(layer("pool")["output_shape"], json!([4, 8, 5, 5]));
    assert_eq!(layer("pool")["receptive_field"]["width"]["text"], "4j-5 <= n <= 4j+5");
    assert_eq!(layer("c2")["output_shape"], json!([6, 3, 3, 3]));
    assert_eq!(layer("c2")["receptive_field"]["depth"]["text"], "2k-2 <= p <= 2k+4");
    assert_eq!(layer("c2")["receptive_field"]["height"]["text"], "8i-9 <= m <= 8i+9");
    assert_eq!(layer("c2")["kind"], "spatial");
    assert_eq!(v["layers"][1]["type"], "batchnorm3d");
    // the unit: slices 0..6, rows -1..17 clipped to 0..17, columns 7..25 clipped to 7..19
    let p = &v["position"];
    assert_eq!(p["input_slices"], json!([[0, 6]]));
    assert_eq!(p["input_rows"], json!([[0, 17]]));
    assert_eq!(p["input_cols"], json!([[7, 19]]));
    assert_eq!(p["input_channels"], json!([[0, 2]]));
    assert_eq!(p["affine"], json!({"slices": [0, 6], "rows": [-1, 17], "cols": [7, 25]}));
    assert_eq!(p["padding"]["rows_outside_image"], 1);
    assert_eq!(p["padding"]["cols_outside_image"], 6);
    assert_eq!(p["padding"]["slices_outside_volume"], 0);
    assert_eq!(p["tight_box_equals_clipped"], true);
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["verification"]["executed"]["slices"], json!([[0, 6]]));

    // one-based, as the course writes it: lo - jump + 1
    let one = post("/v1/receptive-field", json!({"model": clip(), "index_base": 1, "verify": false}))
        .await
        .json();
    assert_eq!(
        item(&one["layers"], "name", "c2")["receptive_field"]["depth"]["text"],
        "2k-3 <= p <= 2k+3"
    );
    // the default unit is the centre of the last layer (a flat feature: every position)
    let d = post("/v1/receptive-field", json!({"model": clip()})).await.json();
    assert_eq!(d["verification"]["agrees"], true, "{}", d["verification"]);
}

/// Dilation 3 along the depth skips slices: a k3 conv reads slices k, k+3, k+6 only.
#[tokio::test]
async fn holes_along_the_depth_are_exact() {
    let m = json!({"input_shape": [1, 10, 4, 4], "layers": [
        {"type": "conv3d", "out_channels": 1, "kernel_size": [3, 1, 1], "dilation": [3, 1, 1]}]});
    let v = post("/v1/receptive-field", json!({"model": m, "position": {"index": [0, 1, 2]}}))
        .await
        .json();
    assert_eq!(v["position"]["input_slices"], json!([[0, 0], [3, 3], [6, 6]]));
    assert_eq!(v["position"]["input_rows"], json!([[1, 1]]));
    assert_eq!(v["position"]["input_cols"], json!([[2, 2]]));
    assert!(v["position"]["notes"][0]
        .as_str()
        .unwrap()
        .contains("slices/rows/columns have holes"));
    assert_eq!(v["verification"]["agrees"], true);
}

/// c1: 3200 outputs x (3 x 7 x 7 = 147 taps x 3 channels = 441) products, weight [4, 3, 3, 7, 7];
/// the pool: 800 outputs x 8 comparisons; c2: 162 outputs x 108; the global pool adds 27 values
/// per channel (26 additions each, 156) and divides 6 times.
#[tokio::test]
async fn counts_and_parameter_shapes_by_hand() {
    let t = post("/v1/complexity", json!({"model": clip(), "verify": true})).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let t = t.json();
    let row = |name: &str| item(&t["rows"], "name", name).clone();
    assert_eq!(row("c1")["type"], "conv3d");
    assert_eq!(row("c1")["params"], 4 * 3 * 3 * 7 * 7);
    assert_eq!(row("c1")["macs"], 3200 * 441);
    assert_eq!(row("pool")["comparisons"], 800 * 8);
    assert_eq!(row("c2")["params"], 6 * 4 * 27 + 6);
    assert_eq!(row("c2")["macs"], 162 * 108);
    assert_eq!(row("gap")["additions"], 156);
    assert_eq!(row("gap")["multiplications"], 6);
    assert_eq!(t["totals"]["params"], 1764 + 8 + 654 + 35);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    // FlopCounterMode counts the convolutions and the linear layer: 2 per MAC
    let f = post(
        "/v1/complexity",
        json!({"model": clip(), "profile": "torch_flop_counter", "verify": false}),
    )
    .await
    .json();
    assert_eq!(f["totals"]["flops"], 2 * (3200 * 441 + 162 * 108 + 30));
    // fvcore has no handle for aten::adaptive_avg_pool3d, and the row says so
    let f = post("/v1/complexity", json!({"model": clip(), "profile": "fvcore", "verify": false}))
        .await
        .json();
    let gap = item(&f["rows"], "name", "gap");
    assert_eq!(gap["flops"], 0);
    assert!(gap["note"].as_str().unwrap().contains("adaptive_avg_pool3d"), "{gap}");

    let d = post("/v1/gradient-diagnostics", json!({"model": clip(), "inputs": {"batch_size": 2}})).await;
    assert_eq!(d.status, 200, "{}", d.text);
    let d = d.json();
    let layer = |name: &str| item(&d["layers"], "name", name).clone();
    assert_eq!(layer("c1")["weight_shape"], json!([4, 3, 3, 7, 7]));
    assert_eq!(layer("c2")["weight_shape"], json!([6, 4, 3, 3, 3]));
    assert!(layer("c1")["weight_grad"]["frobenius"].as_f64().unwrap() > 0.0);
}

/// padding="same" with an even kernel pads the extra slice at the end, as PyTorch does; a
/// replicate-padded conv3d reads the edge slices again.
#[tokio::test]
async fn same_and_replicate_padding_by_hand() {
    let m = json!({"input_shape": [1, 6, 5, 5], "layers": [
        {"type": "conv3d", "out_channels": 1, "kernel_size": [2, 1, 1], "padding": "same"},
        {"type": "conv3d", "out_channels": 1, "kernel_size": [3, 1, 1], "padding": [1, 0, 0], "padding_mode": "replicate"}]});
    let v = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": 0, "index": [5, 0, 0]}}),
    )
    .await
    .json();
    assert_eq!(v["layers"][0]["output_shape"], json!([1, 6, 5, 5]));
    // "same" with span 2: no slice before, one after; the last output reads slice 5 alone
    assert_eq!(v["position"]["input_slices"], json!([[5, 5]]));
    assert_eq!(v["verification"]["agrees"], true);
    let v = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": 1, "index": [0, 0, 0]}}),
    )
    .await
    .json();
    assert_eq!(v["position"]["input_slices"], json!([[0, 2]]));
    assert_eq!(v["verification"]["agrees"], true);
    let d = post("/v1/gradient-diagnostics", json!({"model": m, "inputs": {"batch_size": 1}})).await;
    assert_eq!(d.status, 200, "{}", d.text);
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
    let vol = json!([2, 4, 8, 8]);
    let (p, d) = refused(json!([{"type": "conv2d", "out_channels": 2, "kernel_size": 3}]), vol.clone()).await;
    assert_eq!(p, "/model/layers/0");
    assert!(d.contains("conv2d on a volume [2, 4, 8, 8] is not supported"), "{d}");
    let (p, d) = refused(json!([{"type": "conv3d", "out_channels": 2, "kernel_size": 3}]), json!([2, 8, 8])).await;
    assert_eq!(p, "/model/layers/0");
    assert!(d.contains("conv3d needs a volume input [C, D, H, W]"), "{d}");
    let (p, d) = refused(json!([{"type": "conv3d", "out_channels": 2, "kernel_size": [3, 3]}]), vol.clone()).await;
    assert_eq!(p, "/model/layers/0/kernel_size");
    assert!(d.contains("expected an int or [d, h, w], got a list of 2 items"), "{d}");
    let (p, d) = refused(json!([{"type": "conv3d", "out_channels": 2, "kernel_size": 5}]), vol.clone()).await;
    assert_eq!(p, "/model/layers/0/kernel_size");
    assert!(d.contains("the depth window spans 5 positions"), "{d}");
    let (p, d) = refused(
        json!([{"type": "conv3d", "out_channels": 2, "kernel_size": 3, "groups": 2, "in_channels": 2}, {"type": "conv3d", "out_channels": 3, "kernel_size": 1, "groups": 2}]),
        vol.clone(),
    )
    .await;
    assert_eq!(p, "/model/layers/1/groups");
    assert!(d.contains("out_channels (3) must be divisible by groups (2)"), "{d}");
    let (p, d) = refused(json!([{"type": "maxpool3d", "kernel_size": 2, "padding": [0, 2, 0]}]), vol.clone()).await;
    assert_eq!(p, "/model/layers/0/padding");
    assert!(d.contains("at most half the kernel size"), "{d}");
    let (p, _) = refused(json!([{"type": "avgpool3d", "kernel_size": 2, "stride": [1, 0, 1]}]), vol.clone()).await;
    assert_eq!(p, "/model/layers/0/stride/1");
    let (p, _) = refused(json!([{"type": "adaptive_avgpool3d", "output_size": [1, 1]}]), vol.clone()).await;
    assert_eq!(p, "/model/layers/0/output_size");
    let (p, d) = refused(
        json!([{"type": "conv3d", "out_channels": 2, "kernel_size": 3, "padding": 4, "padding_mode": "reflect"}]),
        vol.clone(),
    )
    .await;
    assert_eq!(p, "/model/layers/0/padding");
    assert!(d.contains("reflect padding of 4 must be smaller than the input's depth (4)"), "{d}");
    let (p, d) = refused(
        json!([{"type": "conv3d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": "same"}]),
        vol.clone(),
    )
    .await;
    assert_eq!(p, "/model/layers/0/padding");
    assert!(d.contains("strided"), "{d}");
    // a volume's unit has three indices
    let r = post(
        "/v1/receptive-field",
        json!({"model": clip(), "position": {"layer": "c2", "index": [1, 1]}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["pointer"], "/position/index");
    assert!(r.text.contains("[k, i, j]"), "{}", r.text);
    let r = post(
        "/v1/receptive-field",
        json!({"model": clip(), "position": {"layer": "c2", "index": [3, 0, 0]}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["pointer"], "/position/index/0");
}

/// Grading reads a volume's slice range (index k, input slices p) next to its rows.
#[tokio::test]
async fn grading_a_slice_range() {
    let model = clip();
    let question = |id: &str, ask: &str, answer: &str| rf_question(&model, id, ask, answer);
    let r = post(
        "/v1/grade",
        json!({"questions": [
            // one-based, as grading counts by default
            question("right", "slices of layer c2", "2k-3 <= p <= 2k+3"),
            question("wrong", "slices of layer c2", "2k-2 <= p <= 2k+4"),
            question("rows", "rows of layer c2", "8i-16 <= m <= 8i+2"),
            question("image", "slices of layer c2", "k <= p <= k")]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(item(&v["questions"], "id", "right")["correct"], true, "{v}");
    assert_eq!(item(&v["questions"], "id", "wrong")["correct"], false);
    assert_eq!(item(&v["questions"], "id", "rows")["correct"], true, "{v}");
    let img = post(
        "/v1/grade",
        json!({"questions": [{"id": "img", "kind": "receptive_field", "model": {"preset": "vgg_stem"}, "ask": "slices of layer conv1", "answer": "k <= p <= k"}]}),
    )
    .await;
    assert!(img.text.contains("not a volume"), "{}", img.text);
}

/// The command line: a depth column for a volume's layers, a unit of three indices, its slices.
#[test]
fn the_command_line_reads_a_volume() {
    let dir = std::env::temp_dir().join(format!("layerscope-volume-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("clip.json");
    std::fs::write(&spec, clip().to_string()).unwrap();
    let run = run_cli;
    let path = spec.to_str().unwrap();
    let (code, text, err) = run(&["receptive-field", path, "--layer", "c2", "--unit", "2,2,3", "--one-based"]);
    assert_eq!(code, Some(0), "{err}");
    let header = text.lines().nth(1).unwrap();
    assert!(header.contains("depth") && header.find("depth") < header.find("height"), "{header}");
    // one-based: c2's depth 2k-3 <= p <= 2k+3; the unit (zero-based 1, 1, 2) as above
    assert!(text.contains("2k-3 <= p <= 2k+3 (size 7, jump 2)"), "{text}");
    assert!(text.contains("input slices [[1,7]], rows [[1,18]], columns [[8,20]]"), "{text}");
    assert!(text.contains("verified by autograd in libtorch: agrees"), "{text}");
    let (code, _, err) = run(&["receptive-field", path, "--layer", "c2", "--unit", "1,1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("give [k, i, j] (slice, row, column)"), "{err}");
    // a range with floors (a transposed conv's) is shown with its sizes and fractional jump
    let up = dir.join("up.json");
    let model = json!({"input_shape": [1, 3, 4, 4], "layers": [
        {"type": "conv3d", "out_channels": 2, "kernel_size": 3, "padding": 1},
        {"type": "conv_transpose3d", "out_channels": 2, "kernel_size": 3, "stride": 2}]});
    std::fs::write(&up, model.to_string()).unwrap();
    let (code, text, err) = run(&["receptive-field", up.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.lines().nth(1).unwrap().contains("depth"), "{text}");
    assert!(
        text.contains("floor((k-1)/2)-1 <= p <= floor(k/2)+1 (size 3-4, jump 1/2)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The graph form on a volume: a squeeze-and-excitation gate [C, 1, 1, 1] times the features
/// reads the whole volume (global), a skip added back keeps the conv's range; the probe agrees.
#[tokio::test]
async fn a_gated_volume_in_the_graph_form() {
    let m = json!({"input_shape": [2, 4, 6, 6], "graph": {"nodes": [
        {"name": "conv", "type": "conv3d", "out_channels": 4, "kernel_size": 3, "padding": 1, "inputs": ["input"]},
        {"name": "squeeze", "type": "adaptive_avgpool3d", "output_size": 1, "inputs": ["conv"]},
        {"name": "excite", "type": "conv3d", "out_channels": 4, "kernel_size": 1, "inputs": ["squeeze"]},
        {"name": "gate", "type": "sigmoid", "inputs": ["excite"]},
        {"name": "scaled", "type": "mul", "inputs": ["gate", "conv"]},
        {"name": "skip", "type": "conv3d", "out_channels": 4, "kernel_size": 1, "inputs": ["input"]},
        {"name": "sum", "type": "add", "inputs": ["skip", "conv"]}],
        "outputs": ["scaled", "sum"]}});
    let v = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "sum", "index": [0, 0, 5]}}),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.text);
    let v = v.json();
    let layer = |name: &str| item(&v["layers"], "path", name).clone();
    assert_eq!(layer("squeeze")["output_shape"], json!([4, 1, 1, 1]));
    assert_eq!(layer("scaled")["kind"], "global");
    // the skip (k1) and the conv (k3, padding 1) share their centre: one range, i-1 <= m <= i+1
    assert_eq!(layer("sum")["kind"], "spatial");
    assert_eq!(layer("sum")["receptive_field"]["depth"]["text"], "k-1 <= p <= k+1");
    assert_eq!(layer("sum")["aligned"], true);
    assert_eq!(v["position"]["input_slices"], json!([[0, 1]]));
    assert_eq!(v["position"]["input_cols"], json!([[4, 5]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    let g = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "scaled", "index": [3, 5, 0]}}),
    )
    .await
    .json();
    assert_eq!(g["position"]["input_slices"], json!([[0, 3]]));
    assert_eq!(g["position"]["input_rows"], json!([[0, 5]]));
    assert_eq!(g["verification"]["agrees"], true, "{}", g["verification"]);
    let t = post("/v1/complexity", json!({"model": m, "verify": true})).await.json();
    // the gate: one product per element of the features [4, 4, 6, 6]
    assert_eq!(item(&t["rows"], "path", "scaled")["multiplications"], 4 * 4 * 6 * 6);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let d = post("/v1/gradient-diagnostics", json!({"model": m, "inputs": {"batch_size": 2}})).await;
    assert_eq!(d.status, 200, "{}", d.text);
}

/// adaptive_maxpool3d from [2, 5, 4, 6] to [2, 3, 4]: PyTorch's adaptive windows
/// [floor(i n / o), ceil((i + 1) n / o)) are slices {0..2, 2..4}, rows {0..1, 1..2, 2..3} and
/// columns {0..1, 1..2, 3..4, 4..5}: 6 x 6 x 8 = 288 positions summed over the windows per
/// channel, one comparison fewer than each window's size: 2 * 288 - 48 = 528. ptflops counts the
/// input's 240 elements twice (nn.AdaptiveMaxPool3d's hook and F.adaptive_max_pool3d's). The
/// unequal windows make the probe run in float64; a global pool's in float32.
#[tokio::test]
async fn adaptive_max_pooling_of_a_volume_by_hand() {
    let model = json!({"input_shape": [2, 5, 4, 6], "layers": [
        {"type": "adaptive_maxpool3d", "output_size": [2, 3, 4], "name": "amp"}]});
    let t = post("/v1/complexity", json!({"model": model, "verify": true})).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let t = t.json();
    let row = item(&t["rows"], "name", "amp").clone();
    assert_eq!(row["output_shape"], json!([2, 2, 3, 4]), "{row}");
    assert_eq!(row["comparisons"], 528);
    assert_eq!(row["additions"], 0);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let p = post("/v1/complexity", json!({"model": model, "profile": "ptflops", "verify": false}))
        .await
        .json();
    assert_eq!(item(&p["rows"], "name", "amp")["flops"], 480);

    let r = post("/v1/receptive-field", json!({"model": model, "position": {"index": [1, 2, 3]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["position"]["input_slices"], json!([[2, 4]]));
    assert_eq!(v["position"]["input_rows"], json!([[2, 3]]));
    assert_eq!(v["position"]["input_cols"], json!([[4, 5]]));
    assert_eq!(v["position"]["input_channels"], json!([[0, 1]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["verification"]["dtype"], "float64");

    let global = json!({"input_shape": [2, 5, 4, 6], "layers": [{"type": "adaptive_maxpool3d", "output_size": 1}]});
    let v = post("/v1/receptive-field", json!({"model": global})).await.json();
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["verification"]["dtype"], "float32");
    // return_indices is refused, naming the field
    let bad = json!({"input_shape": [2, 5, 4, 6], "layers": [{"type": "adaptive_maxpool3d", "output_size": 1, "return_indices": true}]});
    let r = post("/v1/complexity", json!({"model": bad})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["pointer"], "/model/layers/0/return_indices");
}

/// groupnorm and instancenorm3d on a volume [4, 3, 5, 6] (N = 360 elements): each output reads
/// every position of its group of channels (2 groups of 2 for the groupnorm, each channel alone
/// for the instance norm, which reads the groupnorm's: channel 1 sees input channels 0 and 1),
/// so the per-layer range is global. Counts (see `normalization` in
/// complexity.rs): 3N + S additions and 2N + 3S multiplications for S statistics, plus N of each
/// for an affine weight and bias: the groupnorm (S = 2, affine) 1442 and 1086, the instance norm
/// (S = 4, not affine, PyTorch's default) 1084 and 732. fvcore's norm handle counts 5 per
/// element with an affine weight, 4 without; ptflops's batchnorm hook 2 and 1.
#[tokio::test]
async fn normalizations_of_a_volume_by_hand() {
    let model = json!({"input_shape": [4, 3, 5, 6], "layers": [
        {"type": "groupnorm", "num_groups": 2, "name": "gn"},
        {"type": "instancenorm3d", "name": "in"}]});
    let t = post("/v1/complexity", json!({"model": model, "verify": true})).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let t = t.json();
    let row = |name: &str| item(&t["rows"], "name", name).clone();
    assert_eq!(
        (row("gn")["additions"].clone(), row("gn")["multiplications"].clone()),
        (json!(1442), json!(1086))
    );
    assert_eq!(
        (row("in")["additions"].clone(), row("in")["multiplications"].clone()),
        (json!(1084), json!(732))
    );
    assert_eq!(row("gn")["params"], 8);
    assert_eq!(row("in")["params"], 0);
    assert_eq!(row("in")["type"], "instancenorm3d");
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    for (profile, gn, inorm) in [("fvcore", 5 * 360, 4 * 360), ("ptflops", 2 * 360, 360)] {
        let p = post("/v1/complexity", json!({"model": model, "profile": profile, "verify": false}))
            .await
            .json();
        assert_eq!(item(&p["rows"], "name", "gn")["flops"], gn, "{profile}");
        assert_eq!(item(&p["rows"], "name", "in")["flops"], inorm, "{profile}");
    }

    for (layer, channel, channels) in [("gn", 3, json!([[2, 3]])), ("in", 1, json!([[0, 1]]))] {
        let r = post(
            "/v1/receptive-field",
            json!({"model": model, "position": {"layer": layer, "index": [1, 2, 3], "channel": channel}}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let v = r.json();
        assert_eq!(item(&v["layers"], "name", layer)["kind"], "global");
        assert_eq!(v["position"]["input_channels"], channels, "{layer}");
        assert_eq!(v["position"]["input_slices"], json!([[0, 2]]));
        assert_eq!(v["position"]["input_rows"], json!([[0, 4]]));
        assert_eq!(v["position"]["input_cols"], json!([[0, 5]]));
        assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    }
    // instancenorm3d reads volumes only, instancenorm2d images only
    let image = json!({"input_shape": [4, 5, 6], "layers": [{"type": "instancenorm3d"}]});
    let r = post("/v1/complexity", json!({"model": image})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["pointer"], "/model/layers/0");
    let volume = json!({"input_shape": [4, 3, 5, 6], "layers": [{"type": "instancenorm2d"}]});
    let r = post("/v1/complexity", json!({"model": volume})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("instancenorm3d"), "{}", r.text);
}

/// The 3-D pads: PyTorch's 6-tuple is (left, right, top, bottom, front, back). A replication pad
/// [1, 0, 0, 2, 1, 1] of a [1, 3, 4, 5] volume gives [1, 5, 6, 6]; output slice k is input slice
/// k - 1 and column j input column j - 1 (clamped to the edge), row i input row i. Its corner
/// unit [0, 5, 0] (front slice, the second bottom row, the left column) copies input slice 0,
/// row 3, column 0. Pads count nothing.
#[tokio::test]
async fn pads_of_a_volume_by_hand() {
    let model = json!({"input_shape": [1, 3, 4, 5], "layers": [
        {"type": "replicationpad3d", "padding": [1, 0, 0, 2, 1, 1], "name": "pad"},
        {"type": "conv3d", "out_channels": 1, "kernel_size": [3, 1, 1], "name": "c"}]});
    let r = post(
        "/v1/receptive-field",
        json!({"model": model, "position": {"layer": "pad", "index": [0, 5, 0]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let pad = item(&v["layers"], "name", "pad");
    assert_eq!(pad["output_shape"], json!([1, 5, 6, 6]));
    assert_eq!(pad["receptive_field"]["depth"]["text"], "k-1 <= p <= k-1");
    assert_eq!(pad["receptive_field"]["height"]["text"], "i <= m <= i");
    assert_eq!(pad["receptive_field"]["width"]["text"], "j-1 <= n <= j-1");
    assert_eq!(v["position"]["input_slices"], json!([[0, 0]]));
    assert_eq!(v["position"]["input_rows"], json!([[3, 3]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 0]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);

    let t = post("/v1/complexity", json!({"model": model, "verify": true})).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let t = t.json();
    assert_eq!(item(&t["rows"], "name", "pad")["flops"], 0);
    assert_eq!(item(&t["rows"], "name", "c")["macs"], 3 * 3 * 6 * 6);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);

    // five numbers, and a reflection as wide as the volume, are refused naming the field
    for (layer, pointer) in [
        (json!({"type": "zeropad3d", "padding": [1, 1, 1, 1, 1]}), "/model/layers/0/padding"),
        (json!({"type": "reflectionpad3d", "padding": 3}), "/model/layers/0/padding"),
    ] {
        let bad = json!({"input_shape": [1, 3, 4, 5], "layers": [layer]});
        let r = post("/v1/complexity", json!({"model": bad})).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.json()["pointer"], pointer, "{}", r.text);
    }
}

/// conv_transpose3d (kernel 2, stride 2) doubles every axis of [1, 3, 4, 4]: output slice k
/// copies input slice floor(k/2), a range with floors (`rational`, jump 1/2). Each of the 48
/// inputs times each of its 2 x 8 weights: 768 products, no additions without a bias (every
/// output one product), params 1*2*8 + 2. In a 3-D U-Net step (conv3d k3 p1 as the skip, a 2x
/// pool of it and the transposed conv up, concatenated), the up path reads the skip's
/// 2*floor(k/2)..=2*floor(k/2)+1, so input slices 2*floor(k/2)-1..=2*floor(k/2)+2: that bounds
/// the skip's own k-1..=k+1 on both ends, and the union is the up path's range with floors,
/// centred differently from the skip's (not aligned).
#[tokio::test]
async fn transposed_convolution_of_a_volume_by_hand() {
    let model = json!({"input_shape": [1, 3, 4, 4], "layers": [
        {"type": "conv_transpose3d", "out_channels": 2, "kernel_size": 2, "stride": 2, "name": "up"}]});
    let r = post(
        "/v1/receptive-field",
        json!({"model": model, "position": {"layer": "up", "index": [5, 2, 7]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let up = item(&v["layers"], "name", "up");
    assert_eq!(up["output_shape"], json!([2, 6, 8, 8]));
    assert_eq!(up["kind"], "rational");
    assert_eq!(up["rational"]["depth"]["text"], "floor(k/2) <= p <= floor(k/2)");
    assert_eq!(up["rational"]["depth"]["jump"], "1/2");
    assert_eq!(v["position"]["input_slices"], json!([[2, 2]]));
    assert_eq!(v["position"]["input_rows"], json!([[1, 1]]));
    assert_eq!(v["position"]["input_cols"], json!([[3, 3]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);

    let t = post("/v1/complexity", json!({"model": model, "verify": true})).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let t = t.json();
    let row = item(&t["rows"], "name", "up");
    assert_eq!(row["macs"], 768);
    assert_eq!(row["params"], 18);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let f = post(
        "/v1/complexity",
        json!({"model": model, "profile": "torch_flop_counter", "verify": false}),
    )
    .await
    .json();
    assert_eq!(f["totals"]["flops"], 2 * 768);
    let d = post("/v1/gradient-diagnostics", json!({"model": model, "inputs": {"batch_size": 2}})).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(item(&d.json()["layers"], "name", "up")["weight_shape"], json!([1, 2, 2, 2, 2]));

    let unet = json!({"input_shape": [1, 4, 6, 6], "graph": {"nodes": [
        {"name": "skip", "type": "conv3d", "out_channels": 2, "kernel_size": 3, "padding": 1, "inputs": ["input"]},
        {"name": "down", "type": "maxpool3d", "kernel_size": 2, "inputs": ["skip"]},
        {"name": "up", "type": "conv_transpose3d", "out_channels": 2, "kernel_size": 2, "stride": 2, "inputs": ["down"]},
        {"name": "cat", "type": "concat", "dim": 1, "inputs": ["skip", "up"]}],
        "outputs": ["cat"]}});
    let v = post(
        "/v1/receptive-field",
        json!({"model": unet, "position": {"layer": "cat", "index": [1, 2, 3], "channel": 3}}),
    )
    .await;
    assert_eq!(v.status, 200, "{}", v.text);
    let v = v.json();
    let cat = item(&v["layers"], "path", "cat");
    assert_eq!(cat["kind"], "rational", "{cat}");
    assert_eq!(cat["rational"]["depth"]["text"], "2*floor(k/2)-1 <= p <= 2*floor(k/2)+2");
    assert_eq!(cat["aligned"], false);
    // channel 3 is the up path's: output slice 1 is pooled slice 0, the skip's slices 0..=1,
    // input slices -1..=2 clipped; rows from output row 2: pooled row 1, skip rows 2..=3
    assert_eq!(v["position"]["input_slices"], json!([[0, 2]]));
    assert_eq!(v["position"]["input_rows"], json!([[1, 4]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    // a transposed conv's output_padding at least its stride and dilation is refused
    let bad = json!({"input_shape": [1, 3, 4, 4], "layers": [
        {"type": "conv_transpose3d", "out_channels": 2, "kernel_size": 2, "stride": 2, "output_padding": [0, 2, 0]}]});
    let r = post("/v1/complexity", json!({"model": bad})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json()["pointer"], "/model/layers/0/output_padding");
}

/// Upsampling a volume. Nearest by an int factor 2 (every axis) on [1, 2, 3, 3]: output slice k
/// copies input slice floor(k/2). Trilinear by 2 on [1, 4, 4, 4] (align_corners false): output
/// k reads the neighbours of (k + 0.5)/2 - 0.5 clamped at 0, floor((2k - 1)/4) ..= floor((2k +
/// 2)/4), the last clamped to the input: unit [3, 0, 7] reads slices 1..=2, row 0, column 3.
/// Each of its 512 outputs weighs eight inputs: 4096 multiplications, 3584 additions; ptflops
/// counts each output twice (nn.Upsample's hook and F.interpolate's), fvcore has no handle for
/// aten::upsample_trilinear3d (the row says so), FlopCounterMode none. The interpolation
/// weights make the probe run in float64.
#[tokio::test]
async fn upsampling_a_volume_by_hand() {
    let nearest = json!({"input_shape": [1, 2, 3, 3], "layers": [{"type": "upsample", "scale_factor": 2, "name": "up"}]});
    let r = post("/v1/receptive-field", json!({"model": nearest, "position": {"index": [3, 0, 5]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let up = item(&v["layers"], "name", "up");
    assert_eq!(up["output_shape"], json!([1, 4, 6, 6]));
    assert_eq!(up["rational"]["depth"]["text"], "floor(k/2) <= p <= floor(k/2)");
    assert_eq!(v["position"]["input_slices"], json!([[1, 1]]));
    assert_eq!(v["position"]["input_cols"], json!([[2, 2]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["verification"]["dtype"], "float32");

    let tri = json!({"input_shape": [1, 4, 4, 4], "layers": [
        {"type": "upsample", "scale_factor": [2, 2, 2], "mode": "trilinear", "name": "up"}]});
    let r = post("/v1/receptive-field", json!({"model": tri, "position": {"index": [3, 0, 7]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["position"]["input_slices"], json!([[1, 2]]));
    assert_eq!(v["position"]["input_rows"], json!([[0, 0]]));
    assert_eq!(v["position"]["input_cols"], json!([[3, 3]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["verification"]["dtype"], "float64");
    let t = post("/v1/complexity", json!({"model": tri, "verify": true})).await.json();
    let row = item(&t["rows"], "name", "up");
    assert_eq!(
        (row["multiplications"].clone(), row["additions"].clone()),
        (json!(4096), json!(3584))
    );
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    for (profile, flops) in [("ptflops", 1024), ("fvcore", 0), ("torch_flop_counter", 0)] {
        let p = post("/v1/complexity", json!({"model": tri, "profile": profile, "verify": false}))
            .await
            .json();
        assert_eq!(item(&p["rows"], "name", "up")["flops"], flops, "{profile}");
    }
    let p = post("/v1/complexity", json!({"model": tri, "profile": "fvcore", "verify": false}))
        .await
        .json();
    assert!(item(&p["rows"], "name", "up")["note"]
        .as_str()
        .unwrap()
        .contains("upsample_trilinear3d"));

    // the mode and the number of sizes must fit the input's axes
    for (model, pointer) in [
        (
            json!({"input_shape": [1, 4, 4, 4], "layers": [{"type": "upsample", "scale_factor": 2, "mode": "bilinear"}]}),
            "/model/layers/0/mode",
        ),
        (
            json!({"input_shape": [1, 4, 4], "layers": [{"type": "upsample", "scale_factor": 2, "mode": "trilinear"}]}),
            "/model/layers/0/mode",
        ),
        (
            json!({"input_shape": [1, 4, 4, 4], "layers": [{"type": "upsample", "scale_factor": [2, 2]}]}),
            "/model/layers/0/scale_factor",
        ),
        (
            json!({"input_shape": [1, 4, 4], "layers": [{"type": "upsample", "size": [8, 8, 8]}]}),
            "/model/layers/0/size",
        ),
        (
            json!({"input_shape": [1, 4, 4, 4], "layers": [{"type": "upsample", "scale_factor": 3, "mode": "trilinear"}]}),
            "/model/layers/0/scale_factor",
        ),
    ] {
        let r = post("/v1/complexity", json!({"model": model})).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.json()["pointer"], pointer, "{}", r.text);
    }
}

/// layernorm on a volume [2, 3, 4, 5] (N = 120 elements) over its last axes: over [W] each
/// output reads its own slice, row and channel and every column (no affine range: `not_affine`),
/// S = 2*3*4 = 24 statistics, so 3N + S + N = 504 additions and 2N + 3S + N = 432
/// multiplications with its affine weight and bias; over [C, D, H, W] every element (`global`).
#[tokio::test]
async fn layernorm_of_a_volume_by_hand() {
    let last = json!({"input_shape": [2, 3, 4, 5], "layers": [{"type": "layernorm", "normalized_shape": [5], "name": "ln"}]});
    let r = post(
        "/v1/receptive-field",
        json!({"model": last, "position": {"index": [1, 2, 3], "channel": 1}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let ln = item(&v["layers"], "name", "ln");
    assert_eq!(ln["kind"], "not_affine", "{ln}");
    assert!(ln["note"].as_str().unwrap().contains("width"), "{ln}");
    assert_eq!(v["position"]["input_channels"], json!([[1, 1]]));
    assert_eq!(v["position"]["input_slices"], json!([[1, 1]]));
    assert_eq!(v["position"]["input_rows"], json!([[2, 2]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 4]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    let t = post("/v1/complexity", json!({"model": last, "verify": true})).await.json();
    let row = item(&t["rows"], "name", "ln");
    assert_eq!((row["additions"].clone(), row["multiplications"].clone()), (json!(504), json!(432)));
    assert_eq!(row["params"], 10);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);

    let all = json!({"input_shape": [2, 3, 4, 5], "layers": [{"type": "layernorm", "normalized_shape": [2, 3, 4, 5], "name": "ln"}]});
    let v = post("/v1/receptive-field", json!({"model": all, "position": {"index": [0, 0, 0]}}))
        .await
        .json();
    assert_eq!(item(&v["layers"], "name", "ln")["kind"], "global");
    assert_eq!(v["position"]["input_channels"], json!([[0, 1]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 4]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    // (diagnostics need a weighted layer: a 1x1x1 conv3d first)
    let weighted = json!({"input_shape": [2, 3, 4, 5], "layers": [
        {"type": "conv3d", "out_channels": 2, "kernel_size": 1}, {"type": "layernorm", "normalized_shape": [2, 3, 4, 5]}]});
    let d = post("/v1/gradient-diagnostics", json!({"model": weighted, "inputs": {"batch_size": 2}})).await;
    assert_eq!(d.status, 200, "{}", d.text);
}

/// Grading a volume's ranges with floors: a 3x3x3 conv (padding 1) then a stride-2 3x3x3
/// transposed conv. By hand, output o of the transposed conv reads inputs x with 2x + t = o
/// (t in 0..3): ceil((o-2)/2) = floor((o-1)/2) <= x <= floor(o/2); the conv widens that by one:
/// floor((k-1)/2)-1 <= p <= floor(k/2)+1 on every axis (zero-based), 3 or 4 positions, jump 1/2.
#[tokio::test]
async fn grading_a_volumes_ranges_with_floors() {
    let model = json!({"input_shape": [1, 3, 4, 4], "layers": [
        {"type": "conv3d", "out_channels": 2, "kernel_size": 3, "padding": 1},
        {"name": "up", "type": "conv_transpose3d", "out_channels": 2, "kernel_size": 3, "stride": 2}]});
    let q = |id: &str, ask: &str, answer: &str| {
        let mut q = rf_question(&model, id, ask, answer);
        q["index_base"] = json!(0);
        q
    };
    let v = post(
        "/v1/grade",
        json!({"questions": [
            q("slices", "slices of layer up", "ceil(k/2)-2 <= p <= floor(k/2)+1"),
            q("rows", "rows of layer up", "floor((i-1)/2)-1 <= m <= i//2+1"),
            q("cols", "cols of layer up", "[floor((j+1)/2)-2, floor(j/2)+1]"),
            q("jump", "jump of layer up", "1/2"),
            q("min", "min size of layer up", "3"),
            q("max", "max size of layer up", "4"),
            // at k = 0 the lower end is floor(-1/2) - 1 = -2 (the padding before slice 0): -1 is
            // one too high
            q("wrong", "slices of layer up", "floor(k/2)-1 <= p <= floor(k/2)+1")]}),
    )
    .await
    .json();
    for id in ["slices", "rows", "cols", "jump", "min", "max"] {
        assert_eq!(
            item(&v["questions"], "id", id)["correct"],
            true,
            "{id}: {}",
            item(&v["questions"], "id", id)
        );
    }
    let wrong = item(&v["questions"], "id", "wrong");
    assert_eq!(wrong["correct"], false, "{wrong}");
    assert!(
        wrong["feedback"]
            .as_str()
            .unwrap()
            .contains("lower end is wrong at k = 0: yours gives -1, which is too high"),
        "{wrong}"
    );
}
