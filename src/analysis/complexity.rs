//! Parameter and operation counts per layer under named conventions.
//!
//! Every layer first gets its *intrinsic* counts (multiplications, additions, MACs, comparisons,
//! activation evaluations), which do not depend on any convention but `additions`. The `flops`
//! column is then derived from them by the chosen [`FlopRule`]: either the service's own
//! conventions, or a `profile` that reproduces what a named tool reports.
use super::intervals::IntervalSet;
use super::receptive_field::node_type;
use crate::spec::{shape::numel, Graph, LayerKind, Node, SpecError, SpecResult};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Additions {
    /// Each product is added into a running sum that starts at zero, plus one add for the bias:
    /// additions = multiplications + bias outputs (the course's count).
    Accumulate,
    /// `k` products need `k-1` additions, plus one for the bias.
    Exact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum FlopUnit {
    /// multiplications + additions
    #[serde(rename = "mults_plus_adds")]
    MultsPlusAdds,
    /// 2 x MACs (torch.utils.flop_counter, DeepSpeed)
    #[serde(rename = "2mac")]
    TwoMac,
    /// MACs (what ptflops, fvcore, thop and torchvision call "FLOPs")
    #[serde(rename = "mac")]
    Mac,
}

/// Count as a tool does (the FLOP column only; the other columns stay the service's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Fvcore,
    Ptflops,
    TorchFlopCounter,
    Torchvision,
}

impl Profile {
    pub const NAMES: &'static [&'static str] = &["fvcore", "ptflops", "torch_flop_counter", "torchvision"];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Fvcore => "fvcore",
            Profile::Ptflops => "ptflops",
            Profile::TorchFlopCounter => "torch_flop_counter",
            Profile::Torchvision => "torchvision",
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        Some(match s {
            "fvcore" => Profile::Fvcore,
            "ptflops" => Profile::Ptflops,
            "torch_flop_counter" => Profile::TorchFlopCounter,
            "torchvision" => Profile::Torchvision,
            _ => return None,
        })
    }
}

/// The counting conventions of a table (the defaults unless the request chose others).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Conventions {
    pub additions: Additions,
    pub flops: FlopUnit,
    pub count_batchnorm: bool,
    pub count_activations: bool,
    pub count_pooling: bool,
    pub count_residual_adds: bool,
}

impl Default for Conventions {
    fn default() -> Self {
        Conventions {
            additions: Additions::Accumulate,
            flops: FlopUnit::MultsPlusAdds,
            count_batchnorm: false,
            count_activations: false,
            count_pooling: false,
            count_residual_adds: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlopRule {
    Conventions(Conventions),
    Profile(Profile),
}

/// Counts of one row. Integers are exact; they are u128 internally so that no spec can overflow
/// them, and checked into u64 when a response is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Counts {
    /// Weight elements (every parameter that is not a bias).
    pub params_weight: u128,
    pub params_bias: u128,
    pub params: u128,
    pub multiplications: u128,
    /// Additions under the `additions` convention (accumulate: one per product, plus the bias).
    pub additions: u128,
    /// Multiply-accumulates of the layer's products.
    pub macs: u128,
    /// The FLOP column under the chosen convention or profile.
    pub flops: u128,
    /// Activation-function evaluations.
    pub activations: u128,
    /// Comparisons (max pools, and the running max of a softmax).
    pub comparisons: u128,
    /// Elements of the layer's output for the whole batch.
    pub output_elements: u128,
    /// The output's bytes at the request's dtype.
    pub output_bytes: u128,
}

impl Counts {
    /// The count a table column names (`params`, `macs`, ...), as the JSON key says.
    pub fn get(&self, column: &str) -> Option<u128> {
        Some(match column {
            "params_weight" => self.params_weight,
            "params_bias" => self.params_bias,
            "params" => self.params,
            "multiplications" => self.multiplications,
            "additions" => self.additions,
            "macs" => self.macs,
            "flops" => self.flops,
            "activations" => self.activations,
            "comparisons" => self.comparisons,
            "output_elements" => self.output_elements,
            "output_bytes" => self.output_bytes,
            _ => return None,
        })
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.params_weight += o.params_weight;
        self.params_bias += o.params_bias;
        self.params += o.params;
        self.multiplications += o.multiplications;
        self.additions += o.additions;
        self.macs += o.macs;
        self.flops += o.flops;
        self.activations += o.activations;
        self.comparisons += o.comparisons;
        self.output_elements += o.output_elements;
        self.output_bytes += o.output_bytes;
    }
}

/// One row of the table: a layer, or the subtotal of a composite or of one of its parts.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = ComplexityRow)]
pub struct Row {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Layer type; `branch`, `body` or `shortcut` for the subtotal rows of a composite's parts.
    #[serde(rename = "type")]
    pub layer_type: String,
    pub depth: usize,
    pub input_shape: Vec<u64>,
    pub output_shape: Vec<u64>,
    /// True for rows that add up their children (composites and their parts); totals skip them.
    pub subtotal: bool,
    #[serde(flatten)]
    pub counts: Counts,
    pub params_percent: f64,
    pub flops_percent: f64,
    /// What the chosen profile leaves out of this row, where the tool does not count the op.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The rows in the model's order (a composite before its parts) and the totals over the layers.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = ComplexityTable)]
pub struct Table {
    pub rows: Vec<Row>,
    pub totals: Counts,
}

/// Sizes of adaptive pooling windows along one axis, summed: `sum_i (end_i - start_i)`.
fn adaptive_window_sum(input: u64, output: u64) -> u128 {
    (0..output)
        .map(|i| (((i + 1) * input).div_ceil(output) - (i * input) / output) as u128)
        .sum()
}

/// One axis of a transposed convolution: how many (input position, kernel tap) products land
/// inside the output (`stride*x - padding + dilation*t` in `0..output`), and how many output
/// positions receive at least one. Output positions reached by tap `t` form a progression with
/// step `stride`; the progressions of one residue modulo the stride are merged as intervals.
fn transposed_axis(input: u64, output: u64, k: u64, s: u64, p: u64, dl: u64) -> (u128, u128) {
    let (input, output, s, p, dl) = (input as i128, output as i128, s as i128, p as i128, dl as i128);
    let mut landed = 0u128;
    // per residue modulo the stride, the runs of x + q (o = s*(x + q) + r, never negative)
    let mut by_residue: std::collections::BTreeMap<i128, Vec<(u64, u64)>> = Default::default();
    for t in 0..k as i128 {
        let off = dl * t - p; // o = s*x + off
                              // x with 0 <= s*x + off <= output - 1, within 0..input
        let lo = (-off).div_euclid(s) + i128::from((-off).rem_euclid(s) != 0);
        let hi = (output - 1 - off).div_euclid(s);
        let (lo, hi) = (lo.max(0), hi.min(input - 1));
        if lo <= hi {
            landed += (hi - lo + 1) as u128;
            let r = off.rem_euclid(s);
            let q = (off - r) / s;
            by_residue.entry(r).or_default().push(((lo + q) as u64, (hi + q) as u64));
        }
    }
    let covered = by_residue
        .into_values()
        .map(|runs| IntervalSet::from_ranges(runs).count() as u128)
        .sum();
    (landed, covered)
}

/// A transposed convolution on `N` spatial axes (`[kernel, stride, padding, dilation]` per
/// axis): every input element times every weight of its group's kernels, as libtorch computes
/// (and FlopCounterMode counts); products landing in the cropped padding are discarded.
fn transposed<const N: usize>(
    c: &mut Counts,
    node: &Node,
    [kernel, stride, padding, dilation]: [&[u64; N]; 4],
    groups: u64,
    additions: Additions,
) {
    let w = node.dense_weight().expect("a transposed conv has a weight");
    c.params_weight = w.numel() as u128;
    c.params_bias = if w.bias { w.bias_len() as u128 } else { 0 };
    let products = numel(&node.input) as u128 * w.fan_in() as u128;
    c.multiplications = products;
    c.macs = products;
    let (c_in, c_out) = (node.input[0] as u128, node.output[0] as u128);
    let (mut landed, mut covered) = (c_in * (c_out / groups as u128), c_out);
    for a in 0..N {
        let (l, k) = transposed_axis(node.input[a + 1], node.output[a + 1], kernel[a], stride[a], padding[a], dilation[a]);
        landed *= l;
        covered *= k;
    }
    let bias_adds = if w.bias { c.output_elements } else { 0 };
    c.additions = match additions {
        Additions::Accumulate => landed + bias_adds,
        Additions::Exact => landed - covered + bias_adds,
    };
}

/// A normalization over groups of `n` elements (S = N / n statistics for N elements): mean (N
/// additions, S multiplications), variance (N additions to centre, N multiplications to square,
/// N additions to sum, S multiplications), 1/sqrt(var + eps) (S additions, S multiplications),
/// the centred values times it (N multiplications: one multiply-add per element with the
/// centring, as batchnorm's y = x*a + c), and the affine weight and bias (N of each).
fn normalization(c: &mut Counts, node: &Node, affine: bool) {
    let n_all = c.output_elements;
    let coupling = node.coupling().expect("a normalization couples elements");
    let stats = (if node.input.len() >= 3 {
        // an image's or a volume's positions along the axes not coupled each have their own
        (1..node.input.len())
            .filter(|&a| !coupling.spatial[a - 1])
            .map(|a| node.input[a])
            .product::<u64>()
            * coupling.groups
    } else {
        coupling.groups
    }) as u128;
    let a = if affine { n_all } else { 0 };
    c.additions = 3 * n_all + stats + a;
    c.multiplications = 2 * n_all + 3 * stats + a;
    c.macs = n_all + a;
}

/// Elements of a multi-tensor module's weights (or biases): PyTorch's `named_parameters()`.
fn param_numel(node: &Node, bias: bool) -> u128 {
    node.named_params()
        .unwrap_or_default()
        .iter()
        .filter(|p| p.bias == bias)
        .map(|p| p.numel() as u128)
        .sum()
}

/// An attention layer's query tokens L, key and value tokens Lk (L but for cross-attention) and
/// embedding size E, for the counts.
fn attention_sizes(node: &Node) -> (u128, u128, u128) {
    (node.input[0] as u128, node.key_tokens() as u128, node.input[1] as u128)
}

/// Intrinsic counts of one non-composite layer for one sample (flops left at zero).
fn intrinsic(node: &Node, additions: Additions) -> Counts {
    // a 1-D layer: its 2-D form's counts on [C, 1, L]; but linear interpolation weighs two
    // inputs where bilinear weighs four
    if let Some(lifted) = node.lifted() {
        let mut c = intrinsic(&lifted, additions);
        if let LayerKind::Upsample { bilinear: true, .. } = node.layer.kind {
            c.multiplications = 2 * c.output_elements;
            c.additions = c.output_elements;
        }
        return c;
    }
    let out = numel(&node.output) as u128;
    let mut c = Counts {
        output_elements: out,
        ..Counts::default()
    };
    match &node.layer.kind {
        LayerKind::Conv2d { .. } | LayerKind::Conv3d { .. } | LayerKind::Linear { .. } => {
            let w = node.dense_weight().expect("conv and linear have weights");
            let fan_in = w.fan_in() as u128;
            c.params_weight = w.numel() as u128;
            c.params_bias = if w.bias { w.out as u128 } else { 0 };
            c.multiplications = out * fan_in;
            c.macs = out * fan_in;
            let bias_adds = if w.bias { out } else { 0 };
            c.additions = match additions {
                Additions::Accumulate => out * fan_in + bias_adds,
                Additions::Exact => out * (fan_in - 1) + bias_adds,
            };
        }
        LayerKind::ConvTranspose2d {
            kernel,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => transposed(&mut c, node, [kernel, stride, padding, dilation], *groups, additions),
        LayerKind::ConvTranspose3d {
            kernel,
            stride,
            padding,
            dilation,
            groups,
            ..
        } => transposed(&mut c, node, [kernel, stride, padding, dilation], *groups, additions),
        // a learned tensor: its elements, no arithmetic
        LayerKind::Parameter { .. } => c.params_weight = param_numel(node, false),
        // views: no arithmetic
        LayerKind::FlattenSpatial
        | LayerKind::Transpose(_)
        | LayerKind::SelectToken { .. }
        | LayerKind::Reshape(_)
        | LayerKind::Narrow { .. }
        | LayerKind::ChannelShuffle { .. } => {}
        // a lookup: no arithmetic
        LayerKind::Embedding { .. } => {
            c.params_weight = param_numel(node, false);
        }
        LayerKind::MultiheadAttention { heads, bias, .. } => {
            // in_proj (3E x E per token), scores Q K^T (L x L x E over the heads), a scale and
            // a softmax per score, the scores times V (L x L x E), out_proj (E x E per token)
            // (cross-attention: the query's L tokens, the keys' and values' Lk)
            let ((l, lk, e), h) = (attention_sizes(node), *heads as u128);
            c.params_weight = param_numel(node, false);
            c.params_bias = param_numel(node, true);
            // projected tokens: the queries and the outputs (L each), the keys and values (Lk each)
            let projected = 2 * l + 2 * lk;
            let (proj, attend, scores) = (projected * e * e, 2 * l * lk * e, h * l * lk);
            c.macs = proj + attend;
            let bias_adds = if *bias { projected * e } else { 0 };
            c.multiplications = c.macs + 2 * scores;
            c.additions = match additions {
                Additions::Accumulate => c.macs,
                // dot products of E (projections), E/h (scores) and Lk (values) terms
                Additions::Exact => projected * e * (e - 1) + scores * (e / h - 1) + l * e * (lk - 1),
            } + bias_adds
                + 2 * scores;
            c.comparisons = scores;
            c.activations = scores;
        }
        // q k^T (L x S x E per head), a scale and a softmax per score, the weights times v
        // (L x S x Ev per head): the full L x S even under a causal mask, as the kernels compute
        LayerKind::ScaledDotProductAttention { .. } => {
            let [q, k, v] = [0, 1, 2].map(|i| &node.inputs[i].shape);
            let n = q.len();
            let h = if n == 3 { q[0] as u128 } else { 1 };
            let (l, s, e, ev) = (q[n - 2] as u128, k[n - 2] as u128, q[n - 1] as u128, v[n - 1] as u128);
            let scores = h * l * s;
            c.macs = scores * (e + ev);
            c.multiplications = c.macs + 2 * scores;
            c.additions = match additions {
                Additions::Accumulate => c.macs,
                Additions::Exact => scores * (e - 1) + h * l * ev * (s - 1),
            } + 2 * scores;
            c.comparisons = scores;
            c.activations = scores;
        }
        LayerKind::Recurrent(r) => {
            // per token, layer and direction: each of the gates' rows a dot product over
            // [x; h] (input_size + hidden_size terms) plus both biases, then the cell's
            // element-wise work per hidden unit (LSTM: 3 products, 1 sum, 5 sigmoids/tanhs;
            // GRU: 3, 2, 3; RNN: its one nonlinearity)
            let (l, hd) = (node.input[0] as u128, r.hidden as u128);
            let rows = r.rows() as u128;
            let (mults, adds, acts) = match r.cell {
                crate::spec::Cell::Lstm => (3, 1, 5),
                crate::spec::Cell::Gru => (3, 2, 3),
                _ => (0, 0, 1),
            };
            c.params_weight = param_numel(node, false);
            c.params_bias = param_numel(node, true);
            for layer in 0..r.layers {
                let input = r.layer_input(layer, node.input[1]) as u128;
                let steps = l * r.directions() as u128;
                let macs = steps * rows * (input + hd);
                c.macs += macs;
                c.multiplications += macs + steps * hd * mults;
                c.additions += match additions {
                    Additions::Accumulate => macs,
                    Additions::Exact => steps * rows * (input + hd - 1),
                } + if r.bias { 2 * steps * rows } else { 0 }
                    + steps * hd * adds;
                c.activations += steps * hd * acts;
            }
        }
        // bilinear: each output a weighted sum of four inputs (trilinear, on a volume: eight);
        // nearest: a copy
        LayerKind::Upsample { bilinear: true, .. } => {
            let inputs = if node.input.len() == 4 { 8 } else { 4 };
            c.multiplications = inputs * out;
            c.additions = (inputs - 1) * out;
        }
        LayerKind::Upsample { .. } | LayerKind::Pad { .. } | LayerKind::Pad3d { .. } => {}
        LayerKind::GroupNorm { affine, .. } | LayerKind::InstanceNorm { affine, .. } => {
            if *affine {
                c.params_weight = node.input[0] as u128;
                c.params_bias = node.input[0] as u128;
            }
            normalization(&mut c, node, *affine);
        }
        LayerKind::LayerNorm { shape, affine, bias, .. } => {
            let n = numel(shape) as u128;
            c.params_weight = if *affine { n } else { 0 };
            c.params_bias = if *bias { n } else { 0 };
            normalization(&mut c, node, *affine);
        }
        LayerKind::Mean { .. } => {
            // a sum over each output's inputs and one division
            c.additions = numel(&node.input) as u128 - out;
            c.multiplications = out;
        }
        LayerKind::Softmax { .. } => {
            // max (stability), x - max, exp, sum, divide: per element
            c.comparisons = out;
            c.additions = 2 * out;
            c.activations = out;
            c.multiplications = out;
        }
        LayerKind::BatchNorm { affine, .. } => {
            if *affine {
                c.params_weight = node.input[0] as u128;
                c.params_bias = node.input[0] as u128;
            }
            // Inference form y = x*a + c with a, c folded from the statistics (and affine).
            c.multiplications = out;
            c.additions = out;
            c.macs = out;
        }
        LayerKind::Activation { kind, parameters, .. } => {
            if *kind != crate::spec::Activation::Identity {
                c.activations = out;
            }
            // prelu's slopes
            c.params_weight = *parameters as u128;
        }
        LayerKind::MaxPool2d { kernel, .. } => {
            c.comparisons = out * (kernel[0] * kernel[1] - 1) as u128;
        }
        LayerKind::MaxPool3d { kernel, .. } => {
            c.comparisons = out * (kernel[0] * kernel[1] * kernel[2] - 1) as u128;
        }
        LayerKind::AvgPool2d { kernel, .. } => {
            c.additions = out * (kernel[0] * kernel[1] - 1) as u128;
            c.multiplications = out; // the division by the window size
        }
        LayerKind::AvgPool3d { kernel, .. } => {
            c.additions = out * (kernel[0] * kernel[1] * kernel[2] - 1) as u128;
            c.multiplications = out; // the division by the window size
        }
        LayerKind::AdaptiveAvgPool2d { .. }
        | LayerKind::AdaptiveMaxPool2d { .. }
        | LayerKind::AdaptiveAvgPool3d { .. }
        | LayerKind::AdaptiveMaxPool3d { .. } => {
            // window size - 1 operations per output, over the same windows for both kinds (the
            // windows' sizes summed per spatial axis, multiplied over the axes)
            let summed: u128 = (1..node.input.len())
                .map(|a| adaptive_window_sum(node.input[a], node.output[a]))
                .product();
            let per_window = node.input[0] as u128 * summed - out;
            if matches!(
                node.layer.kind,
                LayerKind::AdaptiveMaxPool2d { .. } | LayerKind::AdaptiveMaxPool3d { .. }
            ) {
                c.comparisons = per_window;
            } else {
                c.additions = per_window;
                c.multiplications = out; // the division by the window size
            }
        }
        // one operation per output element for each input after the first
        LayerKind::Residual { .. } | LayerKind::Add => c.additions = out * (node.inputs.len() as u128 - 1),
        LayerKind::Mul => c.multiplications = out * (node.inputs.len() as u128 - 1),
        LayerKind::Scale { .. } => c.multiplications = out,
        // a selection of -inf or the input: no arithmetic (no tool counts masked_fill)
        LayerKind::CausalMask => {}
        // [n, k] @ [k, m] (or a batch of them): k products per output, summed as a dense layer's
        LayerKind::MatMul => {
            let k = *node.inputs[0].shape.last().expect("a matrix") as u128;
            c.multiplications = out * k;
            c.macs = out * k;
            c.additions = match additions {
                Additions::Accumulate => out * k,
                Additions::Exact => out * (k - 1),
            };
        }
        LayerKind::Dropout { .. } | LayerKind::Flatten | LayerKind::Concat { .. } | LayerKind::Cat { .. } => {}
    }
    // a tied weight is its owner's tensor: PyTorch's parameters() yields it once, there
    if node.tie.is_some() {
        c.params_weight = 0;
    }
    c.params = c.params_weight + c.params_bias;
    c
}

/// The `flops` column for one layer under a rule.
fn flops(node: &Node, c: &Counts, rule: FlopRule) -> u128 {
    let k = &node.layer.kind;
    // a matmul's products are a dense layer's for every tool (FlopCounterMode's mm/bmm,
    // fvcore's aten::matmul, ptflops' torch.matmul hook: MACs)
    let is_dense = matches!(
        k,
        LayerKind::Conv2d { .. }
            | LayerKind::Conv3d { .. }
            | LayerKind::ConvTranspose2d { .. }
            | LayerKind::ConvTranspose3d { .. }
            | LayerKind::Linear { .. }
            | LayerKind::MatMul
    );
    let is_pool = matches!(
        k,
        LayerKind::MaxPool2d { .. }
            | LayerKind::AvgPool2d { .. }
            | LayerKind::AdaptiveAvgPool2d { .. }
            | LayerKind::AdaptiveMaxPool2d { .. }
            | LayerKind::MaxPool3d { .. }
            | LayerKind::AvgPool3d { .. }
            | LayerKind::AdaptiveAvgPool3d { .. }
            | LayerKind::AdaptiveMaxPool3d { .. }
    );
    let input = numel(&node.input) as u128;
    // attention and recurrent layers: their products are counted as a dense layer's, their
    // softmax, sigmoids and tanhs under count_activations
    let is_sequence_mixer = matches!(
        k,
        LayerKind::MultiheadAttention { .. } | LayerKind::Recurrent(_) | LayerKind::ScaledDotProductAttention { .. }
    );
    match rule {
        FlopRule::Conventions(conv) if is_sequence_mixer => {
            let by_unit = match conv.flops {
                FlopUnit::MultsPlusAdds => c.multiplications + c.additions,
                FlopUnit::TwoMac => 2 * c.macs,
                FlopUnit::Mac => c.macs,
            };
            by_unit + if conv.count_activations { c.activations } else { 0 }
        }
        // PyTorch 2.11 on CPU: attention's projections are addmm/mm, which FlopCounterMode counts,
        // but the fused scaled_dot_product kernel is not (need_weights=True takes bmm, counted);
        // GRU and RNN run as mm/addmm per step (counted), LSTM as one fused op (not counted)
        FlopRule::Profile(Profile::TorchFlopCounter) if is_sequence_mixer => match k {
            LayerKind::MultiheadAttention { need_weights, .. } => {
                let (l, lk, e) = attention_sizes(node);
                2 * (2 * l + 2 * lk) * e * e + if *need_weights { 2 * 2 * l * lk * e } else { 0 }
            }
            // F.scaled_dot_product_attention on CPU: the fused kernel, no FLOP formula
            LayerKind::Recurrent(r) if r.cell == crate::spec::Cell::Lstm => 0,
            LayerKind::ScaledDotProductAttention { .. } => 0,
            _ => 2 * c.macs,
        },
        // fvcore traces the module: attention's in/out projections are aten::linear (MACs) and,
        // with need_weights, its products bmm (q k^T becomes a baddbmm under a mask, which has
        // no handle); the fused attention kernel and the recurrent ops (aten::lstm, gru,
        // rnn_tanh, rnn_relu) have none
        FlopRule::Profile(Profile::Fvcore) if is_sequence_mixer => match k {
            LayerKind::MultiheadAttention { need_weights, causal, .. } => {
                let (l, lk, e) = attention_sizes(node);
                (2 * l + 2 * lk) * e * e
                    + match (need_weights, causal) {
                        (true, false) => 2 * l * lk * e,
                        (true, true) => l * lk * e,
                        _ => 0,
                    }
            }
            _ => 0,
        },
        // ptflops' module hooks (nn.MultiheadAttention, nn.LSTM/GRU/RNN), exactly as 0.7.x
        // writes them, plus its torch.bmm / baddbmm / F.softmax hooks on the need_weights path
        FlopRule::Profile(Profile::Ptflops) if is_sequence_mixer => match k {
            LayerKind::MultiheadAttention {
                heads,
                bias,
                need_weights,
                causal,
            } => {
                let ((l, lk, e), h) = (attention_sizes(node), *heads as u128);
                let hd = e / h;
                // q scaling, q/k/v projections (and their biases), per head q k^T, softmax and
                // attention times v, the output projection with its bias
                let hook = l * e
                    + (l + 2 * lk) * e * e
                    + if *bias { (l + 2 * lk) * e } else { 0 }
                    + h * (2 * l * lk * hd + l * lk)
                    + l * e * (e + 1);
                let functional = match (need_weights, causal) {
                    (true, false) => 2 * l * lk * e + h * l * lk,
                    // q k^T under the mask is a baddbmm: its products plus the mask's elements
                    (true, true) => 2 * l * lk * e + h * l * lk + l * lk,
                    _ => 0,
                };
                hook + functional
            }
            // no hook for F.scaled_dot_product_attention
            LayerKind::ScaledDotProductAttention { .. } => 0,
            LayerKind::Recurrent(r) => {
                // per layer and step: both matrix products, the cell's element-wise work (rnn 1,
                // gru 7, lstm 10 per hidden unit) and both biases; times the tokens and directions
                let extra = match r.cell {
                    crate::spec::Cell::Lstm => 10,
                    crate::spec::Cell::Gru => 7,
                    _ => 1,
                };
                let rows = r.rows() as u128;
                let per_step: u128 = (0..r.layers)
                    .map(|l| {
                        rows * r.layer_input(l, node.input[1]) as u128
                            + rows * r.hidden as u128
                            + extra * r.hidden as u128
                            + if r.bias { 2 * rows } else { 0 }
                    })
                    .sum();
                per_step * node.input[0] as u128 * r.directions() as u128
            }
            _ => 0,
        },
        FlopRule::Profile(_) if is_sequence_mixer => 0,
        FlopRule::Conventions(conv) => {
            let by_unit = |c: &Counts| match conv.flops {
                FlopUnit::MultsPlusAdds => c.multiplications + c.additions,
                FlopUnit::TwoMac => 2 * c.macs,
                FlopUnit::Mac => c.macs,
            };
            match k {
                _ if is_dense => by_unit(c),
                // every normalization follows count_batchnorm
                LayerKind::BatchNorm { .. }
                | LayerKind::GroupNorm { .. }
                | LayerKind::InstanceNorm { .. }
                | LayerKind::LayerNorm { .. }
                    if conv.count_batchnorm =>
                {
                    by_unit(c)
                }
                LayerKind::Softmax { .. } if conv.count_activations => c.activations,
                // a mean is an average pool
                LayerKind::Mean { .. } if conv.count_pooling => c.additions + c.multiplications,
                LayerKind::Activation { .. } if conv.count_activations => c.activations,
                _ if is_pool && conv.count_pooling => c.comparisons + c.additions + c.multiplications,
                // every element-wise merge: a residual's sum, a graph's add and mul
                LayerKind::Residual { .. } | LayerKind::Add | LayerKind::Mul | LayerKind::Scale { .. } if conv.count_residual_adds => {
                    c.additions + c.multiplications
                }
                _ => 0,
            }
        }
        FlopRule::Profile(Profile::TorchFlopCounter) => {
            if is_dense {
                2 * c.macs
            } else {
                0
            }
        }
        FlopRule::Profile(Profile::Torchvision) => {
            if is_dense {
                c.macs
            } else {
                0
            }
        }
        FlopRule::Profile(Profile::Fvcore) => match k {
            _ if is_dense => c.macs,
            LayerKind::BatchNorm { affine, .. } => {
                if *affine {
                    2 * input
                } else {
                    input
                }
            }
            // fvcore 0.1.5 has a handle for aten::adaptive_avg_pool2d, none for the 1-D op
            LayerKind::AdaptiveAvgPool2d { .. } if !node.layer.one_d => input,
            // fvcore's norm handle: 5 per element with an affine weight, else 4
            LayerKind::GroupNorm { affine, .. } | LayerKind::InstanceNorm { affine, .. } | LayerKind::LayerNorm { affine, .. } => {
                input * if *affine { 5 } else { 4 }
            }
            // aten::upsample_nearest2d: one per output element, aten::upsample_bilinear2d four
            // (the 1-D ops, aten::upsample_nearest1d and upsample_linear1d, have no handle)
            LayerKind::Upsample { bilinear, .. } if node.input.len() == 3 => c.output_elements * if *bilinear { 4 } else { 1 },
            _ => 0,
        },
        // ptflops 0.7.x's default pytorch backend hooks nn modules *and* counts torch.nn.functional
        // calls, so the F.relu / F.max_pool2d inside nn.ReLU / nn.MaxPool2d are counted twice; a
        // layer the model calls as a function (`functional`) gets the functional hook alone.
        FlopRule::Profile(Profile::Ptflops) => {
            let module = u128::from(!node.layer.functional);
            match k {
                // MACs plus one add per output for the bias; a convolution ptflops does not hook
                // (F.conv* in forward, or a subclass such as torchvision's Conv3DSimple: it looks
                // modules up by exact type) counts nothing, having no functional hook either
                _ if is_dense && module == 0 => 0,
                _ if is_dense => c.macs + if c.params_bias > 0 { c.output_elements } else { 0 },
                LayerKind::BatchNorm { affine, .. } => {
                    if *affine {
                        2 * input
                    } else {
                        input
                    }
                }
                LayerKind::Activation { kind, .. } => match kind {
                    // module hook and functional hook (F.relu, F.gelu)
                    crate::spec::Activation::Relu | crate::spec::Activation::Gelu | crate::spec::Activation::Prelu => {
                        (module + 1) * c.output_elements
                    }
                    // the module hook only: ptflops has no hook for F.leaky_relu
                    crate::spec::Activation::LeakyRelu => module * c.output_elements,
                    // nn.ReLU6 calls F.hardtanh, which ptflops does not count: its module hook
                    // alone; F.relu6 called in forward has a functional hook: once either way
                    crate::spec::Activation::Relu6 => c.output_elements,
                    // nn.SiLU has no module hook but calls F.silu, which has one
                    crate::spec::Activation::Silu => c.output_elements,
                    // sigmoid, tanh, hardswish, hardsigmoid, mish: no hook at all
                    _ => 0,
                },
                _ if is_pool => (module + 1) * input,
                // nn.GroupNorm and nn.InstanceNorm2d: batchnorm's hook; nn.LayerNorm and
                // nn.Softmax: one per element
                LayerKind::GroupNorm { affine, .. } | LayerKind::InstanceNorm { affine, .. } => input * if *affine { 2 } else { 1 },
                // torchvision's LayerNorm2d (marked functional: it calls F.layer_norm, and ptflops
                // has no hook for that class) counts nothing
                LayerKind::LayerNorm { .. } | LayerKind::Softmax { .. } => module * input,
                // nn.Upsample's hook (one per output element) and F.interpolate's (see
                // `interpolate_hook`)
                LayerKind::Upsample { .. } => module * c.output_elements + interpolate_hook(node).floor() as u128,
                _ => 0,
            }
        }
    }
}

/// ptflops 0.7's F.interpolate hook: the output's elements for a size; for a scale_factor the
/// input's elements times the product of the factors cast to int64 (a tuple, as nn.Upsample keeps
/// a list) or times `scale_factor ** dims` in float (one number, kept as a float): 1.5 on a
/// 9x10 map counts 1.5^2 * 90 = 202.5, and ptflops truncates only its float total.
fn interpolate_hook(node: &Node) -> f64 {
    let LayerKind::Upsample { scale, scale_each, .. } = &node.layer.kind else {
        unreachable!("an upsampling")
    };
    let input: u64 = node.input.iter().product();
    let dims = node.input.len() - 1;
    match scale {
        None => node.output.iter().product::<u64>() as f64,
        Some(s) if *scale_each => (input as u128 * s.iter().map(|f| f.trunc() as u128).product::<u128>()) as f64,
        Some(s) => input as f64 * s[0].powf(dims as f64),
    }
}

/// A row's note: a tied weight's owner, and what the profile's tool leaves out.
fn row_note(node: &Node, rule: FlopRule) -> Option<String> {
    let tie = node.tie.as_ref().map(|t| {
        format!(
            "its weight is {}'s tensor (weight_of): one parameter, counted in that row, as PyTorch's parameters() yields a shared tensor once",
            t.label
        )
    });
    match (tie, flop_note(node, rule)) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

/// Where a profile's tool does not count (part of) an op, the row says so instead of guessing.
fn flop_note(node: &Node, rule: FlopRule) -> Option<String> {
    match (rule, &node.layer.kind) {
        (FlopRule::Profile(Profile::TorchFlopCounter), LayerKind::Recurrent(r)) if r.cell == crate::spec::Cell::Lstm => Some(
            "FlopCounterMode counts nothing for nn.LSTM on CPU (PyTorch 2.11 runs it as one fused aten::lstm op, which has no FLOP formula)".into(),
        ),
        (
            FlopRule::Profile(Profile::TorchFlopCounter),
            LayerKind::MultiheadAttention {
                need_weights: false, ..
            },
        ) => Some(
            "FlopCounterMode counts the in/out projections only: on CPU the attention itself runs in _scaled_dot_product_flash_attention_for_cpu, which has no FLOP formula (need_weights=true computes it with bmm, which is counted); and under torch.no_grad() an eval-mode nn.MultiheadAttention takes its fused fast path, where FlopCounterMode counts nothing".into(),
        ),
        (FlopRule::Profile(Profile::Ptflops), LayerKind::Upsample { .. }) => {
            let v = interpolate_hook(node);
            (v.fract() != 0.0).then(|| {
                format!(
                    "ptflops's F.interpolate hook counts {v} here (the input's elements times scale_factor ** {} in float), and ptflops truncates only its float total: this row counts {}, so a model with two or more such rows can total up to one less per row than ptflops",
                    node.input.len() - 1,
                    v.floor()
                )
            })
        }
        (FlopRule::Profile(Profile::Fvcore), LayerKind::Upsample { .. }) if node.input.len() == 2 => {
            Some("fvcore 0.1.5 has no handle for aten::upsample_nearest1d or upsample_linear1d: it counts 0 here".into())
        }
        (FlopRule::Profile(Profile::Fvcore), LayerKind::Upsample { .. }) if node.input.len() == 4 => {
            Some("fvcore 0.1.5 has no handle for aten::upsample_nearest3d or upsample_trilinear3d: it counts 0 here".into())
        }
        (FlopRule::Profile(Profile::Fvcore), LayerKind::AdaptiveAvgPool2d { .. }) if node.layer.one_d => {
            Some("fvcore 0.1.5 has no handle for aten::adaptive_avg_pool1d (only for the 2-D op): it counts 0 here".into())
        }
        (FlopRule::Profile(Profile::Ptflops), LayerKind::Conv2d { .. } | LayerKind::Conv3d { .. }) if node.layer.functional => Some(
            "ptflops hooks modules by their exact type and has no hook for F.conv*: a convolution called as a function, or a subclass of the module (torchvision's Conv3DSimple), counts 0 here"
                .into(),
        ),
        (
            FlopRule::Profile(Profile::Fvcore),
            LayerKind::Activation {
                kind: crate::spec::Activation::Prelu,
                ..
            },
        ) => Some("fvcore 0.1.5 has no handle for aten::prelu (it warns of an unsupported operator): it counts 0 here".into()),
        (FlopRule::Profile(Profile::TorchFlopCounter), LayerKind::ScaledDotProductAttention { .. }) => Some(
            "FlopCounterMode counts nothing for F.scaled_dot_product_attention on CPU (PyTorch 2.11 runs it in _scaled_dot_product_flash_attention_for_cpu, which has no FLOP formula; on CUDA its flash and efficient kernels are counted, 2 per MAC)".into(),
        ),
        (FlopRule::Profile(Profile::Fvcore), LayerKind::ScaledDotProductAttention { .. }) => Some(
            "fvcore 0.1.5 has no handle for aten::scaled_dot_product_attention (it warns of an unsupported operator): it counts 0 here".into(),
        ),
        (FlopRule::Profile(Profile::Ptflops), LayerKind::ScaledDotProductAttention { .. }) => {
            Some("ptflops 0.7.x has no hook for F.scaled_dot_product_attention: it counts 0 here".into())
        }
        (FlopRule::Profile(Profile::Fvcore), LayerKind::Scale { .. }) => {
            Some("fvcore 0.1.5 has no handle for aten::mul or aten::div (it warns of an unsupported operator): it counts 0 here".into())
        }
        (FlopRule::Profile(Profile::Fvcore), LayerKind::AdaptiveAvgPool3d { .. }) => {
            Some("fvcore 0.1.5 has no handle for aten::adaptive_avg_pool3d (only for the 2-D op): it counts 0 here".into())
        }
        (FlopRule::Profile(Profile::Fvcore), LayerKind::Recurrent(r)) => Some(format!(
            "fvcore 0.1.5 has no handle for aten::{}: it counts 0 here",
            match r.cell {
                crate::spec::Cell::Lstm => "lstm",
                crate::spec::Cell::Gru => "gru",
                crate::spec::Cell::RnnTanh => "rnn_tanh",
                crate::spec::Cell::RnnRelu => "rnn_relu",
            }
        )),
        (FlopRule::Profile(Profile::Fvcore), LayerKind::MultiheadAttention { need_weights, causal, .. }) => Some(
            match (need_weights, causal) {
                (false, _) => "fvcore counts the in/out projections (aten::linear) only: aten::scaled_dot_product_attention has no handle",
                (true, false) => "fvcore counts the in/out projections (aten::linear) and both bmm; the softmax has no handle",
                (true, true) => "fvcore counts the in/out projections (aten::linear) and attention times v (bmm); q k^T under the mask is an aten::baddbmm and the softmax, which have no handle",
            }
            .into(),
        ),
        _ => None,
    }
}

/// The torchvision profile does not model attention or recurrent layers (torchvision publishes
/// no rule for them): such a model is refused (a 422 naming the layer) rather than counted as
/// zero.
pub fn check_profile(graph: &Graph, rule: FlopRule) -> SpecResult<()> {
    let FlopRule::Profile(p) = rule else { return Ok(()) };
    if p != Profile::Torchvision {
        return Ok(());
    }
    match graph.nodes.iter().find(|n| {
        matches!(
            n.layer.kind,
            LayerKind::MultiheadAttention { .. } | LayerKind::Recurrent(_) | LayerKind::ScaledDotProductAttention { .. }
        )
    }) {
        Some(n) => Err(SpecError::invalid(
            &n.pointer,
            format!(
                "the {} profile is not modeled for {} layers ({}) yet: use profile torch_flop_counter, fvcore or ptflops, or a convention",
                p.name(),
                n.layer.type_name(),
                n.path
            ),
        )),
        None => Ok(()),
    }
}

pub struct Options {
    pub rule: FlopRule,
    pub additions: Additions,
    pub batch: u64,
    pub dtype_bytes: u64,
}

/// The full table: a row per layer (composites followed by their parts' subtotal rows and
/// children), and the totals.
pub fn table(graph: &Graph, opts: &Options) -> SpecResult<Table> {
    check_profile(graph, opts.rule)?;
    let mut rows = Vec::new();
    let mut totals = Counts::default();
    // fvcore counts a JIT trace of the model, which keeps only what the outputs depend on
    let live = graph.live();
    for &id in &graph.top {
        totals += visit(graph, &live, id, opts, 0, &mut rows);
    }
    for r in &mut rows {
        r.params_percent = percent(r.counts.params, totals.params);
        r.flops_percent = percent(r.counts.flops, totals.flops);
    }
    // Output activations of the whole model: every layer's output counted once.
    if totals.flops > u64::MAX as u128
        || totals.multiplications > u64::MAX as u128
        || totals.additions > u64::MAX as u128
        || totals.output_bytes > u64::MAX as u128
    {
        return Err(SpecError::too_large(
            "",
            "u64_counts",
            u64::MAX,
            "the counts do not fit in 64 bits; reduce the model or the batch size",
        ));
    }
    Ok(Table { rows, totals })
}

fn percent(part: u128, whole: u128) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 100.0 * 1e4).round() / 1e4
    }
}

fn visit(graph: &Graph, live: &[bool], id: usize, opts: &Options, depth: usize, rows: &mut Vec<Row>) -> Counts {
    let node = &graph.nodes[id];
    let mut own = intrinsic(node, opts.additions);
    let batch = opts.batch as u128;
    own.flops = match opts.rule {
        // fvcore's JIT trace drops nodes that no output reads: it counts nothing for them
        FlopRule::Profile(Profile::Fvcore) if !live[id] => 0,
        rule => flops(node, &own, rule),
    };
    for f in [
        &mut own.multiplications,
        &mut own.additions,
        &mut own.macs,
        &mut own.flops,
        &mut own.activations,
        &mut own.comparisons,
        &mut own.output_elements,
    ] {
        *f *= batch;
    }
    own.output_bytes = own.output_elements * opts.dtype_bytes as u128;
    let slot = rows.len();
    rows.push(Row {
        path: node.path.clone(),
        name: node.layer.name.clone(),
        layer_type: node_type(node),
        depth,
        input_shape: node.input.clone(),
        output_shape: node.output.clone(),
        subtotal: !node.groups.is_empty(),
        counts: own,
        params_percent: 0.0,
        flops_percent: 0.0,
        note: row_note(node, opts.rule),
    });
    let mut total = own;
    for g in &node.groups {
        let gslot = rows.len();
        rows.push(Row {
            path: format!("{}.{}", node.path, g.label),
            name: None,
            layer_type: if g.label.starts_with("branches") {
                "branch".into()
            } else {
                g.label.clone()
            },
            depth: depth + 1,
            input_shape: node.input.clone(),
            output_shape: g.output.clone(),
            subtotal: true,
            counts: Counts::default(),
            params_percent: 0.0,
            flops_percent: 0.0,
            note: None,
        });
        let mut sub = Counts::default();
        for &child in &g.nodes {
            sub += visit(graph, live, child, opts, depth + 2, rows);
        }
        rows[gslot].counts = sub;
        total += sub;
    }
    rows[slot].counts = total;
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{infer, parse_model, SpecLimits};
    use serde_json::json;

    fn totals(preset: &str, rule: FlopRule) -> Counts {
        let spec = parse_model(&json!({ "preset": preset }), "", &SpecLimits::default()).unwrap();
        let g = infer(&spec, "").unwrap();
        table(
            &g,
            &Options {
                rule,
                additions: Additions::Accumulate,
                batch: 1,
                dtype_bytes: 4,
            },
        )
        .unwrap()
        .totals
    }

    #[test]
    fn inception_modules_match_the_course_by_hand() {
        let d = FlopRule::Conventions(Conventions::default());
        let naive = totals("inception_naive", d);
        // 1x1: 256*128+128; 3x3: 256*9*192+192; 5x5: 256*25*96+96
        assert_eq!(naive.params, 32_896 + 442_560 + 614_496);
        // multiplications: 32*32*out*fan_in per conv
        assert_eq!(naive.multiplications, 1024 * (128 * 256 + 192 * 256 * 9 + 96 * 256 * 25));
        assert_eq!(naive.multiplications, 1_115_684_864);
        assert_eq!(naive.additions, naive.multiplications + 1024 * (128 + 192 + 96));
        assert_eq!(naive.activations, 425_984);
        let reduced = totals("inception_reduced", d);
        assert_eq!(reduced.params, 32_896 + 127_232 + 170_144 + 16_448);
        assert_eq!(reduced.multiplications, 354_418_688);
        assert_eq!(reduced.additions, 355_041_280);
        assert_eq!(reduced.activations, 622_592);
    }

    #[test]
    fn torchvision_parameter_counts_and_gflops() {
        let tv = FlopRule::Profile(Profile::Torchvision);
        for (name, params, gmacs) in [
            ("vgg16", 138_357_544u128, 15.470),
            ("resnet18", 11_689_512, 1.814),
            ("resnet50", 25_557_032, 4.089),
            ("alexnet", 61_100_840, 0.714),
            ("mobilenet_v2", 3_504_872, 0.301),
            ("googlenet", 6_624_904, 1.498),
        ] {
            let t = totals(name, tv);
            assert_eq!(t.params, params, "{name} params");
            let g = (t.flops as f64 / 1e9 * 1000.0).round() / 1000.0;
            assert_eq!(g, gmacs, "{name} GFLOPS as torchvision publishes them");
        }
    }
}
