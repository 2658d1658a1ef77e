//! TorchScript modules (`torch.jit.script` / `torch.jit.trace` output) run as they are: their
//! own code and weights, loaded by libtorch (tch's `CModule`). Two questions are answered by
//! running them: gradients per named parameter (PyTorch's names), and which input positions one
//! output unit depends on, measured by back-propagation for these weights and this input.
use super::diagnostics::{input_values, Inputs};
use tch::{CModule, Device, Kind, Tensor};

pub struct ParamGrad {
    pub name: String,
    pub shape: Vec<i64>,
    pub grad_frobenius: Option<f64>,
    pub grad_max_abs: Option<f64>,
    pub weight_frobenius: f64,
}

pub struct Run {
    pub params: Vec<ParamGrad>,
    /// Each output tensor's shape per sample (a tuple or list gives several).
    pub output_shapes: Vec<Vec<i64>>,
    pub loss: f64,
    pub batch: u64,
    pub millis: f64,
}

fn load(bytes: &[u8], kind: Kind, device: Device) -> Result<CModule, String> {
    let mut reader = std::io::Cursor::new(bytes);
    let mut m = CModule::load_data_on_device(&mut reader, device)
        .map_err(|e| format!("is not a TorchScript module libtorch can load ({})", first_line(&e.to_string())))?;
    m.set_eval();
    m.to(device, kind, false);
    Ok(m)
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(400).collect()
}

/// The module's output tensors for `x`: one, or those of a tuple or list, in order.
fn outputs(m: &CModule, x: &Tensor) -> Result<Vec<Tensor>, String> {
    let out = m
        .forward_is(&[tch::IValue::Tensor(x.shallow_clone())])
        .map_err(|e| format!("the module raised in forward: {}", first_line(&e.to_string())))?;
    let mut parts = Vec::new();
    collect(&out, &mut parts)?;
    if parts.is_empty() {
        return Err("the module returned no tensor".into());
    }
    Ok(parts)
}

/// The module's outputs for `x` flattened per sample and joined, with each one's shape.
fn forward(m: &CModule, x: &Tensor) -> Result<(Tensor, Vec<Vec<i64>>), String> {
    let parts = outputs(m, x)?;
    let n = x.size()[0];
    let shapes = parts.iter().map(|t| t.size()[1..].to_vec()).collect();
    Ok((
        Tensor::cat(&parts.iter().map(|t| t.reshape([n, -1])).collect::<Vec<_>>(), 1),
        shapes,
    ))
}

fn collect(v: &tch::IValue, out: &mut Vec<Tensor>) -> Result<(), String> {
    match v {
        tch::IValue::Tensor(t) => out.push(t.shallow_clone()),
        tch::IValue::Tuple(items) | tch::IValue::GenericList(items) => {
            for i in items {
                collect(i, out)?;
            }
        }
        tch::IValue::TensorList(ts) => out.extend(ts.iter().map(|t| t.shallow_clone())),
        other => return Err(format!("the module returned {other:?}, not tensors")),
    }
    Ok(())
}

/// Forward and backward of the sum of every output, with the module's own weights.
pub fn diagnostics(bytes: &[u8], input_shape: &[u64], inputs: &Inputs, kind: Kind, device: Device) -> Result<Run, String> {
    let started = std::time::Instant::now();
    let m = load(bytes, kind, device)?;
    let numel: u64 = input_shape.iter().product();
    let (batch, x) = input_values(inputs, numel as usize);
    let mut shape = vec![batch as i64];
    shape.extend(input_shape.iter().map(|&d| d as i64));
    let x = x.reshape(shape.as_slice()).to_kind(kind).to_device(device);
    let params = m
        .named_parameters()
        .map_err(|e| format!("cannot read the module's parameters: {e}"))?;
    for (_, p) in &params {
        let _ = p.shallow_clone().requires_grad_(true);
        let g = p.grad();
        if g.defined() {
            let _ = g.shallow_clone().zero_();
        }
    }
    let (y, output_shapes) = forward(&m, &x)?;
    let loss = y.sum(Kind::Double);
    if loss.requires_grad() {
        loss.f_backward()
            .map_err(|e| format!("backward failed: {}", first_line(&e.to_string())))?;
    }
    let rows = params
        .iter()
        .map(|(name, p)| {
            let g = p.grad();
            let (fro, max) = if g.defined() {
                (
                    Some(g.to_kind(Kind::Double).norm().double_value(&[])),
                    Some(g.abs().max().to_kind(Kind::Double).double_value(&[])),
                )
            } else {
                (None, None)
            };
            ParamGrad {
                name: name.clone(),
                shape: p.size(),
                grad_frobenius: fro,
                grad_max_abs: max,
                weight_frobenius: p.detach().to_kind(Kind::Double).norm().double_value(&[]),
            }
        })
        .collect();
    Ok(Run {
        params: rows,
        output_shapes,
        loss: loss.double_value(&[]),
        batch,
        millis: started.elapsed().as_secs_f64() * 1e3,
    })
}

pub struct Measured {
    pub output_shape: Vec<i64>,
    /// Non-zero input-gradient positions: channels, rows, columns (each a list of ranges), or
    /// features for a flat input.
    pub channels: Vec<[i64; 2]>,
    /// A volume input's slices (empty otherwise).
    pub slices: Vec<[i64; 2]>,
    pub rows: Vec<[i64; 2]>,
    pub cols: Vec<[i64; 2]>,
}

fn ranges(mask: &[bool]) -> Vec<[i64; 2]> {
    let mut out: Vec<[i64; 2]> = Vec::new();
    for (i, &on) in mask.iter().enumerate() {
        if !on {
            continue;
        }
        match out.last_mut() {
            Some(r) if r[1] == i as i64 - 1 => r[1] = i as i64,
            _ => out.push([i as i64, i as i64]),
        }
    }
    out
}

/// The input positions whose gradient is non-zero for one output unit (the unit at `index` of
/// the output map, summed over channels unless one is given), for one input sample.
pub fn receptive_field(
    bytes: &[u8],
    input_shape: &[u64],
    inputs: &Inputs,
    index: &[u64],
    channel: Option<u64>,
) -> Result<Measured, String> {
    let m = load(bytes, Kind::Double, Device::Cpu)?;
    let numel: u64 = input_shape.iter().product();
    let (_, x) = input_values(inputs, numel as usize);
    let mut shape = vec![1i64];
    shape.extend(input_shape.iter().map(|&d| d as i64));
    let x = x
        .narrow(0, 0, numel as i64)
        .reshape(shape.as_slice())
        .to_kind(Kind::Double)
        .set_requires_grad(true);
    // the unit is one of the first output's
    let y = outputs(&m, &x)?.swap_remove(0);
    let out_shape = y.size()[1..].to_vec();
    let unit = match (out_shape.len(), index) {
        // an image's row and column, a volume's slice too
        (3, [_, _]) | (4, [_, _, _]) => {
            if index.iter().zip(&out_shape[1..]).any(|(&i, &n)| i as i64 >= n) {
                return Err(format!("index {index:?} is outside the output map {out_shape:?}"));
            }
            let col = index.iter().fold(y.get(0), |t, &i| t.select(1, i as i64));
            match channel {
                Some(c) if (c as i64) < out_shape[0] => col.get(c as i64),
                Some(c) => return Err(format!("channel {c} is outside the output's {} channels", out_shape[0])),
                None => col.sum(Kind::Double),
            }
        }
        (1, [k]) if (*k as i64) < out_shape[0] => y.get(0).get(*k as i64),
        _ => return Err(format!("index {index:?} does not address the output of shape {out_shape:?}")),
    };
    let g = Tensor::f_run_backward(&[unit], &[&x], false, false).map_err(|e| format!("backward failed: {}", first_line(&e.to_string())))?;
    let nz = g[0].get(0).ne(0.0);
    let axis_mask = |keep: i64| -> Vec<bool> {
        let dims: Vec<i64> = (0..nz.dim() as i64).filter(|&d| d != keep).collect();
        let t = if dims.is_empty() {
            nz.shallow_clone()
        } else {
            nz.any_dims(dims.as_slice(), false)
        };
        Vec::<bool>::try_from(t.to_kind(Kind::Bool)).unwrap_or_default()
    };
    let (channels, slices, rows, cols) = match input_shape.len() {
        4 => (
            ranges(&axis_mask(0)),
            ranges(&axis_mask(1)),
            ranges(&axis_mask(2)),
            ranges(&axis_mask(3)),
        ),
        3 => (ranges(&axis_mask(0)), Vec::new(), ranges(&axis_mask(1)), ranges(&axis_mask(2))),
        _ => (ranges(&axis_mask(0)), Vec::new(), Vec::new(), Vec::new()),
    };
    Ok(Measured {
        output_shape: out_shape,
        channels,
        slices,
        rows,
        cols,
    })
}
