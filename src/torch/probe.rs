//! Checks a receptive-field answer by back-propagating one output unit through a probe copy of
//! the network (see [`Mode::Probe`]) and reading which input positions got a non-zero gradient.
use super::net::{Init, InitSpec, Mode, Net};
use crate::analysis::intervals::IntervalSet;
use crate::analysis::receptive_field::chain_to;
use crate::spec::{infer, ModelSpec};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// Input channels, rows and columns with a non-zero gradient (features for flat inputs).
    pub axes: Vec<IntervalSet>,
    /// Gradients overflowed float64 (astronomically many paths): nothing can be concluded.
    pub overflow: bool,
    pub millis: f64,
}

/// Indices where `mask` is true, as an interval set.
pub fn mask_to_set(mask: &[bool]) -> IntervalSet {
    let mut ranges = Vec::new();
    let mut start = None;
    for (i, &m) in mask.iter().chain(std::iter::once(&false)).enumerate() {
        match (m, start) {
            (true, None) => start = Some(i as u64),
            (false, Some(s)) => {
                ranges.push((s, i as u64 - 1));
                start = None;
            }
            _ => {}
        }
    }
    IntervalSet::from_ranges(ranges)
}

/// `target` is a resolved layer path; `index` zero-based; `channel` None means all channels.
pub fn probe(spec: &ModelSpec, target: &str, index: &[u64], channel: Option<u64>, device: Device) -> Result<ProbeResult, String> {
    let started = std::time::Instant::now();
    let graph = infer(spec, "").map_err(|e| e.to_string())?;
    let chain = chain_to(&graph, &serde_json::Value::String(target.to_string()), "").map_err(|e| e.to_string())?;
    let init = InitSpec {
        init: Init::PytorchDefault,
        scale: 1.0,
        seed: 0,
    };
    let net = Net::build(&graph, Mode::Probe, &init, &HashMap::new(), Kind::Double, device);
    let mut shape: Vec<i64> = vec![1];
    shape.extend(spec.input_shape.iter().map(|&d| d as i64));
    let x = Tensor::ones(shape.as_slice(), (Kind::Double, device)).set_requires_grad(true);
    let y = net.forward(&chain.steps, x.shallow_clone(), &mut |_, _, _| {}).select(0, 0);
    let unit = if index.len() == 2 {
        let column = y.select(1, index[0] as i64).select(1, index[1] as i64);
        match channel {
            Some(c) => column.select(0, c as i64),
            None => column.sum(Kind::Double),
        }
    } else {
        y.select(0, index[0] as i64)
    };
    unit.backward();
    let g = x.grad().select(0, 0);
    let overflow = !bool::try_from(g.isfinite().all()).unwrap_or(false);
    let nz = g.ne(0.0);
    let dims = spec.input_shape.len() as i64;
    let axes = (0..dims)
        .map(|a| {
            let others: Vec<i64> = (0..dims).filter(|&d| d != a).collect();
            let m = if others.is_empty() {
                nz.shallow_clone()
            } else {
                nz.any_dims(others.as_slice(), false)
            };
            let bools: Vec<bool> = super::to_f64_vec(&m).iter().map(|v| *v != 0.0).collect();
            mask_to_set(&bools)
        })
        .collect();
    Ok(ProbeResult {
        axes,
        overflow,
        millis: started.elapsed().as_secs_f64() * 1e3,
    })
}
