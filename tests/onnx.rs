//! ONNX files in: hand-built files with hand-calculated answers (counts, and gradients that read
//! the file's weights), raw uploads and their limits, and hostile files, each a 4xx naming the
//! problem. (torchvision's and random networks exported by torch.onnx.export, against PyTorch:
//! tests/oracle/onnx_check.py, run by tests/socket.rs.)
mod common;
use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use common::*;
use layerscope::spec::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use layerscope::Config;
use prost::Message;
use serde_json::{json, Value};

fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: v.to_vec(),
        r#type: Some(AttributeType::Ints as i32),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(AttributeType::Int as i32),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn model(input: &[i64], nodes: Vec<NodeProto>, inits: Vec<TensorProto>, output: &str) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![value_info("x", input)],
            output: vec![value_info(output, &[])],
            name: Some("g".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `model`'s file with int64 token ids `[1, L]` for its input.
fn token_model(input: &[i64], nodes: Vec<NodeProto>, inits: Vec<TensorProto>, output: &str) -> Vec<u8> {
    let mut m = ModelProto::decode(model(input, nodes, inits, output).as_slice()).unwrap();
    let graph = m.graph.as_mut().unwrap();
    if let Some(type_proto::Value::TensorType(t)) = graph.input[0].r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.elem_type = Some(DataType::Int64 as i32);
    }
    m.encode_to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// x [1, 1, 5, 5] -> Conv(2 filters 3x3, pad 1) -> Relu -> Flatten -> Gemm(3 outputs).
fn conv_net() -> Vec<u8> {
    model(
        &[1, 1, 5, 5],
        vec![
            node(
                "Conv",
                "/conv/Conv",
                &["x", "conv.weight", "conv.bias"],
                "c",
                vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
            ),
            node("Relu", "/relu/Relu", &["c"], "r", vec![]),
            node("Flatten", "/Flatten", &["r"], "f", vec![int("axis", 1)]),
            node("Gemm", "/fc/Gemm", &["f", "fc.weight", "fc.bias"], "y", vec![int("transB", 1)]),
        ],
        vec![
            tensor("conv.weight", &[2, 1, 3, 3], &[0.1; 18]),
            tensor("conv.bias", &[2], &[0.0; 2]),
            tensor("fc.weight", &[3, 50], &[0.01; 150]),
            tensor("fc.bias", &[3], &[0.0; 3]),
        ],
        "y",
    )
}

async fn raw(path: &str, query: &str, bytes: Vec<u8>, config: Config) -> Reply {
    let req = Request::post(format!("{path}{query}"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes))
        .unwrap();
    send(config, req).await
}

#[tokio::test]
async fn a_hand_built_file_counts_as_calculated_by_hand_with_pytorch_module_names() {
    let r = post("/v1/complexity", json!({"model": {"onnx": b64(&conv_net())}, "verify": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    // conv: 2*1*9 weights + 2 biases; fc: 3*50 + 3. MACs: 2 filters x 25 positions x 9, and 150.
    assert_eq!(v["totals"]["params"], 20 + 153);
    assert_eq!(v["totals"]["macs"], 450 + 150);
    let paths: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["conv", "relu", "flatten", "fc"]);
    assert_eq!(v["verification"]["agrees"], true);
    // the same file uploaded raw, options in the query
    let r = raw(
        "/v1/complexity",
        "?request=%7B%22verify%22%3Afalse%7D",
        conv_net(),
        Config::default(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["totals"]["macs"], 600);
    // and the receptive field of the conv's centre unit: the 3x3 window around it
    let r = post(
        "/v1/receptive-field",
        json!({"model": {"onnx": b64(&conv_net())}, "position": {"layer": "conv", "index": [2, 2]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["position"]["input_rows"], json!([[1, 3]]));
}

/// Gradients read the file's weights: for y = W2 (W1 x) with W2 = [3, 4] and x = [1, 2], the
/// gradient of sum(y) by W1 is W2^T x^T = [[3, 6], [4, 8]], Frobenius sqrt(125), whatever W1.
#[tokio::test]
async fn diagnostics_use_the_files_weights_by_default() {
    let file = model(
        &[1, 2],
        vec![
            node("Gemm", "/l1/Gemm", &["x", "l1.weight"], "h", vec![int("transB", 1)]),
            node("Gemm", "/l2/Gemm", &["h", "l2.weight"], "y", vec![int("transB", 1)]),
        ],
        vec![
            tensor("l1.weight", &[2, 2], &[0.5, -1.0, 2.0, 0.25]),
            tensor("l2.weight", &[1, 2], &[3.0, 4.0]),
        ],
        "y",
    );
    let body = json!({"model": {"onnx": b64(&file)}, "inputs": {"values": [1.0, 2.0]}, "dtype": "float64"});
    let r = post("/v1/gradient-diagnostics", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let l1 = v["layers"].as_array().unwrap().iter().find(|l| l["path"] == "l1").unwrap();
    assert!(
        (l1["weight_grad"]["frobenius"].as_f64().unwrap() - 125f64.sqrt()).abs() < 1e-12,
        "{l1}"
    );
    // gradient of sum(y) by W2 is h = W1 x = [0.5 - 2, 2 + 0.5] = [-1.5, 2.5]
    let l2 = v["layers"].as_array().unwrap().iter().find(|l| l["path"] == "l2").unwrap();
    assert!(
        (l2["weight_grad"]["frobenius"].as_f64().unwrap() - 8.5f64.sqrt()).abs() < 1e-12,
        "{l2}"
    );
    // another init replaces them; "model" needs a file
    let mut other = body.clone();
    other["init"] = json!("xavier_uniform");
    let r = post("/v1/gradient-diagnostics", other).await;
    let l1 = r.json()["layers"][0]["weight_grad"]["frobenius"].as_f64().unwrap();
    assert!((l1 - 125f64.sqrt()).abs() > 1e-6);
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": {"preset": "vgg_stem"}, "init": "model"}),
    )
    .await;
    assert_problem(&r, 422, "/init");
}

/// A tensor whose bytes live in a side file: `location` at `offset`, `length` when given.
fn external(mut t: TensorProto, location: &str, offset: usize, length: bool) -> TensorProto {
    let n = t.raw_data.take().unwrap().len();
    let entry = |k: &str, v: String| layerscope::spec::onnx::proto::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.data_location = Some(layerscope::spec::onnx::proto::tensor_proto::DataLocation::External as i32);
    t.external_data = vec![entry("location", location.into()), entry("offset", offset.to_string())];
    if length {
        t.external_data.push(entry("length", n.to_string()));
    }
    t
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The two-layer net of `diagnostics_use_the_files_weights_by_default`, its weights in two side
/// files as torch.onnx.export writes them (`l1.weight` after 4 bytes of padding with a length,
/// `l2.weight` to the end of its file): the file and the side files.
fn external_net(l1_location: &str) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let file = model(
        &[1, 2],
        vec![
            node("Gemm", "/l1/Gemm", &["x", "l1.weight"], "h", vec![int("transB", 1)]),
            node("Gemm", "/l2/Gemm", &["h", "l2.weight"], "y", vec![int("transB", 1)]),
        ],
        vec![
            external(tensor("l1.weight", &[2, 2], &[0.5, -1.0, 2.0, 0.25]), l1_location, 4, true),
            external(tensor("l2.weight", &[1, 2], &[3.0, 4.0]), "b.bin", 0, false),
        ],
        "y",
    );
    let mut a = vec![9u8; 4];
    a.extend(f32s(&[0.5, -1.0, 2.0, 0.25]));
    a.extend([7u8; 8]);
    (file, vec![("a.bin".into(), a), ("b.bin".into(), f32s(&[3.0, 4.0]))])
}

async fn multipart_reply(path: &str, body: (String, Vec<u8>), config: Config) -> Reply {
    let req = Request::post(path).header("content-type", body.0).body(Body::from(body.1)).unwrap();
    send(config, req).await
}

/// A model saved with external data (torch.onnx.export's default for a file) comes as
/// multipart/form-data: the file, its side files as `data` parts, the options as a `request`
/// part. The gradients are the hand-calculated ones of the inline file, so every weight was read
/// at its offset; each malformed upload is a 4xx naming the problem; the command line sends the
/// side files it finds beside the model.
#[tokio::test]
async fn external_data_comes_as_multipart_parts() {
    use layerscope::cli::multipart;
    let (file, side) = external_net("a.bin");
    let options = json!({"inputs": {"values": [1.0, 2.0]}, "dtype": "float64"}).to_string();
    let r = multipart_reply("/v1/gradient-diagnostics", multipart(&file, &side, &options), Config::default()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let grad = |path: &str| {
        v["layers"].as_array().unwrap().iter().find(|l| l["path"] == path).unwrap()["weight_grad"]["frobenius"]
            .as_f64()
            .unwrap()
    };
    assert!((grad("l1") - 125f64.sqrt()).abs() < 1e-12, "{v}");
    assert!((grad("l2") - 8.5f64.sqrt()).abs() < 1e-12, "{v}");
    let r = multipart_reply("/v1/complexity", multipart(&file, &side, "{}"), Config::default()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["totals"]["params"], 6);

    // the same file without its side files, raw or multipart, says which file is missing
    let r = raw("/v1/complexity", "", file.clone(), Config::default()).await;
    let e = assert_problem(&r, 422, "/model/onnx");
    assert!(
        e["detail"].as_str().unwrap().contains("\"a.bin\", which the request did not send"),
        "{e}"
    );
    let r = multipart_reply("/v1/complexity", multipart(&file, &side[1..], "{}"), Config::default()).await;
    assert_problem(&r, 422, "/model/onnx");
    // a side file too short for the offset and length its tensor names
    let short = vec![side[0].clone(), ("b.bin".into(), vec![0u8; 7])];
    let r = multipart_reply("/v1/complexity", multipart(&file, &[side[0].clone()], "{}"), Config::default()).await;
    assert_problem(&r, 422, "/model/onnx");
    let r = multipart_reply("/v1/complexity", multipart(&file, &short, "{}"), Config::default()).await;
    let e = assert_problem(&r, 422, "/model/onnx");
    assert!(e["detail"].as_str().unwrap().contains("l2.weight"), "{e}");
    let cut = vec![("a.bin".into(), vec![0u8; 10]), side[1].clone()];
    let r = multipart_reply("/v1/complexity", multipart(&file, &cut, "{}"), Config::default()).await;
    let e = assert_problem(&r, 422, "/model/onnx");
    assert!(e["detail"].as_str().unwrap().contains("lies outside \"a.bin\""), "{e}");

    // malformed bodies, part by part
    let boundary = "multipart/form-data; boundary=XyZ";
    let part = |disposition: &str, data: &str| format!("--XyZ\r\ncontent-disposition: form-data; {disposition}\r\n\r\n{data}\r\n");
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "no model part",
            part("name=\"request\"", "{}") + "--XyZ--\r\n",
            422,
            "/model",
            "no `model` part",
        ),
        (
            "two model parts",
            part("name=\"model\"; filename=\"m\"", "x") + &part("name=\"model\"; filename=\"m\"", "y") + "--XyZ--\r\n",
            422,
            "/model",
            "two `model` parts",
        ),
        (
            "an unknown part",
            part("name=\"weights\"; filename=\"w\"", "x") + "--XyZ--\r\n",
            422,
            "",
            "\"weights\"",
        ),
        (
            "a data part without a file name",
            part("name=\"data\"", "x") + "--XyZ--\r\n",
            422,
            "/model",
            "no file name",
        ),
        (
            "two data parts of one name",
            part("name=\"data\"; filename=\"a\"", "x") + &part("name=\"data\"; filename=\"a\"", "y") + "--XyZ--\r\n",
            422,
            "/model",
            "two `data` parts",
        ),
        (
            "the request part twice",
            part("name=\"request\"", "{}") + &part("name=\"request\"", "{}") + "--XyZ--\r\n",
            422,
            "",
            "came twice",
        ),
        (
            "a request part that is not JSON",
            part("name=\"request\"", "{nope") + &part("name=\"model\"; filename=\"m\"", "x") + "--XyZ--\r\n",
            400,
            "",
            "not valid JSON",
        ),
        (
            "a TorchScript zip with data parts",
            part("name=\"model\"; filename=\"m\"", "PK\u{3}\u{4}rest") + &part("name=\"data\"; filename=\"a\"", "x") + "--XyZ--\r\n",
            422,
            "/model",
            "TorchScript",
        ),
        (
            "a body cut short",
            part("name=\"model\"; filename=\"m\"", "x").trim_end().to_string(),
            400,
            "",
            "cannot be read",
        ),
        ("garbage", "not multipart at all".to_string(), 400, "", "cannot be read"),
    ];
    for (what, body, status, pointer, needle) in cases {
        let r = multipart_reply("/v1/complexity", (boundary.to_string(), body.into_bytes()), Config::default()).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
        let e = assert_problem(&r, status, pointer);
        assert!(e["detail"].as_str().unwrap().contains(needle), "{what}: {e}");
    }
    let r = multipart_reply(
        "/v1/complexity",
        ("multipart/form-data".into(), b"--a--".to_vec()),
        Config::default(),
    )
    .await;
    let e = assert_problem(&r, 400, "");
    assert!(e["detail"].as_str().unwrap().contains("boundary"), "{e}");
    // the options in the query and in a part
    let req = Request::post("/v1/complexity?request=%7B%7D")
        .header("content-type", multipart(&file, &side, "{}").0)
        .body(Body::from(multipart(&file, &side, "{}").1))
        .unwrap();
    assert_problem(&send(Config::default(), req).await, 422, "");
    // the whole body is held to max_model_bytes
    let small = Config {
        max_model_bytes: 100,
        ..Config::default()
    };
    let r = multipart_reply("/v1/complexity", multipart(&file, &side, "{}"), small).await;
    let e = assert_problem(&r, 413, "");
    assert_eq!(e["limit"]["name"], "max_model_bytes", "{e}");

    // the command line reads the side files beside the model, and nothing outside its folder
    let dir = tempdir("external");
    std::fs::write(dir.join("net.onnx"), &file).unwrap();
    for (name, data) in &side {
        std::fs::write(dir.join(name), data).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(["complexity", dir.join("net.onnx").to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["totals"]["params"], 6);
    let (outside, _) = external_net("../a.bin");
    std::fs::write(dir.join("outside.onnx"), &outside).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layerscope"))
        .args(["complexity", dir.join("outside.onnx").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside its folder"));
}

#[tokio::test]
async fn hostile_files_get_a_4xx_naming_the_problem() {
    let good = conv_net();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("garbage", b"\xff\xfe not protobuf at all \x00\x01".to_vec(), 422, "ONNX"),
        ("truncated", good[..good.len() / 2].to_vec(), 422, ""),
        ("empty", Vec::new(), 422, "no graph"),
        (
            "cycle",
            model(
                &[1, 2],
                vec![
                    node("Relu", "a", &["b_out"], "a_out", vec![]),
                    node("Relu", "b", &["a_out"], "b_out", vec![]),
                ],
                vec![],
                "b_out",
            ),
            422,
            "cycle",
        ),
        (
            "unknown ops, every one listed",
            model(
                &[1, 2],
                vec![
                    node("FooBar", "first", &["x"], "a", vec![]),
                    node("Bazz", "second", &["a"], "y", vec![]),
                ],
                vec![],
                "y",
            ),
            422,
            "\"second\" (Bazz)",
        ),
        (
            "absurd shape",
            model(&[1, 3, 1 << 40, 1], vec![node("Relu", "r", &["x"], "y", vec![])], vec![], "y"),
            422,
            "the input's shape",
        ),
        (
            "a 2 GB tensor claimed, 8 bytes held",
            model(
                &[1, 2],
                vec![node("Gemm", "g", &["x", "w"], "y", vec![])],
                vec![tensor("w", &[1 << 28, 2], &[1.0, 2.0])],
                "y",
            ),
            422,
            "truncated or corrupt",
        ),
        (
            "more elements than the limit",
            model(
                &[1, 2],
                vec![node("Gemm", "g", &["x", "w"], "y", vec![])],
                vec![tensor("w", &[1 << 40, 1 << 20], &[])],
                "y",
            ),
            413,
            "claims",
        ),
        (
            "a negative dimension",
            model(
                &[1, 2],
                vec![node("Gemm", "g", &["x", "w"], "y", vec![])],
                vec![tensor("w", &[-2, 2], &[])],
                "y",
            ),
            422,
            "negative",
        ),
        (
            "shapes that do not connect",
            model(
                &[1, 3],
                vec![node("Gemm", "/fc/Gemm", &["x", "fc.weight"], "y", vec![int("transB", 1)])],
                vec![tensor("fc.weight", &[1, 2], &[1.0, 2.0])],
                "y",
            ),
            422,
            "ONNX node \"/fc/Gemm\" (Gemm",
        ),
    ];
    for (what, bytes, status, needle) in cases {
        let r = post("/v1/complexity", json!({"model": {"onnx": b64(&bytes)}})).await;
        let v = assert_problem(&r, status, "/model/onnx");
        assert!(v["detail"].as_str().unwrap().contains(needle), "{what}: {}", v["detail"]);
        // the same file raw: the same answer
        let r = raw("/v1/complexity", "", bytes, Config::default()).await;
        assert_problem(&r, status, "/model/onnx");
    }
    let r = post("/v1/complexity", json!({"model": {"onnx": "not base64!"}})).await;
    assert_problem(&r, 422, "/model/onnx");
    let r = post("/v1/complexity", json!({"model": {"onnx": b64(&good), "preset": "vgg16"}})).await;
    assert_problem(&r, 422, "/model/preset");
}

#[tokio::test]
async fn raw_uploads_have_their_own_limit_and_refuse_a_second_model() {
    let small = Config {
        max_model_bytes: 1000,
        ..Config::default()
    };
    let r = raw("/v1/complexity", "", conv_net(), small).await;
    let v = assert_problem(&r, 413, "");
    assert_eq!(v["limit"]["name"], "max_model_bytes", "{v}");
    let r = raw("/v1/complexity", "?request=%7B%22model%22%3A1%7D", conv_net(), Config::default()).await;
    assert_problem(&r, 422, "/model");
    let r = raw("/v1/complexity", "?request=%7Bnot-json", conv_net(), Config::default()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = raw("/v1/complexity", "?request=%5B1%5D", conv_net(), Config::default()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // the upload's stand-in in a JSON body refers to nothing
    let r = post("/v1/complexity", json!({"model": {"uploaded_body": true}})).await;
    assert_problem(&r, 422, "/model/uploaded_body");
    // a JSON body keeps the JSON limit
    let big = b64(&vec![0u8; 5 << 20]);
    let r = post("/v1/complexity", json!({"model": {"onnx": big}})).await;
    assert_problem(&r, 413, "");
    let _: Value = json!(null);
}

/// The command line runs the same router in-process: its JSON is the HTTP answer, its tables
/// carry the same numbers, and a refused request exits 1 with the problem text.
#[test]
fn the_command_line_answers_as_the_service_does() {
    let dir = tempdir("cli");
    let onnx = dir.join("net.onnx");
    std::fs::write(&onnx, conv_net()).unwrap();
    let spec = dir.join("spec.json");
    std::fs::write(&spec, json!({"preset": "vgg_stem"}).to_string()).unwrap();
    let run = run_cli;
    let (code, text, err) = run(&[
        "complexity",
        onnx.to_str().unwrap(),
        "--format",
        "json",
        "--request",
        r#"{"verify": false}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["totals"]["params"], 173);
    assert_eq!(v["totals"]["macs"], 600);
    let (code, text, _) = run(&["complexity", onnx.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("total params: 173") && text.contains("fc") && text.contains("2x5x5"),
        "{text}"
    );
    // the course's VGG second pool, one-based, from a spec file
    let (code, text, err) = run(&[
        "receptive-field",
        spec.to_str().unwrap(),
        "--layer",
        "9",
        "--unit",
        "1,1",
        "--one-based",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("4i-9 <= m <= 4i+6") && text.contains("agrees"), "{text}");
    let (code, text, _) = run(&["complexity", "resnet18", "--format", "csv"]);
    assert_eq!(code, Some(0));
    assert!(
        text.starts_with("layer,type,output shape,params,MACs,FLOPs\n0,conv2d,64x112x112,\"9,408\","),
        "{text}"
    );
    let (code, text, _) = run(&["diagnostics", onnx.to_str().unwrap(), "--format", "markdown", "--batch", "2"]);
    assert_eq!(code, Some(0));
    assert!(text.starts_with("| layer | type |") && text.contains("| conv | conv2d |"), "{text}");
    let (code, _, err) = run(&["complexity", "nosuch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown preset \"nosuch\"") && err.contains("/model/preset"), "{err}");
    let (code, _, err) = run(&["receptive-field", "vgg_stem", "--layer", "9", "--unit", "a,b"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = run(&["complexity", dir.join("missing.onnx").to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        s: Some(v.as_bytes().to_vec().into()),
        r#type: Some(AttributeType::String as i32),
        ..Default::default()
    }
}

/// x [1, 4, 3] batch-first -> Transpose(1, 0, 2) -> op (hidden 2, the file's W, R, B) ->
/// Squeeze(axis 1) -> Transpose(1, 0, 2): the exporter's layout around one recurrent layer.
fn recurrent_file(op: &str, gates: usize, attrs: Vec<AttributeProto>) -> Vec<u8> {
    let rows = gates * 2;
    model(
        &[1, 4, 3],
        vec![
            node("Transpose", "/rnn/Transpose", &["x"], "t", vec![ints("perm", &[1, 0, 2])]),
            NodeProto {
                output: vec!["y".into(), String::new()],
                ..node(
                    op,
                    "/rnn/Op",
                    &["t", "w", "r", "b"],
                    "y",
                    [vec![int("hidden_size", 2)], attrs].concat(),
                )
            },
            node("Squeeze", "/rnn/Squeeze", &["y", "axes1"], "s", vec![]),
            node("Transpose", "/rnn/Transpose_1", &["s"], "out", vec![ints("perm", &[1, 0, 2])]),
        ],
        vec![
            tensor(
                "w",
                &[1, rows as i64, 3],
                &(0..rows * 3).map(|i| i as f32 * 0.01).collect::<Vec<_>>(),
            ),
            tensor(
                "r",
                &[1, rows as i64, 2],
                &(0..rows * 2).map(|i| i as f32 * 0.02).collect::<Vec<_>>(),
            ),
            tensor("b", &[1, 2 * rows as i64], &vec![0.1; 2 * rows]),
            TensorProto {
                name: Some("axes1".into()),
                dims: vec![1],
                data_type: Some(DataType::Int64 as i32),
                int64_data: vec![1],
                ..Default::default()
            },
        ],
        "out",
    )
}

/// An LSTM, GRU and RNN in the exporter's time-major layout become PyTorch's layers, counted by
/// hand: per token gates x 2 x (3 + 2) MACs; parameters gates x 2 x (3 + 2) + 2 x gates x 2.
/// What PyTorch's layers cannot be is refused, naming the node.
#[tokio::test]
async fn recurrent_ops_become_pytorchs_layers() {
    for (op, gates, cell) in [("LSTM", 4u64, "lstm"), ("GRU", 3, "gru"), ("RNN", 1, "rnn")] {
        let attrs = if op == "GRU" { vec![int("linear_before_reset", 1)] } else { vec![] };
        let file = recurrent_file(op, gates as usize, attrs);
        let r = post("/v1/complexity", json!({"model": {"onnx": b64(&file)}, "verify": true})).await;
        assert_eq!(r.status, 200, "{op}: {}", r.text);
        let v = r.json();
        let row = &v["rows"][0];
        assert_eq!(row["type"], cell, "{v}");
        assert_eq!(row["output_shape"], json!([4, 2]));
        assert_eq!(row["params"], gates * 2 * 5 + 2 * gates * 2);
        assert_eq!(row["macs"], 4 * gates * 2 * 5);
        assert_eq!(v["verification"]["agrees"], true, "{}", v["verification"]);
    }
    let refused = |file: Vec<u8>| async move {
        let r = post("/v1/complexity", json!({"model": {"onnx": b64(&file)}, "verify": false})).await;
        assert_problem(&r, 422, "/model/onnx")["detail"].as_str().unwrap().to_string()
    };
    let d = refused(recurrent_file("GRU", 3, vec![])).await;
    assert!(d.contains("\"/rnn/Op\" (GRU): linear_before_reset=0"), "{d}");
    let d = refused(recurrent_file("LSTM", 4, vec![string("direction", "reverse")])).await;
    assert!(d.contains("direction \"reverse\""), "{d}");
    // the sequence batch-first, not the exporter's time-major layout
    let mut file = ModelProto::decode(recurrent_file("RNN", 1, vec![]).as_slice()).unwrap();
    let g = file.graph.as_mut().unwrap();
    g.node[1].input[0] = "x".into();
    let d = refused(file.encode_to_vec()).await;
    assert!(d.contains("not the exporter's time-major layout"), "{d}");
}

/// An embedding from the dynamo exporter, by hand: token ids `[1, 4]` (int64) pick rows of a
/// `[5, 2]` table; the Gather's `pkg.torch.onnx.fx_node` metadata records the call with
/// padding_idx 2. The loss is the sum of the outputs, so row r's gradient is (count of r) in both
/// columns: ids [2, 0, 2, 1] give rows 0 and 1 one each and the padding row none, a Frobenius
/// norm of sqrt(1*2 + 1*2) = 2. Without a (readable) padding index row 2 counts twice:
/// sqrt(2 + 2 + 4*2) = sqrt(12). A bad index in the metadata (past the table, negative, not a
/// number, a call of another op) is no padding row, never an error.
#[tokio::test]
async fn the_dynamo_exporters_padding_idx_is_read_back() {
    let file = |fx: Option<&str>| {
        let mut gather = node("Gather", "node_embedding", &["emb.weight", "x"], "y", vec![]);
        if let Some(fx) = fx {
            gather.metadata_props = vec![layerscope::spec::onnx::proto::StringStringEntryProto {
                key: Some("pkg.torch.onnx.fx_node".into()),
                value: Some(fx.into()),
            }];
        }
        let file = token_model(
            &[1, 4],
            vec![gather],
            vec![tensor("emb.weight", &[5, 2], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])],
            "y",
        );
        b64(&file)
    };
    let call = |args: &str| {
        format!("%embedding : [num_users=1] = call_function[target=torch.ops.aten.embedding.default](args = ({args}), kwargs = {{}})")
    };
    let grad = |onnx: String| async move {
        let r = post(
            "/v1/gradient-diagnostics",
            json!({"model": {"onnx": onnx}, "inputs": {"values": [2, 0, 2, 1]}, "dtype": "float64"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.json());
        r.json()["layers"][0]["weight_grad"]["frobenius"].as_f64().unwrap()
    };
    let padded = grad(file(Some(&call("%p_emb_weight, %input, 2")))).await;
    assert!((padded - 2.0).abs() < 1e-12, "{padded}");
    for fx in [
        None,
        Some(call("%p_emb_weight, %input")),
        Some(call("%p_emb_weight, %input, 5")),
        Some(call("%p_emb_weight, %input, -1")),
        Some(call("%p_emb_weight, %input, 99999999999999999999999")),
        Some(call("%p_emb_weight, %input, two")),
        Some("%embedding = call_function[target=torch.ops.aten.index_select.default](args = (%w, 0, %ids), kwargs = {})".into()),
        Some("args = (".into()),
    ] {
        let plain = grad(file(fx.as_deref())).await;
        assert!((plain - 12f64.sqrt()).abs() < 1e-12, "{fx:?}: {plain}");
    }
}

/// A BatchNorm the dynamo exporter folded into the conv before it, by hand: a 1x1 Conv of 2
/// filters on [1, 1, 3, 3] whose metadata is the norm's call (module `bn` by its name scopes,
/// eps 1e-3) and whose bias `c.weight_bias` is the folded shift (the conv had none of its own).
/// The norm comes back as the module has it: conv2d `c` with 2 weights and no bias, batchnorm2d
/// `bn` with 2 + 2 affine parameters and eps 1e-3; with `None, None` for its weight and bias it
/// is affine=False (no parameters). Without the metadata the file is one conv with a bias.
#[tokio::test]
async fn a_batchnorm_folded_by_the_dynamo_exporter_is_put_back() {
    let file = |fx: Option<&str>| {
        let mut conv = node(
            "Conv",
            "node_Conv_8",
            &["x", "c.weight", "c.weight_bias"],
            "y",
            vec![ints("kernel_shape", &[1, 1])],
        );
        if let Some(fx) = fx {
            let entry = |k: &str, v: &str| layerscope::spec::onnx::proto::StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v.into()),
            };
            conv.metadata_props = vec![
                entry("pkg.torch.onnx.fx_node", fx),
                entry("pkg.torch.onnx.name_scopes", "['', 'bn', '_native_batch_norm_legit_no_training']"),
                entry(
                    "pkg.torch.onnx.class_hierarchy",
                    "['torch.nn.modules.container.Sequential', 'torch.nn.modules.batchnorm.BatchNorm2d', 'aten._native_batch_norm_legit_no_training.default']",
                ),
            ];
        }
        b64(&model(
            &[1, 1, 3, 3],
            vec![conv],
            vec![
                tensor("c.weight", &[2, 1, 1, 1], &[2.0, 3.0]),
                tensor("c.weight_bias", &[2], &[1.0, -1.0]),
            ],
            "y",
        ))
    };
    let call = |args: &str| {
        format!("%_native_batch_norm_legit_no_training : [num_users=1] = call_function[target=torch.ops.aten._native_batch_norm_legit_no_training.default](args = ({args}), kwargs = {{}})")
    };
    let rows = |onnx: String| async move {
        let r = post("/v1/complexity", json!({"model": {"onnx": onnx}})).await;
        assert_eq!(r.status, 200, "{}", r.json());
        let t = r.json();
        assert_eq!(t["verification"]["agrees"], true, "{}", t["verification"]);
        t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().unwrap().to_string(),
                    r["type"].as_str().unwrap().to_string(),
                    r["params"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let row = |p: &str, t: &str, n: u64| (p.to_string(), t.to_string(), n);
    let affine = file(Some(&call(
        "%conv2d, %p_bn_weight, %p_bn_bias, %b_bn_running_mean, %b_bn_running_var, 0.1, 0.001",
    )));
    assert_eq!(rows(affine.clone()).await, vec![row("c", "conv2d", 2), row("bn", "batchnorm2d", 4)]);
    let plain = file(Some(&call(
        "%conv2d, None, None, %b_bn_running_mean, %b_bn_running_var, 0.1, 1e-05",
    )));
    assert_eq!(rows(plain).await, vec![row("c", "conv2d", 2), row("bn", "batchnorm2d", 0)]);
    assert_eq!(rows(file(None)).await, vec![row("c", "conv2d", 4)]);
    // a record cut short or with a bad eps still reads (eps 1e-5, affine only where said)
    for fx in [
        call("%conv2d"),
        call("%conv2d, %p_bn_weight, %p_bn_bias, %m, %v, 0.1, nan"),
        call("%conv2d, %w, %b, %m, %v, 0.1, 7"),
    ] {
        let r = post("/v1/receptive-field", json!({"model": {"onnx": file(Some(&fx))}, "verify": false})).await;
        assert_eq!(r.status, 200, "{fx}: {}", r.json());
    }
    // the spec the file reads as: eps 1e-3, weight 1, bias 0, the shift in the running mean
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": {"onnx": affine}, "inputs": {"values": vec![0.5; 9]}, "dtype": "float64"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
}

/// GPT-2's tied head as both exporters write it, by hand: the token embedding's Gather reads
/// the table `wte.weight` [5, 2]; the head's MatMul reads the same values transposed, a second
/// initializer [2, 5] (the exporters fold `lm_head.weight`'s transpose into one). Read as one
/// tensor: wte 10 parameters, the head 0 (its note names wte), as PyTorch's `sum(numel)`. With
/// the loss the sum of the outputs (out[t, v] = E[id_t] . E[v]) the one gradient holds both
/// uses: dL/dE[r] = sum_t E[id_t] + count(r in ids) * sum_v E[v]. A head whose weight differs
/// from the table in one value, or a table of one repeated number (two tensors filled with one
/// constant at initialization), is a separate weight: 20 parameters.
#[tokio::test]
async fn a_tied_head_is_read_as_one_tensor() {
    let table: Vec<f32> = (0..10).map(|i| 0.25 * i as f32 - 1.0).collect();
    let transposed = |t: &[f32]| -> Vec<f32> { (0..10).map(|k| t[(k % 5) * 2 + k / 5]).collect() };
    let file = |table: &[f32], head: &[f32]| {
        let file = token_model(
            &[1, 3],
            vec![
                node("Gather", "/wte/Gather", &["wte.weight", "x"], "e", vec![]),
                node("MatMul", "/lm_head/MatMul", &["e", "onnx::MatMul_7"], "y", vec![]),
            ],
            vec![tensor("wte.weight", &[5, 2], table), tensor("onnx::MatMul_7", &[2, 5], head)],
            "y",
        );
        b64(&file)
    };
    let tied = file(&table, &transposed(&table));
    let r = post("/v1/complexity", json!({"model": {"onnx": tied}, "verify": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.json();
    assert_eq!(t["totals"]["params"], 10, "{t}");
    assert_eq!(item(&t["rows"], "path", "wte")["params"], 10);
    let head = item(&t["rows"], "path", "lm_head");
    assert_eq!(head["params"], 0);
    assert_eq!(head["macs"], 3 * 2 * 5);
    assert!(head["note"].as_str().unwrap().contains("wte's tensor"), "{head}");
    assert_eq!(t["verification"]["agrees"], true);

    let ids = [4usize, 1, 4];
    let r = post(
        "/v1/gradient-diagnostics",
        json!({"model": {"onnx": tied}, "inputs": {"values": ids}, "dtype": "float64"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = r.json();
    assert_eq!(d["layers"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["layers"][0]["path"], "wte.weight");
    let e: Vec<f64> = table.iter().map(|&v| v as f64).collect();
    let mut want = 0.0;
    for r in 0..5 {
        let count = ids.iter().filter(|&&i| i == r).count() as f64;
        for k in 0..2 {
            let head_use: f64 = ids.iter().map(|&id| e[2 * id + k]).sum();
            let lookup: f64 = (0..5).map(|v| e[2 * v + k]).sum();
            want += (head_use + count * lookup).powi(2);
        }
    }
    let got = d["layers"][0]["weight_grad"]["frobenius"].as_f64().unwrap();
    assert!((got - want.sqrt()).abs() < 1e-12 * want.sqrt(), "{got} != {}", want.sqrt());

    let mut other = transposed(&table);
    other[3] += 0.5;
    let constant = [0.5f32; 10];
    for onnx in [file(&table, &other), file(&constant, &constant)] {
        let r = post("/v1/complexity", json!({"model": {"onnx": onnx}})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let t = r.json();
        assert_eq!(t["totals"]["params"], 20, "{t}");
        assert!(item(&t["rows"], "path", "lm_head").get("note").is_none());
    }
}

/// A whole GPT on one token, as the exporters fold it: the position embedding `wpe(arange(1))`
/// is a constant [1, 4] added to the token embedding's [1, 1, 4], then the features split in
/// two (`x.split(2, -1)`, which needs the width). The constant is the learned [1, 4] of the
/// sample (not a [4] with a batch axis): read on a guess before the width was known, the shapes
/// refuted the guess, and the importer read it again once they were (the guess used to stop
/// every shape being learned, and the split was refused).
#[tokio::test]
async fn a_one_token_position_table_is_read_as_one_row() {
    let table: Vec<f32> = (0..20).map(|i| 0.1 * i as f32).collect();
    let mut split = node("Split", "/Split", &["a"], "s0", vec![int("axis", 2)]);
    split.output.push("s1".into());
    let file = token_model(
        &[1, 1],
        vec![
            node("Gather", "/wte/Gather", &["wte.weight", "x"], "e", vec![]),
            node("Add", "/Add", &["e", "onnx::Add_3"], "a", vec![]),
            split,
            node("Mul", "/Mul", &["s0", "s1"], "y", vec![]),
        ],
        vec![
            tensor("wte.weight", &[5, 4], &table),
            tensor("onnx::Add_3", &[1, 4], &[0.5, 0.25, 0.125, 1.0]),
        ],
        "y",
    );
    let r = post("/v1/complexity", json!({"model": {"onnx": b64(&file)}, "verify": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.json();
    assert_eq!(t["totals"]["params"], 24, "{t}");
    let position = item(&t["rows"], "type", "parameter");
    assert_eq!(position["output_shape"], json!([1, 4]), "{t}");
    assert_eq!(t["model"]["output_shape"], json!([1, 2]), "{t}");
}

/// The TorchScript exporter's scopes leave out a container whose own forward never runs
/// (nanoGPT's `ModuleDict` `transformer`): a MatMul scoped `/h.0/c_attn/MatMul`, whose weight it
/// folded into `onnx::MatMul_5`, is module `transformer.h.0.c_attn` where the initializers put
/// `h.0` under `transformer` (its bias `transformer.h.0.c_attn.bias`) and `h` nowhere at the top;
/// where they put it under two parents, or at the top, the scope's name stays as it is, and so
/// does a one-part scope (a top-level layer whose weights were all renamed, `/1/MatMul`, is not
/// `0.body.1` because that path exists).
#[tokio::test]
async fn a_scope_missing_its_container_is_rooted_by_the_initializers() {
    let path = |scope: &str, bias: &str, extra: Option<&str>| {
        let mut inits = vec![tensor("onnx::MatMul_5", &[2, 4], &[0.5; 8]), tensor(bias, &[4], &[0.25; 4])];
        if let Some(e) = extra {
            inits.push(tensor(e, &[4], &[1.0; 4]));
        }
        let file = model(
            &[1, 3, 2],
            vec![
                node("MatMul", &format!("/{scope}/MatMul"), &["x", "onnx::MatMul_5"], "m", vec![]),
                node("Add", &format!("/{scope}/Add"), &["m", bias], "y", vec![]),
            ],
            inits,
            "y",
        );
        async move {
            let r = post("/v1/complexity", json!({"model": {"onnx": b64(&file)}})).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let t = r.json();
            assert_eq!(t["totals"]["params"], 12, "{t}");
            t["rows"][0]["path"].as_str().unwrap().to_string()
        }
    };
    let scope = "h.0/c_attn";
    assert_eq!(path(scope, "transformer.h.0.c_attn.bias", None).await, "transformer.h.0.c_attn");
    assert_eq!(
        path(scope, "transformer.h.0.c_attn.bias", Some("decoder.h.0.x.bias")).await,
        "h.0.c_attn"
    );
    assert_eq!(path(scope, "transformer.h.0.c_attn.bias", Some("h.1.x.bias")).await, "h.0.c_attn");
    assert_eq!(path("1", "onnx::Add_9", Some("0.body.1.bias")).await, "1");
}
