//! Checks a receptive-field answer by back-propagating one output unit through a probe copy of
//! the network and reading which input positions got a non-zero gradient.
//!
//! The probe is the network's *channel quotient* (see [`Classes`]): all-ones weights, no biases,
//! every pooling a summing window, identity activations and batchnorm, and each tensor's channels
//! merged into classes of channels that provably depend on the same input set. Spatial windows
//! (kernel, stride, padding, dilation, ceil-mode ends) are the real ones and the input keeps every
//! channel, so the gradient of one unit is still a positive count of paths wherever the real
//! network has a path and exactly zero elsewhere, at the cost of a network a few channels wide
//! (vgg16: 1 channel a layer instead of 64..512, about 10^4 times less arithmetic).
//! [`probe_full`] runs the same probe on the unreduced network; tests compare the two.
use super::net::{coupled_sum, fill_pad, summing_window, upsample, Init, InitSpec, Mode, Net};
use crate::analysis::intervals::IntervalSet;
use crate::analysis::receptive_field::{chain_to, Chain, LayerRef};
use crate::spec::{infer, Fill, Graph, LayerKind, Merge, ModelSpec, Node, Window};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// Input channels, rows and columns with a non-zero gradient (features for flat inputs).
    pub axes: Vec<IntervalSet>,
    /// Gradients overflowed float64 (astronomically many paths): nothing can be concluded.
    pub overflow: bool,
    /// The element type the probe ran in: "float32" where that is exact (see `FLOAT32_SEED`),
    /// else "float64".
    pub dtype: &'static str,
    pub millis: f64,
    /// Channels (features) the probe's widest tensor had, against the real network's widest.
    pub probe_width: u64,
    pub network_width: u64,
}

/// Indices where `mask` is true, as an interval set.
pub fn mask_to_set(mask: &[bool]) -> IntervalSet {
    mask_to_set_from(mask, 0)
}

/// Positions `offset + i` where `mask[i]` is true.
fn mask_to_set_from(mask: &[bool], offset: u64) -> IntervalSet {
    let mut ranges = Vec::new();
    let mut start = None;
    for (i, &m) in mask.iter().chain(std::iter::once(&false)).enumerate() {
        match (m, start) {
            (true, None) => start = Some(offset + i as u64),
            (false, Some(s)) => {
                ranges.push((s, offset + i as u64 - 1));
                start = None;
            }
            _ => {}
        }
    }
    IntervalSet::from_ranges(ranges)
}

/// The channel classes of one tensor of the probe: channel (or flat feature) `c` of the real
/// tensor is represented by channel `map[c]` of the probe's tensor, which has `k` channels.
///
/// Invariant (by induction over the layers): the set of input (channel, position) pairs with a
/// path to real unit (c, p) equals the set with a path to probe unit (map[c], p). It holds for
/// the input (identity map) and each rule keeps it: a conv's output channel depends on the
/// classes present in its group's input channels, so output channels whose groups hold the same
/// classes get one class, and the probe's conv connects each class to exactly those classes;
/// element-wise and per-channel layers keep the map; concatenation offsets the branches' classes;
/// a residual sum's class is the pair (body class, shortcut class); a linear layer's outputs all
/// depend on every input, one class.
#[derive(Clone, Debug)]
struct Classes {
    map: Vec<u32>,
    k: usize,
}

impl Classes {
    fn identity(n: usize) -> Classes {
        Classes {
            map: (0..n as u32).collect(),
            k: n,
        }
    }

    /// Numbers distinct keys in order of first appearance.
    fn from_keys<K: std::hash::Hash + Eq + Clone>(keys: &[K]) -> (Classes, Vec<K>) {
        let mut ids: HashMap<K, u32> = HashMap::new();
        let mut firsts = Vec::new();
        let map = keys
            .iter()
            .map(|key| {
                *ids.entry(key.clone()).or_insert_with(|| {
                    firsts.push(key.clone());
                    firsts.len() as u32 - 1
                })
            })
            .collect();
        (Classes { map, k: firsts.len() }, firsts)
    }
}

/// Rows and columns (inclusive, in a tensor's own coordinates) of the part of a spatial tensor
/// the probe computes; None for flat tensors, which are always whole.
type Win = Option<[(i64, i64); 2]>;

/// The probe's pass: which part of every tensor the unit can reach (`needs`, by node index:
/// the node's output window; None for nodes the unit does not read), and the widest tensor so
/// far.
#[derive(Clone)]
struct Run {
    needs: Vec<Option<Win>>,
    width: u64,
}

fn whole(shape: &[u64]) -> Win {
    (shape.len() == 3).then(|| [(0, shape[1] as i64 - 1), (0, shape[2] as i64 - 1)])
}

fn hull(a: Win, b: Win) -> Win {
    match (a, b) {
        (Some(a), Some(b)) => Some([(a[0].0.min(b[0].0), a[0].1.max(b[0].1)), (a[1].0.min(b[1].0), a[1].1.max(b[1].1))]),
        _ => None,
    }
}

/// First and last input positions (in the padded coordinates: negative or past the end inside
/// the padding) that a window reads for outputs `lo..=hi`.
fn window_reads((lo, hi): (i64, i64), w: &Window) -> (i64, i64) {
    let first = lo * w.stride as i64 - w.pad_lo as i64;
    (first, hi * w.stride as i64 - w.pad_lo as i64 + w.span() as i64 - 1)
}

/// Input positions a window reads for outputs `lo..=hi`, clipped to the input (never empty: a
/// superset is always safe, and a unit that sees only padding still needs a tensor to read).
fn window_back(outputs: (i64, i64), w: &Window) -> (i64, i64) {
    let (first, last) = window_reads(outputs, w);
    let n = w.input as i64;
    let (a, b) = (first.clamp(0, n - 1), last.clamp(0, n - 1));
    (a.min(b), b)
}

/// Walks the chain `steps` backwards from the window `out` of the target `target`, records
/// every node's output window (the hull of what its readers need), and returns the window of
/// the model's input.
fn needs_back(graph: &Graph, steps: &[usize], target: usize, out: Win, run: &mut Run) -> Win {
    let need = &mut run.needs;
    need[target] = Some(out);
    let mut input: Option<Win> = None;
    for &i in steps.iter().rev() {
        let Some(out) = need[i] else { continue };
        let node = &graph.nodes[i];
        for (k, e) in node.inputs.iter().enumerate() {
            let w = match node.merge {
                // a broadcast axis reads its one position; a spatial concatenation reads whole inputs
                Some(Merge::Add | Merge::Mul) => out.map(|o| {
                    let axis = |a: usize| if e.broadcast(&node.output, a + 1) { (0, 0) } else { o[a] };
                    [axis(0), axis(1)]
                }),
                Some(Merge::Cat(0)) => out,
                Some(Merge::Cat(_) | Merge::MatMul | Merge::Attention) => whole(&e.shape),
                None => {
                    debug_assert_eq!(k, 0);
                    match &node.layer.kind {
                        // reflect/replicate padding reads rows across the image: the whole input
                        LayerKind::Conv2d { .. } | LayerKind::Pad { .. } if node.windows.is_some_and(|w| w[0].fill != Fill::Zeros) => {
                            whole(&node.input)
                        }
                        // a spatial mean to a flat tensor reads everything; over the channels, the same positions
                        LayerKind::Mean { .. } if node.output.len() == 1 => whole(&node.input),
                        LayerKind::Mean { .. } if node.windows.is_none() => out,
                        LayerKind::Conv2d { .. }
                        | LayerKind::MaxPool2d { .. }
                        | LayerKind::AvgPool2d { .. }
                        | LayerKind::Mean { .. }
                        | LayerKind::Pad { .. } => {
                            let [wh, ww] = node.windows.expect("windows");
                            out.map(|o| [window_back(o[0], &wh), window_back(o[1], &ww)])
                        }
                        LayerKind::AdaptiveAvgPool2d { .. }
                        | LayerKind::AdaptiveMaxPool2d { .. }
                        | LayerKind::ConvTranspose2d { .. }
                        | LayerKind::Upsample { .. }
                        | LayerKind::Flatten
                        | LayerKind::Linear { .. } => whole(&node.input),
                        LayerKind::GroupNorm { .. }
                        | LayerKind::InstanceNorm { .. }
                        | LayerKind::LayerNorm { .. }
                        | LayerKind::Softmax { .. } => {
                            // every position along the coupled axes
                            let c = node.coupling().expect("normalizations couple");
                            out.map(|o| {
                                let axis = |a: usize| if c.spatial[a] { (0, node.input[a + 1] as i64 - 1) } else { o[a] };
                                [axis(0), axis(1)]
                            })
                        }
                        _ => out,
                    }
                }
            };
            let slot = match e.from {
                Some(f) => &mut need[f],
                None => &mut input,
            };
            *slot = Some(match *slot {
                Some(prev) => hull(prev, w),
                None => w,
            });
        }
    }
    input.unwrap_or(out)
}

/// The part `want` of a tensor that holds the window `have`.
fn narrow_to(x: Tensor, have: Win, want: Win) -> Tensor {
    match (have, want) {
        (Some(h), Some(w)) if h != w => x
            .narrow(2, w[0].0 - h[0].0, w[0].1 - w[0].0 + 1)
            .narrow(3, w[1].0 - h[1].0, w[1].1 - w[1].0 + 1),
        _ => x,
    }
}

/// The rows (or columns) of input a window layer reads for outputs `want`, taken from the part
/// `have` of its input, and the window that slides over them: zero padding only where the real
/// layer pads, output count `want`'s length.
fn crop_window(x: Tensor, dim: i64, have: (i64, i64), want: (i64, i64), w: &Window) -> (Tensor, Window) {
    let (first, last) = window_reads(want, w);
    let (a, b) = (first.max(0), last.min(w.input as i64 - 1));
    let len = b - a + 1;
    let outputs = want.1 - want.0 + 1;
    if len <= 0 {
        // these outputs read padding alone: zeros, still attached to the graph (a real position
        // times zero), through a window that passes them straight on
        let zeros = (x.narrow(dim, 0, 1) * 0.0).repeat_interleave_self_int(outputs, dim, None::<i64>);
        let pass = Window {
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad_lo: 0,
            pad_hi: 0,
            input: outputs as u64,
            output: outputs as u64,
            fill: crate::spec::Fill::Zeros,
        };
        return (zeros, pass);
    }
    let x = x.narrow(dim, a - have.0, len);
    let cropped = Window {
        pad_lo: (-first).max(0) as u64,
        pad_hi: 0,
        input: len as u64,
        output: outputs as u64,
        ..*w
    };
    (x, cropped)
}

/// Runs the chain `steps` on the probe tensor `x` (the window `win` of the model's input, its
/// channels the classes `m`) and returns the target's tensor, window and classes. Each node
/// computes the window `run.needs` holds for it.
fn quotient(graph: &Graph, steps: &[usize], target: usize, x: Tensor, win: Win, m: Classes, run: &mut Run) -> (Tensor, Win, Classes) {
    let mut vals: Vec<Option<(Tensor, Win, Classes)>> = (0..graph.nodes.len()).map(|_| None).collect();
    for &i in steps {
        let node = &graph.nodes[i];
        let want = run.needs[i].unwrap_or_else(|| whole(&node.output));
        let ins: Vec<(Tensor, Win, Classes)> = node
            .inputs
            .iter()
            .map(|e| match e.from {
                Some(f) => {
                    let (t, w, c) = vals[f].as_ref().expect("inputs run first");
                    (t.shallow_clone(), *w, c.clone())
                }
                None => (x.shallow_clone(), win, m.clone()),
            })
            .collect();
        // a parameter node reads no input: zeros, one class, broadcast over every axis (the
        // sums and products reading it add nothing to any path)
        if node.inputs.is_empty() {
            let zeros = Tensor::zeros([1, 1, 1, 1], (x.kind(), x.device()));
            vals[i] = Some((zeros, whole(&[1, 1, 1]), Classes { map: vec![0], k: 1 }));
            continue;
        }
        let (y, c) = match node.merge {
            Some(merge) => quotient_merge(node, merge, ins, want),
            None => {
                let (x, have, m) = ins.into_iter().next().expect("one input");
                quotient_node(node, x, have, want, m)
            }
        };
        run.width = run.width.max(c.k as u64);
        vals[i] = Some((y, want, c));
    }
    vals[target].take().expect("the target runs")
}

/// A merge node on its inputs' parts, computing the part `want` of its output. A sum, product
/// or spatial concatenation reads channel `c` of every input, so its classes are the tuples of
/// the inputs' classes (a residual pair, an input with one broadcast channel contributing its
/// one class); a channel (feature) concatenation offsets each input's classes.
fn quotient_merge(node: &Node, merge: Merge, ins: Vec<(Tensor, Win, Classes)>, want: Win) -> (Tensor, Classes) {
    let channels = node.output[0] as usize;
    if merge == Merge::Cat(0) {
        let mut outs = Vec::new();
        let mut map = Vec::new();
        let mut k = 0;
        for (y, have, c) in ins {
            outs.push(narrow_to(y, have, want));
            map.extend(c.map.iter().map(|&v| v + k as u32));
            k += c.k;
        }
        return (Tensor::cat(&outs, 1), Classes { map, k });
    }
    let keys: Vec<Vec<u32>> = (0..channels)
        .map(|ch| ins.iter().map(|(_, _, c)| c.map[if c.map.len() == 1 { 0 } else { ch }]).collect())
        .collect();
    let (classes, firsts) = Classes::from_keys(&keys);
    let parts: Vec<Tensor> = ins
        .into_iter()
        .enumerate()
        .map(|(k, (y, have, _))| {
            let device = y.device();
            let index = Tensor::from_slice(&firsts.iter().map(|key| key[k] as i64).collect::<Vec<_>>()).to_device(device);
            let y = y.index_select(1, &index);
            match merge {
                // spatial concatenations run on whole inputs
                Merge::Cat(_) => y,
                // broadcast axes (one position) stay as they are
                _ => match (have, want) {
                    (Some(h), Some(w)) => {
                        let mut y = y;
                        for a in 0..2 {
                            if !node.inputs[k].broadcast(&node.output, a + 1) {
                                y = y.narrow(a as i64 + 2, w[a].0 - h[a].0, w[a].1 - w[a].0 + 1);
                            }
                        }
                        y
                    }
                    _ => y,
                },
            }
        })
        .collect();
    let y = match merge {
        // a product depends on the same inputs as a sum; the sum keeps path counts from
        // multiplying into float64 overflow (see Net::node)
        Merge::Add | Merge::Mul => parts[1..].iter().fold(parts[0].shallow_clone(), |acc, t| acc + t),
        Merge::Cat(axis) => narrow_to(Tensor::cat(&parts, axis as i64 + 1), whole(&node.output), want),
        Merge::MatMul | Merge::Attention => unreachable!("a matmul or attention reads sequences: the whole-network probe runs it"),
    };
    (y, classes)
}

/// The channel classes after a (transposed) convolution with `groups` from `c_in` channels of
/// classes `m` to `out`, and the probe's 1x1 mixing of the input's classes into them.
fn channel_mix(m: &Classes, c_in: u64, out: u64, groups: u64, kind: Kind, device: Device) -> (Classes, impl Fn(Tensor) -> Tensor) {
    let (c_in, out, g) = (c_in as usize, out as usize, groups as usize);
    let per_in = c_in / g;
    // the sorted classes present in each group's input channels
    let sets: Vec<Vec<u32>> = (0..g)
        .map(|grp| {
            let mut s: Vec<u32> = m.map[grp * per_in..(grp + 1) * per_in].to_vec();
            s.sort_unstable();
            s.dedup();
            s
        })
        .collect();
    let (group_classes, firsts) = Classes::from_keys(&sets);
    let per_out = out / g;
    let classes = Classes {
        map: (0..out).map(|o| group_classes.map[o / per_out]).collect(),
        k: group_classes.k,
    };
    let (k_in, k_out) = (m.k, classes.k);
    // The probe's conv is a 1x1 conv that sums each output class's input classes (a 0/1
    // matrix; grouped when output class o reads exactly the o-th contiguous block of input
    // classes, nothing at all when that block is one class), then an all-ones depthwise
    // window with the conv's kernel, stride, padding and dilation. Both have positive
    // coefficients, so the paths are the real conv's, at a fraction of its arithmetic.
    let block = k_in / k_out;
    let grouped = k_in % k_out == 0
        && firsts
            .iter()
            .enumerate()
            .all(|(o, s)| s.len() == block && s.iter().enumerate().all(|(j, &c)| c as usize == o * block + j));
    let mix = move |x: Tensor| -> Tensor {
        if grouped && block == 1 {
            x
        } else if x.dim() == 2 || !grouped {
            // the 0/1 matrix of which input classes each output class sums; flat tensors
            // (features) take it as a linear map
            let mut w = vec![0.0f64; k_out * k_in];
            for (o, s) in firsts.iter().enumerate() {
                for &c in s {
                    w[o * k_in + c as usize] = 1.0;
                }
            }
            let w = Tensor::from_slice(&w)
                .to_kind(kind)
                .to_device(device)
                .reshape([k_out as i64, k_in as i64]);
            if x.dim() == 2 {
                x.linear(&w, None::<Tensor>)
            } else {
                pointwise(&x, &w)
            }
        } else {
            block_sums(&x, k_out as i64)
        }
    };
    (classes, mix)
}

/// A 1x1 (image) or 1x1x1 (volume) convolution of `x` by the `[out, in]` matrix `w`: one matrix
/// product over the flattened positions (its backward one more), at half the cost of libtorch's
/// float64 pointwise convolution.
fn pointwise(x: &Tensor, w: &Tensor) -> Tensor {
    let mut shape = x.size();
    shape[1] = w.size()[0];
    w.matmul(&x.flatten(2, -1)).reshape(shape.as_slice())
}

/// The sums of `x`'s channels in `groups` consecutive blocks (a grouped all-ones 1x1 conv).
fn block_sums(x: &Tensor, groups: i64) -> Tensor {
    let size = x.size();
    let mut blocks = vec![size[0], groups, size[1] / groups];
    blocks.extend_from_slice(&size[2..]);
    x.reshape(blocks.as_slice()).sum_dim_intlist(2, false, None::<Kind>)
}

/// One node on the part `win` of its input, computing the part `want` of its output.
fn quotient_node(node: &Node, x: Tensor, win: Win, want: Win, m: Classes) -> (Tensor, Classes) {
    let kind = x.kind();
    let device = x.device();
    // a window layer's input, cut to what `want` reads, and its windows over that cut; with
    // reflect/replicate padding the padding holds input values, so the whole input (see
    // needs_back) is padded as the layer pads it and unpadded windows slide over it
    let cut = |x: Tensor| -> (Tensor, [Window; 2]) {
        let [wh, ww] = node.windows.expect("windows");
        let want = want.expect("spatial output");
        if wh.fill != Fill::Zeros {
            let (padded, [bh, bw]) = unpadded(&x, [wh, ww]);
            let (x, bh) = crop_window(padded, 2, (0, bh.input as i64 - 1), want[0], &bh);
            let (x, bw) = crop_window(x, 3, (0, bw.input as i64 - 1), want[1], &bw);
            return (x, [bh, bw]);
        }
        let have = win.expect("spatial input");
        let (x, wh) = crop_window(x, 2, have[0], want[0], &wh);
        let (x, ww) = crop_window(x, 3, have[1], want[1], &ww);
        (x, [wh, ww])
    };
    match &node.layer.kind {
        LayerKind::Embedding { .. }
        | LayerKind::MultiheadAttention { .. }
        | LayerKind::Recurrent(_)
        | LayerKind::Parameter { .. }
        | LayerKind::FlattenSpatial
        | LayerKind::Transpose(_)
        | LayerKind::CausalMask
        | LayerKind::SelectToken { .. }
        | LayerKind::Narrow { .. }
        | LayerKind::ChannelShuffle { .. }
        | LayerKind::Reshape(_) => {
            unreachable!("models with sequences, reshapes or channel picks run in probe_whole")
        }
        // a volume runs whole (no window of it is cut): the classes mixed and the windows
        // summed on all three axes, padding as the layer pads
        LayerKind::Conv3d { out_channels, groups, .. } => {
            let (classes, mix) = channel_mix(&m, node.input[0], *out_channels, *groups, kind, device);
            let (x, windows) = unpadded(&x, node.volume.expect("conv3d windows"));
            let y = if classes.k <= m.k {
                summing_window(&mix(x), windows)
            } else {
                mix(summing_window(&x, windows))
            };
            (y, classes)
        }
        LayerKind::MaxPool3d { .. } | LayerKind::AvgPool3d { .. } => (summing_window(&x, node.volume.expect("pool windows")), m),
        // a window of one: the padding as the layer pads
        LayerKind::Pad3d { .. } => {
            let (x, windows) = unpadded(&x, node.volume.expect("pad windows"));
            (summing_window(&x, windows), m)
        }
        // every pooling as a summing window: an adaptive max pool's windows are the average's
        LayerKind::AdaptiveAvgPool3d { .. } | LayerKind::AdaptiveMaxPool3d { .. } => (adaptive_sum(&x, node), m),
        LayerKind::Conv2d { out_channels, groups, .. } => {
            let (classes, mix) = channel_mix(&m, node.input[0], *out_channels, *groups, kind, device);
            let (k_in, k_out) = (m.k, classes.k);
            let (x, windows) = cut(x);
            // mix where there are fewer channels to mix, window where there are fewer to slide
            let y = if k_out <= k_in {
                summing_window(&mix(x), windows)
            } else {
                mix(summing_window(&x, windows))
            };
            (y, classes)
        }
        // a volume runs whole
        LayerKind::Upsample { .. } if node.input.len() == 4 => (upsample(&x, node), m),
        // a volume runs whole
        LayerKind::ConvTranspose3d {
            out_channels,
            groups,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            ..
        } => {
            let geometry = [kernel, stride, padding, output_padding, dilation];
            ones_transposed(x, &m, node, *out_channels, *groups, geometry, kind, device)
        }
        // on the whole input (see needs_back)
        LayerKind::ConvTranspose2d {
            out_channels,
            groups,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            ..
        } => {
            let geometry = [kernel, stride, padding, output_padding, dilation];
            let (y, classes) = ones_transposed(x, &m, node, *out_channels, *groups, geometry, kind, device);
            (narrow_to(y, whole(&node.output), want), classes)
        }
        LayerKind::Upsample { .. } => (narrow_to(upsample(&x, node), whole(&node.output), want), m),
        LayerKind::GroupNorm { .. } | LayerKind::InstanceNorm { .. } | LayerKind::LayerNorm { .. } | LayerKind::Softmax { .. } => {
            // a group's channels become one class (the classes present in it); then each
            // element plus the sum along the coupled axes (read whole, see needs_back)
            let c = node.coupling().expect("normalizations couple");
            let (classes, mix) = channel_mix(&m, node.input[0], node.input[0], c.groups, kind, device);
            let z = mix(x);
            let y = if c.spatial.contains(&true) {
                coupled_sum(
                    &z,
                    crate::spec::Coupling {
                        groups: classes.k as u64,
                        spatial: c.spatial,
                    },
                )
            } else {
                z
            };
            (narrow_to(y, win, want), classes)
        }
        // a mean over the channels: one class, the sum of all of them
        LayerKind::Mean { .. } if node.windows.is_none() => {
            let (classes, mix) = channel_mix(&m, node.input[0], 1, 1, kind, device);
            (narrow_to(mix(x), win, want), classes)
        }
        // over every position to a flat tensor: the window over the whole input, flattened
        LayerKind::Mean { .. } if node.output.len() == 1 => (summing_window(&x, node.windows.expect("windows")).flatten(1, -1), m),
        LayerKind::MaxPool2d { .. } | LayerKind::AvgPool2d { .. } | LayerKind::Pad { .. } | LayerKind::Mean { .. } => {
            let (x, windows) = cut(x);
            (summing_window(&x, windows), m)
        }
        // every pooling as a summing window: an adaptive max pool's windows are the average's
        LayerKind::AdaptiveAvgPool2d { .. } | LayerKind::AdaptiveMaxPool2d { .. } => {
            (narrow_to(adaptive_sum(&x, node), whole(&node.output), want), m)
        }
        LayerKind::Linear { .. } => {
            let w = Tensor::ones([1, m.k as i64], (kind, device));
            let out = node.output[0] as usize;
            (x.linear(&w, None::<Tensor>), Classes { map: vec![0; out], k: 1 })
        }
        LayerKind::Flatten if node.input.len() >= 3 => {
            let hw = node.input[1..].iter().product::<u64>() as u32;
            let map = m.map.iter().flat_map(|&c| (0..hw).map(move |p| c * hw + p)).collect();
            (x.flatten(1, -1), Classes { map, k: m.k * hw as usize })
        }
        LayerKind::Flatten
        | LayerKind::BatchNorm { .. }
        | LayerKind::Activation { .. }
        | LayerKind::Dropout { .. }
        | LayerKind::Scale { .. } => (narrow_to(x, win, want), m),
        crate::spec::merges!() => {
            unreachable!("merge nodes run in quotient_merge")
        }
    }
}

/// The probe's stand-in for a transposed convolution on `N` spatial axes: the classes mixed,
/// then an all-ones depthwise transposed convolution with the layer's geometry (`[kernel,
/// stride, padding, output_padding, dilation]` per axis), by libtorch's generic convolution.
#[allow(clippy::too_many_arguments)]
fn ones_transposed<const N: usize>(
    x: Tensor,
    m: &Classes,
    node: &Node,
    out_channels: u64,
    groups: u64,
    [kernel, stride, padding, output_padding, dilation]: [&[u64; N]; 5],
    kind: Kind,
    device: Device,
) -> (Tensor, Classes) {
    let (classes, mix) = channel_mix(m, node.input[0], out_channels, groups, kind, device);
    let k = classes.k as i64;
    let ints = |v: &[u64; N]| v.map(|x| x as i64);
    let shape: Vec<i64> = [k, 1].into_iter().chain(kernel.iter().map(|&x| x as i64)).collect();
    let ones = Tensor::ones(shape.as_slice(), (kind, device));
    let y = mix(x).convolution(
        &ones,
        None::<Tensor>,
        ints(stride),
        ints(padding),
        ints(dilation),
        true,
        ints(output_padding),
        k,
    );
    (y, classes)
}

/// An adaptive pool's windows summed: a summing window where shape inference found windows of
/// one size (each output size divides its input size: whole-number path counts), libtorch's
/// adaptive average otherwise.
fn adaptive_sum(x: &Tensor, node: &Node) -> Tensor {
    match (node.windows, node.volume) {
        (Some(ws), _) => summing_window(x, ws),
        (_, Some(ws)) => summing_window(x, ws),
        _ if node.output.len() == 4 => x.adaptive_avg_pool3d([node.output[1] as i64, node.output[2] as i64, node.output[3] as i64]),
        _ => x.adaptive_avg_pool2d([node.output[1] as i64, node.output[2] as i64]),
    }
}

/// Whether every coefficient of the probe's stand-ins along `steps` is a whole number (no
/// bilinear weights, no adaptive pool with windows of unequal sizes). Then every gradient is a
/// sum of positive whole-number path counts times the backward seed: float32 rounds none of them
/// to zero (see [`FLOAT32_SEED`]).
fn integral(graph: &Graph, steps: &[usize]) -> bool {
    steps.iter().all(|&i| {
        let node = &graph.nodes[i];
        match node.layer.kind {
            LayerKind::Upsample { bilinear, .. } => !bilinear,
            // windows of one size (see `adaptive_sum`)
            LayerKind::AdaptiveAvgPool2d { .. }
            | LayerKind::AdaptiveMaxPool2d { .. }
            | LayerKind::AdaptiveAvgPool3d { .. }
            | LayerKind::AdaptiveMaxPool3d { .. } => node.windows.is_some() || node.volume.is_some(),
            _ => true,
        }
    })
}

/// A tensor padded as a conv with `padding_mode` reflect, replicate or circular pads it, and its
/// windows over the padded tensor; zero padding stays with the windows.
fn unpadded<const N: usize>(x: &Tensor, ws: [Window; N]) -> (Tensor, [Window; N]) {
    if ws[0].fill == Fill::Zeros {
        return (x.shallow_clone(), ws);
    }
    let bare = ws.map(|w| Window {
        pad_lo: 0,
        pad_hi: 0,
        input: w.input + w.pad_lo + w.pad_hi,
        fill: Fill::Zeros,
        ..w
    });
    (fill_pad(x, ws), bare)
}

/// `target` is a resolved layer path; `index` zero-based; `channel` None means all channels.
pub fn probe(spec: &ModelSpec, target: &str, index: &[u64], channel: Option<u64>, device: Device) -> Result<ProbeResult, String> {
    let started = std::time::Instant::now();
    let graph = infer(spec, "").map_err(|e| e.to_string())?;
    let chain = chain_to(&graph, Some(&LayerRef::Name(target.to_string())), "").map_err(|e| e.to_string())?;
    // a parameter node as the target: nothing to reduce, and nothing it reads
    if whole_network_probe(&graph) || chain.target.inputs.is_empty() {
        return Ok(probe_whole(&chain, index, channel, device, started));
    }
    let network_width = widest(&graph);
    let target_win = (index.len() == 2).then(|| [(index[0] as i64, index[0] as i64), (index[1] as i64, index[1] as i64)]);
    // the part of every tensor the unit can reach: the unit itself at the target, back to the input
    let mut planned = Run {
        needs: vec![None; graph.nodes.len()],
        width: spec.input_shape[0],
    };
    let input_win = needs_back(&graph, &chain.steps, chain.id, target_win, &mut planned);
    // float32 halves the memory the sums move where it is exact (see `integral`); float64 again
    // if its counts overflow
    let run_in = |kind: Kind| {
        let mut run = planned.clone();
        let x = input_ones(spec, kind, device);
        let (y, _, classes) = quotient(
            &graph,
            &chain.steps,
            chain.id,
            narrow_to(x.shallow_clone(), whole(&spec.input_shape), input_win),
            input_win,
            Classes::identity(spec.input_shape[0] as usize),
            &mut run,
        );
        // a spatial target holds just the unit now
        let local: Vec<u64> = if index.len() == 2 { vec![0, 0] } else { index.to_vec() };
        let unit = select_unit(
            &y.select(0, 0),
            &local,
            channel.map(|c| classes.map[c as usize] as u64),
            &classes,
            false,
        );
        let seed = if kind == Kind::Float { FLOAT32_SEED } else { 1.0 };
        read_gradient(spec, &x, input_win, unit * seed, started, run.width, network_width)
    };
    if integral(&graph, &chain.steps) {
        let r = run_in(Kind::Float);
        if !r.overflow {
            return Ok(r);
        }
    }
    Ok(run_in(Kind::Double))
}

/// The float32 probe's backward seed, 2^-120 (exact in binary floating point). A sum's backward
/// never reads the forward values, so every gradient is the seed times a whole-number path count
/// (see `integral`), rounded: at least 2^-120, above float32's smallest normal 2^-126 (no
/// underflow, so no lost position), and finite up to counts of 2^247 (about 2.3e74; efficientnet_b0's
/// default unit sums 3e63 paths, past float32's 3.4e38 in the forward pass, which no gradient
/// reads). A count past that turns the input's gradient non-finite, and the probe runs again in
/// float64 (seed 1).
const FLOAT32_SEED: f64 = 1.0 / (1u128 << 120) as f64;

/// The unit of `y` (one sample, no batch axis): `channel` (None: every channel summed) at
/// spatial `index`, or flat feature `index[0]` through the probe's class map; of a 1-D signal
/// (`signal`), `channel` at position `index[0]`.
fn select_unit(y: &Tensor, index: &[u64], channel: Option<u64>, classes: &Classes, signal: bool) -> Tensor {
    if y.dim() == 2 && signal {
        let column = y.select(1, index[0] as i64);
        return match channel {
            Some(c) => column.select(0, c as i64),
            None => column.sum(column.kind()),
        };
    }
    // a sequence [L, D]: token index[0], feature `channel` or every feature
    if y.dim() == 2 {
        let row = y.select(0, index[0] as i64);
        return match channel {
            Some(c) => row.select(0, c as i64),
            None => row.sum(row.kind()),
        };
    }
    if index.len() >= 2 {
        let column = index.iter().fold(y.shallow_clone(), |t, &i| t.select(1, i as i64));
        match channel {
            Some(c) => column.select(0, c as i64),
            None => column.sum(column.kind()),
        }
    } else {
        y.select(0, classes.map[index[0] as usize] as i64)
    }
}

/// The same probe on the unreduced network (every channel, all-ones weights): the reference the
/// quotient is tested against, and the probe of a model with sequences (token ids, `[L, D]`
/// tensors) or parameter nodes. There attention and recurrent layers become sums over every
/// feature of the tokens each output reads (all of them; the earlier ones for a causal mask or a
/// forward direction; the later ones for a backward direction), an embedding copies its token's
/// id into every feature, and a parameter holds zeros. The unit of a sequence is token
/// `index[0]`, feature `channel` (None: every feature summed).
pub fn probe_full(spec: &ModelSpec, target: &str, index: &[u64], channel: Option<u64>, device: Device) -> Result<ProbeResult, String> {
    let started = std::time::Instant::now();
    let graph = infer(spec, "").map_err(|e| e.to_string())?;
    let chain = chain_to(&graph, Some(&LayerRef::Name(target.to_string())), "").map_err(|e| e.to_string())?;
    Ok(probe_whole(&chain, index, channel, device, started))
}

/// [`probe_full`] on a shaped graph and its chain to the target.
fn probe_whole(chain: &Chain, index: &[u64], channel: Option<u64>, device: Device, started: std::time::Instant) -> ProbeResult {
    let (graph, spec) = (chain.graph, chain.graph.spec);
    let init = InitSpec {
        init: Init::PytorchDefault,
        scale: 1.0,
        seed: 0,
    };
    let net = Net::build(graph, Mode::Probe, &init, &HashMap::new(), Kind::Double, device);
    let x = input_ones(spec, Kind::Double, device);
    let y = net
        .run(graph, &chain.steps, &x, &[chain.id], &mut |_, _, _| {})
        .remove(0)
        .select(0, 0);
    let unit = select_unit(&y, index, channel, &Classes::identity(y.size()[0] as usize), chain.target.signal);
    let width = widest(graph);
    read_gradient(spec, &x, None, unit, started, width, width)
}

/// Whether a model has sequences (token ids, a two-axis tensor anywhere) or parameter nodes
/// other than `[C, 1, 1]` scales read by sums and products (ConvNeXt's layer_scale): the
/// channel-quotient probe knows images, volumes (run whole, not cut to a window) and vectors only.
pub fn whole_network_probe(graph: &crate::spec::Graph) -> bool {
    let scale = |f: Option<usize>| f.is_some_and(|f| graph.nodes[f].inputs.is_empty());
    graph.spec.token_ids
        || graph.input().len() == 2
        || graph.nodes.iter().any(|n| {
            // a reshape regroups channels and positions, a narrow or a shuffle picks channels by
            // their index, a transpose moves them, a causal mask reads by row and column: the
            // channel quotient does not hold
            matches!(
                n.layer.kind,
                LayerKind::Reshape(_)
                    | LayerKind::Narrow { .. }
                    | LayerKind::ChannelShuffle { .. }
                    | LayerKind::Transpose(_)
                    | LayerKind::CausalMask
                    | LayerKind::ScaledDotProductAttention { .. }
            ) || n.output.len() == 2
                || n.input.len() == 2
                || (n.inputs.is_empty() && !(n.output.len() == 3 && n.output[1] == 1 && n.output[2] == 1))
                || (n.inputs.iter().any(|e| scale(e.from)) && !matches!(n.merge, Some(Merge::Add | Merge::Mul)))
        })
}

/// Channels (features) of the widest tensor of the real network, its input included.
fn widest(graph: &crate::spec::Graph) -> u64 {
    graph.nodes.iter().map(|n| n.output[0]).chain([graph.input()[0]]).max().unwrap_or(0)
}

fn input_ones(spec: &ModelSpec, kind: Kind, device: Device) -> Tensor {
    let mut shape: Vec<i64> = vec![1];
    shape.extend(spec.input_shape.iter().map(|&d| d as i64));
    Tensor::ones(shape.as_slice(), (kind, device)).set_requires_grad(true)
}

/// Back-propagates `unit` and reads, per input axis, the positions with a non-zero gradient
/// inside `window` (None: everywhere). The quotient probe reads only the window it ran on: every
/// position outside it has a zero gradient by construction.
fn read_gradient(
    spec: &ModelSpec,
    x: &Tensor,
    window: Win,
    unit: Tensor,
    started: std::time::Instant,
    probe_width: u64,
    network_width: u64,
) -> ProbeResult {
    // a unit computed from parameters alone (a class token, a layer scale) reads no input
    let grad = if unit.requires_grad() {
        unit.backward();
        x.grad()
    } else {
        x.zeros_like()
    };
    let g = narrow_to(grad, whole(&spec.input_shape), window).select(0, 0);
    let offsets = [0, window.map_or(0, |w| w[0].0 as u64), window.map_or(0, |w| w[1].0 as u64), 0];
    // each axis's largest magnitudes over the other axes (the leading axis peeled off one after
    // the other); the first axis's maxima cover every element, a non-finite one among them too
    let maxima: Vec<Vec<f64>> = axis_maxima(&g.abs()).iter().map(super::to_f64_vec).collect();
    let overflow = !maxima[0].iter().all(|v| v.is_finite());
    let axes = maxima
        .iter()
        .zip(offsets)
        .map(|(m, offset)| {
            let bools: Vec<bool> = m.iter().map(|v| *v != 0.0).collect();
            mask_to_set_from(&bools, offset)
        })
        .collect();
    ProbeResult {
        axes,
        overflow,
        dtype: if x.kind() == Kind::Float { "float32" } else { "float64" },
        millis: started.elapsed().as_secs_f64() * 1e3,
        probe_width,
        network_width,
    }
}

/// Per axis of `t`, the maximum over every other axis (NaN where one is NaN): the leading axis
/// from the tensor flattened behind it, the others from the maxima over the leading axis.
fn axis_maxima(t: &Tensor) -> Vec<Tensor> {
    if t.dim() <= 1 {
        return vec![t.shallow_clone()];
    }
    let mut maxima = vec![t.flatten(1, -1).amax(1, false)];
    maxima.extend(axis_maxima(&t.amax(0, false)));
    maxima
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_model, SpecLimits};
    use serde_json::json;

    /// The quotient probe reads the same input sets as the probe over every real channel, on
    /// networks where channels differ: concatenated branches mixed by grouped and depthwise
    /// convs, grouped convs on the input, residual pairs, flat units after flatten.
    #[test]
    fn quotient_equals_the_full_probe() {
        let cases = [
            json!({"input_shape": [4, 13, 11], "layers": [
                {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "groups": 4, "padding": 1},
                {"type": "concat", "branches": [
                    [{"type": "conv2d", "out_channels": 2, "kernel_size": 1}],
                    [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "dilation": 2, "padding": 2, "groups": 2}],
                    [{"type": "maxpool2d", "kernel_size": 3, "stride": 1, "padding": 1}]]},
                {"type": "conv2d", "out_channels": 10, "kernel_size": [1, 3], "groups": 10, "stride": 2},
                {"type": "conv2d", "out_channels": 4, "kernel_size": 2, "groups": 2}]}),
            json!({"input_shape": [3, 12, 12], "layers": [
                {"type": "residual", "body": [
                    {"type": "conv2d", "out_channels": 6, "kernel_size": 2, "stride": 2, "groups": 3},
                    {"type": "relu"},
                    {"type": "conv2d", "out_channels": 6, "kernel_size": 1, "groups": 6}],
                 "shortcut": [{"type": "conv2d", "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1, "groups": 3}]},
                {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": "same", "dilation": 2, "groups": 2},
                {"type": "avgpool2d", "kernel_size": 2, "ceil_mode": true},
                {"type": "flatten"}]}),
            json!({"input_shape": [2, 9, 9], "layers": [
                {"type": "concat", "branches": [
                    [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "groups": 2}],
                    [{"type": "conv2d", "out_channels": 2, "kernel_size": 5, "padding": 1}]]},
                {"type": "flatten"}, {"type": "linear", "out_features": 3}]}),
            // border units of the first conv read padding alone
            json!({"input_shape": [2, 10, 19], "layers": [
                {"type": "conv2d", "out_channels": 3, "kernel_size": 1, "stride": 2, "padding": 3},
                {"type": "conv2d", "out_channels": 3, "kernel_size": [5, 2], "groups": 3, "padding": "same"},
                {"type": "maxpool2d", "kernel_size": 2, "padding": 1, "ceil_mode": true}]}),
            json!({"input_shape": [6], "layers": [
                {"type": "residual", "body": [{"type": "linear", "out_features": 6}, {"type": "sigmoid"}]},
                {"type": "linear", "out_features": 2}]}),
            // a ConvNeXt block: depthwise conv, layernorm2d, pointwise MLP, a [C, 1, 1] layer
            // scale (a parameter node) times the block, plus the input
            json!({"input_shape": [4, 9, 7], "graph": {"nodes": [
                {"name": "dw", "type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 4, "inputs": ["input"]},
                {"name": "ln", "type": "layernorm2d", "normalized_shape": 4},
                {"name": "up", "type": "conv2d", "out_channels": 8, "kernel_size": 1},
                {"name": "down", "type": "conv2d", "out_channels": 4, "kernel_size": 1},
                {"name": "layer_scale", "type": "parameter", "shape": [4, 1, 1]},
                {"name": "scale", "type": "mul", "inputs": ["layer_scale", "down"]},
                {"name": "add", "type": "add", "inputs": ["scale", "input"]},
                {"name": "pool", "type": "maxpool2d", "kernel_size": 2}]}}),
            // a volume: grouped conv3d (with replicate padding), pools, a residual, a channel
            // concatenation, flat units after flatten
            json!({"input_shape": [4, 6, 9, 8], "layers": [
                {"type": "conv3d", "out_channels": 4, "kernel_size": [3, 1, 3], "groups": 2, "padding": 1, "padding_mode": "replicate"},
                {"type": "residual", "body": [{"type": "conv3d", "out_channels": 6, "kernel_size": 3, "stride": 2, "groups": 2, "padding": [0, 1, 1]}],
                 "shortcut": [{"type": "maxpool3d", "kernel_size": [3, 3, 3], "stride": 2, "padding": [0, 1, 1], "dilation": [1, 1, 1]},
                              {"type": "conv3d", "out_channels": 6, "kernel_size": 1, "groups": 2}]},
                {"type": "concat", "branches": [
                    [{"type": "conv3d", "out_channels": 2, "kernel_size": 1, "groups": 2}],
                    [{"type": "avgpool3d", "kernel_size": 3, "stride": 1, "padding": 1, "ceil_mode": true}]]},
                {"type": "flatten"}]}),
        ];
        let limits = SpecLimits::default();
        for case in &cases {
            let spec = parse_model(case, "", &limits).unwrap();
            let graph = infer(&spec, "").unwrap();
            for node in graph.walk() {
                let out = &node.output;
                let units: Vec<(Vec<u64>, Option<u64>)> = if out.len() == 4 {
                    let (k, i, j) = (out[1] / 2, out[2] - 1, out[3] / 3);
                    let mut u: Vec<_> = (0..out[0]).map(|c| (vec![k, i, j], Some(c))).collect();
                    u.extend([(vec![0, 0, 0], None), (vec![out[1] - 1, 0, out[3] - 1], Some(0))]);
                    u
                } else if out.len() == 3 {
                    let (i, j) = (out[1] / 2, out[2] - 1);
                    let mut u: Vec<_> = (0..out[0]).map(|c| (vec![i, j], Some(c))).collect();
                    u.extend([(vec![0, 0], None), (vec![out[1] - 1, 0], Some(0)), (vec![0, out[2] / 2], None)]);
                    u
                } else {
                    (0..out[0])
                        .step_by(((out[0] / 7) as usize).max(1))
                        .map(|k| (vec![k], None))
                        .collect()
                };
                for (index, channel) in units {
                    let q = probe(&spec, &node.path, &index, channel, Device::Cpu).unwrap();
                    let f = probe_full(&spec, &node.path, &index, channel, Device::Cpu).unwrap();
                    assert_eq!(q.axes, f.axes, "{} {index:?} {channel:?} in {case}", node.path);
                    assert!(!q.overflow && !f.overflow);
                    assert!(q.probe_width <= f.network_width);
                }
            }
        }
    }

    /// The probe runs in float32 where every coefficient is a whole number, even past float32's
    /// range in the forward pass; in float64 where a coefficient is a fraction (bilinear
    /// weights, unequal adaptive windows) or where float32's seeded counts still overflow. Every
    /// case reads the sets of the float64 probe over every real channel.
    #[test]
    fn float32_where_exact_float64_beyond() {
        let convs = |n: usize| -> Vec<serde_json::Value> {
            (0..n)
                .map(|_| json!({"type": "conv2d", "out_channels": 1, "kernel_size": 7, "padding": 3}))
                .collect()
        };
        let mut upsampled = convs(2);
        upsampled.push(json!({"type": "upsample", "scale_factor": 2, "mode": "bilinear"}));
        let mut uneven = convs(1);
        uneven.push(json!({"type": "adaptive_avgpool2d", "output_size": [3, 7]}));
        let mut global = convs(2);
        global.push(json!({"type": "adaptive_avgpool2d", "output_size": 1}));
        let cases = [
            // about 3e40 paths reach the centre unit: past float32's 3.4e38 in the forward pass;
            // at most about 6e37 from one input position, 44 times the seed back
            (json!({"input_shape": [1, 40, 40], "layers": convs(24)}), "float32"),
            // about 2e81 paths from the centre input position: past what the seed keeps finite
            // (2^247, about 2.3e74)
            (json!({"input_shape": [1, 40, 40], "layers": convs(50)}), "float64"),
            (json!({"input_shape": [1, 11, 9], "layers": upsampled}), "float64"),
            (json!({"input_shape": [1, 10, 14], "layers": uneven}), "float64"),
            (json!({"input_shape": [2, 12, 12], "layers": global}), "float32"),
        ];
        let limits = SpecLimits::default();
        for (case, dtype) in &cases {
            let spec = parse_model(case, "", &limits).unwrap();
            let graph = infer(&spec, "").unwrap();
            let last = graph.nodes.last().unwrap();
            let index: Vec<u64> = last.output[1..].iter().map(|n| n / 2).collect();
            let q = probe(&spec, &last.path, &index, None, Device::Cpu).unwrap();
            let f = probe_full(&spec, &last.path, &index, None, Device::Cpu).unwrap();
            assert_eq!(q.dtype, *dtype, "{case}");
            assert_eq!(f.dtype, "float64");
            assert!(!q.overflow && !f.overflow, "{case}");
            assert_eq!(q.axes, f.axes, "{case}");
        }
    }
}
