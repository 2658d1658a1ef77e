//! Grading: the seed student's answers, every accepted notation, hostile answers, and each LMS
//! output format against its documented schema (in openapi.yaml).
mod common;
use common::*;
use serde_json::{json, Value};

fn q(id: &str, kind: &str, model: Value, ask: &str, answer: Value) -> Value {
    json!({"id": id, "kind": kind, "model": model, "ask": ask, "answer": answer})
}

fn by_id<'a>(v: &'a Value, id: &str) -> &'a Value {
    item(&v["questions"], "id", id)
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
        // arithmetic forms: unbalanced, too deep, too large, dividing by zero, letters
        json!(format!("{}1{}", "(".repeat(60), ")".repeat(60))),
        json!("-".repeat(99) + "1"),
        json!("9^40^40"),
        json!("1/0"),
        json!("(1/3"),
        json!("2i+1"),
        json!("99999999999999999999999999999*99999999999999999999999"),
        json!("1,,089,952"),
        json!("1.089.952"),
        json!("1e99999999999"),
    ];
    let mut questions: Vec<Value> = bad
        .iter()
        .enumerate()
        .map(|(i, a)| q(&format!("h{i}"), "complexity", model.clone(), "total params", a.clone()))
        .collect();
    // and as ranges
    for (i, a) in [
        "(".repeat(150),
        "4i-9 <= m <= (".into(),
        "i*i <= m <= i".into(),
        "4i/0 <= m <= 4i".into(),
        "4i-9 <= m <= 4j+6".into(),
        // floors: too deep, periods past the limit, overflowing, empty, dividing by zero
        format!("{}i{} <= m <= 4i", "floor(".repeat(40), ")".repeat(40)),
        "4i-9+floor(i/9973)-floor(i/9973)+floor(i/9967)-floor(i/9967) <= m <= 4i+6".into(),
        "floor(i/1e30) <= m <= floor(i/1e30)".into(),
        format!("{}i{} <= m <= i", "ceil(".repeat(19), "/2)".repeat(19)),
        "floor(i*99999999999999999999/7)*99999999999999999999 <= m <= floor(i*99999999999999999999/7)*99999999999999999999".into(),
        "⌊⌋ <= m <= 1".into(),
        "floor <= m <= 1".into(),
        "i//0 <= m <= i".into(),
        "4i-9 <= m >= 4i+6".into(),
        "4i-9 < m < 4i+6 < 5".into(),
    ]
    .iter()
    .enumerate()
    {
        questions.push(q(
            &format!("r{i}"),
            "receptive_field",
            json!({"preset": "vgg_stem"}),
            "rows of layer pool2",
            json!(a),
        ));
    }
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
        // a fraction is read exactly: the sigmoid's sup g' is 1/4
        ("p2.max_derivative", true),
    ] {
        assert_eq!(by_id(&v, id)["correct"], right, "{id}: {}", by_id(&v, id)["feedback"]);
    }
    assert!(by_id(&v, "p4.pool1.rows")["feedback"].as_str().unwrap().contains("no answer"));
    assert_eq!(v["unknown_answer_ids"], json!(["nonsense"]));
}

/// A separator that does not sit between groups of three digits is a slip, never dropped; any
/// equivalent affine form of a range is read; the decimal-comma locale reads 346.720.
#[tokio::test]
async fn separators_in_valid_places_and_equivalent_ranges() {
    let reduced = json!({"preset": "inception_reduced"});
    let stem = json!({"preset": "vgg_stem"});
    let mut comma = q("eu", "complexity", reduced.clone(), "total params", json!("346.720"));
    comma["number_locale"] = json!("decimal_comma");
    let questions = vec![
        q(
            "bad",
            "complexity",
            json!({"preset": "vgg_stem"}),
            "params of layer conv1",
            json!("1,79,2"),
        ),
        q("frac", "complexity", reduced.clone(), "total params", json!("693440/2")),
        comma,
        q(
            "r1",
            "receptive_field",
            stem.clone(),
            "rows of layer pool2 at one-based i",
            json!("4(i-2)-1 <= m <= 4i+6"),
        ),
        q(
            "r2",
            "receptive_field",
            stem.clone(),
            "rows of layer pool2 at one-based i",
            json!("−9+4i ≤ m ≤ 4*i + 6"),
        ),
        q(
            "r3",
            "receptive_field",
            stem,
            "rows of layer pool2 at one-based i",
            json!("m ∈ [(8i-18)/2, 2(2i+3)]"),
        ),
    ];
    let v = post("/v1/grade", json!({"questions": questions})).await.json();
    // conv1 of the stem: 64*3*3*3 + 64 = 1,792, but "1,79,2" has misplaced separators
    assert_eq!(by_id(&v, "bad")["correct"], false);
    assert!(
        by_id(&v, "bad")["feedback"].as_str().unwrap().contains("groups of three digits"),
        "{v}"
    );
    for id in ["frac", "eu", "r1", "r2", "r3"] {
        assert_eq!(by_id(&v, id)["correct"], true, "{id}: {}", by_id(&v, id)["feedback"]);
    }
    // the course's "2,24" is not 224
    let v = post(
        "/v1/grade",
        json!({"questions": [q("x", "complexity", json!({"input_shape": [1, 4, 4], "layers": [{"type": "conv2d", "out_channels": 8, "kernel_size": 5, "padding": 2}, {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1}]}), "params of layer 1", json!("2,24"))]}),
    )
    .await
    .json();
    // layer 1: 1*8*3*3 + 1 = 73 params; the point is that "2,24" is unreadable
    assert!(by_id(&v, "x")["feedback"].as_str().unwrap().contains("could not read"), "{v}");
}

/// Each recognised mistake earns its documented fraction and is named; the values are worked
/// out by hand here.
#[tokio::test]
async fn partial_credit_by_recognised_mistake() {
    let reduced = json!({"preset": "inception_reduced"});
    let stem = json!({"preset": "vgg_stem"});
    // branch 2 of the reduced module: 1x1 256->64 (16,384 + 64) and 3x3 64->192 (110,592 + 192)
    let b2: i64 = 256 * 64 + 64 + 64 * 192 * 9 + 192;
    assert_eq!(b2, 127_232);
    // all convs' outputs (128+64+192+64+96+64 channels, 32x32): what separates the two addition conventions
    let conv_outputs: i64 = (128 + 64 + 192 + 64 + 96 + 64) * 32 * 32;
    let macs: i64 = 354_418_688;
    let additions: i64 = 355_041_280;
    let cases: Vec<(Value, Option<&str>, f64)> = vec![
        (
            q("bias", "complexity", reduced.clone(), "params of branch 2", json!(b2 - 64 - 192)),
            Some("bias_forgotten"),
            0.5,
        ),
        // the 3x3 conv counted with the module's 256 input channels instead of its reduce layer's 64
        (
            q(
                "channels",
                "complexity",
                reduced.clone(),
                "params of branch 2",
                json!(b2 + 192 * 9 * (256 - 64)),
            ),
            Some("wrong_input_channels"),
            0.5,
        ),
        (
            q("macs", "complexity", reduced.clone(), "total flops", json!(macs)),
            Some("macs_for_flops"),
            0.5,
        ),
        (
            q("flops4macs", "complexity", reduced.clone(), "total macs", json!(2 * macs)),
            Some("macs_for_flops"),
            0.5,
        ),
        (
            q(
                "adds",
                "complexity",
                reduced.clone(),
                "total additions",
                json!(additions - conv_outputs),
            ),
            Some("additions_convention"),
            0.5,
        ),
        // zero-based pool2 rows: lo0 = lo1 - 1 + 4 = -6, hi0 = 6 + 3 = 9
        (
            q(
                "base",
                "receptive_field",
                stem.clone(),
                "rows of layer pool2 at one-based i",
                json!("4i-6 <= m <= 4i+9"),
            ),
            Some("index_base"),
            0.5,
        ),
        (
            q("random", "complexity", reduced.clone(), "params of branch 2", json!(123_456)),
            None,
            0.0,
        ),
        (
            q("right", "complexity", reduced.clone(), "params of branch 2", json!(b2)),
            None,
            1.0,
        ),
    ];
    let questions: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let v = post("/v1/grade", json!({"questions": questions, "reveal": "none"})).await.json();
    assert_eq!(
        additions - conv_outputs,
        macs,
        "k-1 additions plus the bias is k per output: the MACs"
    );
    for (question, mistake, score) in &cases {
        let g = by_id(&v, question["id"].as_str().unwrap());
        assert_eq!(g["score"], *score, "{g}");
        assert_eq!(g["mistake"].as_str(), *mistake, "{g}");
        if let Some(m) = mistake {
            assert!(g["feedback"].as_str().unwrap().contains(m), "{g}");
            assert_eq!(g["expected"], "hidden", "reveal none still hides the answer: {g}");
            assert_eq!(g["correct"], false);
        }
    }
    // swapped letters earn credit only under strict_variables (else they are right, with a note)
    let swapped = q(
        "swap",
        "receptive_field",
        stem,
        "rows of layer pool2 at one-based i",
        json!("4j-9 <= n <= 4j+6"),
    );
    let v = post("/v1/grade", json!({"questions": [swapped.clone()], "strict_variables": true}))
        .await
        .json();
    assert_eq!(
        (by_id(&v, "swap")["score"].as_f64(), by_id(&v, "swap")["mistake"].as_str()),
        (Some(0.5), Some("swapped_letters"))
    );
    // configurable: off for the request, or another fraction for one question
    let v = post("/v1/grade", json!({"questions": [cases[0].0.clone()], "partial_credit": false}))
        .await
        .json();
    assert_eq!(by_id(&v, "bias")["score"], 0.0);
    let mut quarter = cases[0].0.clone();
    quarter["partial_credit"] = json!({"bias_forgotten": 0.25});
    quarter["points"] = json!(4);
    let v = post("/v1/grade", json!({"questions": [quarter]})).await.json();
    assert_eq!(by_id(&v, "bias")["score"], 1.0);
    let mut bad = cases[0].0.clone();
    bad["partial_credit"] = json!({"bias_forgot": 0.25});
    assert_problem(
        &post("/v1/grade", json!({"questions": [bad]})).await,
        422,
        "/questions/0/partial_credit/bias_forgot",
    );
}

/// Hundreds of random conv layers: the exact count in any valid notation is right, the count
/// without biases earns the bias credit, and a count off by one earns nothing.
#[tokio::test]
async fn random_conv_layers_are_graded_by_hand_counts() {
    let mut seed: u64 = 20261128;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for round in 0..3 {
        let mut questions = Vec::new();
        let mut want = Vec::new();
        for k in 0..200 {
            let (cin, cout, ks) = (1 + next(64), 1 + next(64), 1 + 2 * next(3));
            let weights = cout * cin * ks * ks;
            let model = json!({"input_shape": [cin, 9, 9], "layers": [{"type": "conv2d", "out_channels": cout, "kernel_size": ks}]});
            let (answer, score) = match next(4) {
                0 => (json!(format!("{}", weights + cout)), 1.0),
                1 => (json!(layerscope::analysis::answers::thousands((weights + cout) as f64)), 1.0),
                2 => (json!(weights), 0.5),
                _ => (json!(weights + cout + 1), 0.0),
            };
            questions.push(q(&format!("q{round}.{k}"), "complexity", model, "params of layer 0", answer));
            want.push(score);
        }
        let v = post("/v1/grade", json!({"questions": questions})).await.json();
        for (k, score) in want.iter().enumerate() {
            let g = &v["questions"][k];
            assert_eq!(g["score"], *score, "{g}");
        }
    }
}

/// PrairieLearn's sigfig and decdig comparisons, by hand: Form II's theta_2 is -0.119.
#[tokio::test]
async fn significant_figures_and_decimals_as_prairielearn_grades_them() {
    let witness = json!({"theta0": [0.0], "gradients": [[1.0], [1.0]], "alpha": [0.1, 0.01], "beta": 0.9});
    let mk = |id: &str, tol: Value, answer: &str| json!({"id": id, "kind": "momentum", "request": witness, "ask": "theta of form_ii at step 2", "tolerance": tol, "answer": answer});
    // sigfigs 2: n = 1 - floor(log10 0.119) = 2, eps = 0.0051; decimals 3: eps = 0.00051
    let cases = [
        (mk("s1", json!({"sigfigs": 2}), "-0.12"), true),
        (mk("s2", json!({"sigfigs": 2}), "-0.11"), false),
        (mk("s3", json!({"sigfigs": 3}), "-0.12"), false),
        (mk("d1", json!({"decimals": 3}), "-0.119"), true),
        (mk("d2", json!({"decimals": 3}), "-0.1195"), true),
        (mk("d3", json!({"decimals": 3}), "-0.118"), false),
        (mk("d4", json!({"decimals": 1}), "-0.1"), true),
    ];
    let questions: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
    let v = post("/v1/grade", json!({"questions": questions})).await.json();
    for (question, right) in &cases {
        let id = question["id"].as_str().unwrap();
        assert_eq!(by_id(&v, id)["correct"], *right, "{id}: {}", by_id(&v, id)["feedback"]);
    }
    let both = mk("x", json!({"sigfigs": 2, "relative": 0.1}), "-0.12");
    assert_problem(
        &post("/v1/grade", json!({"questions": [both]})).await,
        422,
        "/questions/0/tolerance",
    );
}

/// A problem set graded in part: ids and prefixes select, in the set's order; a name that
/// selects nothing is a 422 listing the ids.
#[tokio::test]
async fn a_subset_of_a_problem_set() {
    let sel = |s: Value| {
        post(
            "/v1/grade",
            json!({"problem_set": "course", "questions": s, "answers": {"p4.pool2.rows": "4i-9 <= m <= 4i+6"}}),
        )
    };
    let v = sel(json!(["p4.*"])).await.json();
    assert_eq!(v["max_score"], 10.0, "five layers x rows and cols");
    assert_eq!(v["score"], 1.0);
    let v = sel(json!(["p4.pool2.rows", "p5.reduced."])).await.json();
    let ids: Vec<&str> = v["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "p4.pool2.rows");
    assert_eq!(ids.len(), 1 + 4 + 4, "{ids:?}");
    let r = sel(json!(["p9.*"])).await;
    let p = assert_problem(&r, 422, "/questions/0");
    assert!(p["detail"].as_str().unwrap().contains("p4.pool2.rows"));
    assert_problem(&sel(json!([7])).await, 422, "/questions/0");
}

/// Ranges with floors (after a strided transposed convolution or an upsampling) are graded by
/// the set of input positions they name at every output index, in any form students write:
/// by hand, output o of a k=3, s=2, padding 1, output_padding 1 transposed convolution reads
/// the inputs x with 2x - 1 + t = o for a tap t in 0..3, so ceil((o-1)/2) <= x <= floor((o+1)/2),
/// which is floor(o/2) <= x <= ceil(o/2). Upsampling by 2 then reads row floor(o/2) of that:
/// floor(floor(o/2)/2) = floor(o/4) <= x <= floor((floor(o/2)+1)/2) = floor((o+2)/4).
#[tokio::test]
async fn ranges_with_floors_are_graded_by_value() {
    let model = json!({"input_shape": [1, 4, 4], "layers": [
        {"name": "up", "type": "conv_transpose2d", "out_channels": 1, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
        {"name": "near", "type": "upsample", "scale_factor": 2}
    ]});
    let zero = |id: &str, ask: &str, answer: &str| json!({"id": id, "kind": "receptive_field", "model": model, "ask": ask, "answer": answer, "index_base": 0});
    let right = [
        ("r0", "rows of layer up", "floor(i/2) <= m <= floor((i+1)/2)"),
        ("r1", "rows of layer up", "ceil((i-1)/2) <= m <= floor((i+1)/2)"),
        ("r2", "rows of layer up", "⌊i/2⌋ ≤ m ≤ ⌈i/2⌉"),
        ("r3", "rows of layer up", "i//2 <= m <= (i+1)//2"),
        ("r4", "rows of layer up", "[floor(i/2), ceil(i/2)]"),
        // real-valued ends name the whole positions between them
        ("r5", "rows of layer up", "(i-1)/2 <= m <= (i+1)/2"),
        ("r6", "cols of layer up", "floor(j/2) <= n <= Floor((j+1)/2)"),
        ("r7", "rows of layer near", "floor(i/4) <= m <= floor((i+2)/4)"),
        ("r8", "rows of layer near", "floor(floor(i/2)/2) <= m <= floor((floor(i/2)+1)/2)"),
        ("r9", "jump of layer up", "1/2"),
        ("r10", "jump of layer near", "0.25"),
        ("r11", "min size of layer up", "1"),
        ("r12", "max size of layer up", "2"),
    ];
    let wrong = [
        // at i = 0 the upper end is 1, one too high (the layer's output 0 reads input 0 alone)
        ("w0", "rows of layer up", "floor(i/2) <= m <= floor(i/2)+1"),
        // ceil(i/2) at i = 1 is 1: input 0 is missed
        ("w1", "rows of layer up", "i/2 <= m <= i/2"),
        ("w2", "rows of layer up", "floor(i/3) <= m <= floor((i+1)/3)"),
        ("w3", "rows of layer near", "floor(i/4) <= m <= floor((i+1)/4)"),
        // the one-based range, in a zero-based question: index_base, half the points
        ("w4", "rows of layer up", "floor((i-1)/2)+1 <= m <= floor(i/2)+1"),
    ];
    let mut questions: Vec<Value> = right.iter().chain(&wrong).map(|(id, ask, a)| zero(id, ask, a)).collect();
    // one-based (grading's default): i0 = i1 - 1 and m1 = m0 + 1
    questions.push(json!({"id": "one", "kind": "receptive_field", "model": model, "ask": "rows of layer up", "answer": "ceil(i/2) <= m <= floor(i/2)+1"}));
    questions.push(json!({"id": "size", "kind": "receptive_field", "model": model, "ask": "size of layer up", "answer": "2"}));
    let r = post("/v1/grade", json!({"questions": questions, "reveal": "hints"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    for (id, ..) in right.iter().chain([&("one", "", "")]) {
        assert_eq!(by_id(&v, id)["correct"], true, "{id}: {}", by_id(&v, id)["feedback"]);
    }
    assert!(by_id(&v, "r5")["feedback"].as_str().unwrap().contains("whole positions"), "{v}");
    for (id, ..) in &wrong {
        assert_eq!(by_id(&v, id)["correct"], false, "{id}: {}", by_id(&v, id)["feedback"]);
    }
    let feedback = |id: &str| by_id(&v, id)["feedback"].as_str().unwrap().to_string();
    assert!(
        feedback("w0").contains("upper end is wrong at i = 0: yours gives 1, which is too high"),
        "{}",
        feedback("w0")
    );
    assert!(
        feedback("w1").contains("lower end is wrong at i = 1: yours gives 1, which is too high"),
        "{}",
        feedback("w1")
    );
    assert!(
        feedback("w2").contains("moves 1/3 input positions per output step"),
        "{}",
        feedback("w2")
    );
    assert!(feedback("w3").contains("upper end is wrong at i = 2"), "{}", feedback("w3"));
    assert!(feedback("w0").contains("sees 1 to 2 input rows") && feedback("w0").contains("moves 1/2 input rows"));
    assert_eq!(
        (by_id(&v, "w4")["score"].as_f64(), by_id(&v, "w4")["mistake"].as_str()),
        (Some(0.5), Some("index_base")),
        "{v}"
    );
    // its size depends on i: the question says so and asks for min or max size
    assert!(feedback("size").contains("1 to 2 input rows"), "{}", feedback("size"));
}

/// Strict comparisons name the whole positions strictly between their ends: vgg_stem's conv4
/// reads 2i-7 <= m <= 2i+6 (one-based), which is also 2i-8 < m < 2i+7; "2i-7 < m < 2i+6" leaves
/// out both ends and is wrong (it used to be read as <=).
#[tokio::test]
async fn strict_comparisons_exclude_their_ends() {
    let stem = json!({"preset": "vgg_stem"});
    let questions: Vec<Value> = [
        ("strict", "2i-8 < m < 2i+7"),
        ("mixed", "2i-8 < m <= 2i+6"),
        ("reversed", "2i+6 >= m >= 2i-7"),
        ("wrong", "2i-7 < m < 2i+6"),
    ]
    .iter()
    .map(|(id, a)| q(id, "receptive_field", stem.clone(), "rows of layer conv4", json!(a)))
    .collect();
    let v = post("/v1/grade", json!({"questions": questions})).await.json();
    for id in ["strict", "mixed", "reversed"] {
        assert_eq!(by_id(&v, id)["correct"], true, "{id}: {}", by_id(&v, id)["feedback"]);
    }
    let w = by_id(&v, "wrong");
    assert_eq!(w["correct"], false, "{w}");
    let f = w["feedback"].as_str().unwrap();
    assert!(f.contains("2i-6 <= m <= 2i+5") && f.contains("lower end is 1 too high"), "{f}");
}
