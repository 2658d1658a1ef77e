//! openapi.yaml is the contract: the router serves exactly its routes, and real responses
//! validate against its schemas.
mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// openapi.yaml is generated (`scripts/openapi`) from the request/response types and
/// contract/base.yaml: the committed file must be what the code generates now.
#[test]
fn committed_openapi_is_the_generated_one() {
    let generated = layerscope::api::contract::document();
    let committed = include_str!("../openapi.yaml");
    if generated != committed {
        let line = generated
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(generated.lines().count().min(committed.lines().count()));
        panic!(
            "openapi.yaml is stale from line {}: run scripts/openapi and commit the result\n  generated: {:?}\n  committed: {:?}",
            line + 1,
            generated.lines().nth(line),
            committed.lines().nth(line)
        );
    }
    // Every typed schema the paths reference exists.
    let s = spec();
    let text = serde_json::to_string(&s).unwrap();
    for r in text.split("\"$ref\":\"#/components/").skip(1) {
        let target = r.split('"').next().unwrap();
        assert!(
            !root_lookup(&s, &format!("#/components/{target}")).is_null(),
            "dangling $ref {target}"
        );
    }
}

#[test]
fn router_and_openapi_list_the_same_routes() {
    let s = spec();
    let documented: BTreeSet<(String, String)> = s["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = layerscope::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

fn response_schema<'a>(s: &'a Value, method: &str, path: &str, status: u16, ctype: &str) -> &'a Value {
    let mut r = &s["paths"][path][method]["responses"][status.to_string()];
    if let Some(reference) = r.get("$ref").and_then(Value::as_str) {
        r = &s["components"]["responses"][reference.rsplit('/').next().unwrap()];
    }
    &r["content"][ctype]["schema"]
}

async fn check(method: &str, path: &str, template: &str, body: Option<Value>) {
    let r = match body {
        Some(b) => post(path, b).await,
        None => get(path).await,
    };
    let ctype = r.content_type.split(';').next().unwrap().to_string();
    let s = spec();
    let schema = response_schema(&s, method, template, r.status.as_u16(), &ctype);
    assert!(!schema.is_null(), "{method} {template} {} {ctype} is not documented", r.status);
    if ctype.ends_with("json") {
        let mut errors = Vec::new();
        validate(&s, schema, &r.json(), "", &mut errors);
        assert!(errors.is_empty(), "{method} {path}: {errors:#?}");
    }
}

/// Every output format of /v1/grade validates against its own schema (with answers that are
/// right, wrong, partly right and unknown).
#[tokio::test]
async fn grade_outputs_match_their_schemas() {
    let s = spec();
    let answers = json!({"p5.reduced.params": "346,720", "p5.reduced.params.branch2": 126976, "p4.pool2.rows": "4i-9 <= m <= 4i+6", "p5.naive.params": "2,24", "nope": 1});
    for (output, schema) in [
        ("json", "GradeResult"),
        ("gradescope", "GradescopeResults"),
        ("prairielearn", "PrairieLearnResults"),
        ("moodle_coderunner", "MoodleCombinatorResult"),
    ] {
        let r = post(
            "/v1/grade",
            json!({"problem_set": "course", "questions": ["p4.pool2.", "p5.*"], "answers": answers, "output": output, "reveal": "hints"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let mut errors = Vec::new();
        validate(&s, &s["components"]["schemas"][schema], &r.json(), "", &mut errors);
        assert!(errors.is_empty(), "{output}: {errors:#?}");
        assert!(r.text.contains("nope"), "{output} names the unknown id: {}", r.text);
    }
}

/// With API keys on, a /v1 route without a key answers the documented 401, the open routes
/// declare no security, and the /v1 routes name the bearer scheme.
#[tokio::test]
async fn unauthorised_answers_are_documented() {
    use axum::body::Body;
    use axum::http::Request;
    let s = spec();
    assert_eq!(s["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (method, path) in layerscope::api::ROUTES {
        let op = &s["paths"][path][method];
        let open = !path.starts_with("/v1/");
        assert_eq!(op["security"] == json!([]), open, "{method} {path}: security");
        if !open {
            for code in ["401", "429"] {
                assert!(!op["responses"][code].is_null(), "{method} {path} documents {code}");
            }
        }
    }
    let config = layerscope::Config {
        api_keys: vec!["k".into()],
        ..layerscope::Config::default()
    };
    let r = send(config, Request::get("/v1/info").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 401);
    let schema = response_schema(&s, "get", "/v1/info", 401, "application/problem+json");
    let mut errors = Vec::new();
    validate(&s, schema, &r.json(), "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test]
async fn responses_match_their_schemas() {
    check("get", "/", "/", None).await;
    check("get", "/ui/app.js", "/ui/{asset}", None).await;
    check("get", "/ui/nope.js", "/ui/{asset}", None).await;
    check("get", "/healthz", "/healthz", None).await;
    check("get", "/readyz", "/readyz", None).await;
    check("get", "/v1/info", "/v1/info", None).await;
    check("get", "/v1/presets", "/v1/presets", None).await;
    check("get", "/v1/presets/resnet18", "/v1/presets/{name}", None).await;
    check("get", "/v1/presets/nope", "/v1/presets/{name}", None).await;
    check("get", "/openapi.yaml", "/openapi.yaml", None).await;
    // the typed momentum route: the report (with v and u trajectories), its SVG and its problems
    let m = "/v1/momentum/equivalence";
    let witness = json!({"theta0": {"w": {"shape": [1, 2], "values": [0, 1]}}, "gradients": [{"w": [1, 1]}, {"w": [1, 2]}], "alpha": [0.1, 0.01], "beta": 0.9, "sutskever": true, "pytorch_sgd": {"dampening": 0.1}});
    check("post", m, m, Some(witness.clone())).await;
    let mut svg = witness.clone();
    svg["format"] = json!("svg");
    check("post", m, m, Some(svg)).await;
    check(
        "post",
        m,
        m,
        Some(json!({"theta0": [1], "gradients": [[1]], "alpha": 0.1, "beta": 0.5, "betta": 1})),
    )
    .await;
    check(
        "post",
        m,
        m,
        Some(json!({"theta0": [1], "gradients": [[1]], "alpha": 0.1, "beta": 0.5, "return": "none", "tolerance": 0})),
    )
    .await;
    // numbers past float range are null, and the schemas say so: a diverging momentum run, and a
    // gradient ratio over a last layer whose gradient is zero (its input is all zeros)
    let diverging = json!({"theta0": [1e300], "gradients": [[1e300], [1e300]], "alpha": 1e12, "beta": 0.9, "sutskever": true});
    let r = post(m, diverging.clone()).await;
    assert!(r.json()["trajectories"]["form_i"]["theta"][2][0].is_null(), "{}", r.text);
    check("post", m, m, Some(diverging)).await;
    // the typed variants route: each format, and a refusal
    let v = "/v1/variants";
    for format in ["json", "prairielearn", "gradescope"] {
        check("post", v, v, Some(json!({"seed": 7, "format": format, "reveal": "answers"}))).await;
    }
    check("post", v, v, Some(json!({"seed": 7, "format": "moodle"}))).await;
    let d = "/v1/gradient-diagnostics";
    let zero_hidden = json!({"model": {"input_shape": [2], "layers": [{"type": "linear", "out_features": 2}, {"type": "linear", "out_features": 1}]},
        "parameters": {"0": {"weight": [[0, 0], [0, 0]], "bias": [0, 0]}, "1": {"weight": [[1, 1]], "bias": [0]}}, "inputs": {"values": [1, 2]}});
    let r = post(d, zero_hidden.clone()).await;
    assert!(r.json()["layers"][0]["weight_grad_ratio_to_last"].is_null(), "{}", r.text);
    check("post", d, d, Some(zero_hidden)).await;
    // sequence models: token ranges, rows with a profile's note, gradients by parameter name
    let lm = json!({"input_shape": [6], "input_dtype": "int64", "layers": [
        {"type": "embedding", "num_embeddings": 9, "embedding_dim": 4},
        {"type": "multihead_attention", "embed_dim": 4, "num_heads": 2, "is_causal": true},
        {"type": "lstm", "hidden_size": 3, "bidirectional": true}]});
    check(
        "post",
        "/v1/receptive-field",
        "/v1/receptive-field",
        Some(json!({"model": lm, "position": {"layer": 1, "index": [2], "channel": 1}})),
    )
    .await;
    check(
        "post",
        "/v1/complexity",
        "/v1/complexity",
        Some(json!({"model": lm, "profile": "torch_flop_counter"})),
    )
    .await;
    check(
        "post",
        "/v1/complexity",
        "/v1/complexity",
        Some(json!({"model": lm, "profile": "fvcore"})),
    )
    .await;
    check(
        "post",
        "/v1/gradient-diagnostics",
        "/v1/gradient-diagnostics",
        Some(json!({"model": lm, "inputs": {"values": [0, 1, 2, 3, 4, 8]}})),
    )
    .await;
    check(
        "post",
        "/v1/receptive-field",
        "/v1/receptive-field",
        Some(json!({"model": {"preset": "inception_naive"}, "position": {"layer": 0, "index": [3, 4]}, "index_base": 1})),
    )
    .await;
    check(
        "post",
        "/v1/receptive-field",
        "/v1/receptive-field",
        Some(json!({"model": {"preset": "resnet18"}, "verify": false})),
    )
    .await;
    check(
        "post",
        "/v1/receptive-field",
        "/v1/receptive-field",
        Some(json!({"model": {"preset": "vgg_stem"}, "position": {"index": [99, 0]}})),
    )
    .await;
    check(
        "post",
        "/v1/complexity",
        "/v1/complexity",
        Some(json!({"model": {"preset": "googlenet"}})),
    )
    .await;
    check(
        "post",
        "/v1/complexity",
        "/v1/complexity",
        Some(json!({"model": {"preset": "googlenet"}, "profile": "fvcore", "verify": false})),
    )
    .await;
    check(
        "post",
        "/v1/complexity",
        "/v1/complexity",
        Some(json!({"model": {"preset": "vgg_stem"}, "batch_size": 0})),
    )
    .await;
}

/// The contract's layer ops (generated from `spec::ops`) and the hand-written reader agree: for
/// every op, the keys the reader consults are exactly the op's documented fields; the op's
/// example is read without error; the reader knows exactly the documented type names; and every
/// layer of every preset uses only documented fields.
mod layer_ops {
    use super::*;
    use std::collections::BTreeMap;

    /// The documented ops: type name -> (fields, example).
    fn ops() -> BTreeMap<String, (BTreeSet<String>, Value)> {
        let s = spec();
        let mut out = BTreeMap::new();
        for alt in s["components"]["schemas"]["LayerOp"]["oneOf"]
            .as_array()
            .expect("LayerOp is a oneOf")
        {
            let parts = alt["allOf"].as_array().expect("each op is allOf [fields, type]");
            let ty = parts[1]["properties"]["type"]["enum"][0].as_str().unwrap().to_string();
            let fields_ref = parts[0]["$ref"].as_str().unwrap();
            let fields = root_lookup(&s, fields_ref);
            let mut names = BTreeSet::new();
            collect_properties(&s, &fields, &mut names);
            let example = fields["example"].clone();
            assert!(example.is_object(), "{ty}: {fields_ref} has no example");
            out.insert(ty, (names, example));
        }
        out
    }

    fn collect_properties(s: &Value, schema: &Value, names: &mut BTreeSet<String>) {
        if let Some(r) = schema["$ref"].as_str() {
            return collect_properties(s, &root_lookup(s, r), names);
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            collect_properties(s, part, names);
        }
        names.extend(schema["properties"].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
    }

    #[test]
    fn every_op_documents_exactly_the_fields_the_reader_reads() {
        let ops = ops();
        assert!(ops.len() >= 55, "{} ops", ops.len());
        for (ty, (fields, example)) in &ops {
            let mut layer = example.clone();
            layer["type"] = json!(ty);
            let mut read = BTreeSet::new();
            let mut accepted = false;
            for graph in [false, true] {
                let (result, keys) = layerscope::spec::parse::consulted_keys(&layer, graph);
                if result.is_ok() {
                    accepted = true;
                    read.extend(keys.into_iter().map(str::to_string));
                }
            }
            assert!(
                accepted,
                "{ty}: the example {layer} is refused: {:?}",
                layerscope::spec::parse::consulted_keys(&layer, true).0
            );
            for envelope in ["type", "name", "functional"] {
                assert!(read.remove(envelope), "{ty}: the reader does not read {envelope:?}");
            }
            assert_eq!(&read, fields, "{ty}: the reader reads {read:?}, the contract documents {fields:?}");
        }
    }

    #[test]
    fn the_reader_knows_exactly_the_documented_types() {
        let documented: BTreeSet<String> = ops().into_keys().collect();
        let known: BTreeSet<String> = layerscope::spec::parse::LAYER_TYPES
            .replace("; in a graph also", ",")
            .split(", ")
            .map(str::to_string)
            .collect();
        assert_eq!(known, documented);
        // and a name that is not one is refused, listing them
        let (result, _) = layerscope::spec::parse::consulted_keys(&json!({"type": "conv4d"}), true);
        let e = result.unwrap_err();
        assert!(
            e.message.contains("unknown layer type") && e.message.contains("multihead_attention"),
            "{}",
            e.message
        );
    }

    fn check_layer(ops: &BTreeMap<String, (BTreeSet<String>, Value)>, layer: &Value, at: &str) {
        let ty = layer["type"].as_str().unwrap();
        let (fields, _) = ops.get(ty).unwrap_or_else(|| panic!("{at}: type {ty:?} is not documented"));
        for (k, v) in layer.as_object().unwrap() {
            if ["type", "name", "functional", "inputs"].contains(&k.as_str()) {
                continue;
            }
            assert!(fields.contains(k), "{at}: {ty} field {k:?} is not documented");
            if ["branches", "body", "shortcut"].contains(&k.as_str()) {
                let lists: Vec<&Value> = if k == "branches" {
                    v.as_array().unwrap().iter().collect()
                } else {
                    vec![v]
                };
                for (b, list) in lists.iter().enumerate() {
                    for (i, l) in list.as_array().unwrap().iter().enumerate() {
                        check_layer(ops, l, &format!("{at}/{k}/{b}/{i}"));
                    }
                }
            }
        }
    }

    #[test]
    fn every_preset_uses_documented_fields_only() {
        let ops = ops();
        for name in layerscope::spec::presets::NAMES {
            let model = layerscope::spec::presets::get(name).unwrap();
            let layers = model["layers"].as_array().into_iter().flatten();
            let nodes = model["graph"]["nodes"].as_array().into_iter().flatten();
            for (i, layer) in layers.chain(nodes).enumerate() {
                check_layer(&ops, layer, &format!("{name}/{i}"));
            }
        }
    }
}
