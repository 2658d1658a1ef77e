mod common;
use common::*;
use serde_json::{json, Value};

fn row<'a>(v: &'a Value, path: &str) -> &'a Value {
    item(&v["rows"], "path", path)
}

#[tokio::test]
async fn naive_inception_table_by_hand() {
    let r = post("/v1/complexity", json!({"model": {"preset": "inception_naive"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    // params: k*k*256*out + out
    assert_eq!(row(&v, "0.branches.0")["params"], 256 * 128 + 128); // 32,896
    assert_eq!(row(&v, "0.branches.1")["params"], 9 * 256 * 192 + 192); // 442,560
    assert_eq!(row(&v, "0.branches.2")["params"], 25 * 256 * 96 + 96); // 614,496
    assert_eq!(row(&v, "0.branches.3")["params"], 0);
    assert_eq!(v["totals"]["params"], 1_089_952);
    // multiplications: 32*32 outputs * out channels * k*k*256
    assert_eq!(row(&v, "0.branches.0")["multiplications"], 1024u64 * 128 * 256);
    assert_eq!(row(&v, "0.branches.1")["multiplications"], 1024u64 * 192 * 9 * 256);
    assert_eq!(row(&v, "0.branches.2")["multiplications"], 1024u64 * 96 * 25 * 256);
    assert_eq!(v["totals"]["multiplications"], 1_115_684_864u64);
    assert_eq!(v["totals"]["additions"], 1_116_110_848u64);
    assert_eq!(v["totals"]["activations"], 425_984);
    // max pool: 8 comparisons per output, 256*32*32 outputs
    assert_eq!(row(&v, "0.branches.3.0")["comparisons"], 8 * 256 * 1024);
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
}

#[tokio::test]
async fn reduced_inception_table_by_hand() {
    let r = post("/v1/complexity", json!({"model": {"preset": "inception_reduced"}})).await;
    let v = r.json();
    assert_eq!(row(&v, "0.branches.0")["params"], 32_896);
    assert_eq!(row(&v, "0.branches.1")["params"], (256 * 64 + 64) + (9 * 64 * 192 + 192)); // 127,232
    assert_eq!(row(&v, "0.branches.2")["params"], (256 * 64 + 64) + (25 * 64 * 96 + 96)); // 170,144
    assert_eq!(row(&v, "0.branches.3")["params"], 256 * 64 + 64); // 16,448
    assert_eq!(v["totals"]["params"], 346_720);
    assert_eq!(v["totals"]["multiplications"], 354_418_688u64);
    assert_eq!(v["totals"]["additions"], 355_041_280u64);
    assert_eq!(v["totals"]["activations"], 622_592);
    assert_eq!(v["verification"]["agrees"], true);
}

#[tokio::test]
async fn conventions_and_profiles_change_only_what_they_name() {
    let base = post("/v1/complexity", json!({"model": {"preset": "resnet18"}, "verify": false}))
        .await
        .json();
    let exact = post(
        "/v1/complexity",
        json!({"model": {"preset": "resnet18"}, "verify": false, "conventions": {"additions": "exact"}}),
    )
    .await
    .json();
    // exact saves one addition per output of every conv/linear; resnet18 convs have no bias.
    let mults = base["totals"]["multiplications"].as_u64().unwrap();
    assert!(exact["totals"]["additions"].as_u64().unwrap() < base["totals"]["additions"].as_u64().unwrap());
    assert_eq!(base["totals"]["multiplications"], exact["totals"]["multiplications"]);
    let tv = post(
        "/v1/complexity",
        json!({"model": {"preset": "resnet18"}, "verify": false, "profile": "torchvision"}),
    )
    .await
    .json();
    let tfc = post(
        "/v1/complexity",
        json!({"model": {"preset": "resnet18"}, "verify": false, "profile": "torch_flop_counter"}),
    )
    .await
    .json();
    let gmacs = tv["totals"]["flops"].as_u64().unwrap() as f64 / 1e9;
    assert_eq!((gmacs * 1000.0).round() / 1000.0, 1.814); // torchvision's published GFLOPS
    assert_eq!(
        tfc["totals"]["flops"].as_u64().unwrap(),
        2 * tv["totals"]["flops"].as_u64().unwrap()
    );
    assert!(mults > tv["totals"]["flops"].as_u64().unwrap()); // batchnorm multiplications are in mults, not in MACs of conv/linear
    let r = post(
        "/v1/complexity",
        json!({"model": {"preset": "resnet18"}, "profile": "torchvision", "conventions": {"flops": "mac"}}),
    )
    .await;
    assert_problem(&r, 422, "/profile");
}

#[tokio::test]
async fn batch_and_dtype_scale_operations_and_memory_not_params() {
    let one = post("/v1/complexity", json!({"model": {"preset": "vgg_stem"}, "verify": false}))
        .await
        .json();
    let four = post(
        "/v1/complexity",
        json!({"model": {"preset": "vgg_stem"}, "verify": false, "batch_size": 4, "dtype": "float16"}),
    )
    .await
    .json();
    assert_eq!(one["totals"]["params"], four["totals"]["params"]);
    assert_eq!(
        four["totals"]["flops"].as_u64().unwrap(),
        4 * one["totals"]["flops"].as_u64().unwrap()
    );
    assert_eq!(
        four["totals"]["output_bytes"].as_u64().unwrap(),
        2 * one["totals"]["output_bytes"].as_u64().unwrap()
    );
    // first conv output 64x224x224 float32
    assert_eq!(row(&one, "0")["output_bytes"], 64 * 224 * 224 * 4);
}

#[tokio::test]
async fn csv_and_markdown_parse_back_to_the_json_numbers() {
    let v = post("/v1/complexity", json!({"model": {"preset": "inception_reduced"}, "verify": false}))
        .await
        .json();
    let csv = post(
        "/v1/complexity?format=csv",
        json!({"model": {"preset": "inception_reduced"}, "verify": false}),
    )
    .await;
    assert!(csv.content_type.starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    assert_eq!(lines.len(), v["rows"].as_array().unwrap().len() + 2);
    for (line, r) in lines[1..].iter().zip(v["rows"].as_array().unwrap()) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[col("path")], r["path"].as_str().unwrap());
        assert_eq!(cells[col("params")].parse::<u64>().unwrap(), r["params"].as_u64().unwrap());
        assert_eq!(cells[col("additions")].parse::<u64>().unwrap(), r["additions"].as_u64().unwrap());
    }
    let total: Vec<&str> = lines.last().unwrap().split(',').collect();
    assert_eq!(total[col("params")], "346720");
    assert_eq!(total[col("multiplications")], "354418688");

    let md = post(
        "/v1/complexity",
        json!({"model": {"preset": "inception_reduced"}, "verify": false, "format": "markdown"}),
    )
    .await;
    assert!(md.content_type.starts_with("text/markdown"));
    let last = md.text.lines().last().unwrap();
    let cells: Vec<&str> = last.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(cells[0], "total");
    assert_eq!(cells[col("params")], "346720");
}

#[tokio::test]
async fn accept_header_selects_csv() {
    use axum::body::Body;
    use axum::http::Request;
    let req = Request::post("/v1/complexity")
        .header("content-type", "application/json")
        .header("accept", "text/csv")
        .body(Body::from(json!({"model": {"preset": "vgg_stem"}, "verify": false}).to_string()))
        .unwrap();
    let r = send(layerscope::Config::default(), req).await;
    assert!(r.content_type.starts_with("text/csv"), "{}", r.content_type);
}

/// Adaptive pools by hand: 7 rows into 2 windows [0,4) and [3,7), 9 columns into 3 windows of 3,
/// so each channel's windows hold 8 x 9 = 72 elements over 6 outputs. The max pool compares
/// (72 - 6 per channel), the average adds the same and divides once per output. A silu counts
/// one evaluation per element.
#[tokio::test]
async fn adaptive_pools_and_new_activations_by_hand() {
    let v = post(
        "/v1/complexity",
        json!({"model": {"input_shape": [2, 7, 9], "layers": [
            {"type": "silu"},
            {"type": "adaptive_maxpool2d", "output_size": [2, 3]},
            {"type": "AdaptiveAvgPool2d", "output_size": [2, 3]}]}, "verify": true}),
    )
    .await
    .json();
    assert_eq!(row(&v, "0")["activations"], 2 * 7 * 9);
    assert_eq!(row(&v, "1")["comparisons"], 2 * (72 - 6));
    assert_eq!(row(&v, "1")["additions"], 0);
    assert_eq!(row(&v, "1")["output_shape"], json!([2, 2, 3]));
    // the second pool's windows: 2 rows into 2 of 1, 3 columns into 3 of 1: nothing to add
    assert_eq!(row(&v, "2")["additions"], 0);
    assert_eq!(v["verification"]["agrees"], true, "libtorch runs the same shapes");
    let r = post(
        "/v1/complexity",
        json!({"model": {"input_shape": [2, 7, 9], "layers": [{"type": "adaptive_maxpool2d", "output_size": [2, 3], "return_indices": true}]}}),
    )
    .await;
    assert_problem(&r, 422, "/model/layers/0/return_indices");
}

/// ConvTranspose2d(2 -> 3, k=3, stride 2, padding 1, output_padding 1) on 2x4x4 -> 3x8x8, by
/// hand. Per axis, input x and tap t land on output 2x - 1 + t: x = 0 lands twice (t = 0 falls
/// at -1, cropped), x = 1..3 three times each: 11 products of 12 land, and every one of the 8
/// outputs receives at least one. Multiplications are every product libtorch computes (inputs x
/// kernels: 2*16 * 3*9); additions sum what lands (2*3 * 11*11) plus the bias.
#[tokio::test]
async fn transposed_convolution_and_upsampling_by_hand() {
    let model = json!({"input_shape": [2, 4, 4], "layers": [
        {"type": "conv_transpose2d", "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
        {"type": "upsample", "scale_factor": 2}
    ]});
    let v = post("/v1/complexity", json!({"model": model})).await.json();
    let t = row(&v, "0");
    assert_eq!(t["output_shape"], json!([3, 8, 8]));
    assert_eq!(t["params"], 2 * 3 * 9 + 3);
    assert_eq!(t["multiplications"], 2 * 16 * 3 * 9);
    assert_eq!(t["macs"], 864);
    assert_eq!(t["additions"], 2 * 3 * 11 * 11 + 3 * 64);
    assert_eq!(row(&v, "1")["output_shape"], json!([3, 16, 16]));
    assert_eq!(row(&v, "1")["multiplications"], 0);
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    let exact = post(
        "/v1/complexity",
        json!({"model": model, "conventions": {"additions": "exact"}, "verify": false}),
    )
    .await
    .json();
    // k - 1 per output, summed: what lands minus one per covered output (all 3*64), plus the bias
    assert_eq!(row(&exact, "0")["additions"], 2 * 3 * 11 * 11 - 3 * 64 + 3 * 64);
    let profile = |p: &str| {
        let model = model.clone();
        let p = p.to_string();
        async move {
            post("/v1/complexity", json!({"model": model, "profile": p, "verify": false}))
                .await
                .json()
        }
    };
    assert_eq!(profile("torch_flop_counter").await["totals"]["flops"], 2 * 864);
    // fvcore: the MACs, and one per upsampled output element; ptflops: the MACs plus the bias,
    // and two per upsampled element (nn.Upsample's hook and F.interpolate's)
    assert_eq!(profile("fvcore").await["totals"]["flops"], 864 + 3 * 256);
    assert_eq!(profile("ptflops").await["totals"]["flops"], 864 + 3 * 64 + 2 * 3 * 256);
}

/// Normalizations and softmax on 4x6x5, by hand (N = 120 elements, S statistics): additions
/// 3N + S (+N affine), multiplications 2N + 3S (+N affine); softmax: N comparisons (max), 2N
/// additions, N exponentials, N divisions. The tools' own counts, measured on fvcore 0.1.5 and
/// ptflops 0.7.5: fvcore 5 (affine) or 4 per element for every norm and 0 for softmax; ptflops
/// 2 (affine) or 1 for group and instance norm, 1 for layer norm and softmax.
#[tokio::test]
async fn normalizations_and_softmax_by_hand() {
    let model = json!({"input_shape": [4, 6, 5], "layers": [
        {"type": "groupnorm", "num_groups": 2},
        {"type": "instancenorm2d"},
        {"type": "layernorm", "normalized_shape": 5},
        {"type": "softmax", "dim": 1}
    ]});
    let v = post("/v1/complexity", json!({"model": model})).await.json();
    let n = 120;
    let counts = |p: &str| {
        (
            row(&v, p)["additions"].as_u64().unwrap(),
            row(&v, p)["multiplications"].as_u64().unwrap(),
        )
    };
    assert_eq!(counts("0"), (3 * n + 2 + n, 2 * n + 3 * 2 + n));
    assert_eq!(row(&v, "0")["params"], 8);
    assert_eq!(counts("1"), (3 * n + 4, 2 * n + 3 * 4));
    assert_eq!(row(&v, "1")["params"], 0);
    assert_eq!(counts("2"), (3 * n + 24 + n, 2 * n + 3 * 24 + n));
    assert_eq!(row(&v, "2")["params"], 10);
    assert_eq!(counts("3"), (2 * n, n));
    assert_eq!(row(&v, "3")["comparisons"], n);
    assert_eq!(row(&v, "3")["activations"], n);
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    let flops = |p: &str| {
        let model = model.clone();
        let p = p.to_string();
        async move {
            post("/v1/complexity", json!({"model": model, "profile": p, "verify": false}))
                .await
                .json()["totals"]["flops"]
                .clone()
        }
    };
    assert_eq!(flops("fvcore").await, 5 * n + 4 * n + 5 * n);
    assert_eq!(flops("ptflops").await, 2 * n + n + n + n);
    assert_eq!(flops("torch_flop_counter").await, 0);
}

/// An affine instance norm no longer stops libtorch's check: libtorch repeats the affine weight
/// once per sample, and the check's empty batch made it index an empty weight (the check did
/// not run, with a libtorch error as the reason). 2 x 2 affine parameters.
#[tokio::test]
async fn an_affine_instance_norm_is_checked_by_libtorch() {
    for (ty, shape) in [("instancenorm2d", json!([2, 6, 6])), ("instancenorm3d", json!([2, 3, 6, 6]))] {
        let model = json!({"input_shape": shape, "layers": [{"type": ty, "affine": true}]});
        let v = post("/v1/complexity", json!({"model": model})).await.json();
        assert_eq!(v["verification"]["agrees"], true, "{ty}: {}", v["verification"]);
        assert_eq!(row(&v, "0")["params"], 4);
    }
}
