//! The layer spec: `torch.nn` layers with PyTorch's argument names and defaults.

/// A per-axis pair `[h, w]`; PyTorch accepts an int wherever both axes take the same value.
pub type Pair = [u64; 2];

/// A volume layer's per-axis triple `[d, h, w]` (depth, height, width).
pub type Triple = [u64; 3];

#[derive(Clone, Debug, PartialEq)]
pub enum ConvPadding<P = Pair> {
    /// Explicit symmetric zero padding per axis.
    Explicit(P),
    /// `padding="same"`: total `dilation*(k-1)` per axis, the odd one out on the bottom/right,
    /// exactly as `torch.nn.Conv2d` pads it.
    Same,
}

/// What a conv's padding holds: zeros, or (PyTorch's `padding_mode`) the input mirrored about
/// its edge row (`reflect`: row -1 is row 1) or its edge row repeated (`replicate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fill {
    #[default]
    Zeros,
    Reflect,
    Replicate,
    /// `circular`: the input wrapped around (row -1 is row n-1).
    Circular,
}

impl Fill {
    /// The input position a padded position `p` reads (`p` itself inside `0..n`; None for zeros).
    pub fn source(self, p: i64, n: i64) -> Option<i64> {
        if (0..n).contains(&p) {
            return Some(p);
        }
        match self {
            Fill::Zeros => None,
            Fill::Reflect if p < 0 => Some(-p),
            Fill::Reflect => Some(2 * (n - 1) - p),
            Fill::Replicate => Some(p.clamp(0, n - 1)),
            Fill::Circular => Some(p.rem_euclid(n)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fill::Zeros => "zeros",
            Fill::Reflect => "reflect",
            Fill::Replicate => "replicate",
            Fill::Circular => "circular",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Relu6,
    LeakyRelu,
    Sigmoid,
    Tanh,
    Gelu,
    Silu,
    Hardswish,
    Hardsigmoid,
    Mish,
    Identity,
    /// `torch.nn.PReLU`: leaky_relu with learned slopes (one, or one per channel).
    Prelu,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::Hardswish => "hardswish",
            Activation::Hardsigmoid => "hardsigmoid",
            Activation::Mish => "mish",
            Activation::Identity => "identity",
            Activation::Prelu => "prelu",
        }
    }
}

/// The recurrent cell of `torch.nn.LSTM`, `GRU` and `RNN` (with its `nonlinearity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
    RnnTanh,
    RnnRelu,
}

impl Cell {
    /// Gates per hidden unit: the rows of `weight_ih` are `gates * hidden_size`.
    pub fn gates(self) -> u64 {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::RnnTanh | Cell::RnnRelu => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
            Cell::RnnTanh | Cell::RnnRelu => "rnn",
        }
    }
}

/// A recurrent layer's arguments, and what follows from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recurrent {
    pub cell: Cell,
    pub hidden: u64,
    pub layers: u64,
    pub bias: bool,
    pub bidirectional: bool,
}

impl Recurrent {
    pub fn directions(&self) -> u64 {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Features of each output token (and of the input of every layer after the first).
    pub fn width(&self) -> u64 {
        self.hidden * self.directions()
    }

    /// Rows of each `weight_ih`/`weight_hh`: the gates times hidden_size.
    pub fn rows(&self) -> u64 {
        self.cell.gates() * self.hidden
    }

    /// Features layer `l` reads, for a first layer reading `input_size`.
    pub fn layer_input(&self, l: u64, input_size: u64) -> u64 {
        if l == 0 {
            input_size
        } else {
            self.width()
        }
    }

    /// Time steps taken one after the other on `tokens` tokens: tokens x layers x directions.
    pub fn steps(&self, tokens: u64) -> u128 {
        tokens as u128 * self.layers as u128 * self.directions() as u128
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// Graph form: a learned tensor of `shape` (no batch axis; an `nn.Parameter` such as ViT's
    /// class token `[1, D]` or position embedding `[L, D]`), read by add or concat; it reads no
    /// input.
    /// With `table`: a position embedding, `nn.Embedding(table, D)` read at `torch.arange(L)`
    /// (nanoGPT's `wpe(pos)`): rows `0..L` of a `[table, D]` weight, `shape` `[L, D]`.
    Parameter {
        shape: Vec<u64>,
        table: Option<u64>,
    },
    /// `x.flatten(2)` on an image `[C, H, W]`: `[C, H*W]`, the positions in row-major order.
    FlattenSpatial,
    /// `x.reshape(batch, *shape)` / `x.view(...)`, `nn.Unflatten(dim, sizes)` or a
    /// `nn.Flatten(start_dim, end_dim)` of other dims than the two kinds above: the same elements
    /// in row-major order, regrouped into 1 to 3 sample axes.
    Reshape(ReshapeTo),
    /// `x.transpose(dim0, dim1)` or `x.permute(*dims)` (PyTorch's dims, batch axis 0, which stays
    /// in place): the sample's axes reordered, `[A, B]` to `[B, A]` on a sequence, `[L, H, d]` to
    /// `[H, L, d]` where attention written by hand splits the features into heads.
    Transpose(Axes),
    /// `x[:, index]` on a sequence (`torch.select(x, 1, index)`): one token's features `[D]`.
    SelectToken {
        index: u64,
    },
    /// `torch.narrow(x, dim, start, length)` (`x[:, start:start + length]` along `dim`, PyTorch's
    /// dim, batch axis 0): channels `start..start + length` of an image, a volume or a feature
    /// vector (ShuffleNet's split, one part of `x.chunk(k, 1)`), or rows, columns or slices (a
    /// crop: the original U-Net's skip connections).
    Narrow {
        dim: i64,
        start: u64,
        length: u64,
    },
    /// `torch.nn.ChannelShuffle(groups)`: the channels viewed as `[groups, C / groups]`,
    /// transposed and flattened (ShuffleNet): output channel `o` is input channel
    /// `(o % groups) * (C / groups) + o / groups`.
    ChannelShuffle {
        groups: u64,
    },
    /// `torch.nn.Embedding(num_embeddings, embedding_dim)`: reads the model's int64 token ids
    /// `[L]` and gives `[L, embedding_dim]`.
    Embedding {
        num_embeddings: u64,
        dim: u64,
        padding_idx: Option<u64>,
    },
    /// `torch.nn.MultiheadAttention(embed_dim, num_heads)` as self-attention on a sequence
    /// `[L, E]` (`attn(x, x, x, need_weights=..., is_causal=...)[0]`; the sample is the same
    /// whether the module is batch_first or not).
    MultiheadAttention {
        heads: u64,
        bias: bool,
        causal: bool,
        /// `need_weights=True` computes the attention matrix by `bmm` (which FlopCounterMode
        /// counts) instead of the fused kernel (which it does not count on CPU).
        need_weights: bool,
    },
    /// `torch.nn.LSTM`, `GRU`, `RNN` on a sequence `[L, input_size]`; the layer's output is the
    /// module's first result, `[L, hidden_size * directions]`.
    Recurrent(Recurrent),

    Conv2d {
        out_channels: u64,
        kernel: Pair,
        stride: Pair,
        padding: ConvPadding,
        dilation: Pair,
        groups: u64,
        bias: bool,
        padding_mode: Fill,
    },
    /// `torch.nn.ConvTranspose2d`: input position `x` adds its kernel times the input into
    /// outputs `stride*x - padding + dilation*t` (t over the kernel); `output_padding` adds rows
    /// at the end.
    ConvTranspose2d {
        out_channels: u64,
        kernel: Pair,
        stride: Pair,
        padding: Pair,
        output_padding: Pair,
        dilation: Pair,
        groups: u64,
        bias: bool,
    },
    /// `torch.nn.Upsample` per axis, from `scale_factor` (output `floor(input * scale)`, the
    /// kernel stepping by `1/scale`) or from a `size` (stepping by `input/output`). Output row `o`
    /// reads the rows [`crate::spec::interp::Interp::rows`] gives: nearest one row, the linear
    /// modes one or two neighbours (a neighbour whose weight is zero is not read), as PyTorch's
    /// float arithmetic finds them; a linear upsampling whose rows depend on that arithmetic
    /// (float32 or float64, fused or not) is refused. `scale` and `size` as given: one number
    /// (every axis of the input), or one per axis (`[h, w]`, a volume's `[d, h, w]`). On a volume
    /// (mode trilinear, `trilinear`) the same on three axes, depth first; `bilinear` is any
    /// linear mode.
    Upsample {
        scale: Option<Vec<f64>>,
        /// `scale_factor` was a list (nn.Upsample keeps a tuple), not one number (a float).
        scale_each: bool,
        size: Option<Vec<u64>>,
        bilinear: bool,
        trilinear: bool,
        align_corners: bool,
    },
    Linear {
        out_features: u64,
        bias: bool,
    },
    /// `torch.nn.Conv3d` on a volume `[C, D, H, W]` (a video clip, a scan): Conv2d's rules on
    /// three axes, depth first.
    Conv3d {
        out_channels: u64,
        kernel: Triple,
        stride: Triple,
        padding: ConvPadding<Triple>,
        dilation: Triple,
        groups: u64,
        bias: bool,
        padding_mode: Fill,
    },
    /// `torch.nn.ConvTranspose3d` on a volume: ConvTranspose2d's rules on three axes, depth
    /// first.
    ConvTranspose3d {
        out_channels: u64,
        kernel: Triple,
        stride: Triple,
        padding: Triple,
        output_padding: Triple,
        dilation: Triple,
        groups: u64,
        bias: bool,
    },
    /// `torch.nn.MaxPool3d` on a volume.
    MaxPool3d {
        kernel: Triple,
        stride: Triple,
        padding: Triple,
        dilation: Triple,
        ceil_mode: bool,
    },
    /// `torch.nn.AvgPool3d` on a volume.
    AvgPool3d {
        kernel: Triple,
        stride: Triple,
        padding: Triple,
        ceil_mode: bool,
        count_include_pad: bool,
    },
    /// `torch.nn.AdaptiveAvgPool3d` on a volume (`None` keeps that axis's input size).
    AdaptiveAvgPool3d {
        output: [Option<u64>; 3],
    },
    /// `torch.nn.AdaptiveMaxPool3d` on a volume (`None` keeps that axis's input size).
    AdaptiveMaxPool3d {
        output: [Option<u64>; 3],
    },
    MaxPool2d {
        kernel: Pair,
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        ceil_mode: bool,
    },
    AvgPool2d {
        kernel: Pair,
        stride: Pair,
        padding: Pair,
        ceil_mode: bool,
        count_include_pad: bool,
    },
    /// `None` on an axis keeps that axis's input size (PyTorch's `output_size=(None, 7)`).
    AdaptiveAvgPool2d {
        output: [Option<u64>; 2],
    },
    /// PyTorch's adaptive max pool: the same windows as the average one, a maximum over each.
    AdaptiveMaxPool2d {
        output: [Option<u64>; 2],
    },
    /// `batchnorm2d` on `[C, H, W]`, `batchnorm1d` on `[F]`; `affine` adds weight and bias.
    BatchNorm {
        affine: bool,
        eps: f64,
    },
    /// `torch.nn.GroupNorm(num_groups, num_channels)`: statistics over each group of channels
    /// and every position.
    GroupNorm {
        groups: u64,
        affine: bool,
        eps: f64,
    },
    /// `torch.nn.InstanceNorm2d` on an image, `InstanceNorm3d` on a volume (`volume`), with
    /// instance statistics (`track_running_stats=False`): over every position of each channel.
    InstanceNorm {
        affine: bool,
        eps: f64,
        volume: bool,
    },
    /// `torch.nn.LayerNorm(normalized_shape)`: statistics over the trailing axes it names; with
    /// `channels` (`layernorm2d`), over the channels at each position of an image `[C, H, W]`
    /// (torchvision's LayerNorm2d, or Permute + LayerNorm([C]) + Permute), `shape` being `[C]`.
    LayerNorm {
        shape: Vec<u64>,
        affine: bool,
        bias: bool,
        eps: f64,
        channels: bool,
    },
    /// `torch.nn.ZeroPad2d`, `ReflectionPad2d`, `ReplicationPad2d`: `[left, right, top,
    /// bottom]` rows and columns added around the map, holding zeros or the image's own values.
    Pad {
        pad: [u64; 4],
        fill: Fill,
    },
    /// `torch.nn.ZeroPad3d`, `ReflectionPad3d`, `ReplicationPad3d`, `CircularPad3d` on a volume:
    /// `[left, right, top, bottom, front, back]` columns, rows and slices added around it.
    Pad3d {
        pad: [u64; 6],
        fill: Fill,
    },
    /// `torch.nn.Softmax(dim)`, PyTorch's dim (batch axis 0).
    Softmax {
        dim: i64,
    },
    /// `x.mean(dim, keepdim)` with PyTorch's dims (batch axis 0): over height and/or width (a
    /// window as wide as the axis), or over the channels keeping the axis.
    Mean {
        dims: Vec<i64>,
        keepdim: bool,
    },
    Activation {
        kind: Activation,
        /// leaky_relu's negative_slope, prelu's `init`; unused otherwise.
        negative_slope: f64,
        /// prelu's `num_parameters` (1, or the channels: axis 0 of the sample); 0 otherwise.
        parameters: u64,
    },
    Dropout {
        p: f64,
    },
    /// `x * factor` (or `x / c` as factor 1/c): attention's 1/sqrt(d), by hand.
    Scale {
        factor: f64,
    },
    /// `x.masked_fill(torch.ones(n, m, dtype=torch.bool).triu(1), float('-inf'))` on the last two
    /// axes `[n, m]` (attention scores): element `(i, j)` is `-inf` where `j > i`, the input
    /// elsewhere. A causal mask written by hand (nanoGPT's `masked_fill` of its `tril` buffer, or
    /// a constant mask added to the scores).
    CausalMask,
    Flatten,
    /// Channel concatenation of parallel branches (Inception).
    Concat {
        branches: Vec<Vec<Layer>>,
    },
    /// `body(x) + shortcut(x)`; an empty shortcut is the identity (ResNet).
    Residual {
        body: Vec<Layer>,
        shortcut: Vec<Layer>,
    },
    /// Graph form: the element-wise sum of the node's inputs, with PyTorch broadcasting.
    Add,
    /// Graph form: the element-wise product of the node's inputs, with PyTorch broadcasting
    /// (squeeze-and-excitation gating `[C, 1, 1] * [C, H, W]`).
    Mul,
    /// Graph form: `torch.cat(inputs, dim)` with PyTorch's `dim` (batch axis included: `dim=1`
    /// is the channels; negative counts from the end).
    Cat {
        dim: i64,
    },
    /// Graph form: `torch.matmul(a, b)` of two-axis samples `[n, k] @ [k, m]` (attention's
    /// `q @ k.transpose(-2, -1)`, `x @ W` with a parameter `W`): `[n, m]`; or of two batches of
    /// them (attention's heads) `[h, n, k] @ [h, k, m]`: `[h, n, m]`.
    MatMul,
    /// Graph form: `F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)` on
    /// its three inputs `[L, E]`, `[S, E]`, `[S, Ev]`, or batches of them over heads
    /// (`[H, L, E]`...): `softmax(q @ k^T * scale) @ v`, `[L, Ev]`; `scale` None is
    /// `1/sqrt(E)`; `causal` masks key `j > i` for query `i` (PyTorch's top-left `tril`).
    ScaledDotProductAttention {
        causal: bool,
        scale: Option<f64>,
    },
}

/// Which axes a transpose or permute reorders, in PyTorch's dims (batch axis 0, negative from
/// the end); resolved against the input's rank by [`Axes::sample_perm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axes {
    /// `x.transpose(dim0, dim1)`.
    Swap(i64, i64),
    /// `x.permute(*dims)`: `dims[0]` is the batch axis, 0.
    Order(Vec<i64>),
}

impl Axes {
    /// The permutation of a sample of `rank` axes: output axis `a` is input axis `perm[a]`; an
    /// error names the argument (`dim0`, `dim1` or `dims`) and the reason.
    pub fn sample_perm(&self, rank: usize) -> Result<Vec<usize>, (&'static str, String)> {
        let full = rank as i64 + 1;
        let resolve = |d: i64| if d < 0 { d + full } else { d };
        let mut perm: Vec<usize> = (0..rank).collect();
        match self {
            Axes::Swap(a, b) => {
                for (key, d) in [("dim0", *a), ("dim1", *b)] {
                    let r = resolve(d);
                    if r < 1 || r >= full {
                        return Err((
                            key,
                            format!("dim {d} is not a sample axis of a tensor with {full} axes (the batch axis, dim 0, stays): expected 1..{} or -{}..-1", full - 1, full - 1),
                        ));
                    }
                }
                perm.swap(resolve(*a) as usize - 1, resolve(*b) as usize - 1);
            }
            Axes::Order(dims) => {
                let resolved: Vec<i64> = dims.iter().map(|&d| resolve(d)).collect();
                let mut seen = resolved.clone();
                seen.sort_unstable();
                if dims.len() as i64 != full || seen != (0..full).collect::<Vec<_>>() || resolved[0] != 0 {
                    return Err((
                        "dims",
                        format!("{dims:?} must order all {full} axes of the input (batch first: dims[0] is 0), each once"),
                    ));
                }
                perm = resolved[1..].iter().map(|&d| d as usize - 1).collect();
            }
        }
        Ok(perm)
    }
}

/// How a reshape names its output (shape inference resolves it against the input).
#[derive(Clone, Debug, PartialEq)]
pub enum ReshapeTo {
    /// The sample's shape (no batch axis); one entry may be -1 (inferred).
    Shape(Vec<i64>),
    /// `nn.Unflatten(dim, sizes)`: PyTorch's dim (batch axis 0) split into `sizes` (one may be -1).
    Unflatten { dim: i64, sizes: Vec<i64> },
    /// `nn.Flatten(start_dim, end_dim)`: PyTorch's dims (batch axis 0, negative from the end).
    Flatten { start: i64, end: i64 },
}

/// The layers that combine several tensors (the composites and the graph form's merges): every
/// analysis combines them at the merge node, never through a one-input rule. A pattern:
/// `crate::spec::merges!() => unreachable!(...)`.
#[macro_export]
macro_rules! merges {
    () => {
        $crate::spec::LayerKind::Concat { .. }
            | $crate::spec::LayerKind::Residual { .. }
            | $crate::spec::LayerKind::Add
            | $crate::spec::LayerKind::Mul
            | $crate::spec::LayerKind::Cat { .. }
            | $crate::spec::LayerKind::MatMul
            | $crate::spec::LayerKind::ScaledDotProductAttention { .. }
    };
}

/// Which elements of its input one output element of a normalization or softmax reads: the
/// whole group of channels (axis 0; `groups` groups, so 1 is every channel and C each channel
/// alone) and, on spatial inputs, every position along the coupled axes (`spatial[a]` is
/// sample axis `a + 1`: height and width of an image, depth, height and width of a volume). On
/// a flat `[F]` input the features are axis 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coupling {
    pub groups: u64,
    pub spatial: [bool; 3],
}

/// How a node with several inputs combines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    Add,
    Mul,
    /// Concatenation along this axis of the sample (0: channels).
    Cat(usize),
    /// The matrix product of the two inputs.
    MatMul,
    /// Attention of the first input (queries) over the second (keys) and third (values).
    Attention,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: Option<String>,
    pub kind: LayerKind,
    /// `in_channels` / `in_features` / `num_features` when the spec states it: checked against
    /// the inferred shape, never trusted.
    pub declared_in: Option<u64>,
    /// `functional: true`: the model calls `torch.nn.functional`'s form in its forward (as
    /// torchvision's GoogLeNet calls F.relu) instead of a module. The network is the same; only
    /// tools that hook modules (ptflops) see it differently.
    pub functional: bool,
    /// The 1-D form of a 2-D layer (`conv1d`, `conv_transpose1d`, `maxpool1d`, `avgpool1d`,
    /// `adaptive_avgpool1d`, `adaptive_maxpool1d`, the `*pad1d` pads): it reads a signal `[C, L]` and is, in every
    /// analysis, its 2-D form on `[C, 1, L]` (height 1, every height argument 1 or 0), as PyTorch
    /// itself computes it. Its pairs hold `[1 or 0, the length argument]`.
    pub one_d: bool,
    /// `weight_of: NAME` on a linear or an embedding: its weight is the tensor of layer NAME (a
    /// linear or an embedding of the same weight shape), as GPT-2 ties `lm_head.weight` to
    /// `wte.weight`: one parameter, counted and reported once under NAME.
    pub weight_of: Option<String>,
}

impl Layer {
    /// Whether the layer works as its 2-D form on `[C, 1, L]` for an input of `rank` axes: a 1-D
    /// layer, or an upsampling of a signal `[C, L]` (nn.Upsample takes its form from the input).
    pub fn one_d_on(&self, rank: usize) -> bool {
        self.one_d || (rank == 2 && matches!(self.kind, LayerKind::Upsample { .. }))
    }

    /// conv3d, conv_transpose3d, the 3-D pools and pads: they read a volume `[C, D, H, W]`.
    pub fn volume_op(&self) -> bool {
        matches!(
            self.kind,
            LayerKind::Conv3d { .. }
                | LayerKind::ConvTranspose3d { .. }
                | LayerKind::Pad3d { .. }
                | LayerKind::MaxPool3d { .. }
                | LayerKind::AvgPool3d { .. }
                | LayerKind::AdaptiveAvgPool3d { .. }
                | LayerKind::AdaptiveMaxPool3d { .. }
        )
    }

    /// Whether the layer reads a volume `[C, D, H, W]`: a volume layer, one that works on any
    /// tensor element by element (batchnorm per channel) or flattens it, or a normalization over
    /// every position (groupnorm, instancenorm3d). (The merges take volumes too; every other
    /// layer refuses one.)
    pub fn reads_volumes(&self) -> bool {
        self.volume_op()
            || matches!(
                self.kind,
                LayerKind::BatchNorm { .. }
                    | LayerKind::Activation { .. }
                    | LayerKind::Dropout { .. }
                    | LayerKind::Scale { .. }
                    | LayerKind::Flatten
                    | LayerKind::GroupNorm { .. }
                    | LayerKind::InstanceNorm { volume: true, .. }
                    | LayerKind::LayerNorm { channels: false, .. }
                    | LayerKind::Upsample { .. }
                    | LayerKind::Narrow { .. }
                    | LayerKind::ChannelShuffle { .. }
            )
    }

    /// The canonical `type` string, as the spec and every response spell it.
    pub fn type_name(&self) -> &'static str {
        if self.one_d {
            return match &self.kind {
                LayerKind::Conv2d { .. } => "conv1d",
                LayerKind::ConvTranspose2d { .. } => "conv_transpose1d",
                LayerKind::MaxPool2d { .. } => "maxpool1d",
                LayerKind::AvgPool2d { .. } => "avgpool1d",
                LayerKind::AdaptiveAvgPool2d { .. } => "adaptive_avgpool1d",
                LayerKind::AdaptiveMaxPool2d { .. } => "adaptive_maxpool1d",
                LayerKind::Pad { fill: Fill::Zeros, .. } => "zeropad1d",
                LayerKind::Pad { fill: Fill::Reflect, .. } => "reflectionpad1d",
                LayerKind::Pad { fill: Fill::Replicate, .. } => "replicationpad1d",
                LayerKind::Pad { fill: Fill::Circular, .. } => "circularpad1d",
                LayerKind::Upsample { .. } => "upsample",
                _ => unreachable!("only sliding-window layers have a 1-D form"),
            };
        }
        match &self.kind {
            LayerKind::Embedding { .. } => "embedding",
            LayerKind::Parameter { table: Some(_), .. } => "embedding",
            LayerKind::Parameter { .. } => "parameter",
            LayerKind::FlattenSpatial => "flatten",
            LayerKind::Reshape(ReshapeTo::Shape(_)) => "reshape",
            LayerKind::Reshape(ReshapeTo::Unflatten { .. }) => "unflatten",
            LayerKind::Reshape(ReshapeTo::Flatten { .. }) => "flatten",
            LayerKind::Transpose(Axes::Swap(..)) => "transpose",
            LayerKind::Transpose(Axes::Order(_)) => "permute",
            LayerKind::SelectToken { .. } => "select",
            LayerKind::Narrow { .. } => "narrow",
            LayerKind::ChannelShuffle { .. } => "channel_shuffle",
            LayerKind::MultiheadAttention { .. } => "multihead_attention",
            LayerKind::Recurrent(r) => r.cell.name(),
            LayerKind::Conv2d { .. } => "conv2d",
            LayerKind::ConvTranspose2d { .. } => "conv_transpose2d",
            LayerKind::Upsample { .. } => "upsample",
            LayerKind::Linear { .. } => "linear",
            LayerKind::Conv3d { .. } => "conv3d",
            LayerKind::ConvTranspose3d { .. } => "conv_transpose3d",
            LayerKind::MaxPool3d { .. } => "maxpool3d",
            LayerKind::AvgPool3d { .. } => "avgpool3d",
            LayerKind::AdaptiveAvgPool3d { .. } => "adaptive_avgpool3d",
            LayerKind::AdaptiveMaxPool3d { .. } => "adaptive_maxpool3d",
            LayerKind::MaxPool2d { .. } => "maxpool2d",
            LayerKind::AvgPool2d { .. } => "avgpool2d",
            LayerKind::AdaptiveAvgPool2d { .. } => "adaptive_avgpool2d",
            LayerKind::AdaptiveMaxPool2d { .. } => "adaptive_maxpool2d",
            LayerKind::BatchNorm { .. } => "batchnorm",
            LayerKind::GroupNorm { .. } => "groupnorm",
            LayerKind::InstanceNorm { volume: false, .. } => "instancenorm2d",
            LayerKind::InstanceNorm { volume: true, .. } => "instancenorm3d",
            LayerKind::LayerNorm { channels: true, .. } => "layernorm2d",
            LayerKind::LayerNorm { .. } => "layernorm",
            LayerKind::Softmax { .. } => "softmax",
            LayerKind::Mean { .. } => "mean",
            LayerKind::Pad3d { fill: Fill::Zeros, .. } => "zeropad3d",
            LayerKind::Pad3d { fill: Fill::Reflect, .. } => "reflectionpad3d",
            LayerKind::Pad3d { fill: Fill::Replicate, .. } => "replicationpad3d",
            LayerKind::Pad3d { fill: Fill::Circular, .. } => "circularpad3d",
            LayerKind::Pad { fill: Fill::Zeros, .. } => "zeropad2d",
            LayerKind::Pad { fill: Fill::Reflect, .. } => "reflectionpad2d",
            LayerKind::Pad { fill: Fill::Replicate, .. } => "replicationpad2d",
            LayerKind::Pad { fill: Fill::Circular, .. } => "circularpad2d",
            LayerKind::Activation { kind, .. } => kind.name(),
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Scale { .. } => "scale",
            LayerKind::CausalMask => "causal_mask",
            LayerKind::Flatten => "flatten",
            LayerKind::Concat { .. } => "concat",
            LayerKind::Residual { .. } => "residual",
            LayerKind::Add => "add",
            LayerKind::Mul => "mul",
            LayerKind::Cat { .. } => "concat",
            LayerKind::MatMul => "matmul",
            LayerKind::ScaledDotProductAttention { .. } => "scaled_dot_product_attention",
        }
    }
}

/// One node of the graph form: a layer (its `name` is the node's name) and the names of the
/// tensors it reads (`input` is the graph's input).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphNode {
    pub layer: Layer,
    pub inputs: Vec<String>,
}

/// The graph form: nodes in any order (sorted topologically by shape inference) and the names
/// of the nodes whose tensors the model returns.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphSpec {
    pub nodes: Vec<GraphNode>,
    pub outputs: Vec<String>,
}

/// The name by which graph nodes read the model's input.
pub const GRAPH_INPUT: &str = "input";

/// A whole model: the shape of one input sample (no batch axis) and its layers, either as a
/// sequential list (`layers`) or as a graph (`graph`, with `layers` empty).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub input_shape: Vec<u64>,
    /// `input_dtype: "int64"`: the input holds token ids (read only by embeddings).
    pub token_ids: bool,
    pub layers: Vec<Layer>,
    pub graph: Option<GraphSpec>,
    /// Set when the model came from `{"preset": NAME}`.
    pub preset: Option<String>,
    /// The model's own weights, by node name: `(role, values)` with roles `weight`, `bias`,
    /// `running_mean`, `running_var` in PyTorch's shapes, row-major (an ONNX file's
    /// initializers).
    pub weights: Option<std::sync::Arc<ModelWeights>>,
    /// Where the model came from when not from JSON: `onnx`.
    pub source: Option<String>,
}

/// Weights carried by a model file: node name -> `(role, values)`.
pub type ModelWeights = std::collections::HashMap<String, Vec<(String, std::sync::Arc<LazyValues>)>>;

/// A tensor's values as f64, widened from the file's float32 bytes only when first read: a table
/// of resnet50's file never reads its 25.6 M weights, a gradient run reads them once.
pub struct LazyValues {
    raw: Option<bytes::Bytes>,
    /// The raw values are a `rows x cols` matrix to be read transposed.
    transpose: Option<(usize, usize)>,
    cell: std::sync::OnceLock<Vec<f64>>,
}

impl LazyValues {
    /// Little-endian float32 values, kept as the file's bytes until read.
    pub fn f32_le(raw: bytes::Bytes) -> Self {
        LazyValues {
            raw: Some(raw),
            transpose: None,
            cell: std::sync::OnceLock::new(),
        }
    }

    /// This `rows x cols` matrix transposed, still unread where it was (an ONNX MatMul's
    /// `[in, out]` operand as PyTorch's `[out, in]` weight).
    pub fn transposed(&self, rows: usize, cols: usize) -> Self {
        match (&self.raw, self.cell.get(), self.transpose) {
            (Some(raw), None, None) => LazyValues {
                raw: Some(raw.clone()),
                transpose: Some((rows, cols)),
                cell: std::sync::OnceLock::new(),
            },
            _ => {
                let v: &[f64] = self;
                let mut t = vec![0.0; v.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        t[c * rows + r] = v[r * cols + c];
                    }
                }
                t.into()
            }
        }
    }

    /// How many values, without reading them.
    pub fn count(&self) -> usize {
        match (&self.raw, self.cell.get()) {
            (_, Some(v)) => v.len(),
            (Some(b), None) => b.len() / 4,
            (None, None) => 0,
        }
    }
}

impl From<Vec<f64>> for LazyValues {
    fn from(v: Vec<f64>) -> Self {
        LazyValues {
            raw: None,
            transpose: None,
            cell: std::sync::OnceLock::from(v),
        }
    }
}

impl LazyValues {
    /// Value `k`, row-major, without widening the whole tensor where it is still unread.
    pub fn at(&self, k: usize) -> f64 {
        match self.cell.get() {
            Some(v) => v[k],
            None => self.raw_at(k),
        }
    }

    fn raw_at(&self, k: usize) -> f64 {
        let raw = self.raw.as_deref().unwrap_or_default();
        // element (c, r) of the transpose is element (r, c) of the raw matrix
        let i = self.transpose.map_or(k, |(rows, cols)| (k % rows) * cols + k / rows);
        f32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]) as f64
    }

    /// The same values, and more than one value among them: what two tensors that are one
    /// tensor written twice hold (two tensors filled with one number at initialization are not
    /// taken for one).
    pub fn same_tensor(&self, other: &LazyValues) -> bool {
        let n = self.count();
        n == other.count() && n > 1 && (1..n).any(|k| self.at(k) != self.at(0)) && (0..n).all(|k| self.at(k) == other.at(k))
    }
}

impl std::ops::Deref for LazyValues {
    type Target = Vec<f64>;
    fn deref(&self) -> &Vec<f64> {
        self.cell.get_or_init(|| (0..self.count()).map(|k| self.raw_at(k)).collect())
    }
}

impl std::fmt::Debug for LazyValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LazyValues({} values)", self.count())
    }
}

impl PartialEq for LazyValues {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::LazyValues;

    /// A 2 x 3 matrix transposed to 3 x 2, lazily (still bytes) and eagerly (already read).
    #[test]
    fn transposed_values_read_as_the_transpose() {
        let m = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let raw: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
        let want = vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let lazy = LazyValues::f32_le(raw.into());
        let t = lazy.transposed(2, 3);
        assert_eq!(t.count(), 6);
        assert_eq!(*t, want);
        // the original, read first, is transposed from its values
        assert_eq!(**lazy, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(*lazy.transposed(2, 3), want);
    }
}
