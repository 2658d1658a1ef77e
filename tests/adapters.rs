//! The Gradescope and PrairieLearn adapters in examples/, end to end against a real server.
mod common;
use common::{python_ok, serve};
use serde_json::Value;

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("layerscope-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradescope_autograder_end_to_end() {
    let url = serve().await;
    let root = tempdir("gradescope");
    std::fs::create_dir_all(root.join("submission")).unwrap();
    std::fs::create_dir_all(root.join("source")).unwrap();
    std::fs::copy("examples/sample-answers.txt", root.join("submission/answers.txt")).unwrap();
    std::fs::write(
        root.join("source/layerscope.json"),
        format!(r#"{{"url": "{url}", "problem_set": "course", "reveal": "hints"}}"#),
    )
    .unwrap();
    python_ok(
        &["examples/gradescope/run_autograder"],
        &[("AUTOGRADER_ROOT", &root.display().to_string())],
    )
    .await;
    let results: Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/results.json")).unwrap()).unwrap();
    let tests = results["tests"].as_array().unwrap();
    let status = |name: &str| {
        tests.iter().find(|t| t["name"] == name).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("p5.reduced.params"), "passed");
    assert_eq!(status("p5.reduced.params.branch2"), "failed");
    assert_eq!(status("p5.naive.multiplications"), "failed");
    assert_eq!(status("p4.pool2.rows"), "passed");
    assert!(results["score"].as_f64().unwrap() > 10.0);
    for t in tests {
        for key in ["name", "score", "max_score", "status", "output", "output_format", "visibility"] {
            assert!(t.get(key).is_some(), "{key} missing in {t}");
        }
    }
    // an unreachable service still yields a valid results.json with an explanation
    std::fs::write(
        root.join("source/layerscope.json"),
        r#"{"url": "http://127.0.0.1:9", "problem_set": "course"}"#,
    )
    .unwrap();
    python_ok(
        &["examples/gradescope/run_autograder"],
        &[("AUTOGRADER_ROOT", &root.display().to_string())],
    )
    .await;
    let results: Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/results.json")).unwrap()).unwrap();
    assert_eq!(results["score"], 0);
    assert!(results["output"].as_str().unwrap().contains("could not be graded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prairielearn_external_grader_end_to_end() {
    let url = serve().await;
    let root = tempdir("prairielearn");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let data = serde_json::json!({"submitted_answers": {"p5.reduced.params": "346,720", "p3.witness.form_ii": "-0.119", "p4.pool2.cols": "4j-9 <= n <= 4j+6"}});
    std::fs::write(root.join("data/data.json"), data.to_string()).unwrap();
    python_ok(
        &["examples/prairielearn/grade.py"],
        &[("GRADE_ROOT", &root.display().to_string()), ("LAYERSCOPE_URL", &url)],
    )
    .await;
    let results: Value = serde_json::from_str(&std::fs::read_to_string(root.join("results/results.json")).unwrap()).unwrap();
    assert_eq!(results["gradable"], true);
    let score = results["score"].as_f64().unwrap();
    assert!(score > 0.0 && score < 1.0);
    let tests = results["tests"].as_array().unwrap();
    let points = |name: &str| tests.iter().find(|t| t["name"] == name).unwrap()["points"].as_f64().unwrap();
    assert_eq!(points("p5.reduced.params"), 1.0);
    assert_eq!(points("p3.witness.form_ii"), 1.0);
    assert_eq!(points("p4.pool2.cols"), 1.0);
    assert_eq!(points("p4.pool1.rows"), 0.0);
}
