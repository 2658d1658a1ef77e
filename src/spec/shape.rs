//! Shape inference: walks a [`ModelSpec`] the way PyTorch would run it and records every
//! layer's input and output shape and its resolved sliding windows. Every analysis works on the
//! resulting [`Graph`], so all of them agree on paths, shapes and padding.
use super::error::{child, SpecError, SpecResult};
use super::types::*;

/// One axis of a sliding window (conv or pool), padding already resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel: u64,
    pub stride: u64,
    pub dilation: u64,
    /// Zeros added before (top/left) and after (bottom/right) the input.
    pub pad_lo: u64,
    pub pad_hi: u64,
    pub input: u64,
    pub output: u64,
}

impl Window {
    /// First input position (may be negative: inside the padding) seen by output position `i`.
    pub fn start(&self, i: u64) -> i64 {
        (self.stride * i) as i64 - self.pad_lo as i64
    }
    /// Span covered by one window, `dilation*(kernel-1) + 1`.
    pub fn span(&self) -> u64 {
        self.dilation * (self.kernel - 1) + 1
    }
}

#[derive(Debug)]
pub struct Node<'a> {
    /// Dotted path: `4`, `4.branches.1.0`, `7.body.2`.
    pub path: String,
    /// JSON pointer of the layer in the request, for error messages.
    pub pointer: String,
    pub layer: &'a Layer,
    pub input: Vec<u64>,
    pub output: Vec<u64>,
    /// Height and width windows of conv and pool layers (and of adaptive pools whose windows
    /// happen to be uniform).
    pub windows: Option<[Window; 2]>,
    /// Branches of a concat, or body and shortcut of a residual.
    pub groups: Vec<Group<'a>>,
}

#[derive(Debug)]
pub struct Group<'a> {
    /// `branches.1`, `body` or `shortcut`, relative to the composite's path.
    pub label: String,
    pub nodes: Vec<Node<'a>>,
    pub output: Vec<u64>,
}

#[derive(Debug)]
pub struct Graph<'a> {
    pub spec: &'a ModelSpec,
    pub nodes: Vec<Node<'a>>,
}

impl<'a> Graph<'a> {
    pub fn input(&self) -> &[u64] {
        &self.spec.input_shape
    }

    pub fn output(&self) -> &[u64] {
        self.nodes.last().map(|n| n.output.as_slice()).unwrap_or(&self.spec.input_shape)
    }

    /// Every node, depth first, parents before their children.
    pub fn walk(&self) -> Vec<&Node<'a>> {
        fn go<'n, 'a>(nodes: &'n [Node<'a>], out: &mut Vec<&'n Node<'a>>) {
            for n in nodes {
                out.push(n);
                for g in &n.groups {
                    go(&g.nodes, out);
                }
            }
        }
        let mut out = Vec::new();
        go(&self.nodes, &mut out);
        out
    }
}

pub fn infer<'a>(spec: &'a ModelSpec, pointer: &str) -> SpecResult<Graph<'a>> {
    let nodes = infer_list(&spec.layers, &spec.input_shape, "", &child(pointer, "layers"))?;
    Ok(Graph { spec, nodes })
}

fn infer_list<'a>(layers: &'a [Layer], input: &[u64], path: &str, pointer: &str) -> SpecResult<Vec<Node<'a>>> {
    let mut shape = input.to_vec();
    let mut nodes = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let node_path = if path.is_empty() { i.to_string() } else { format!("{path}.{i}") };
        let node = infer_layer(layer, &shape, node_path, child(pointer, i))?;
        shape = node.output.clone();
        nodes.push(node);
    }
    Ok(nodes)
}

fn image(shape: &[u64], what: &str, pointer: &str) -> SpecResult<[u64; 3]> {
    match shape {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(SpecError::invalid(
            pointer,
            format!("{what} needs an image input [C, H, W], but its input has shape {shape:?}"),
        )),
    }
}

fn check_declared(layer: &Layer, actual: u64, field: &str, pointer: &str) -> SpecResult<()> {
    match layer.declared_in {
        Some(d) if d != actual => Err(SpecError::invalid(
            child(pointer, field),
            format!("says {d}, but the layer's input has {actual} (shapes do not connect)"),
        )),
        _ => Ok(()),
    }
}

/// PyTorch's `pooling_output_shape_pad_lr` (floor division of a possibly negative numerator;
/// in ceil mode the last window may hang over the end but must start inside the input or the
/// left padding); with `ceil` false it is also the convolution formula.
fn window_output(input: u64, k: u64, s: u64, d: u64, lo: u64, hi: u64, ceil: bool) -> Option<u64> {
    let padded = input.checked_add(lo)?.checked_add(hi)? as i128;
    let span = d.checked_mul(k - 1)?.checked_add(1)? as i128;
    let s = s as i128;
    let num = padded - span + if ceil { s - 1 } else { 0 };
    let mut out = num.div_euclid(s) + 1;
    if ceil && (out - 1) * s >= input as i128 + lo as i128 {
        out -= 1;
    }
    (out >= 1).then_some(out as u64)
}

fn windows(input: [u64; 2], k: Pair, s: Pair, d: Pair, pad: [[u64; 2]; 2], ceil: bool, pointer: &str) -> SpecResult<[Window; 2]> {
    let axis = |a: usize| -> SpecResult<Window> {
        let out = window_output(input[a], k[a], s[a], d[a], pad[a][0], pad[a][1], ceil).ok_or_else(|| {
            SpecError::invalid(
                child(pointer, "kernel_size"),
                format!(
                    "the {} window spans {} positions (kernel {}, dilation {}) but the padded input has only {} ({} + padding {} + {})",
                    ["height", "width"][a],
                    d[a].saturating_mul(k[a] - 1).saturating_add(1),
                    k[a],
                    d[a],
                    input[a].saturating_add(pad[a][0]).saturating_add(pad[a][1]),
                    input[a],
                    pad[a][0],
                    pad[a][1]
                ),
            )
        })?;
        Ok(Window {
            kernel: k[a],
            stride: s[a],
            dilation: d[a],
            pad_lo: pad[a][0],
            pad_hi: pad[a][1],
            input: input[a],
            output: out,
        })
    };
    Ok([axis(0)?, axis(1)?])
}

fn infer_layer<'a>(layer: &'a Layer, input: &[u64], path: String, pointer: String) -> SpecResult<Node<'a>> {
    let mut win = None;
    let mut groups = Vec::new();
    let output: Vec<u64> = match &layer.kind {
        LayerKind::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups: g,
            ..
        } => {
            let [c, h, w] = image(input, "conv2d", &pointer)?;
            check_declared(layer, c, "in_channels", &pointer)?;
            if c % g != 0 {
                return Err(SpecError::invalid(
                    child(&pointer, "groups"),
                    format!("in_channels ({c}) must be divisible by groups ({g})"),
                ));
            }
            let pad = match padding {
                ConvPadding::Explicit(p) => [[p[0], p[0]], [p[1], p[1]]],
                ConvPadding::Same => {
                    let total = |a: usize| dilation[a].saturating_mul(kernel[a] - 1);
                    [[total(0) / 2, total(0) - total(0) / 2], [total(1) / 2, total(1) - total(1) / 2]]
                }
            };
            let ws = windows([h, w], *kernel, *stride, *dilation, pad, false, &pointer)?;
            win = Some(ws);
            vec![*out_channels, ws[0].output, ws[1].output]
        }
        LayerKind::MaxPool2d {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        } => {
            let [c, h, w] = image(input, "maxpool2d", &pointer)?;
            let pad = [[padding[0], padding[0]], [padding[1], padding[1]]];
            let ws = windows([h, w], *kernel, *stride, *dilation, pad, *ceil_mode, &pointer)?;
            win = Some(ws);
            vec![c, ws[0].output, ws[1].output]
        }
        LayerKind::AvgPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
            ..
        } => {
            let [c, h, w] = image(input, "avgpool2d", &pointer)?;
            let pad = [[padding[0], padding[0]], [padding[1], padding[1]]];
            let ws = windows([h, w], *kernel, *stride, [1, 1], pad, *ceil_mode, &pointer)?;
            win = Some(ws);
            vec![c, ws[0].output, ws[1].output]
        }
        LayerKind::AdaptiveAvgPool2d { output } | LayerKind::AdaptiveMaxPool2d { output } => {
            let [c, h, w] = image(input, layer.type_name(), &pointer)?;
            let oh = output[0].unwrap_or(h);
            let ow = output[1].unwrap_or(w);
            // When the input divides evenly, the windows are those of a plain average pool.
            if h % oh == 0 && w % ow == 0 {
                let (kh, kw) = (h / oh, w / ow);
                win = Some(windows([h, w], [kh, kw], [kh, kw], [1, 1], [[0, 0], [0, 0]], false, &pointer)?);
            }
            vec![c, oh, ow]
        }
        LayerKind::Linear { out_features, .. } => match input {
            [f] => {
                check_declared(layer, *f, "in_features", &pointer)?;
                vec![*out_features]
            }
            _ => {
                return Err(SpecError::invalid(
                    pointer,
                    format!("linear needs a feature vector [F], but its input has shape {input:?}; add a flatten layer before it"),
                ))
            }
        },
        LayerKind::BatchNorm { .. } => {
            check_declared(layer, input[0], "num_features", &pointer)?;
            input.to_vec()
        }
        LayerKind::Activation { .. } | LayerKind::Dropout { .. } => input.to_vec(),
        LayerKind::Flatten => vec![input
            .iter()
            .try_fold(1u64, |a, b| a.checked_mul(*b))
            .ok_or_else(|| SpecError::invalid(&pointer, "the flattened size overflows"))?],
        LayerKind::Concat { branches } => {
            let mut channels = 0u64;
            for (b, layers) in branches.iter().enumerate() {
                let label = format!("branches.{b}");
                let bp = child(&child(&pointer, "branches"), b);
                let nodes = infer_list(layers, input, &format!("{path}.{label}"), &bp)?;
                let out = nodes.last().map(|n| n.output.clone()).unwrap_or_else(|| input.to_vec());
                if let Some(first) = groups.first().map(|g: &Group| g.output.clone()) {
                    if out.len() != first.len() || out[1..] != first[1..] {
                        return Err(SpecError::invalid(
                            bp,
                            format!("branch {b} ends with shape {out:?}, but branch 0 ends with {first:?}: concatenated branches must agree on every axis but the channels"),
                        ));
                    }
                }
                channels += out[0];
                groups.push(Group { label, nodes, output: out });
            }
            let mut out = groups[0].output.clone();
            out[0] = channels;
            out
        }
        LayerKind::Residual { body, shortcut } => {
            for (label, layers) in [("body", body), ("shortcut", shortcut)] {
                let nodes = infer_list(layers, input, &format!("{path}.{label}"), &child(&pointer, label))?;
                let out = nodes.last().map(|n| n.output.clone()).unwrap_or_else(|| input.to_vec());
                groups.push(Group {
                    label: label.to_string(),
                    nodes,
                    output: out,
                });
            }
            if groups[0].output != groups[1].output {
                return Err(SpecError::invalid(
                    pointer,
                    format!(
                        "the body ends with shape {:?} but the shortcut with {:?}: a residual adds them, so they must match",
                        groups[0].output, groups[1].output
                    ),
                ));
            }
            groups[0].output.clone()
        }
    };
    Ok(Node {
        path,
        pointer,
        layer,
        input: input.to_vec(),
        output,
        windows: win,
        groups,
    })
}

/// The weight of a conv2d or linear layer, as PyTorch shapes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseWeight {
    pub out: u64,
    /// Input channels (features) each output sees: in_channels / groups.
    pub in_per_group: u64,
    /// [kh, kw]; [1, 1] for linear.
    pub kernel: [u64; 2],
    pub bias: bool,
    /// conv2d: [out, in/groups, kh, kw]; linear: [out, in].
    pub is_conv: bool,
}

impl DenseWeight {
    /// Products per output: PyTorch's fan_in.
    pub fn fan_in(&self) -> u64 {
        self.in_per_group * self.kernel[0] * self.kernel[1]
    }
    pub fn fan_out(&self) -> u64 {
        self.out * self.kernel[0] * self.kernel[1]
    }
    pub fn numel(&self) -> u64 {
        self.out * self.fan_in()
    }
    pub fn shape(&self) -> Vec<i64> {
        if self.is_conv {
            vec![
                self.out as i64,
                self.in_per_group as i64,
                self.kernel[0] as i64,
                self.kernel[1] as i64,
            ]
        } else {
            vec![self.out as i64, self.in_per_group as i64]
        }
    }
}

impl Node<'_> {
    /// The weight of a conv2d or linear layer; None for layers without one.
    pub fn dense_weight(&self) -> Option<DenseWeight> {
        match &self.layer.kind {
            LayerKind::Conv2d {
                out_channels,
                kernel,
                groups,
                bias,
                ..
            } => Some(DenseWeight {
                out: *out_channels,
                in_per_group: self.input[0] / groups,
                kernel: *kernel,
                bias: *bias,
                is_conv: true,
            }),
            LayerKind::Linear { out_features, bias } => Some(DenseWeight {
                out: *out_features,
                in_per_group: self.input[0],
                kernel: [1, 1],
                bias: *bias,
                is_conv: false,
            }),
            _ => None,
        }
    }
}

/// Number of elements of a shape.
pub fn numel(shape: &[u64]) -> u64 {
    shape.iter().product()
}
