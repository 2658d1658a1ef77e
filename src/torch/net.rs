//! Builds a shape-inferred [`Graph`] as libtorch tensors and runs it.
//!
//! Parameters are generated in Rust from a seed (not by libtorch's global generator), so a given
//! seed gives the same weights on every worker thread, on CPU and on CUDA.
use crate::spec::{Activation, Graph, LayerKind, Node, Window};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// How a network's layers behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The receptive-field probe: all-ones weights, no biases, every pooling turned into a
    /// summing window (a depthwise all-ones conv, which also covers dilated max pooling),
    /// batchnorm, activations and dropout as identities. The gradient of one output unit is then
    /// a positive count of paths wherever a path exists, and exactly zero elsewhere.
    Probe,
    /// The real layers, in eval mode (batchnorm uses running statistics, dropout is off).
    Eval,
    /// Real layers with uninitialised parameter tensors: enough to count parameters and to
    /// check shapes with an empty batch (which never reads them), at no initialisation cost.
    Shapes,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// torch.nn's own reset_parameters: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    PytorchDefault,
    XavierUniform,
    XavierNormal,
    KaimingUniform,
    KaimingNormal,
    Normal {
        std: f64,
    },
    Uniform {
        bound: f64,
    },
}

#[derive(Clone, Debug)]
pub struct InitSpec {
    pub init: Init,
    /// Multiplies every weight (not biases) after initialisation.
    pub scale: f64,
    pub seed: u64,
}

/// One layer's tensors.
pub struct LayerParams {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub running_mean: Option<Tensor>,
    pub running_var: Option<Tensor>,
}

pub struct Net {
    pub params: HashMap<String, LayerParams>,
    pub mode: Mode,
    pub kind: Kind,
    pub device: Device,
}

/// splitmix64: small, fast, good enough for initialisation, identical everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, bound: f64) -> f64 {
        (2.0 * self.unit() - 1.0) * bound
    }
    /// Standard normal by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Per-layer stream: a layer's weights do not change when another layer is added or removed.
fn layer_rng(seed: u64, path: &str) -> Rng {
    let h = path
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    Rng::new(seed ^ h)
}

fn tensor(values: &[f64], shape: &[i64], kind: Kind, device: Device) -> Tensor {
    Tensor::from_slice(values).reshape(shape).to_kind(kind).to_device(device)
}

impl Net {
    /// Creates the parameters of every layer of `graph`. `explicit` (path -> (weight, bias))
    /// overrides generated values; shapes are checked by the caller.
    pub fn build(
        graph: &Graph,
        mode: Mode,
        init: &InitSpec,
        explicit: &HashMap<String, (Vec<f64>, Option<Vec<f64>>)>,
        kind: Kind,
        device: Device,
    ) -> Net {
        let mut params = HashMap::new();
        for node in graph.walk() {
            let (wshape, fan_in, fan_out, has_bias): (Vec<i64>, f64, f64, bool) = match &node.layer.kind {
                LayerKind::Conv2d { .. } | LayerKind::Linear { .. } => {
                    let w = node.dense_weight().expect("conv and linear have weights");
                    (w.shape(), w.fan_in() as f64, w.fan_out() as f64, w.bias)
                }
                LayerKind::BatchNorm { affine, .. } => {
                    let c = node.input[0] as i64;
                    let ones = Tensor::ones([c], (kind, device));
                    params.insert(
                        node.path.clone(),
                        LayerParams {
                            weight: affine.then(|| ones.copy()),
                            bias: affine.then(|| Tensor::zeros([c], (kind, device))),
                            running_mean: Some(Tensor::zeros([c], (kind, device))),
                            running_var: Some(ones),
                        },
                    );
                    continue;
                }
                _ => continue,
            };
            let n: usize = wshape.iter().product::<i64>() as usize;
            let out = wshape[0] as usize;
            if mode == Mode::Shapes {
                params.insert(
                    node.path.clone(),
                    LayerParams {
                        weight: Some(Tensor::empty(wshape.as_slice(), (kind, device))),
                        bias: has_bias.then(|| Tensor::zeros([out as i64], (kind, device))),
                        running_mean: None,
                        running_var: None,
                    },
                );
                continue;
            }
            let (weight, bias) = if mode == Mode::Probe {
                (vec![1.0; n], None)
            } else if let Some((w, b)) = explicit.get(&node.path) {
                (w.clone(), b.clone().or_else(|| has_bias.then(|| vec![0.0; out])))
            } else {
                let mut rng = layer_rng(init.seed, &node.path);
                let w: Vec<f64> = match init.init {
                    Init::PytorchDefault => (0..n).map(|_| rng.uniform(1.0 / fan_in.sqrt())).collect(),
                    Init::XavierUniform => (0..n).map(|_| rng.uniform((6.0 / (fan_in + fan_out)).sqrt())).collect(),
                    Init::XavierNormal => (0..n).map(|_| rng.normal() * (2.0 / (fan_in + fan_out)).sqrt()).collect(),
                    Init::KaimingUniform => (0..n).map(|_| rng.uniform((6.0 / fan_in).sqrt())).collect(),
                    Init::KaimingNormal => (0..n).map(|_| rng.normal() * (2.0 / fan_in).sqrt()).collect(),
                    Init::Normal { std } => (0..n).map(|_| rng.normal() * std).collect(),
                    Init::Uniform { bound } => (0..n).map(|_| rng.uniform(bound)).collect(),
                };
                let w = w.into_iter().map(|v| v * init.scale).collect();
                let b = has_bias.then(|| match init.init {
                    Init::PytorchDefault => (0..out).map(|_| rng.uniform(1.0 / fan_in.sqrt())).collect(),
                    _ => vec![0.0; out],
                });
                (w, b)
            };
            params.insert(
                node.path.clone(),
                LayerParams {
                    weight: Some(tensor(&weight, &wshape, kind, device)),
                    bias: bias.map(|b| tensor(&b, &[out as i64], kind, device)),
                    running_mean: None,
                    running_var: None,
                },
            );
        }
        Net {
            params,
            mode,
            kind,
            device,
        }
    }

    /// Every parameter tensor, for counting and for autograd.
    pub fn parameter_tensors(&self) -> Vec<(&str, &'static str, &Tensor)> {
        let mut out = Vec::new();
        for (path, p) in &self.params {
            if let Some(w) = &p.weight {
                out.push((path.as_str(), "weight", w));
            }
            if let Some(b) = &p.bias {
                out.push((path.as_str(), "bias", b));
            }
        }
        out
    }

    /// Runs `nodes` in order on `x`. `hook(node, input, output)` sees every node, composites'
    /// children included.
    pub fn forward(&self, nodes: &[&Node], x: Tensor, hook: &mut dyn FnMut(&Node, &Tensor, &Tensor)) -> Tensor {
        nodes.iter().fold(x, |x, node| self.node(node, x, hook))
    }

    fn node(&self, node: &Node, x: Tensor, hook: &mut dyn FnMut(&Node, &Tensor, &Tensor)) -> Tensor {
        let p = self.params.get(&node.path);
        let probe = self.mode == Mode::Probe;
        let y = match &node.layer.kind {
            LayerKind::Conv2d {
                stride, dilation, groups, ..
            } => {
                let [wh, ww] = node.windows.expect("conv windows");
                let p = p.expect("conv params");
                let w = p.weight.as_ref().unwrap();
                if wh.pad_lo == wh.pad_hi && ww.pad_lo == ww.pad_hi {
                    x.conv2d(
                        w,
                        p.bias.as_ref(),
                        [stride[0] as i64, stride[1] as i64],
                        [wh.pad_lo as i64, ww.pad_lo as i64],
                        [dilation[0] as i64, dilation[1] as i64],
                        *groups as i64,
                    )
                } else {
                    // padding="same" with an even span: PyTorch pads the extra row/column at the end.
                    x.constant_pad_nd([ww.pad_lo as i64, ww.pad_hi as i64, wh.pad_lo as i64, wh.pad_hi as i64])
                        .conv2d(
                            w,
                            p.bias.as_ref(),
                            [stride[0] as i64, stride[1] as i64],
                            [0, 0],
                            [dilation[0] as i64, dilation[1] as i64],
                            *groups as i64,
                        )
                }
            }
            LayerKind::MaxPool2d { .. } | LayerKind::AvgPool2d { .. } if probe => {
                summing_window(&x, node.windows.expect("pool windows"), self.kind)
            }
            LayerKind::MaxPool2d {
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            } => x.max_pool2d(
                [kernel[0] as i64, kernel[1] as i64],
                [stride[0] as i64, stride[1] as i64],
                [padding[0] as i64, padding[1] as i64],
                [dilation[0] as i64, dilation[1] as i64],
                *ceil_mode,
            ),
            LayerKind::AvgPool2d {
                kernel,
                stride,
                padding,
                ceil_mode,
                count_include_pad,
            } => x.avg_pool2d(
                [kernel[0] as i64, kernel[1] as i64],
                [stride[0] as i64, stride[1] as i64],
                [padding[0] as i64, padding[1] as i64],
                *ceil_mode,
                *count_include_pad,
                None,
            ),
            LayerKind::AdaptiveAvgPool2d { .. } => x.adaptive_avg_pool2d([node.output[1] as i64, node.output[2] as i64]),
            LayerKind::Linear { .. } => {
                let p = p.expect("linear params");
                x.linear(p.weight.as_ref().unwrap(), p.bias.as_ref())
            }
            LayerKind::BatchNorm { .. } if probe => x.shallow_clone(),
            LayerKind::BatchNorm { eps, .. } => {
                let p = p.expect("batchnorm params");
                x.batch_norm(
                    p.weight.as_ref(),
                    p.bias.as_ref(),
                    p.running_mean.as_ref(),
                    p.running_var.as_ref(),
                    false,
                    0.1,
                    *eps,
                    true,
                )
            }
            LayerKind::Activation { .. } if probe => x.shallow_clone(),
            LayerKind::Activation { kind, negative_slope } => activate(&x, *kind, *negative_slope),
            LayerKind::Dropout { .. } => x.shallow_clone(),
            LayerKind::Flatten => x.flatten(1, -1),
            LayerKind::Concat { .. } => {
                let outs: Vec<Tensor> = node
                    .groups
                    .iter()
                    .map(|g| self.forward(&g.nodes.iter().collect::<Vec<_>>(), x.shallow_clone(), hook))
                    .collect();
                Tensor::cat(&outs, 1)
            }
            LayerKind::Residual { .. } => {
                let body = self.forward(&node.groups[0].nodes.iter().collect::<Vec<_>>(), x.shallow_clone(), hook);
                let short = self.forward(&node.groups[1].nodes.iter().collect::<Vec<_>>(), x.shallow_clone(), hook);
                body + short
            }
        };
        hook(node, &x, &y);
        y
    }
}

pub fn activate(x: &Tensor, kind: Activation, negative_slope: f64) -> Tensor {
    match kind {
        Activation::Relu => x.relu(),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::LeakyRelu => x.where_self(&x.gt(0.0), &(x * negative_slope)),
        Activation::Sigmoid => x.sigmoid(),
        Activation::Tanh => x.tanh(),
        Activation::Gelu => x.gelu("none"),
        Activation::Identity => x.shallow_clone(),
    }
}

/// A pooling window as a depthwise all-ones convolution with the pool's exact padding, stride,
/// dilation and output size (ceil_mode included, through extra padding at the end).
fn summing_window(x: &Tensor, [wh, ww]: [Window; 2], kind: Kind) -> Tensor {
    let c = x.size()[1];
    let extra = |w: &Window| -> i64 {
        let needed = (w.output - 1) * w.stride + w.span();
        (needed as i64 - (w.input + w.pad_lo) as i64).max(0)
    };
    let weight = Tensor::ones([c, 1, wh.kernel as i64, ww.kernel as i64], (kind, x.device()));
    x.constant_pad_nd([ww.pad_lo as i64, extra(&ww), wh.pad_lo as i64, extra(&wh)])
        .conv2d(
            &weight,
            None::<Tensor>,
            [wh.stride as i64, ww.stride as i64],
            [0, 0],
            [wh.dilation as i64, ww.dilation as i64],
            c,
        )
        .narrow(2, 0, wh.output as i64)
        .narrow(3, 0, ww.output as i64)
}
