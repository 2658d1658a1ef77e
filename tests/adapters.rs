//! The LMS adapters in examples/, end to end in each LMS's directory layout against live servers:
//! right, wrong and partly right submissions, BOM files, bad JSON, file uploads, a broken
//! configuration, an unreachable service, and a service that answers 429 before it grades.
mod common;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use common::{python, python_ok, serve, tempdir};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

fn read_json(p: std::path::PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// A service that answers `refusals` requests with 429 (Retry-After: 1), then grades as the real
/// one does; its URL and how many requests it saw.
async fn flaky(refusals: usize) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let counter = counter.clone();
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) < refusals {
                return (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
            }
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let resp: Response = layerscope::app(layerscope::Config::default())
                .oneshot(Request::from_parts(parts, Body::from(bytes)))
                .await
                .unwrap();
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// Gradescope's layout: /autograder/{source,submission,results}.
fn gradescope_root(name: &str, config: &str, file: &str, contents: &[u8]) -> std::path::PathBuf {
    let root = tempdir(name);
    std::fs::create_dir_all(root.join("submission")).unwrap();
    std::fs::create_dir_all(root.join("source")).unwrap();
    std::fs::write(root.join("source/layerscope.json"), config).unwrap();
    std::fs::write(root.join("submission").join(file), contents).unwrap();
    root
}

/// Runs the autograder; its results.json, checked against Gradescope's format (openapi.yaml).
async fn run_gradescope(root: &std::path::Path) -> Value {
    python_ok(
        &["examples/gradescope/run_autograder"],
        &[("AUTOGRADER_ROOT", &root.display().to_string())],
    )
    .await;
    let results = read_json(root.join("results/results.json"));
    let errors = common::schema_errors("GradescopeResults", &results);
    assert!(errors.is_empty(), "{errors:#?}");
    results
}

fn test_of<'a>(results: &'a Value, name: &str) -> &'a Value {
    common::item(&results["tests"], "name", name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradescope_autograder_end_to_end() {
    let url = serve().await;
    let config = format!(r#"{{"url": "{url}", "problem_set": "course", "reveal": "hints"}}"#);
    // the seed student's sheet, saved with a BOM by a Windows editor, plus a partly right and a mistyped id
    let mut sheet = b"\xef\xbb\xbf".to_vec();
    sheet.extend(std::fs::read("examples/sample-answers.txt").unwrap());
    sheet.extend(b"\np5.naive.params.branch2: 442,368\np5.reducd.params: 1\n");
    // p4.conv1.rows is the file's first answer: a BOM must not hide it
    assert!(String::from_utf8_lossy(&sheet[3..]).lines().any(|l| l.starts_with("p4.conv1.rows")));
    let root = gradescope_root("gradescope", &config, "answers.txt", &sheet);
    let results = run_gradescope(&root).await;
    for (name, status) in [
        ("p4.conv1.rows", "passed"),
        ("p5.reduced.params", "passed"),
        ("p5.reduced.params.branch2", "failed"),
        ("p5.naive.multiplications", "failed"),
        ("p4.pool2.rows", "passed"),
    ] {
        assert_eq!(test_of(&results, name)["status"], status, "{name}");
    }
    // branch 2 of the naive module without its 192 biases: 442,560 - 192 = 442,368, half the point
    let partial = test_of(&results, "p5.naive.params.branch2");
    assert_eq!(partial["score"], 0.5, "{partial}");
    assert!(partial["output"].as_str().unwrap().contains("bias_forgotten"));
    assert!(
        results["output"].as_str().unwrap().contains("p5.reducd.params"),
        "a mistyped id is named"
    );
    assert_eq!(results["visibility"], "visible");
    for t in results["tests"].as_array().unwrap() {
        for key in ["name", "score", "max_score", "status", "output", "output_format", "visibility"] {
            assert!(t.get(key).is_some(), "{key} missing in {t}");
        }
    }

    // answers.json with a BOM is read; visibility follows the configuration
    let cfg = format!(r#"{{"url": "{url}", "questions": ["p5.reduced.params"], "reveal": "answers", "visibility": "after_due_date"}}"#);
    let root = gradescope_root(
        "gradescope-json",
        &cfg,
        "answers.json",
        "\u{feff}{\"p5.reduced.params\": \"346,720\"}".as_bytes(),
    );
    let results = run_gradescope(&root).await;
    assert_eq!(results["score"], 1.0, "{results}");
    assert_eq!(results["tests"].as_array().unwrap().len(), 1, "only the configured question");
    assert_eq!(results["visibility"], "after_due_date");
    assert_eq!(test_of(&results, "p5.reduced.params")["visibility"], "after_due_date");

    // a student's broken JSON is the student's to fix, and said so
    let root = gradescope_root(
        "gradescope-bad",
        &config,
        "answers.json",
        b"{\"p5.reduced.params\": \"346,720\",\n}",
    );
    let results = run_gradescope(&root).await;
    let out = results["output"].as_str().unwrap();
    assert!(out.contains("not valid JSON (line 2") && out.contains("Fix the file"), "{out}");
    assert!(!out.contains("service"), "{out}");

    // a broken configuration still writes results, blaming no student
    let root = gradescope_root("gradescope-config", "{\"url\": ", "answers.txt", b"p5.reduced.params: 1");
    let results = run_gradescope(&root).await;
    assert!(results["output"].as_str().unwrap().contains("misconfigured"), "{results}");
    assert!(results["output"].as_str().unwrap().contains("not your fault"));

    // an unreachable service: retried within the budget, then a message that blames no one's answers
    let cfg = r#"{"url": "http://127.0.0.1:9", "problem_set": "course", "time_budget": 3}"#;
    let root = gradescope_root("gradescope-down", cfg, "answers.txt", b"p5.reduced.params: 346,720");
    let started = std::time::Instant::now();
    let results = run_gradescope(&root).await;
    assert!(started.elapsed().as_secs_f64() < 10.0);
    let out = results["output"].as_str().unwrap();
    assert!(
        out.contains("were not graded") && out.contains("not your fault") && out.contains("tries"),
        "{out}"
    );

    // a service answering 429 (Retry-After: 1) twice, then grading: retried, graded
    let (flaky_url, seen) = flaky(2).await;
    let cfg = format!(r#"{{"url": "{flaky_url}", "problem_set": "course", "questions": ["p5.reduced.params"]}}"#);
    let root = gradescope_root("gradescope-429", &cfg, "answers.txt", b"p5.reduced.params: 346,720");
    let results = run_gradescope(&root).await;
    assert_eq!(results["score"], 1.0, "{results}");
    assert_eq!(seen.load(Ordering::SeqCst), 3, "two refusals, then the grade");
}

/// PrairieLearn's layout: /grade/{data/data.json, student/, serverFilesCourse/, results/}.
fn prairielearn_root(name: &str, data: Value, config: Option<&str>) -> std::path::PathBuf {
    let root = tempdir(name);
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("serverFilesCourse/layerscope")).unwrap();
    std::fs::write(root.join("data/data.json"), data.to_string()).unwrap();
    if let Some(c) = config {
        std::fs::write(root.join("serverFilesCourse/layerscope/layerscope.json"), c).unwrap();
    }
    root
}

/// Runs the grader; its results.json, checked against PrairieLearn's format (openapi.yaml).
async fn run_prairielearn(root: &std::path::Path) -> Value {
    python_ok(&["examples/prairielearn/grade.py"], &[("GRADE_ROOT", &root.display().to_string())]).await;
    let results = read_json(root.join("results/results.json"));
    let errors = common::schema_errors("PrairieLearnResults", &results);
    assert!(errors.is_empty(), "{errors:#?}");
    results
}

fn points(results: &Value, name: &str) -> f64 {
    common::item(&results["tests"], "name", name)["points"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prairielearn_external_grader_end_to_end() {
    let url = serve().await;
    let config = format!(r#"{{"url": "{url}", "reveal": "hints"}}"#);
    let params = json!({"layerscope": {"questions": ["p4.pool2.rows", "p4.pool2.cols"], "names": {"p4_pool2_rows": "p4.pool2.rows", "p4_pool2_cols": "p4.pool2.cols"}}});
    // the example question's own inputs: one right, one the zero-based range (half credit); an
    // upload's _files entry is never taken for a question
    let data = json!({"params": params, "submitted_answers": {"p4_pool2_rows": "4(i-2)-1 <= m <= 4i+6", "p4_pool2_cols": "4j-6 <= n <= 4j+9", "_files": []}});
    let results = run_prairielearn(&prairielearn_root("pl", data, Some(&config))).await;
    assert_eq!(results["gradable"], true, "{results}");
    assert_eq!(
        results["tests"].as_array().unwrap().len(),
        2,
        "only the question's own ids: {results}"
    );
    assert_eq!(points(&results, "p4.pool2.rows"), 1.0);
    assert_eq!(points(&results, "p4.pool2.cols"), 0.5);
    assert_eq!(results["score"], 0.75);
    let text = results.to_string();
    assert!(!text.contains("**"), "plain text for PrairieLearn: {text}");
    assert!(!text.contains("_files"));

    // a file upload: /grade/student/answers.txt (BOM) for a question that asks for the P5 totals
    let params = json!({"layerscope": {"questions": ["p5.reduced.params", "p5.reduced.multiplications"]}});
    let root = prairielearn_root(
        "pl-file",
        json!({"params": params, "submitted_answers": {"_files": [{"name": "answers.txt"}]}}),
        Some(&config),
    );
    std::fs::create_dir_all(root.join("student")).unwrap();
    std::fs::write(root.join("student/answers.txt"), "\u{feff}p5.reduced.params: 346,720\n").unwrap();
    let results = run_prairielearn(&root).await;
    assert_eq!(points(&results, "p5.reduced.params"), 1.0, "{results}");
    assert_eq!(points(&results, "p5.reduced.multiplications"), 0.0, "asked, left blank, graded");

    // the same file only in submitted_answers._files (base64), as pl-file-editor stores it
    let contents = "cDUucmVkdWNlZC5wYXJhbXM6IDM0Niw3MjAK"; // "p5.reduced.params: 346,720\n"
    let data = json!({"params": params, "submitted_answers": {"_files": [{"name": "answers.txt", "contents": contents}]}});
    let results = run_prairielearn(&prairielearn_root("pl-files", data, Some(&config))).await;
    assert_eq!(points(&results, "p5.reduced.params"), 1.0, "{results}");

    // a student's broken file: not gradable (no attempt used), and the message says what to fix
    let data = json!({"params": params, "submitted_answers": {"_files": [{"name": "answers.json", "contents": "eyJwNSI6IH0="}]}});
    let results = run_prairielearn(&prairielearn_root("pl-badfile", data, Some(&config))).await;
    assert_eq!(results["gradable"], false);
    assert!(results["message"].as_str().unwrap().contains("not valid JSON"), "{results}");

    // an unreachable service: gradable false, before PrairieLearn's own timeout
    let down = r#"{"url": "http://127.0.0.1:9", "time_budget": 2}"#;
    let data = json!({"params": params, "submitted_answers": {"x": "1"}});
    let started = std::time::Instant::now();
    let results = run_prairielearn(&prairielearn_root("pl-down", data, Some(down))).await;
    assert!(started.elapsed().as_secs_f64() < 8.0);
    assert_eq!(results["gradable"], false, "{results}");
    assert!(results["message"].as_str().unwrap().contains("not your fault"));
}

/// The example question directory against PrairieLearn's infoQuestion.json schema (its rules
/// written out here: required fields, the uuid pattern, enums and the allowed keys), with the
/// networking and timeout settings the grader needs.
#[test]
fn the_prairielearn_example_question_is_valid() {
    let info = read_json("examples/prairielearn/question/info.json".into());
    common::check_prairielearn_info(&info);
    let html = std::fs::read_to_string("examples/prairielearn/question/question.html").unwrap();
    assert!(html.contains("<pl-external-grader-results>"));
    let server = std::fs::read_to_string("examples/prairielearn/question/server.py").unwrap();
    for name in ["p4_pool2_rows", "p4_pool2_cols"] {
        assert!(
            html.contains(&format!("answers-name=\"{name}\"")) && server.contains(name),
            "{name}"
        );
    }
}

/// CodeRunner's template, rendered as CodeRunner's Twig would (the student's answer and the
/// template parameters escaped for a Python string), run as Jobe would run it.
async fn run_coderunner(answer: &str, params: Value) -> Value {
    let py = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let template = std::fs::read_to_string("examples/moodle/template.py").unwrap();
    let program = template
        .replace("{{ STUDENT_ANSWER | e('py') }}", &py(answer))
        .replace("{{ QUESTION.parameters | json_encode | e('py') }}", &py(&params.to_string()));
    assert!(!program.contains("{{"), "every Twig expression is substituted");
    let dir = tempdir("coderunner");
    std::fs::write(dir.join("prog.py"), program).unwrap();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(python()).arg(dir.join("prog.py")).output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // CodeRunner's combinator result: the service's full answer matches its schema; the
    // template's own messages use only fields CodeRunner allows
    if v.get("testresults").is_some() {
        let errors = common::schema_errors("MoodleCombinatorResult", &v);
        assert!(errors.is_empty(), "{errors:#?}");
    } else {
        for key in v.as_object().unwrap().keys() {
            assert!(
                ["fraction", "prologuehtml", "testresults", "epiloguehtml", "columnformats"].contains(&key.as_str()),
                "{key}"
            );
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moodle_coderunner_template_end_to_end() {
    let url = serve().await;
    let params = json!({"url": url, "questions": ["p5.reduced.params", "p5.reduced.params.branch2"], "reveal": "hints"});
    // right, and branch 2 without its biases (127,232 - 256): half
    let v = run_coderunner(
        "\u{feff}p5.reduced.params: 346,720\np5.reduced.params.branch2: 126,976\n",
        params.clone(),
    )
    .await;
    assert_eq!(v["fraction"], 0.75, "{v}");
    let rows = v["testresults"].as_array().unwrap();
    assert_eq!(rows[0], json!(["iscorrect", "Question", "Expected", "Got", "Feedback"]));
    assert_eq!(v["columnformats"], json!(["%s", "%s", "%s", "%h"]));
    let branch = rows.iter().find(|r| r[1] == "p5.reduced.params.branch2").unwrap();
    let feedback = branch[4].as_str().unwrap();
    assert!(
        feedback.contains("<strong>") && feedback.contains("bias_forgotten") && !feedback.contains("**"),
        "{feedback}"
    );
    // a line that is not "id: answer"
    let v = run_coderunner("p5.reduced.params 346720", params).await;
    assert_eq!(v["fraction"], 0);
    assert!(v["prologuehtml"].as_str().unwrap().contains("Lines 1"), "{v}");
    // the service down: a message, not a crash
    let v = run_coderunner("p5.reduced.params: 1", json!({"url": "http://127.0.0.1:9", "time_budget": 2})).await;
    assert!(v["prologuehtml"].as_str().unwrap().contains("not graded"), "{v}");
}
