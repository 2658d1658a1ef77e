//! `{"model": {"torchscript": "<base64>", "input_shape": [...]}}`: a module run as it is, for
//! the two questions that running answers. Gradient diagnostics report per named parameter
//! (PyTorch's names) with the module's own weights; the receptive field of an output unit is
//! measured, the input positions whose gradient is non-zero for these weights and this input.
//! Complexity needs the model's structure: a TorchScript module there is a 422 that says to
//! export ONNX.
use super::diagnostics::{parse_inputs, InputsRequest};
use super::error::ApiResult;
use super::AppState;
use crate::spec::error::child;
use crate::spec::json::{describe, uint, Obj};
use crate::spec::SpecError;
use crate::torch::diagnostics::Inputs;
use crate::torch::{device, script};
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Script {
    pub bytes: Arc<Vec<u8>>,
    pub input_shape: Vec<u64>,
}

/// The request's model when it is a TorchScript module.
pub fn model(req: &Obj, state: &AppState) -> Result<Option<Script>, SpecError> {
    let Some(v @ Value::Object(m)) = req.raw("model") else {
        return Ok(None);
    };
    if !m.contains_key("torchscript") {
        return Ok(None);
    }
    let o = Obj::new(v, "/model")?;
    let text = o
        .opt_str("torchscript")?
        .ok_or_else(|| SpecError::invalid("/model/torchscript", "expected the module's file, base64"))?;
    let shape_ptr = o.at("input_shape");
    let shape = o.array("input_shape")?.ok_or_else(|| {
        SpecError::invalid(
            &shape_ptr,
            "is required with a TorchScript module: one sample's shape, without the batch axis",
        )
    })?;
    if ![1, 3, 4].contains(&shape.len()) {
        return Err(SpecError::invalid(
            &shape_ptr,
            format!("expected [C, H, W], [C, D, H, W] (a volume) or [F], got {} numbers", shape.len()),
        ));
    }
    let input_shape = shape
        .iter()
        .enumerate()
        .map(|(i, v)| uint(v, &child(&shape_ptr, i), 1, state.config.spec.max_dim))
        .collect::<Result<Vec<_>, _>>()?;
    o.finish("torchscript and input_shape")?;
    let bytes = crate::spec::onnx::decode_base64(text, "/model/torchscript")?;
    if !bytes.starts_with(b"PK") {
        return Err(SpecError::invalid(
            "/model/torchscript",
            "is not a TorchScript file (torch.jit.save writes a zip archive); an ONNX file goes in {\"onnx\": ...}",
        ));
    }
    Ok(Some(Script {
        bytes: Arc::new(bytes),
        input_shape,
    }))
}

fn refused(e: String) -> SpecError {
    SpecError::invalid("/model/torchscript", e)
}

/// The request's typed `inputs`, if any.
fn inputs_of(req: &Obj) -> Result<Option<InputsRequest>, SpecError> {
    req.raw("inputs").map(|v| super::typed::read(v.clone(), "/inputs")).transpose()
}

/// A diagnostics request on a TorchScript module, parsed (no borrow of the body is held across
/// the libtorch run).
pub struct DiagnosticsJob {
    script: Script,
    inputs: Inputs,
    kind: tch::Kind,
    device: tch::Device,
    device_note: Option<String>,
}

/// Reads a diagnostics request whose model is a TorchScript module; None for any other model.
pub fn diagnostics_job(req: &Obj, state: &AppState) -> Result<Option<DiagnosticsJob>, SpecError> {
    let Some(s) = model(req, state)? else { return Ok(None) };
    let cfg = state.config.clone();
    let inputs = parse_inputs(inputs_of(req)?.as_ref(), &s.input_shape, &cfg)?;
    let batch = match &inputs {
        Inputs::Normal { batch, .. } | Inputs::Uniform { batch, .. } | Inputs::Explicit { batch, .. } => *batch,
    };
    if batch * s.input_shape.iter().product::<u64>() > cfg.max_run_activations {
        return Err(SpecError::too_large(
            "/inputs",
            "max_run_activations",
            cfg.max_run_activations,
            "the input batch alone is over the activation limit",
        ));
    }
    let kind = match req.choice("dtype", "float32", &["float32", "float64"])? {
        "float64" => tch::Kind::Double,
        _ => tch::Kind::Float,
    };
    let (dev, device_note) = device::resolve(req.str_or("device", "cpu")?, "/device")?;
    req.finish("model, inputs, dtype, device (a TorchScript module: its own weights, the sum of its outputs)")?;
    Ok(Some(DiagnosticsJob {
        script: s,
        inputs,
        kind,
        device: dev,
        device_note,
    }))
}

/// Gradient diagnostics of a TorchScript module: per named parameter.
pub async fn diagnostics(state: &AppState, job: DiagnosticsJob) -> ApiResult<Value> {
    let DiagnosticsJob {
        script: s,
        inputs,
        kind,
        device: dev,
        device_note,
    } = job;
    let shape = s.input_shape.clone();
    let run = state
        .run_torch(move || script::diagnostics(&s.bytes, &shape, &inputs, kind, dev))
        .await?
        .map_err(refused)?;
    // first to last weight (a parameter of rank 2 or more), as the layer table's ratio
    let weights: Vec<f64> = run
        .params
        .iter()
        .filter(|p| p.shape.len() >= 2)
        .filter_map(|p| p.grad_frobenius)
        .collect();
    let last = weights.last().copied().unwrap_or(0.0);
    let ratio = |g: f64| if last == 0.0 { Value::Null } else { json!(g / last) };
    let first_to_last = weights.first().map(|&f| ratio(f)).unwrap_or(Value::Null);
    let verdict = match first_to_last.as_f64() {
        Some(r) if r < 1e-3 => "vanishing",
        Some(r) if r > 1e3 => "exploding",
        Some(_) => "healthy",
        None => "no gradient",
    };
    let params: Vec<Value> = run
        .params
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "shape": p.shape,
                "grad_frobenius": p.grad_frobenius,
                "grad_max_abs": p.grad_max_abs,
                "grad_ratio_to_last_weight": p.grad_frobenius.map(ratio).unwrap_or(Value::Null),
                "weight_frobenius": p.weight_frobenius,
            })
        })
        .collect();
    Ok(json!({
        "model": {"source": "torchscript", "input_shape": s.input_shape, "output_shape": run.output_shapes.first(), "output_shapes": run.output_shapes},
        "parameters": params,
        "first_to_last_weight_grad_ratio": first_to_last,
        "verdict": verdict,
        "thresholds": {"vanishing_ratio": 1e-3, "exploding_ratio": 1e3},
        "objective": "sum_output",
        "loss": run.loss,
        "batch_size": run.batch,
        "dtype": if kind == tch::Kind::Double { "float64" } else { "float32" },
        "device": device::name(dev),
        "device_note": device_note,
        "libtorch_version": device::libtorch_version(),
        "millis": (run.millis * 1000.0).round() / 1000.0,
        "note": "a TorchScript module, run as it is: its own code and weights, the gradient of the sum of its outputs per named parameter (PyTorch's names); the layer table, the g'(x) <= 1/4 bound and activation statistics need the network's structure (give it as a spec or an ONNX file)",
    }))
}

/// A receptive-field request on a TorchScript module, parsed.
pub struct FieldJob {
    script: Script,
    base: u64,
    index: Vec<u64>,
    channel: Option<u64>,
    inputs: Inputs,
}

/// Reads a receptive-field request whose model is a TorchScript module; None for any other.
pub fn field_job(req: &Obj, state: &AppState) -> Result<Option<FieldJob>, SpecError> {
    let Some(s) = model(req, state)? else { return Ok(None) };
    let base = req.u64_in("index_base", Some(0), 0, 1)?;
    let p = req.raw("position").ok_or_else(|| {
        SpecError::invalid(
            "/position",
            "is required with a TorchScript module: {\"index\": [i, j]} (a volume's [k, i, j]) of the output (the module's layers cannot be addressed)",
        )
    })?;
    let po = Obj::new(p, "/position")?;
    if let Some(l) = po.raw("layer") {
        if l != &json!("output") {
            return Err(SpecError::invalid(
                po.at("layer"),
                format!(
                    "a TorchScript module's inner layers cannot be addressed, got {}; leave it out or say \"output\"",
                    describe(l)
                ),
            ));
        }
    }
    let idx = po.array("index")?.ok_or_else(|| po.missing("index"))?;
    let index = idx
        .iter()
        .enumerate()
        .map(|(i, v)| uint(v, &child(&po.at("index"), i), base, 1 << 31).map(|x| x - base))
        .collect::<Result<Vec<_>, _>>()?;
    let channel = po.opt_u64("channel", base, 1 << 31)?.map(|c| c - base);
    po.finish("index, channel, layer (\"output\")")?;
    let inputs = match req.raw("inputs") {
        None => Inputs::Explicit {
            batch: 1,
            values: vec![1.0; s.input_shape.iter().product::<u64>() as usize],
        },
        Some(_) => parse_inputs(inputs_of(req)?.as_ref(), &s.input_shape, &state.config)?,
    };
    req.finish("model, position, index_base, inputs (a TorchScript module)")?;
    Ok(Some(FieldJob {
        script: s,
        base,
        index,
        channel,
        inputs,
    }))
}

/// The measured receptive field of one output unit of a TorchScript module.
pub async fn receptive_field(state: &AppState, job: FieldJob) -> ApiResult<Value> {
    let FieldJob {
        script: s,
        base,
        index,
        channel,
        inputs,
    } = job;
    let shape = s.input_shape.clone();
    let input_shape = s.input_shape.clone();
    let (ix, ch) = (index.clone(), channel);
    let m = state
        .run_torch(move || script::receptive_field(&s.bytes, &shape, &inputs, &ix, ch))
        .await?
        .map_err(|e| {
            SpecError::invalid(
                if e.contains("outside") || e.contains("address") {
                    "/position"
                } else {
                    "/model/torchscript"
                },
                e,
            )
        })?;
    let shift = |r: &Vec<[i64; 2]>| -> Vec<[i64; 2]> { r.iter().map(|[a, b]| [a + base as i64, b + base as i64]).collect() };
    let mut answer = json!({
        "model": {"source": "torchscript", "input_shape": input_shape, "output_shape": m.output_shape},
        "index_base": base,
        "position": {
            "layer": "output",
            "index": index.iter().map(|i| i + base).collect::<Vec<_>>(),
            "channel": channel.map(|c| c + base),
            "input_channels": shift(&m.channels),
            "input_rows": shift(&m.rows),
            "input_cols": shift(&m.cols),
            "measured": true,
        },
        "note": "measured: the input positions whose gradient is non-zero for this unit, back-propagated through the module's own weights at this input (all ones unless inputs are given); a weight or an activation that is exactly zero hides a dependence the architecture has",
    });
    if input_shape.len() == 4 {
        answer["position"]["input_slices"] = json!(shift(&m.slices));
    }
    Ok(answer)
}
