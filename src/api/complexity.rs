//! `POST /v1/complexity`: the parameter and operation table, as JSON, CSV or Markdown.
use super::body::JsonBody;
use super::error::{ApiError, ApiResult};
use super::{json_response, AppState};
use crate::analysis::complexity::{self, Additions, Conventions, Counts, FlopRule, FlopUnit, Profile, Table};
use crate::spec::json::Obj;
use crate::spec::{infer, Graph, SpecError};
use crate::torch::{device, shapes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Markdown,
}

fn format_of(body_format: Option<&str>, query: &HashMap<String, String>, headers: &HeaderMap) -> Result<Format, ApiError> {
    let explicit = query.get("format").map(String::as_str).or(body_format);
    if let Some(f) = explicit {
        return match f {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(SpecError::invalid("/format", format!("unknown format {other:?}; expected json, csv or markdown")).into()),
        };
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    Ok(if accept.contains("text/csv") {
        Format::Csv
    } else if accept.contains("text/markdown") {
        Format::Markdown
    } else {
        Format::Json
    })
}

fn dtype_bytes(name: &str) -> Option<u64> {
    Some(match name {
        "float32" => 4,
        "float16" | "bfloat16" => 2,
        "float64" => 8,
        "int8" | "uint8" => 1,
        _ => return None,
    })
}

pub struct Request {
    pub rule: FlopRule,
    pub additions: Additions,
    pub conventions: Conventions,
    pub profile: Option<&'static str>,
    pub batch: u64,
    pub dtype: &'static str,
}

/// Reads `conventions`, `profile`, `batch_size` and `dtype`.
pub fn read_options(req: &Obj, max_batch: u64) -> Result<Request, SpecError> {
    let mut c = Conventions::default();
    if let Some(v) = req.raw("conventions") {
        let o = Obj::new(v, "/conventions")?;
        c.additions = match o.choice("additions", "accumulate", &["accumulate", "exact"])? {
            "exact" => Additions::Exact,
            _ => Additions::Accumulate,
        };
        c.flops = match o.choice("flops", "mults_plus_adds", &["mults_plus_adds", "2mac", "mac"])? {
            "2mac" => FlopUnit::TwoMac,
            "mac" => FlopUnit::Mac,
            _ => FlopUnit::MultsPlusAdds,
        };
        c.count_batchnorm = o.bool("count_batchnorm", false)?;
        c.count_activations = o.bool("count_activations", false)?;
        c.count_pooling = o.bool("count_pooling", false)?;
        c.count_residual_adds = o.bool("count_residual_adds", false)?;
        o.finish("additions, flops, count_batchnorm, count_activations, count_pooling, count_residual_adds")?;
    }
    let profile = match req.opt_str("profile")? {
        None | Some("none") => None,
        Some(name) => Some(Profile::parse(name).ok_or_else(|| {
            SpecError::invalid(
                "/profile",
                format!("unknown profile {name:?}; expected none, {}", Profile::NAMES.join(", ")),
            )
        })?),
    };
    if profile.is_some() && req.raw("conventions").and_then(|v| v.get("flops")).is_some() {
        return Err(SpecError::invalid(
            "/profile",
            "give either a profile or conventions.flops, not both: a profile fixes how FLOPs are counted",
        ));
    }
    let rule = profile.map_or(FlopRule::Conventions(c), FlopRule::Profile);
    let batch = req.u64_in("batch_size", Some(1), 1, max_batch)?;
    let dtype = req.choice("dtype", "float32", &["float32", "float16", "bfloat16", "float64", "int8", "uint8"])?;
    Ok(Request {
        rule,
        additions: c.additions,
        conventions: c,
        profile: profile.map(Profile::name),
        batch,
        dtype,
    })
}

pub fn table_for(graph: &Graph, r: &Request) -> Result<Table, SpecError> {
    complexity::table(
        graph,
        &complexity::Options {
            rule: r.rule,
            additions: r.additions,
            batch: r.batch,
            dtype_bytes: dtype_bytes(r.dtype).unwrap_or(4),
        },
    )
}

pub async fn handle(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let format = format_of(body.get("format").and_then(Value::as_str), &query, &headers)?;
    let (table, head) = run(&state, &body).await?;
    let mut out = match format {
        Format::Csv => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], to_csv(&table)).into_response(),
        Format::Markdown => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], to_markdown(&table)).into_response(),
        // serialized straight from the typed rows: a Value tree of a few thousand cells first
        // cost more than the analysis
        Format::Json => json_response(&head.answer(&table)),
    };
    super::cache::mark_unless_verified(&mut out, head.verification.is_some());
    Ok(out)
}

/// Everything in the JSON answer but the table.
pub struct Head {
    model: Value,
    batch_size: u64,
    dtype: &'static str,
    conventions: Value,
    profile: Option<&'static str>,
    verification: Option<Value>,
}

/// The JSON answer, its keys in alphabetical order as they always were.
#[derive(Serialize)]
pub struct Answer<'a> {
    batch_size: u64,
    conventions: &'a Value,
    dtype: &'static str,
    model: &'a Value,
    profile: Option<&'static str>,
    rows: &'a [complexity::Row],
    totals: &'a complexity::Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<&'a Value>,
}

impl Head {
    pub fn answer<'a>(&'a self, table: &'a Table) -> Answer<'a> {
        Answer {
            batch_size: self.batch_size,
            conventions: &self.conventions,
            dtype: self.dtype,
            model: &self.model,
            profile: self.profile,
            rows: &table.rows,
            totals: &table.totals,
            verification: self.verification.as_ref(),
        }
    }
}

/// Runs the request: the table, and the JSON answer (also used by the grading endpoint).
pub async fn compute(state: &AppState, body: &Value) -> ApiResult<(Table, Value)> {
    let (table, head) = run(state, body).await?;
    let answer = super::answer_value(&head.answer(&table))?;
    Ok((table, answer))
}

/// The table and the rest of the answer.
async fn run(state: &AppState, body: &Value) -> ApiResult<(Table, Head)> {
    let req = Obj::new(body, "")?;
    let spec = state.model(&req, "model")?;
    let opts = read_options(&req, state.config.max_batch)?;
    let verify = req.bool("verify", true)?;
    req.opt_str("format")?;
    req.finish("model, conventions, profile, batch_size, dtype, verify, format")?;
    let graph = infer(&spec, "/model")?;
    let table = table_for(&graph, &opts)?;
    let c = opts.conventions;
    let mut head = Head {
        model: json!({"preset": spec.preset, "input_shape": spec.input_shape, "output_shape": graph.output(), "output_shapes": graph.output_shapes()}),
        batch_size: opts.batch,
        dtype: opts.dtype,
        conventions: json!({
            "additions": if c.additions == Additions::Exact { "exact" } else { "accumulate" },
            "flops": match c.flops { FlopUnit::MultsPlusAdds => "mults_plus_adds", FlopUnit::TwoMac => "2mac", FlopUnit::Mac => "mac" },
            "count_batchnorm": c.count_batchnorm,
            "count_activations": c.count_activations,
            "count_pooling": c.count_pooling,
            "count_residual_adds": c.count_residual_adds,
        }),
        profile: opts.profile,
        verification: None,
    };
    if verify {
        head.verification = Some(verify_table(state, &graph, &table).await?);
    }
    Ok((table, head))
}

/// Builds the model in libtorch and compares every layer's output shape and parameter count.
async fn verify_table(state: &AppState, graph: &Graph<'_>, table: &Table) -> ApiResult<Value> {
    let limit = state.config.max_run_params;
    if table.totals.params > limit as u128 {
        return Ok(
            json!({"ran": false, "reason": format!("skipped: {} parameters exceed the max_run_params limit of {limit}", table.totals.params)}),
        );
    }
    // libtorch steps through a recurrent layer's tokens one by one, even for an empty batch
    let steps = (graph.recurrent_steps(), state.config.max_run_recurrent_steps);
    if steps.0 > steps.1 as u128 {
        return Ok(
            json!({"ran": false, "reason": format!("skipped: {} recurrent time steps exceed the max_run_recurrent_steps limit of {}", steps.0, steps.1)}),
        );
    }
    let spec = graph.spec.clone();
    let executed = match state.run_check(move || shapes::execute(&spec, tch::Device::Cpu)).await? {
        Ok(e) => e,
        Err(e) => return Ok(json!({"ran": false, "reason": format!("libtorch could not build the model: {e}")})),
    };
    let rows: HashMap<&str, &crate::analysis::complexity::Row> = table.rows.iter().map(|r| (r.path.as_str(), r)).collect();
    let mut layers = Vec::new();
    let mut all = true;
    for node in graph.walk() {
        let own_params = rows
            .get(node.path.as_str())
            .map(|r| if r.subtotal { 0 } else { r.counts.params })
            .unwrap_or(0) as u64;
        let exec_shape = executed.shapes.get(&node.path);
        let exec_params = executed.params.get(&node.path).copied().unwrap_or(0);
        let agrees = exec_shape == Some(&node.output) && (!node.groups.is_empty() || exec_params == own_params);
        all &= agrees;
        layers.push(json!({
            "path": node.path,
            "analytic_shape": node.output,
            "executed_shape": exec_shape,
            "analytic_params": if node.groups.is_empty() { json!(own_params) } else { Value::Null },
            "executed_params": if node.groups.is_empty() { json!(exec_params) } else { Value::Null },
            "agrees": agrees,
        }));
    }
    let totals_agree = executed.total_params as u128 == table.totals.params;
    Ok(json!({
        "ran": true,
        "what": "built every layer in libtorch (real parameter tensors, uninitialised), counted their elements, and ran an empty batch (N=0) forward to read each layer's output shape",
        "device": device::name(tch::Device::Cpu),
        "libtorch_version": device::libtorch_version(),
        "total_params": {"analytic": table.totals.params, "executed": executed.total_params},
        "agrees": all && totals_agree,
        "layers": layers,
        "millis": (executed.millis * 1000.0).round() / 1000.0,
    }))
}

const COLUMNS: &[&str] = &[
    "path",
    "name",
    "type",
    "input_shape",
    "output_shape",
    "subtotal",
    "params_weight",
    "params_bias",
    "params",
    "multiplications",
    "additions",
    "macs",
    "flops",
    "activations",
    "comparisons",
    "output_elements",
    "output_bytes",
    "params_percent",
    "flops_percent",
];

fn shape(s: &[u64]) -> String {
    s.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
}

fn cells(path: &str, name: &str, ty: &str, input: &str, output: &str, subtotal: bool, c: &Counts, pp: f64, fp: f64) -> Vec<String> {
    vec![
        path.into(),
        name.into(),
        ty.into(),
        input.into(),
        output.into(),
        subtotal.to_string(),
        c.params_weight.to_string(),
        c.params_bias.to_string(),
        c.params.to_string(),
        c.multiplications.to_string(),
        c.additions.to_string(),
        c.macs.to_string(),
        c.flops.to_string(),
        c.activations.to_string(),
        c.comparisons.to_string(),
        c.output_elements.to_string(),
        c.output_bytes.to_string(),
        format!("{pp}"),
        format!("{fp}"),
    ]
}

/// Whether some row has a note (a profile's tool that does not count an op there): the tables
/// then end with a `note` column.
fn has_notes(t: &Table) -> bool {
    t.rows.iter().any(|r| r.note.is_some())
}

fn columns(t: &Table) -> Vec<&'static str> {
    let mut c = COLUMNS.to_vec();
    if has_notes(t) {
        c.push("note");
    }
    c
}

fn all_cells(t: &Table) -> Vec<Vec<String>> {
    let notes = has_notes(t);
    let mut out: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| {
            let mut row = cells(
                &r.path,
                r.name.as_deref().unwrap_or(""),
                &r.layer_type,
                &shape(&r.input_shape),
                &shape(&r.output_shape),
                r.subtotal,
                &r.counts,
                r.params_percent,
                r.flops_percent,
            );
            if notes {
                row.push(r.note.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    let mut total = cells("total", "", "total", "", "", true, &t.totals, 100.0, 100.0);
    if notes {
        total.push(String::new());
    }
    out.push(total);
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn to_csv(t: &Table) -> String {
    let mut s = columns(t).join(",") + "\n";
    for row in all_cells(t) {
        s += &row.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",");
        s.push('\n');
    }
    s
}

pub fn to_markdown(t: &Table) -> String {
    let columns = columns(t);
    let mut s = format!("| {} |\n|{}\n", columns.join(" | "), "---|".repeat(columns.len()));
    for row in all_cells(t) {
        s += &format!(
            "| {} |\n",
            row.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | ")
        );
    }
    s
}
