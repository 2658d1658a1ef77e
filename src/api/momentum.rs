//! `POST /v1/momentum/equivalence`: runs the heavy-ball forms on supplied gradients (or on an
//! objective, each form at its own iterate) and says where they agree and why they stop. The
//! request and the report are typed; the contract's schemas are generated from them.
use super::body::JsonBody;
use super::error::{ApiResult, Problems};
use super::report::ImageFormat;
use super::svg::{line_chart, Series};
use super::typed::{self, deserialize_by_kind, map_of, seq_of, within, within_u64, ByKind};
use super::{json_response, svg_response, wants_svg, AppState};
use crate::analysis::momentum::{first_alpha_change, judge, PairReport};
use crate::spec::error::child;
use crate::spec::{SpecError, SpecResult};
use crate::torch::device;
use crate::torch::momentum::{Gradients, Objective, Run, SgdOptions};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{de, Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

/// The body of `POST /v1/momentum/equivalence`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MomentumRequest {
    /// The starting point theta_0.
    pub theta0: Tensors,
    /// One gradient per step, with theta0's names and shapes (give this or `objective`).
    #[serde(default)]
    pub gradients: Option<Vec<Tensors>>,
    /// Gradients by autograd at each form's own iterate, instead of `gradients`.
    #[serde(default)]
    pub objective: Option<ObjectiveSpec>,
    /// The number of steps: required with an objective; with gradients, it must equal their count.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub steps: Option<u64>,
    /// The step size alpha, or one per step.
    pub alpha: NumberOrList,
    /// The momentum coefficient, in [0, 1).
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub beta: f64,
    #[serde(default)]
    #[schema(default = "float64")]
    pub dtype: Dtype,
    /// cpu, cuda, cuda:N or auto.
    #[serde(default)]
    #[schema(default = "cpu")]
    pub device: Option<String>,
    /// Relative tolerance of the comparison; 1e-10 for float64 and 1e-4 for float32 by default.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub tolerance: Option<f64>,
    /// Also run Sutskever's form u_(k+1) = beta u_k - alpha_k g_k, theta_(k+1) = theta_k + u_(k+1).
    #[serde(default)]
    #[schema(default = false)]
    pub sutskever: bool,
    /// Also run libtorch's own torch::optim::SGD (momentum = beta; lr = alpha_k before each step).
    #[serde(default)]
    pub pytorch_sgd: Option<SgdSetting>,
    /// Which steps' iterates come back.
    #[serde(default, rename = "return")]
    pub keep: Option<Keep>,
    /// `svg` plots instead of JSON (as does `Accept: image/svg+xml`).
    #[serde(default)]
    pub format: Option<ImageFormat>,
    /// What the SVG plots: the first two coordinates per form, or per-step differences.
    #[serde(default)]
    #[schema(default = "coordinates")]
    pub plot: Plot,
}

/// A list of numbers (one tensor called `theta`), or named tensors flattened in name order.
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum Tensors {
    List(Vec<f64>),
    Named(BTreeMap<String, NamedTensor>),
}

/// One named tensor: its numbers, or `{shape, values}` (shape defaults to `[len(values)]`).
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum NamedTensor {
    Values(Vec<f64>),
    Shaped(ShapedTensor),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShapedTensor {
    #[serde(default)]
    pub shape: Option<Vec<u64>>,
    pub values: Vec<f64>,
}

/// A number, or a list of numbers.
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum NumberOrList {
    One(f64),
    List(Vec<f64>),
}

/// An objective whose gradient autograd takes at each form's own iterate.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    #[serde(default, rename = "type")]
    pub kind: ObjectiveKind,
    /// quadratic: the n x n matrix of 1/2 x^T Q x - b^T x, as a list of rows.
    #[serde(default, rename = "Q")]
    pub q: Option<Vec<Vec<f64>>>,
    /// quadratic: a list of n numbers (default zeros); rosenbrock: the b of
    /// b (x_(i+1) - x_i^2)^2 + (a - x_i)^2 (default 100).
    #[serde(default)]
    pub b: Option<NumberOrList>,
    /// rosenbrock: the a (default 1).
    #[serde(default)]
    pub a: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveKind {
    #[default]
    Quadratic,
    Rosenbrock,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    Float64,
    Float32,
}

/// `true` for torch::optim::SGD's defaults, or its options.
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum SgdSetting {
    Enabled(bool),
    Options(SgdSpec),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SgdSpec {
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub dampening: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000)]
    pub weight_decay: f64,
}

/// `full` (default), `last` (steps 0 and K), `none` (differences only), or every n-th step
/// (plus the last).
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum Keep {
    Word(KeepWord),
    Every(EveryN),
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeepWord {
    Full,
    Last,
    None,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EveryN {
    #[schema(minimum = 1)]
    pub every_n: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Plot {
    #[default]
    Coordinates,
    Difference,
}

impl ByKind for Tensors {
    const EXPECTING: &'static str = "a list of numbers or an object of named tensors";
    fn from_seq<'de, A: de::SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        seq_of(seq).map(Tensors::List)
    }
    fn from_map<'de, A: de::MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut named = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let t = map.next_value::<NamedTensor>()?;
            named.insert(name, t);
        }
        Ok(Tensors::Named(named))
    }
}

impl ByKind for NamedTensor {
    const EXPECTING: &'static str = "a list of numbers or {\"shape\", \"values\"}";
    fn from_seq<'de, A: de::SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        seq_of(seq).map(NamedTensor::Values)
    }
    fn from_map<'de, A: de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        map_of(map).map(NamedTensor::Shaped)
    }
}

impl ByKind for NumberOrList {
    const EXPECTING: &'static str = "a number or a list of numbers";
    fn from_number<E: de::Error>(v: f64) -> Result<Self, E> {
        Ok(NumberOrList::One(v))
    }
    fn from_seq<'de, A: de::SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        seq_of(seq).map(NumberOrList::List)
    }
}

impl ByKind for SgdSetting {
    const EXPECTING: &'static str = "true, false or {dampening, nesterov, weight_decay}";
    fn from_bool<E: de::Error>(v: bool) -> Result<Self, E> {
        Ok(SgdSetting::Enabled(v))
    }
    fn from_map<'de, A: de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        map_of(map).map(SgdSetting::Options)
    }
}

impl ByKind for Keep {
    const EXPECTING: &'static str = "\"full\", \"last\", \"none\" or {\"every_n\": N}";
    fn from_str<E: de::Error>(v: &str) -> Result<Self, E> {
        KeepWord::deserialize(de::value::StrDeserializer::<E>::new(v)).map(Keep::Word)
    }
    fn from_map<'de, A: de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        map_of(map).map(Keep::Every)
    }
}

deserialize_by_kind!(Tensors, NamedTensor, NumberOrList, SgdSetting, Keep);

/// What `POST /v1/momentum/equivalence` answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MomentumReport {
    /// Form I against Form II.
    pub verdict: Verdict,
    pub all_forms_equivalent: bool,
    pub explanation: Vec<String>,
    pub steps: usize,
    pub alpha_constant: bool,
    /// The named tensors, in the order they are flattened.
    pub parameters: Vec<Slot>,
    pub returned_steps: Vec<usize>,
    /// Per form: theta (flattened in parameter order, one row per returned step) and v or u
    /// where the form has one.
    pub trajectories: BTreeMap<String, Trajectory>,
    pub pairs: Vec<PairReport>,
    pub tolerance: f64,
    pub tolerance_rule: &'static str,
    pub dtype: Dtype,
    pub device: String,
    pub device_note: Option<String>,
    pub libtorch_version: &'static str,
    pub millis: f64,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Equivalent,
    NotEquivalent,
}

/// One named tensor of the parameter set, flattened in name order.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Slot {
    pub name: String,
    pub shape: Vec<u64>,
    pub offset: usize,
    pub size: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Trajectory {
    /// One row per returned step; a number that diverged past float range is null.
    #[schema(value_type = Vec<Vec<Option<f64>>>)]
    pub theta: Vec<Vec<f64>>,
    /// Form II's velocity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<Option<f64>>>>)]
    pub v: Option<Vec<Vec<f64>>>,
    /// Sutskever's step.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<Option<f64>>>>)]
    pub u: Option<Vec<Vec<f64>>>,
}

fn too_many(pointer: &str, max: usize, what: String) -> SpecError {
    SpecError::too_large(pointer, "max_tensor_elements", max as u64, what)
}

/// The numbers of `t` in name order, with their slots; sizes and shapes checked.
fn flatten(t: &Tensors, pointer: &str, max: usize) -> SpecResult<(Vec<Slot>, Vec<f64>)> {
    let entries: Vec<(String, String, Option<&Vec<u64>>, &Vec<f64>)> = match t {
        Tensors::List(values) => vec![("theta".into(), pointer.to_string(), None, values)],
        Tensors::Named(map) if map.is_empty() => return Err(SpecError::invalid(pointer, "is empty")),
        Tensors::Named(map) => map
            .iter()
            .map(|(name, t)| {
                let at = child(pointer, name);
                match t {
                    NamedTensor::Values(v) => (name.clone(), at, None, v),
                    NamedTensor::Shaped(s) => (name.clone(), at, s.shape.as_ref(), &s.values),
                }
            })
            .collect(),
    };
    let mut slots = Vec::new();
    let mut all = Vec::new();
    for (name, at, shape, values) in entries {
        if values.len() > max {
            return Err(too_many(&at, max, format!("{} numbers is over the limit of {max}", values.len())));
        }
        let shape = match shape {
            Some(dims) => {
                for (i, &d) in dims.iter().enumerate() {
                    within_u64(d, &child(&child(&at, "shape"), i), 1, max as u64)?;
                }
                let need = dims.iter().try_fold(1u64, |p, &d| p.checked_mul(d)).unwrap_or(u64::MAX);
                if need != values.len() as u64 {
                    return Err(SpecError::invalid(
                        child(&at, "values"),
                        format!("has {} numbers but shape {dims:?} needs {need}", values.len()),
                    ));
                }
                dims.clone()
            }
            None => vec![values.len() as u64],
        };
        if values.is_empty() {
            return Err(SpecError::invalid(at, "is empty"));
        }
        slots.push(Slot {
            name,
            shape,
            offset: all.len(),
            size: values.len(),
        });
        all.extend_from_slice(values);
        if all.len() > max {
            return Err(too_many(pointer, max, format!("more than {max} parameters")));
        }
    }
    Ok((slots, all))
}

/// A gradient step must have exactly theta0's names and shapes.
fn gradient_step(t: &Tensors, pointer: &str, layout: &[Slot], max: usize) -> SpecResult<Vec<f64>> {
    let (slots, values) = flatten(t, pointer, max)?;
    let same_names = slots.iter().map(|s| &s.name).eq(layout.iter().map(|s| &s.name));
    if !same_names {
        let want: Vec<&str> = layout.iter().map(|s| s.name.as_str()).collect();
        let got: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        return Err(SpecError::invalid(pointer, format!("names {got:?} do not match theta0's {want:?}")));
    }
    for (s, l) in slots.iter().zip(layout) {
        if s.size != l.size {
            let p = if l.name == "theta" && slots.len() == 1 {
                pointer.to_string()
            } else {
                child(pointer, &l.name)
            };
            return Err(SpecError::invalid(
                p,
                format!(
                    "has {} numbers but theta0's {:?} has {} (shape {:?})",
                    s.size, l.name, l.size, l.shape
                ),
            ));
        }
    }
    Ok(values)
}

fn objective(o: &ObjectiveSpec, n: usize) -> SpecResult<Objective> {
    let at = |key: &str| child("/objective", key);
    match o.kind {
        ObjectiveKind::Quadratic => {
            if o.a.is_some() {
                return Err(SpecError::invalid(at("a"), "belongs to the rosenbrock objective"));
            }
            let rows =
                o.q.as_ref()
                    .ok_or_else(|| SpecError::invalid(at("Q"), "is required: an n x n matrix (list of rows)"))?;
            if rows.len() != n {
                return Err(SpecError::invalid(
                    at("Q"),
                    format!("has {} rows but theta0 has {n} numbers", rows.len()),
                ));
            }
            if let Some(i) = rows.iter().position(|r| r.len() != n) {
                return Err(SpecError::invalid(
                    child(&at("Q"), i),
                    format!("has {} numbers, expected {n}", rows[i].len()),
                ));
            }
            let b = match &o.b {
                None => vec![0.0; n],
                Some(NumberOrList::List(b)) if b.len() == n => b.clone(),
                Some(NumberOrList::List(b)) => return Err(SpecError::invalid(at("b"), format!("has {} numbers, expected {n}", b.len()))),
                Some(NumberOrList::One(_)) => {
                    return Err(SpecError::invalid(at("b"), format!("expected a list of {n} numbers, got a number")))
                }
            };
            Ok(Objective::Quadratic { q: rows.concat(), b })
        }
        ObjectiveKind::Rosenbrock => {
            if o.q.is_some() {
                return Err(SpecError::invalid(at("Q"), "belongs to the quadratic objective"));
            }
            if n < 2 {
                return Err(SpecError::invalid("/theta0", "Rosenbrock needs at least 2 coordinates"));
            }
            let b = match &o.b {
                None => 100.0,
                Some(NumberOrList::One(b)) => within(*b, &at("b"), 0.0, 1e6)?,
                Some(NumberOrList::List(_)) => return Err(SpecError::invalid(at("b"), "expected a number, got a list")),
            };
            Ok(Objective::Rosenbrock {
                a: within(o.a.unwrap_or(1.0), &at("a"), -1e6, 1e6)?,
                b,
            })
        }
    }
}

/// Which steps' iterates come back: all, every n-th (plus the last), or the last only.
fn kept_steps(keep: Option<&Keep>, steps: usize) -> SpecResult<Vec<usize>> {
    let every = match keep {
        None | Some(Keep::Word(KeepWord::Full)) => 1,
        Some(Keep::Word(KeepWord::Last)) => return Ok(vec![0, steps]),
        Some(Keep::Word(KeepWord::None)) => return Ok(vec![]),
        Some(Keep::Every(e)) => within_u64(e.every_n, "/return/every_n", 1, u32::MAX as u64)? as usize,
    };
    let mut keep: Vec<usize> = (0..=steps).step_by(every).collect();
    if keep.last() != Some(&steps) {
        keep.push(steps);
    }
    Ok(keep)
}

/// Runs the heavy-ball momentum forms side by side and says where they agree.
///
/// Form I: theta_(k+1) = theta_k - alpha_k g_k + beta (theta_k - theta_(k-1)), theta_(-1) = theta_0.
/// Form II: v_(k+1) = g_k + beta v_k, theta_(k+1) = theta_k - alpha_k v_(k+1), v_0 = 0.
/// Optional: `sutskever` (u_(k+1) = beta u_k - alpha_k g_k, theta_(k+1) = theta_k + u_(k+1)) and
/// `pytorch_sgd` (libtorch's own torch::optim::SGD with momentum=beta, dampening, nesterov,
/// weight_decay; lr set to alpha_k before each step). When alpha changes, `form_i_rescaled`
/// (Form I with the momentum term scaled by alpha_k/alpha_(k-1)) is run too: it is what Form II
/// equals. All forms run in libtorch tensors in lockstep.
///
/// Gradients are either supplied (one per step, same names and shapes as theta0) or computed
/// by autograd from an `objective` at each form's own iterate (then rounding differences can
/// grow). Pairs are compared per step: they differ at step k when
/// max|theta_a - theta_b| > tolerance * max(1, max|theta_a|, max|theta_b|). `verdict` is about
/// Form I vs Form II. `format: svg` (or `Accept: image/svg+xml`) plots the first two
/// coordinates per form (`plot: coordinates`) or the per-step differences on a log axis
/// (`plot: difference`).
#[utoipa::path(
    post,
    path = "/v1/momentum/equivalence",
    operation_id = "momentum_equivalence",
    tag = "momentum",
    params(("format" = Option<ImageFormat>, Query, description = "json or svg (overrides the body's `format`)")),
    request_body = MomentumRequest,
    responses(
        (status = 200, description = "trajectories, per-pair differences and the verdict", content(
            (MomentumReport = "application/json"),
            (String = "image/svg+xml"),
        )),
        Problems,
    )
)]
pub async fn handle(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let req: MomentumRequest = typed::read(body, "")?;
    let report = compute(&state, &req).await?;
    if wants_svg(&query, &headers, req.format.map(ImageFormat::name))? {
        return Ok(svg_response(plot(&report, req.plot == Plot::Difference)));
    }
    Ok(json_response(&report))
}

/// Plots the first two coordinates of every form, or the per-step differences of every pair.
fn plot(report: &MomentumReport, difference: bool) -> String {
    let series: Vec<Series> = if difference {
        report
            .pairs
            .iter()
            .map(|p| Series {
                name: format!("{} vs {}", p.a, p.b),
                points: p.max_abs_diff_per_step.iter().enumerate().map(|(k, &d)| (k as f64, d)).collect(),
                dashed: false,
            })
            .collect()
    } else {
        report
            .trajectories
            .iter()
            .enumerate()
            .flat_map(|(f, (name, t))| {
                let coords = t.theta.first().map(|r| r.len().min(2)).unwrap_or(0);
                (0..coords).map(move |c| Series {
                    name: format!("{name} theta[{c}]"),
                    points: report.returned_steps.iter().zip(&t.theta).map(|(&k, r)| (k as f64, r[c])).collect(),
                    dashed: f % 2 == 1,
                })
            })
            .collect()
    };
    if difference {
        line_chart("max |theta_a - theta_b| per step", "step k", "difference", &series, true)
    } else {
        line_chart("iterates per form", "step k", "theta", &series, false)
    }
}

/// Checks the request, runs the forms in libtorch and judges them (also used by grading).
pub async fn compute(state: &AppState, req: &MomentumRequest) -> ApiResult<MomentumReport> {
    let cfg = &state.config;
    let max = cfg.max_tensor_elements as usize;
    let (layout, theta0) = flatten(&req.theta0, "/theta0", max)?;
    if let Some(steps) = req.steps {
        within_u64(steps, "/steps", 1, cfg.max_steps)?;
    }
    let gradients = match (&req.gradients, &req.objective) {
        (Some(_), Some(_)) => return Err(SpecError::invalid("/objective", "give either gradients or an objective, not both").into()),
        (Some(list), None) => {
            if list.is_empty() {
                return Err(SpecError::invalid("/gradients", "is empty: give one gradient per step").into());
            }
            if list.len() as u64 > cfg.max_steps {
                return Err(SpecError::too_large(
                    "/gradients",
                    "max_steps",
                    cfg.max_steps,
                    format!("{} steps is over the limit of {}", list.len(), cfg.max_steps),
                )
                .into());
            }
            if list.len().saturating_mul(theta0.len()) > max {
                return Err(too_many(
                    "/gradients",
                    max,
                    format!("{} steps x {} numbers is over the limit of {max}", list.len(), theta0.len()),
                )
                .into());
            }
            if let Some(given) = req.steps.filter(|&s| s as usize != list.len()) {
                return Err(SpecError::invalid("/steps", format!("says {given} but {} gradients were given", list.len())).into());
            }
            let steps = list
                .iter()
                .enumerate()
                .map(|(k, g)| gradient_step(g, &child("/gradients", k), &layout, max))
                .collect::<SpecResult<Vec<_>>>()?;
            Gradients::Supplied(steps)
        }
        (None, Some(o)) => {
            let objective = objective(o, theta0.len())?;
            let steps = req
                .steps
                .ok_or_else(|| SpecError::invalid("/steps", "is required with an objective"))? as usize;
            Gradients::Objective { objective, steps }
        }
        (None, None) => {
            return Err(SpecError::invalid("/gradients", "is required (one gradient per step), or give an objective and steps").into())
        }
    };
    let steps = match &gradients {
        Gradients::Supplied(g) => g.len(),
        Gradients::Objective { steps, .. } => *steps,
    };
    let alpha = match &req.alpha {
        NumberOrList::List(items) => {
            if items.len() != steps {
                return Err(SpecError::invalid("/alpha", format!("has {} step sizes but there are {steps} steps", items.len())).into());
            }
            for (k, &a) in items.iter().enumerate() {
                within(a, &child("/alpha", k), 0.0, 1e12)?;
            }
            items.clone()
        }
        NumberOrList::One(a) => vec![within(*a, "/alpha", 0.0, 1e12)?; steps],
    };
    let beta = within(req.beta, "/beta", 0.0, 1.0)?;
    if beta >= 1.0 {
        return Err(SpecError::invalid("/beta", "must be in [0, 1): heavy-ball momentum diverges at beta = 1").into());
    }
    let kind = match req.dtype {
        Dtype::Float64 => tch::Kind::Double,
        Dtype::Float32 => tch::Kind::Float,
    };
    let tolerance = match req.tolerance {
        Some(t) => within(t, "/tolerance", 0.0, 1.0)?,
        None if req.dtype == Dtype::Float64 => 1e-10,
        None => 1e-4,
    };
    let (dev, device_note) = device::resolve(req.device.as_deref().unwrap_or("cpu"), "/device")?;
    let sutskever = req.sutskever;
    let sgd = match &req.pytorch_sgd {
        None | Some(SgdSetting::Enabled(false)) => None,
        Some(SgdSetting::Enabled(true)) => Some(SgdOptions {
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }),
        Some(SgdSetting::Options(o)) => {
            let opts = SgdOptions {
                dampening: within(o.dampening, "/pytorch_sgd/dampening", 0.0, 1.0)?,
                nesterov: o.nesterov,
                weight_decay: within(o.weight_decay, "/pytorch_sgd/weight_decay", 0.0, 1e6)?,
            };
            if opts.nesterov && (beta == 0.0 || opts.dampening != 0.0) {
                return Err(SpecError::invalid(
                    "/pytorch_sgd/nesterov",
                    "Nesterov momentum needs beta > 0 and zero dampening (torch.optim.SGD refuses it too)",
                )
                .into());
            }
            Some(opts)
        }
    };
    let keep = kept_steps(req.keep.as_ref(), steps)?;
    let forms = 2 + usize::from(sutskever) + usize::from(sgd.is_some()) + 1;
    if keep.len().saturating_mul(theta0.len()).saturating_mul(forms * 2) > max {
        return Err(too_many(
            "/return",
            max,
            "the returned trajectories would exceed the limit; use \"return\": \"last\" or {\"every_n\": N}".into(),
        )
        .into());
    }

    let alpha_change = first_alpha_change(&alpha);
    let uses_objective = matches!(gradients, Gradients::Objective { .. });
    let run = Run {
        theta0,
        gradients,
        alpha: alpha.clone(),
        beta,
        kind,
        device: dev,
        sutskever,
        rescaled: alpha_change.is_some(),
        sgd: sgd.clone(),
        keep: keep.clone(),
    };
    let outcome = state
        .run_torch(move || run.run())
        .await?
        .map_err(|e| SpecError::invalid("", format!("libtorch could not run the forms: {e}")))?;

    let pairs: Vec<_> = outcome
        .pairs
        .iter()
        .enumerate()
        .map(|(p, &(a, b))| judge(outcome.names[a], outcome.names[b], &outcome.diffs[p], &outcome.scales[p], tolerance))
        .collect();
    let pair = |a: &str, b: &str| pairs.iter().find(|p| p.a == a && p.b == b || p.a == b && p.b == a);
    let i_ii = pair("form_i", "form_ii").expect("both forms always run");
    let mut explanation: Vec<String> = Vec::new();
    if let Some(k) = alpha_change {
        explanation.push(format!(
            "the step size changes at step {k} ({} -> {}): Form II's v accumulates raw gradients, so after the change it equals Form I with its momentum term scaled by alpha_k/alpha_(k-1) (form_i_rescaled), not Form I itself; Sutskever's form stores alpha*g in u and stays equal to Form I",
            alpha[k - 1], alpha[k]
        ));
        if let Some(p) = pair("form_i_rescaled", "form_ii") {
            explanation.push(format!(
                "form_i_rescaled vs form_ii: {}",
                if p.equivalent {
                    "equivalent, as the algebra says"
                } else {
                    "NOT equivalent (rounding or a bug: see the differences)"
                }
            ));
        }
    } else if i_ii.equivalent {
        explanation.push("with a constant step size, v_k = -(theta_k - theta_(k-1))/alpha turns Form II into Form I step by step (the induction in the course's P3); the differences are rounding only".into());
    }
    if uses_objective {
        explanation.push("each form evaluates the gradient at its own iterate, so rounding differences feed back into later gradients and can grow, especially on non-convex objectives".into());
    }
    if let Some(o) = &sgd {
        if o.dampening != 0.0 {
            explanation.push(format!("pytorch_sgd uses dampening {}: its buffer is beta*b + (1-dampening)*g after the first step, so it is Form II only when dampening = 0", o.dampening));
        }
        if o.weight_decay != 0.0 {
            explanation.push(format!(
                "pytorch_sgd adds weight_decay*theta = {}*theta to every gradient before the momentum update",
                o.weight_decay
            ));
        }
        if o.nesterov {
            explanation.push("pytorch_sgd with nesterov steps along g + beta*b instead of b: a different method".into());
        }
    }
    let all_equivalent = pairs.iter().all(|p| p.equivalent);

    let trajectories = outcome
        .names
        .iter()
        .zip(outcome.snapshots)
        .zip(outcome.aux)
        .map(|((name, theta), aux)| {
            let (mut v, mut u) = (None, None);
            match aux {
                Some(("v", vals)) => v = Some(vals),
                Some((_, vals)) => u = Some(vals),
                None => {}
            }
            (name.to_string(), Trajectory { theta, v, u })
        })
        .collect();
    Ok(MomentumReport {
        verdict: if i_ii.equivalent {
            Verdict::Equivalent
        } else {
            Verdict::NotEquivalent
        },
        all_forms_equivalent: all_equivalent,
        explanation,
        steps,
        alpha_constant: alpha_change.is_none(),
        parameters: layout,
        returned_steps: keep,
        trajectories,
        pairs,
        tolerance,
        tolerance_rule: "a pair differs at step k when max|theta_a - theta_b| > tolerance * max(1, max|theta_a|, max|theta_b|)",
        dtype: req.dtype,
        device: device::name(dev),
        device_note,
        libtorch_version: device::libtorch_version(),
        millis: (outcome.millis * 1000.0).round() / 1000.0,
    })
}
