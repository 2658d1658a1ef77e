mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn vgg_stem_one_based_answers_match_the_course() {
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "vgg_stem"}, "index_base": 1, "verify": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let text = |i: usize, axis: &str| v["layers"][i]["receptive_field"][axis]["text"].as_str().unwrap().to_string();
    assert_eq!(text(0, "height"), "i-1 <= m <= i+1");
    assert_eq!(text(2, "height"), "i-2 <= m <= i+2");
    assert_eq!(text(4, "height"), "2i-3 <= m <= 2i+2");
    assert_eq!(text(7, "height"), "2i-7 <= m <= 2i+6");
    assert_eq!(text(9, "height"), "4i-9 <= m <= 4i+6");
    assert_eq!(text(9, "width"), "4j-9 <= n <= 4j+6");
    assert_eq!(v["layers"][9]["receptive_field"]["height"]["size"], 16);
}

#[tokio::test]
async fn a_position_is_clipped_to_the_image_and_verified_in_libtorch() {
    // pool2 output row 1 (one-based): 4*1-9 = -5 ..= 10, clipped to 1..=10; 6 rows fall outside.
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "vgg_stem"}, "index_base": 1, "position": {"layer": "pool2", "index": [1, 56]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let p = &v["position"];
    assert_eq!(p["affine"]["rows"], json!([-5, 10]));
    assert_eq!(p["clipped"]["rows"], json!([1, 10]));
    assert_eq!(p["input_rows"], json!([[1, 10]]));
    // column 56: 4*56-9 = 215 ..= 230, clipped to 215..=224
    assert_eq!(p["input_cols"], json!([[215, 224]]));
    assert_eq!(p["input_channels"], json!([[1, 3]]));
    assert_eq!(p["padding"]["rows_outside_image"], 6);
    assert_eq!(v["verification"]["ran"], true);
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    // whole-number path counts: the probe ran in float32
    assert_eq!(v["verification"]["dtype"], "float32");
}

/// Bilinear weights are fractions: that probe runs in float64, and agrees.
#[tokio::test]
async fn a_probe_with_fractional_weights_runs_in_float64() {
    let model = json!({"input_shape": [2, 9, 7], "layers": [
        {"type": "conv2d", "out_channels": 3, "kernel_size": 3},
        {"type": "upsample", "scale_factor": 2, "mode": "bilinear"},
        {"type": "conv2d", "out_channels": 1, "kernel_size": 2}]});
    let r = post("/v1/receptive-field", json!({"model": model, "position": {"index": [5, 4]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["verification"]["dtype"], "float64", "{}", v["verification"]);
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
}

#[tokio::test]
async fn dilation_leaves_holes_that_the_answer_reports() {
    let model = json!({"input_shape": [1, 20, 20], "layers": [
        {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "dilation": 2},
        {"type": "conv2d", "out_channels": 1, "kernel_size": 2, "dilation": 3}]});
    let r = post("/v1/receptive-field", json!({"model": model, "position": {"index": [0, 0]}})).await;
    let v = r.json();
    // rows {0,3} through the second conv, then {r, r+2, r+4}: {0,2,3,4,5,7}
    assert_eq!(v["position"]["input_rows"], json!([[0, 0], [2, 5], [7, 7]]));
    assert_eq!(v["position"]["tight_box"]["rows"], json!([0, 7]));
    assert_eq!(v["verification"]["agrees"], true);
}

#[tokio::test]
async fn branches_and_paths() {
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "inception_reduced"}, "position": {"layer": "0.branches.2.2", "index": [0, 0]}}),
    )
    .await;
    let v = r.json();
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = &v["layers"];
    let concat = rows.as_array().unwrap().iter().find(|l| l["path"] == "0").unwrap();
    assert_eq!(concat["aligned"], true);
    assert_eq!(concat["receptive_field"]["height"]["size"], 5);
    assert_eq!(concat["branches"].as_array().unwrap().len(), 4);
    // 1x1 then 5x5 (pad 2) at the corner: rows 0..=2
    assert_eq!(v["position"]["input_rows"], json!([[0, 2]]));
    assert_eq!(v["verification"]["agrees"], true);
}

#[tokio::test]
async fn bad_positions_name_the_field() {
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "vgg_stem"}, "position": {"layer": 9, "index": [56, 0]}}),
    )
    .await;
    assert_problem(&r, 422, "/position/index/0");
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "vgg_stem"}, "index_base": 1, "position": {"layer": 9, "index": [0, 1]}}),
    )
    .await;
    assert_problem(&r, 422, "/position/index/0");
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "vgg_stem"}, "position": {"layer": "nope"}}),
    )
    .await;
    assert_problem(&r, 422, "/position/layer");
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "vgg_stem"}, "position": {"layer": 99}}),
    )
    .await;
    assert_problem(&r, 422, "/position/layer");
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"preset": "vgg_stem"}, "position": {"index": [1]}}),
    )
    .await;
    assert_problem(&r, 422, "/position/index");
    let r = post("/v1/receptive-field", json!({"model": {"preset": "vgg_stem"}, "device": "cuda:7"})).await;
    if !tch::Cuda::is_available() {
        assert_problem(&r, 422, "/device");
    }
}

#[tokio::test]
async fn a_global_layer_has_no_affine_range_but_an_exact_answer() {
    let model = json!({"input_shape": [2, 6, 6], "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "flatten"}, {"type": "linear", "out_features": 3}]});
    let r = post("/v1/receptive-field", json!({"model": model, "position": {"index": [1]}})).await;
    let v = r.json();
    assert_eq!(v["layers"][2]["kind"], "global");
    assert_eq!(v["position"]["input_rows"], json!([[0, 5]]));
    assert_eq!(v["verification"]["agrees"], true);
}

/// Exact sets through a transposed convolution and a nearest upsampling, by hand, and the
/// per-layer table: a stride-1 transposed conv is a window (k=3, padding 0: output i reads
/// inputs i-2..i), strides above 1 and upsampling have no integer-affine range.
#[tokio::test]
async fn transposed_convolutions_and_upsampling_by_hand() {
    let model = json!({"input_shape": [1, 4, 4], "layers": [
        {"type": "conv_transpose2d", "out_channels": 1, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
        {"type": "upsample", "scale_factor": 2},
        {"type": "conv_transpose2d", "out_channels": 1, "kernel_size": 3}
    ]});
    let at = |layer: u64, i: u64, j: u64| {
        let model = model.clone();
        async move {
            let v = post(
                "/v1/receptive-field",
                json!({"model": model, "position": {"layer": layer, "index": [i, j]}}),
            )
            .await
            .json();
            assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
            v
        }
    };
    // output o of the first layer reads inputs x with 2x - 1 + t = o, t in 0..3
    let v = at(0, 0, 1).await;
    assert_eq!(v["position"]["input_rows"], json!([[0, 0]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 1]]));
    let v = at(0, 7, 4).await;
    assert_eq!(v["position"]["input_rows"], json!([[3, 3]]));
    assert_eq!(v["position"]["input_cols"], json!([[2, 2]]));
    // upsampled row 5 is row 2 of the 8x8, which only x = 1 reaches (2*1 - 1 + 1); column 15
    // is column 7, reached by x = 3 with the last tap
    let v = at(1, 5, 15).await;
    assert_eq!(v["position"]["input_rows"], json!([[1, 1]]));
    assert_eq!(v["position"]["input_cols"], json!([[3, 3]]));
    // the per-layer ranges have floors: output o of the first layer reads
    // ceil((o + 1 - 2)/2) ..= floor((o + 1)/2), then upsampling by 2 puts o/2 inside
    let kinds: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rational", "rational", "rational"]);
    let text = |l: usize| v["layers"][l]["rational"]["height"]["text"].as_str().unwrap().to_string();
    assert_eq!(text(0), "floor(i/2) <= m <= floor((i+1)/2)");
    assert_eq!(text(1), "floor(i/4) <= m <= floor((i+2)/4)");
    // a stride-1 transposed conv (k=3) reads o-2..o: floor((i-2)/4) .. floor((i+2)/4)
    assert_eq!(text(2), "floor((i-2)/4) <= m <= floor((i+2)/4)");
    let axis = &v["layers"][0]["rational"]["height"];
    assert_eq!(
        (axis["jump"].clone(), axis["min_size"].clone(), axis["max_size"].clone()),
        (json!("1/2"), json!(1), json!(2))
    );
    // the unit (5, 15) of layer 1: rows floor(5/4)..floor(7/4), cols floor(15/4)..floor(17/4)
    assert_eq!(v["position"]["affine"], json!({"rows": [1, 1], "cols": [3, 4]}));
    // one-based: i0 = i1 - 1, m1 = m0 + 1
    let one = post("/v1/receptive-field", json!({"model": model, "index_base": 1})).await.json();
    assert_eq!(
        one["layers"][0]["rational"]["height"]["text"],
        "floor((i-1)/2)+1 <= m <= floor(i/2)+1"
    );
    let single = json!({"input_shape": [1, 6, 6], "layers": [{"type": "conv_transpose2d", "out_channels": 1, "kernel_size": 3}]});
    let v = post("/v1/receptive-field", json!({"model": single, "position": {"index": [4, 0]}}))
        .await
        .json();
    assert_eq!(v["layers"][0]["receptive_field"]["height"]["text"], "i-2 <= m <= i");
    assert_eq!(v["model"]["output_shape"], json!([1, 8, 8]));
    assert_eq!(v["position"]["input_rows"], json!([[2, 4]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 0]]));
}

/// What a normalization or softmax couples, by hand: a softmax over the channels keeps the
/// spatial range and takes every channel; a layer norm over the width takes the whole row; a
/// group norm takes its group's channels everywhere (global).
#[tokio::test]
async fn normalizations_couple_what_their_statistics_read() {
    let at = |layers: Value, index: [u64; 2], channel: u64| async move {
        let v = post(
            "/v1/receptive-field",
            json!({"model": {"input_shape": [4, 6, 5], "layers": layers}, "position": {"index": index, "channel": channel}}),
        )
        .await
        .json();
        assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
        v
    };
    let conv = json!({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 4});
    let v = at(json!([conv, {"type": "softmax", "dim": 1}]), [2, 3], 1).await;
    assert_eq!(v["position"]["input_channels"], json!([[0, 3]]));
    assert_eq!(v["position"]["input_rows"], json!([[1, 3]]));
    assert_eq!(v["layers"][1]["receptive_field"]["height"]["text"], "i-1 <= m <= i+1");
    let v = at(json!([conv, {"type": "layernorm", "normalized_shape": 5}]), [2, 3], 1).await;
    assert_eq!(v["position"]["input_channels"], json!([[1, 1]]));
    assert_eq!(v["position"]["input_rows"], json!([[1, 3]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 4]]));
    assert_eq!(v["layers"][1]["kind"], "not_affine");
    let v = at(json!([conv, {"type": "groupnorm", "num_groups": 2}]), [0, 0], 3).await;
    assert_eq!(v["position"]["input_channels"], json!([[2, 3]]));
    assert_eq!(v["position"]["input_rows"], json!([[0, 5]]));
    assert_eq!(v["layers"][1]["kind"], "global");
}

/// padding_mode reflect and replicate, by hand: a 2x2 conv with padding 1 at unit (0, 0) reads
/// padded rows -1..0; reflection reads row 1 for row -1, replication row 0.
#[tokio::test]
async fn reflect_and_replicate_padding_read_the_image_again() {
    let at = |mode: &str| {
        let model = json!({"input_shape": [1, 4, 4], "layers": [
            {"type": "conv2d", "out_channels": 1, "kernel_size": 2, "padding": 1, "padding_mode": mode}]});
        async move {
            let v = post("/v1/receptive-field", json!({"model": model, "position": {"index": [0, 0]}}))
                .await
                .json();
            assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
            v
        }
    };
    let v = at("reflect").await;
    assert_eq!(v["position"]["input_rows"], json!([[0, 1]]));
    assert_eq!(v["position"]["clipped"]["rows"], json!([0, 0]));
    assert!(
        v["position"]["notes"].to_string().contains("reflect, replicate or circular"),
        "{}",
        v["position"]
    );
    let v = at("replicate").await;
    assert_eq!(v["position"]["input_rows"], json!([[0, 0]]));
    let v = at("zeros").await;
    assert_eq!(v["position"]["input_rows"], json!([[0, 0]]));
    // the bottom edge: unit (4, 4) reads padded rows 3..4; reflection reads row 2 for row 4
    let model = json!({"input_shape": [1, 4, 4], "layers": [
        {"type": "conv2d", "out_channels": 1, "kernel_size": 2, "padding": 1, "padding_mode": "reflect"}]});
    let v = post("/v1/receptive-field", json!({"model": model, "position": {"index": [4, 4]}}))
        .await
        .json();
    assert_eq!(v["position"]["input_rows"], json!([[2, 3]]));
    // PyTorch refuses reflection as wide as the input, and circular padding that wraps twice
    let bad = |pad: u64, mode: &str| {
        json!({"model": {"input_shape": [1, 3, 3], "layers": [
        {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": pad, "padding_mode": mode}]}})
    };
    assert_problem(
        &post("/v1/receptive-field", bad(3, "reflect")).await,
        422,
        "/model/layers/0/padding",
    );
    assert_problem(
        &post("/v1/receptive-field", bad(4, "circular")).await,
        422,
        "/model/layers/0/padding",
    );
    assert_problem(
        &post("/v1/receptive-field", bad(1, "mirror")).await,
        422,
        "/model/layers/0/padding_mode",
    );
}

/// Bilinear upsampling by 2 (align_corners false), by hand: output row i reads the neighbours of
/// (i + 0.5)/2 - 0.5, clamped at 0; a neighbour with weight zero (at the clamped first row, past
/// the last) is not read. Its range: floor((2i-1)/4) <= m <= floor((i+1)/2).
#[tokio::test]
async fn bilinear_upsampling_reads_the_two_neighbours() {
    let model = json!({"input_shape": [1, 4, 4], "layers": [{"type": "upsample", "scale_factor": 2, "mode": "bilinear"}]});
    let at = |i: u64, j: u64| {
        let model = model.clone();
        async move {
            let v = post("/v1/receptive-field", json!({"model": model, "position": {"index": [i, j]}}))
                .await
                .json();
            assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
            v
        }
    };
    let v = at(0, 1).await;
    assert_eq!(v["position"]["input_rows"], json!([[0, 0]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 1]]));
    let v = at(4, 7).await;
    assert_eq!(v["position"]["input_rows"], json!([[1, 2]]));
    assert_eq!(v["position"]["input_cols"], json!([[3, 3]]));
    assert_eq!(
        v["layers"][0]["rational"]["height"]["text"],
        "floor((2i-1)/4) <= m <= floor((i+1)/2)"
    );
    let t = post("/v1/complexity", json!({"model": model, "verify": false})).await.json();
    assert_eq!(t["rows"][0]["multiplications"], 4 * 64);
    assert_eq!(t["rows"][0]["additions"], 3 * 64);
    let bad = |extra: Value| {
        let mut layer = json!({"type": "upsample", "mode": "bilinear", "scale_factor": 3});
        for (k, v) in extra.as_object().unwrap() {
            layer[k] = v.clone();
        }
        json!({"model": {"input_shape": [1, 4, 4], "layers": [layer]}})
    };
    assert_problem(
        &post("/v1/receptive-field", bad(json!({}))).await,
        422,
        "/model/layers/0/scale_factor",
    );
    assert_problem(
        &post("/v1/receptive-field", bad(json!({"scale_factor": 2, "align_corners": "yes"}))).await,
        422,
        "/model/layers/0/align_corners",
    );
}

/// Upsampling by any factor or to any size, by hand from ATen's float32 arithmetic
/// (`ATen/native/UpSample.h`; tests/oracle/check.py `interp` checks every form against autograd
/// in float32 and float64).
#[tokio::test]
async fn upsampling_by_any_factor_by_hand() {
    let rows = |layer: Value, input: Value, i: u64| async move {
        let v = post(
            "/v1/receptive-field",
            json!({"model": {"input_shape": input, "layers": [layer]}, "position": {"index": [i, 0]}}),
        )
        .await
        .json();
        assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
        (v["position"]["input_rows"].clone(), v["layers"][0].clone())
    };
    // nearest by 1.5: 5 rows to floor(7.5) = 7, row o reads floorf(o * 0.6666667):
    // 0, 0, 1, 2, 2, 3, 4
    let nearest = json!({"type": "upsample", "scale_factor": 1.5});
    for (o, m) in [0, 0, 1, 2, 2, 3, 4].into_iter().enumerate() {
        let (got, layer) = rows(nearest.clone(), json!([1, 5, 2]), o as u64).await;
        assert_eq!(got, json!([[m, m]]), "output row {o}");
        assert_eq!(layer["output_shape"], json!([1, 7, 3]));
        assert_eq!(layer["rational"]["height"]["text"], "floor(2i/3) <= m <= floor(2i/3)");
    }
    // bilinear from 2 rows to 3 (a size): (o + 0.5) * 2/3 - 0.5 = 0, 0.5, 1.1667 (clamped to
    // the last row): row 0 alone, rows 0 and 1, row 1 alone
    let to3 = json!({"type": "upsample", "mode": "bilinear", "size": [3, 1]});
    for (o, want) in [json!([[0, 0]]), json!([[0, 1]]), json!([[1, 1]])].into_iter().enumerate() {
        assert_eq!(rows(to3.clone(), json!([1, 2, 1]), o as u64).await.0, want, "output row {o}");
    }
    // align_corners from 5 rows to 9: o * 4/8, on a row at even o, between two at odd o
    let corners = json!({"type": "upsample", "mode": "bilinear", "size": [9, 1], "align_corners": true});
    for o in 0..9u64 {
        let (got, layer) = rows(corners.clone(), json!([1, 5, 1]), o).await;
        assert_eq!(got, json!([[o / 2, o.div_ceil(2)]]), "output row {o}");
        assert_eq!(layer["rational"]["height"]["text"], "floor(i/2) <= m <= floor((i+1)/2)");
    }
    // by 3, output row 1 sits exactly on input row 0: float32 rounds 1/3 * 1.5 back to 0.5 (row
    // 0 alone), fused with the subtraction it leaves 1.5e-8 (rows 0 and 1): refused
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"input_shape": [1, 4, 4], "layers": [{"type": "upsample", "mode": "bilinear", "scale_factor": 3}]}}),
    )
    .await;
    assert_problem(&r, 422, "/model/layers/0/scale_factor");
    assert!(
        r.text
            .contains("output position 1 reads input row 0 in float32 and rows 0 and 1 in float32 with a fused multiply-add"),
        "{}",
        r.text
    );
    // an empty output is PyTorch's error too
    assert_problem(
        &post(
            "/v1/receptive-field",
            json!({"model": {"input_shape": [1, 1, 4], "layers": [{"type": "upsample", "scale_factor": 0.5}]}}),
        )
        .await,
        422,
        "/model/layers/0/scale_factor",
    );
    // ptflops: nn.Upsample's hook counts the output (13 x 15 = 195); F.interpolate's counts the
    // input (9 x 10 = 90) times 1.5 ** 2 = 202.5 for one number (a float in nn.Upsample), times
    // int(1.5) * int(1.5) = 1 for a list (a tuple, its product cast to int64)
    for (factor, flops, note) in [(json!(1.5), 195 + 202, true), (json!([1.5, 1.5]), 195 + 90, false)] {
        let t = post(
            "/v1/complexity",
            json!({"model": {"input_shape": [1, 9, 10], "layers": [{"type": "upsample", "scale_factor": factor}]}, "profile": "ptflops", "verify": false}),
        )
        .await
        .json();
        assert_eq!(t["rows"][0]["flops"], flops, "{factor}");
        assert_eq!(
            t["rows"][0]["note"].as_str().is_some_and(|n| n.contains("counts 202.5 here")),
            note,
            "{}",
            t["rows"][0]
        );
    }
}

/// x.mean(...) as a forward writes it, by hand: over [2, 3] each feature reads its channel's
/// whole map; over the channels (keepdim) each position reads every channel there.
#[tokio::test]
async fn means_over_positions_and_channels() {
    let conv = json!({"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 4});
    let v = post(
        "/v1/receptive-field",
        json!({"model": {"input_shape": [4, 6, 5], "layers": [conv, {"type": "mean", "dim": [2, 3]}]}, "position": {"index": [2]}}),
    )
    .await
    .json();
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["position"]["input_channels"], json!([[2, 2]]));
    assert_eq!(v["position"]["input_rows"], json!([[0, 5]]));
    assert_eq!(v["layers"][1]["kind"], "not_affine");
    let v = post(
        "/v1/receptive-field",
        json!({"model": {"input_shape": [4, 6, 5], "layers": [conv, {"type": "mean", "dim": 1, "keepdim": true}]}, "position": {"index": [2, 3]}}),
    )
    .await
    .json();
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["position"]["input_channels"], json!([[0, 3]]));
    assert_eq!(v["position"]["input_rows"], json!([[1, 3]]));
    assert_eq!(v["layers"][1]["receptive_field"]["height"]["text"], "i-1 <= m <= i+1");
    // a mean over the width with keepdim: a window as wide as the map
    let v = post(
        "/v1/receptive-field",
        json!({"model": {"input_shape": [4, 6, 5], "layers": [{"type": "mean", "dim": -1, "keepdim": true}]}, "position": {"index": [2, 0]}}),
    )
    .await
    .json();
    assert_eq!(v["position"]["input_cols"], json!([[0, 4]]));
    assert_eq!(v["position"]["input_rows"], json!([[2, 2]]));
    assert_eq!(v["model"]["output_shape"], json!([4, 6, 1]));
    // counts: a sum over each output's inputs and one division
    let t = post(
        "/v1/complexity",
        json!({"model": {"input_shape": [4, 6, 5], "layers": [{"type": "mean", "dim": [2, 3]}]}, "verify": false}),
    )
    .await
    .json();
    assert_eq!(
        (t["rows"][0]["additions"].clone(), t["rows"][0]["multiplications"].clone()),
        (json!(4 * 30 - 4), json!(4))
    );
    // not yet: a rank-2 result
    assert_problem(
        &post(
            "/v1/complexity",
            json!({"model": {"input_shape": [4, 6, 5], "layers": [{"type": "mean", "dim": 2}]}}),
        )
        .await,
        422,
        "/model/layers/0/keepdim",
    );
}

/// Padding layers, by hand: ReflectionPad2d((1, 0, 2, 0)) before a 3x3 conv on 1x4x4: output
/// row 0 reads padded rows 0..2, which are rows 2, 1 of the input (reflected) and row 0; the
/// conv's unit (0, 0) reads padded columns 0..2 = input columns 1, 0, 1.
#[tokio::test]
async fn padding_layers_hold_zeros_or_the_image() {
    let model = |kind: &str| {
        json!({"input_shape": [1, 4, 4], "layers": [
            {"type": kind, "padding": [1, 0, 2, 0]},
            {"type": "conv2d", "out_channels": 1, "kernel_size": 3}]})
    };
    let at = |kind: &str| {
        let m = model(kind);
        async move {
            let v = post("/v1/receptive-field", json!({"model": m, "position": {"index": [0, 0]}}))
                .await
                .json();
            assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
            v
        }
    };
    let v = at("reflectionpad2d").await;
    assert_eq!(v["model"]["output_shape"], json!([1, 4, 3]));
    assert_eq!(v["position"]["input_rows"], json!([[0, 2]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 1]]));
    let v = at("replicationpad2d").await;
    assert_eq!(v["position"]["input_rows"], json!([[0, 0]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 1]]));
    let v = at("zeropad2d").await;
    assert_eq!(v["position"]["input_rows"], json!([[0, 0]]));
    assert_eq!(v["position"]["input_cols"], json!([[0, 1]]));
    // the padding layer's own range: output row i is input row i-2
    assert_eq!(v["layers"][0]["receptive_field"]["height"]["text"], "i-2 <= m <= i-2");
    let t = post("/v1/complexity", json!({"model": model("reflectionpad2d")})).await.json();
    assert_eq!(t["rows"][0]["output_shape"], json!([1, 6, 5]));
    assert_eq!(t["totals"]["params"], 10);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
}
