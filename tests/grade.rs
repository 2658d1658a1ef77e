//! Grading: the seed student's answers, every accepted notation, hostile answers, and each LMS
//! output format against its documented schema (in openapi.yaml).
mod common;
use common::*;
use serde_json::{json, Value};

fn q(id: &str, kind: &str, model: Value, ask: &str, answer: Value) -> Value {
    json!({"id": id, "kind": kind, "model": model, "ask": ask, "answer": answer})
}

fn by_id<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["questions"].as_array().unwrap().iter().find(|q| q["id"] == id).unwrap()
}

fn seed_questions() -> Vec<Value> {
    let reduced = json!({"preset": "inception_reduced"});
    vec![
        q("branch1", "complexity", reduced.clone(), "params of branch 1", json!("32,896")),
        q("branch2", "complexity", reduced.clone(), "params of branch 2", json!("67,232")),
        q("branch3", "complexity", reduced.clone(), "params of branch 3", json!("170,194")),
        q("branch4", "complexity", reduced.clone(), "params of branch 4", json!("16,448")),
        q("total", "complexity", reduced, "total params", json!("346,720")),
        q(
            "naive_mults",
            "complexity",
            json!({"preset": "inception_naive"}),
            "total multiplications",
            json!("1,115,669,864"),
        ),
        q(
            "rows",
            "receptive_field",
            json!({"preset": "vgg_stem"}),
            "rows of layer pool2 at one-based i",
            json!("4i-9 <= m <= 4i+6"),
        ),
        q(
            "cols",
            "receptive_field",
            json!({"preset": "vgg_stem"}),
            "cols of layer pool2 at one-based i",
            json!("4i-9 <= n <= 4i+6"),
        ),
    ]
}

#[tokio::test]
async fn the_seed_students_answers() {
    let r = post("/v1/grade", json!({"questions": seed_questions()})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    for (id, right) in [
        ("branch1", true),
        ("branch2", false),
        ("branch3", false),
        ("branch4", true),
        ("total", true),
        ("naive_mults", false),
        ("rows", true),
    ] {
        assert_eq!(by_id(&v, id)["correct"], right, "{id}: {}", by_id(&v, id)["feedback"]);
        assert!(by_id(&v, id)["feedback"].as_str().unwrap().len() > 10);
    }
    // the columns answer uses the row index i: said, and scored only without strict_variables
    let cols = by_id(&v, "cols");
    assert_eq!(cols["correct"], true);
    assert!(cols["feedback"].as_str().unwrap().contains("i is the row index"), "{cols}");
    let strict = post("/v1/grade", json!({"questions": seed_questions(), "strict_variables": true}))
        .await
        .json();
    assert_eq!(by_id(&strict, "cols")["correct"], false);
    assert!(by_id(&strict, "cols")["feedback"].as_str().unwrap().contains("row index"));
    // wrong answers say by how much without giving the answer away
    let b2 = by_id(&v, "branch2");
    assert!(b2["feedback"].as_str().unwrap().contains("47% too low"), "{b2}");
    assert!(!b2["feedback"].as_str().unwrap().contains("127,232"));
    assert_eq!(b2["expected"], "hidden");
    assert_eq!(v["score"], 5.0);
    assert_eq!(v["max_score"], 8.0);
    // with reveal: answers, the correct value is given
    let revealed = post("/v1/grade", json!({"questions": seed_questions(), "reveal": "answers"}))
        .await
        .json();
    assert!(by_id(&revealed, "branch2")["feedback"].as_str().unwrap().contains("127,232"));
    assert_eq!(by_id(&revealed, "naive_mults")["expected"], "1,115,684,864");
}

#[tokio::test]
async fn every_accepted_notation_scores() {
    let model = json!({"preset": "inception_naive"});
    let forms = [
        json!(1089952),
        json!("1089952"),
        json!("1,089,952"),
        json!("1 089 952"),
        json!("1.089952e6"),
        json!("1.089952 x 10^6"),
    ];
    let questions: Vec<Value> = forms
        .iter()
        .enumerate()
        .map(|(i, a)| q(&format!("n{i}"), "complexity", model.clone(), "total params", a.clone()))
        .collect();
    let v = post("/v1/grade", json!({"questions": questions})).await.json();
    assert_eq!(v["score"], forms.len() as f64, "{v}");
    // an abbreviation is read, and said to be rounded, unless a tolerance allows it
    let v = post(
        "/v1/grade",
        json!({"questions": [q("m", "complexity", model.clone(), "total params", json!("1.09M"))]}),
    )
    .await
    .json();
    assert_eq!(by_id(&v, "m")["correct"], false);
    assert!(by_id(&v, "m")["feedback"].as_str().unwrap().contains("rounded"));
    let mut tolerant = q("m", "complexity", model, "total params", json!("1.09M"));
    tolerant["tolerance"] = json!({"relative": 0.01});
    assert_eq!(post("/v1/grade", json!({"questions": [tolerant]})).await.json()["score"], 1.0);
    let ranges = [
        json!("2i-7 <= m <= 2i+6"),
        json!("2i - 7 ≤ m ≤ 2i + 6"),
        json!("[2i-7, 2i+6]"),
        json!({"scale": 2, "lo": -7, "hi": 6}),
    ];
    let questions: Vec<Value> = ranges
        .iter()
        .enumerate()
        .map(|(i, a)| {
            q(
                &format!("r{i}"),
                "receptive_field",
                json!({"preset": "vgg_stem"}),
                "rows of layer conv4",
                a.clone(),
            )
        })
        .collect();
    assert_eq!(post("/v1/grade", json!({"questions": questions})).await.json()["score"], 4.0);
}

#[tokio::test]
async fn hostile_answers_score_zero_with_feedback_never_an_error() {
    let model = json!({"preset": "inception_naive"});
    let bad = [
        json!("x".repeat(100_000)),
        json!("NaN"),
        json!("Infinity"),
        json!(null),
        json!({"a": 1}),
        json!([1, 2]),
        json!("1e999"),
        json!(""),
    ];
    let questions: Vec<Value> = bad
        .iter()
        .enumerate()
        .map(|(i, a)| q(&format!("h{i}"), "complexity", model.clone(), "total params", a.clone()))
        .collect();
    let r = post("/v1/grade", json!({"questions": questions})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["score"], 0.0);
    for q in v["questions"].as_array().unwrap() {
        assert_eq!(q["correct"], false);
        assert!(q["feedback"].as_str().unwrap().len() < 1000);
    }
    // a question the instructor wrote wrongly is a 422 naming the field
    assert_problem(
        &post(
            "/v1/grade",
            json!({"questions": [q("x", "complexity", json!({"preset": "nope"}), "total params", json!(1))]}),
        )
        .await,
        422,
        "/questions/0/model/preset",
    );
    assert_problem(
        &post(
            "/v1/grade",
            json!({"questions": [q("x", "complexity", json!({"preset": "vgg_stem"}), "total bananas", json!(1))]}),
        )
        .await,
        422,
        "/questions/0/ask",
    );
}

#[tokio::test]
async fn the_course_problem_set_needs_only_answers() {
    let answers = json!({
        "p4.pool2.rows": "4i-9 <= m <= 4i+6", "p4.conv2.rows": "i-2 <= m <= i+2",
        "p5.reduced.params": "346,720", "p5.reduced.additions": "354,910,208", "p5.naive.activations": 425984,
        "p3.witness.form_i": "-0.2", "p3.witness.form_ii": "-0.119", "p3.witness.verdict": "not equivalent", "p3.constant.verdict": "equivalent",
        "p2.verdict": "vanishing", "p2.max_derivative": "1/4", "nonsense": 1
    });
    let v = post("/v1/grade", json!({"problem_set": "course", "answers": answers})).await.json();
    for (id, right) in [
        ("p4.pool2.rows", true),
        ("p4.conv2.rows", true),
        ("p5.reduced.params", true),
        ("p5.reduced.additions", false),
        ("p5.naive.activations", true),
        ("p3.witness.form_i", true),
        ("p3.witness.form_ii", true),
        ("p3.witness.verdict", true),
        ("p3.constant.verdict", true),
        ("p2.verdict", true),
        ("p2.max_derivative", false),
    ] {
        assert_eq!(by_id(&v, id)["correct"], right, "{id}: {}", by_id(&v, id)["feedback"]);
    }
    assert!(by_id(&v, "p4.pool1.rows")["feedback"].as_str().unwrap().contains("no answer"));
    assert_eq!(v["unknown_answer_ids"], json!(["nonsense"]));
}
