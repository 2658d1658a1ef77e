//! Sequence models: token ids, embeddings, attention and recurrent layers. Hand-calculated
//! counts and receptive fields, and every mistake a 4xx naming the layer. (Random sequence
//! models against PyTorch's own modules: tests/oracle/seq_check.py, run by tests/socket.rs.)
mod common;
use common::*;
use serde_json::{json, Value};

fn row<'a>(table: &'a Value, path: &str) -> &'a Value {
    item(&table["rows"], "path", path)
}

/// The receptive-field answer about one unit of `model`.
async fn field(model: &Value, position: Value) -> Value {
    ok("/v1/receptive-field", json!({"model": model, "position": position})).await
}

/// The paths of a diagnostics answer's weight rows, in order.
fn layer_paths(d: &Value) -> Vec<&str> {
    d["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect()
}

async fn ok(path: &str, body: Value) -> Value {
    let r = post(path, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn lm(cell: &str, bidirectional: bool, layers: u64) -> Value {
    json!({"input_shape": [6], "input_dtype": "int64", "layers": [
        {"type": "embedding", "name": "emb", "num_embeddings": 20, "embedding_dim": 4},
        {"type": cell, "name": "rnn", "input_size": 4, "hidden_size": 3, "num_layers": layers, "bidirectional": bidirectional},
        {"type": "linear", "name": "head", "out_features": 20}]})
}

/// The preset language model, by hand: embedding 10000x650; each LSTM layer 4x650x(650+650)
/// weights and two biases of 4x650; the decoder 650x10000 + 10000. Per token, each layer's gates
/// are 4x650 dot products over 1300 terms.
#[tokio::test]
async fn lstm_language_model_by_hand() {
    let t = ok(
        "/v1/complexity",
        json!({"model": {"preset": "lstm_lm"}, "conventions": {"flops": "mac"}, "verify": false}),
    )
    .await;
    let lstm_params = 2 * (4 * 650 * 1300 + 2 * 4 * 650);
    assert_eq!(row(&t, "0")["type"], "embedding");
    assert_eq!(row(&t, "0")["params"], 10000 * 650);
    assert_eq!(row(&t, "2")["params"], lstm_params);
    assert_eq!(row(&t, "4")["params"], 650 * 10000 + 10000);
    assert_eq!(t["totals"]["params"], 10000 * 650 + lstm_params + 650 * 10000 + 10000);
    assert_eq!(t["totals"]["params"], 19_780_400);
    assert_eq!(row(&t, "2")["macs"], 35 * 2 * 4 * 650 * 1300);
    assert_eq!(row(&t, "4")["macs"], 35 * 650 * 10000);
    assert_eq!(row(&t, "4")["output_shape"], json!([35, 10000]));
    // an LSTM's element-wise work: 5 sigmoids/tanhs per hidden unit and step
    assert_eq!(row(&t, "2")["activations"], 35 * 2 * 650 * 5);
    // FlopCounterMode does not count nn.LSTM on CPU: the row says so instead of guessing
    let f = ok(
        "/v1/complexity",
        json!({"model": {"preset": "lstm_lm"}, "profile": "torch_flop_counter", "verify": false}),
    )
    .await;
    assert_eq!(row(&f, "2")["flops"], 0);
    assert!(row(&f, "2")["note"].as_str().unwrap().contains("LSTM"), "{}", row(&f, "2"));
    assert_eq!(row(&f, "4")["flops"], 2 * 35 * 650 * 10000);
    // ptflops' nn.LSTM hook, by hand: per layer and step 4h x in + 4h x h products, 10h
    // element-wise and 2 x 4h biases (hidden 650, embedding 650, two layers), times 35 steps
    let p = ok(
        "/v1/complexity",
        json!({"model": {"preset": "lstm_lm"}, "profile": "ptflops", "verify": false}),
    )
    .await;
    assert_eq!(row(&p, "2")["flops"], 35 * 2 * (4 * 650 * 650 * 2 + 10 * 650 + 2 * 4 * 650));
    // fvcore has no handle for aten::lstm: 0, and the row says so
    let f = ok(
        "/v1/complexity",
        json!({"model": {"preset": "lstm_lm"}, "profile": "fvcore", "verify": false}),
    )
    .await;
    assert_eq!(row(&f, "2")["flops"], 0);
    assert!(row(&f, "2")["note"].as_str().unwrap().contains("aten::lstm"), "{}", row(&f, "2"));
    // torchvision publishes no rule for it: refused, naming the layer
    let r = post(
        "/v1/complexity",
        json!({"model": {"preset": "lstm_lm"}, "profile": "torchvision", "verify": false}),
    )
    .await;
    let p = assert_problem(&r, 422, "/model/layers/2");
    assert!(p["detail"].as_str().unwrap().contains("torchvision"), "{p}");
}

/// Attention on L=5 tokens of E=8 with 2 heads, by hand: projections 4 x 5 x 8 x 8 MACs, the
/// scores and the weighted values 5 x 5 x 8 each; FlopCounterMode on CPU counts 2 x the
/// projections only (need_weights=False runs the fused kernel), and the scores' two bmm with
/// need_weights=True.
#[tokio::test]
async fn attention_counts_by_hand() {
    let model = |need: bool| {
        json!({"input_shape": [5, 8], "layers": [
            {"type": "multihead_attention", "embed_dim": 8, "num_heads": 2, "need_weights": need}]})
    };
    let t = ok(
        "/v1/complexity",
        json!({"model": model(false), "conventions": {"flops": "mac"}, "verify": true}),
    )
    .await;
    assert_eq!(row(&t, "0")["params"], 3 * 8 * 8 + 3 * 8 + 8 * 8 + 8);
    assert_eq!(row(&t, "0")["macs"], 4 * 5 * 64 + 2 * 25 * 8);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    for (need, flops) in [(false, 2 * 4 * 5 * 64), (true, 2 * 4 * 5 * 64 + 2 * 2 * 25 * 8)] {
        let f = ok(
            "/v1/complexity",
            json!({"model": model(need), "profile": "torch_flop_counter", "verify": false}),
        )
        .await;
        assert_eq!(f["totals"]["flops"], flops, "need_weights {need}");
        assert_eq!(row(&f, "0")["note"].is_string(), !need);
    }
}

/// Which tokens an output token reads: an embedding token by token, a forward LSTM every
/// earlier token, a bidirectional one every token; a causal attention the earlier ones.
#[tokio::test]
async fn receptive_fields_of_sequences() {
    let kinds = |v: &Value| {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["kind"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let rf = ok("/v1/receptive-field", json!({"model": lm("lstm", false, 2), "index_base": 1})).await;
    assert_eq!(kinds(&rf), ["token", "causal", "causal"]);
    assert_eq!(rf["layers"][1]["tokens"]["text"], "1 <= t <= i");
    assert_eq!(rf["verification"]["agrees"], true, "{}", rf["verification"]);
    // the default unit: the middle token (index 3 of 6, zero-based) sees tokens 0..=3
    assert_eq!(rf["verification"]["executed"]["tokens"], json!([[1, 4]]));
    let rf = ok("/v1/receptive-field", json!({"model": lm("gru", true, 2)})).await;
    assert_eq!(kinds(&rf), ["token", "global", "global"]);
    // one bidirectional layer: the forward half of the features reads the earlier tokens, the
    // backward half the later ones, exactly
    for (feature, tokens) in [(1, json!([[0, 2]])), (4, json!([[2, 5]]))] {
        let rf = field(&lm("rnn", true, 1), json!({"layer": "rnn", "index": [2], "channel": feature})).await;
        assert_eq!(rf["position"]["input_tokens"], tokens, "feature {feature}");
        assert_eq!(rf["verification"]["agrees"], true, "{}", rf["verification"]);
    }
    let causal = json!({"input_shape": [7, 4], "layers": [
        {"type": "layernorm", "normalized_shape": 4},
        {"type": "multihead_attention", "embed_dim": 4, "num_heads": 2, "is_causal": true},
        {"type": "linear", "out_features": 3},
        {"type": "mean", "dim": 1}]});
    let rf = field(&causal, json!({"layer": 2, "index": [4], "channel": 0})).await;
    assert_eq!(kinds(&rf), ["token", "causal", "causal", "global"]);
    assert_eq!(rf["position"]["input_tokens"], json!([[0, 4]]));
    assert_eq!(rf["position"]["input_features"], json!([[0, 3]]));
}

/// Gradient rows by PyTorch's parameter names, token ids drawn below the vocabulary.
#[tokio::test]
async fn diagnostics_name_every_weight() {
    let d = ok(
        "/v1/gradient-diagnostics",
        json!({"model": lm("lstm", true, 1), "inputs": {"batch_size": 4, "seed": 3}}),
    )
    .await;
    let paths = layer_paths(&d);
    assert_eq!(
        paths,
        [
            "0.weight",
            "1.weight_ih_l0",
            "1.weight_hh_l0",
            "1.weight_ih_l0_reverse",
            "1.weight_hh_l0_reverse",
            "2"
        ]
    );
    assert_eq!(d["layers"][1]["weight_shape"], json!([12, 4]));
    assert!(d["layers"][1]["bias_grad"]["frobenius"].as_f64().unwrap() > 0.0);
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": lm("gru", false, 1), "inputs": {"values": [0, 1, 2, 3, 4, 20]}}),
    )
    .await;
    let p = assert_problem(&r, 422, "/inputs/values");
    assert!(p["detail"].as_str().unwrap().contains("0..=19"), "{p}");
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": lm("gru", false, 1), "parameters": {"rnn": {"weight_ih": [1.0]}}}),
    )
    .await;
    let p = assert_problem(&r, 422, "/parameters/rnn/weight_ih");
    assert!(p["detail"].as_str().unwrap().contains("weight_ih_l0"), "{p}");
}

/// Mistakes in sequence models: each a 4xx naming the field.
#[tokio::test]
async fn sequence_mistakes_name_the_field() {
    let cases = [
        // token ids read by something other than an embedding
        (
            json!({"input_shape": [5], "input_dtype": "int64", "layers": [{"type": "linear", "out_features": 2}]}),
            422,
            "/model/layers/0",
        ),
        // an embedding reading floats
        (
            json!({"input_shape": [5], "layers": [{"type": "embedding", "num_embeddings": 3, "embedding_dim": 2}]}),
            422,
            "/model/layers/0",
        ),
        (
            json!({"input_shape": [5, 2], "input_dtype": "int64", "layers": []}),
            422,
            "/model/input_shape",
        ),
        (
            json!({"input_shape": [5], "input_dtype": "int8", "layers": []}),
            422,
            "/model/input_dtype",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "multihead_attention", "embed_dim": 6, "num_heads": 4}]}),
            422,
            "/model/layers/0/num_heads",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "multihead_attention", "embed_dim": 5, "num_heads": 1}]}),
            422,
            "/model/layers/0/embed_dim",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "lstm", "input_size": 5, "hidden_size": 2}]}),
            422,
            "/model/layers/0/input_size",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "lstm", "hidden_size": 2, "proj_size": 1}]}),
            422,
            "/model/layers/0/proj_size",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "rnn", "hidden_size": 2, "nonlinearity": "gelu"}]}),
            422,
            "/model/layers/0/nonlinearity",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "mean", "dim": 2}]}),
            422,
            "/model/layers/0/dim",
        ),
        (
            json!({"input_shape": [3, 8, 8], "layers": [{"type": "lstm", "hidden_size": 2}]}),
            422,
            "/model/layers/0",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 1}]}),
            422,
            "/model/layers/0",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "groupnorm", "num_groups": 2}]}),
            422,
            "/model/layers/0",
        ),
        (
            json!({"input_shape": [4], "input_dtype": "int64", "layers": [{"type": "embedding", "num_embeddings": 3, "embedding_dim": 2, "padding_idx": 3}]}),
            422,
            "/model/layers/0/padding_idx",
        ),
        (
            json!({"input_shape": [4, 6], "layers": [{"type": "multihead_attention", "num_heads": 2, "kdim": 3}]}),
            422,
            "/model/layers/0/kdim",
        ),
    ];
    for (model, status, pointer) in cases {
        let r = post("/v1/complexity", json!({"model": model, "verify": false})).await;
        assert_problem(&r, status, pointer);
    }
    // attention's scores count against the run's activation limit: L = 100000 tokens
    let huge = json!({"input_shape": [100000, 2], "layers": [{"type": "multihead_attention", "embed_dim": 2, "num_heads": 1}]});
    let r = post("/v1/gradient-diagnostics", json!({"model": huge, "inputs": {"batch_size": 1}})).await;
    assert_problem(&r, 413, "/model");
    // a recurrent layer's steps run one after the other: 30000 tokens x 1 layer are refused
    // before libtorch spends minutes on them (the complexity check is skipped and says so)
    let long = json!({"input_shape": [30000, 1], "layers": [{"type": "gru", "hidden_size": 1}]});
    let r = post("/v1/gradient-diagnostics", json!({"model": long, "inputs": {"batch_size": 1}})).await;
    let p = assert_problem(&r, 413, "/model");
    assert_eq!(p["limit"]["name"], "max_run_recurrent_steps", "{p}");
    let t = ok("/v1/complexity", json!({"model": long})).await;
    assert_eq!(t["verification"]["ran"], false, "{}", t["verification"]);
    // the analytic answers need no run: exact, at once
    let t = ok("/v1/complexity", json!({"model": huge, "verify": false})).await;
    assert_eq!(t["totals"]["macs"], 4u64 * 100000 * 4 + 2 * 100000u64 * 100000 * 2);
}

/// A small ViT by hand: 4x4 patches of a 2x8x12 image (6 tokens), a class token concatenated in
/// front and a position embedding added (parameters of the graph), token 5 of the sequence is
/// patch 4 of the 2 x 3 patches (row 1, column 1): rows 4..7, columns 4..7.
#[tokio::test]
async fn patches_become_tokens() {
    let vit = json!({"input_shape": [2, 8, 12], "graph": {"nodes": [
        {"name": "conv_proj", "type": "conv2d", "out_channels": 6, "kernel_size": 4, "stride": 4},
        {"name": "flatten", "type": "flatten", "start_dim": 2},
        {"name": "permute", "type": "permute", "dims": [0, 2, 1]},
        {"name": "class_token", "type": "parameter", "shape": [1, 6]},
        {"name": "cat", "type": "concat", "dim": 1, "inputs": ["class_token", "permute"]},
        {"name": "pos_embedding", "type": "parameter", "shape": [7, 6]},
        {"name": "add", "type": "add", "inputs": ["cat", "pos_embedding"]},
        {"name": "attn", "type": "multihead_attention", "embed_dim": 6, "num_heads": 2},
        {"name": "select", "type": "select", "dim": 1, "index": 0},
        {"name": "head", "type": "linear", "out_features": 3}]}});
    let t = ok("/v1/complexity", json!({"model": vit, "profile": "torch_flop_counter"})).await;
    assert_eq!(row(&t, "flatten")["output_shape"], json!([6, 6]));
    assert_eq!(row(&t, "cat")["output_shape"], json!([7, 6]));
    assert_eq!(row(&t, "class_token")["params"], 6);
    assert_eq!(row(&t, "pos_embedding")["params"], 42);
    // conv: 6 positions x 6 channels x 32 products, twice; attention's projections on 7 tokens
    assert_eq!(row(&t, "conv_proj")["flops"], 2 * 6 * 6 * 32);
    assert_eq!(row(&t, "attn")["flops"], 2 * 4 * 7 * 36);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let rf = field(&vit, json!({"layer": "cat", "index": [5], "channel": 1})).await;
    assert_eq!(rf["position"]["input_rows"], json!([[4, 7]]));
    assert_eq!(rf["position"]["input_cols"], json!([[4, 7]]));
    assert_eq!(rf["verification"]["agrees"], true, "{}", rf["verification"]);
    // the class token reads no input; after attention every token reads the whole image
    let rf = field(&vit, json!({"layer": "cat", "index": [0]})).await;
    assert_eq!(rf["position"]["input_rows"], json!([]));
    assert_eq!(item(&rf["layers"], "path", "class_token")["kind"], "constant");
    let rf = field(&vit, json!({"layer": "head", "index": [2]})).await;
    assert_eq!(rf["position"]["input_rows"], json!([[0, 7]]));
    assert_eq!(rf["position"]["input_cols"], json!([[0, 11]]));
    let d = ok("/v1/gradient-diagnostics", json!({"model": vit, "inputs": {"batch_size": 2}})).await;
    let paths = layer_paths(&d);
    assert_eq!(
        paths,
        [
            "conv_proj",
            "class_token",
            "pos_embedding",
            "attn.in_proj_weight",
            "attn.out_proj.weight",
            "head"
        ]
    );
    // mistakes
    let image = |nodes: Value| json!({"input_shape": [2, 8, 8], "graph": {"nodes": nodes}});
    for (model, pointer) in [
        (
            json!({"input_shape": [2, 8, 8], "layers": [{"type": "parameter", "shape": [2]}]}),
            "/model/layers/0/type",
        ),
        (
            image(json!([{"name": "p", "type": "parameter", "shape": [2], "inputs": ["input"]}])),
            "/model/graph/nodes/0/inputs",
        ),
        (image(json!([{"name": "p", "type": "parameter"}])), "/model/graph/nodes/0/shape"),
        // the batch axis stays; an image has no dim 4
        (
            image(json!([{"name": "t", "type": "transpose", "dim0": 1, "dim1": 4}])),
            "/model/graph/nodes/0/dim1",
        ),
        (
            image(json!([{"name": "t", "type": "transpose", "dim0": 0, "dim1": 2}])),
            "/model/graph/nodes/0/dim0",
        ),
        // flatten(3) of an image is PyTorch's no-op; 4 is no axis of it
        (
            image(json!([{"name": "f", "type": "flatten", "start_dim": 4}])),
            "/model/graph/nodes/0/start_dim",
        ),
        (
            image(json!([{"name": "f", "type": "flatten", "start_dim": 2}, {"name": "s", "type": "select", "dim": 1, "index": 2}])),
            "/model/graph/nodes/1/index",
        ),
        (
            image(
                json!([{"name": "f", "type": "flatten", "start_dim": 2}, {"name": "p", "type": "parameter", "shape": [3, 64]}, {"name": "a", "type": "add", "inputs": ["f", "p"]}]),
            ),
            "/model/graph/nodes/2/inputs",
        ),
    ] {
        let r = post("/v1/complexity", json!({"model": model, "verify": false})).await;
        assert_problem(&r, 422, pointer);
    }
}

/// layernorm2d (torchvision's LayerNorm2d): over the channels at each position, so a unit reads
/// every channel of its own position only; 2C parameters; ptflops sees it only as a module.
#[tokio::test]
async fn layernorm2d_by_hand() {
    let m = |functional: bool| {
        json!({"input_shape": [4, 5, 6], "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 4},
            {"type": "layernorm2d", "normalized_shape": 4, "eps": 1e-6, "functional": functional}]})
    };
    let t = ok("/v1/complexity", json!({"model": m(false), "profile": "ptflops"})).await;
    assert_eq!(row(&t, "1")["params"], 8);
    assert_eq!(row(&t, "1")["type"], "layernorm2d");
    // ptflops: the depthwise conv's MACs and bias adds, one per element for nn.LayerNorm's hook
    assert_eq!(row(&t, "1")["flops"], 4 * 30);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let t = ok("/v1/complexity", json!({"model": m(true), "profile": "ptflops", "verify": false})).await;
    assert_eq!(row(&t, "1")["flops"], 0);
    let rf = field(&m(false), json!({"layer": 1, "index": [2, 3], "channel": 0})).await;
    // channel 0 of position (2, 3) reads every channel (the norm), each through its own 3x3
    assert_eq!(rf["position"]["input_channels"], json!([[0, 3]]));
    assert_eq!(rf["position"]["input_rows"], json!([[1, 3]]));
    assert_eq!(rf["position"]["input_cols"], json!([[2, 4]]));
    assert_eq!(rf["verification"]["agrees"], true, "{}", rf["verification"]);
    let r = post(
        "/v1/complexity",
        json!({"model": {"input_shape": [4, 5, 6], "layers": [{"type": "layernorm2d", "normalized_shape": 3}]}}),
    )
    .await;
    assert_problem(&r, 422, "/model/layers/0/normalized_shape");
}

/// Circular padding (a conv's padding_mode, CircularPad2d): a border unit reads the rows wrapped
/// around from the other side. Row 0 of a 3x3 conv with padding 1 on 6 rows reads rows 5, 0, 1.
#[tokio::test]
async fn circular_padding_wraps_around() {
    let m = json!({"input_shape": [1, 6, 6], "layers": [
        {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1, "padding_mode": "circular"}]});
    let rf = field(&m, json!({"layer": 0, "index": [0, 2]})).await;
    assert_eq!(rf["position"]["input_rows"], json!([[0, 1], [5, 5]]));
    assert_eq!(rf["position"]["input_cols"], json!([[1, 3]]));
    assert_eq!(rf["verification"]["agrees"], true, "{}", rf["verification"]);
    let m = json!({"input_shape": [1, 4, 4], "layers": [{"type": "circularpad2d", "padding": [0, 0, 2, 0]}]});
    let rf = field(&m, json!({"layer": 0, "index": [0, 1]})).await;
    assert_eq!(rf["position"]["input_rows"], json!([[2, 2]]));
    assert_eq!(rf["verification"]["agrees"], true, "{}", rf["verification"]);
    let r = post(
        "/v1/complexity",
        json!({"model": {"input_shape": [1, 4, 4], "layers": [{"type": "circularpad2d", "padding": 5}]}}),
    )
    .await;
    assert_problem(&r, 422, "/model/layers/0/padding");
}

/// Grading questions on the new presets: counts and ranges from the same code; a row/column
/// range asked of a sequence layer cannot be graded, and the feedback says what the layer reads.
#[tokio::test]
async fn grading_reads_the_new_presets() {
    let g = ok(
        "/v1/grade",
        json!({"questions": [
            {"id": "p", "kind": "complexity", "model": {"preset": "lstm_lm"}, "ask": "params of layer rnn", "answer": "6,770,400"},
            {"id": "v", "kind": "receptive_field", "model": {"preset": "vit_b_16"}, "ask": "rows of layer conv_proj at zero-based i", "answer": "16i <= m <= 16i+15"},
            {"id": "r", "kind": "receptive_field", "model": {"preset": "lstm_lm"}, "ask": "rows of layer rnn at one-based i", "answer": "i"}]}),
    )
    .await;
    let q = |id: &str| item(&g["questions"], "id", id).clone();
    assert_eq!(q("p")["correct"], true, "{}", q("p"));
    assert_eq!(q("v")["correct"], true, "{}", q("v"));
    assert!(
        q("r")["feedback"]
            .as_str()
            .unwrap()
            .contains("causal: output token i reads tokens 1 <= t <= i"),
        "{}",
        q("r")
    );
}

/// "tokens of layer X": the input tokens output token i of a sequence layer reads, graded in
/// the forms students write, one-based unless asked otherwise (hand-derived: the embedding
/// reads token i alone, a causal attention tokens 1..=i and so does every token-wise layer
/// after it, a bidirectional LSTM every one of the 6 tokens).
#[tokio::test]
async fn token_ranges_are_graded() {
    let lm = json!({"input_shape": [6], "input_dtype": "int64", "layers": [
        {"type": "embedding", "num_embeddings": 9, "embedding_dim": 4},
        {"type": "multihead_attention", "embed_dim": 4, "num_heads": 2, "is_causal": true},
        {"type": "linear", "out_features": 4},
        {"type": "lstm", "hidden_size": 2, "bidirectional": true},
        {"type": "linear", "out_features": 3}]});
    let q = |id: &str, ask: &str, answer: &str| json!({"id": id, "kind": "receptive_field", "model": lm, "ask": ask, "answer": answer});
    let g = ok(
        "/v1/grade",
        json!({"reveal": "answers", "questions": [
            q("emb", "tokens of layer 0", "t = i"),
            q("emb_short", "tokens of layer 0", "i"),
            q("attn", "tokens of layer 1", "1 <= t <= i"),
            q("attn_zero", "tokens of layer 1 at zero-based i", "0 <= t <= i"),
            q("attn_short", "tokens of layer 1", "t ≤ i"),
            q("attn_wrong", "tokens of layer 1", "t = i"),
            q("lin", "tokens of layer 2 at one-based i", "1<=t<=i"),
            q("bi", "tokens of layer 3", "1 <= t <= 6"),
            q("bi_all", "tokens of layer 3", "all tokens"),
            q("bi_wrong", "tokens of layer 3", "1 <= t <= i"),
            // any other way to name the same tokens for every i, judged by value
            q("attn_set", "tokens of layer 1", "t ∈ [1, i]"),
            q("attn_rev", "tokens of layer 1", "i >= t >= 1"),
            q("attn_strict", "tokens of layer 1", "0 < t < i+1"),
            q("emb_range", "tokens of layer 0", "[i, i]"),
            q("bi_range", "tokens of layer 3", "[1, 6]"),
            q("attn_off", "tokens of layer 1", "[1, i-1]"),
            q("emb_letter", "tokens of layer 0", "[j, j]")]}),
    )
    .await;
    let get = |id: &str| item(&g["questions"], "id", id).clone();
    for id in [
        "emb",
        "emb_short",
        "attn",
        "attn_zero",
        "attn_short",
        "lin",
        "bi",
        "bi_all",
        "attn_set",
        "attn_rev",
        "attn_strict",
        "emb_range",
        "bi_range",
    ] {
        assert_eq!(get(id)["correct"], true, "{}", get(id));
    }
    for id in ["attn_wrong", "bi_wrong", "attn_off", "emb_letter"] {
        assert_eq!(get(id)["correct"], false, "{}", get(id));
    }
    assert!(
        get("attn_wrong")["feedback"].as_str().unwrap().contains("1 <= t <= i"),
        "{}",
        get("attn_wrong")
    );
    // a spatial layer has rows and columns, not tokens
    let g = ok(
        "/v1/grade",
        json!({"questions": [{"id": "s", "kind": "receptive_field", "model": {"preset": "vgg_stem"}, "ask": "tokens of layer 0", "answer": "t = i"}]}),
    )
    .await;
    let s = item(&g["questions"], "id", "s").clone();
    assert!(s["feedback"].as_str().unwrap().contains("kind spatial"), "{s}");
}

/// Cross-attention by hand: 3 learned latent queries of E=8 over 7 projected input tokens, 2
/// heads. Projections: queries and outputs 3 tokens each, keys and values 7 each, so
/// (2*3 + 2*7) x 8 x 8 MACs; scores and values 3 x 7 x 8 each. Every latent reads every input
/// token; input queries over a learned memory read their own token alone.
#[tokio::test]
async fn cross_attention_by_hand() {
    let model = json!({"input_shape": [7, 5], "graph": {"nodes": [
        {"name": "mem", "type": "linear", "out_features": 8, "inputs": ["input"]},
        {"name": "latents", "type": "parameter", "shape": [3, 8]},
        {"name": "cross", "type": "multihead_attention", "embed_dim": 8, "num_heads": 2, "inputs": ["latents", "mem"]},
        {"name": "memory", "type": "parameter", "shape": [4, 8]},
        {"name": "read", "type": "multihead_attention", "embed_dim": 8, "num_heads": 2, "inputs": ["mem", "memory", "memory"]}],
        "outputs": ["cross", "read"]}});
    let t = ok("/v1/complexity", json!({"model": model, "verify": true})).await;
    assert_eq!(row(&t, "cross")["output_shape"], json!([3, 8]));
    assert_eq!(row(&t, "cross")["macs"], (2 * 3 + 2 * 7) * 64 + 2 * 3 * 7 * 8);
    assert_eq!(row(&t, "read")["macs"], (2 * 7 + 2 * 4) * 64 + 2 * 7 * 4 * 8);
    assert_eq!(row(&t, "cross")["params"], 3 * 64 + 3 * 8 + 64 + 8);
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let f = ok(
        "/v1/complexity",
        json!({"model": model, "profile": "torch_flop_counter", "verify": false}),
    )
    .await;
    assert_eq!(row(&f, "cross")["flops"], 2 * (2 * 3 + 2 * 7) * 64);
    let r = ok(
        "/v1/receptive-field",
        json!({"model": model, "position": {"layer": "cross", "index": [1]}}),
    )
    .await;
    assert_eq!(item(&r["layers"], "path", "cross")["kind"], "global");
    assert_eq!(r["position"]["input_tokens"], json!([[0, 6]]));
    assert_eq!(r["verification"]["agrees"], true);
    let r = ok(
        "/v1/receptive-field",
        json!({"model": model, "position": {"layer": "read", "index": [4]}}),
    )
    .await;
    assert_eq!(item(&r["layers"], "path", "read")["kind"], "token");
    assert_eq!(r["position"]["input_tokens"], json!([[4, 4]]));
    assert_eq!(r["verification"]["agrees"], true);
}

#[tokio::test]
async fn cross_attention_mistakes_name_the_node() {
    let node = |extra: Value, inputs: Value| {
        let mut n = json!({"name": "x", "type": "multihead_attention", "embed_dim": 8, "num_heads": 2, "inputs": inputs});
        for (k, v) in extra.as_object().unwrap() {
            n[k] = v.clone();
        }
        json!({"input_shape": [7, 8], "graph": {"nodes": [
            {"name": "a", "type": "parameter", "shape": [3, 8]},
            {"name": "b", "type": "parameter", "shape": [4, 6]},
            {"name": "c", "type": "parameter", "shape": [5, 8]}, n]}})
    };
    let refused = |m: Value, pointer: &'static str| async move {
        let p = assert_problem(&post("/v1/complexity", json!({"model": m, "verify": false})).await, 422, pointer);
        p["detail"].as_str().unwrap().to_string()
    };
    let d = refused(node(json!({}), json!(["input", "b"])), "/model/graph/nodes/3/inputs").await;
    assert!(d.contains("keys and values are sequences [L, 8] with the query's embed_dim"), "{d}");
    let d = refused(node(json!({}), json!(["input", "a", "c"])), "/model/graph/nodes/3/inputs").await;
    assert!(d.contains("keys and values must have as many tokens"), "{d}");
    let d = refused(
        node(json!({"is_causal": true}), json!(["input", "a"])),
        "/model/graph/nodes/3/is_causal",
    )
    .await;
    assert!(d.contains("a causal mask is for self-attention"), "{d}");
    let d = refused(node(json!({}), json!(["input", "a", "a", "a"])), "/model/graph/nodes/3/inputs").await;
    assert!(d.contains("1 to 3 names, got 4"), "{d}");
}

/// GPT-2's tied head and nanoGPT's position embedding, by hand: token ids `[3]`, `wte` a 5x2
/// table, `wpe` an 8-row table read at positions 0..3 (`wpe(torch.arange(3))`), their sum read
/// by `lm_head` (5 outputs, a bias) whose weight is wte's tensor. Parameters: wte 10, wpe all 16
/// rows, lm_head its bias 5 (its weight counted in wte's row) = 31, as PyTorch's
/// `sum(p.numel() for p in model.parameters())`. With the loss the sum of the outputs
/// (out[t, v] = x_t . E[v] + b[v], x_t = E[id_t] + P[t]), E's gradient holds both uses:
/// dL/dE[r] = sum_t x_t (the head) + count(r in ids) * sum_v E[v] (the lookup); P's rows 0..3
/// get sum_v E[v], the rest 0; the bias 3 per output. A unit of lm_head reads its own token only.
#[tokio::test]
async fn tied_head_and_position_embedding_by_hand() {
    let model = |head: Value, wpe: Value| {
        json!({"input_shape": [3], "input_dtype": "int64", "graph": {"nodes": [
            {"name": "wte", "type": "embedding", "num_embeddings": 5, "embedding_dim": 2, "inputs": ["input"]},
            wpe,
            {"name": "x", "type": "add", "inputs": ["wte", "wpe"]},
            head], "outputs": ["lm_head"]}})
    };
    let wpe = json!({"name": "wpe", "type": "embedding", "num_embeddings": 8, "embedding_dim": 2, "positions": 3});
    let head = json!({"name": "lm_head", "type": "linear", "out_features": 5, "weight_of": "wte"});
    let gpt = model(head.clone(), wpe.clone());
    let t = ok("/v1/complexity", json!({"model": gpt, "verify": true})).await;
    assert_eq!(t["totals"]["params"], 31);
    assert_eq!(row(&t, "wte")["params"], 10);
    assert_eq!(row(&t, "wpe")["params"], 16);
    assert_eq!(row(&t, "wpe")["type"], "embedding");
    assert_eq!(row(&t, "wpe")["output_shape"], json!([3, 2]));
    assert_eq!(row(&t, "lm_head")["params"], 5);
    assert_eq!(row(&t, "lm_head")["macs"], 3 * 2 * 5);
    assert!(row(&t, "lm_head")["note"].as_str().unwrap().contains("wte's tensor"), "{t}");
    assert_eq!(t["verification"]["agrees"], true, "{t}");
    assert_eq!(t["verification"]["total_params"]["executed"], 31);
    // untied, the head's weight is its own
    let mut own = head.clone();
    own.as_object_mut().unwrap().remove("weight_of");
    let t = ok("/v1/complexity", json!({"model": model(own, wpe.clone())})).await;
    assert_eq!(t["totals"]["params"], 41);

    let e: Vec<f64> = (0..10).map(|i| 0.1 * i as f64 - 0.3).collect();
    let p: Vec<f64> = (0..16).map(|i| 0.05 * i as f64).collect();
    let ids = [0usize, 2, 2];
    let d = ok(
        "/v1/gradient-diagnostics",
        json!({"model": gpt, "dtype": "float64", "inputs": {"values": ids},
               "parameters": {"wte": {"weight": e}, "wpe": {"weight": p}, "lm_head": {"bias": vec![0.5; 5]}}}),
    )
    .await;
    let paths = layer_paths(&d);
    assert_eq!(paths, ["wte.weight", "wpe.weight"]);
    let (x, s): (Vec<f64>, Vec<f64>) = (0..2)
        .map(|k| {
            let x: f64 = ids.iter().enumerate().map(|(t, &id)| e[2 * id + k] + p[2 * t + k]).sum();
            (x, (0..5).map(|v| e[2 * v + k]).sum::<f64>())
        })
        .unzip();
    let mut wte = 0.0;
    for r in 0..5 {
        let count = ids.iter().filter(|&&i| i == r).count() as f64;
        for k in 0..2 {
            wte += (x[k] + count * s[k]).powi(2);
        }
    }
    let wte = f64::sqrt(wte);
    let wpe_grad = (3.0 * (s[0] * s[0] + s[1] * s[1])).sqrt();
    let close = |a: &Value, b: f64| assert!((a.as_f64().unwrap() - b).abs() < 1e-12 * b.max(1.0), "{a} != {b}");
    close(&d["layers"][0]["weight_grad"]["frobenius"], wte);
    close(&d["layers"][1]["weight_grad"]["frobenius"], wpe_grad);
    assert_eq!(d["other_parameters"][0]["path"], "lm_head.bias");
    close(&d["other_parameters"][0]["grad"]["frobenius"], (5.0 * 9.0f64).sqrt());

    let f = field(&gpt, json!({"layer": "lm_head", "index": [1], "channel": 4})).await;
    assert_eq!(f["position"]["input_tokens"], json!([[1, 1]]), "{f}");
    assert_eq!(f["verification"]["agrees"], true, "{f}");
    let f = field(&gpt, json!({"layer": "wpe", "index": [2], "channel": 0})).await;
    assert_eq!(f["position"]["input_tokens"], json!([]), "{f}");

    // every mistake names its field
    let with = |mut v: Value, key: &str, x: Value| {
        v[key] = x;
        v
    };
    let head_with = |key: &str, x: Value| model(with(head.clone(), key, x), wpe.clone());
    let wpe_with = |key: &str, x: Value| model(head.clone(), with(wpe.clone(), key, x));
    let tie = "/model/graph/nodes/3/weight_of";
    let cases = [
        (head_with("weight_of", json!("wtee")), tie, "did you mean \"wte\""),
        (head_with("weight_of", json!("lm_head")), tie, "itself"),
        (head_with("weight_of", json!("x")), tie, "only a linear or an embedding"),
        (head_with("weight_of", json!("wpe")), tie, "only a linear or an embedding"),
        (head_with("out_features", json!(4)), tie, "one shape"),
        (head_with("weight_of", json!("")), tie, "1 to 200"),
        (wpe_with("positions", json!(9)), "/model/graph/nodes/1/positions", ""),
        (wpe_with("positions", json!(4)), "/model/graph/nodes/2/inputs", "broadcast"),
        (wpe_with("padding_idx", json!(0)), "/model/graph/nodes/1/padding_idx", "positions"),
        (wpe_with("weight_of", json!("wte")), "/model/graph/nodes/1/weight_of", ""),
        (
            json!({"input_shape": [3], "input_dtype": "int64", "layers": [{"type": "embedding", "num_embeddings": 8, "embedding_dim": 2, "positions": 3}]}),
            "/model/layers/0/positions",
            "graph",
        ),
        (
            json!({"input_shape": [3, 4], "layers": [{"type": "conv1d", "out_channels": 2, "kernel_size": 1, "weight_of": "0"}]}),
            "/model/layers/0/weight_of",
            "",
        ),
    ];
    for (m, pointer, says) in cases {
        let r = post("/v1/complexity", json!({"model": m})).await;
        let p = assert_problem(&r, 422, pointer);
        assert!(p["detail"].as_str().unwrap().contains(says), "{p}");
    }
    // a chain: wte names lm_head, which names wte
    let chained = model(head.clone(), wpe.clone());
    let mut chained = chained;
    chained["graph"]["nodes"][0]["weight_of"] = json!("lm_head");
    let p = assert_problem(
        &post("/v1/complexity", json!({"model": chained})).await,
        422,
        "/model/graph/nodes/0/weight_of",
    );
    assert!(p["detail"].as_str().unwrap().contains("names the same one"), "{p}");
    // the tied weight's values are given under its owner
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": gpt, "parameters": {"lm_head": {"weight": vec![0.0; 10]}}}),
    )
    .await;
    let p = assert_problem(&r, 422, "/parameters/lm_head");
    assert!(p["detail"].as_str().unwrap().contains("under \"wte\""), "{p}");
}
