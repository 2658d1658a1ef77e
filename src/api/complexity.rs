//! `POST /v1/complexity`: the parameter and operation table, as JSON, CSV or Markdown.
use super::body::JsonBody;
use super::error::{ApiError, ApiResult};
use super::report::ModelSummary;
use super::{json_response, typed, AppState};
use crate::analysis::complexity::{self, Additions, Conventions, Counts, FlopRule, FlopUnit, Profile, Table};
use crate::spec::{infer, Graph, SpecError};
use crate::torch::{device, shapes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use utoipa::ToSchema;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Markdown,
}

fn format_of(body_format: Option<TableFormat>, query: &HashMap<String, String>, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(f) = query.get("format") {
        return match f.as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(SpecError::invalid("/format", format!("unknown format {other:?}; expected json, csv or markdown")).into()),
        };
    }
    if let Some(f) = body_format {
        return Ok(match f {
            TableFormat::Json => Format::Json,
            TableFormat::Csv => Format::Csv,
            TableFormat::Markdown => Format::Markdown,
        });
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

/// The body of `POST /v1/complexity`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplexityRequest {
    #[serde(default)]
    #[schema(schema_with = super::report::model_schema)]
    pub model: Option<Value>,
    #[serde(default)]
    pub conventions: Option<ConventionsRequest>,
    /// Count FLOPs as a tool does (`none`: by the conventions).
    #[serde(default)]
    #[schema(default = "none")]
    pub profile: Option<ProfileChoice>,
    #[serde(default)]
    #[schema(minimum = 1, default = 1)]
    pub batch_size: Option<u64>,
    /// The element type, for output_bytes.
    #[serde(default)]
    #[schema(default = "float32")]
    pub dtype: Option<ElementType>,
    /// Build the model in libtorch and compare every layer's shape and parameters.
    #[serde(default)]
    #[schema(default = true)]
    pub verify: Option<bool>,
    /// JSON, CSV or Markdown (also the `format` query parameter or the Accept header).
    #[serde(default)]
    pub format: Option<TableFormat>,
}

/// The counting conventions; each left out keeps its default.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConventionsRequest {
    #[serde(default)]
    #[schema(default = "accumulate")]
    pub additions: Option<Additions>,
    #[serde(default)]
    #[schema(default = "mults_plus_adds")]
    pub flops: Option<FlopUnit>,
    /// Batchnorm and every other normalization (group, instance, layer norm) in FLOPs.
    #[serde(default)]
    #[schema(default = false)]
    pub count_batchnorm: Option<bool>,
    /// 1 FLOP per activation evaluation, a softmax's exponentials included.
    #[serde(default)]
    #[schema(default = false)]
    pub count_activations: Option<bool>,
    #[serde(default)]
    #[schema(default = false)]
    pub count_pooling: Option<bool>,
    #[serde(default)]
    #[schema(default = false)]
    pub count_residual_adds: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileChoice {
    None,
    Fvcore,
    Ptflops,
    TorchFlopCounter,
    Torchvision,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    Float32,
    Float16,
    Bfloat16,
    Float64,
    Int8,
    Uint8,
}

impl ElementType {
    fn name(self) -> &'static str {
        match self {
            ElementType::Float32 => "float32",
            ElementType::Float16 => "float16",
            ElementType::Bfloat16 => "bfloat16",
            ElementType::Float64 => "float64",
            ElementType::Int8 => "int8",
            ElementType::Uint8 => "uint8",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Json,
    Csv,
    #[serde(alias = "md")]
    Markdown,
}

/// Checks `conventions`, `profile`, `batch_size` and `dtype` (ranges before any arithmetic).
pub fn read_options(req: &ComplexityRequest, max_batch: u64) -> Result<Request, SpecError> {
    let given = req.conventions.as_ref();
    let d = Conventions::default();
    let c = Conventions {
        additions: given.and_then(|c| c.additions).unwrap_or(d.additions),
        flops: given.and_then(|c| c.flops).unwrap_or(d.flops),
        count_batchnorm: given.and_then(|c| c.count_batchnorm).unwrap_or(d.count_batchnorm),
        count_activations: given.and_then(|c| c.count_activations).unwrap_or(d.count_activations),
        count_pooling: given.and_then(|c| c.count_pooling).unwrap_or(d.count_pooling),
        count_residual_adds: given.and_then(|c| c.count_residual_adds).unwrap_or(d.count_residual_adds),
    };
    let profile = match req.profile {
        None | Some(ProfileChoice::None) => None,
        Some(ProfileChoice::Fvcore) => Some(Profile::Fvcore),
        Some(ProfileChoice::Ptflops) => Some(Profile::Ptflops),
        Some(ProfileChoice::TorchFlopCounter) => Some(Profile::TorchFlopCounter),
        Some(ProfileChoice::Torchvision) => Some(Profile::Torchvision),
    };
    if profile.is_some() && given.is_some_and(|c| c.flops.is_some()) {
        return Err(SpecError::invalid(
            "/profile",
            "give either a profile or conventions.flops, not both: a profile fixes how FLOPs are counted",
        ));
    }
    let rule = profile.map_or(FlopRule::Conventions(c), FlopRule::Profile);
    let batch = typed::within_u64(req.batch_size.unwrap_or(1), "/batch_size", 1, max_batch)?;
    Ok(Request {
        rule,
        additions: c.additions,
        conventions: c,
        profile: profile.map(Profile::name),
        batch,
        dtype: req.dtype.unwrap_or(ElementType::Float32).name(),
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
    let req: ComplexityRequest = typed::read(body, "")?;
    let format = format_of(req.format, &query, &headers)?;
    let report = compute(&state, &req).await?;
    let mut out = match format {
        Format::Csv => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], to_csv(&report.table)).into_response(),
        Format::Markdown => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], to_markdown(&report.table)).into_response(),
        // serialized straight from the typed rows: a Value tree of a few thousand cells first
        // cost more than the analysis
        Format::Json => json_response(&report),
    };
    super::cache::mark_unless_verified(&mut out, report.verification.is_some());
    Ok(out)
}

/// What `POST /v1/complexity` answers in JSON (keys in alphabetical order, as they always were).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ComplexityReport {
    pub batch_size: u64,
    pub conventions: Conventions,
    pub dtype: &'static str,
    pub model: ModelSummary,
    /// The tool whose counting the FLOP column follows, if one was asked for.
    pub profile: Option<&'static str>,
    #[serde(flatten)]
    pub table: Table,
    /// The libtorch check (absent with `verify: false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<TableCheck>,
}

/// The libtorch check of a table: every layer built with real parameter tensors and run on an
/// empty batch. When it did not run, `ran` is false and `reason` says why.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct TableCheck {
    pub ran: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub libtorch_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_params: Option<ParamsCheck>,
    /// Every layer's shape and parameters agree, and so do the totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agrees: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerCheck>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub millis: Option<f64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ParamsCheck {
    pub analytic: u128,
    pub executed: u64,
}

/// One layer of the libtorch check; a composite's parameters are its children's (null here).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LayerCheck {
    pub path: String,
    pub analytic_shape: Vec<u64>,
    pub executed_shape: Option<Vec<u64>>,
    pub analytic_params: Option<u64>,
    pub executed_params: Option<u64>,
    pub agrees: bool,
}

impl TableCheck {
    fn skipped(reason: String) -> TableCheck {
        TableCheck {
            ran: false,
            reason: Some(reason),
            ..Default::default()
        }
    }
}

/// Runs the request: the typed report (also used by the grading endpoint).
pub async fn compute(state: &AppState, req: &ComplexityRequest) -> ApiResult<ComplexityReport> {
    let spec = state.model_at(req.model.as_ref(), "/model")?;
    let opts = read_options(req, state.config.max_batch)?;
    let verify = req.verify.unwrap_or(true);
    let graph = infer(&spec, "/model")?;
    let table = table_for(&graph, &opts)?;
    let verification = if verify {
        Some(verify_table(state, &graph, &table).await?)
    } else {
        None
    };
    Ok(ComplexityReport {
        batch_size: opts.batch,
        conventions: opts.conventions,
        dtype: opts.dtype,
        model: ModelSummary::of(&graph),
        profile: opts.profile,
        table,
        verification,
    })
}

/// Builds the model in libtorch and compares every layer's output shape and parameter count.
async fn verify_table(state: &AppState, graph: &Graph<'_>, table: &Table) -> ApiResult<TableCheck> {
    let limit = state.config.max_run_params;
    if table.totals.params > limit as u128 {
        return Ok(TableCheck::skipped(format!(
            "skipped: {} parameters exceed the max_run_params limit of {limit}",
            table.totals.params
        )));
    }
    // libtorch steps through a recurrent layer's tokens one by one, even for an empty batch
    let steps = (graph.recurrent_steps(), state.config.max_run_recurrent_steps);
    if steps.0 > steps.1 as u128 {
        return Ok(TableCheck::skipped(format!(
            "skipped: {} recurrent time steps exceed the max_run_recurrent_steps limit of {}",
            steps.0, steps.1
        )));
    }
    let spec = graph.spec.clone();
    let executed = match state.run_check(move || shapes::execute(&spec, tch::Device::Cpu)).await? {
        Ok(e) => e,
        Err(e) => return Ok(TableCheck::skipped(format!("libtorch could not build the model: {e}"))),
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
        let leaf = node.groups.is_empty();
        let agrees = exec_shape == Some(&node.output) && (!leaf || exec_params == own_params);
        all &= agrees;
        layers.push(LayerCheck {
            path: node.path.clone(),
            analytic_shape: node.output.clone(),
            executed_shape: exec_shape.cloned(),
            analytic_params: leaf.then_some(own_params),
            executed_params: leaf.then_some(exec_params as u64),
            agrees,
        });
    }
    let totals_agree = executed.total_params as u128 == table.totals.params;
    Ok(TableCheck {
        ran: true,
        reason: None,
        what: Some("built every layer in libtorch (real parameter tensors, uninitialised), counted their elements, and ran an empty batch (N=0) forward to read each layer's output shape"),
        device: Some(device::name(tch::Device::Cpu)),
        libtorch_version: Some(device::libtorch_version()),
        total_params: Some(ParamsCheck {
            analytic: table.totals.params,
            executed: executed.total_params as u64,
        }),
        agrees: Some(all && totals_agree),
        layers: Some(layers),
        millis: Some((executed.millis * 1000.0).round() / 1000.0),
    })
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
