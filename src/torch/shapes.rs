//! Checks shape inference and parameter counts against libtorch: builds the real layers with
//! zero-filled parameter tensors and runs an empty batch through them.
use super::net::{Init, InitSpec, Mode, Net};
use crate::spec::{infer, ModelSpec};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct ExecutedShapes {
    /// Output shape (batch axis dropped) of every node that ran, by path.
    pub shapes: HashMap<String, Vec<u64>>,
    /// numel of every parameter tensor, by layer path.
    pub params: HashMap<String, u64>,
    pub total_params: u64,
    pub millis: f64,
}

pub fn execute(spec: &ModelSpec, device: Device) -> Result<ExecutedShapes, String> {
    let started = std::time::Instant::now();
    let _guard = tch::no_grad_guard();
    let graph = infer(spec, "").map_err(|e| e.to_string())?;
    let init = InitSpec {
        init: Init::PytorchDefault,
        scale: 1.0,
        seed: 0,
    };
    let net = Net::build(&graph, Mode::Shapes, &init, &HashMap::new(), Kind::Float, device);
    let mut params: HashMap<String, u64> = HashMap::new();
    for (path, _, t) in net.parameter_tensors() {
        *params.entry(path.to_string()).or_default() += t.numel() as u64;
    }
    let total_params = params.values().sum();
    let mut shape: Vec<i64> = vec![0];
    shape.extend(spec.input_shape.iter().map(|&d| d as i64));
    let x = Tensor::zeros(shape.as_slice(), (if spec.token_ids { Kind::Int64 } else { Kind::Float }, device));
    let mut shapes = HashMap::new();
    let _ = net.forward(&graph, x, &mut |node, _, y| {
        shapes.insert(node.path.clone(), y.size()[1..].iter().map(|&d| d as u64).collect());
    });
    Ok(ExecutedShapes {
        shapes,
        params,
        total_params,
        millis: started.elapsed().as_secs_f64() * 1e3,
    })
}
