//! `POST /v1/variants`: a per-student variant of the course's problems from a seed, with its
//! answer key (computed by the analysis, as grading computes it), as JSON, as a PrairieLearn
//! question directory, or as a Gradescope autograder folder. Grading a variant needs only its
//! seed: `/v1/grade` with `{"problem_set": "variant", "seed": N, "answers": {...}}`.
use super::body::JsonBody;
use super::error::{ApiResult, Problems};
use super::grade::{self, Reveal};
use super::{json_response, typed, AppState};
use crate::analysis::variants::{uuid, variant};
use crate::spec::SpecError;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

const RUN_AUTOGRADER: &str = include_str!("../../examples/gradescope/run_autograder");
const SETUP_SH: &str = include_str!("../../examples/gradescope/setup.sh");
const CLIENT_PY: &str = include_str!("../../examples/layerscope_client.py");
const PL_GRADER: &str = include_str!("../../examples/prairielearn/grade.py");

/// The body of `POST /v1/variants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantsRequest {
    /// The variant's seed: the same seed gives the same variant on every server.
    pub seed: u64,
    #[serde(default)]
    #[schema(default = "json")]
    pub format: Option<VariantFormat>,
    /// The service's address, for the exported LMS configuration.
    #[serde(default)]
    #[schema(default = "https://layerscope.example.edu")]
    pub url: Option<String>,
    /// What the exported grader shows students.
    #[serde(default)]
    #[schema(default = "hints")]
    pub reveal: Option<Reveal>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VariantFormat {
    Json,
    Prairielearn,
    Gradescope,
}

/// A variant: its text, questions and answer key (`json`), or the files of a PrairieLearn
/// question directory or a Gradescope autograder.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantReport {
    pub seed: u64,
    /// The variant's problems as Markdown (`json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    /// The question objects `/v1/grade` takes (`json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub questions: Option<Vec<Value>>,
    /// Question id -> the reference answer as the grader writes it.
    pub answer_key: BTreeMap<String, String>,
    /// What to send `/v1/grade` with the answers (`json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub grade_with: Option<Value>,
    /// The PrairieLearn question directory's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// File name -> contents (`prairielearn`: the question directory; `gradescope`: the
    /// autograder folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<&'static str, String>>,
    /// PrairieLearn's serverFilesCourse files: the grader and its client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_files_course: Option<BTreeMap<&'static str, String>>,
}

/// A per-student variant of the course's problems from a seed, with its answer key and LMS
/// exports.
///
/// The seed fixes a random but valid VGG-style stem (2-3 stages of 3x3/5x5 same-padded
/// convolutions and 2x2 or 3x3 stride-2 pools, on 32 to 224 pixels) with three receptive-field
/// questions (a.rows, a.cols, a.size), and an Inception module (random channel counts and size)
/// with four count questions (b.params.branch2, b.params.branch3, b.params, b.multiplications):
/// the same seed gives the same variant on every server. The answer key is computed by the
/// analysis endpoints' own code. Grade a variant with POST /v1/grade
/// `{"problem_set": "variant", "seed": N, "answers": {...}}`. `format`: `json` (the Markdown
/// text, the question objects, the answer key), `prairielearn` (a question directory: info.json
/// with external grading and networking on, question.html with the Markdown text, one input per
/// question and pl-external-grader-results, server.py naming the variant's seed and ids; plus the
/// serverFilesCourse/layerscope/ files), or `gradescope` (the autograder folder: run_autograder,
/// setup.sh, layerscope_client.py, layerscope.json for the variant, question.md). `url` goes into
/// the exported configuration.
#[utoipa::path(
    post,
    path = "/v1/variants",
    operation_id = "variants",
    tag = "grading",
    request_body = VariantsRequest,
    responses(
        (status = 200, description = "the variant", body = VariantReport),
        Problems,
    )
)]
pub async fn handle(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let req: VariantsRequest = typed::read(body, "")?;
    let seed = req.seed;
    let url = req.url.as_deref().unwrap_or("https://layerscope.example.edu");
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 500 {
        return Err(SpecError::invalid("/url", "must be the service's http(s) address").into());
    }
    let reveal = req.reveal.unwrap_or(Reveal::Hints).name();
    let v = variant(seed);
    let key = grade::answer_key(&state, &v.questions, "/questions").await?;
    let answer_key = key.into_iter().collect();
    let ids: Vec<&str> = v.questions.iter().filter_map(|q| q["id"].as_str()).collect();
    let mut out = VariantReport {
        seed,
        markdown: None,
        questions: None,
        answer_key,
        grade_with: None,
        directory: None,
        files: None,
        server_files_course: None,
    };
    match req.format.unwrap_or(VariantFormat::Json) {
        VariantFormat::Prairielearn => {
            out.directory = Some(format!("layerscope-variant-{seed}"));
            out.files = Some(prairielearn_files(seed, &v.markdown, &ids));
            out.server_files_course = Some(BTreeMap::from([
                ("layerscope/grade.py", PL_GRADER.to_string()),
                ("layerscope/layerscope_client.py", CLIENT_PY.to_string()),
                ("layerscope/layerscope.json", config(url, reveal, None)),
            ]));
        }
        VariantFormat::Gradescope => {
            out.files = Some(BTreeMap::from([
                ("run_autograder", RUN_AUTOGRADER.to_string()),
                ("setup.sh", SETUP_SH.to_string()),
                ("layerscope_client.py", CLIENT_PY.to_string()),
                ("layerscope.json", config(url, reveal, Some(seed))),
                ("question.md", v.markdown),
            ]));
        }
        VariantFormat::Json => {
            out.markdown = Some(v.markdown);
            out.questions = Some(v.questions);
            out.grade_with = Some(json!({"problem_set": "variant", "seed": seed}));
        }
    }
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
fn prairielearn_files(seed: u64, markdown: &str, ids: &[&str]) -> BTreeMap<&'static str, String> {
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
    BTreeMap::from([
        ("info.json", serde_json::to_string_pretty(&info).unwrap_or_default()),
        ("question.html", html),
        ("server.py", server),
    ])
}
