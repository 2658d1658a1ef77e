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

/// A layer's weight and bias values, before they become tensors.
enum Drawn<'a> {
    Ready(Vec<f64>, Option<Vec<f64>>),
    Pending {
        path: &'a str,
        n: usize,
        out: usize,
        fan_in: f64,
        fan_out: f64,
        has_bias: bool,
    },
}

/// Values drawn in f64, or rounded to f32 as they are drawn (the same rounding as to_kind).
enum Values {
    F64(Vec<f64>),
    F32(Vec<f32>),
}

impl Values {
    fn into_tensor(self, shape: &[i64], kind: Kind, device: Device) -> Tensor {
        let t = match self {
            Values::F64(v) => Tensor::from_slice(&v),
            Values::F32(v) => Tensor::from_slice(&v),
        };
        t.reshape(shape).to_kind(kind).to_device(device)
    }
}

/// One layer's generated parameters from its own stream: weights by `init` times `scale`, biases
/// by torch.nn's default for `pytorch_default` and zero otherwise.
fn draw(
    path: &str,
    n: usize,
    out: usize,
    fan_in: f64,
    fan_out: f64,
    has_bias: bool,
    init: &InitSpec,
    single: bool,
) -> (Values, Option<Values>) {
    let mut rng = layer_rng(init.seed, path);
    let scale = init.scale;
    let weight = |rng: &mut Rng| -> f64 {
        let v = match init.init {
            Init::PytorchDefault => rng.uniform(1.0 / fan_in.sqrt()),
            Init::XavierUniform => rng.uniform((6.0 / (fan_in + fan_out)).sqrt()),
            Init::XavierNormal => rng.normal() * (2.0 / (fan_in + fan_out)).sqrt(),
            Init::KaimingUniform => rng.uniform((6.0 / fan_in).sqrt()),
            Init::KaimingNormal => rng.normal() * (2.0 / fan_in).sqrt(),
            Init::Normal { std } => rng.normal() * std,
            Init::Uniform { bound } => rng.uniform(bound),
        };
        v * scale
    };
    let w = if single {
        Values::F32((0..n).map(|_| weight(&mut rng) as f32).collect())
    } else {
        Values::F64((0..n).map(|_| weight(&mut rng)).collect())
    };
    let b = has_bias.then(|| {
        let b: Vec<f64> = match init.init {
            Init::PytorchDefault => (0..out).map(|_| rng.uniform(1.0 / fan_in.sqrt())).collect(),
            _ => vec![0.0; out],
        };
        Values::F64(b)
    });
    (w, b)
}

/// Draws every pending layer, the layers split over the machine's cores by size.
fn draw_all(pending: &[(String, Vec<i64>, Drawn)], init: &InitSpec, single: bool) -> Vec<(Values, Option<Values>)> {
    let one = |d: &Drawn| match d {
        Drawn::Ready(w, b) => (Values::F64(w.clone()), b.clone().map(Values::F64)),
        Drawn::Pending {
            path,
            n,
            out,
            fan_in,
            fan_out,
            has_bias,
        } => draw(path, *n, *out, *fan_in, *fan_out, *has_bias, init, single),
    };
    let total: usize = pending.iter().map(|(_, s, _)| s.iter().product::<i64>() as usize).sum();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(pending.len());
    if threads <= 1 || total < 1 << 16 {
        return pending.iter().map(|(_, _, d)| one(d)).collect();
    }
    // contiguous chunks of about equal element counts
    let per = total.div_ceil(threads);
    let mut chunks: Vec<&[(String, Vec<i64>, Drawn)]> = Vec::new();
    let (mut begin, mut acc) = (0, 0);
    for (i, (_, s, _)) in pending.iter().enumerate() {
        acc += s.iter().product::<i64>() as usize;
        if acc >= per || i + 1 == pending.len() {
            chunks.push(&pending[begin..=i]);
            begin = i + 1;
            acc = 0;
        }
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| scope.spawn(move || chunk.iter().map(|(_, _, d)| one(d)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("drawing weights cannot panic"))
            .collect()
    })
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
        let mut pending: Vec<(String, Vec<i64>, Drawn)> = Vec::new();
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
            let values = if mode == Mode::Probe {
                Drawn::Ready(vec![1.0; n], None)
            } else if let Some((w, b)) = explicit.get(&node.path) {
                Drawn::Ready(w.clone(), b.clone().or_else(|| has_bias.then(|| vec![0.0; out])))
            } else {
                Drawn::Pending {
                    path: &node.path,
                    n,
                    out,
                    fan_in,
                    fan_out,
                    has_bias,
                }
            };
            pending.push((node.path.clone(), wshape, values));
        }
        // Drawing a large model's weights takes longer than running it: the layers' streams are
        // independent, so they are drawn on every core, straight into the run's float type.
        let single = kind == Kind::Float;
        let drawn = draw_all(&pending, init, single);
        for ((path, wshape, _), (weight, bias)) in pending.iter().zip(drawn) {
            let out = wshape[0];
            params.insert(
                path.clone(),
                LayerParams {
                    weight: Some(weight.into_tensor(wshape, kind, device)),
                    bias: bias.map(|b| b.into_tensor(&[out], kind, device)),
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
