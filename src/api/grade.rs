//! `POST /v1/grade`: scores students' answers against references computed by the same code as
//! the analysis endpoints, with feedback that says which cell is wrong and by how much, and
//! results in the formats LMS autograders read (Gradescope, PrairieLearn, Moodle CodeRunner).
use super::body::JsonBody;
use super::complexity::ComplexityReport;
use super::diagnostics::DiagnosticsReport;
use super::error::{ApiError, ApiResult};
use super::momentum::{MomentumReport, Verdict};
use super::receptive_field::RfReport;
use super::typed::{deserialize_by_kind, map_of, ByKind};
use super::{complexity, diagnostics, json_response, momentum, receptive_field, typed, AppState};
use crate::analysis::answers::{
    check_end, parse_number_in, parse_range, thousands, EndCheck, Locale, Number, Ratio, NUMBER_FORMS, RANGE_FORMS,
};
use crate::analysis::complexity::{Counts, Row};
use crate::analysis::receptive_field::{End, LayerRf, RfKind};
use crate::spec::error::child;
use crate::spec::SpecError;
use axum::extract::State;
use axum::response::Response;
use serde::{de, Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

/// What the grader shows students beyond right or wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reveal {
    None,
    Hints,
    Answers,
}

impl Reveal {
    /// The name as requests write it.
    pub fn name(self) -> &'static str {
        match self {
            Reveal::None => "none",
            Reveal::Hints => "hints",
            Reveal::Answers => "answers",
        }
    }
}

/// The axis of a range question: its index letter (output) and variable (input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAxis {
    Rows,
    Cols,
    Slices,
}

impl RangeAxis {
    /// This axis of a range given per axis (a volume's slices, the rows, the columns).
    fn pick<T>(self, slices: Option<T>, rows: Option<T>, cols: Option<T>) -> Option<T> {
        match self {
            RangeAxis::Slices => slices,
            RangeAxis::Rows => rows,
            RangeAxis::Cols => cols,
        }
    }

    fn letters(self) -> (char, char) {
        match self {
            RangeAxis::Rows => ('i', 'm'),
            RangeAxis::Cols => ('j', 'n'),
            RangeAxis::Slices => ('k', 'p'),
        }
    }
}

/// What a question asks for, once its `ask` text is read.
#[derive(Debug, Clone)]
enum Ask {
    /// A column of the complexity table: for the total, a layer path, or the n-th branch (1-based).
    Count { column: &'static str, target: Target },
    /// The affine input range of a layer's output along rows, columns or (a volume's) slices.
    Range { layer: String, axis: RangeAxis },
    /// Receptive-field size or jump of a layer along rows.
    RfNumber { layer: String, what: &'static str },
    /// The input tokens output token i of a sequence layer reads.
    Tokens { layer: String },
    /// A quantity of the gradient diagnostics.
    Gradient(GradientAsk),
    /// A quantity of the momentum report.
    Momentum(MomentumAsk),
}

#[derive(Debug, Clone)]
enum GradientAsk {
    Verdict,
    FirstVanishingLayer,
    /// The Frobenius norm of a layer's weight gradient (a layer by path or name, or a weight by
    /// its PyTorch name).
    WeightGrad(String),
    BiasGrad(String),
    /// The course's bound on a layer's bias gradient.
    Bound(String),
    MaxDerivative(String),
    MeanDerivative(String),
}

#[derive(Debug, Clone)]
enum MomentumAsk {
    Verdict,
    /// Form I vs Form II's first step over the tolerance (`none` when they agree).
    FirstDifferingStep,
    Theta {
        form: String,
        step: usize,
    },
}

/// What a question's answer is graded against: the analysis's typed report.
#[derive(Clone)]
enum Reference {
    Gradient(Box<DiagnosticsReport>),
    Complexity(Box<ComplexityReport>),
    ReceptiveField(Box<RfReport>),
    Momentum(Box<MomentumReport>),
}

#[derive(Debug, Clone)]
enum Target {
    Total,
    Layer(String),
    Branch(usize),
}

fn column(word: &str) -> Option<&'static str> {
    Some(match word {
        "params" | "parameters" | "parameter" => "params",
        "weights" => "params_weight",
        "biases" => "params_bias",
        "multiplications" | "mults" | "multiplies" => "multiplications",
        "additions" | "adds" => "additions",
        "macs" => "macs",
        "flops" => "flops",
        "activations" | "activation evaluations" => "activations",
        "comparisons" => "comparisons",
        "output bytes" | "memory" => "output_bytes",
        "output elements" => "output_elements",
        _ => return None,
    })
}

/// Reads `ask` for a question of `kind`. The grammar is documented in openapi.yaml.
fn parse_ask(kind: &str, ask: &str) -> Result<Ask, String> {
    let a = ask.trim().to_lowercase();
    let a = a.split_whitespace().collect::<Vec<_>>().join(" ");
    let (what, target) = match a.split_once(" of ") {
        Some((w, t)) => (w.trim().to_string(), Some(t.trim().to_string())),
        None => (a.clone(), None),
    };
    // "rows of layer 9 at one-based i": drop the trailing qualifier
    let target = target.map(|t| t.split(" at ").next().unwrap_or("").trim().to_string());
    let layer_of = |t: &Option<String>| -> Result<String, String> {
        match t.as_deref().map(|t| t.strip_prefix("layer ").unwrap_or(t).trim()) {
            Some(l) if !l.is_empty() => Ok(l.to_string()),
            _ => Err(format!("{ask:?} needs a layer: \"... of layer PATH-OR-NAME\"")),
        }
    };
    match kind {
        "complexity" => {
            let what = what.strip_prefix("total ").unwrap_or(&what).to_string();
            let column = column(&what).ok_or_else(|| format!("unknown quantity {what:?}: expected params, weights, biases, multiplications, additions, macs, flops, activations, comparisons, output bytes or output elements"))?;
            let target = match target.as_deref() {
                None | Some("total") | Some("the model") | Some("the module") => Target::Total,
                Some(t) if t.starts_with("branch ") => {
                    let n: usize = t[7..]
                        .trim()
                        .parse()
                        .map_err(|_| format!("{t:?}: expected \"branch N\" with N counted from 1"))?;
                    if n == 0 {
                        return Err("branches are counted from 1".into());
                    }
                    Target::Branch(n)
                }
                Some(_) => Target::Layer(layer_of(&target)?),
            };
            Ok(Ask::Count { column, target })
        }
        "receptive_field" => match what.as_str() {
            "rows" | "row range" | "range" => Ok(Ask::Range {
                layer: layer_of(&target)?,
                axis: RangeAxis::Rows,
            }),
            "cols" | "columns" | "column range" => Ok(Ask::Range {
                layer: layer_of(&target)?,
                axis: RangeAxis::Cols,
            }),
            "slices" | "depth" | "slice range" => Ok(Ask::Range {
                layer: layer_of(&target)?,
                axis: RangeAxis::Slices,
            }),
            "size" | "receptive field size" | "receptive field" => Ok(Ask::RfNumber {
                layer: layer_of(&target)?,
                what: "size",
            }),
            "min size" | "minimum size" => Ok(Ask::RfNumber {
                layer: layer_of(&target)?,
                what: "min_size",
            }),
            "max size" | "maximum size" => Ok(Ask::RfNumber {
                layer: layer_of(&target)?,
                what: "max_size",
            }),
            "jump" | "stride" | "effective stride" => Ok(Ask::RfNumber {
                layer: layer_of(&target)?,
                what: "jump",
            }),
            "tokens" | "token range" | "input tokens" => Ok(Ask::Tokens { layer: layer_of(&target)? }),
            _ => Err(format!(
                "unknown receptive-field quantity {what:?}: expected rows, cols, slices (a volume's depth), size, min size, max size, jump or tokens"
            )),
        },
        "gradient" => {
            let of = |q: fn(String) -> GradientAsk| -> Result<Ask, String> { Ok(Ask::Gradient(q(layer_of(&target)?))) };
            match (what.as_str(), &target) {
                ("verdict", None) => Ok(Ask::Gradient(GradientAsk::Verdict)),
                ("first vanishing layer", None) => Ok(Ask::Gradient(GradientAsk::FirstVanishingLayer)),
                ("weight gradient norm" | "weight grad", Some(_)) => of(GradientAsk::WeightGrad),
                ("bias gradient norm" | "bias grad", Some(_)) => of(GradientAsk::BiasGrad),
                ("bound" | "bias gradient bound", Some(_)) => of(GradientAsk::Bound),
                ("max derivative", Some(_)) => of(GradientAsk::MaxDerivative),
                ("mean derivative", Some(_)) => of(GradientAsk::MeanDerivative),
                _ => Err(format!("unknown gradient quantity {ask:?}: expected verdict, first vanishing layer, weight grad / bias grad / bound of layer L, max derivative / mean derivative of layer L")),
            }
        }
        "momentum" => {
            // "theta of form_ii at step 2", "verdict", "first differing step"
            if what == "verdict" {
                return Ok(Ask::Momentum(MomentumAsk::Verdict));
            }
            if what == "first differing step" {
                return Ok(Ask::Momentum(MomentumAsk::FirstDifferingStep));
            }
            let full = a.clone();
            if let Some(rest) = full.strip_prefix("theta of ") {
                let (form, step) = rest
                    .split_once(" at step ")
                    .ok_or_else(|| format!("{ask:?}: expected \"theta of FORM at step K\""))?;
                let k: usize = step
                    .trim()
                    .parse()
                    .map_err(|_| format!("{ask:?}: the step must be a whole number"))?;
                return Ok(Ask::Momentum(MomentumAsk::Theta {
                    form: form.trim().into(),
                    step: k,
                }));
            }
            Err(format!(
                "unknown momentum quantity {ask:?}: expected verdict, first differing step, or theta of FORM at step K"
            ))
        }
        other => Err(format!("unknown kind {other:?}")),
    }
}

struct Question {
    id: String,
    kind: &'static str,
    ask: Ask,
    ask_text: String,
    request: Value,
    answer: Option<Value>,
    points: f64,
    tolerance: Tolerance,
    locale: Locale,
    partial: Partial,
    index_base: u64,
    pointer: String,
    /// The model was given as the question's `model` (not inside `request`): errors point there.
    model_at_top: bool,
}

/// One question's verdict.
struct Graded {
    id: String,
    score: f64,
    max: f64,
    correct: bool,
    feedback: String,
    expected: String,
    got: String,
    /// The recognised mistake that earned partial credit.
    mistake: Option<&'static str>,
}

/// How close a numeric answer must be.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tolerance {
    /// Exact for counts, 1e-3 relative for measured quantities.
    Default,
    /// |got - want| <= absolute + relative * |want|.
    RelAbs { absolute: f64, relative: f64 },
    /// PrairieLearn's `comparison="sigfig"`: right to this many significant figures.
    SigFigs(i32),
    /// PrairieLearn's `comparison="decdig"`: right to this many digits after the decimal point.
    Decimals(i32),
}

impl Tolerance {
    fn accepts(self, got: f64, want: f64, is_count: bool) -> bool {
        match self {
            Tolerance::Default if is_count => got == want,
            Tolerance::Default => within(got, want, 1e-12, 1e-3),
            Tolerance::RelAbs { absolute, relative } => within(got, want, absolute, relative),
            // as pl-number-input grades them: |got - want| < 0.51 x 10^-n
            Tolerance::SigFigs(digits) => {
                let n = if want == 0.0 {
                    digits - 1
                } else {
                    -(want.abs().log10().floor() as i32) + digits - 1
                };
                (got - want).abs() < 0.51 * 10f64.powi(-n)
            }
            Tolerance::Decimals(digits) => (got - want).abs() < 0.51 * 10f64.powi(-digits),
        }
    }
}

/// The mistakes that earn partial credit when recognised, with their default fractions.
const MISTAKES: &[(&str, f64, &str)] = &[
    ("bias_forgotten", 0.5, "the count without the biases"),
    (
        "macs_for_flops",
        0.5,
        "MACs given where FLOPs were asked (or FLOPs where MACs were)",
    ),
    (
        "additions_convention",
        0.5,
        "additions counted under the other convention (k-1 instead of k per output, or the reverse)",
    ),
    ("wrong_input_channels", 0.5, "a layer's input channels taken from another layer"),
    ("index_base", 0.5, "the range for the other index base (zero- vs one-based)"),
    (
        "swapped_letters",
        0.5,
        "the right numbers with the index letters swapped (only under strict_variables)",
    ),
];

/// Fractions of the points per recognised mistake (0 turns one off).
#[derive(Clone, Debug, PartialEq)]
struct Partial(Vec<(&'static str, f64)>);

impl Partial {
    fn defaults() -> Partial {
        Partial(MISTAKES.iter().map(|(k, f, _)| (*k, *f)).collect())
    }
    fn credit(&self, key: &str) -> f64 {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, f)| *f).unwrap_or(0.0)
    }
    /// `false`, or {mistake: fraction} over `base` (unnamed mistakes keep their fraction).
    fn read(v: Option<&PartialRequest>, pointer: &str, base: &Partial) -> Result<Partial, SpecError> {
        match v {
            None => Ok(base.clone()),
            Some(PartialRequest::Enabled(false)) => Ok(Partial(vec![])),
            Some(PartialRequest::Enabled(true)) => Ok(Partial::defaults()),
            Some(PartialRequest::Fractions(map)) => {
                let mut out = base.clone();
                for (key, &f) in map {
                    let Some((name, _, _)) = MISTAKES.iter().find(|(k, _, _)| k == key) else {
                        let names: Vec<&str> = MISTAKES.iter().map(|(k, _, _)| *k).collect();
                        return Err(SpecError::invalid(
                            child(pointer, key),
                            format!("unknown field {key:?}; allowed here: {}", names.join(", ")),
                        ));
                    };
                    typed::within(f, &child(pointer, key), 0.0, 1.0)?;
                    out.0.retain(|(k, _)| k != name);
                    out.0.push((name, f));
                }
                Ok(out)
            }
        }
    }
}

/// A mistake's value for this question: if the answer equals it, the mistake is recognised.
struct Slip {
    key: &'static str,
    value: f64,
    /// What the student computed, in words, for the feedback.
    says: String,
}

/// The body of `POST /v1/grade`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GradeRequest {
    /// Question objects; with a problem_set, the ids or prefixes (ending in `.` or `*`) to grade.
    #[serde(default)]
    #[schema(schema_with = question_items)]
    pub questions: Option<Vec<Value>>,
    #[serde(default)]
    pub problem_set: Option<ProblemSet>,
    /// With problem_set variant: the variant's seed (POST /v1/variants).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Question id -> the student's answer.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub answers: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    #[schema(default = "none")]
    pub reveal: Option<Reveal>,
    #[serde(default)]
    #[schema(default = "json")]
    pub output: Option<OutputName>,
    /// Index letters must be the course's (i/j for the output, m/n for the input).
    #[serde(default)]
    #[schema(default = false)]
    pub strict_variables: Option<bool>,
    #[serde(default)]
    #[schema(default = "decimal_point")]
    pub number_locale: Option<Locale>,
    #[serde(default)]
    pub partial_credit: Option<PartialRequest>,
}

/// `questions`: up to 200 question objects, or with a problem_set the ids or prefixes to grade.
fn question_items() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("with a problem_set: an id, or a prefix ending in . or *")),
                )
                .item(utoipa::openapi::Ref::from_schema_name("QuestionRequest")),
        )
        .max_items(Some(200))
        .description(Some("question objects; with a problem_set, the ids or prefixes to grade"))
        .build()
}

/// One question: what it asks of which analysis, and the student's answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionRequest {
    pub id: String,
    #[serde(default)]
    #[schema(default = "complexity")]
    pub kind: Option<QuestionKind>,
    /// The quantity, in the ask language (see the route's description).
    pub ask: String,
    #[serde(default)]
    #[schema(schema_with = super::report::model_schema)]
    pub model: Option<Value>,
    /// The analysis endpoint's request body.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub request: Option<Value>,
    /// The student's answer (number, text or object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub answer: Option<Value>,
    #[serde(default)]
    #[schema(minimum = 0, default = 1)]
    pub points: Option<f64>,
    #[serde(default)]
    pub tolerance: Option<ToleranceRequest>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub index_base: Option<u64>,
    #[serde(default)]
    pub number_locale: Option<Locale>,
    #[serde(default)]
    pub partial_credit: Option<PartialRequest>,
}

/// One kind of tolerance: {absolute, relative}, {sigfigs} or {decimals}.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToleranceRequest {
    #[serde(default)]
    #[schema(minimum = 0)]
    pub absolute: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub relative: Option<f64>,
    /// PrairieLearn's `comparison="sigfig"`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 15)]
    pub sigfigs: Option<u64>,
    /// PrairieLearn's `comparison="decdig"`.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 15)]
    pub decimals: Option<u64>,
}

/// `false` for no partial credit, `true` for the defaults, or fractions of the points per
/// recognised mistake (bias_forgotten, macs_for_flops, additions_convention,
/// wrong_input_channels, index_base, swapped_letters; 0.5 each by default).
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum PartialRequest {
    Enabled(bool),
    Fractions(BTreeMap<String, f64>),
}

impl ByKind for PartialRequest {
    const EXPECTING: &'static str = "true, false or {mistake: fraction of the points}";
    fn from_bool<E: de::Error>(v: bool) -> Result<Self, E> {
        Ok(PartialRequest::Enabled(v))
    }
    fn from_map<'de, A: de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        map_of(map).map(PartialRequest::Fractions)
    }
}

deserialize_by_kind!(PartialRequest);

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    ReceptiveField,
    Complexity,
    Gradient,
    Momentum,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemSet {
    Course,
    Variant,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputName {
    Json,
    Gradescope,
    Prairielearn,
    MoodleCoderunner,
}

/// Request-wide defaults a question may override.
struct Defaults {
    locale: Locale,
    partial: Partial,
}

fn read_question(v: Value, pointer: &str, answers: Option<&BTreeMap<String, Value>>, defaults: &Defaults) -> Result<Question, SpecError> {
    let q: QuestionRequest = typed::read(v, pointer)?;
    let at = |key: &str| child(pointer, key);
    let kind = match q.kind.unwrap_or(QuestionKind::Complexity) {
        QuestionKind::ReceptiveField => "receptive_field",
        QuestionKind::Complexity => "complexity",
        QuestionKind::Gradient => "gradient",
        QuestionKind::Momentum => "momentum",
    };
    let ask = parse_ask(kind, &q.ask).map_err(|e| SpecError::invalid(at("ask"), e))?;
    let mut request = match q.request {
        None | Some(Value::Null) => json!({}),
        Some(r @ Value::Object(_)) => r,
        Some(_) => {
            return Err(SpecError::invalid(
                at("request"),
                "expected the analysis endpoint's request body (an object)",
            ))
        }
    };
    let model_at_top = q.model.is_some();
    if let Some(m) = q.model {
        request["model"] = m;
    }
    let answer = q.answer.or_else(|| answers.and_then(|a| a.get(&q.id)).cloned());
    let points = typed::within(q.points.unwrap_or(1.0), &at("points"), 0.0, 1e6)?;
    let tolerance = match q.tolerance {
        None => Tolerance::Default,
        Some(t) => {
            let tp = |key: &str| child(&at("tolerance"), key);
            match (t.sigfigs, t.decimals, t.absolute.is_some() || t.relative.is_some()) {
                (Some(n), None, false) => Tolerance::SigFigs(typed::within_u64(n, &tp("sigfigs"), 1, 15)? as i32),
                (None, Some(n), false) => Tolerance::Decimals(typed::within_u64(n, &tp("decimals"), 0, 15)? as i32),
                (None, None, _) => {
                    let absolute = t.absolute.unwrap_or(0.0);
                    let relative = t.relative.unwrap_or(0.0);
                    if absolute < 0.0 {
                        return Err(SpecError::invalid(tp("absolute"), format!("must be at least 0, got {absolute}")));
                    }
                    typed::within(relative, &tp("relative"), 0.0, 1.0)?;
                    Tolerance::RelAbs { absolute, relative }
                }
                _ => {
                    return Err(SpecError::invalid(
                        at("tolerance"),
                        "give one kind of tolerance: {absolute, relative}, {sigfigs} or {decimals}",
                    ))
                }
            }
        }
    };
    let locale = q.number_locale.unwrap_or(defaults.locale);
    let partial = Partial::read(q.partial_credit.as_ref(), &at("partial_credit"), &defaults.partial)?;
    let lower = q.ask.to_lowercase();
    let base_default = if lower.contains("zero-based") || lower.contains("0-based") {
        0
    } else {
        1
    };
    let index_base = match q.index_base {
        None => base_default,
        Some(b @ (0 | 1)) => b,
        Some(b) => return Err(SpecError::invalid(at("index_base"), format!("must be 0 or 1, got {b}"))),
    };
    Ok(Question {
        id: q.id,
        kind,
        ask,
        ask_text: q.ask,
        request,
        answer,
        points,
        tolerance,
        locale,
        partial,
        index_base,
        pointer: pointer.to_string(),
        model_at_top,
    })
}

/// The analysis request a question's reference comes from (verification off: grading needs the
/// analytic answer; the analysis endpoints' own tests verify it).
fn reference_request(q: &Question) -> Value {
    let mut r = q.request.clone();
    match q.kind {
        "receptive_field" => {
            r["index_base"] = json!(q.index_base);
            r["verify"] = json!(false);
        }
        "complexity" => r["verify"] = json!(false),
        _ => {}
    }
    r
}

async fn reference(state: &AppState, q: &Question, cache: &mut HashMap<String, Reference>) -> ApiResult<Reference> {
    let req = reference_request(q);
    let key = format!("{}:{}", q.kind, req);
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let reroot = |e: ApiError| {
        let pointer = e.pointer.map(|p| {
            if q.model_at_top && p.starts_with("/model") {
                format!("{}{p}", q.pointer)
            } else {
                format!("{}/request{p}", q.pointer)
            }
        });
        ApiError { pointer, ..e }
    };
    let v = match q.kind {
        "receptive_field" => {
            let req = typed::read(req, "").map_err(|e| reroot(e.into()))?;
            Reference::ReceptiveField(Box::new(receptive_field::report(state, &req).await.map_err(reroot)?))
        }
        "complexity" => {
            let req = typed::read(req, "").map_err(|e| reroot(e.into()))?;
            Reference::Complexity(Box::new(complexity::compute(state, &req).await.map_err(reroot)?))
        }
        "gradient" => {
            let req = typed::read(req, "").map_err(|e| reroot(e.into()))?;
            Reference::Gradient(Box::new(diagnostics::report(state, &req).await.map_err(reroot)?))
        }
        _ => {
            let req = typed::read(req, "").map_err(|e| reroot(e.into()))?;
            Reference::Momentum(Box::new(momentum::compute(state, &req).await.map_err(reroot)?))
        }
    };
    cache.insert(key, v.clone());
    Ok(v)
}

/// What the reference says, for the question's ask.
enum Expected {
    /// A count, the target's leaf layers with their counts (for hints), and the mistakes it recognises.
    Count(f64, Vec<(String, f64)>, Vec<Slip>),
    Range(Box<WantRange>),
    Number(f64),
    Vector(Vec<f64>),
    Word(String),
    /// A token range (`1 <= t <= i`), the equivalent ways to write it, normalized, and its
    /// ends (any other form is judged by their values).
    Tokens {
        text: String,
        accepted: Vec<String>,
        ends: (End, End),
    },
}

/// A layer's input range along one axis, in the question's index base: each end
/// `a*floor((n*i + c)/d) + e` (integer-affine ranges have d = 1).
struct WantRange {
    lo: End,
    hi: End,
    /// `(scale, lo, hi)` of an integer-affine range, for feedback on each number.
    affine: Option<(i64, i64, i64)>,
    index: char,
    var: char,
    text: String,
    /// The fewest and most inputs one output sees (equal for an affine range).
    sizes: (u64, u64),
    /// Input positions per output step (`4`, `1/2`).
    jump: String,
}

/// A token range as written, without spaces, in lower case, with `<=` for `≤`.
fn token_form(s: &str) -> String {
    s.to_lowercase()
        .replace('≤', "<=")
        .replace('≥', ">=")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// The tokens output token i of a layer reads, as the report gives them, and the other ways
/// a student writes the same set.
fn tokens_expected(r: &RfReport, layer: &str) -> Result<Expected, String> {
    let row = rf_row(r, layer)?;
    let base = r.index_base as i64;
    let last = r.model.input_shape.first().copied().unwrap_or(1) as i64 - 1 + base;
    let sequence_input = r.model.input_shape.len() <= 2;
    // output token i: its own index, or a fixed token
    let index = End {
        a: 1,
        n: 1,
        c: 0,
        d: 1,
        e: 0,
    };
    let fixed = |e: i64| End { n: 0, e, ..index };
    let (text, more, ends): (String, Vec<String>, (End, End)) = match row.kind {
        RfKind::Token => ("t = i".into(), vec!["i".into(), "i<=t<=i".into()], (index, index)),
        RfKind::Causal => (format!("{base} <= t <= i"), vec!["t<=i".into()], (fixed(base), index)),
        RfKind::Anticausal => (
            format!("i <= t <= {last}"),
            vec!["t>=i".into(), "i<=t".into()],
            (index, fixed(last)),
        ),
        RfKind::Global if sequence_input => (
            format!("{base} <= t <= {last}"),
            vec!["all".into(), "alltokens".into(), "everytoken".into()],
            (fixed(base), fixed(last)),
        ),
        kind => {
            return Err(format!(
                "layer {layer} does not read a sequence token by token (kind {}): ask rows, cols, size or jump",
                kind.name()
            ))
        }
    };
    let mut accepted = vec![token_form(&text)];
    accepted.extend(more);
    Ok(Expected::Tokens { text, accepted, ends })
}

/// What the momentum report says for `ask`.
fn momentum_expected(r: &MomentumReport, ask: &MomentumAsk) -> Result<Expected, String> {
    match ask {
        MomentumAsk::Verdict => Ok(Expected::Word(
            match r.verdict {
                Verdict::Equivalent => "equivalent",
                Verdict::NotEquivalent => "not_equivalent",
            }
            .into(),
        )),
        MomentumAsk::FirstDifferingStep => {
            let pair = r
                .pairs
                .iter()
                .find(|p| p.a == "form_i" && p.b == "form_ii")
                .ok_or("no pair form_i vs form_ii")?;
            Ok(match pair.first_step_over_tolerance {
                Some(k) => Expected::Number(k as f64),
                None => Expected::Word("none".into()),
            })
        }
        MomentumAsk::Theta { form, step } => {
            let t = r.trajectories.get(form).ok_or_else(|| {
                let forms: Vec<&str> = r.trajectories.keys().map(String::as_str).collect();
                format!("no form {form:?}; this request runs {}", forms.join(", "))
            })?;
            let row = r
                .returned_steps
                .iter()
                .position(|k| k == step)
                .and_then(|i| t.theta.get(i))
                .ok_or_else(|| format!("step {step} is not among the returned steps (the run has {} steps)", r.steps))?;
            Ok(match row.as_slice() {
                [x] => Expected::Number(*x),
                xs => Expected::Vector(xs.to_vec()),
            })
        }
    }
}

fn expected(q: &Question, reference: &Reference) -> Result<Expected, String> {
    match (&q.ask, reference) {
        (Ask::Momentum(ask), Reference::Momentum(r)) => momentum_expected(r, ask),
        (Ask::Count { column, target }, Reference::Complexity(r)) => count_expected(q, column, target, r),
        (Ask::Range { layer, axis }, Reference::ReceptiveField(r)) => range_expected(r, layer, *axis),
        (Ask::Tokens { layer }, Reference::ReceptiveField(r)) => tokens_expected(r, layer),
        (Ask::RfNumber { layer, what }, Reference::ReceptiveField(r)) => {
            let row = rf_row(r, layer)?;
            if let Some(axis) = row.receptive_field.as_ref().and_then(|rf| rf.rows()) {
                let v = if *what == "jump" { axis.jump } else { axis.size };
                return Ok(Expected::Count(v as f64, vec![], vec![]));
            }
            let axis = row
                .rational
                .as_ref()
                .and_then(|rf| rf.rows())
                .ok_or_else(|| format!("layer {layer} has no affine receptive field"))?;
            match *what {
                "jump" => {
                    let (num, den) = axis.lo.slope();
                    Ok(Expected::Count(num as f64 / den as f64, vec![], vec![]))
                }
                "min_size" => Ok(Expected::Count(axis.min_size as f64, vec![], vec![])),
                "max_size" => Ok(Expected::Count(axis.max_size as f64, vec![], vec![])),
                _ if axis.min_size == axis.max_size => Ok(Expected::Count(axis.min_size as f64, vec![], vec![])),
                _ => Err(format!(
                    "one output of layer {layer} sees {} to {} input rows, depending on i ({}): ask for its min size, max size or rows",
                    axis.min_size, axis.max_size, axis.text
                )),
            }
        }
        (Ask::Gradient(ask), Reference::Gradient(r)) => gradient_expected(r, ask),
        _ => Err("the question's kind does not have this quantity".into()),
    }
}

fn rf_row<'a>(r: &'a RfReport, layer: &str) -> Result<&'a LayerRf, String> {
    r.layers
        .iter()
        .find(|row| row.path == layer || row.name.as_deref() == Some(layer))
        .ok_or_else(|| format!("the model has no layer {layer:?}"))
}

/// The input range of a layer's output along rows (or columns, or a volume's slices):
/// integer-affine, or with floors after an upsampling or a strided transposed convolution.
fn range_expected(r: &RfReport, layer: &str, which: RangeAxis) -> Result<Expected, String> {
    let row = rf_row(r, layer)?;
    let (index, var) = which.letters();
    let missing = || match which {
        RangeAxis::Slices => format!("layer {layer} is not a volume [C, D, H, W]: it has no slices"),
        _ => format!("layer {layer} is a 1-D signal: it has positions (ask for its rows), not columns"),
    };
    if let Some(rf) = &row.receptive_field {
        let axis = which.pick(rf.depth.as_ref(), rf.rows(), rf.width.as_ref()).ok_or_else(missing)?;
        let end = |e: i64| End {
            a: 1,
            n: axis.scale as i64,
            c: 0,
            d: 1,
            e,
        };
        return Ok(Expected::Range(Box::new(WantRange {
            lo: end(axis.lo),
            hi: end(axis.hi),
            affine: Some((axis.scale as i64, axis.lo, axis.hi)),
            index,
            var,
            text: range_text(axis.scale as i64, axis.lo, axis.hi, index, var),
            sizes: (axis.size, axis.size),
            jump: axis.scale.to_string(),
        })));
    }
    if let Some(rf) = &row.rational {
        let axis = which.pick(rf.depth.as_ref(), rf.rows(), rf.width.as_ref()).ok_or_else(missing)?;
        return Ok(Expected::Range(Box::new(WantRange {
            lo: axis.lo,
            hi: axis.hi,
            affine: None,
            index,
            var,
            text: axis.text.clone(),
            sizes: (axis.min_size, axis.max_size),
            jump: axis.jump.clone(),
        })));
    }
    // why: the row's note, else its kind (a sequence layer's token range)
    let kind = row.kind.name();
    let why = match (&row.note, &row.tokens) {
        (Some(note), _) => note.clone(),
        (None, Some(tokens)) => format!("{kind}: output token i reads tokens {}", tokens.text),
        (None, None) => format!("kind {kind}"),
    };
    Err(format!("layer {layer} has no range over rows and columns ({why})"))
}

/// A count of the complexity table, with its parts and the mistakes it recognises.
fn count_expected(q: &Question, column: &str, target: &Target, report: &ComplexityReport) -> Result<Expected, String> {
    let rows = &report.table.rows;
    let (counts, children_prefix) = match target {
        Target::Total => (&report.table.totals, String::new()),
        Target::Layer(l) => {
            let r = rows
                .iter()
                .find(|r| r.path == *l || r.name.as_deref() == Some(l.as_str()))
                .ok_or_else(|| format!("the model has no layer {l:?}"))?;
            (&r.counts, format!("{}.", r.path))
        }
        Target::Branch(n) => {
            let r = rows
                .iter()
                .find(|r| r.layer_type == "branch" && r.path.ends_with(&format!("branches.{}", n - 1)))
                .ok_or_else(|| format!("the model has no branch {n}"))?;
            (&r.counts, format!("{}.", r.path))
        }
    };
    let count = |c: &Counts| c.get(column).unwrap_or(0) as f64;
    let value = count(counts);
    // the leaf layers inside the target, for hints and mistake spotting
    let leaves: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            !r.subtotal && (children_prefix.is_empty() || r.path.starts_with(&children_prefix) || format!("{}.", r.path) == children_prefix)
        })
        .collect();
    let parts = leaves
        .iter()
        .filter(|r| count(&r.counts) > 0.0)
        .map(|r| (describe_row(r), count(&r.counts)))
        .collect();
    let slips = count_slips(q, column, value, counts, &leaves, rows);
    Ok(Expected::Count(value, parts, slips))
}

/// What the gradient diagnostics say for `ask`.
fn gradient_expected(r: &DiagnosticsReport, ask: &GradientAsk) -> Result<Expected, String> {
    let layer = |l: &str| {
        r.summary
            .layers
            .iter()
            .find(|row| row.path == l || row.name.as_deref() == Some(l))
            .ok_or_else(|| format!("no layer {l:?} with parameters"))
    };
    let activation = |l: &str| {
        r.summary
            .activations
            .iter()
            .find(|a| a.path == l)
            .ok_or_else(|| format!("no activation layer {l:?}"))
    };
    let number = |v: Option<f64>, what: &str| v.map(Expected::Number).ok_or_else(|| what.to_string());
    match ask {
        GradientAsk::Verdict => Ok(Expected::Word(r.summary.verdict.name().into())),
        GradientAsk::FirstVanishingLayer => Ok(Expected::Word(
            r.summary.first_vanishing_layer.clone().unwrap_or_else(|| "none".into()),
        )),
        GradientAsk::WeightGrad(l) => Ok(Expected::Number(layer(l)?.weight_grad.frobenius)),
        GradientAsk::BiasGrad(l) => number(layer(l)?.bias_grad.as_ref().map(|b| b.frobenius), &format!("layer {l} has no bias")),
        // no bound (not an MLP chain, or no bias): the answer "none"
        GradientAsk::Bound(l) => Ok(layer(l)?
            .bias_grad_bound
            .map(Expected::Number)
            .unwrap_or_else(|| Expected::Word("none".into()))),
        GradientAsk::MaxDerivative(l) => Ok(Expected::Number(activation(l)?.max_derivative)),
        GradientAsk::MeanDerivative(l) => Ok(Expected::Number(activation(l)?.mean_derivative)),
    }
}

/// The values a count takes under the mistakes students make, for the target `row` whose leaf
/// layers are `leaves` (all rows of the table in `rows`).
fn count_slips(q: &Question, column: &str, value: f64, counts: &Counts, leaves: &[&Row], rows: &[Row]) -> Vec<Slip> {
    let num = |c: &Counts, key: &str| c.get(key).unwrap_or(0) as f64;
    let sum = |key: &str| leaves.iter().map(|r| num(&r.counts, key)).sum::<f64>();
    let weighted = |r: &Row| matches!(r.layer_type.as_str(), "conv2d" | "linear");
    let mut slips = Vec::new();
    let mut push = |key: &'static str, v: f64, says: String| {
        if v != value && v >= 0.0 {
            slips.push(Slip { key, value: v, says });
        }
    };
    match column {
        "params" => {
            let b = sum("params_bias");
            push(
                "bias_forgotten",
                value - b,
                format!("the count without the {} biases", thousands(b)),
            );
        }
        "flops" => {
            let macs = num(counts, "macs");
            push("macs_for_flops", macs, format!("the MACs ({})", thousands(macs)));
            push("macs_for_flops", 2.0 * macs, format!("2 x the MACs ({})", thousands(2.0 * macs)));
        }
        "macs" => {
            push("macs_for_flops", num(counts, "flops"), "the FLOPs".into());
            push("macs_for_flops", 2.0 * value, "2 x the MACs (FLOPs counted as 2 x MACs)".into());
        }
        "additions" => {
            // conv/linear outputs: one addition each is what separates the two conventions
            let outputs: f64 = leaves
                .iter()
                .filter(|r| weighted(r))
                .map(|r| num(&r.counts, "output_elements"))
                .sum();
            let exact = q.request["conventions"]["additions"] == "exact";
            let other = if exact { value + outputs } else { value - outputs };
            push(
                "additions_convention",
                other,
                format!("the additions counted as {} per output", if exact { "k" } else { "k-1" }),
            );
        }
        _ => {}
    }
    if matches!(column, "params" | "params_weight" | "multiplications" | "macs") {
        // a conv or linear layer whose input channels were taken from another layer
        let per_layer = if column == "params" { "params_weight" } else { column };
        let mut channels: Vec<u64> = rows
            .iter()
            .flat_map(|r| [r.input_shape.first(), r.output_shape.first()])
            .flatten()
            .copied()
            .collect();
        channels.sort_unstable();
        channels.dedup();
        for leaf in leaves.iter().filter(|r| weighted(r)) {
            let Some(&inputs) = leaf.input_shape.first().filter(|&&c| c > 0) else {
                continue;
            };
            let per_channel = num(&leaf.counts, per_layer) / inputs as f64;
            for &c in channels.iter().filter(|&&c| c != inputs) {
                push(
                    "wrong_input_channels",
                    value + per_channel * (c as f64 - inputs as f64),
                    format!("{} counted with {c} input channels instead of {inputs}", describe_row(leaf)),
                );
            }
        }
    }
    slips
}

fn describe_row(r: &Row) -> String {
    let shape = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>().join("x");
    let name = r.name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default();
    format!(
        "{} {}{name} ({} -> {})",
        r.layer_type,
        r.path,
        shape(&r.input_shape),
        shape(&r.output_shape)
    )
}

/// The reference as the grader writes it when it reveals it.
fn expected_text(e: &Expected) -> String {
    match e {
        Expected::Count(v, _, _) | Expected::Number(v) => show_number(*v),
        Expected::Vector(v) => format!("{v:?}"),
        Expected::Word(w) | Expected::Tokens { text: w, .. } => w.clone(),
        Expected::Range(want) => want.text.clone(),
    }
}

/// A percentage with two significant digits, so that a slip in the fifth digit still shows.
fn percent(p: f64) -> String {
    if p >= 10.0 {
        format!("{p:.0}")
    } else if p > 0.0 {
        let digits = (1 - p.log10().floor() as i32).max(0) as usize;
        format!("{p:.digits$}")
    } else {
        "0".into()
    }
}

fn within(got: f64, want: f64, abs: f64, rel: f64) -> bool {
    (got - want).abs() <= abs + rel * want.abs()
}

fn show_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e18 {
        thousands(v)
    } else {
        format!("{v}")
    }
}

fn range_text(scale: i64, lo: i64, hi: i64, index: char, var: char) -> String {
    crate::analysis::receptive_field::range_text(scale as u64, lo, hi, &index.to_string(), &var.to_string())
}

fn grade_one(q: &Question, reference: Result<Expected, String>, reveal: Reveal, strict_variables: bool) -> Graded {
    let label = format!("{} ({})", q.id, q.ask_text);
    let mut g = Graded {
        id: q.id.clone(),
        score: 0.0,
        max: q.points,
        correct: false,
        feedback: String::new(),
        expected: String::new(),
        got: String::new(),
        mistake: None,
    };
    let expected = match reference {
        Ok(e) => e,
        Err(e) => {
            g.feedback = format!("**{label}**: this question could not be graded: {e}. Tell your instructor.");
            return g;
        }
    };
    let Some(answer) = &q.answer else {
        g.feedback = format!("**{label}**: no answer was given.");
        g.expected = "hidden".into();
        return g;
    };
    g.got = match answer {
        Value::String(s) => s.chars().take(200).collect(),
        other => crate::spec::json::show(other),
    };
    g.expected = expected_text(&expected);
    let reveal_text = |e: &str| {
        if reveal == Reveal::Answers {
            format!(" The answer is {e}.")
        } else {
            String::new()
        }
    };
    match expected {
        Expected::Count(want, parts, slips) => grade_number(&mut g, q, answer, want, &parts, &slips, true, reveal, &label),
        Expected::Number(want) => grade_number(&mut g, q, answer, want, &[], &[], false, reveal, &label),
        Expected::Vector(want) => {
            let got: Result<Vec<f64>, String> = match answer {
                Value::Array(items) => items.iter().map(|x| parse_number_in(x, q.locale).map(|n| n.value)).collect(),
                other => parse_number_in(other, q.locale).map(|n| vec![n.value]),
            };
            match got {
                Err(e) => g.feedback = format!("**{label}**: {e}. Expected a list of {} numbers.", want.len()),
                Ok(v) if v.len() != want.len() => {
                    g.feedback = format!("**{label}**: you gave {} numbers; {} are expected.", v.len(), want.len())
                }
                Ok(v) => {
                    let wrong: Vec<usize> = v
                        .iter()
                        .zip(&want)
                        .enumerate()
                        .filter(|(_, (a, b))| !q.tolerance.accepts(**a, **b, false))
                        .map(|(i, _)| i)
                        .collect();
                    if wrong.is_empty() {
                        g.correct = true;
                        g.feedback = format!("**{label}**: right.");
                    } else {
                        g.feedback = format!("**{label}**: entries {wrong:?} are not right.{}", reveal_text(&g.expected));
                    }
                }
            }
        }
        Expected::Word(want) => {
            let got = match answer {
                Value::String(s) => s.trim().to_lowercase().replace(['-', ' '], "_"),
                Value::Null => "none".into(),
                other => other.to_string(),
            };
            if got == want.to_lowercase().replace(['-', ' '], "_") {
                g.correct = true;
                g.feedback = format!("**{label}**: {} is right.", g.got);
            } else {
                g.feedback = format!("**{label}**: you wrote {}; that is not right.{}", g.got, reveal_text(&want));
            }
        }
        Expected::Tokens { text, accepted, ends } => {
            let got = answer.as_str().map(token_form).unwrap_or_default();
            // any other range naming the same tokens for every i: `1 ≤ t ≤ i`, `t ∈ [1, i]`
            let same = || {
                parse_range(answer).is_ok_and(|r| {
                    let base = q.index_base as i64;
                    r.index.is_none_or(|x| x == 'i')
                        && matches!(check_end(&r.lo, &ends.0, base), Ok(EndCheck::Same))
                        && matches!(check_end(&r.hi, &ends.1, base), Ok(EndCheck::Same))
                })
            };
            if accepted.contains(&got) || same() {
                g.correct = true;
                g.feedback = format!("**{label}**: {} is right.", g.got);
            } else {
                g.feedback = format!(
                    "**{label}**: you wrote {}; output token i does not read those tokens. Write the range as {}.{}",
                    g.got,
                    "\"a <= t <= b\" with i for the output token (\"t = i\" for one token)",
                    reveal_text(&text)
                );
            }
        }
        Expected::Range(want) => grade_range(&mut g, q, answer, &want, reveal, strict_variables, &label),
    }
    if g.correct {
        g.score = q.points;
    }
    if reveal != Reveal::Answers && !g.correct {
        g.expected = "hidden".into();
    }
    g
}

/// A whole number of an answer's end, as feedback writes it.
fn ratio_text(r: Ratio) -> String {
    if r.den == 1 {
        r.num.to_string()
    } else {
        format!("{}/{}", r.num, r.den)
    }
}

/// Judges a range by the set of input positions it names, for every output index: equal ends
/// over one period of their floors decide it (an integer-affine range has period 1). Affine
/// answers to affine ranges get feedback on each number; the other forms on the first index
/// where an end differs.
#[allow(clippy::too_many_arguments)]
fn grade_range(g: &mut Graded, q: &Question, answer: &Value, want: &WantRange, reveal: Reveal, strict_variables: bool, label: &str) {
    let (index, var) = (want.index, want.var);
    let reveal_text = if reveal == Reveal::Answers {
        format!(" The answer is {}.", want.text)
    } else {
        String::new()
    };
    let r = match parse_range(answer) {
        Ok(r) => r,
        Err(e) => {
            g.feedback = format!("**{label}**: {e}. Expected {RANGE_FORMS}.");
            return;
        }
    };
    let base = q.index_base as i64;
    let judged = check_end(&r.lo, &want.lo, base).and_then(|lo| Ok((lo, check_end(&r.hi, &want.hi, base)?)));
    let (lo_check, hi_check) = match judged {
        Ok(c) => c,
        Err(e) => {
            g.feedback = format!("**{label}**: could not read {:?} ({e}). Expected {RANGE_FORMS}.", g.got);
            return;
        }
    };
    let mut notes = Vec::new();
    let mut letters_right = true;
    if let Some(i) = r.index.filter(|i| *i != index) {
        letters_right = false;
        notes.push(format!(
            "you used the index {i} where the {} index is {index}{}",
            match index {
                'j' => "column",
                'k' => "slice",
                _ => "row",
            },
            if index == 'j' && i == 'i' { " (i is the row index)" } else { "" }
        ));
    }
    if let Some(x) = r.var.filter(|x| *x != var) {
        letters_right = false;
        notes.push(format!(
            "the input {} are {var}, not {x}",
            match var {
                'n' => "columns",
                'p' => "slices",
                _ => "rows",
            }
        ));
    }
    // what a strict `<` or a fractional end was read as
    let read_as = match (r.rewritten, r.affine()) {
        (false, _) => String::new(),
        (true, Some((s, l, h))) => format!(
            " (read as the whole positions it includes: {})",
            range_text(s, l, h, r.index.unwrap_or(index), r.var.unwrap_or(var))
        ),
        (true, None) => " (read as the whole positions it includes: a strict < excludes its end, a fractional end rounds inwards)".into(),
    };
    let numbers_right = lo_check == EndCheck::Same && hi_check == EndCheck::Same;
    if numbers_right && (letters_right || !strict_variables) {
        g.correct = true;
        g.feedback = format!("**{label}**: {} is right{read_as}.", g.got);
        if !notes.is_empty() {
            g.feedback += &format!(" Note: {}.", notes.join("; "));
        }
        return;
    }
    if numbers_right {
        g.feedback = format!(
            "**{label}**: the numbers are right, but {} (strict_variables is on).",
            notes.join("; ")
        );
        let credit = q.partial.credit("swapped_letters");
        if credit > 0.0 {
            g.score = q.points * credit;
            g.mistake = Some("swapped_letters");
            g.feedback += &format!(
                " A recognised mistake (swapped_letters), worth {} of the points.",
                fraction_text(credit)
            );
        }
        return;
    }
    let mut f = format!("**{label}**: you wrote {}{read_as}; that is not right.", g.got);
    match (r.affine(), want.affine) {
        (Some((s, ..)), Some((scale, ..))) if s != scale => {
            f += &format!(" The coefficient of {index} is wrong: it is the product of the strides so far.");
        }
        (Some((_, l, h)), Some((_, lo, hi))) => {
            if l != lo {
                f += &format!(" The lower end is {} too {}.", (l - lo).abs(), if l > lo { "high" } else { "low" });
            }
            if h != hi {
                f += &format!(" The upper end is {} too {}.", (h - hi).abs(), if h > hi { "high" } else { "low" });
            }
        }
        _ => {
            for (which, check) in [("lower", &lo_check), ("upper", &hi_check)] {
                match check {
                    EndCheck::Same => {}
                    EndCheck::Slope(s) => {
                        f += &format!(
                            " Your {which} end moves {} input positions per output step, which is not the range's rate: the product of the strides so far, divided by each upsampling factor and transposed convolution's stride.",
                            ratio_text(*s)
                        );
                        break;
                    }
                    EndCheck::At(i, got, w) => {
                        f += &format!(
                            " The {which} end is wrong at {index} = {i}: yours gives {}, which is too {}.",
                            ratio_text(*got),
                            if got.to_f64() > *w as f64 { "high" } else { "low" }
                        );
                    }
                }
            }
        }
    }
    if !notes.is_empty() {
        f += &format!(" Also: {}.", notes.join("; "));
    }
    // the same range written for the other index base
    let other = 1 - q.index_base;
    let credit = q.partial.credit("index_base");
    let in_other = |end: &crate::analysis::answers::Func, want: &End| {
        check_end(end, &want.rebase(q.index_base, other), other as i64).is_ok_and(|c| c == EndCheck::Same)
    };
    if credit > 0.0 && want.lo.n != 0 && in_other(&r.lo, &want.lo) && in_other(&r.hi, &want.hi) {
        g.score = q.points * credit;
        g.mistake = Some("index_base");
        f += &format!(
            " It is the range for {} indices, but the question counts from {}: a recognised mistake (index_base), worth {} of the points.",
            if q.index_base == 1 { "zero-based" } else { "one-based" },
            q.index_base,
            fraction_text(credit)
        );
    }
    if reveal != Reveal::None {
        let (lo_size, hi_size) = want.sizes;
        let size = if lo_size == hi_size {
            lo_size.to_string()
        } else {
            format!("{lo_size} to {hi_size}")
        };
        f += &format!(
            " Hint: one output unit there sees {size} input rows, and moving one output step moves {} input rows.",
            want.jump
        );
    }
    f += &reveal_text;
    g.feedback = f;
}

/// Judges a number: exact for counts unless the question sets a tolerance, 1e-3 relative for
/// measured quantities; a wrong count that equals a recognised mistake earns that mistake's
/// fraction of the points.
#[allow(clippy::too_many_arguments)]
fn grade_number(
    g: &mut Graded,
    q: &Question,
    answer: &Value,
    want: f64,
    parts: &[(String, f64)],
    slips: &[Slip],
    is_count: bool,
    reveal: Reveal,
    label: &str,
) {
    match parse_number_in(answer, q.locale) {
        Err(e) => g.feedback = format!("**{label}**: {e}. Expected {NUMBER_FORMS}."),
        Ok(Number { value, abbreviated }) => {
            if q.tolerance.accepts(value, want, is_count) {
                g.correct = true;
                g.feedback = format!("**{label}**: {} is right.", g.got);
                return;
            }
            let off = if want != 0.0 {
                (value - want) / want.abs() * 100.0
            } else {
                f64::INFINITY
            };
            let how = if off.is_finite() {
                format!("{}% too {}", percent(off.abs()), if off > 0.0 { "high" } else { "low" })
            } else {
                "not right".into()
            };
            let mut f = format!("**{label}**: you wrote {}, which is {how}.", g.got);
            let recognised = slips
                .iter()
                .filter(|s| q.tolerance.accepts(value, s.value, is_count) && q.partial.credit(s.key) > 0.0)
                .max_by(|a, b| q.partial.credit(a.key).total_cmp(&q.partial.credit(b.key)));
            if let Some(slip) = recognised {
                let credit = q.partial.credit(slip.key);
                g.score = q.points * credit;
                g.mistake = Some(slip.key);
                f += &format!(
                    " It equals {}: a recognised mistake ({}), worth {} of the points.",
                    slip.says,
                    slip.key,
                    fraction_text(credit)
                );
            } else if abbreviated && off.abs() < 1.0 && is_count {
                f += " It looks rounded: give the exact count.";
            }
            if reveal != Reveal::None && recognised.is_none() {
                f += &hint_count(value, want, parts);
            }
            if reveal == Reveal::Answers {
                f += &format!(" The answer is {}.", g.expected);
            }
            g.feedback = f;
        }
    }
}

/// 0.5 -> "half", 0.25 -> "25%".
fn fraction_text(f: f64) -> String {
    if f == 0.5 {
        "half".into()
    } else {
        format!("{}%", percent(f * 100.0))
    }
}

/// A hint from the target's layers: which one the answer is off by, if any; else the layers.
fn hint_count(got: f64, want: f64, parts: &[(String, f64)]) -> String {
    let diff = got - want;
    if let Some((name, _)) = parts.iter().find(|(_, v)| (diff + v).abs() < 0.5) {
        return format!(" Hint: the difference equals the count of {name}: did you leave it out?");
    }
    if let Some((name, _)) = parts.iter().find(|(_, v)| (diff - v).abs() < 0.5) {
        return format!(" Hint: the difference equals the count of {name}: did you count it twice?");
    }
    if parts.len() > 1 {
        let list: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
        return format!(
            " Hint: add up these layers one by one and check each one's input channels, kernel size and bias: {}.",
            list.join("; ")
        );
    }
    if let Some((name, _)) = parts.first() {
        return format!(" Hint: recompute {name} from its input channels, kernel size and bias.");
    }
    String::new()
}

/// The reference answers of `questions` (question objects without answers), written as the
/// grader reveals them: `(id, answer text)`.
pub async fn answer_key(state: &AppState, questions: &[Value], pointer: &str) -> ApiResult<Vec<(String, String)>> {
    let defaults = Defaults {
        locale: Locale::default(),
        partial: Partial::defaults(),
    };
    let mut cache = HashMap::new();
    let mut key = Vec::new();
    for (i, v) in questions.iter().enumerate() {
        let q = read_question(v.clone(), &child(pointer, i), None, &defaults)?;
        let reference = reference(state, &q, &mut cache).await?;
        let e = expected(&q, &reference).map_err(|e| SpecError::invalid(child(pointer, i), e))?;
        key.push((q.id.clone(), expected_text(&e)));
    }
    Ok(key)
}

/// The instructor's built-in problem sets: the course's questions with their models.
pub fn problem_set(name: &str) -> Option<Vec<Value>> {
    if name != "course" {
        return None;
    }
    let mut qs = Vec::new();
    // P4: receptive field of the VGG stem, one-based
    for (layer, label) in [
        ("conv1", "first conv"),
        ("conv2", "second conv"),
        ("pool1", "first pool"),
        ("conv4", "fourth conv"),
        ("pool2", "second pool"),
    ] {
        for (axis, word) in [("rows", "rows"), ("cols", "cols")] {
            qs.push(json!({"id": format!("p4.{layer}.{word}"), "kind": "receptive_field", "model": {"preset": "vgg_stem"}, "ask": format!("{axis} of layer {layer} at one-based i ({label})")}));
        }
    }
    // P5: the two Inception modules
    for (module, branches) in [("naive", 3), ("reduced", 4)] {
        let model = json!({"preset": format!("inception_{module}")});
        for b in 1..=branches {
            qs.push(json!({"id": format!("p5.{module}.params.branch{b}"), "kind": "complexity", "model": model, "ask": format!("params of branch {b}")}));
        }
        for q in ["params", "multiplications", "additions", "activations"] {
            qs.push(json!({"id": format!("p5.{module}.{q}"), "kind": "complexity", "model": model, "ask": format!("total {q}")}));
        }
    }
    // P2: a deep sigmoid MLP with small weights
    let mut layers = Vec::new();
    for _ in 0..8 {
        layers.push(json!({"type": "linear", "out_features": 32}));
        layers.push(json!({"type": "sigmoid"}));
    }
    layers.push(json!({"type": "linear", "out_features": 1}));
    let mlp = json!({"model": {"input_shape": [32], "layers": layers}, "init": {"type": "normal", "std": 0.1, "seed": 0}, "inputs": {"batch_size": 16, "seed": 0}, "objective": {"output_unit": 0}, "dtype": "float64"});
    qs.push(json!({"id": "p2.verdict", "kind": "gradient", "request": mlp, "ask": "verdict"}));
    qs.push(json!({"id": "p2.max_derivative", "kind": "gradient", "request": mlp, "ask": "max derivative of layer 1"}));
    // P3: the momentum forms (constant step, then the step-size witness)
    let constant = json!({"theta0": [0.0], "gradients": [[1.0], [1.0], [1.0]], "alpha": 0.1, "beta": 0.9});
    let witness = json!({"theta0": [0.0], "gradients": [[1.0], [1.0]], "alpha": [0.1, 0.01], "beta": 0.9});
    qs.push(json!({"id": "p3.constant.verdict", "kind": "momentum", "request": constant, "ask": "verdict"}));
    qs.push(json!({"id": "p3.witness.form_i", "kind": "momentum", "request": witness, "ask": "theta of form_i at step 2"}));
    qs.push(json!({"id": "p3.witness.form_ii", "kind": "momentum", "request": witness, "ask": "theta of form_ii at step 2"}));
    qs.push(json!({"id": "p3.witness.verdict", "kind": "momentum", "request": witness, "ask": "verdict"}));
    Some(qs)
}

pub async fn handle(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let req: GradeRequest = typed::read(body, "")?;
    let reveal = req.reveal.unwrap_or(Reveal::None);
    let output = req.output.unwrap_or(OutputName::Json);
    let strict_variables = req.strict_variables.unwrap_or(false);
    let defaults = Defaults {
        locale: req.number_locale.unwrap_or_default(),
        partial: Partial::read(req.partial_credit.as_ref(), "/partial_credit", &Partial::defaults())?,
    };
    let answers = req.answers.as_ref();
    let (items, base_ptr): (Vec<Value>, &str) = match (req.problem_set, &req.questions) {
        (Some(set), selection) => {
            let all = match set {
                ProblemSet::Variant => {
                    let seed = req
                        .seed
                        .ok_or_else(|| SpecError::invalid("/seed", "is required with problem_set \"variant\" (the variant's seed)"))?;
                    crate::analysis::variants::variant(seed).questions
                }
                ProblemSet::Course => problem_set("course").expect("the course's problem set exists"),
            };
            match selection {
                None => (all, "/problem_set"),
                Some(sel) => (select_questions(all, sel)?, "/problem_set"),
            }
        }
        (None, Some(q)) => (q.clone(), "/questions"),
        (None, None) => return Err(SpecError::invalid("/questions", "is required (or a problem_set)").into()),
    };
    if items.len() > 200 {
        return Err(SpecError::too_large(
            "/questions",
            "max_questions",
            200,
            format!("{} questions is over the limit of 200", items.len()),
        )
        .into());
    }
    let questions = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| read_question(v, &child(base_ptr, i), answers, &defaults))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cache = HashMap::new();
    let mut graded = Vec::new();
    for q in &questions {
        let reference = reference(&state, q, &mut cache).await?;
        graded.push(grade_one(q, expected(q, &reference), reveal, strict_variables));
    }
    let unknown: Vec<&String> = answers
        .map(|a| a.keys().filter(|k| !questions.iter().any(|q| &q.id == *k)).collect())
        .unwrap_or_default();
    Ok(json_response(&render(output, &graded, &unknown)))
}

/// The questions of a problem set that `selection` names: ids, or prefixes ending in `.` or `*`
/// (`"p4.*"`, `"p5.reduced."`), in the set's order. A name that selects nothing is a 422.
fn select_questions(all: Vec<Value>, selection: &[Value]) -> Result<Vec<Value>, SpecError> {
    let mut wanted = Vec::new();
    for (i, v) in selection.iter().enumerate() {
        let name = v.as_str().ok_or_else(|| {
            SpecError::invalid(
                child("/questions", i),
                "with a problem_set, questions are ids or prefixes such as \"p4.*\"",
            )
        })?;
        if !all.iter().any(|q| q["id"].as_str().is_some_and(|id| id_matches(name, id))) {
            let ids: Vec<&str> = all.iter().filter_map(|q| q["id"].as_str()).collect();
            return Err(SpecError::invalid(
                child("/questions", i),
                format!("{name:?} names no question of the set; its ids are {}", ids.join(", ")),
            ));
        }
        wanted.push(name);
    }
    Ok(all
        .into_iter()
        .filter(|q| {
            let id = q["id"].as_str().unwrap_or("");
            wanted.iter().any(|name| id_matches(name, id))
        })
        .collect())
}

/// Whether `id` is selected by `pattern`: the id itself, or a prefix ending in `.` or `*` (the
/// `*` itself dropped).
fn id_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None if pattern.ends_with('.') => id.starts_with(pattern),
        None => id == pattern,
    }
}

/// The graded answers, in the requested output format (each a closed object, so that exactly
/// one of them describes an answer).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum GradeOutput {
    Json(GradeResult),
    Gradescope(GradescopeResults),
    PrairieLearn(PrairieLearnResults),
    Moodle(MoodleCombinatorResult),
}

/// `output: json`: every question's score, feedback and what was read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GradeResult {
    pub score: f64,
    pub max_score: f64,
    pub summary: String,
    pub questions: Vec<GradedQuestion>,
    /// Answer ids that name no question (not graded; the summary says so too).
    pub unknown_answer_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GradedQuestion {
    pub id: String,
    pub score: f64,
    pub max_score: f64,
    pub correct: bool,
    /// Markdown.
    pub feedback: String,
    /// The reference, or "hidden" unless revealed or correct.
    pub expected: String,
    /// The answer as it was read.
    pub answer: String,
    /// The recognised mistake that earned partial credit.
    pub mistake: Option<&'static str>,
}

/// Gradescope's autograder results.json.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GradescopeResults {
    pub score: f64,
    /// (Optional in Gradescope's format: the adapter's own failure results leave it out.)
    #[schema(required = false)]
    pub output: String,
    /// Always `md` from the service (Gradescope also knows text, html, simple_format, ansi).
    #[schema(required = false)]
    pub output_format: &'static str,
    /// Set by the Gradescope adapter from its configuration (hidden, after_due_date,
    /// after_published, visible); the service leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    pub tests: Vec<GradescopeTest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GradescopeTest {
    pub name: String,
    pub score: f64,
    pub max_score: f64,
    /// passed or failed.
    pub status: &'static str,
    pub output: String,
    pub output_format: &'static str,
    pub visibility: &'static str,
}

/// PrairieLearn's external grader results.json (messages as plain text).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrairieLearnResults {
    pub gradable: bool,
    /// The fraction of the points.
    #[schema(minimum = 0, maximum = 1)]
    pub score: f64,
    pub message: String,
    pub tests: Vec<PrairieLearnTest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PrairieLearnTest {
    pub name: String,
    pub points: f64,
    pub max_points: f64,
    pub message: String,
}

/// Moodle CodeRunner's combinator template grader result: testresults' first row holds the
/// column headers (iscorrect, Question, Expected, Got, Feedback).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoodleCombinatorResult {
    /// The fraction of the points.
    #[schema(minimum = 0, maximum = 1)]
    pub fraction: f64,
    /// Rows of cells: a boolean, then strings.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub testresults: Vec<Value>,
    /// One per column other than iscorrect: the Feedback column is HTML (%h).
    pub columnformats: [&'static str; 4],
    pub prologuehtml: String,
}

fn render(output: OutputName, graded: &[Graded], unknown: &[&String]) -> GradeOutput {
    let score: f64 = graded.iter().map(|g| g.score).sum();
    let max: f64 = graded.iter().map(|g| g.max).sum();
    let fraction = if max > 0.0 { score / max } else { 0.0 };
    let right = graded.iter().filter(|g| g.correct).count();
    let mut summary = format!("{right} of {} answers right: {score} / {max} points.", graded.len());
    if !unknown.is_empty() {
        // a mistyped id is the student's to fix: say so in every format, not only in JSON
        let ids: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        summary += &format!(" These answer ids are not questions here and were not graded: {}.", ids.join(", "));
    }
    match output {
        OutputName::Gradescope => GradeOutput::Gradescope(GradescopeResults {
            score,
            output: summary,
            output_format: "md",
            visibility: None,
            tests: graded
                .iter()
                .map(|g| GradescopeTest {
                    name: g.id.clone(),
                    score: g.score,
                    max_score: g.max,
                    status: if g.correct { "passed" } else { "failed" },
                    output: g.feedback.clone(),
                    output_format: "md",
                    visibility: "visible",
                })
                .collect(),
        }),
        // PrairieLearn shows messages as plain text
        OutputName::Prairielearn => GradeOutput::PrairieLearn(PrairieLearnResults {
            gradable: true,
            score: fraction,
            message: summary,
            tests: graded
                .iter()
                .map(|g| PrairieLearnTest {
                    name: g.id.clone(),
                    points: g.score,
                    max_points: g.max,
                    message: plain_text(&g.feedback),
                })
                .collect(),
        }),
        OutputName::MoodleCoderunner => {
            let mut rows = vec![json!(["iscorrect", "Question", "Expected", "Got", "Feedback"])];
            rows.extend(
                graded
                    .iter()
                    .map(|g| json!([g.correct, g.id, g.expected, g.got, markdown_html(&g.feedback)])),
            );
            GradeOutput::Moodle(MoodleCombinatorResult {
                fraction,
                testresults: rows,
                // CodeRunner escapes %s cells into <pre>; the feedback column is HTML
                columnformats: ["%s", "%s", "%s", "%h"],
                prologuehtml: format!("<p>{}</p>", html_escape(&summary)),
            })
        }
        OutputName::Json => GradeOutput::Json(GradeResult {
            score,
            max_score: max,
            summary,
            questions: graded
                .iter()
                .map(|g| GradedQuestion {
                    id: g.id.clone(),
                    score: g.score,
                    max_score: g.max,
                    correct: g.correct,
                    feedback: g.feedback.clone(),
                    expected: g.expected.clone(),
                    answer: g.got.clone(),
                    mistake: g.mistake,
                })
                .collect(),
            unknown_answer_ids: unknown.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// Feedback without its Markdown emphasis, for LMSs that show plain text.
fn plain_text(markdown: &str) -> String {
    markdown.replace("**", "")
}

/// Feedback as HTML: escaped text, `**bold**` as <strong>.
fn markdown_html(markdown: &str) -> String {
    markdown
        .split("**")
        .enumerate()
        .map(|(k, part)| {
            if k % 2 == 1 {
                format!("<strong>{}</strong>", html_escape(part))
            } else {
                html_escape(part)
            }
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
