//! `POST /v1/gradient-diagnostics`: runs the model forward and backward in libtorch and shows
//! how the gradient shrinks (or grows) layer by layer, next to the course's bound.
use super::body::JsonBody;
use super::error::ApiResult;
use super::report::ImageFormat;
use super::report::ModelSummary;
use super::svg::{line_chart, Series};
use super::typed::{self, deserialize_by_kind, map_of, ByKind};
use super::{json_response, svg_response, wants_svg, AppState};
use crate::analysis::gradient::{bias_gradient_bounds, verdict, ChainItem, Verdict};
use crate::spec::error::child;
use crate::spec::json::Obj;
use crate::spec::{infer, Graph, LayerKind, ModelSpec, SpecError, SpecResult};
use crate::torch::device;
use crate::torch::diagnostics::{self, is_mlp_chain, max_derivative, Inputs, Norms, ObjectiveKind, Report, Request};
use crate::torch::net::{Init, InitSpec};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{de, Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

/// Flattens a number or nested lists of numbers, refusing non-finite values and overlong input.
/// The body of `POST /v1/gradient-diagnostics` for a network the service reads.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsRequest {
    #[serde(default)]
    #[schema(schema_with = super::report::model_schema)]
    pub model: Option<Value>,
    /// How the weights are drawn (a model file's own weights by default; else PyTorch's).
    #[serde(default)]
    pub init: Option<InitRequest>,
    /// Explicit weights: layer path or name -> {"weight", "bias"} (nested lists, row-major in
    /// PyTorch's shape), or for a module with several tensors PyTorch's names within it
    /// (`weight_ih_l0`, `in_proj_weight`), any subset.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, BTreeMap<String, Numbers>>>)]
    pub parameters: Option<BTreeMap<String, BTreeMap<String, Option<Numbers>>>>,
    #[serde(default)]
    pub inputs: Option<InputsRequest>,
    /// The loss, over the model's outputs flattened per sample and joined in their listed order
    /// (one output: that output flattened): the sum of every output (default), one output unit
    /// summed over the batch, or the mean squared error against targets.
    #[serde(default)]
    pub objective: Option<ObjectiveRequest>,
    #[serde(default)]
    #[schema(default = "float32")]
    pub dtype: Option<Precision>,
    /// cpu, cuda, cuda:N or auto (auto falls back to cpu and says so).
    #[serde(default)]
    #[schema(default = "cpu")]
    pub device: Option<String>,
    #[serde(default)]
    pub thresholds: Option<ThresholdsRequest>,
    /// Runs of the same request at other depths (a repeated block of layers) and weight scales.
    #[serde(default)]
    pub sweep: Option<SweepRequest>,
    /// Lanczos stops once each spectral norm's error bound is under this fraction of it; 0 asks
    /// for the exact eigvalsh of every Gram matrix (slower on large layers).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 0.1, default = 0.001)]
    pub spectral_tolerance: Option<f64>,
    /// `svg` plots the per-layer norms with the bound (or the sweep).
    #[serde(default)]
    pub format: Option<ImageFormat>,
}

/// Numbers, or lists of them nested to any depth (read flat, row-major).
#[derive(Debug, Clone)]
pub struct Numbers(pub Vec<f64>);

impl utoipa::PartialSchema for Numbers {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ArrayBuilder::new().items(utoipa::openapi::Ref::from_schema_name("Numbers")))
            .description(Some("a number, or a list of numbers nested to any depth (read flat, row-major)"))
            .into()
    }
}

impl ToSchema for Numbers {}

impl ByKind for Numbers {
    const EXPECTING: &'static str = "a number or a (nested) list of numbers";
    fn from_number<E: de::Error>(v: f64) -> Result<Self, E> {
        Ok(Numbers(vec![v]))
    }
    fn from_seq<'de, A: de::SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut out = Vec::new();
        while let Some(Numbers(inner)) = seq.next_element::<Numbers>()? {
            out.extend(inner);
        }
        Ok(Numbers(out))
    }
}

/// An init by name, or `{type, std, bound, scale, seed}`.
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum InitRequest {
    Name(InitName),
    Spec(InitSpecRequest),
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
/// `model`: the weights of an ONNX file (its default); the others replace them.
pub enum InitName {
    Model,
    PytorchDefault,
    XavierUniform,
    XavierNormal,
    KaimingUniform,
    KaimingNormal,
    Normal,
    Uniform,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitSpecRequest {
    #[serde(default, rename = "type")]
    #[schema(default = "pytorch_default")]
    pub kind: Option<InitName>,
    /// normal: the standard deviation.
    #[serde(default)]
    #[schema(default = 0.01)]
    pub std: Option<f64>,
    /// uniform: U(-bound, bound).
    #[serde(default)]
    #[schema(default = 0.1)]
    pub bound: Option<f64>,
    /// Multiplies every weight (not biases) after initialisation.
    #[serde(default)]
    #[schema(default = 1)]
    pub scale: Option<f64>,
    #[serde(default)]
    #[schema(default = 0)]
    pub seed: Option<u64>,
}

/// The input batch: explicit `values` (a multiple of one sample), or drawn from a seed.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputsRequest {
    /// Nested or flat; batch = count / input size (token ids: integers below the embedding's
    /// num_embeddings; drawn ids are uniform over them).
    #[serde(default)]
    pub values: Option<Numbers>,
    #[serde(default)]
    #[schema(minimum = 1, default = 16)]
    pub batch_size: Option<u64>,
    #[serde(default)]
    #[schema(default = "normal")]
    pub distribution: Option<Distribution>,
    /// uniform: U(-bound, bound).
    #[serde(default)]
    #[schema(default = 1)]
    pub bound: Option<f64>,
    #[serde(default)]
    #[schema(default = 0)]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Normal,
    Uniform,
}

/// `"sum_output"`, or `{type, unit (or output_unit), targets}`.
#[derive(Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum ObjectiveRequest {
    Name(ObjectiveName),
    Spec(ObjectiveSpecRequest),
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveName {
    SumOutput,
    OutputUnit,
    Mse,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpecRequest {
    #[serde(default, rename = "type")]
    #[schema(default = "sum_output")]
    pub kind: Option<ObjectiveName>,
    /// output_unit: the flat index of one output unit of a sample.
    #[serde(default)]
    pub unit: Option<u64>,
    /// Shorthand for type output_unit: dy_L[k]/d(.) summed over the batch.
    #[serde(default)]
    pub output_unit: Option<u64>,
    /// mse: the targets, batch x every output's elements.
    #[serde(default)]
    pub targets: Option<Numbers>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Float32,
    Float64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsRequest {
    /// A layer whose gradient norm is under this fraction of the last layer's is vanishing.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1, default = 0.001)]
    pub vanishing_ratio: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 1, default = 1000)]
    pub exploding_ratio: Option<f64>,
    /// |pre-activation| beyond which a sigmoid/tanh unit counts as saturated.
    #[serde(default)]
    #[schema(minimum = 0, default = 4)]
    pub saturation: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepRequest {
    /// How many times the block is repeated (sequential form only).
    #[serde(default)]
    pub depths: Option<Vec<u64>>,
    /// Multipliers of every weight.
    #[serde(default)]
    pub scales: Option<Vec<f64>>,
    /// `[start, end)`: the layers repeated for each depth (default the first two).
    #[serde(default)]
    pub block: Option<Vec<u64>>,
}

deserialize_by_kind!(Numbers, InitRequest, ObjectiveRequest);

impl ByKind for InitRequest {
    const EXPECTING: &'static str = "an init name or {type, std, bound, scale, seed}";
    fn from_str<E: de::Error>(v: &str) -> Result<Self, E> {
        InitName::deserialize(de::value::StrDeserializer::<E>::new(v)).map(InitRequest::Name)
    }
    fn from_map<'de, A: de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        map_of(map).map(InitRequest::Spec)
    }
}

impl ByKind for ObjectiveRequest {
    const EXPECTING: &'static str = "\"sum_output\" or {type, unit, targets}";
    fn from_str<E: de::Error>(v: &str) -> Result<Self, E> {
        match ObjectiveName::deserialize(de::value::StrDeserializer::<E>::new(v))? {
            ObjectiveName::SumOutput => Ok(ObjectiveRequest::Name(ObjectiveName::SumOutput)),
            _ => Err(E::invalid_value(
                de::Unexpected::Str(v),
                &"\"sum_output\" (the others need {type, unit or targets})",
            )),
        }
    }
    fn from_map<'de, A: de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        map_of(map).map(ObjectiveRequest::Spec)
    }
}

/// A tensor's numbers, at most `max` of them (413 past that).
fn numbers(v: &Numbers, pointer: &str, max: usize) -> SpecResult<Vec<f64>> {
    if v.0.len() > max {
        return Err(SpecError::too_large(
            pointer,
            "max_tensor_elements",
            max as u64,
            format!("more than {max} numbers"),
        ));
    }
    Ok(v.0.clone())
}

/// `init`: a model that carries weights (an ONNX file) defaults to `model`, its own weights; the
/// other inits replace them.
fn parse_init(v: Option<&InitRequest>, has_weights: bool) -> SpecResult<InitSpec> {
    let (name, spec, at) = match v {
        None => {
            return Ok(InitSpec {
                init: if has_weights { Init::Model } else { Init::PytorchDefault },
                scale: 1.0,
                seed: 0,
            })
        }
        Some(InitRequest::Name(n)) => (*n, None, "/init"),
        Some(InitRequest::Spec(s)) => (s.kind.unwrap_or(InitName::PytorchDefault), Some(s), "/init/type"),
    };
    if name == InitName::Model && !has_weights {
        return Err(SpecError::invalid(
            at,
            "init \"model\" uses the weights of a model file ({\"onnx\": ...}); this model has none",
        ));
    }
    let f = |value: Option<f64>, key: &str, default: f64, min: f64, max: f64| {
        typed::within(value.unwrap_or(default), &child("/init", key), min, max)
    };
    let init = match name {
        InitName::Model => Init::Model,
        InitName::PytorchDefault => Init::PytorchDefault,
        InitName::XavierUniform => Init::XavierUniform,
        InitName::XavierNormal => Init::XavierNormal,
        InitName::KaimingUniform => Init::KaimingUniform,
        InitName::KaimingNormal => Init::KaimingNormal,
        InitName::Normal => Init::Normal {
            std: f(spec.and_then(|s| s.std), "std", 0.01, 0.0, 1e6)?,
        },
        InitName::Uniform => Init::Uniform {
            bound: f(spec.and_then(|s| s.bound), "bound", 0.1, 0.0, 1e6)?,
        },
    };
    Ok(InitSpec {
        init,
        scale: f(spec.and_then(|s| s.scale), "scale", 1.0, -1e6, 1e6)?,
        seed: spec.and_then(|s| s.seed).unwrap_or(0),
    })
}

type Explicit = HashMap<String, (Vec<f64>, Option<Vec<f64>>)>;

/// Explicit parameters, checked against the layers they name.
fn parse_parameters(v: Option<&BTreeMap<String, BTreeMap<String, Option<Numbers>>>>, graph: &Graph, max: usize) -> SpecResult<Explicit> {
    let mut out = HashMap::new();
    let Some(map) = v else { return Ok(out) };
    let nodes = graph.walk();
    for (key, entry) in map {
        let p = child("/parameters", key);
        let node = nodes
            .iter()
            .find(|n| &n.path == key)
            .or_else(|| nodes.iter().find(|n| n.layer.name.as_deref() == Some(key.as_str())))
            .ok_or_else(|| SpecError::invalid(&p, format!("no layer has the path or name {key:?}")))?;
        // a tied layer's weight is its owner's tensor; a tied linear's own bias may be given
        let tied_weight = node.tie.as_ref().map(|t| t.label.clone());
        if let Some(owner) = &tied_weight {
            if entry.contains_key("weight") || node.named_params().is_some() {
                return Err(SpecError::invalid(
                    &p,
                    format!(
                        "layer {}'s weight is {owner}'s tensor (weight_of): give its values under {owner:?}",
                        node.path
                    ),
                ));
            }
        }
        if let Some(named) = node.named_params() {
            // {"weight_ih_l0": [...], ...}: PyTorch's names within the module, any subset
            let names: Vec<&str> = named.iter().map(|np| np.name.as_str()).collect();
            if let Some(k) = entry.keys().find(|k| !names.contains(&k.as_str())) {
                return Err(SpecError::invalid(
                    child(&p, k),
                    format!(
                        "layer {} ({}) has no parameter {k:?}; its parameters are {}",
                        node.path,
                        node.layer.type_name(),
                        names.join(", ")
                    ),
                ));
            }
            for np in &named {
                let Some(Some(v)) = entry.get(&np.name) else {
                    continue;
                };
                let at = child(&p, &np.name);
                let values = numbers(v, &at, max)?;
                if values.len() as u64 != np.numel() {
                    return Err(SpecError::invalid(
                        at,
                        format!(
                            "has {} numbers; {}.{} needs {} (shape {:?}, row-major)",
                            values.len(),
                            node.path,
                            np.name,
                            np.numel(),
                            np.shape
                        ),
                    ));
                }
                out.insert(format!("{}.{}", node.path, np.name), (values, None));
            }
            continue;
        }
        // prelu's slopes: {"weight": [num_parameters numbers]}
        if let LayerKind::Activation {
            kind: crate::spec::Activation::Prelu,
            parameters,
            ..
        } = node.layer.kind
        {
            if let Some(k) = entry.keys().find(|k| k.as_str() != "weight") {
                return Err(SpecError::invalid(
                    child(&p, k),
                    format!("unknown field {k:?}; allowed here: weight"),
                ));
            }
            let at = child(&p, "weight");
            let w = match entry.get("weight") {
                Some(Some(v)) => numbers(v, &at, max)?,
                _ => return Err(SpecError::invalid(at, "is required")),
            };
            if w.len() as u64 != parameters {
                return Err(SpecError::invalid(
                    at,
                    format!("has {} numbers; prelu {} has num_parameters {parameters}", w.len(), node.path),
                ));
            }
            out.insert(node.path.clone(), (w, None));
            continue;
        }
        let Some(w) = node.dense_weight() else {
            return Err(SpecError::invalid(
                &p,
                format!("layer {} ({}) has no weight", node.path, node.layer.type_name()),
            ));
        };
        if let Some(k) = entry.keys().find(|k| !matches!(k.as_str(), "weight" | "bias")) {
            return Err(SpecError::invalid(
                child(&p, k),
                format!("unknown field {k:?}; allowed here: weight, bias"),
            ));
        }
        let (wn, bias_len) = (w.numel() as usize, w.bias.then_some(w.bias_len() as usize));
        let at = |k: &str| child(&p, k);
        let w = match entry.get("weight") {
            Some(Some(v)) => numbers(v, &at("weight"), max)?,
            // none: the net takes the owner's tensor in its place
            _ if tied_weight.is_some() => Vec::new(),
            _ => return Err(SpecError::invalid(at("weight"), "is required")),
        };
        if w.len() != wn && tied_weight.is_none() {
            return Err(SpecError::invalid(
                at("weight"),
                format!(
                    "has {} numbers; layer {} needs {wn} (PyTorch's weight shape, row-major)",
                    w.len(),
                    node.path
                ),
            ));
        }
        let b = match (entry.get("bias").and_then(Option::as_ref), bias_len) {
            (None, _) => None,
            (Some(_), None) => return Err(SpecError::invalid(at("bias"), format!("layer {} has bias=false", node.path))),
            (Some(v), Some(n)) => {
                let b = numbers(v, &at("bias"), max)?;
                if b.len() != n {
                    return Err(SpecError::invalid(
                        at("bias"),
                        format!("has {} numbers; layer {} needs {n}", b.len(), node.path),
                    ));
                }
                Some(b)
            }
        };
        out.insert(node.path.clone(), (w, b));
    }
    Ok(out)
}

struct Thresholds {
    vanishing: f64,
    exploding: f64,
    saturation: f64,
    /// Relative rounding slack when checking measured <= bound (the bound is tight for
    /// single-output chains, so float32 rounding alone can cross it).
    bound_slack: f64,
}

/// Checks the run's size against the configured limits before anything is allocated.
fn check_limits(state: &AppState, graph: &Graph, batch: u64, pointer: &str) -> SpecResult<()> {
    let cfg = &state.config;
    if !graph.nodes.iter().any(|n| n.dense_weight().is_some() || n.named_params().is_some()) {
        return Err(SpecError::invalid(
            pointer,
            "the model has no conv2d, linear, embedding, attention or recurrent layer: there is no parameter gradient to diagnose",
        ));
    }
    if let Some((path, why)) = crate::torch::net::empty_pool_window(graph) {
        let at = match graph.spec.source {
            Some(_) => format!("{pointer}/onnx"),
            None => graph
                .index(&path)
                .map(|i| graph.nodes[i].pointer.clone())
                .unwrap_or_else(|| pointer.to_string()),
        };
        return Err(SpecError::invalid(at, why));
    }
    let t = super::run_size(graph, batch)?;
    // attention's scores (heads x L x L per sample) are activations too, though no layer's output
    let scores: u128 = graph
        .nodes
        .iter()
        .map(|n| match n.layer.kind {
            LayerKind::MultiheadAttention { heads, .. } => heads as u128 * n.input[0] as u128 * n.key_tokens() as u128 * batch as u128,
            _ => 0,
        })
        .sum();
    for (name, value, limit, what) in [
        ("max_run_params", t.params, cfg.max_run_params, "parameters"),
        (
            "max_run_activations",
            t.output_elements + scores,
            cfg.max_run_activations,
            "activation elements (all layers x batch)",
        ),
        ("max_run_macs", t.macs, cfg.max_run_macs, "MACs in the forward pass"),
        (
            "max_run_recurrent_steps",
            graph.recurrent_steps(),
            cfg.max_run_recurrent_steps,
            "recurrent time steps one after the other (tokens x layers x directions)",
        ),
    ] {
        if value > limit as u128 {
            return Err(SpecError::too_large(
                pointer,
                name,
                limit,
                format!("the run needs {value} {what}, over the {name} limit of {limit}"),
            ));
        }
    }
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        if a == 0.0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        a / b
    }
}

/// Per-layer table, bound and verdicts from one run.
/// What `POST /v1/gradient-diagnostics` answers for a network it can read. A measured number
/// that is not finite (an overflowing network's loss, norms or ratios) is written as null.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DiagnosticsReport {
    #[serde(flatten)]
    pub summary: GradSummary,
    /// Runs of the same request at other depths and weight scales.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Vec<SweepRow>>,
    pub model: ModelSummary,
    pub batch_size: u64,
    pub thresholds: ThresholdsOut,
    /// The Lanczos tolerance the spectral norms ran under.
    pub spectral_tolerance: f64,
    pub device: String,
    pub device_note: Option<String>,
    pub dtype: &'static str,
    pub libtorch_version: &'static str,
    pub millis: f64,
    /// Milliseconds per phase of the run: parameters_and_inputs,
    /// forward_and_activation_statistics, backward, gradient_norms, spectral_norms.
    pub phases_millis: BTreeMap<&'static str, f64>,
}

/// The verdicts and norms of one run.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GradSummary {
    pub verdict: Verdict,
    pub first_vanishing_layer: Option<String>,
    pub layers: Vec<GradLayer>,
    pub activations: Vec<ActivationStats>,
    pub bound_note: &'static str,
    #[schema(value_type = Option<f64>)]
    pub output_grad_norm_sum: f64,
    #[schema(value_type = Option<f64>)]
    pub loss: f64,
    /// Layers with parameters that no output reads (graph form): no gradient reaches them, so
    /// they have no row.
    pub unused_layers: Vec<String>,
    /// The parameters outside `layers` (which holds weight matrices and learned tensors):
    /// normalization layers' affine weight and bias, by PyTorch's name, in the model's order.
    pub other_parameters: Vec<OtherParam>,
}

/// One parameter's gradient outside the weight table (a normalization layer's weight or bias).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OtherParam {
    /// PyTorch's name: the layer's path and the tensor's (`encoder.ln.weight`).
    #[schema(example = "encoder.ln.weight")]
    pub path: String,
    /// The layer's path.
    pub layer: String,
    #[serde(rename = "type")]
    pub layer_type: &'static str,
    pub shape: Vec<i64>,
    pub grad: Norms,
}

/// One weight's gradient, with its bias beside it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GradLayer {
    /// The layer's path; for a layer with several weights, the path and PyTorch's name of the
    /// weight (lstm.weight_hh_l0, attn.out_proj.weight), with its bias beside it.
    pub path: String,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub layer_type: &'static str,
    pub weight_shape: Vec<i64>,
    pub weight_grad: Norms,
    pub bias_grad: Option<Norms>,
    /// Null where the ratio is not finite (the last layer's gradient is zero, or a norm
    /// overflowed).
    #[schema(value_type = Option<f64>)]
    pub weight_grad_ratio_to_last: f64,
    pub bias_grad_ratio_to_last: Option<f64>,
    /// The largest singular value of the weight (conv: reshaped to out x in*kh*kw); the true
    /// value lies in [spectral_norm, spectral_norm + spectral_norm_error] (for lanczos: unless
    /// both start vectors miss the top singular vector, or the top singular values form a
    /// cluster within the tolerance, where the interval can miss by up to the cluster's width;
    /// the value itself is never above the true one).
    #[schema(value_type = Option<f64>)]
    pub spectral_norm: f64,
    /// 0 for eigvalsh (exact up to rounding: the smaller side at most 64, or spectral_tolerance
    /// 0); for lanczos, the residual bound, under spectral_tolerance times the value unless 300
    /// steps ran out.
    #[schema(value_type = Option<f64>)]
    pub spectral_norm_error: f64,
    /// eigvalsh or lanczos.
    pub spectral_norm_method: &'static str,
    pub bias_grad_bound: Option<f64>,
    pub bound_holds: Option<bool>,
    pub verdict: Verdict,
}

/// What one activation layer saw in the forward pass.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ActivationStats {
    pub path: String,
    pub activation: &'static str,
    #[schema(value_type = Option<f64>)]
    pub mean_abs_pre_activation: f64,
    #[schema(value_type = Option<f64>)]
    pub max_abs_pre_activation: f64,
    #[schema(value_type = Option<f64>)]
    pub fraction_saturated: f64,
    #[schema(value_type = Option<f64>)]
    pub mean_derivative: f64,
    /// sup g' of the activation (slope included for leaky_relu).
    pub max_derivative: f64,
    /// ReLU-like: the fraction of units whose pre-activation is <= 0 for every sample.
    pub dead_fraction: Option<f64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SweepRow {
    pub depth: Option<u64>,
    pub scale: f64,
    pub layers_with_parameters: usize,
    #[schema(value_type = Option<f64>)]
    pub first_to_last_weight_grad_ratio: f64,
    pub first_to_last_bias_grad_ratio: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ThresholdsOut {
    pub vanishing_ratio: f64,
    pub exploding_ratio: f64,
    pub saturation: f64,
}

fn summarize(graph: &Graph, report: &Report, th: &Thresholds) -> GradSummary {
    let nodes: HashMap<&str, &crate::spec::Node> = graph.nodes.iter().map(|n| (n.path.as_str(), n)).collect();
    let last = report.params.last().map(|p| p.weight_grad.frobenius).unwrap_or(0.0);
    let last_bias = report.params.last().and_then(|p| p.bias_grad.as_ref()).map(|b| b.frobenius);
    let bounds: HashMap<String, f64> = if is_mlp_chain(graph) {
        let chain: Vec<ChainItem> = graph
            .nodes
            .iter()
            .filter_map(|n| match n.layer.kind {
                LayerKind::Linear { .. } => report.params.iter().find(|p| p.path == n.path).map(|p| ChainItem::Linear {
                    path: n.path.clone(),
                    // the upper end of the estimate's interval, so that the bound stays a bound
                    spectral_norm: p.spectral_norm.value + p.spectral_norm.error,
                }),
                // sup g' as the forward pass saw it (prelu's from its weight)
                LayerKind::Activation { kind, negative_slope, .. } => Some(ChainItem::Activation {
                    max_derivative: report
                        .activations
                        .iter()
                        .find(|a| a.path == n.path)
                        .map_or_else(|| max_derivative(kind, negative_slope), |a| a.max_derivative),
                }),
                _ => None,
            })
            .collect();
        bias_gradient_bounds(&chain, report.output_grad_norm_sum).into_iter().collect()
    } else {
        HashMap::new()
    };
    let mut first_vanishing = None;
    let mut overall = Verdict::Healthy;
    let mut layers: Vec<GradLayer> = Vec::new();
    for p in report.params.iter().rev() {
        let r = ratio(p.weight_grad.frobenius, last);
        let v = verdict(r, th.vanishing, th.exploding);
        if v == Verdict::Vanishing && first_vanishing.is_none() {
            first_vanishing = Some(p.path.clone());
        }
        if v == Verdict::Exploding {
            overall = Verdict::Exploding;
        } else if v == Verdict::Vanishing && overall == Verdict::Healthy {
            overall = Verdict::Vanishing;
        }
        let node = nodes[p.node.as_str()];
        let bound = bounds.get(&p.path).copied();
        let measured = p.bias_grad.as_ref().map(|b| b.frobenius);
        layers.push(GradLayer {
            path: p.path.clone(),
            name: node.layer.name.clone(),
            layer_type: node.layer.type_name(),
            weight_shape: p.weight_shape.clone(),
            weight_grad: p.weight_grad.clone(),
            bias_grad: p.bias_grad.clone(),
            weight_grad_ratio_to_last: r,
            bias_grad_ratio_to_last: measured.zip(last_bias).map(|(m, l)| ratio(m, l)),
            spectral_norm: p.spectral_norm.value,
            spectral_norm_error: p.spectral_norm.error,
            spectral_norm_method: p.spectral_norm.method,
            bias_grad_bound: bound,
            bound_holds: bound.zip(measured).map(|(b, m)| m <= b * (1.0 + th.bound_slack)),
            verdict: v,
        });
    }
    layers.reverse();
    let activations = report
        .activations
        .iter()
        .map(|a| ActivationStats {
            path: a.path.clone(),
            activation: a.activation.name(),
            mean_abs_pre_activation: a.mean_abs_pre,
            max_abs_pre_activation: a.max_abs_pre,
            fraction_saturated: a.fraction_saturated,
            mean_derivative: a.mean_derivative,
            max_derivative: a.max_derivative,
            dead_fraction: a.dead_fraction,
        })
        .collect();
    GradSummary {
        verdict: overall,
        first_vanishing_layer: first_vanishing,
        layers,
        activations,
        bound_note: if bounds.is_empty() {
            "the bound is computed for MLPs (linear layers and element-wise activations); for other layers the spectral norm of a reshaped kernel does not bound the layer's Jacobian"
        } else {
            "||dL/db_i|| <= sum_s ||dL/dy_L(s)|| x prod(sup g' of each activation after layer i) x prod(||A_k||_2 of each linear layer after i)"
        },
        output_grad_norm_sum: report.output_grad_norm_sum,
        loss: report.loss,
        unused_layers: report.unused.clone(),
        other_parameters: report
            .vectors
            .iter()
            .map(|v| OtherParam {
                path: v.path.clone(),
                layer: v.node.clone(),
                layer_type: nodes[v.node.as_str()].layer.type_name(),
                shape: v.shape.clone(),
                grad: v.grad.clone(),
            })
            .collect(),
    }
}

/// The model with `block` (layer range) repeated `depth` times.
fn with_depth(spec: &ModelSpec, block: (usize, usize), depth: u64) -> ModelSpec {
    let mut s = spec.clone();
    let mut layers = spec.layers[..block.0].to_vec();
    for _ in 0..depth {
        layers.extend_from_slice(&spec.layers[block.0..block.1]);
    }
    layers.extend_from_slice(&spec.layers[block.1..]);
    s.layers = layers;
    s
}

pub async fn handle(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    if let Some(job) = super::script::diagnostics_job(&Obj::new(&body, "")?, &state)? {
        // a TorchScript module: per named parameter, no layer table to plot
        let answer = super::script::diagnostics(&state, job).await?;
        if wants_svg(&query, &headers, body.get("format").and_then(Value::as_str))? {
            return Ok(svg_response(plot_layers(&[])));
        }
        return Ok(json_response(&answer));
    }
    let req: DiagnosticsRequest = typed::read(body, "")?;
    let report = report(&state, &req).await?;
    if wants_svg(&query, &headers, req.format.map(ImageFormat::name))? {
        return Ok(svg_response(plot(&report)));
    }
    Ok(json_response(&report))
}

/// The sweep's bias-gradient ratio against depth (one line per scale), or else the per-layer
/// gradient norms with the bound, on a log axis.
fn plot(report: &DiagnosticsReport) -> String {
    let sweep = report.sweep.as_deref().unwrap_or_default();
    if sweep.iter().any(|r| r.depth.is_some()) {
        let mut by_scale: Vec<(f64, Vec<(f64, f64)>)> = Vec::new();
        for r in sweep {
            let y = r.first_to_last_bias_grad_ratio.unwrap_or(r.first_to_last_weight_grad_ratio);
            let pt = (r.depth.unwrap_or(0) as f64, y);
            match by_scale.iter_mut().find(|(x, _)| *x == r.scale) {
                Some((_, pts)) => pts.push(pt),
                None => by_scale.push((r.scale, vec![pt])),
            }
        }
        let series: Vec<Series> = by_scale
            .into_iter()
            .map(|(s, points)| Series {
                name: format!("scale {s}"),
                points,
                dashed: false,
            })
            .collect();
        return line_chart(
            "first/last layer bias-gradient ratio vs depth",
            "depth (repeated blocks)",
            "ratio",
            &series,
            true,
        );
    }
    plot_layers(&report.summary.layers)
}

/// The per-layer gradient norms with the bound, on a log axis.
fn plot_layers(layers: &[GradLayer]) -> String {
    let pick = |value: &dyn Fn(&GradLayer) -> Option<f64>| -> Vec<(f64, f64)> {
        layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| value(l).filter(|v| v.is_finite()).map(|v| (i as f64, v)))
            .collect()
    };
    let series = vec![
        Series {
            name: "||dL/dW_i|| measured".into(),
            points: pick(&|l| Some(l.weight_grad.frobenius)),
            dashed: false,
        },
        Series {
            name: "||dL/db_i|| measured".into(),
            points: pick(&|l| l.bias_grad.as_ref().map(|b| b.frobenius)),
            dashed: false,
        },
        Series {
            name: "bound on ||dL/db_i||".into(),
            points: pick(&|l| l.bias_grad_bound),
            dashed: true,
        },
    ];
    line_chart(
        "gradient norm per layer (input to output)",
        "layer with parameters (0 = first)",
        "norm",
        &series,
        true,
    )
}

/// `inputs`: explicit `values` (a multiple of one sample), or a batch drawn from a seed.
pub(crate) fn parse_inputs(req: Option<&InputsRequest>, input_shape: &[u64], cfg: &crate::Config) -> SpecResult<Inputs> {
    let max = cfg.max_tensor_elements as usize;
    let numel: u64 = input_shape.iter().product();
    let Some(r) = req else {
        return Ok(Inputs::Normal { batch: 16, seed: 0 });
    };
    if let Some(v) = &r.values {
        let drawn = [
            ("batch_size", r.batch_size.is_some()),
            ("distribution", r.distribution.is_some()),
            ("bound", r.bound.is_some()),
            ("seed", r.seed.is_some()),
        ];
        if let Some((key, _)) = drawn.iter().find(|(_, given)| *given) {
            return Err(SpecError::invalid(
                child("/inputs", key),
                "belongs to a drawn batch: give values, or batch_size, distribution, bound and seed",
            ));
        }
        let vals = numbers(v, "/inputs/values", max)?;
        if vals.is_empty() || vals.len() as u64 % numel != 0 {
            return Err(SpecError::invalid(
                "/inputs/values",
                format!(
                    "has {} numbers: expected a multiple of the input size {numel} (one sample is {:?})",
                    vals.len(),
                    input_shape
                ),
            ));
        }
        let batch = vals.len() as u64 / numel;
        return Ok(Inputs::Explicit { batch, values: vals });
    }
    let batch = typed::within_u64(r.batch_size.unwrap_or(16), "/inputs/batch_size", 1, cfg.max_batch)?;
    let seed = r.seed.unwrap_or(0);
    Ok(match r.distribution.unwrap_or(Distribution::Normal) {
        Distribution::Uniform => {
            let bound = typed::within(r.bound.unwrap_or(1.0), "/inputs/bound", 0.0, 1e6)?;
            Inputs::Uniform { batch, seed, bound }
        }
        Distribution::Normal => Inputs::Normal { batch, seed },
    })
}

/// The typed report of a network the service reads (also used by the grading endpoint).
pub async fn report(state: &AppState, req: &DiagnosticsRequest) -> ApiResult<DiagnosticsReport> {
    let cfg = state.config.clone();
    let max = cfg.max_tensor_elements as usize;
    let spec = state.model_at(req.model.as_ref(), "/model")?;
    let graph = infer(&spec, "/model")?;
    let init = parse_init(req.init.as_ref(), spec.weights.is_some())?;
    let explicit = parse_parameters(req.parameters.as_ref(), &graph, max)?;
    let inputs = parse_inputs(req.inputs.as_ref(), &spec.input_shape, &cfg)?;
    if let (true, Inputs::Explicit { values, .. }) = (spec.token_ids, &inputs) {
        let vocabulary = crate::torch::diagnostics::token_vocabulary(&graph);
        if let Some(k) = values.iter().position(|&v| v.fract() != 0.0 || v < 0.0 || v >= vocabulary as f64) {
            return Err(SpecError::invalid(
                "/inputs/values",
                format!(
                    "value {k} ({}) is not a token id: the embedding reading the input takes integers 0..={}",
                    values[k],
                    vocabulary - 1
                ),
            )
            .into());
        }
    }
    let batch = match &inputs {
        Inputs::Normal { batch, .. } | Inputs::Uniform { batch, .. } | Inputs::Explicit { batch, .. } => *batch,
    };
    if batch > cfg.max_batch {
        return Err(SpecError::too_large(
            "/inputs",
            "max_batch",
            cfg.max_batch,
            format!("batch of {batch} is over the limit of {}", cfg.max_batch),
        )
        .into());
    }
    let out_numel: u64 = graph.output_numel();
    let objective = match &req.objective {
        None | Some(ObjectiveRequest::Name(_)) => ObjectiveKind::SumOutput,
        Some(ObjectiveRequest::Spec(o)) => {
            let kind = if o.output_unit.is_some() {
                ObjectiveName::OutputUnit
            } else {
                o.kind.unwrap_or(ObjectiveName::SumOutput)
            };
            match kind {
                ObjectiveName::OutputUnit => {
                    let (key, unit) = match (o.output_unit, o.unit) {
                        (Some(u), _) => ("output_unit", u),
                        (None, Some(u)) => ("unit", u),
                        (None, None) => return Err(SpecError::invalid("/objective/unit", "is required").into()),
                    };
                    if unit >= out_numel {
                        return Err(
                            SpecError::invalid(child("/objective", key), format!("must be at most {}, got {unit}", out_numel - 1)).into(),
                        );
                    }
                    ObjectiveKind::OutputUnit(unit)
                }
                ObjectiveName::Mse => {
                    let t = match &o.targets {
                        Some(t) => numbers(t, "/objective/targets", max)?,
                        None => return Err(SpecError::invalid("/objective/targets", "is required for mse").into()),
                    };
                    if t.len() as u64 != batch * out_numel {
                        return Err(SpecError::invalid(
                            "/objective/targets",
                            format!(
                                "has {} numbers; the batch of {batch} outputs of shape{} {} needs {}",
                                t.len(),
                                if graph.outputs.len() > 1 { "s" } else { "" },
                                graph
                                    .output_shapes()
                                    .iter()
                                    .map(|s| format!("{s:?}"))
                                    .collect::<Vec<_>>()
                                    .join(" + "),
                                batch * out_numel
                            ),
                        )
                        .into());
                    }
                    ObjectiveKind::Mse(t)
                }
                ObjectiveName::SumOutput => ObjectiveKind::SumOutput,
            }
        }
    };
    let kind = match req.dtype {
        Some(Precision::Float64) => tch::Kind::Double,
        _ => tch::Kind::Float,
    };
    let (dev, device_note) = device::resolve(req.device.as_deref().unwrap_or("cpu"), "/device")?;
    let range = |v: Option<f64>, key: &str, default: f64, min: f64, max: f64| typed::within(v.unwrap_or(default), key, min, max);
    let t = req.thresholds.as_ref();
    let th = Thresholds {
        vanishing: range(t.and_then(|t| t.vanishing_ratio), "/thresholds/vanishing_ratio", 1e-3, 0.0, 1.0)?,
        exploding: range(t.and_then(|t| t.exploding_ratio), "/thresholds/exploding_ratio", 1e3, 1.0, f64::MAX)?,
        saturation: range(t.and_then(|t| t.saturation), "/thresholds/saturation", 4.0, 0.0, 1e6)?,
        bound_slack: if kind == tch::Kind::Double { 1e-10 } else { 1e-5 },
    };
    let sweep = match &req.sweep {
        None => None,
        Some(o) => {
            if let Some(scales) = &o.scales {
                for (i, &x) in scales.iter().enumerate() {
                    range(Some(x), &child("/sweep/scales", i), 0.0, 0.0, 1e6)?;
                }
            }
            if let Some(depths) = &o.depths {
                if let Some(i) = depths.iter().position(|&d| d > 1000) {
                    return Err(SpecError::invalid(child("/sweep/depths", i), format!("must be at most 1000, got {}", depths[i])).into());
                }
            }
            let depths = o.depths.clone();
            let scales = o.scales.clone();
            if depths.is_some() && spec.graph.is_some() {
                return Err(SpecError::invalid(
                    "/sweep/depths",
                    "a depth sweep repeats a block of the sequential form's layers; this model is a graph (sweep scales, or repeat the nodes yourself)",
                )
                .into());
            }
            let n = spec.layers.len();
            let block = match o.block.as_deref() {
                None => (0usize, 2usize.min(n)),
                Some(&[s, e]) if s < e && e as usize <= n => (s as usize, e as usize),
                Some(&[s, e]) if s >= e => return Err(SpecError::invalid("/sweep/block", "expected [start, end) with start < end").into()),
                Some(&[_, e]) => return Err(SpecError::invalid("/sweep/block", format!("end {e} is past the model's {n} layers")).into()),
                Some(_) => {
                    return Err(SpecError::invalid("/sweep/block", "expected [start, end): the layers repeated for each depth").into())
                }
            };
            if depths.is_none() && scales.is_none() {
                return Err(SpecError::invalid("/sweep", "give depths, scales or both").into());
            }
            let runs = depths.as_ref().map_or(1, Vec::len) * scales.as_ref().map_or(1, Vec::len);
            if runs > 64 {
                return Err(SpecError::too_large("/sweep", "max_sweep_runs", 64, format!("{runs} runs is over the limit of 64")).into());
            }
            if depths.is_some() && !explicit.is_empty() {
                return Err(SpecError::invalid(
                    "/sweep/depths",
                    "a depth sweep changes the layers, so it cannot use explicit parameters",
                )
                .into());
            }
            Some((depths, scales, block))
        }
    };
    let spectral_tolerance = range(
        req.spectral_tolerance,
        "/spectral_tolerance",
        diagnostics::SPECTRAL_TOLERANCE,
        0.0,
        0.1,
    )?;
    check_limits(state, &graph, batch, "/model")?;

    let make = |spec: ModelSpec, init: InitSpec| Request {
        spec,
        init,
        explicit: explicit.clone(),
        inputs: inputs.clone(),
        objective: objective.clone(),
        kind,
        device: dev,
        saturation: th.saturation,
        spectral_tolerance,
    };
    let main = make(spec.clone(), init.clone());
    let report = state
        .run_torch(move || diagnostics::run(&main))
        .await?
        .map_err(|e| SpecError::invalid("", format!("libtorch could not run the model: {e}")))?;
    let summary = summarize(&graph, &report, &th);

    let mut sweep_rows = None;
    if let Some((depths, scales, block)) = sweep {
        let rows: &mut Vec<SweepRow> = sweep_rows.get_or_insert_with(Vec::new);
        for depth in depths.clone().map(|d| d.into_iter().map(Some).collect()).unwrap_or(vec![None]) {
            for scale in scales.clone().map(|s| s.into_iter().map(Some).collect()).unwrap_or(vec![None]) {
                let variant = match depth {
                    Some(d) => with_depth(&spec, block, d),
                    None => spec.clone(),
                };
                let g = infer(&variant, "/sweep").map_err(|e| SpecError::invalid("/sweep", format!("depth {depth:?}: {}", e.message)))?;
                check_limits(state, &g, batch, "/sweep")?;
                let mut i = init.clone();
                if let Some(s) = scale {
                    i.scale = s;
                }
                let r = make(variant.clone(), i);
                let rep = state
                    .run_torch(move || diagnostics::run(&r))
                    .await?
                    .map_err(|e| SpecError::invalid("/sweep", format!("libtorch could not run a sweep variant: {e}")))?;
                let first = rep.params.first().map(|p| p.weight_grad.frobenius).unwrap_or(0.0);
                let last = rep.params.last().map(|p| p.weight_grad.frobenius).unwrap_or(0.0);
                let fb = rep.params.first().and_then(|p| p.bias_grad.as_ref()).map(|b| b.frobenius);
                let lb = rep.params.last().and_then(|p| p.bias_grad.as_ref()).map(|b| b.frobenius);
                rows.push(SweepRow {
                    depth,
                    scale: scale.unwrap_or(init.scale),
                    layers_with_parameters: rep.params.len(),
                    first_to_last_weight_grad_ratio: ratio(first, last),
                    first_to_last_bias_grad_ratio: fb.zip(lb).map(|(a, b)| ratio(a, b)),
                    verdict: summarize(&g, &rep, &th).verdict,
                });
            }
        }
    }

    Ok(DiagnosticsReport {
        summary,
        sweep: sweep_rows,
        model: ModelSummary::of(&graph),
        batch_size: batch,
        thresholds: ThresholdsOut {
            vanishing_ratio: th.vanishing,
            exploding_ratio: th.exploding,
            saturation: th.saturation,
        },
        spectral_tolerance,
        device: device::name(dev),
        device_note,
        dtype: if kind == tch::Kind::Double { "float64" } else { "float32" },
        libtorch_version: device::libtorch_version(),
        millis: (report.millis * 1000.0).round() / 1000.0,
        phases_millis: report.phases.iter().map(|&(k, v)| (k, (v * 1000.0).round() / 1000.0)).collect(),
    })
}
