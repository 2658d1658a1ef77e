//! `POST /v1/variants`: a per-student variant of the course's problems from a seed, with its
//! answer key (computed by the analysis, as grading computes it), as JSON, as a PrairieLearn
//! question directory, or as a Gradescope autograder folder. Grading a variant needs only its
//! seed: `/v1/grade` with `{"problem_set": "variant", "seed": N, "answers": {...}}`.
use super::body::JsonBody;
use super::error::ApiResult;
use super::{grade, json_response, AppState};
use crate::analysis::variants::{uuid, variant};
use crate::spec::json::Obj;
use crate::spec::SpecError;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Map, Value};

const RUN_AUTOGRADER: &str = include_str!("../../examples/gradescope/run_autograder");
const SETUP_SH: &str = include_str!("../../examples/gradescope/setup.sh");
const CLIENT_PY: &str = include_str!("../../examples/layerscope_client.py");
const PL_GRADER: &str = include_str!("../../examples/prairielearn/grade.py");

pub async fn handle(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let req = Obj::new(&body, "")?;
    let seed = req
        .opt_u64("seed", 0, u64::MAX)?
        .ok_or_else(|| SpecError::invalid("/seed", "is required: the variant's seed (a whole number)"))?;
    let format = req.choice("format", "json", &["json", "prairielearn", "gradescope"])?;
    let url = req.str_or("url", "https://layerscope.example.edu")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 500 {
        return Err(SpecError::invalid("/url", "must be the service's http(s) address").into());
    }
    let reveal = req.choice("reveal", "hints", &["none", "hints", "answers"])?;
    req.finish("seed, format, url, reveal")?;
    let v = variant(seed);
    let key = grade::answer_key(&state, &v.questions, "/questions").await?;
    let answer_key: Map<String, Value> = key.into_iter().map(|(id, text)| (id, json!(text))).collect();
    let ids: Vec<&str> = v.questions.iter().filter_map(|q| q["id"].as_str()).collect();
    let grade_with = json!({"problem_set": "variant", "seed": seed});
    let out = match format {
        "prairielearn" => json!({
            "seed": seed,
            "directory": format!("layerscope-variant-{seed}"),
            "files": prairielearn_files(seed, &v.markdown, &ids),
            "server_files_course": {"layerscope/grade.py": PL_GRADER, "layerscope/layerscope_client.py": CLIENT_PY,
                                    "layerscope/layerscope.json": config(url, reveal, None)},
            "answer_key": answer_key,
        }),
        "gradescope" => json!({
            "seed": seed,
            "files": {
                "run_autograder": RUN_AUTOGRADER,
                "setup.sh": SETUP_SH,
                "layerscope_client.py": CLIENT_PY,
                "layerscope.json": config(url, reveal, Some(seed)),
                "question.md": v.markdown,
            },
            "answer_key": answer_key,
        }),
        _ => json!({
            "seed": seed,
            "markdown": v.markdown,
            "questions": v.questions,
            "answer_key": answer_key,
            "grade_with": grade_with,
        }),
    };
    Ok(json_response(&out))
}

/// The adapters' layerscope.json for a variant (the API key is the instructor's to add).
fn config(url: &str, reveal: &str, seed: Option<u64>) -> String {
    let mut c = json!({"url": url, "api_key": "", "reveal": reveal});
    if let Some(s) = seed {
        c["problem_set"] = json!("variant");
        c["seed"] = json!(s);
    }
    serde_json::to_string_pretty(&c).unwrap_or_default()
}

/// A PrairieLearn question directory for one variant: info.json (external grading with
/// networking on), question.html (the Markdown text and one input per question) and server.py
/// (which ids it grades, and the inputs' names for them).
fn prairielearn_files(seed: u64, markdown: &str, ids: &[&str]) -> Value {
    let info = json!({
        "uuid": uuid(seed),
        "title": format!("layerscope variant {seed}"),
        "topic": "Convolutional networks",
        "tags": ["layerscope", "variant"],
        "type": "v3",
        "gradingMethod": "External",
        "singleVariant": true,
        "partialCredit": true,
        "externalGradingOptions": {
            "enabled": true,
            "image": "prairielearn/grader-python",
            "entrypoint": "/grade/serverFilesCourse/layerscope/grade.py",
            "serverFilesCourse": ["layerscope/"],
            "timeout": 30,
            "enableNetworking": true,
            "environment": {"LAYERSCOPE_TIME_BUDGET": "20"},
        },
    });
    let name = |id: &str| id.replace('.', "_");
    let inputs: String = ids
        .iter()
        .map(|id| {
            format!(
                "<pl-string-input answers-name=\"{}\" label=\"{id}:\" size=\"40\"></pl-string-input>\n",
                name(id)
            )
        })
        .collect();
    let html = format!(
        "<pl-question-panel>\n<markdown>\n{}\n</markdown>\n</pl-question-panel>\n{inputs}<pl-submission-panel>\n  <pl-external-grader-results></pl-external-grader-results>\n</pl-submission-panel>\n",
        markdown.replace('<', "&lt;")
    );
    let names: Map<String, Value> = ids.iter().map(|id| (name(id), json!(id))).collect();
    let params = json!({"problem_set": "variant", "seed": seed, "questions": ids, "names": names});
    // the parameters as JSON read back by Python's json module: no translation of literals
    let server = format!(
        "import json\n\n\ndef generate(data):\n    # what layerscope grades for this variant: its seed, its ids, and the inputs' names for them\n    data[\"params\"][\"layerscope\"] = json.loads({:?})\n",
        serde_json::to_string(&params).unwrap_or_default()
    );
    json!({
        "info.json": serde_json::to_string_pretty(&info).unwrap_or_default(),
        "question.html": html,
        "server.py": server,
    })
}
