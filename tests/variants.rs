//! Generated variants: for 200 seeds the answer key equals the analysis endpoints' values and a
//! hand calculation written here; a variant is graded from its seed alone; its PrairieLearn
//! directory passes PrairieLearn's info.json rules and grades end to end, as does its
//! Gradescope folder.
mod common;
use common::*;
use serde_json::{json, Value};

fn number(text: &str) -> u64 {
    text.replace(',', "").parse().unwrap_or_else(|_| panic!("{text}"))
}

/// The receptive-field size of a chain of convs and pools, by the textbook recurrence
/// (size += (k - 1) * jump; jump *= stride), for the layers up to `name`.
fn rf_size(model: &Value, name: &str) -> u64 {
    let (mut size, mut jump) = (1u64, 1u64);
    for l in model["layers"].as_array().unwrap() {
        if let Some(k) = l["kernel_size"].as_u64() {
            let stride = l["stride"].as_u64().unwrap_or(if l["type"] == "conv2d" { 1 } else { k });
            size += (k - 1) * jump;
            jump *= stride;
        }
        if l["name"] == name {
            return size;
        }
    }
    panic!("no layer {name}")
}

#[tokio::test]
async fn two_hundred_variants_have_the_analysis_answer_keys() {
    let mut stems = std::collections::HashSet::new();
    for seed in 0..200u64 {
        let v = post("/v1/variants", json!({"seed": seed})).await;
        assert_eq!(v.status, 200, "{}", v.text);
        let v = v.json();
        let key = &v["answer_key"];
        let qs = v["questions"].as_array().unwrap();
        let stem = &qs[0]["model"];
        stems.insert(stem.to_string());
        let module = &qs[3]["model"];
        // receptive fields: the endpoint's formulas and sizes
        let rf = post("/v1/receptive-field", json!({"model": stem, "index_base": 1, "verify": false}))
            .await
            .json();
        let layer = |name: &str| rf["layers"].as_array().unwrap().iter().find(|l| l["name"] == name).unwrap().clone();
        let ask = |i: usize| {
            qs[i]["ask"]
                .as_str()
                .unwrap()
                .split(" of layer ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(key["a.rows"], layer(&ask(0))["receptive_field"]["height"]["text"], "seed {seed}");
        assert_eq!(key["a.cols"], layer(&ask(1))["receptive_field"]["width"]["text"], "seed {seed}");
        let size = layer(&ask(2))["receptive_field"]["height"]["size"].as_u64().unwrap();
        assert_eq!(number(key["a.size"].as_str().unwrap()), size);
        assert_eq!(size, rf_size(stem, &ask(2)), "seed {seed}: the recurrence by hand");
        // counts: the endpoint's table, and the formulas by hand
        let cx = post("/v1/complexity", json!({"model": module, "verify": false})).await.json();
        let branch = |n: usize| {
            cx["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["path"] == format!("0.branches.{}", n - 1))
                .unwrap()["params"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(number(key["b.params.branch2"].as_str().unwrap()), branch(2));
        assert_eq!(number(key["b.params.branch3"].as_str().unwrap()), branch(3));
        assert_eq!(number(key["b.params"].as_str().unwrap()), cx["totals"]["params"].as_u64().unwrap());
        assert_eq!(
            number(key["b.multiplications"].as_str().unwrap()),
            cx["totals"]["multiplications"].as_u64().unwrap()
        );
        let br = module["layers"][0]["branches"].as_array().unwrap();
        let out = |b: usize, l: usize| br[b][l]["out_channels"].as_u64().unwrap();
        let cin = module["input_shape"][0].as_u64().unwrap();
        let hw = module["input_shape"][1].as_u64().unwrap().pow(2);
        let (c1, r3, c3, r5, c5, cp) = (out(0, 0), out(1, 0), out(1, 2), out(2, 0), out(2, 2), out(3, 1));
        assert_eq!(branch(2), cin * r3 + r3 + r3 * 9 * c3 + c3);
        assert_eq!(branch(3), cin * r5 + r5 + r5 * 25 * c5 + c5);
        let weights = cin * c1 + cin * r3 + r3 * 9 * c3 + cin * r5 + r5 * 25 * c5 + cin * cp;
        assert_eq!(cx["totals"]["params"].as_u64().unwrap(), weights + c1 + r3 + c3 + r5 + c5 + cp);
        assert_eq!(cx["totals"]["multiplications"].as_u64().unwrap(), weights * hw);
    }
    assert!(stems.len() > 150, "{} distinct stems in 200 seeds", stems.len());
}

#[tokio::test]
async fn a_variant_is_graded_from_its_seed() {
    let v = post("/v1/variants", json!({"seed": 42})).await.json();
    let mut answers = v["answer_key"].clone();
    let max: f64 = v["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["points"].as_f64().unwrap())
        .sum();
    let g = post("/v1/grade", json!({"problem_set": "variant", "seed": 42, "answers": answers}))
        .await
        .json();
    assert_eq!((g["score"].as_f64(), g["max_score"].as_f64()), (Some(max), Some(max)), "{g}");
    // another seed's variant does not take these answers
    let other = post("/v1/grade", json!({"problem_set": "variant", "seed": 43, "answers": answers}))
        .await
        .json();
    assert!(other["score"].as_f64().unwrap() < max);
    answers["b.params"] = json!("1");
    let g = post(
        "/v1/grade",
        json!({"problem_set": "variant", "seed": 42, "answers": answers, "questions": ["b.*"]}),
    )
    .await
    .json();
    assert_eq!(g["max_score"], 5.0);
    assert_eq!(g["score"], 4.0);
    assert_problem(
        &post("/v1/grade", json!({"problem_set": "variant", "answers": {}})).await,
        422,
        "/seed",
    );
    assert_problem(&post("/v1/variants", json!({"seed": -1})).await, 422, "/seed");
    assert_problem(&post("/v1/variants", json!({"seed": 1, "url": "ftp://x"})).await, 422, "/url");
}

fn write_files(dir: &std::path::Path, files: &Value) {
    for (name, text) in files.as_object().unwrap() {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text.as_str().unwrap()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_lms_folders_grade_end_to_end() {
    let url = serve().await;
    for seed in 0..200u64 {
        let v = post("/v1/variants", json!({"seed": seed, "format": "prairielearn"})).await.json();
        let info: Value = serde_json::from_str(v["files"]["info.json"].as_str().unwrap()).unwrap();
        check_prairielearn_info(&info);
    }
    // PrairieLearn: the course's serverFilesCourse, the question's server.py run as PrairieLearn
    // runs it, the student's inputs by their names, and the grader in /grade
    let v = post("/v1/variants", json!({"seed": 5, "format": "prairielearn", "url": url}))
        .await
        .json();
    let key = v["answer_key"].clone();
    let root = tempdir("variant-pl");
    write_files(&root.join("question"), &v["files"]);
    write_files(&root.join("serverFilesCourse"), &v["server_files_course"]);
    let html = v["files"]["question.html"].as_str().unwrap();
    assert!(html.contains("<pl-external-grader-results>") && html.contains("<markdown>"));
    let params = python_ok(
        &["-c", &format!("import json, sys; sys.path.insert(0, {:?}); import server; d = {{'params': {{}}}}; server.generate(d); print(json.dumps(d['params']))", root.join("question").display().to_string())],
        &[],
    )
    .await;
    let params: Value = serde_json::from_str(params.trim()).unwrap();
    let names = params["layerscope"]["names"].as_object().unwrap();
    let submitted: serde_json::Map<String, Value> = names.iter().map(|(n, id)| (n.clone(), key[id.as_str().unwrap()].clone())).collect();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(
        root.join("data/data.json"),
        json!({"params": params, "submitted_answers": submitted}).to_string(),
    )
    .unwrap();
    python_ok(
        &["serverFilesCourse/layerscope/grade.py"]
            .map(|p| root.join(p).display().to_string())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[("GRADE_ROOT", &root.display().to_string())],
    )
    .await;
    let results: Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/results.json")).unwrap()).unwrap();
    assert_eq!(results["gradable"], true, "{results}");
    assert_eq!(results["score"], 1.0, "{results}");
    assert_eq!(results["tests"].as_array().unwrap().len(), key.as_object().unwrap().len());

    // Gradescope: the folder as /autograder/source, the key as the student's answers.txt
    let v = post("/v1/variants", json!({"seed": 9, "format": "gradescope", "url": url}))
        .await
        .json();
    let root = tempdir("variant-gs");
    write_files(&root.join("source"), &v["files"]);
    std::fs::create_dir_all(root.join("submission")).unwrap();
    let sheet: String = v["answer_key"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, a)| format!("{id}: {}\n", a.as_str().unwrap()))
        .collect();
    std::fs::write(root.join("submission/answers.txt"), sheet).unwrap();
    python_ok(
        &[&root.join("source/run_autograder").display().to_string()],
        &[("AUTOGRADER_ROOT", &root.display().to_string())],
    )
    .await;
    let results: Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/results.json")).unwrap()).unwrap();
    assert_eq!(results["score"], 10.0, "{results}");
    assert!(v["files"]["question.md"].as_str().unwrap().contains("# Variant 9"));
}
