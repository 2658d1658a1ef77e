//! The graph form: named nodes reading named tensors. Hand-calculated answers for skips,
//! broadcast gates, concatenations and several outputs; the sequential form as sugar for it; and
//! every mistake a 4xx naming the node. (Random graphs against PyTorch: tests/oracle/check.py.)
mod common;
use common::*;
use serde_json::{json, Value};

fn graph(input: Value, nodes: Value, outputs: Option<Value>) -> Value {
    let mut g = json!({"nodes": nodes});
    if let Some(o) = outputs {
        g["outputs"] = o;
    }
    json!({"input_shape": input, "graph": g})
}

/// Attention written by hand, its start: q, k and v (linear layers to 4 features of each token)
/// and the scores q @ k^T, followed by `rest`.
fn attention_nodes(rest: Value) -> Value {
    let mut nodes = vec![
        json!({"name": "q", "type": "linear", "out_features": 4, "inputs": ["input"]}),
        json!({"name": "k", "type": "linear", "out_features": 4, "inputs": ["input"]}),
        json!({"name": "v", "type": "linear", "out_features": 4, "inputs": ["input"]}),
        json!({"name": "kt", "type": "transpose", "dim0": 1, "dim1": 2, "inputs": ["k"]}),
        json!({"name": "scores", "type": "matmul", "inputs": ["q", "kt"]}),
    ];
    nodes.extend(rest.as_array().expect("a list of nodes").iter().cloned());
    Value::Array(nodes)
}

async fn complexity(model: Value) -> Value {
    let r = post("/v1/complexity", json!({"model": model, "verify": false})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

async fn refused(model: Value, status: u16, pointer: &str) -> String {
    let v = assert_problem(
        &post("/v1/complexity", json!({"model": model, "verify": false})).await,
        status,
        pointer,
    );
    v["detail"].as_str().unwrap().to_string()
}

fn row<'a>(table: &'a Value, path: &str) -> &'a Value {
    item(&table["rows"], "path", path)
}

/// A squeeze-and-excitation block with a skip, counted by hand:
/// conv 3x3 8->8 on 8x8: 64 outputs x 8 channels x 72 products; the gate [8,1,1] times the
/// [8,8,8] features is 512 multiplications; the skip add 512 additions.
#[tokio::test]
async fn squeeze_and_excitation_with_a_skip_by_hand() {
    let m = graph(
        json!([8, 8, 8]),
        json!([
            {"name": "conv", "type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
            {"name": "squeeze", "type": "adaptive_avgpool2d", "output_size": 1},
            {"name": "fc", "type": "conv2d", "out_channels": 8, "kernel_size": 1},
            {"name": "gate", "type": "sigmoid"},
            {"name": "scaled", "type": "mul", "inputs": ["conv", "gate"]},
            {"name": "out", "type": "add", "inputs": ["scaled", "input"]}
        ]),
        None,
    );
    let t = complexity(m.clone()).await;
    assert_eq!(row(&t, "conv")["multiplications"], 512 * 72);
    assert_eq!(row(&t, "conv")["params"], 8 * 72 + 8);
    assert_eq!(row(&t, "fc")["params"], 8 * 8 + 8);
    assert_eq!(row(&t, "scaled")["multiplications"], 512);
    assert_eq!(row(&t, "scaled")["output_shape"], json!([8, 8, 8]));
    assert_eq!(row(&t, "out")["additions"], 512);
    assert_eq!(t["totals"]["params"], 8 * 72 + 8 + 8 * 8 + 8);
    // the element-wise merges count as flops only under count_residual_adds
    let on = post(
        "/v1/complexity",
        json!({"model": m, "verify": false, "conventions": {"count_residual_adds": true}}),
    )
    .await
    .json();
    assert_eq!(row(&on, "scaled")["flops"], 512);
    assert_eq!(row(&on, "out")["flops"], 512);
    assert_eq!(row(&t, "scaled")["flops"], 0);

    // receptive fields: the gate sees the whole image, so every unit after the product is global
    let r = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "out", "index": [0, 0]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(
        item(&v["layers"], "path", "conv")["receptive_field"]["height"]["text"],
        "i-1 <= m <= i+1"
    );
    assert_eq!(item(&v["layers"], "path", "scaled")["kind"], "global");
    assert_eq!(item(&v["layers"], "path", "out")["kind"], "global");
    let branches = &item(&v["layers"], "path", "scaled")["branches"];
    assert_eq!(branches[0]["label"], "conv");
    assert_eq!(branches[1]["label"], "gate");
    assert_eq!(v["position"]["input_rows"], json!([[0, 7]]));
    assert_eq!(v["position"]["input_channels"], json!([[0, 7]]));
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
}

/// A U-Net-like skip: the encoder's output read by a pooled path (a second output) and by a
/// wider conv, then concatenated with it on the channels. Exact sets per channel by hand, the
/// probe agreeing; a spatial concatenation has no affine form but exact sets.
#[tokio::test]
async fn skip_concatenation_exact_sets_by_hand() {
    let m = graph(
        json!([1, 8, 8]),
        json!([
            {"name": "enc", "type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},
            {"name": "down", "type": "maxpool2d", "kernel_size": 2},
            {"name": "deep", "type": "conv2d", "out_channels": 2, "kernel_size": 1},
            {"name": "wide", "type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1, "inputs": ["enc"]},
            {"name": "cat", "type": "concat", "inputs": ["enc", "wide"]}
        ]),
        Some(json!(["cat", "deep"])),
    );
    // channel 0 of cat is enc's channel 0: a 3x3 window at (2, 4) -> rows 1..3, cols 3..5
    let r = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "cat", "index": [2, 4], "channel": 0}}),
    )
    .await
    .json();
    assert_eq!(r["position"]["input_rows"], json!([[1, 3]]));
    assert_eq!(r["position"]["input_cols"], json!([[3, 5]]));
    // channel 3 of cat is wide's channel 1: two 3x3 windows -> 5x5, rows 0..4, cols 2..6
    let r = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "cat", "index": [2, 4], "channel": 3}}),
    )
    .await
    .json();
    assert_eq!(r["position"]["input_rows"], json!([[0, 4]]));
    assert_eq!(r["position"]["input_cols"], json!([[2, 6]]));
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    // the second output: deep at (1, 2) pools enc rows 2..3, cols 4..5 -> input rows 1..4, cols 3..6
    let r = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "deep", "index": [1, 2]}}),
    )
    .await
    .json();
    assert_eq!(r["position"]["input_rows"], json!([[1, 4]]));
    assert_eq!(r["position"]["input_cols"], json!([[3, 6]]));
    assert_eq!(r["model"]["output_shapes"], json!([[4, 8, 8], [2, 4, 4]]));
    // the per-layer table merges enc (3x3) and wide (5x5): one centre, so aligned
    let cat = item(&r["layers"], "path", "cat").clone();
    assert_eq!(cat["aligned"], true);
    assert_eq!(cat["receptive_field"]["height"]["text"], "i-2 <= m <= i+2");
    // a spatial concatenation has no affine form
    let m2 = graph(
        json!([1, 4, 4]),
        json!([{"name": "tall", "type": "concat", "dim": 2, "inputs": ["input", "input"]}]),
        None,
    );
    let r = post(
        "/v1/receptive-field",
        json!({"model": m2, "position": {"layer": "tall", "index": [5, 1]}}),
    )
    .await
    .json();
    assert_eq!(item(&r["layers"], "path", "tall")["kind"], "not_affine");
    assert_eq!(r["model"]["output_shape"], json!([1, 8, 4]));
    assert_eq!(r["position"]["input_rows"], json!([[1, 1]]));
}

/// The sequential form is sugar for the graph: the same network written both ways gives the
/// same complexity rows (paths aside) and the same exact set.
#[tokio::test]
async fn the_sequential_form_equals_its_graph() {
    let seq = json!({"input_shape": [3, 16, 16], "layers": [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "residual", "body": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "relu"}]},
        {"type": "maxpool2d", "kernel_size": 2}
    ]});
    let g = graph(
        json!([3, 16, 16]),
        json!([
            {"name": "a", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
            {"name": "b", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
            {"name": "c", "type": "relu"},
            {"name": "d", "type": "add", "inputs": ["c", "a"]},
            {"name": "e", "type": "maxpool2d", "kernel_size": 2}
        ]),
        None,
    );
    let ts = complexity(seq.clone()).await;
    let tg = complexity(g.clone()).await;
    assert_eq!(ts["totals"], tg["totals"]);
    let pos = json!({"layer": -1, "index": [3, 5], "channel": 2});
    let mut a = json!({"model": seq, "position": pos});
    a["position"]["layer"] = json!(2);
    let mut b = json!({"model": g, "position": pos});
    b["position"]["layer"] = json!("e");
    let (ra, rb) = (
        post("/v1/receptive-field", a).await.json(),
        post("/v1/receptive-field", b).await.json(),
    );
    for k in ["input_rows", "input_cols", "input_channels"] {
        assert_eq!(ra["position"][k], rb["position"][k], "{k}");
    }
    assert_eq!(
        item(&ra["layers"], "path", "2")["receptive_field"],
        item(&rb["layers"], "path", "e")["receptive_field"]
    );
}

#[tokio::test]
async fn nodes_may_be_listed_in_any_order_and_read_the_node_before_by_default() {
    let ordered = graph(
        json!([2, 6, 6]),
        json!([
            {"name": "x1", "type": "conv2d", "out_channels": 2, "kernel_size": 3},
            {"name": "x2", "type": "relu"},
            {"name": "x3", "type": "flatten"}
        ]),
        None,
    );
    let shuffled = graph(
        json!([2, 6, 6]),
        json!([
            {"name": "x3", "type": "flatten", "inputs": ["x2"]},
            {"name": "x1", "type": "conv2d", "out_channels": 2, "kernel_size": 3, "inputs": ["input"]},
            {"name": "x2", "type": "relu", "inputs": ["x1"]}
        ]),
        Some(json!(["x3"])),
    );
    let (a, b) = (complexity(ordered).await, complexity(shuffled).await);
    assert_eq!(a["totals"], b["totals"]);
    let paths = |t: &Value| t["rows"].as_array().unwrap().iter().map(|r| r["path"].clone()).collect::<Vec<_>>();
    assert_eq!(paths(&a), paths(&b), "rows follow the order the nodes run in");
    assert_eq!(a["model"]["output_shape"], json!([32]));
}

#[tokio::test]
async fn mistakes_in_a_graph_name_the_node() {
    let conv = json!({"type": "conv2d", "out_channels": 2, "kernel_size": 1});
    let with = |extra: Value| {
        let mut n = conv.clone();
        for (k, v) in extra.as_object().unwrap() {
            n[k] = v.clone();
        }
        n
    };
    // a cycle
    let d = refused(
        graph(
            json!([2, 4, 4]),
            json!([
                with(json!({"name": "a", "inputs": ["b"]})),
                with(json!({"name": "b", "inputs": ["a"]}))
            ]),
            None,
        ),
        422,
        "/model/graph/nodes/0",
    )
    .await;
    assert!(d.contains("cycle") && d.contains("\"a\"") && d.contains("\"b\""), "{d}");
    // a node reading itself
    let d = refused(
        graph(json!([2, 4, 4]), json!([with(json!({"name": "a", "inputs": ["a"]}))]), None),
        422,
        "/model/graph/nodes/0",
    )
    .await;
    assert!(d.contains("cycle"), "{d}");
    // an unknown name, with a hint
    let d = refused(
        graph(
            json!([2, 4, 4]),
            json!([with(json!({"name": "conv1"})), with(json!({"name": "conv2", "inputs": ["conv"]}))]),
            None,
        ),
        422,
        "/model/graph/nodes/1/inputs/0",
    )
    .await;
    assert!(d.contains("\"conv\"") && d.contains("did you mean \"conv1\""), "{d}");
    refused(
        graph(json!([2, 4, 4]), json!([with(json!({"name": "a"}))]), Some(json!(["b"]))),
        422,
        "/model/graph/outputs/0",
    )
    .await;
    // duplicate and reserved names, a missing name
    let d = refused(
        graph(
            json!([2, 4, 4]),
            json!([with(json!({"name": "a"})), with(json!({"name": "a"}))]),
            None,
        ),
        422,
        "/model/graph/nodes/1/name",
    )
    .await;
    assert!(d.contains("unique"), "{d}");
    refused(
        graph(json!([2, 4, 4]), json!([with(json!({"name": "input"}))]), None),
        422,
        "/model/graph/nodes/0/name",
    )
    .await;
    refused(
        graph(json!([2, 4, 4]), json!([conv.clone()]), None),
        422,
        "/model/graph/nodes/0/name",
    )
    .await;
    // shapes that do not combine
    let d = refused(
        graph(
            json!([2, 4, 4]),
            json!([
                {"name": "p", "type": "maxpool2d", "kernel_size": 2},
                {"name": "s", "type": "add", "inputs": ["p", "input"]}
            ]),
            None,
        ),
        422,
        "/model/graph/nodes/1/inputs",
    )
    .await;
    assert!(d.contains("\"s\"") && d.contains("[2, 2, 2]") && d.contains("[2, 4, 4]"), "{d}");
    let d = refused(
        graph(
            json!([2, 4, 4]),
            json!([
                {"name": "p", "type": "maxpool2d", "kernel_size": 2},
                {"name": "c", "type": "concat", "inputs": ["p", "input"]}
            ]),
            None,
        ),
        422,
        "/model/graph/nodes/1/inputs",
    )
    .await;
    assert!(d.contains("every other axis"), "{d}");
    let d = refused(
        graph(
            json!([2, 4, 4]),
            json!([
                {"name": "f", "type": "flatten"},
                {"name": "m", "type": "mul", "inputs": ["f", "input"]}
            ]),
            None,
        ),
        422,
        "/model/graph/nodes/1/inputs",
    )
    .await;
    assert!(d.contains("different numbers of axes"), "{d}");
    for dim in [0, 4, -4] {
        refused(
            graph(
                json!([2, 4, 4]),
                json!([{"name": "c", "type": "concat", "dim": dim, "inputs": ["input", "input"]}]),
                None,
            ),
            422,
            "/model/graph/nodes/0/dim",
        )
        .await;
    }
    // a layer reading two tensors, an unknown field, mul outside a graph
    refused(
        graph(
            json!([2, 4, 4]),
            json!([{"name": "r", "type": "relu", "inputs": ["input", "input"]}]),
            None,
        ),
        422,
        "/model/graph/nodes/0/inputs",
    )
    .await;
    refused(
        graph(json!([2, 4, 4]), json!([{"name": "r", "type": "relu", "input": ["input"]}]), None),
        422,
        "/model/graph/nodes/0/input",
    )
    .await;
    refused(
        json!({"input_shape": [2, 4, 4], "layers": [{"type": "mul"}]}),
        422,
        "/model/layers/0/type",
    )
    .await;
    refused(json!({"input_shape": [2, 4, 4], "graph": {"nodes": []}}), 422, "/model/graph/nodes").await;
    refused(
        json!({"input_shape": [2, 4, 4], "graph": {"nodes": [{"name": "r", "type": "relu"}], "extra": 1}}),
        422,
        "/model/graph/extra",
    )
    .await;
}

#[tokio::test]
async fn huge_and_deep_graphs_are_refused_before_any_work() {
    // 10^5 nodes: over max_layers, a 413 naming the limit
    let nodes: Vec<Value> = (0..100_000).map(|i| json!({"name": format!("n{i}"), "type": "relu"})).collect();
    let r = post(
        "/v1/complexity",
        json!({"model": {"input_shape": [4], "graph": {"nodes": nodes}}, "verify": false}),
    )
    .await;
    let v = assert_problem(&r, 413, "/model/graph/nodes/2000");
    assert_eq!(v["limit"]["name"], "max_layers");
    // a long chain within the limit is fine, and the last node is the output
    let nodes: Vec<Value> = (0..1500).map(|i| json!({"name": format!("n{i}"), "type": "relu"})).collect();
    let t = complexity(json!({"input_shape": [4], "graph": {"nodes": nodes}})).await;
    assert_eq!(t["rows"].as_array().unwrap().len(), 1500);
    // composites nested too deep inside a node
    let mut body = json!([{"type": "relu"}]);
    for _ in 0..40 {
        body = json!([{"type": "residual", "body": body}]);
    }
    let r = post(
        "/v1/complexity",
        json!({"model": {"input_shape": [4], "graph": {"nodes": [{"name": "deep", "type": "residual", "body": body}]}}, "verify": false}),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text);
    // a wide fan-out and fan-in: one add reading 1000 tensors
    let mut nodes: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("r{i}"), "type": "relu", "inputs": ["input"]}))
        .collect();
    nodes.push(json!({"name": "sum", "type": "add", "inputs": (0..1000).map(|i| format!("r{i}")).collect::<Vec<_>>()}));
    let t = complexity(json!({"input_shape": [4], "graph": {"nodes": nodes}})).await;
    assert_eq!(row(&t, "sum")["additions"], 999 * 4);
}

/// Diagnostics on a graph: the objective reads every output; a layer no output reads gets no
/// gradient and is listed apart; a depth sweep needs the sequential form.
#[tokio::test]
async fn diagnostics_on_a_graph_with_an_unused_branch() {
    let m = graph(
        json!([4]),
        json!([
            {"name": "a", "type": "linear", "out_features": 3},
            {"name": "b", "type": "linear", "out_features": 2, "inputs": ["input"]},
            {"name": "dead", "type": "linear", "out_features": 2, "inputs": ["input"]},
            {"name": "both", "type": "concat", "inputs": ["a", "b"]}
        ]),
        Some(json!(["both", "a"])),
    );
    let r = post("/v1/gradient-diagnostics", json!({"model": m, "objective": {"output_unit": 7}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["unused_layers"], json!(["dead"]));
    let paths: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["a", "b"]);
    assert_eq!(v["model"]["output_shapes"], json!([[5], [3]]));
    // unit 7 is the second output's unit 2: only a's weights row 2 gets a gradient, b gets none
    assert_eq!(item(&v["layers"], "path", "b")["weight_grad"]["frobenius"], 0.0);
    assert_ne!(item(&v["layers"], "path", "a")["weight_grad"]["frobenius"], 0.0);
    assert!(v["layers"][0]["bias_grad_bound"].is_null(), "a graph is not an MLP chain: no bound");
    assert_problem(
        &post("/v1/gradient-diagnostics", json!({"model": m, "objective": {"output_unit": 8}})).await,
        422,
        "/objective/output_unit",
    );
    assert_problem(
        &post("/v1/gradient-diagnostics", json!({"model": m, "sweep": {"depths": [1, 2]}})).await,
        422,
        "/sweep/depths",
    );
}

/// Grading addresses a graph's layers by node name, in every question kind.
#[tokio::test]
async fn grading_reads_graph_nodes_by_name() {
    let m = graph(
        json!([3, 8, 8]),
        json!([
            {"name": "stem", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
            {"name": "side", "type": "conv2d", "out_channels": 4, "kernel_size": 1, "inputs": ["input"]},
            {"name": "join", "type": "add", "inputs": ["stem", "side"]}
        ]),
        None,
    );
    let q = |id: &str, ask: &str, answer: Value| json!({"id": id, "kind": "complexity", "model": m, "ask": ask, "answer": answer});
    let r = post(
        "/v1/grade",
        json!({"questions": [
            q("stem", "params of layer stem", json!(4 * 27 + 4)),
            q("side", "params of layer side", json!(4 * 3 + 4)),
            q("total", "total params", json!(4 * 27 + 4 + 16)),
            q("wrong", "params of layer side", json!(4 * 3))
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let score = |id: &str| item(&v["questions"], "id", id)["score"].as_f64().unwrap();
    assert_eq!((score("stem"), score("side"), score("total")), (1.0, 1.0, 1.0), "{v}");
    assert!(score("wrong") < 1.0);
}

/// Twenty squeeze-and-excitation gates in a row: the probe's sums of path counts would
/// overflow float64 if it multiplied as the network does; it adds (the same paths) and agrees.
#[tokio::test]
async fn the_probe_survives_many_gates_and_verifies_mobilenet_v3_small() {
    let mut nodes = Vec::new();
    let mut x = "input".to_string();
    for i in 0..20 {
        let n = |s: &str| format!("b{i}.{s}");
        nodes.push(json!({"name": n("conv"), "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "inputs": [x]}));
        nodes.push(json!({"name": n("pool"), "type": "adaptive_avgpool2d", "output_size": 1}));
        nodes.push(json!({"name": n("fc"), "type": "conv2d", "out_channels": 4, "kernel_size": 1}));
        nodes.push(json!({"name": n("gate"), "type": "mul", "inputs": [n("fc"), n("conv")]}));
        x = n("gate");
    }
    let m = json!({"input_shape": [4, 12, 12], "graph": {"nodes": nodes}});
    let v = post("/v1/receptive-field", json!({"model": m})).await.json();
    assert_eq!(v["verification"]["overflow"], false, "{}", v["verification"]);
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    let v = post("/v1/receptive-field", json!({"model": {"preset": "mobilenet_v3_small"}}))
        .await
        .json();
    assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    assert_eq!(v["verification"]["executed"]["rows"], json!([[0, 223]]));
}

/// Attention written with matmuls, counted by hand: q @ k^T on 5 tokens of 4 features is 5x5
/// outputs of 4 products; softmax(.) @ v is 5x4 outputs of 5; by a learned [4, 2] matrix 5x2 of
/// 4. FlopCounterMode counts each as 2 per product (mm/bmm).
#[tokio::test]
async fn attention_by_matmul_by_hand() {
    let m = graph(
        json!([5, 3]),
        attention_nodes(json!([
            {"name": "attn", "type": "softmax", "dim": -1},
            {"name": "context", "type": "matmul", "inputs": ["attn", "v"]},
            {"name": "w", "type": "parameter", "shape": [4, 2]},
            {"name": "out", "type": "matmul", "inputs": ["context", "w"]}
        ])),
        None,
    );
    let t = complexity(m.clone()).await;
    assert_eq!(row(&t, "scores")["output_shape"], json!([5, 5]));
    assert_eq!(row(&t, "scores")["macs"], 25 * 4);
    // additions by the default convention: one per product (accumulate into zero)
    assert_eq!(row(&t, "scores")["additions"], 25 * 4);
    assert_eq!(row(&t, "context")["macs"], 20 * 5);
    assert_eq!(row(&t, "out")["macs"], 10 * 4);
    assert_eq!(row(&t, "out")["params"], 0);
    assert_eq!(row(&t, "w")["params"], 8);
    let tfc = post(
        "/v1/complexity",
        json!({"model": m.clone(), "profile": "torch_flop_counter", "verify": false}),
    )
    .await
    .json();
    assert_eq!(tfc["totals"]["flops"], 2 * (3 * 5 * 3 * 4 + 100 + 100 + 40));
    // output token 2 reads every token (through k^T and v) and every feature
    let v = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "out", "index": [2]}}),
    )
    .await
    .json();
    assert_eq!(v["position"]["input_tokens"], json!([[0, 4]]));
    assert_eq!(v["position"]["input_features"], json!([[0, 2]]));
    assert_eq!(v["verification"]["agrees"], true);
    // x @ W by a learned matrix reads token by token, as a linear layer
    let tokenwise = graph(
        json!([6, 3]),
        json!([{"name": "w", "type": "parameter", "shape": [3, 2]}, {"name": "xw", "type": "matmul", "inputs": ["input", "w"]}]),
        None,
    );
    let v = post(
        "/v1/receptive-field",
        json!({"model": tokenwise, "position": {"layer": "xw", "index": [4]}}),
    )
    .await
    .json();
    assert_eq!(item(&v["layers"], "path", "xw")["kind"], "token");
    assert_eq!(v["position"]["input_tokens"], json!([[4, 4]]));
}

#[tokio::test]
async fn matmul_mistakes_name_the_node() {
    let two = |a: Value, b: Value| {
        graph(
            json!([4, 3]),
            json!([{"name": "a", "type": "parameter", "shape": a}, {"name": "b", "type": "parameter", "shape": b},
                   {"name": "mm", "type": "matmul", "inputs": ["a", "b"]}]),
            None,
        )
    };
    let d = refused(two(json!([2, 3]), json!([4, 5])), 422, "/model/graph/nodes/2/inputs").await;
    assert!(
        d.contains("node \"mm\" multiplies a [2, 3], b [4, 5]: the first's columns must equal the second's rows"),
        "{d}"
    );
    // a batch of matrices (attention's heads): each pair multiplied, 2 x 3 x 5 outputs of 4 MACs
    let t = complexity(two(json!([2, 3, 4]), json!([2, 4, 5]))).await;
    assert_eq!(
        (row(&t, "mm")["output_shape"].clone(), row(&t, "mm")["macs"].as_u64()),
        (json!([2, 3, 5]), Some(120))
    );
    let d = refused(two(json!([2, 3, 4]), json!([3, 4, 5])), 422, "/model/graph/nodes/2/inputs").await;
    assert!(d.contains("the batches agree"), "{d}");
    let d = refused(two(json!([2, 3, 4]), json!([4, 5])), 422, "/model/graph/nodes/2/inputs").await;
    assert!(d.contains("reads tensors with different numbers of axes"), "{d}");
    let d = refused(two(json!([24]), json!([24])), 422, "/model/graph/nodes/2/inputs").await;
    assert!(
        d.contains("matmul takes two-axis samples [n, k] @ [k, m] or batches of them"),
        "{d}"
    );
    let m = graph(json!([4, 3]), json!([{"name": "mm", "type": "matmul", "inputs": ["input"]}]), None);
    let d = refused(m, 422, "/model/graph/nodes/0/inputs").await;
    assert!(d.contains("a matmul node reads two tensors, got 1 names"), "{d}");
    let seq = json!({"input_shape": [4, 3], "layers": [{"type": "matmul"}]});
    let d = refused(seq, 422, "/model/layers/0/type").await;
    assert!(d.contains("describe the model as a \"graph\""), "{d}");
}

/// A concatenation whose output has more than 2^64 elements (found by hostile.py: 2,000 copies
/// of a [2^20, 2^20, 2^20] input) is a 422 naming the node, not an overflow.
#[tokio::test]
async fn a_tensor_past_64_bits_is_refused_naming_the_node() {
    let big = 1u64 << 20;
    let m = graph(
        json!([big, big, big]),
        json!([{"name": "a", "type": "cat", "inputs": vec!["input"; 16]}]),
        None,
    );
    let d = refused(m, 422, "/model/graph/nodes/0").await;
    assert!(
        d.contains("concat a would have shape [16777216, 1048576, 1048576]: more elements than 2^64"),
        "{d}"
    );
}

/// Reshapes by hand. [1, 4, 4] read as [2, 2, 4]: channel 1 of the reshape is input rows 2..3,
/// so a 1x1 conv over both channels at (0, 0) reads flat indices 0 and 8, rows 0 and 2 of
/// column 0 (a set with a hole). A decoder: 16 features, a linear layer to 32, unflattened to
/// [2, 4, 4], a transposed conv 2->1 (k 2, s 2) to [1, 8, 8]; every unit reads every feature.
#[tokio::test]
async fn reshapes_by_hand() {
    let m = graph(
        json!([1, 4, 4]),
        json!([
            {"name": "fold", "type": "reshape", "shape": [2, 2, -1]},
            {"name": "mix", "type": "conv2d", "out_channels": 1, "kernel_size": 1, "bias": false},
            {"name": "flat", "type": "flatten", "start_dim": 2, "inputs": ["fold"]},
            {"name": "back", "type": "unflatten", "dim": -1, "unflattened_size": [2, 4]}
        ]),
        Some(json!(["mix", "back"])),
    );
    let r = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "mix", "index": [0, 0]}}),
    )
    .await
    .json();
    assert_eq!(r["position"]["input_rows"], json!([[0, 0], [2, 2]]), "{r}");
    assert_eq!(r["position"]["input_cols"], json!([[0, 0]]));
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    assert_eq!(item(&r["layers"], "path", "fold")["kind"], "not_affine");
    assert_eq!(item(&r["layers"], "path", "fold")["output_shape"], json!([2, 2, 4]));
    // flatten(2) then unflatten back: [2, 8] -> [2, 2, 4]; unit (1, 3) of channel 1 is flat 15
    let r = post(
        "/v1/receptive-field",
        json!({"model": m, "position": {"layer": "back", "index": [1, 3], "channel": 1}}),
    )
    .await
    .json();
    assert_eq!(r["position"]["input_rows"], json!([[3, 3]]), "{r}");
    assert_eq!(r["position"]["input_cols"], json!([[3, 3]]));
    let t = complexity(m).await;
    assert_eq!(row(&t, "fold")["flops"], 0);
    assert_eq!(row(&t, "mix")["params"], 2);
    let decoder = graph(
        json!([16]),
        json!([
            {"name": "fc", "type": "linear", "out_features": 32},
            {"name": "img", "type": "unflatten", "dim": 1, "unflattened_size": [2, 4, 4]},
            {"name": "up", "type": "conv_transpose2d", "out_channels": 1, "kernel_size": 2, "stride": 2}
        ]),
        None,
    );
    let t = complexity(decoder.clone()).await;
    assert_eq!(row(&t, "fc")["params"], 16 * 32 + 32);
    assert_eq!(row(&t, "img")["output_shape"], json!([2, 4, 4]));
    assert_eq!(row(&t, "up")["output_shape"], json!([1, 8, 8]));
    assert_eq!(row(&t, "up")["params"], 2 * 2 * 2 + 1);
    let r = post(
        "/v1/receptive-field",
        json!({"model": decoder.clone(), "position": {"layer": "up", "index": [5, 2]}}),
    )
    .await
    .json();
    assert_eq!(r["position"]["input_features"], json!([[0, 15]]), "{r}");
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    let d = post("/v1/gradient-diagnostics", json!({"model": decoder, "inputs": {"batch_size": 2}})).await;
    assert_eq!(d.status, 200, "{}", d.text);
}

/// A ShuffleNet unit by hand, on an input of 4 channels (6x6): x.chunk(2, 1) as two narrows
/// (channels 0..1 and 2..3), a depthwise 3x3 conv (padding 1) on the second half, concatenated
/// and shuffled in 2 groups. The shuffle sends output channel o to input channel
/// (o % 2) * 2 + o / 2: 0 <- 0, 1 <- 2, 2 <- 1, 3 <- 3. So at (2, 2): output channel 1 is the
/// conv's channel 0, which reads input channel 2 over rows and columns 1..3; output channel 2 is
/// the untouched input channel 1 at (2, 2) alone. Narrows and the shuffle count nothing.
#[tokio::test]
async fn a_shufflenet_unit_by_hand() {
    let m = graph(
        json!([4, 6, 6]),
        json!([
            {"name": "left", "type": "narrow", "dim": 1, "start": 0, "length": 2, "inputs": ["input"]},
            {"name": "right", "type": "narrow", "dim": 1, "start": 2, "length": 2, "inputs": ["input"]},
            {"name": "dw", "type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1, "groups": 2, "inputs": ["right"]},
            {"name": "cat", "type": "concat", "inputs": ["left", "dw"]},
            {"name": "shuffle", "type": "channel_shuffle", "groups": 2}
        ]),
        None,
    );
    let unit = |channel: u64| {
        let m = m.clone();
        async move {
            let r = post(
                "/v1/receptive-field",
                json!({"model": m, "position": {"layer": "shuffle", "index": [2, 2], "channel": channel}}),
            )
            .await
            .json();
            assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
            let p = &r["position"];
            (p["input_channels"].clone(), p["input_rows"].clone(), p["input_cols"].clone())
        }
    };
    assert_eq!(unit(0).await, (json!([[0, 0]]), json!([[2, 2]]), json!([[2, 2]])));
    assert_eq!(unit(1).await, (json!([[2, 2]]), json!([[1, 3]]), json!([[1, 3]])));
    assert_eq!(unit(2).await, (json!([[1, 1]]), json!([[2, 2]]), json!([[2, 2]])));
    assert_eq!(unit(3).await, (json!([[3, 3]]), json!([[1, 3]]), json!([[1, 3]])));
    let t = post("/v1/complexity", json!({"model": m})).await.json();
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    for path in ["left", "right", "shuffle"] {
        assert_eq!(
            (row(&t, path)["flops"].as_u64(), row(&t, path)["params"].as_u64()),
            (Some(0), Some(0))
        );
    }
    assert_eq!(row(&t, "left")["output_shape"], json!([2, 6, 6]));
    // the depthwise conv's 2 x 9 weights and 2 biases are the parameters
    assert_eq!(t["totals"]["params"], 20);
    // mistakes name the field
    let bad = |mut node: Value| {
        node["name"] = json!("x");
        graph(json!([4, 6, 6]), json!([node]), None)
    };
    refused(
        bad(json!({"type": "narrow", "dim": 1, "start": 3, "length": 2})),
        422,
        "/model/graph/nodes/0/length",
    )
    .await;
    refused(
        bad(json!({"type": "narrow", "dim": 5, "start": 0, "length": 2})),
        422,
        "/model/graph/nodes/0/dim",
    )
    .await;
    refused(
        bad(json!({"type": "channel_shuffle", "groups": 3})),
        422,
        "/model/graph/nodes/0/groups",
    )
    .await;
    let sequence = json!({"input_shape": [5, 4], "layers": [{"type": "channel_shuffle", "groups": 2}]});
    refused(sequence, 422, "/model/layers/0/groups").await;
}

/// Crops of a signal and of a sequence, by hand.
///
/// Signal `[2, 20]`: conv1d k3 (18 positions, i..i+2), positions 4..9 (`x[:, :, 4:10]`: output
/// position i is conv position i+4, range i+4 <= m <= i+6), channels 1..2, a 2-wide max pool
/// (2i+4 <= m <= 2i+7): pool position 1 reads input positions 6..9 of both input channels.
///
/// Sequence `[6, 4]`: a linear layer (token by token), tokens 0..3 (`t = i` still), causal
/// attention (`0 <= t <= i`), features 1..2 (still causal), tokens 2..3: output token i is
/// attention token i+2, no longer a prefix of itself (`not_affine`); its token 1 reads input
/// tokens 0..3, every feature. Attention without a mask after the first crop reads tokens 0..3
/// only: not `global`, and a linear layer after a 7x7 image's 2x2 pool reads rows and columns
/// 0..5 only (the pool leaves the last ones unread).
#[tokio::test]
async fn crops_of_a_signal_and_a_sequence_by_hand() {
    let signal = json!({"input_shape": [2, 20], "layers": [
        {"type": "conv1d", "out_channels": 3, "kernel_size": 3},
        {"type": "narrow", "dim": 2, "start": 4, "length": 6},
        {"type": "narrow", "dim": -2, "start": 1, "length": 2},
        {"type": "maxpool1d", "kernel_size": 2}
    ]});
    let r = post("/v1/receptive-field", json!({"model": signal, "position": {"index": [1]}}))
        .await
        .json();
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    assert_eq!(
        (&r["position"]["input_positions"], &r["position"]["input_channels"]),
        (&json!([[6, 9]]), &json!([[0, 1]]))
    );
    let text = |r: &Value, path: &str| item(&r["layers"], "path", path)["receptive_field"]["length"]["text"].clone();
    assert_eq!(text(&r, "1"), "i+4 <= m <= i+6");
    assert_eq!(text(&r, "2"), "i+4 <= m <= i+6");
    assert_eq!(text(&r, "3"), "2i+4 <= m <= 2i+7");
    assert_eq!(item(&r["layers"], "path", "2")["output_shape"], json!([2, 6]));
    let t = post("/v1/complexity", json!({"model": signal})).await.json();
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    assert_eq!(
        (row(&t, "1")["flops"].as_u64(), row(&t, "1")["params"].as_u64()),
        (Some(0), Some(0))
    );

    let sequence = json!({"input_shape": [6, 4], "layers": [
        {"type": "linear", "out_features": 4},
        {"type": "narrow", "dim": 1, "start": 0, "length": 4},
        {"type": "multihead_attention", "embed_dim": 4, "num_heads": 2, "is_causal": true},
        {"type": "narrow", "dim": -1, "start": 1, "length": 2},
        {"type": "narrow", "dim": 1, "start": 2, "length": 2}
    ]});
    let r = post("/v1/receptive-field", json!({"model": sequence, "position": {"index": [1]}}))
        .await
        .json();
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    assert_eq!(
        (&r["position"]["input_tokens"], &r["position"]["input_features"]),
        (&json!([[0, 3]]), &json!([[0, 3]]))
    );
    let kind = |r: &Value, path: &str| item(&r["layers"], "path", path)["kind"].clone();
    let kinds: Vec<Value> = (0..5).map(|i| kind(&r, &i.to_string())).collect();
    assert_eq!(kinds, ["token", "token", "causal", "causal", "not_affine"].map(Value::from));
    assert_eq!(item(&r["layers"], "path", "1")["tokens"]["text"], "t = i");
    assert_eq!(item(&r["layers"], "path", "3")["tokens"]["text"], "0 <= t <= i");
    assert_eq!(item(&r["layers"], "path", "4")["output_shape"], json!([2, 2]));
    let t = post("/v1/complexity", json!({"model": sequence})).await.json();
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    // the linear layer's 4 x 4 + 4 and attention's in_proj (12 x 4 + 12) and out_proj (4 x 4 + 4)
    assert_eq!(t["totals"]["params"], 20 + 60 + 20);

    // every output reads all of its input, which is not the whole model input
    let cropped = json!({"input_shape": [6, 4], "layers": [
        {"type": "narrow", "dim": 1, "start": 0, "length": 4},
        {"type": "multihead_attention", "embed_dim": 4, "num_heads": 2}
    ]});
    let r = post("/v1/receptive-field", json!({"model": cropped, "position": {"index": [0]}}))
        .await
        .json();
    assert_eq!(kind(&r, "1"), "not_affine");
    assert_eq!(r["position"]["input_tokens"], json!([[0, 3]]));
    let pooled = json!({"input_shape": [1, 7, 7], "layers": [
        {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"}, {"type": "linear", "out_features": 2}
    ]});
    let r = post("/v1/receptive-field", json!({"model": pooled, "position": {"index": [0]}}))
        .await
        .json();
    assert_eq!(kind(&r, "2"), "not_affine");
    assert_eq!(
        (&r["position"]["input_rows"], &r["position"]["input_cols"]),
        (&json!([[0, 5]]), &json!([[0, 5]]))
    );
    // an 8x8 image's pool reads every position: global
    let mut whole = pooled.clone();
    whole["input_shape"] = json!([1, 8, 8]);
    let r = post("/v1/receptive-field", json!({"model": whole, "position": {"index": [0]}}))
        .await
        .json();
    assert_eq!(kind(&r, "2"), "global");
    // a channel shuffle on a two-axis tensor is still refused; a crop past the end is named
    refused(
        json!({"input_shape": [6, 4], "layers": [{"type": "narrow", "dim": 1, "start": 4, "length": 3}]}),
        422,
        "/model/layers/0/length",
    )
    .await;
}

/// The original U-Net's skip, by hand: 3x3 valid conv on 12x12 (10x10, rows r..r+2), a 2x2 max
/// pool (5x5), a 3x3 valid conv (3x3), a 2x2 stride-2 transposed conv (6x6); the skip cropped to
/// its centre (rows and columns 2..7 of the 10x10) and concatenated. Crop row i is conv row i + 2,
/// which reads input rows i+2..i+4: its range is i+2 <= m <= i+4 (zero-based), and the unit (0, 0)
/// reads rows and columns 2..4.
#[tokio::test]
async fn the_original_unets_cropped_skip_by_hand() {
    let m = graph(
        json!([1, 12, 12]),
        json!([
            {"name": "enc", "type": "conv2d", "out_channels": 2, "kernel_size": 3},
            {"name": "down", "type": "maxpool2d", "kernel_size": 2},
            {"name": "deep", "type": "conv2d", "out_channels": 2, "kernel_size": 3},
            {"name": "up", "type": "conv_transpose2d", "out_channels": 2, "kernel_size": 2, "stride": 2},
            {"name": "rows", "type": "narrow", "dim": 2, "start": 2, "length": 6, "inputs": ["enc"]},
            {"name": "crop", "type": "narrow", "dim": -1, "start": 2, "length": 6},
            {"name": "cat", "type": "concat", "inputs": ["crop", "up"]}
        ]),
        None,
    );
    let r = post(
        "/v1/receptive-field",
        json!({"model": m, "index_base": 0, "position": {"layer": "cat", "index": [0, 0], "channel": 1}}),
    )
    .await
    .json();
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    assert_eq!(
        (&r["position"]["input_rows"], &r["position"]["input_cols"]),
        (&json!([[2, 4]]), &json!([[2, 4]]))
    );
    let layer = |path: &str| item(&r["layers"], "path", path).clone();
    assert_eq!(layer("rows")["receptive_field"]["height"]["text"], "i+2 <= m <= i+4");
    assert_eq!(layer("rows")["receptive_field"]["width"]["text"], "j <= n <= j+2");
    assert_eq!(layer("crop")["receptive_field"]["width"]["text"], "j+2 <= n <= j+4");
    assert_eq!(layer("crop")["output_shape"], json!([2, 6, 6]));
    let t = post("/v1/complexity", json!({"model": m})).await.json();
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    assert_eq!(
        (row(&t, "crop")["flops"].as_u64(), row(&t, "crop")["params"].as_u64()),
        (Some(0), Some(0))
    );
    // past the edge, or a dim the tensor does not have: named
    let bad = |node: Value| graph(json!([1, 12, 12]), json!([node]), None);
    refused(
        bad(json!({"name": "x", "type": "narrow", "dim": 2, "start": 8, "length": 6})),
        422,
        "/model/graph/nodes/0/length",
    )
    .await;
    refused(
        bad(json!({"name": "x", "type": "narrow", "dim": 4, "start": 0, "length": 6})),
        422,
        "/model/graph/nodes/0/dim",
    )
    .await;
}

/// `scale` by hand: `x * 0.25` after a 3x3 conv on [1, 6, 6] (2 filters: 2 x 4 x 4 = 32
/// outputs). One multiplication per element (32), FLOPs 0 by default and 32 under
/// `count_residual_adds` (as a `mul`), 0 in every tool's profile with fvcore's note; the range
/// is the conv's; attention by hand in a graph (q @ k^T scaled) runs the probe; a factor of 0,
/// a missing one or a string is a 422 naming the field.
#[tokio::test]
async fn scale_by_hand() {
    let m = json!({"input_shape": [1, 6, 6], "layers": [
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
        {"type": "scale", "factor": 0.25}
    ]});
    let t = post("/v1/complexity", json!({"model": m})).await.json();
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    let s = row(&t, "1");
    assert_eq!(
        (s["multiplications"].as_u64(), s["flops"].as_u64(), s["params"].as_u64()),
        (Some(32), Some(0), Some(0))
    );
    let t = post("/v1/complexity", json!({"model": m, "conventions": {"count_residual_adds": true}}))
        .await
        .json();
    assert_eq!(row(&t, "1")["flops"], 32);
    let t = post("/v1/complexity", json!({"model": m, "profile": "fvcore"})).await.json();
    assert_eq!(row(&t, "1")["flops"], 0);
    assert!(row(&t, "1")["note"].as_str().unwrap().contains("aten::mul"), "{}", row(&t, "1"));
    let r = post("/v1/receptive-field", json!({"model": m, "position": {"index": [1, 2]}}))
        .await
        .json();
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    assert_eq!(
        item(&r["layers"], "path", "1")["receptive_field"]["height"]["text"],
        "i <= m <= i+2"
    );
    assert_eq!(
        (&r["position"]["input_rows"], &r["position"]["input_cols"]),
        (&json!([[1, 3]]), &json!([[2, 4]]))
    );
    // softmax(q @ k^T / sqrt(4)) @ v on a sequence [5, 4]: token 2 reads every token
    let attention = graph(
        json!([5, 4]),
        attention_nodes(json!([
            {"name": "scaled", "type": "scale", "factor": 0.5},
            {"name": "weights", "type": "softmax", "dim": -1},
            {"name": "out", "type": "matmul", "inputs": ["weights", "v"]}
        ])),
        None,
    );
    let r = post(
        "/v1/receptive-field",
        json!({"model": attention, "position": {"layer": "out", "index": [2], "channel": 1}}),
    )
    .await
    .json();
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    assert_eq!(r["position"]["input_tokens"], json!([[0, 4]]));
    for (factor, why) in [(json!(0), "factor"), (json!("2"), "factor")] {
        let bad = json!({"input_shape": [1, 6, 6], "layers": [{"type": "scale", "factor": factor}]});
        refused(bad, 422, &format!("/model/layers/0/{why}")).await;
    }
    refused(
        json!({"input_shape": [1, 6, 6], "layers": [{"type": "scale"}]}),
        422,
        "/model/layers/0/factor",
    )
    .await;
}

/// Multi-head causal self-attention written by hand, as nanoGPT writes it, on a sequence [6, 8]:
/// a fused qkv projection split by three narrows, each viewed as [6, 2, 4] and moved to
/// [2, 6, 4] (k straight to [2, 4, 6] by one permute), the scores scaled and masked, softmax,
/// @ v, the heads moved back and merged, an output projection.
fn heads_by_hand(mask: bool) -> Value {
    let mut nodes = vec![
        json!({"name": "c_attn", "type": "linear", "out_features": 24, "inputs": ["input"]}),
        json!({"name": "q", "type": "narrow", "dim": 2, "start": 0, "length": 8, "inputs": ["c_attn"]}),
        json!({"name": "k", "type": "narrow", "dim": -1, "start": 8, "length": 8, "inputs": ["c_attn"]}),
        json!({"name": "v", "type": "narrow", "dim": 2, "start": 16, "length": 8, "inputs": ["c_attn"]}),
        json!({"name": "qh", "type": "reshape", "shape": [6, 2, 4], "inputs": ["q"]}),
        json!({"name": "kh", "type": "reshape", "shape": [-1, 2, 4], "inputs": ["k"]}),
        json!({"name": "vh", "type": "reshape", "shape": [6, 2, 4], "inputs": ["v"]}),
        json!({"name": "qt", "type": "transpose", "dim0": 1, "dim1": 2, "inputs": ["qh"]}),
        json!({"name": "kt", "type": "permute", "dims": [0, 2, 3, 1], "inputs": ["kh"]}),
        json!({"name": "vt", "type": "permute", "dims": [0, 2, 1, 3], "inputs": ["vh"]}),
        json!({"name": "scores", "type": "matmul", "inputs": ["qt", "kt"]}),
        json!({"name": "scaled", "type": "scale", "factor": 0.5}),
    ];
    if mask {
        nodes.push(json!({"name": "masked", "type": "causal_mask"}));
    }
    nodes.extend([
        json!({"name": "attn", "type": "softmax", "dim": -1}),
        json!({"name": "context", "type": "matmul", "inputs": ["attn", "vt"]}),
        json!({"name": "back", "type": "transpose", "dim0": -3, "dim1": -2}),
        json!({"name": "merged", "type": "reshape", "shape": [6, 8]}),
        json!({"name": "c_proj", "type": "linear", "out_features": 8}),
    ]);
    graph(json!([6, 8]), Value::Array(nodes), None)
}

#[tokio::test]
async fn multi_head_attention_by_hand() {
    let causal = heads_by_hand(true);
    let t = post("/v1/complexity", json!({"model": causal, "profile": "torch_flop_counter"}))
        .await
        .json();
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    // by hand: c_attn 2*6*8*24, each batched matmul 2*(2 heads)*6*6*4, c_proj 2*6*8*8
    let flops = |p: &str| row(&t, p)["flops"].as_u64().unwrap();
    assert_eq!(
        (flops("c_attn"), flops("scores"), flops("context"), flops("c_proj")),
        (2304, 576, 576, 768)
    );
    assert_eq!(
        (t["totals"]["flops"].as_u64(), t["totals"]["params"].as_u64()),
        (Some(4224), Some(288))
    );
    assert_eq!(row(&t, "kt")["output_shape"], json!([2, 4, 6]));
    assert_eq!(row(&t, "back")["output_shape"], json!([6, 2, 4]));
    assert_eq!(
        (row(&t, "masked")["flops"].as_u64(), row(&t, "masked")["type"].as_str()),
        (Some(0), Some("causal_mask"))
    );
    // token i of the output reads tokens 0..i under the mask, every token without it
    for (model, last) in [(&causal, None), (&heads_by_hand(false), Some(5))] {
        for i in 0..6u64 {
            let r = post(
                "/v1/receptive-field",
                json!({"model": model, "position": {"layer": "c_proj", "index": [i], "channel": 3}}),
            )
            .await
            .json();
            assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
            assert_eq!(r["position"]["input_tokens"], json!([[0, last.unwrap_or(i)]]), "token {i}");
        }
    }
    // the per-layer kinds: the tokens move with their axis through the heads ([6, 2, 4] on 0,
    // [2, 6, 4] on 1, k transposed [2, 4, 6] on 2); the scores read a query and a key token, no
    // range of one index; the causal softmax's output (h, i, j) reads tokens 0..i (0 above the
    // diagonal: nothing), and so does every layer after it; without the mask every token
    for (model, after) in [(&causal, ("causal", "0 <= t <= i")), (&heads_by_hand(false), ("global", ""))] {
        let r = post("/v1/receptive-field", json!({"model": model, "verify": false})).await.json();
        let layer = |p: &str| item(&r["layers"], "path", p).clone();
        for (path, axis) in [("q", 0), ("qh", 0), ("qt", 1), ("kt", 2), ("vt", 1)] {
            let l = layer(path);
            assert_eq!(
                (l["kind"].as_str(), l["tokens"]["text"].as_str()),
                (Some("token"), Some("t = i")),
                "{path}: {l}"
            );
            assert_eq!(l["tokens"].get("axis").map_or(0, |a| a.as_u64().unwrap()), axis, "{path}: {l}");
        }
        assert_eq!(layer("scores")["kind"], "not_affine");
        assert!(layer("scores")["note"].as_str().unwrap().contains("query token i and key token j"));
        for path in ["attn", "context", "back", "merged", "c_proj"] {
            let l = layer(path);
            assert_eq!(l["kind"], after.0, "{path}: {l}");
            if after.0 == "causal" {
                assert_eq!(l["tokens"]["text"], after.1, "{path}: {l}");
                let axis = if matches!(path, "attn" | "context") { 1 } else { 0 };
                assert_eq!(l["tokens"].get("axis").map_or(0, |a| a.as_u64().unwrap()), axis, "{path}: {l}");
            }
        }
    }
    // nanoGPT's attn_dropout between the softmax and @ v keeps the softmax's zeros zeros
    let mut dropped = causal.clone();
    let nodes = dropped["graph"]["nodes"].as_array_mut().unwrap();
    nodes.insert(14, json!({"name": "drop", "type": "dropout", "p": 0.1}));
    nodes[15]["inputs"] = json!(["drop", "vt"]);
    let r = post(
        "/v1/receptive-field",
        json!({"model": dropped, "position": {"layer": "c_proj", "index": [2], "channel": 3}}),
    )
    .await
    .json();
    assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
    assert_eq!(r["position"]["input_tokens"], json!([[0, 2]]));
    // above the diagonal the mask's and the softmax's outputs are constants (-inf, 0): they read
    // nothing; on it, the query's token and the keys up to it
    for (layer, index, tokens) in [
        ("masked", [1, 3], json!([])),
        ("attn", [1, 3], json!([])),
        ("attn", [3, 1], json!([[0, 3]])),
    ] {
        let r = post(
            "/v1/receptive-field",
            json!({"model": causal, "position": {"layer": layer, "index": index, "channel": 1}}),
        )
        .await
        .json();
        assert_eq!(r["verification"]["agrees"], true, "{layer} {index:?}: {}", r["verification"]);
        assert_eq!(r["position"]["input_tokens"], tokens, "{layer} {index:?}");
    }
    // every mistake names its field
    let with = |name: &str, patch: Value| {
        let mut m = causal.clone();
        let nodes = m["graph"]["nodes"].as_array_mut().unwrap();
        let n = nodes.iter_mut().find(|n| n["name"] == name).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            n[k] = v.clone();
        }
        m
    };
    for (name, patch, pointer) in [
        ("kt", json!({"dims": [1, 0, 2, 3]}), "/model/graph/nodes/8/dims/0"),
        ("kt", json!({"dims": [0, 2, 2, 1]}), "/model/graph/nodes/8/dims"),
        ("kt", json!({"dims": [0, 2, 1]}), "/model/graph/nodes/8/dims"),
        ("kt", json!({"dims": [0, 2, 1, "3"]}), "/model/graph/nodes/8/dims/3"),
        ("qt", json!({"dim0": 0}), "/model/graph/nodes/7/dim0"),
        ("qt", json!({"dim1": 4}), "/model/graph/nodes/7/dim1"),
        ("vt", json!({"dims": [0, 1, 2, 3]}), "/model/graph/nodes/14/inputs"),
    ] {
        refused(with(name, patch), 422, pointer).await;
    }
    refused(
        json!({"input_shape": [6], "layers": [{"type": "causal_mask"}]}),
        422,
        "/model/layers/0",
    )
    .await;
}

/// F.scaled_dot_product_attention on the heads (nanoGPT's flash path), by hand: the same
/// attention as `heads_by_hand`, one node reading q, k and v [2, 6, 4].
#[tokio::test]
async fn scaled_dot_product_attention_by_hand() {
    let flash = |causal: bool, scale: Option<f64>| {
        let mut nodes: Vec<Value> = heads_by_hand(false)["graph"]["nodes"].as_array().unwrap()[..10].to_vec();
        nodes[8] = json!({"name": "kt", "type": "transpose", "dim0": 1, "dim1": 2, "inputs": ["kh"]});
        let mut sdpa = json!({"name": "sdpa", "type": "scaled_dot_product_attention", "is_causal": causal, "inputs": ["qt", "kt", "vt"]});
        if let Some(s) = scale {
            sdpa["scale"] = json!(s);
        }
        nodes.extend([
            sdpa,
            json!({"name": "back", "type": "transpose", "dim0": 1, "dim1": 2}),
            json!({"name": "merged", "type": "reshape", "shape": [6, 8]}),
            json!({"name": "c_proj", "type": "linear", "out_features": 8}),
        ]);
        graph(json!([6, 8]), Value::Array(nodes), None)
    };
    // counts: q k^T and the weights times v, 2 heads x 6 x 6 x (4 + 4) MACs; FlopCounterMode,
    // fvcore and ptflops count none of it on CPU, and say so
    let t = post(
        "/v1/complexity",
        json!({"model": flash(true, None), "conventions": {"flops": "mac"}}),
    )
    .await
    .json();
    assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
    assert_eq!(row(&t, "sdpa")["output_shape"], json!([2, 6, 4]));
    assert_eq!(row(&t, "sdpa")["macs"], 576);
    for profile in ["torch_flop_counter", "fvcore", "ptflops"] {
        let t = post("/v1/complexity", json!({"model": flash(true, None), "profile": profile}))
            .await
            .json();
        assert_eq!(row(&t, "sdpa")["flops"], 0, "{profile}");
        assert!(
            row(&t, "sdpa")["note"]
                .as_str()
                .is_some_and(|n| n.contains("scaled_dot_product_attention")),
            "{profile}"
        );
    }
    let t = post("/v1/complexity", json!({"model": flash(true, None), "profile": "torchvision"})).await;
    assert_problem(&t, 422, "/model/graph/nodes/10");
    // token i reads tokens 0..i under is_causal, every token without it
    for (causal, scale) in [(true, None), (false, Some(0.3))] {
        for i in [0u64, 2, 5] {
            let r = post(
                "/v1/receptive-field",
                json!({"model": flash(causal, scale), "position": {"layer": "c_proj", "index": [i], "channel": 1}}),
            )
            .await
            .json();
            assert_eq!(r["verification"]["agrees"], true, "{}", r["verification"]);
            assert_eq!(r["position"]["input_tokens"], json!([[0, if causal { i } else { 5 }]]), "token {i}");
        }
    }
    // mistakes: a shape that does not fit, a scale of 0, two inputs, the sequential form
    let mut bad = flash(false, None);
    bad["graph"]["nodes"][10]["inputs"] = json!(["qt", "kh", "vt"]);
    let d = refused(bad, 422, "/model/graph/nodes/10/inputs").await;
    assert!(
        d.contains("scaled_dot_product_attention reads q [L, E], k [S, E], v [S, Ev]"),
        "{d}"
    );
    refused(flash(false, Some(0.0)), 422, "/model/graph/nodes/10/scale").await;
    let mut two = flash(false, None);
    two["graph"]["nodes"][10]["inputs"] = json!(["qt", "kt"]);
    refused(two, 422, "/model/graph/nodes/10/inputs").await;
    refused(
        json!({"input_shape": [6, 8], "layers": [{"type": "scaled_dot_product_attention"}]}),
        422,
        "/model/layers/0/type",
    )
    .await;
}
