//! `POST /v1/receptive-field`.
use super::body::JsonBody;
use super::error::ApiResult;
use super::report::{Inclusive, ModelSummary};
use super::typed::{self, deserialize_by_kind, ByKind};
use super::{json_response, AppState};
use crate::analysis::intervals::IntervalSet;
use crate::analysis::receptive_field::DependenceSet;
use crate::analysis::receptive_field::{chain_to, dependence, layer_table, maps_of, node_rfs, volume_maps, Chain, LayerRef, LayerRf, Rf};
use crate::spec::json::Obj;
use crate::spec::{infer, Graph, SpecError};
use crate::torch::{device, probe};
use axum::extract::State;
use axum::response::Response;
use serde::{de, Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The body of `POST /v1/receptive-field` for a network the service reads.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RfRequest {
    #[serde(default)]
    #[schema(schema_with = super::report::model_schema)]
    pub model: Option<Value>,
    /// One output unit whose exact input set is asked for (and verified).
    #[serde(default)]
    pub position: Option<PositionRequest>,
    /// Positions counted from 0 or from 1.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1, default = 0)]
    pub index_base: Option<u64>,
    /// Verify the unit's exact set by back-propagation in libtorch.
    #[serde(default)]
    #[schema(default = true)]
    pub verify: Option<bool>,
    /// cpu, cuda, cuda:N or auto (for the verification probe).
    #[serde(default)]
    #[schema(default = "cpu")]
    pub device: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PositionRequest {
    /// Top-level index, dotted path or layer name; default the last layer.
    #[serde(default)]
    pub layer: Option<LayerRef>,
    /// `[i, j]` for image outputs, `[i]` for a position of a 1-D signal, `[t]` for a token, `[k]`
    /// for flat outputs, in index_base; default the centre.
    #[serde(default)]
    pub index: Option<Vec<u64>>,
    /// One output channel (of an image or a signal; a token's feature); default every channel.
    #[serde(default)]
    pub channel: Option<u64>,
}

impl ByKind for LayerRef {
    const EXPECTING: &'static str = "a layer index, path or name";
    fn from_number<E: de::Error>(v: f64) -> Result<Self, E> {
        if v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64 {
            Ok(LayerRef::Index(v as u64))
        } else {
            Err(E::invalid_value(
                typed::number(v),
                &"a layer index (a whole number from 0), path or name",
            ))
        }
    }
    fn from_str<E: de::Error>(v: &str) -> Result<Self, E> {
        Ok(LayerRef::Name(v.to_string()))
    }
}

deserialize_by_kind!(LayerRef);

pub async fn handle(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let job = super::script::field_job(&Obj::new(&body, "")?, &state)?;
    if let Some(job) = job {
        return Ok(json_response(&super::script::receptive_field(&state, job).await?));
    }
    let req: RfRequest = typed::read(body, "")?;
    let answer = report(&state, &req).await?;
    // serialized straight from the typed table, not through a Value tree
    let mut out = json_response(&answer);
    super::cache::mark_unless_verified(&mut out, answer.verification.is_some());
    Ok(out)
}

/// What `POST /v1/receptive-field` answers for a network it can read (keys in alphabetical
/// order, as they always were).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RfReport {
    /// How to read the ranges.
    pub conventions: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_note: Option<String>,
    pub index_base: u64,
    pub layers: Vec<LayerRf>,
    pub model: ModelSummary,
    /// The exact dependence of the requested unit (absent when no `position` was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<UnitReport>,
    /// The libtorch probe of the unit (absent with `verify: false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<ProbeCheck>,
}

/// Inclusive `[first, last]` ranges in the requested index base.
pub type Ranges = Vec<Inclusive>;

/// The exact input positions one output unit depends on, with its affine range where there is one.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UnitReport {
    pub layer: String,
    pub name: Option<String>,
    pub index: Vec<u64>,
    pub channel: Option<u64>,
    /// True only if the union of boxes grew past 256 and was replaced by its hull.
    pub exact_is_approximate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_channels: Option<Ranges>,
    /// A volume input's slices (depth axis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_slices: Option<Ranges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_rows: Option<Ranges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_cols: Option<Ranges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_features: Option<Ranges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<Ranges>,
    /// A 1-D signal input's positions (with `input_channels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_positions: Option<Ranges>,
    /// The smallest box around the exact set (images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tight_box: Option<Span2>,
    /// The unclipped affine rows and columns (images; null where there is no affine range).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AffineBox>)]
    pub affine: Option<Option<AffineBox>>,
    /// The affine range clipped to the image (null on an axis it misses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipped: Option<Span2>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padding: Option<PaddingShare>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tight_box_equals_clipped: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<String>>,
}

/// Rows and columns (and a volume's slices), each an inclusive `[first, last]` or null when
/// empty.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Span2 {
    /// Volumes only: the depth axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices: Option<Option<Inclusive>>,
    pub rows: Option<Inclusive>,
    pub cols: Option<Inclusive>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AffineBox {
    /// Volumes only: the depth axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices: Option<Inclusive>,
    pub rows: Inclusive,
    pub cols: Inclusive,
}

/// How much of the affine range lies in the padding, outside the image (or volume).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PaddingShare {
    /// Volumes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices_outside_volume: Option<u64>,
    pub rows_outside_image: u64,
    pub cols_outside_image: u64,
    pub fraction_outside_image: f64,
}

/// The libtorch probe of one unit. When it did not run, `ran` is false and `reason` says why.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ProbeCheck {
    pub ran: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<&'static str>,
    /// Channels (features) of the probe's widest tensor, after merging channels that depend on
    /// the same inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_channels: Option<u64>,
    /// Channels (features) of the real network's widest tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_channels: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<ProbedUnit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub libtorch_version: Option<&'static str>,
    /// The input positions with a non-zero gradient, per axis (channels, rows, cols; tokens,
    /// features).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executed: Option<BTreeMap<String, Ranges>>,
    /// The element type the probe ran in: float32 where every coefficient of its stand-ins is a
    /// whole number (its backward seeded with 2^-120, so that no path count underflows), float64
    /// otherwise or when float32's gradients were not finite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<&'static str>,
    /// The probe's values grew past float64's range (then it cannot agree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<bool>,
    /// The probed set equals the analytic exact set on every axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agrees: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub millis: Option<f64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProbedUnit {
    pub layer: String,
    pub index: Vec<u64>,
    pub channel: Option<u64>,
}

impl ProbeCheck {
    fn skipped(reason: String) -> ProbeCheck {
        ProbeCheck {
            ran: false,
            reason: Some(reason),
            ..Default::default()
        }
    }
}

/// The typed report of a network the service reads (also used by the grading endpoint).
pub async fn report(state: &AppState, req: &RfRequest) -> ApiResult<RfReport> {
    let spec = state.model_at(req.model.as_ref(), "/model")?;
    let base = match req.index_base {
        None => 0,
        Some(b @ (0 | 1)) => b,
        Some(b) => return Err(SpecError::invalid("/index_base", format!("must be 0 or 1, got {b}")).into()),
    };
    let verify = req.verify.unwrap_or(true);
    let device_name = req.device.as_deref().unwrap_or("cpu");
    let (dev, device_note) = device::resolve(device_name, "/device")?;

    let graph = infer(&spec, "/model")?;
    let rfs = node_rfs(&graph);
    let layers = layer_table(&graph, &rfs, base);

    // The unit to answer about (and to verify): the requested one, or the centre of the last layer.
    let requested = req.position.is_some();
    let none = PositionRequest::default();
    let pos = req.position.as_ref().unwrap_or(&none);
    let chain = chain_to(&graph, pos.layer.as_ref(), "/position/layer")?;
    let out = chain.target.output.clone();
    let spatial_out = out.len() >= 3;
    let signal_out = chain.target.signal;
    let index0: Vec<u64> = match &pos.index {
        Some(ix) => {
            let want = if spatial_out { out.len() - 1 } else { 1 };
            if ix.len() != want {
                return Err(SpecError::invalid(
                    "/position/index",
                    format!(
                        "layer {} has output shape {out:?}: give {}",
                        chain.target.path,
                        match out.len() {
                            4 => "[k, i, j] (slice, row, column)",
                            3 => "[i, j]",
                            2 if signal_out => "[i] (one position of the signal; \"channel\" picks one channel)",
                            2 => "[t] (one token; \"channel\" picks one of its features)",
                            _ => "[k] (one feature)",
                        }
                    ),
                )
                .into());
            }
            let dims = if spatial_out || signal_out { &out[1..] } else { &out[..1] };
            ix.iter()
                .zip(dims)
                .enumerate()
                .map(|(k, (&i, &n))| {
                    if i < base || i - base >= n {
                        Err(SpecError::invalid(
                            format!("/position/index/{k}"),
                            format!(
                                "{i} is outside the layer's output: valid {}-based indices are {}..={}",
                                base,
                                base,
                                n - 1 + base
                            ),
                        ))
                    } else {
                        Ok(i - base)
                    }
                })
                .collect::<Result<_, _>>()?
        }
        None => {
            if spatial_out {
                out[1..].iter().map(|n| n / 2).collect()
            } else if signal_out {
                vec![out[1] / 2]
            } else {
                vec![out[0] / 2]
            }
        }
    };
    if let Some(c) = pos.channel {
        let channels = match out.len() {
            3 | 4 => out[0],
            2 if signal_out => out[0],
            2 => out[1],
            _ => 0,
        };
        if c >= channels {
            return Err(SpecError::invalid(
                "/position/channel",
                format!("layer {} has output shape {out:?}: no channel {c}", chain.target.path),
            )
            .into());
        }
    }
    // the exact set, when it is asked for or verified
    let (position, verification) = if requested || verify {
        let dep = dependence(&chain, &index0, pos.channel);
        let unit = requested.then(|| describe_unit(&graph, &chain, &rfs[chain.id].rf, &index0, pos.channel, &dep, base));
        let verification = if verify {
            Some(verify_unit(state, &graph, &chain, &index0, pos.channel, &dep, dev, base).await?)
        } else {
            None
        };
        (unit, verification)
    } else {
        (None, None)
    };
    Ok(RfReport {
        conventions:
            "output index i (rows) / j (columns) sees input rows m / columns n in scale*i+lo ..= scale*i+hi, before clipping to the image; in a volume [C, D, H, W], output slice k sees input slices p (`depth`) the same way; in a 1-D signal [C, L], output position i sees input positions m (`length`); in a sequence, output token i sees the input tokens t its `tokens.text` gives",
        device_note,
        index_base: base,
        layers,
        model: ModelSummary::of(&graph),
        position,
        verification,
    })
}

fn ranges(s: &IntervalSet, base: u64) -> Ranges {
    s.ranges()
        .iter()
        .map(|(a, b)| Inclusive([(a + base) as i64, (b + base) as i64]))
        .collect()
}

fn span(s: &IntervalSet, base: u64) -> Option<Inclusive> {
    Some(Inclusive([s.min()? as i64 + base as i64, s.max()? as i64 + base as i64]))
}

/// The exact answer for one unit, with its tight box, clipped range and padding share; `rf` is
/// the map of the unit's layer.
fn describe_unit(graph: &Graph, chain: &Chain, rf: &Rf, index: &[u64], channel: Option<u64>, dep: &DependenceSet, base: u64) -> UnitReport {
    let input = graph.input();
    let mut v = UnitReport {
        layer: chain.target.path.clone(),
        name: chain.target.layer.name.clone(),
        index: index.iter().map(|i| i + base).collect(),
        channel,
        exact_is_approximate: dep.approximate,
        input_channels: None,
        input_slices: None,
        input_rows: None,
        input_cols: None,
        input_features: None,
        input_tokens: None,
        input_positions: None,
        tight_box: None,
        affine: None,
        clipped: None,
        padding: None,
        tight_box_equals_clipped: None,
        notes: None,
    };
    if graph.spec.token_ids {
        v.input_tokens = Some(ranges(&dep.axis(0), base));
        return v;
    }
    if graph.input_signal {
        v.input_channels = Some(ranges(&dep.axis(0), base));
        let positions = dep.axis(1);
        if !positions.is_contiguous() {
            v.notes = Some(vec![
                "the unit's input positions have holes (strides or dilation skip positions)".into()
            ]);
        }
        v.input_positions = Some(ranges(&positions, base));
        return v;
    }
    if input.len() == 2 {
        v.input_tokens = Some(ranges(&dep.axis(0), base));
        v.input_features = Some(ranges(&dep.axis(1), base));
        return v;
    }
    if input.len() == 1 {
        v.input_features = Some(ranges(&dep.axis(0), base));
        return v;
    }
    // an image's rows and columns, a volume's slices too: `sp` spatial axes after the channels
    let sp = input.len() - 1;
    let axes: Vec<IntervalSet> = (1..=sp).map(|a| dep.axis(a)).collect();
    let volume = sp == 3;
    // a volume's depth, then rows and columns
    let (d, [rows, cols]) = if volume {
        (Some(&axes[0]), [&axes[1], &axes[2]])
    } else {
        (None, [&axes[0], &axes[1]])
    };
    v.input_channels = Some(ranges(&dep.axis(0), base));
    v.input_slices = d.map(|d| ranges(d, base));
    v.input_rows = Some(ranges(rows, base));
    v.input_cols = Some(ranges(cols, base));
    v.tight_box = Some(Span2 {
        slices: d.map(|d| span(d, base)),
        rows: span(rows, base),
        cols: span(cols, base),
    });
    let mut notes: Vec<String> = Vec::new();
    if axes.iter().any(|a| !a.is_contiguous()) {
        notes.push(format!(
            "the unit's input {} have holes (strides or dilation skip positions)",
            if volume { "slices/rows/columns" } else { "rows/columns" }
        ));
    }
    // the unit's range on each spatial axis, integer-affine or with floors
    let unit_range: Option<Vec<(i64, i64)>> = match (volume_maps(rf), maps_of(rf)) {
        (Some(m), _) if index.len() == 3 => Some((0..3).map(|a| m[a].at(index[a])).collect()),
        (_, Some(m)) if index.len() == 2 && !volume => Some((0..2).map(|a| m[a].at(index[a])).collect()),
        _ => None,
    };
    match (unit_range, rf) {
        (Some(r), _) => {
            let size = |(lo, hi): (i64, i64)| (hi as i128 - lo as i128 + 1).max(0) as u64;
            let overlap =
                |(lo, hi): (i64, i64), n: i64| -> Option<(i64, i64)> { (lo.max(0) <= hi.min(n - 1)).then(|| (lo.max(0), hi.min(n - 1))) };
            let clipped: Vec<Option<(i64, i64)>> = (0..sp).map(|a| overlap(r[a], input[a + 1] as i64)).collect();
            let inside = |c: Option<(i64, i64)>| c.map(|(a, b)| (b - a + 1) as u64).unwrap_or(0);
            let outside: Vec<u64> = (0..sp).map(|a| size(r[a]) - inside(clipped[a])).collect();
            let whole: f64 = r.iter().map(|&x| size(x) as f64).product();
            let inside_all: f64 = clipped.iter().map(|&c| inside(c) as f64).product();
            let b = base as i64;
            let based = |c: Option<(i64, i64)>| c.map(|(x, y)| Inclusive([x + b, y + b]));
            let at = |x: (i64, i64)| Inclusive([x.0 + b, x.1 + b]);
            let k = sp - 2; // the first of rows and columns
            v.affine = Some(Some(AffineBox {
                slices: volume.then(|| at(r[0])),
                rows: at(r[k]),
                cols: at(r[k + 1]),
            }));
            v.clipped = Some(Span2 {
                slices: volume.then(|| based(clipped[0])),
                rows: based(clipped[k]),
                cols: based(clipped[k + 1]),
            });
            v.padding = Some(PaddingShare {
                slices_outside_volume: volume.then(|| outside[0]),
                rows_outside_image: outside[k],
                cols_outside_image: outside[k + 1],
                fraction_outside_image: ((1.0 - inside_all / whole) * 1e6).round() / 1e6,
            });
            let same = |s: &IntervalSet, c: Option<(i64, i64)>| match c {
                Some((x, y)) => s.min() == Some(x as u64) && s.max() == Some(y as u64),
                None => s.is_empty(),
            };
            let within = |s: &IntervalSet, c: Option<(i64, i64)>| match (s.min(), s.max(), c) {
                (Some(a), Some(b), Some((x, y))) => a as i64 >= x && b as i64 <= y,
                (None, _, _) => true,
                _ => false,
            };
            if !(0..sp).all(|a| within(&axes[a], clipped[a])) {
                notes.push(
                    "the exact set reaches outside the clipped range: reflect, replicate or circular padding reads rows of the image again where the range has padding"
                        .into(),
                );
            }
            let tight_equal = (0..sp).all(|a| same(&axes[a], clipped[a]));
            v.tight_box_equals_clipped = Some(tight_equal);
            if !tight_equal {
                notes.push(
                    "the exact dependence is smaller than the clipped affine range (near the border, or windows that never reach it)"
                        .into(),
                );
            }
        }
        (_, Rf::NotAffine(why)) => {
            v.affine = Some(None);
            notes.push(format!("no affine range: {why}"));
        }
        _ => v.affine = Some(None),
    }
    v.notes = Some(notes);
    v
}

const SEQUENCE_PROBE: &str = "a probe copy of the whole network in float64 (all-ones weights, no biases; an embedding copies its token into every feature; attention and recurrent layers become sums over every feature of the tokens each output reads: all of them, the earlier ones under a causal mask or in a forward direction, the later ones in a backward direction; normalizations and softmax sums over what they couple; a matmul the sum of each operand times ones; a causal mask written by hand fills 0, and where it put -inf the softmax after it is 0, as in the network; identity activations and batchnorm; every pooling a summing window, the real kernels, strides, padding and dilation on every axis of an image or volume); the chosen output unit was back-propagated and the input elements (tokens, features, positions) with a non-zero gradient were read off";

#[allow(clippy::too_many_arguments)]
async fn verify_unit(
    state: &AppState,
    graph: &Graph<'_>,
    chain: &Chain<'_, '_>,
    index: &[u64],
    channel: Option<u64>,
    dep: &DependenceSet,
    dev: tch::Device,
    base: u64,
) -> ApiResult<ProbeCheck> {
    // Bound the probe's cost before running it: forward + backward in float64 at batch 1.
    let totals = super::run_size(graph, 1)?;
    let cfg = &state.config;
    for (name, value, limit) in [
        ("max_run_macs", totals.macs, cfg.max_run_macs),
        ("max_run_activations", totals.output_elements, cfg.max_run_activations),
    ] {
        if value > limit as u128 {
            return Ok(ProbeCheck::skipped(format!(
                "skipped: the probe would need {value} ({name}), over the limit of {limit}; the analytic answer stands alone"
            )));
        }
    }
    let spec = graph.spec.clone();
    let target = chain.target.path.clone();
    let idx = index.to_vec();
    let result = state.run_check(move || probe::probe(&spec, &target, &idx, channel, dev)).await?;
    let r = match result {
        Ok(r) => r,
        Err(e) => return Ok(ProbeCheck::skipped(format!("libtorch could not run the probe: {e}"))),
    };
    let analytic: Vec<IntervalSet> = (0..graph.input().len()).map(|a| dep.axis(a)).collect();
    let agrees = !r.overflow && analytic == r.axes;
    let names: &[&str] = match graph.input().len() {
        4 => &["channels", "slices", "rows", "cols"],
        3 => &["channels", "rows", "cols"],
        2 if graph.input_signal => &["channels", "positions"],
        _ if graph.spec.token_ids => &["tokens"],
        2 => &["tokens", "features"],
        _ => &["features"],
    };
    let sequence = probe::whole_network_probe(graph);
    let executed = names.iter().zip(&r.axes).map(|(n, s)| (n.to_string(), ranges(s, base))).collect();
    Ok(ProbeCheck {
        ran: true,
        reason: None,
        what: Some(if sequence {
            SEQUENCE_PROBE
        } else {
            "a probe copy of the network (all-ones weights, no biases, every pooling as a summing window, identity activations and batchnorm, products of tensors as sums; the real kernels, strides, padding and dilation, and every input channel; each layer's channels merged into the classes of channels that depend on the same inputs, which changes no path), in float32 where every coefficient is a whole number (the backward seeded with 2^-120, so that every path count stays between float32's smallest normal number and its largest; float64 where one is not, or where float32's gradients came out non-finite: see `dtype`); the chosen output unit was back-propagated and the input positions with a non-zero gradient were read off"
        }),
        probe_channels: Some(r.probe_width as u64),
        network_channels: Some(r.network_width as u64),
        unit: Some(ProbedUnit {
            layer: chain.target.path.clone(),
            index: index.iter().map(|i| i + base).collect(),
            channel,
        }),
        device: Some(device::name(dev)),
        libtorch_version: Some(device::libtorch_version()),
        executed: Some(executed),
        dtype: Some(r.dtype),
        overflow: Some(r.overflow),
        agrees: Some(agrees),
        millis: Some((r.millis * 1000.0).round() / 1000.0),
    })
}
