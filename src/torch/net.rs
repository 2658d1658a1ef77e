//! Builds a shape-inferred [`Graph`] as libtorch tensors and runs it.
//!
//! Parameters are generated in Rust from a seed (not by libtorch's global generator), so a given
//! seed gives the same weights on every worker thread, on CPU and on CUDA.
use crate::spec::{Above, Activation, Graph, LayerKind, Merge, Node, Window};
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
    /// The model file's own weights (an ONNX file's initializers), times `scale`; layers the
    /// file gives no tensor for get PyTorch's default init.
    Model,
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
    /// An embedding's, attention's or recurrent layer's tensors by PyTorch's names, in the
    /// order of `named_parameters()`.
    pub named: Vec<(String, Tensor)>,
}

pub struct Net {
    pub params: HashMap<String, LayerParams>,
    /// The layers whose weight is another layer's tensor (`weight_of`): their `weight` (a
    /// linear's) or `named` weight (an embedding's) is the owner's, the same leaf.
    pub tied: std::collections::HashSet<String>,
    pub mode: Mode,
    pub kind: Kind,
    pub device: Device,
}

pub use crate::analysis::rng::Rng;

/// True above the diagonal of `x`'s last two axes (`j > i`): what a causal mask fills.
fn above_diagonal(x: &Tensor) -> Tensor {
    let d = x.dim();
    Tensor::ones([x.size()[d - 2], x.size()[d - 1]], (Kind::Bool, x.device())).triu(1)
}

/// The probe's attention: output (i, j) is the sum of query i's features, of every feature of
/// the keys it attends to (0..i under a causal mask, all otherwise) and of feature j of those
/// values: exactly what it reads.
fn probe_attention(ins: &[Tensor], causal: bool) -> Tensor {
    let (q, k, v) = (&ins[0], &ins[1], &ins[2]);
    let d = q.dim();
    let seen = Tensor::ones([q.size()[d - 2], k.size()[d - 2]], (q.kind(), q.device()));
    let seen = if causal { seen.tril(0) } else { seen };
    let features = |t: &Tensor| t.sum_dim_intlist(-1, true, t.kind());
    features(q) + seen.matmul(&features(k)) + seen.matmul(v)
}

/// The probe's matmul: a product of each side with ones in place of the other, so that output
/// (i, j) reads row i of the first and column j of the second (a parameter's zeros included),
/// the ones 0 where the other side is exactly 0 above its diagonal (a causal attention's
/// weights: output token i reads no value token after i).
fn probe_matmul(ins: &[Tensor], zero_a: bool, zero_b: bool) -> Tensor {
    let ones = |t: &Tensor, zero: bool| if zero { t.ones_like().tril(0) } else { t.ones_like() };
    ins[0].matmul(&ones(&ins[1], zero_b)) + ones(&ins[0], zero_a).matmul(&ins[1])
}

/// Per-layer stream: a layer's weights do not change when another layer is added or removed.
fn layer_rng(seed: u64, path: &str) -> Rng {
    let h = path
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    Rng::new(seed ^ h)
}

/// Draws per element of each init: the normal ones take two uniform numbers (Box-Muller).
fn draws_per_element(init: &Init) -> u64 {
    match init {
        Init::XavierNormal | Init::KaimingNormal | Init::Normal { .. } => 2,
        _ => 1,
    }
}

/// Fills `out` with `f(rng)`, element `i` drawn from the layer's stream advanced by
/// `i * per` numbers (splitmix64 jumps ahead in O(1)), in chunks on every core: the same values
/// as one sequential pass, whatever the number of cores.
fn fill<T: Send, F: Fn(&mut Rng) -> T + Sync>(out: &mut [T], seed_rng: &Rng, per: u64, f: &F) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = cores.min(out.len() / (1 << 16)).max(1);
    let chunk = out.len().div_ceil(threads).max(1);
    let chunks = out.len().div_ceil(chunk);
    std::thread::scope(|scope| {
        for (c, part) in out.chunks_mut(chunk).enumerate() {
            let mut rng = seed_rng.clone();
            rng.skip((c * chunk) as u64 * per);
            let mut work = move || part.iter_mut().for_each(|v| *v = f(&mut rng));
            if c + 1 == chunks {
                work();
            } else {
                scope.spawn(work);
            }
        }
    });
}

/// A fresh CPU tensor of `n` elements of T (f32 or f64), element `i` drawn as `f` from `rng`
/// advanced by `i * per` numbers, on every core.
pub(crate) fn drawn_tensor<T: Send + tch::kind::Element, F: Fn(&mut Rng) -> T + Sync>(n: usize, rng: &Rng, per: u64, f: &F) -> Tensor {
    let t = Tensor::empty([n as i64], (T::KIND, Device::Cpu));
    // Safety: `t` is a new contiguous CPU tensor of n elements of T, owned here and not yet
    // visible to anything else; the slice does not outlive this function.
    let out = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, n) };
    fill(out, rng, per, f);
    t
}

/// One layer's generated parameters from its own stream: weights by `init` times `scale`, biases
/// by torch.nn's default for `pytorch_default` and zero otherwise (drawn after the weights).
/// Without `weights` (a tied layer's, which its owner's tensor replaces) the weight tensor is
/// left unfilled and only the bias is drawn, the same bias as with them.
#[allow(clippy::too_many_arguments)]
fn draw(
    path: &str,
    n: usize,
    out: usize,
    fan_in: f64,
    fan_out: f64,
    has_bias: bool,
    init: &InitSpec,
    kind: Kind,
    weights: bool,
) -> (Tensor, Option<Tensor>) {
    let rng = layer_rng(init.seed, path);
    let scale = init.scale;
    let per = draws_per_element(&init.init);
    // uniform(bound) or normal * std, times scale; the constants computed once, not per element
    let (uniform, spread) = match init.init {
        Init::PytorchDefault | Init::Model => (true, 1.0 / fan_in.sqrt()),
        Init::XavierUniform => (true, (6.0 / (fan_in + fan_out)).sqrt()),
        Init::XavierNormal => (false, (2.0 / (fan_in + fan_out)).sqrt()),
        Init::KaimingUniform => (true, (6.0 / fan_in).sqrt()),
        Init::KaimingNormal => (false, (2.0 / fan_in).sqrt()),
        Init::Normal { std } => (false, std),
        Init::Uniform { bound } => (true, bound),
    };
    let weight = move |rng: &mut Rng| -> f64 {
        let v = if uniform { rng.uniform(spread) } else { rng.normal() * spread };
        v * scale
    };
    // rounded to f32 as it is drawn: the same rounding as to_kind
    let w = if !weights {
        Tensor::empty([n as i64], (kind, Device::Cpu))
    } else if kind == Kind::Float {
        drawn_tensor::<f32, _>(n, &rng, per, &|r: &mut Rng| weight(r) as f32)
    } else {
        drawn_tensor::<f64, _>(n, &rng, per, &weight)
    };
    let b = has_bias.then(|| {
        let b: Vec<f64> = match init.init {
            Init::PytorchDefault | Init::Model => {
                let mut rng = rng.clone();
                rng.skip(n as u64 * per);
                (0..out).map(|_| rng.uniform(1.0 / fan_in.sqrt())).collect()
            }
            _ => vec![0.0; out],
        };
        Tensor::from_slice(&b)
    });
    (w, b)
}

/// A max pool window that holds no input element (only padding, as dilation and ceil_mode can
/// make on a small map): libtorch returns -inf there and its backward writes the gradient through
/// an index of -1, outside the tensor (heap corruption, seen with PyTorch 2.11 on
/// `max_pool2d(x[1,3,1,1], 2, 1, 1, dilation=2, ceil_mode=True)`). Such a model is refused before
/// it reaches libtorch. Returns the node's path and the reason.
pub fn empty_pool_window(graph: &Graph) -> Option<(String, String)> {
    for node in &graph.nodes {
        let lifted = node.lifted();
        let node = lifted.as_ref().unwrap_or(node);
        let (kernel, stride, padding, dilation): (&[u64], &[u64], &[u64], &[u64]) = match &node.layer.kind {
            LayerKind::MaxPool2d {
                kernel,
                stride,
                padding,
                dilation,
                ..
            } => (kernel, stride, padding, dilation),
            LayerKind::MaxPool3d {
                kernel,
                stride,
                padding,
                dilation,
                ..
            } => (kernel, stride, padding, dilation),
            _ => continue,
        };
        let axes = kernel.len();
        for a in 0..axes {
            let (n, outs) = (node.input[a + 1] as i64, node.output[a + 1] as i64);
            let (k, s, p, d) = (kernel[a] as i64, stride[a] as i64, padding[a] as i64, dilation[a] as i64);
            for o in 0..outs {
                if !(0..k).any(|t| (0..n).contains(&(o * s - p + t * d))) {
                    let axis = ["slice", "row", "column"][a + 3 - axes];
                    return Some((
                        node.path.clone(),
                        format!(
                            "max pool {}: output {axis} {o} reads only padding (kernel {k}, stride {s}, padding {p}, dilation {d} on {n} {axis}s); libtorch returns -inf there and its backward writes outside the tensor, so the model is not run",
                            node.path
                        ),
                    ));
                }
            }
        }
    }
    None
}

/// A conv weight as the 2-D op takes it: a 1-D conv's `[out, in, k]` as `[out, in, 1, k]`.
fn four_d(w: &Tensor) -> Tensor {
    if w.dim() == 3 {
        w.unsqueeze(2)
    } else {
        w.shallow_clone()
    }
}

/// One tensor of the model file's weights for a node, if the request uses them.
fn given<'w>(graph: &'w Graph, init: &InitSpec, path: &str, role: &str) -> Option<&'w [f64]> {
    if init.init != Init::Model {
        return None;
    }
    let tensors = graph.spec.weights.as_ref()?.get(path)?;
    tensors.iter().find(|(r, _)| r == role).map(|(_, v)| v.as_slice())
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
        let mut params: HashMap<String, LayerParams> = HashMap::new();
        // a tied weight is its owner's tensor itself (a shallow clone shares the leaf, so
        // autograd sums both uses into one gradient, as for PyTorch's shared nn.Parameter); the
        // owner is the first of its group in the model's order, so it is built already
        let owner_weight = |params: &HashMap<String, LayerParams>, node: &Node| {
            node.tie.as_ref().map(|tie| {
                let owner = &params[&graph.nodes[tie.owner].path];
                owner
                    .weight
                    .as_ref()
                    .or(owner.named.first().map(|(_, t)| t))
                    .expect("a linear or an embedding owns a weight")
                    .shallow_clone()
            })
        };
        for node in &graph.nodes {
            let mut tied_weight = owner_weight(&params, node);
            if let Some(named) = node.named_params() {
                let tensors = named
                    .iter()
                    .map(|np| {
                        // (an embedding's table, its first tensor)
                        if let Some(w) = tied_weight.take() {
                            return (np.name.clone(), w);
                        }
                        let shape: Vec<i64> = np.shape.iter().map(|&d| d as i64).collect();
                        let n = np.numel() as usize;
                        let key = format!("{}.{}", node.path, np.name);
                        let t = match mode {
                            Mode::Shapes => Tensor::zeros(shape.as_slice(), (kind, Device::Cpu)),
                            // the probe's stand-ins for these layers read no parameter
                            Mode::Probe => Tensor::ones(shape.as_slice(), (kind, Device::Cpu)),
                            Mode::Eval => match (explicit.get(&key), given(graph, init, &node.path, &np.name)) {
                                (Some((w, _)), _) => Tensor::from_slice(w),
                                (None, Some(w)) if np.bias => Tensor::from_slice(w),
                                (None, Some(w)) => Tensor::from_slice(w) * init.scale,
                                (None, None) => draw_named(node, np, n, &key, init, kind),
                            },
                        };
                        (np.name.clone(), t.reshape(shape.as_slice()).to_kind(kind).to_device(device))
                    })
                    .collect();
                params.insert(
                    node.path.clone(),
                    LayerParams {
                        weight: None,
                        bias: None,
                        running_mean: None,
                        running_var: None,
                        named: tensors,
                    },
                );
                continue;
            }
            let (wshape, fan_in, fan_out, has_bias, out): (Vec<i64>, f64, f64, bool, usize) = match &node.layer.kind {
                LayerKind::Conv2d { .. }
                | LayerKind::Conv3d { .. }
                | LayerKind::ConvTranspose2d { .. }
                | LayerKind::ConvTranspose3d { .. }
                | LayerKind::Linear { .. } => {
                    let w = node.dense_weight().expect("conv and linear have weights");
                    (w.shape(), w.fan_in() as f64, w.fan_out() as f64, w.bias, w.bias_len() as usize)
                }
                LayerKind::BatchNorm { affine, .. } => {
                    let c = node.input[0] as i64;
                    let ones = Tensor::ones([c], (kind, device));
                    let or = |role: &str, t: Tensor| match given(graph, init, &node.path, role) {
                        Some(v) if mode == Mode::Eval => Tensor::from_slice(v).to_kind(kind).to_device(device),
                        _ => t,
                    };
                    params.insert(
                        node.path.clone(),
                        LayerParams {
                            weight: affine.then(|| or("weight", ones.copy())),
                            bias: affine.then(|| or("bias", Tensor::zeros([c], (kind, device)))),
                            running_mean: Some(or("running_mean", Tensor::zeros([c], (kind, device)))),
                            running_var: Some(or("running_var", ones)),
                            named: Vec::new(),
                        },
                    );
                    continue;
                }
                LayerKind::Activation {
                    kind: Activation::Prelu,
                    negative_slope,
                    parameters,
                } => {
                    // nn.PReLU's init: every slope `init`, whatever the request's init; or the
                    // request's explicit slopes, or the model file's
                    let chosen = explicit
                        .get(&node.path)
                        .map(|(v, _)| v.as_slice())
                        .or_else(|| given(graph, init, &node.path, "weight"));
                    let w = match chosen {
                        Some(v) if mode == Mode::Eval => Tensor::from_slice(v).to_kind(kind).to_device(device),
                        _ => Tensor::full([*parameters as i64], *negative_slope, (kind, device)),
                    };
                    params.insert(
                        node.path.clone(),
                        LayerParams {
                            weight: Some(w),
                            bias: None,
                            running_mean: None,
                            running_var: None,
                            named: Vec::new(),
                        },
                    );
                    continue;
                }
                LayerKind::GroupNorm { affine, .. } | LayerKind::InstanceNorm { affine, .. } | LayerKind::LayerNorm { affine, .. } => {
                    // PyTorch's init: weight ones, bias zeros, over the channels or normalized_shape
                    let (shape, bias): (Vec<i64>, bool) = match &node.layer.kind {
                        LayerKind::LayerNorm { shape, bias, .. } => (shape.iter().map(|&d| d as i64).collect(), *bias),
                        _ => (vec![node.input[0] as i64], *affine),
                    };
                    let or = |role: &str, t: Tensor| match given(graph, init, &node.path, role) {
                        Some(v) if mode == Mode::Eval => Tensor::from_slice(v).reshape(shape.as_slice()).to_kind(kind).to_device(device),
                        _ => t,
                    };
                    params.insert(
                        node.path.clone(),
                        LayerParams {
                            weight: affine.then(|| or("weight", Tensor::ones(shape.as_slice(), (kind, device)))),
                            bias: bias.then(|| or("bias", Tensor::zeros(shape.as_slice(), (kind, device)))),
                            running_mean: None,
                            running_var: None,
                            named: Vec::new(),
                        },
                    );
                    continue;
                }
                _ => continue,
            };
            let n: usize = wshape.iter().product::<i64>() as usize;
            if mode == Mode::Shapes {
                params.insert(
                    node.path.clone(),
                    LayerParams {
                        weight: Some(tied_weight.unwrap_or_else(|| Tensor::empty(wshape.as_slice(), (kind, device)))),
                        bias: has_bias.then(|| Tensor::zeros([out as i64], (kind, device))),
                        running_mean: None,
                        running_var: None,
                        named: Vec::new(),
                    },
                );
                continue;
            }
            // Drawing a large model's weights took longer than running it: each layer is drawn
            // on every core (its stream split by jumping ahead), straight into a tensor of the
            // run's type.
            // (a tied layer's weight is its owner's: never drawn nor read)
            let tied = tied_weight.is_some();
            let (weight, bias) = if mode == Mode::Probe {
                (Tensor::ones([if tied { 0 } else { n as i64 }], (kind, Device::Cpu)), None)
            } else if let Some((w, b)) = explicit.get(&node.path) {
                let b = b.as_deref().map(Tensor::from_slice);
                (
                    Tensor::from_slice(w),
                    b.or_else(|| has_bias.then(|| Tensor::zeros([out as i64], (kind, Device::Cpu)))),
                )
            } else if let Some(w) = given(graph, init, &node.path, "weight") {
                let b = given(graph, init, &node.path, "bias").map(Tensor::from_slice);
                (
                    Tensor::from_slice(w) * init.scale,
                    b.or_else(|| has_bias.then(|| Tensor::zeros([out as i64], (kind, Device::Cpu)))),
                )
            } else {
                draw(&node.path, n, out, fan_in, fan_out, has_bias, init, kind, !tied)
            };
            params.insert(
                node.path.clone(),
                LayerParams {
                    weight: Some(tied_weight.unwrap_or_else(|| weight.reshape(wshape.as_slice()).to_kind(kind).to_device(device))),
                    bias: bias.map(|b| b.to_kind(kind).to_device(device)),
                    running_mean: None,
                    running_var: None,
                    named: Vec::new(),
                },
            );
        }
        let tied = graph.nodes.iter().filter(|n| n.tie.is_some()).map(|n| n.path.clone()).collect();
        Net {
            params,
            tied,
            mode,
            kind,
            device,
        }
    }

    /// Every parameter tensor, for counting and for autograd: a tied weight once, under its
    /// owner (as PyTorch's `parameters()`).
    pub fn parameter_tensors(&self) -> Vec<(&str, &str, &Tensor)> {
        let mut out = Vec::new();
        for (path, p) in &self.params {
            let tied = self.tied.contains(path);
            if let Some(w) = p.weight.as_ref().filter(|_| !tied) {
                out.push((path.as_str(), "weight", w));
            }
            if let Some(b) = &p.bias {
                out.push((path.as_str(), "bias", b));
            }
            for (name, t) in &p.named {
                if !(tied && name == "weight") {
                    out.push((path.as_str(), name.as_str(), t));
                }
            }
        }
        out
    }

    /// A multi-tensor layer's tensor by its PyTorch name.
    fn named<'t>(&'t self, node: &Node, name: &str) -> &'t Tensor {
        let p = &self.params[&node.path];
        &p.named.iter().find(|(n, _)| n == name).expect("built with the layer").1
    }

    /// Runs every node on `x` and returns the model's outputs. `hook(node, input, output)` sees
    /// every node (its first input), in topological order.
    pub fn forward(&self, graph: &Graph, x: Tensor, hook: &mut dyn FnMut(&Node, &Tensor, &Tensor)) -> Vec<Tensor> {
        let ids: Vec<usize> = (0..graph.nodes.len()).collect();
        self.run(graph, &ids, &x, &graph.outputs, hook)
    }

    /// Runs the nodes `ids` (in topological order, every node they read included) on `x` and
    /// returns the tensors of `want`. A tensor is dropped once its last reader has run.
    pub fn run(
        &self,
        graph: &Graph,
        ids: &[usize],
        x: &Tensor,
        want: &[usize],
        hook: &mut dyn FnMut(&Node, &Tensor, &Tensor),
    ) -> Vec<Tensor> {
        let mut uses = vec![0usize; graph.nodes.len()];
        for &i in ids {
            for e in &graph.nodes[i].inputs {
                if let Some(f) = e.from {
                    uses[f] += 1;
                }
            }
        }
        for &w in want {
            uses[w] += 1;
        }
        let mut vals: Vec<Option<Tensor>> = (0..graph.nodes.len()).map(|_| None).collect();
        for &i in ids {
            let node = &graph.nodes[i];
            // a node that reads nothing (a parameter) gets the model's input, for its batch size
            let ins: Vec<Tensor> = if node.inputs.is_empty() {
                vec![x.shallow_clone()]
            } else {
                node.inputs
                    .iter()
                    .map(|e| match e.from {
                        Some(f) => {
                            uses[f] -= 1;
                            if uses[f] == 0 {
                                vals[f].take().expect("read after it ran")
                            } else {
                                vals[f].as_ref().expect("read after it ran").shallow_clone()
                            }
                        }
                        None => x.shallow_clone(),
                    })
                    .collect()
            };
            let y = match node.merge {
                // (knowing which operand holds a causal attention's zeros)
                Some(Merge::MatMul) if self.mode == Mode::Probe => {
                    probe_matmul(&ins, graph.zero_above(&node.inputs[0]), graph.zero_above(&node.inputs[1]))
                }
                _ => self.node(node, &ins),
            };
            // the probe's stand-ins (a softmax's sums) fill what the network holds at exactly 0
            let y = if self.mode == Mode::Probe && node.above == Above::Zero {
                y.masked_fill(&above_diagonal(&y), 0.0)
            } else {
                y
            };
            hook(node, &ins[0], &y);
            vals[i] = Some(y);
        }
        want.iter()
            .map(|&w| vals[w].as_ref().expect("wanted nodes run").shallow_clone())
            .collect()
    }

    fn node(&self, node: &Node, ins: &[Tensor]) -> Tensor {
        if let Some(m) = node.merge {
            // the probe adds what the network multiplies: the same paths, each with a positive
            // coefficient, without the products of path counts that overflow float64 after a few
            // squeeze-and-excitation gates
            let multiply = m == Merge::Mul && self.mode != Mode::Probe;
            return match m {
                Merge::Cat(axis) => Tensor::cat(ins, axis as i64 + 1),
                Merge::MatMul if self.mode == Mode::Probe => unreachable!("run multiplies in the probe, knowing the operands' zeros"),
                Merge::MatMul => ins[0].matmul(&ins[1]),
                Merge::Attention => {
                    let LayerKind::ScaledDotProductAttention { causal, scale } = node.layer.kind else {
                        unreachable!("attention merges are scaled_dot_product_attention nodes")
                    };
                    if self.mode == Mode::Probe {
                        probe_attention(ins, causal)
                    } else {
                        Tensor::scaled_dot_product_attention(&ins[0], &ins[1], &ins[2], None::<Tensor>, 0.0, causal, scale, false)
                    }
                }
                _ => ins[1..]
                    .iter()
                    .fold(ins[0].shallow_clone(), |acc, t| if multiply { acc * t } else { acc + t }),
            };
        }
        // a 1-D layer: its 2-D form on [N, C, 1, L]
        if let Some(lifted) = node.lifted() {
            return self.node(&lifted, &[ins[0].unsqueeze(2)]).squeeze_dim(2);
        }
        let x = &ins[0];
        let p = self.params.get(&node.path);
        let probe = self.mode == Mode::Probe;
        // sequences [N, L, D]: the probe's stand-ins are sums over exactly what each output
        // reads (every feature of the tokens it sees)
        if probe && x.dim() == 3 {
            let features = |t: &Tensor| t.sum_dim_intlist(-1, true, t.kind());
            match &node.layer.kind {
                LayerKind::LayerNorm { shape, .. } if shape.len() == 1 => return x + features(x),
                LayerKind::LayerNorm { .. } => return x + x.sum_dim_intlist([1i64, 2].as_slice(), true, x.kind()),
                LayerKind::Softmax { dim } => {
                    let axis = crate::spec::shape::sample_axis(*dim, 2, "").expect("checked by shape inference") as i64 + 1;
                    return x + x.sum_dim_intlist(axis, true, x.kind());
                }
                LayerKind::MultiheadAttention { causal, .. } => {
                    let s = features(x);
                    let seen = if ins.len() > 1 {
                        // cross-attention: the query token's features and every key and value
                        ins[1..].iter().fold(s.shallow_clone(), |acc, kv| {
                            let f = features(kv);
                            acc + f.sum_dim_intlist(1, true, f.kind())
                        })
                    } else if *causal {
                        s.cumsum(1, s.kind())
                    } else {
                        s.sum_dim_intlist(1, true, s.kind()).expand_as(&s)
                    };
                    return seen.repeat([1, 1, node.output[1] as i64]);
                }
                LayerKind::Recurrent(r) => {
                    let mut y = x.shallow_clone();
                    for _ in 0..r.layers {
                        let s = features(&y);
                        let forward = s.cumsum(1, s.kind()).repeat([1, 1, r.hidden as i64]);
                        y = if r.bidirectional {
                            let backward = s.flip([1]).cumsum(1, s.kind()).flip([1]).repeat([1, 1, r.hidden as i64]);
                            Tensor::cat(&[forward, backward], 2)
                        } else {
                            forward
                        };
                    }
                    return y;
                }
                _ => {}
            }
        }
        match &node.layer.kind {
            // a learned tensor, one copy per sample (the probe's holds zeros: it reads no input)
            LayerKind::Parameter { shape, .. } => {
                let mut size = vec![x.size()[0]];
                size.extend(shape.iter().map(|&d| d as i64));
                let t = if probe {
                    Tensor::zeros(&size[1..], (self.kind, self.device))
                } else {
                    // a position embedding's rows 0..L
                    self.named(node, "weight").narrow(0, 0, size[1])
                };
                t.unsqueeze(0).expand(size.as_slice(), false)
            }
            LayerKind::Reshape(_) => {
                let mut size = vec![x.size()[0]];
                size.extend(node.output.iter().map(|&d| d as i64));
                x.reshape(size.as_slice())
            }
            LayerKind::FlattenSpatial => x.flatten(2, -1),
            LayerKind::Transpose(_) => {
                let dims: Vec<i64> = std::iter::once(0).chain(node.perm().iter().map(|&a| a as i64 + 1)).collect();
                x.permute(dims.as_slice())
            }
            // the probe fills with zeros: the same zero gradients, and no -inf in its sums
            LayerKind::CausalMask => x.masked_fill(&above_diagonal(x), if self.mode == Mode::Probe { 0.0 } else { f64::NEG_INFINITY }),
            LayerKind::SelectToken { index } => x.select(1, *index as i64),
            LayerKind::Narrow { dim, start, length } => {
                let axis = crate::spec::shape::sample_axis(*dim, node.input.len(), "").expect("checked by shape inference");
                x.narrow(axis as i64 + 1, *start as i64, *length as i64)
            }
            // view [N, g, C/g, ...], swap the two channel axes, flatten them again
            LayerKind::ChannelShuffle { groups } => {
                let size = x.size();
                let g = *groups as i64;
                let mut split = vec![size[0], g, size[1] / g];
                split.extend_from_slice(&size[2..]);
                x.reshape(split.as_slice()).transpose(1, 2).reshape(size.as_slice())
            }
            // the probe's token ids are ones of a float input: each token's row reads its id
            LayerKind::Embedding { dim, .. } if probe => x.unsqueeze(-1).repeat([1, 1, *dim as i64]),
            LayerKind::Embedding { padding_idx, .. } => {
                Tensor::embedding(self.named(node, "weight"), x, padding_idx.map_or(-1, |i| i as i64), false, false)
            }
            LayerKind::MultiheadAttention { heads, causal, bias, .. } => {
                let b = |name: &str| bias.then(|| self.named(node, name));
                // self-attention reads x three times; cross-attention its keys and values
                let (k, v) = (ins.get(1).unwrap_or(x), ins.get(2).or(ins.get(1)).unwrap_or(x));
                attention(
                    [x, k, v],
                    self.named(node, "in_proj_weight"),
                    b("in_proj_bias"),
                    self.named(node, "out_proj.weight"),
                    b("out_proj.bias"),
                    *heads as i64,
                    *causal,
                )
            }
            LayerKind::Recurrent(r) => {
                let tensors: Vec<&Tensor> = self.params[&node.path].named.iter().map(|(_, t)| t).collect();
                let states = (r.layers * r.directions()) as i64;
                let h0 = Tensor::zeros([states, x.size()[0], r.hidden as i64], (x.kind(), x.device()));
                let (l, b, bi) = (r.layers as i64, r.bias, r.bidirectional);
                match r.cell {
                    crate::spec::Cell::Lstm => x.lstm(&[&h0, &h0], &tensors, b, l, 0.0, false, bi, true).0,
                    crate::spec::Cell::Gru => x.gru(&h0, &tensors, b, l, 0.0, false, bi, true).0,
                    crate::spec::Cell::RnnTanh => x.rnn_tanh(&h0, &tensors, b, l, 0.0, false, bi, true).0,
                    crate::spec::Cell::RnnRelu => x.rnn_relu(&h0, &tensors, b, l, 0.0, false, bi, true).0,
                }
            }
            LayerKind::Conv2d {
                stride, dilation, groups, ..
            } => {
                let [wh, ww] = node.windows.expect("conv windows");
                let p = p.expect("conv params");
                let (x, padding) = conv_input(x, [wh, ww]);
                x.conv2d(
                    &four_d(p.weight.as_ref().unwrap()),
                    p.bias.as_ref(),
                    [stride[0] as i64, stride[1] as i64],
                    padding,
                    [dilation[0] as i64, dilation[1] as i64],
                    *groups as i64,
                )
            }
            LayerKind::Conv3d {
                stride, dilation, groups, ..
            } => {
                let p = p.expect("conv3d params");
                let (x, padding) = conv_input(x, node.volume.expect("conv3d windows"));
                x.conv3d(
                    p.weight.as_ref().unwrap(),
                    p.bias.as_ref(),
                    stride.map(|v| v as i64),
                    padding,
                    dilation.map(|v| v as i64),
                    *groups as i64,
                )
            }
            LayerKind::MaxPool3d { .. } | LayerKind::AvgPool3d { .. } if probe => summing_window(x, node.volume.expect("pool windows")),
            LayerKind::MaxPool3d {
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            } => x.max_pool3d(
                kernel.map(|v| v as i64),
                stride.map(|v| v as i64),
                padding.map(|v| v as i64),
                dilation.map(|v| v as i64),
                *ceil_mode,
            ),
            LayerKind::AvgPool3d {
                kernel,
                stride,
                padding,
                ceil_mode,
                count_include_pad,
            } => x.avg_pool3d(
                kernel.map(|v| v as i64),
                stride.map(|v| v as i64),
                padding.map(|v| v as i64),
                *ceil_mode,
                *count_include_pad,
                None,
            ),
            LayerKind::AdaptiveMaxPool3d { .. } if !probe => {
                x.adaptive_max_pool3d([node.output[1] as i64, node.output[2] as i64, node.output[3] as i64])
                    .0
            }
            // the probe takes every pooling as a sum (an average) over its windows
            LayerKind::AdaptiveAvgPool3d { .. } | LayerKind::AdaptiveMaxPool3d { .. } => {
                x.adaptive_avg_pool3d([node.output[1] as i64, node.output[2] as i64, node.output[3] as i64])
            }
            LayerKind::MaxPool2d { .. } | LayerKind::AvgPool2d { .. } if probe => summing_window(x, node.windows.expect("pool windows")),
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
            LayerKind::AdaptiveMaxPool2d { .. } if !probe => x.adaptive_max_pool2d([node.output[1] as i64, node.output[2] as i64]).0,
            // the probe takes every pooling as a sum (an average) over its windows
            LayerKind::AdaptiveAvgPool2d { .. } | LayerKind::AdaptiveMaxPool2d { .. } => {
                x.adaptive_avg_pool2d([node.output[1] as i64, node.output[2] as i64])
            }
            LayerKind::ConvTranspose2d {
                stride,
                padding,
                output_padding,
                dilation,
                groups,
                ..
            } => {
                let p = p.expect("conv_transpose2d params");
                let ints = |v: &[u64; 2]| [v[0] as i64, v[1] as i64];
                x.conv_transpose2d(
                    &four_d(p.weight.as_ref().unwrap()),
                    p.bias.as_ref(),
                    ints(stride),
                    ints(padding),
                    ints(output_padding),
                    *groups as i64,
                    ints(dilation),
                )
            }
            LayerKind::ConvTranspose3d {
                stride,
                padding,
                output_padding,
                dilation,
                groups,
                ..
            } => {
                let p = p.expect("conv_transpose3d params");
                let ints = |v: &[u64; 3]| v.map(|x| x as i64);
                x.conv_transpose3d(
                    p.weight.as_ref().unwrap(),
                    p.bias.as_ref(),
                    ints(stride),
                    ints(padding),
                    ints(output_padding),
                    *groups as i64,
                    ints(dilation),
                )
            }
            // nn.Upsample's kernels, given what nn.Upsample gives them
            LayerKind::Upsample { .. } => upsample(x, node),
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
            LayerKind::GroupNorm { .. } | LayerKind::InstanceNorm { .. } | LayerKind::LayerNorm { .. } | LayerKind::Softmax { .. }
                if probe =>
            {
                coupled_sum(x, node.coupling().expect("normalizations couple"))
            }
            LayerKind::GroupNorm { groups, eps, .. } => {
                let p = p.expect("groupnorm params");
                x.group_norm(*groups as i64, p.weight.as_ref(), p.bias.as_ref(), *eps, true)
            }
            LayerKind::InstanceNorm { eps, .. } => {
                let p = p.expect("instancenorm params");
                // libtorch repeats the affine weight once per sample: an empty batch (the
                // shape check's) would index an empty weight; its shapes need no weight
                let empty = x.size().first() == Some(&0);
                x.instance_norm(
                    p.weight.as_ref().filter(|_| !empty),
                    p.bias.as_ref().filter(|_| !empty),
                    None::<&Tensor>,
                    None::<&Tensor>,
                    true,
                    0.1,
                    *eps,
                    true,
                )
            }
            LayerKind::LayerNorm { shape, eps, channels, .. } => {
                let p = p.expect("layernorm params");
                let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                if *channels {
                    // torchvision's LayerNorm2d: channels last, normalized, channels first again
                    x.permute([0, 2, 3, 1])
                        .layer_norm(shape.as_slice(), p.weight.as_ref(), p.bias.as_ref(), *eps, true)
                        .permute([0, 3, 1, 2])
                } else {
                    x.layer_norm(shape.as_slice(), p.weight.as_ref(), p.bias.as_ref(), *eps, true)
                }
            }
            LayerKind::Mean { dims, keepdim } => {
                let axes = crate::spec::shape::mean_axes(dims, node.input.len(), "").expect("checked by shape inference");
                let dims: Vec<i64> = axes.iter().map(|&a| a as i64 + 1).collect();
                x.mean_dim(dims.as_slice(), *keepdim, x.kind())
            }
            LayerKind::Softmax { dim } => {
                let axis = crate::spec::shape::sample_axis(*dim, node.input.len(), "").expect("checked by shape inference");
                x.softmax(axis as i64 + 1, x.kind())
            }
            LayerKind::Activation { .. } if probe => x.shallow_clone(),
            LayerKind::Activation {
                kind: Activation::Prelu, ..
            } => {
                let p = p.expect("prelu params");
                x.prelu(p.weight.as_ref().unwrap())
            }
            LayerKind::Activation { kind, negative_slope, .. } => activate(&x, *kind, *negative_slope),
            LayerKind::Dropout { .. } => x.shallow_clone(),
            LayerKind::Scale { factor } => x * *factor,
            LayerKind::Pad { pad, fill } => {
                let [l, r, t, b] = pad.map(|p| p as i64);
                if *fill == crate::spec::Fill::Zeros {
                    x.constant_pad_nd([l, r, t, b])
                } else {
                    fill_pad(x, node.windows.expect("pad windows"))
                }
            }
            LayerKind::Pad3d { fill, .. } => {
                let ws = node.volume.expect("pad windows");
                if *fill == crate::spec::Fill::Zeros {
                    x.constant_pad_nd(pad_list(&ws, |w| w.pad_hi as i64))
                } else {
                    fill_pad(x, ws)
                }
            }
            LayerKind::Flatten => x.flatten(1, -1),
            crate::spec::merges!() => {
                unreachable!("merge nodes combine their inputs above")
            }
        }
    }
}

/// One tensor of an embedding, attention or recurrent layer, from its own stream
/// (`path.name`), as torch.nn initialises it under `pytorch_default`: an embedding N(0, 1),
/// attention's in_proj Xavier-uniform and out_proj U(+-1/sqrt(E)) with zero biases, every
/// recurrent tensor U(+-1/sqrt(hidden_size)). The other inits draw weights with fan_in and
/// fan_out the tensor's columns and rows, and zero biases.
fn draw_named(node: &Node, np: &crate::spec::shape::NamedParam, n: usize, key: &str, init: &InitSpec, kind: Kind) -> Tensor {
    let (rows, cols) = (np.shape[0] as f64, np.shape.get(1).copied().unwrap_or(1) as f64);
    let default = matches!(init.init, Init::PytorchDefault | Init::Model);
    let per_layer = |init_kind: Init, scale: f64| InitSpec {
        init: init_kind,
        scale,
        seed: init.seed,
    };
    let spec = match (&node.layer.kind, default) {
        (LayerKind::Recurrent(r), true) => per_layer(
            Init::Uniform {
                bound: 1.0 / (r.hidden as f64).sqrt(),
            },
            if np.bias { 1.0 } else { init.scale },
        ),
        (_, _) if np.bias => return Tensor::zeros([n as i64], (kind, Device::Cpu)),
        (LayerKind::Embedding { .. }, true) => per_layer(Init::Normal { std: 1.0 }, init.scale),
        // ViT's position embedding (and timm's class tokens): N(0, 0.02^2)
        // a position embedding: nn.Embedding's N(0, 1)
        (LayerKind::Parameter { table: Some(_), .. }, true) => per_layer(Init::Normal { std: 1.0 }, init.scale),
        (LayerKind::Parameter { .. }, true) => per_layer(Init::Normal { std: 0.02 }, init.scale),
        (LayerKind::MultiheadAttention { .. }, true) if np.name == "in_proj_weight" => per_layer(Init::XavierUniform, init.scale),
        _ => init.clone(),
    };
    draw(key, n, rows as usize, cols, rows, false, &spec, kind, true).0
}

/// Multi-head attention of queries `q` [N, L, E] over keys `k` and values `v` [N, Lk, E] (all
/// three the same tensor for self-attention) with libtorch's scaled_dot_product_attention (the
/// kernel nn.MultiheadAttention calls with need_weights=False); in_proj's rows are the q, k and
/// v projections, as PyTorch packs them.
fn attention(
    [q, k, v]: [&Tensor; 3],
    in_w: &Tensor,
    in_b: Option<&Tensor>,
    out_w: &Tensor,
    out_b: Option<&Tensor>,
    heads: i64,
    causal: bool,
) -> Tensor {
    let size = q.size();
    let (n, l, e) = (size[0], size[1], size[2]);
    let w = in_w.chunk(3, 0);
    let b: Vec<Option<Tensor>> = match in_b {
        Some(b) => b.chunk(3, 0).into_iter().map(Some).collect(),
        None => vec![None, None, None],
    };
    let split = |t: &Tensor| {
        let len = t.size()[1];
        t.reshape([n, len, heads, e / heads]).transpose(1, 2)
    };
    let y = Tensor::scaled_dot_product_attention(
        &split(&q.linear(&w[0], b[0].as_ref())),
        &split(&k.linear(&w[1], b[1].as_ref())),
        &split(&v.linear(&w[2], b[2].as_ref())),
        None::<Tensor>,
        0.0,
        causal,
        None,
        false,
    );
    y.transpose(1, 2).reshape([n, l, e]).linear(out_w, out_b)
}

/// An upsampling layer on `x`: nearest or (bi/tri)linear to the node's output, with the scales
/// and align_corners nn.Upsample gives the kernel.
pub(crate) fn upsample(x: &Tensor, node: &Node) -> Tensor {
    let LayerKind::Upsample {
        bilinear: linear,
        align_corners,
        ..
    } = node.layer.kind
    else {
        unreachable!("an upsampling")
    };
    // (a scale_factor is passed on to the kernel, which steps by 1/scale; a size is not)
    let axes = crate::spec::shape::upsample_axes(node.layer, &node.input[1..], &node.output[1..]);
    let scales: Vec<Option<f64>> = axes.iter().map(|a| a.scale).collect();
    if let [_, d, h, w] = node.output[..] {
        let size = [d as i64, h as i64, w as i64];
        return match linear {
            true => x.upsample_trilinear3d(size, align_corners, scales[0], scales[1], scales[2]),
            false => x.upsample_nearest3d(size, scales[0], scales[1], scales[2]),
        };
    }
    let size = [node.output[1] as i64, node.output[2] as i64];
    match linear {
        true => x.upsample_bilinear2d(size, align_corners, scales[0], scales[1]),
        false => x.upsample_nearest2d(size, scales[0], scales[1]),
    }
}

/// `F.pad`'s list for windows over the last `N` axes: (before, after) per axis, last axis first.
fn pad_list<const N: usize>(ws: &[Window; N], after: impl Fn(&Window) -> i64) -> Vec<i64> {
    ws.iter().rev().flat_map(|w| [w.pad_lo as i64, after(w)]).collect()
}

/// The input padded as a conv with `padding_mode` reflect, replicate or circular pads it.
pub(crate) fn fill_pad<const N: usize>(x: &Tensor, ws: [Window; N]) -> Tensor {
    x.pad(pad_list(&ws, |w| w.pad_hi as i64), ws[0].fill.name(), None)
}

/// A convolution's input and the padding to give libtorch's conv: the windows' own symmetric
/// zero padding, or (a `padding_mode` other than zeros, or "same" with an even span, whose extra
/// position PyTorch puts at the end) the input padded first and no padding left.
fn conv_input<const N: usize>(x: &Tensor, ws: [Window; N]) -> (Tensor, [i64; N]) {
    if ws[0].fill != crate::spec::Fill::Zeros {
        (fill_pad(x, ws), [0; N])
    } else if ws.iter().all(|w| w.pad_lo == w.pad_hi) {
        (x.shallow_clone(), ws.map(|w| w.pad_lo as i64))
    } else {
        (x.constant_pad_nd(pad_list(&ws, |w| w.pad_hi as i64)), [0; N])
    }
}

/// The probes' stand-in for a normalization or softmax: each element plus the sum of everything
/// it reads (its group of channels, every position along the coupled axes), so that its
/// gradient is positive exactly there.
pub(crate) fn coupled_sum(x: &Tensor, c: crate::spec::Coupling) -> Tensor {
    let size = x.size();
    let (n, ch) = (size[0], size[1]);
    let mut grouped: Vec<i64> = vec![n, c.groups as i64, ch / c.groups as i64];
    grouped.extend_from_slice(&size[2..]);
    let mut dims: Vec<i64> = vec![2];
    for (a, &coupled) in c.spatial.iter().enumerate() {
        if coupled && 2 + a < size.len() {
            dims.push(3 + a as i64);
        }
    }
    let g = x.reshape(grouped.as_slice());
    let sums = g.sum_dim_intlist(dims.as_slice(), true, x.kind());
    (&g + sums).reshape(size.as_slice())
}

pub fn activate(x: &Tensor, kind: Activation, negative_slope: f64) -> Tensor {
    match kind {
        Activation::Relu => x.relu(),
        // (relu6 is PyTorch's hardtanh(0, 6): no gradient at exactly 0 or 6, where clamp passes
        // one; a pre-activation of exactly 0 is common, after a ReLU6 into a zero-padded conv)
        Activation::Relu6 => x.relu6(),
        // (prelu runs libtorch's prelu with its weight; a shared scalar slope is leaky_relu)
        Activation::LeakyRelu | Activation::Prelu => x.where_self(&x.gt(0.0), &(x * negative_slope)),
        Activation::Sigmoid => x.sigmoid(),
        Activation::Tanh => x.tanh(),
        Activation::Gelu => x.gelu("none"),
        Activation::Silu => x.silu(),
        Activation::Hardswish => x.hardswish(),
        Activation::Hardsigmoid => x.hardsigmoid(),
        Activation::Mish => x.mish(),
        Activation::Identity => x.shallow_clone(),
    }
}

/// The sum of every window of a conv or pool (per channel): zero padding as the layer pads, and
/// as far past the end as a ceil-mode window reaches; then the kernel's rows and columns summed
/// as strided slices, one axis after the other, the axis that shrinks most first (the numbers of
/// an all-ones depthwise conv, at a fraction of libtorch's conv cost). Windows that tile every
/// axis (stride = kernel: 2x2 pools, global pools) are one reshape and one sum instead. Both
/// receptive-field probes use it.
pub(crate) fn summing_window<const N: usize>(x: &Tensor, ws: [Window; N]) -> Tensor {
    let extra = |w: &Window| -> i64 {
        let needed = (w.output - 1) * w.stride + w.span();
        (needed as i64 - (w.input + w.pad_lo) as i64).max(0)
    };
    let pads = pad_list(&ws, extra);
    // (libtorch copies a tensor padded by nothing)
    let padded = if pads.iter().all(|&p| p == 0) {
        x.shallow_clone()
    } else {
        x.constant_pad_nd(pads)
    };
    let axis_sum = |t: Tensor, dim: i64, w: &Window| -> Tensor {
        if w.kernel == 1 && w.stride == 1 && t.size()[dim as usize] == w.output as i64 {
            return t;
        }
        let (s, d, out) = (w.stride as i64, w.dilation as i64, w.output as i64);
        (0..w.kernel as i64)
            .map(|a| t.slice(dim, a * d, a * d + s * (out - 1) + 1, s))
            .reduce(|acc, v| acc + v)
            .expect("kernel >= 1")
    };
    let tiles = |w: &Window| w.stride == w.kernel && w.dilation == 1;
    if ws.iter().all(tiles) {
        // windows that tile every axis (a 2x2 pool, a global one): each axis split into
        // (window, position in it), the positions summed in one reduction
        let t = ws.iter().enumerate().fold(padded, |t, (a, w)| {
            let dim = 2 + a as i64;
            let used = (w.output * w.kernel) as i64;
            if t.size()[dim as usize] > used {
                t.narrow(dim, 0, used)
            } else {
                t
            }
        });
        let size = t.size();
        let mut split = size[..2].to_vec();
        for w in &ws {
            split.extend([w.output as i64, w.kernel as i64]);
        }
        let inner: Vec<i64> = (0..N as i64).map(|a| 3 + 2 * a).collect();
        return t.reshape(split.as_slice()).sum_dim_intlist(inner.as_slice(), false, None::<Kind>);
    }
    // the axes that shrink most first: the later axes' sums then run on fewer positions
    let mut order: Vec<usize> = (0..N).collect();
    order.sort_by(|&a, &b| (ws[a].output * ws[b].input).cmp(&(ws[b].output * ws[a].input)));
    order.into_iter().fold(padded, |t, a| axis_sum(t, 2 + a as i64, &ws[a]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drawing on several cores by jumping ahead gives exactly the values of one sequential pass
    /// over the layer's stream (weights first, then biases), in f64 and rounded to f32.
    #[test]
    fn parallel_draws_equal_the_sequential_stream() {
        let inits = [
            Init::PytorchDefault,
            Init::KaimingNormal,
            Init::Normal { std: 0.3 },
            Init::Uniform { bound: 2.0 },
        ];
        for init in inits {
            for n in [1usize, 7, 70_001, 300_007] {
                let spec = InitSpec {
                    init: init.clone(),
                    scale: 1.5,
                    seed: 42,
                };
                let (fan_in, fan_out, out) = (33.0, 17.0, 5);
                let mut rng = layer_rng(spec.seed, "3.body.1");
                let mut want = Vec::new();
                for _ in 0..n {
                    let v = match spec.init {
                        Init::PytorchDefault => rng.uniform(1.0 / f64::sqrt(fan_in)),
                        Init::KaimingNormal => rng.normal() * (2.0 / fan_in).sqrt(),
                        Init::Normal { std } => rng.normal() * std,
                        Init::Uniform { bound } => rng.uniform(bound),
                        _ => unreachable!(),
                    };
                    want.push(v * spec.scale);
                }
                let want_bias: Vec<f64> = match spec.init {
                    Init::PytorchDefault => (0..out).map(|_| rng.uniform(1.0 / f64::sqrt(fan_in))).collect(),
                    _ => vec![0.0; out],
                };
                let (w, b) = draw("3.body.1", n, out, fan_in, fan_out, true, &spec, Kind::Double, true);
                assert_eq!(Vec::<f64>::try_from(&w).unwrap(), want, "{init:?} n={n}");
                assert_eq!(Vec::<f64>::try_from(&b.unwrap()).unwrap(), want_bias, "{init:?} n={n}");
                let (w32, _) = draw("3.body.1", n, out, fan_in, fan_out, true, &spec, Kind::Float, true);
                let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                assert_eq!(Vec::<f32>::try_from(&w32).unwrap(), want32, "{init:?} n={n} f32");
            }
        }
    }
}
