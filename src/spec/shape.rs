//! Shape inference: walks a [`ModelSpec`] the way PyTorch would run it and records every
//! layer's input and output shape and its resolved sliding windows. Every analysis works on the
//! resulting [`Graph`], so all of them agree on paths, shapes and padding.
use super::error::{child, SpecError, SpecResult};
use super::interp::{self, Interp};
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
    /// What the padding holds (zeros for every pool).
    pub fill: Fill,
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

/// Where a node's input comes from: an earlier node (its index in [`Graph::nodes`]) or the
/// model's input (`None`).
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: Option<usize>,
    /// What the edge is called in tables: a composite's `branches.1`, `body` or `shortcut`, or
    /// the node (or `input`) it comes from in the graph form.
    pub label: String,
    pub shape: Vec<u64>,
}

impl Edge {
    /// Whether this input is broadcast along `axis` of the sample to the node's `output` (size 1
    /// there, larger in the output): every output position reads its one position.
    pub fn broadcast(&self, output: &[u64], axis: usize) -> bool {
        self.shape[axis] == 1 && output[axis] > 1
    }
}

#[derive(Debug)]
pub struct Node<'a> {
    /// Dotted path: `4`, `4.branches.1.0`, `7.body.2`; in the graph form, the node's name.
    pub path: String,
    /// JSON pointer of the layer in the request, for error messages.
    pub pointer: String,
    pub layer: &'a Layer,
    /// The shape of the first (for most layers the only) input.
    pub input: Vec<u64>,
    /// Every tensor the node reads, in order.
    pub inputs: Vec<Edge>,
    pub output: Vec<u64>,
    /// Height and width windows of conv and pool layers (and of adaptive pools whose windows
    /// happen to be uniform).
    pub windows: Option<[Window; 2]>,
    /// Depth, height and width windows of a volume layer (conv3d, the 3-D pools) on
    /// `[C, D, H, W]`, where they are uniform; `windows` is None for those.
    pub volume: Option<[Window; 3]>,
    /// How the node combines several inputs (add, mul, concat and the lowered composites).
    pub merge: Option<Merge>,
    /// A sequential composite's branches, or body and shortcut: the nodes inside it, for tables.
    pub groups: Vec<Group>,
    /// The output is a 1-D signal `[C, L]` (channels, then positions), not a sequence `[L, D]`
    /// of tokens: the output of a 1-D layer, and what element-wise layers, linear layers and
    /// merges make of one (see [`Graph::input_signal`]).
    pub signal: bool,
    /// What the output holds above the diagonal of its last two axes (see [`Above`]).
    pub above: Above,
    /// A linear or embedding whose weight is another layer's tensor (`weight_of`): that layer.
    pub tie: Option<Tie>,
}

/// The layer that owns a tied layer's weight: its node and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tie {
    pub owner: usize,
    pub path: String,
    /// The owner's name, else its path: how messages and notes name it.
    pub label: String,
}

/// What a tensor holds above the diagonal of its last two axes `[n, m]` (the elements
/// `(.., i, j)` with `j > i`), where a causal mask written by hand put something there: exact
/// zeros there are why a causal attention's output token `i` reads no value token after `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Above {
    /// Computed from the input, as everywhere else.
    Computed,
    /// `-inf`: a causal mask's output, and a positive scale of it.
    NegInf,
    /// Exactly 0: a softmax over the last axis of `-inf` there, and any scale or dropout of it.
    Zero,
}

#[derive(Debug)]
pub struct Group {
    /// `branches.1`, `body` or `shortcut`, relative to the composite's path.
    pub label: String,
    /// Indices into [`Graph::nodes`], in order.
    pub nodes: Vec<usize>,
    pub output: Vec<u64>,
}

/// The shaped model as a DAG. `nodes` is in topological order (every node after the nodes it
/// reads); the sequential form is lowered into it (a residual becomes an add node reading its
/// body and shortcut, a concat a concatenation of its branches) and keeps its paths.
#[derive(Debug)]
pub struct Graph<'a> {
    pub spec: &'a ModelSpec,
    pub nodes: Vec<Node<'a>>,
    /// The top-level nodes in display order (a composite's members are in its groups).
    pub top: Vec<usize>,
    /// The nodes whose tensors the model returns.
    pub outputs: Vec<usize>,
    /// The model's input `[C, L]` is a 1-D signal: a 1-D layer reads it, directly or through
    /// element-wise layers and merges. Otherwise a two-axis input is a sequence `[L, D]`.
    pub input_signal: bool,
}

impl<'a> Graph<'a> {
    pub fn input(&self) -> &[u64] {
        &self.spec.input_shape
    }

    /// The shape of the (first) output.
    pub fn output(&self) -> &[u64] {
        self.outputs
            .first()
            .map(|&i| self.nodes[i].output.as_slice())
            .unwrap_or(&self.spec.input_shape)
    }

    /// The shapes of every output, in order (the input's when the model has no layers).
    pub fn output_shapes(&self) -> Vec<Vec<u64>> {
        if self.outputs.is_empty() {
            return vec![self.spec.input_shape.clone()];
        }
        self.outputs.iter().map(|&i| self.nodes[i].output.clone()).collect()
    }

    /// Elements of one sample's outputs, all outputs together (what a loss reads).
    pub fn output_numel(&self) -> u64 {
        self.output_shapes().iter().map(|s| numel(s)).sum()
    }

    /// Every node, depth first, parents before their children (the tables' order).
    pub fn walk(&self) -> Vec<&Node<'a>> {
        self.walk_ids().into_iter().map(|i| &self.nodes[i]).collect()
    }

    /// The indices of [`Graph::walk`]'s nodes.
    pub fn walk_ids(&self) -> Vec<usize> {
        fn go(g: &Graph, ids: &[usize], out: &mut Vec<usize>) {
            for &i in ids {
                out.push(i);
                for grp in &g.nodes[i].groups {
                    go(g, &grp.nodes, out);
                }
            }
        }
        let mut out = Vec::with_capacity(self.nodes.len());
        go(self, &self.top, &mut out);
        out
    }

    /// The index of the node with this path.
    pub fn index(&self, path: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.path == path)
    }

    /// Whether each node is read, directly or not, by one of the model's outputs.
    pub fn live(&self) -> Vec<bool> {
        self.reads(&self.outputs)
    }

    /// `target` and every node it reads, directly or not, in topological order.
    pub fn ancestors(&self, target: usize) -> Vec<usize> {
        let keep = self.reads(&[target]);
        (0..=target).filter(|&i| keep[i]).collect()
    }

    /// Which nodes `seeds` are or read, directly or not (one pass back over the topological
    /// order).
    fn reads(&self, seeds: &[usize]) -> Vec<bool> {
        let mut keep = vec![false; self.nodes.len()];
        for &s in seeds {
            keep[s] = true;
        }
        let last = seeds.iter().copied().max().unwrap_or(0);
        for i in (0..self.nodes.len().min(last + 1)).rev() {
            if keep[i] {
                for f in self.nodes[i].inputs.iter().filter_map(|e| e.from) {
                    keep[f] = true;
                }
            }
        }
        keep
    }
}

pub fn infer<'a>(spec: &'a ModelSpec, pointer: &str) -> SpecResult<Graph<'a>> {
    let mut b = Builder { nodes: Vec::new() };
    let (top, outputs) = match &spec.graph {
        None => {
            let (ids, end, _) = b.list(&spec.layers, None, &spec.input_shape, "", &child(pointer, "layers"))?;
            (ids, end.into_iter().collect())
        }
        Some(g) => b.graph(g, &spec.input_shape, &child(pointer, "graph"))?,
    };
    // int64 token ids are read by embeddings alone, and an embedding reads nothing else
    for node in &b.nodes {
        let embedding = matches!(node.layer.kind, LayerKind::Embedding { .. });
        for e in &node.inputs {
            let ids = e.from.is_none() && spec.token_ids;
            if ids != embedding {
                return Err(SpecError::invalid(
                    &node.pointer,
                    if embedding {
                        format!(
                            "embedding {} reads {}, a float tensor: an embedding reads the model's token ids (input_dtype \"int64\")",
                            node.path, e.label
                        )
                    } else {
                        format!(
                            "{} {} reads the model's int64 token ids: only an embedding can (or drop input_dtype \"int64\")",
                            node.layer.type_name(),
                            node.path
                        )
                    },
                ));
            }
        }
    }
    let mut nodes = b.nodes;
    // every count multiplies shapes out: a tensor whose elements overflow 64 bits (a
    // concatenation of thousands of huge inputs) is refused here, naming its node
    if let Some(n) = nodes
        .iter()
        .find(|n| n.output.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).is_none())
    {
        return Err(SpecError::invalid(
            &n.pointer,
            format!(
                "{} {} would have shape {:?}: more elements than 2^64",
                n.layer.type_name(),
                n.path,
                n.output
            ),
        ));
    }
    tie_weights(&mut nodes)?;
    let input_signal = signals(spec, &mut nodes);
    mark_above(&mut nodes);
    Ok(Graph {
        spec,
        nodes,
        top,
        outputs,
        input_signal,
    })
}

/// The weight shape of a layer that can share its weight: a linear's `[out, in]`, an
/// embedding's `[num_embeddings, embedding_dim]`.
fn tieable_weight(node: &Node) -> Option<Vec<u64>> {
    match node.layer.kind {
        LayerKind::Linear { .. } => node.dense_weight().map(|w| w.shape().iter().map(|&d| d as u64).collect()),
        LayerKind::Embedding { num_embeddings, dim, .. } => Some(vec![num_embeddings, dim]),
        _ => None,
    }
}

/// A node as messages name it: its name, else its path.
fn label(node: &Node) -> String {
    node.layer.name.clone().unwrap_or_else(|| node.path.clone())
}

/// Resolves every `weight_of` to the node it names (by path, else by a unique name): a linear or
/// an embedding of the same weight shape that names no other itself. The layers sharing one
/// tensor are a group: the first of them in the model's order owns it (PyTorch's
/// `named_parameters()` names a shared tensor by the first module that registers it, whichever
/// line of `__init__` assigned it), and the others are tied to it.
fn tie_weights(nodes: &mut [Node]) -> SpecResult<()> {
    let mut target = vec![None; nodes.len()];
    for i in 0..nodes.len() {
        let Some(name) = nodes[i].layer.weight_of.as_deref() else {
            continue;
        };
        let at = child(&nodes[i].pointer, "weight_of");
        let by_name: Vec<usize> = (0..nodes.len()).filter(|&j| nodes[j].layer.name.as_deref() == Some(name)).collect();
        let j = match nodes.iter().position(|n| n.path == name) {
            Some(j) => j,
            None if by_name.len() == 1 => by_name[0],
            None if by_name.len() > 1 => {
                return Err(SpecError::invalid(
                    at,
                    format!("{} layers are named {name:?}: give the layer's path", by_name.len()),
                ))
            }
            None => {
                let near = nodes
                    .iter()
                    .filter_map(|n| n.layer.name.as_deref())
                    .filter(|n| super::json::edit_distance(n, name) <= 2)
                    .min_by_key(|n| super::json::edit_distance(n, name))
                    .map(|n| format!("; did you mean {n:?}?"))
                    .unwrap_or_default();
                return Err(SpecError::invalid(at, format!("no layer is named {name:?}{near}")));
            }
        };
        let (me, them) = (&nodes[i], &nodes[j]);
        let (me_label, them_label) = (label(me), label(them));
        let reason = if j == i {
            Some("names the layer itself".to_string())
        } else if them.layer.weight_of.is_some() {
            Some(format!(
                "names {them_label}, which names another layer's weight itself: every layer sharing a tensor names the same one"
            ))
        } else {
            match (tieable_weight(me), tieable_weight(them)) {
                (_, None) => Some(format!(
                    "names {} {them_label}: only a linear or an embedding shares its weight",
                    them.layer.type_name()
                )),
                (Some(a), Some(b)) if a != b => Some(format!(
                    "{me_label}'s weight is {a:?} and {them_label}'s {b:?}: a shared tensor has one shape"
                )),
                _ => None,
            }
        };
        if let Some(reason) = reason {
            return Err(SpecError::invalid(at, reason));
        }
        target[i] = Some(j);
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (k, j) in target.iter().enumerate() {
        if let Some(j) = *j {
            groups.entry(j).or_insert_with(|| vec![j]).push(k);
        }
    }
    for mut group in groups.into_values() {
        group.sort_unstable();
        let owner = group[0];
        let tie = Tie {
            owner,
            path: nodes[owner].path.clone(),
            label: label(&nodes[owner]),
        };
        for &k in &group[1..] {
            nodes[k].tie = Some(tie.clone());
        }
    }
    Ok(())
}

/// Marks the nodes whose output is a 1-D signal `[C, L]` and says whether the model's input is
/// one: a two-axis float input that a 1-D layer reads, directly or through layers that keep a
/// signal a signal (element-wise layers, linear layers, narrows, merges).
fn signals(spec: &ModelSpec, nodes: &mut [Node]) -> bool {
    let keeps = |n: &Node| {
        n.output.len() == 2
            && (n.merge.is_some_and(|m| matches!(m, Merge::Add | Merge::Mul | Merge::Cat(_)))
                || matches!(
                    n.layer.kind,
                    LayerKind::BatchNorm { .. }
                        | LayerKind::Activation { .. }
                        | LayerKind::Dropout { .. }
                        | LayerKind::Scale { .. }
                        | LayerKind::Linear { .. }
                        | LayerKind::Narrow { .. }
                ))
    };
    let one_d = |n: &Node| n.layer.one_d_on(n.input.len());
    if spec.input_shape.len() != 2 || spec.token_ids || !nodes.iter().any(one_d) {
        return false;
    }
    // which nodes' outputs come from the input through layers that keep a signal
    let mut from_input = vec![false; nodes.len()];
    let mut input_signal = false;
    for i in 0..nodes.len() {
        let reads = nodes[i].inputs.iter().any(|e| e.from.is_none_or(|f| from_input[f]));
        input_signal |= reads && one_d(&nodes[i]);
        from_input[i] = reads && keeps(&nodes[i]);
    }
    for i in 0..nodes.len() {
        let reads = nodes[i].inputs.iter().any(|e| e.from.map_or(input_signal, |f| nodes[f].signal));
        nodes[i].signal = one_d(&nodes[i]) || (reads && keeps(&nodes[i]));
    }
    input_signal
}

/// Marks what every node holds above the diagonal (a causal mask, the softmax after it, the
/// scales between: nanoGPT's `softmax(masked_fill(q @ k^T * c, tril == 0, -inf))`).
fn mark_above(nodes: &mut [Node]) {
    for i in 0..nodes.len() {
        let n = &nodes[i];
        let from = n.inputs.first().and_then(|e| e.from).map_or(Above::Computed, |f| nodes[f].above);
        let last = |dim: i64| n.input.len() >= 2 && sample_axis(dim, n.input.len(), "").ok() == Some(n.input.len() - 1);
        nodes[i].above = match (&n.layer.kind, from) {
            (LayerKind::CausalMask, _) => Above::NegInf,
            (LayerKind::Softmax { dim }, Above::NegInf) if last(*dim) => Above::Zero,
            (LayerKind::Scale { factor }, Above::NegInf) if *factor > 0.0 => Above::NegInf,
            (LayerKind::Scale { .. }, Above::Zero) => Above::Zero,
            // nanoGPT's attn_dropout after the softmax: zeros stay zeros (scaled or dropped)
            (LayerKind::Dropout { .. }, Above::Zero) => Above::Zero,
            (
                LayerKind::Activation {
                    kind: Activation::Identity,
                    ..
                },
                above,
            ) => above,
            _ => Above::Computed,
        };
    }
}

struct Builder<'a> {
    nodes: Vec<Node<'a>>,
}

impl<'a> Builder<'a> {
    /// Lowers a sequential list reading `src` (of shape `input`): the indices of its top-level
    /// nodes, its last node (None for an empty list: the list is the identity) and its output.
    fn list(
        &mut self,
        layers: &'a [Layer],
        src: Option<usize>,
        input: &[u64],
        path: &str,
        pointer: &str,
    ) -> SpecResult<(Vec<usize>, Option<usize>, Vec<u64>)> {
        let mut ids = Vec::with_capacity(layers.len());
        let (mut src, mut shape) = (src, input.to_vec());
        for (i, layer) in layers.iter().enumerate() {
            let node_path = if path.is_empty() { i.to_string() } else { format!("{path}.{i}") };
            let edge = Edge {
                from: src,
                label: String::new(),
                shape,
            };
            let id = self.layer(layer, edge, node_path, child(pointer, i))?;
            ids.push(id);
            src = Some(id);
            shape = self.nodes[id].output.clone();
        }
        let end = if ids.is_empty() { None } else { src };
        Ok((ids, end, shape))
    }

    /// A composite's branch (or body, or shortcut) `label` reading the composite's `edge`: its
    /// nodes, and the edge from its end (from the composite's input when it is empty).
    fn group(&mut self, layers: &'a [Layer], edge: &Edge, path: &str, label: String, pointer: &str) -> SpecResult<(Edge, Group)> {
        let (ids, end, out) = self.list(layers, edge.from, &edge.shape, &format!("{path}.{label}"), pointer)?;
        let e = Edge {
            from: end.or(edge.from),
            label: label.clone(),
            shape: out.clone(),
        };
        Ok((
            e,
            Group {
                label,
                nodes: ids,
                output: out,
            },
        ))
    }

    /// One layer reading `edge`; composites lower their groups first and become merge nodes.
    fn layer(&mut self, layer: &'a Layer, edge: Edge, path: String, pointer: String) -> SpecResult<usize> {
        let mut groups = Vec::new();
        let mut inputs = Vec::new();
        let mut volume = None;
        let input = edge.shape.clone();
        let (output, windows, merge) = match &layer.kind {
            LayerKind::Concat { branches } => {
                for (b, layers) in branches.iter().enumerate() {
                    let label = format!("branches.{b}");
                    let bp = child(&child(&pointer, "branches"), b);
                    let (e, g) = self.group(layers, &edge, &path, label, &bp)?;
                    if let Some(first) = groups.first().map(|g: &Group| &g.output) {
                        if g.output.len() != first.len() || g.output[1..] != first[1..] {
                            return Err(SpecError::invalid(
                                bp,
                                format!("branch {b} ends with shape {:?}, but branch 0 ends with {first:?}: concatenated branches must agree on every axis but the channels", g.output),
                            ));
                        }
                    }
                    inputs.push(e);
                    groups.push(g);
                }
                let mut out = groups[0].output.clone();
                out[0] = groups.iter().map(|g| g.output[0]).sum();
                (out, None, Some(Merge::Cat(0)))
            }
            LayerKind::Residual { body, shortcut } => {
                for (label, layers) in [("body", body), ("shortcut", shortcut)] {
                    let (e, g) = self.group(layers, &edge, &path, label.to_string(), &child(&pointer, label))?;
                    inputs.push(e);
                    groups.push(g);
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
                (groups[0].output.clone(), None, Some(Merge::Add))
            }
            _ if input.len() == 4 && !layer.reads_volumes() => {
                return Err(SpecError::invalid(
                    &pointer,
                    format!(
                        "{} on a volume {input:?} is not supported: a volume [C, D, H, W] is read by conv3d, conv_transpose3d, upsample (nearest, trilinear), maxpool3d, avgpool3d, adaptive_avgpool3d, adaptive_maxpool3d, the 3-D pads (zeropad3d, reflectionpad3d, replicationpad3d, circularpad3d), batchnorm3d, groupnorm, instancenorm3d, layernorm, the activations, dropout, flatten, and the merges (add, mul, concat, residual)",
                        layer.type_name()
                    ),
                ))
            }
            _ if layer.volume_op() || (input.len() == 4 && matches!(layer.kind, LayerKind::Upsample { .. })) => {
                let (out, ws) = infer_3d(layer, &input, &pointer)?;
                volume = ws;
                inputs.push(edge);
                (out, None, None)
            }
            _ => {
                let (out, win) = infer_layer(layer, &input, &pointer)?;
                inputs.push(edge);
                (out, win, None)
            }
        };
        self.nodes.push(Node {
            path,
            pointer,
            layer,
            input,
            inputs,
            output,
            windows,
            volume,
            merge,
            groups,
            signal: false,
            above: Above::Computed,
            tie: None,
        });
        Ok(self.nodes.len() - 1)
    }

    /// The graph form: nodes sorted topologically (listing order among the ready ones), each
    /// shaped from its inputs.
    fn graph(&mut self, g: &'a GraphSpec, input: &[u64], pointer: &str) -> SpecResult<(Vec<usize>, Vec<usize>)> {
        let nodes_ptr = child(pointer, "nodes");
        let by_name: std::collections::HashMap<&str, usize> = g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.layer.name.as_deref().unwrap_or_default(), i))
            .collect();
        // Kahn's algorithm over the listing
        let mut waiting: Vec<usize> = g
            .nodes
            .iter()
            .map(|n| n.inputs.iter().filter(|s| s.as_str() != GRAPH_INPUT).count())
            .collect();
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for s in n.inputs.iter().filter(|s| s.as_str() != GRAPH_INPUT) {
                readers[by_name[s.as_str()]].push(i);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> = (0..g.nodes.len()).filter(|&i| waiting[i] == 0).collect();
        let mut order = Vec::with_capacity(g.nodes.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &r in &readers[i] {
                waiting[r] -= 1;
                if waiting[r] == 0 {
                    ready.insert(r);
                }
            }
        }
        if order.len() < g.nodes.len() {
            let stuck: Vec<usize> = (0..g.nodes.len()).filter(|&i| waiting[i] > 0).collect();
            let names: Vec<String> = stuck
                .iter()
                .take(8)
                .map(|&i| format!("{:?}", g.nodes[i].layer.name.as_deref().unwrap_or_default()))
                .collect();
            return Err(SpecError::invalid(
                child(&nodes_ptr, stuck[0]),
                format!(
                    "the graph has a cycle: {} node{} can never run because {} read{} {} own output ({}{})",
                    stuck.len(),
                    if stuck.len() == 1 { "" } else { "s" },
                    if stuck.len() == 1 { "it" } else { "they" },
                    if stuck.len() == 1 { "s" } else { "" },
                    if stuck.len() == 1 { "its" } else { "their" },
                    names.join(", "),
                    if stuck.len() > 8 { ", ..." } else { "" }
                ),
            ));
        }
        let mut index = vec![usize::MAX; g.nodes.len()];
        let mut top = Vec::with_capacity(order.len());
        for i in order {
            let n = &g.nodes[i];
            let ptr = child(&nodes_ptr, i);
            let name = n.layer.name.clone().unwrap_or_default();
            let edges: Vec<Edge> = n
                .inputs
                .iter()
                .map(|s| match s.as_str() {
                    GRAPH_INPUT => Edge {
                        from: None,
                        label: GRAPH_INPUT.to_string(),
                        shape: input.to_vec(),
                    },
                    s => {
                        let from = index[by_name[s]];
                        Edge {
                            from: Some(from),
                            label: s.to_string(),
                            shape: self.nodes[from].output.clone(),
                        }
                    }
                })
                .collect();
            let id = match &n.layer.kind {
                LayerKind::Add
                | LayerKind::Mul
                | LayerKind::Cat { .. }
                | LayerKind::MatMul
                | LayerKind::ScaledDotProductAttention { .. } => {
                    let (output, merge) = merge_shape(&n.layer.kind, &edges, &name, &ptr)?;
                    self.nodes.push(Node {
                        path: name,
                        pointer: ptr,
                        layer: &n.layer,
                        input: edges[0].shape.clone(),
                        inputs: edges,
                        output,
                        windows: None,
                        volume: None,
                        merge: Some(merge),
                        groups: Vec::new(),
                        signal: false,
                        above: Above::Computed,
                        tie: None,
                    });
                    self.nodes.len() - 1
                }
                LayerKind::Parameter { shape, .. } => {
                    self.nodes.push(Node {
                        path: name,
                        pointer: ptr,
                        layer: &n.layer,
                        input: Vec::new(),
                        inputs: Vec::new(),
                        output: shape.clone(),
                        windows: None,
                        volume: None,
                        merge: None,
                        groups: Vec::new(),
                        signal: false,
                        above: Above::Computed,
                        tie: None,
                    });
                    self.nodes.len() - 1
                }
                _ => {
                    let mut edges = edges.into_iter();
                    let edge = edges.next().expect("a node reads at least one tensor");
                    let id = self.layer(&n.layer, edge, name, ptr)?;
                    // cross-attention: the keys and values after the query
                    let rest: Vec<Edge> = edges.collect();
                    if !rest.is_empty() {
                        cross_attention(&self.nodes[id], &rest)?;
                        self.nodes[id].inputs.extend(rest);
                    }
                    id
                }
            };
            index[i] = id;
            top.push(id);
        }
        let outputs = g.outputs.iter().map(|s| index[by_name[s.as_str()]]).collect();
        Ok((top, outputs))
    }
}

/// The keys and values a cross-attention node reads after its query `[Lq, E]`: sequences
/// `[Lk, E]` (PyTorch's kdim = vdim = embed_dim), keys and values of one length, no causal mask.
fn cross_attention(node: &Node, kv: &[Edge]) -> SpecResult<()> {
    let e = node.input[1];
    let show = || {
        std::iter::once(format!("query {:?}", node.input))
            .chain(kv.iter().map(|k| format!("{} {:?}", k.label, k.shape)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let inputs = child(&node.pointer, "inputs");
    if kv.iter().any(|k| k.shape.len() != 2 || k.shape[1] != e) {
        return Err(SpecError::invalid(
            inputs,
            format!(
                "cross-attention node {:?} reads {}: keys and values are sequences [L, {e}] with the query's embed_dim",
                node.path,
                show()
            ),
        ));
    }
    if kv.len() == 2 && kv[0].shape[0] != kv[1].shape[0] {
        return Err(SpecError::invalid(
            inputs,
            format!(
                "cross-attention node {:?} reads {}: keys and values must have as many tokens",
                node.path,
                show()
            ),
        ));
    }
    if matches!(node.layer.kind, LayerKind::MultiheadAttention { causal: true, .. }) {
        return Err(SpecError::invalid(
            child(&node.pointer, "is_causal"),
            "a causal mask is for self-attention (a query token sees the keys up to its own); this node reads separate keys and values",
        ));
    }
    Ok(())
}

/// The sample axes a mean averages, sorted and without repeats (PyTorch refuses repeats).
pub fn mean_axes(dims: &[i64], rank: usize, pointer: &str) -> SpecResult<Vec<usize>> {
    let mut axes = dims
        .iter()
        .map(|&d| sample_axis(d, rank, pointer))
        .collect::<SpecResult<Vec<_>>>()?;
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(SpecError::invalid(pointer, "names an axis twice"));
    }
    Ok(axes)
}

/// PyTorch's `dim` (batch axis 0, negative from the end) as an axis of the sample.
pub fn sample_axis(dim: i64, rank: usize, pointer: &str) -> SpecResult<usize> {
    let full = rank as i64 + 1;
    let d = if dim < 0 { full + dim } else { dim };
    if d < 1 || d >= full {
        return Err(SpecError::invalid(
            pointer,
            format!(
                "dim {dim} is not a sample axis of a tensor with {full} axes (batch is dim 0): expected 1..{} or -{}..-1",
                full - 1,
                full - 1
            ),
        ));
    }
    Ok(d as usize - 1)
}

/// The output of a reshape: its target resolved against the input (one -1 inferred), the same
/// number of elements, 1 to 3 sample axes.
fn reshape(input: &[u64], to: &ReshapeTo, pointer: &str) -> SpecResult<Vec<u64>> {
    let whole = |dims: &[u64]| dims.iter().try_fold(1u128, |a, &d| a.checked_mul(d as u128));
    let total = whole(input).ok_or_else(|| SpecError::invalid(pointer, "the input's size overflows"))?;
    let (target, at): (Vec<i64>, String) = match to {
        ReshapeTo::Shape(shape) => (shape.clone(), child(pointer, "shape")),
        ReshapeTo::Unflatten { dim, sizes } => {
            let a = sample_axis(*dim, input.len(), &child(pointer, "dim"))?;
            let mut t: Vec<i64> = input[..a].iter().map(|&d| d as i64).collect();
            t.extend(sizes);
            t.extend(input[a + 1..].iter().map(|&d| d as i64));
            let at = child(pointer, "unflattened_size");
            // the sizes split that one axis
            let fixed = whole(&sizes.iter().map(|&d| d as u64).collect::<Vec<_>>());
            if !sizes.contains(&-1) && fixed != Some(input[a] as u128) {
                return Err(SpecError::invalid(
                    at,
                    format!(
                        "{sizes:?} does not multiply to the {} elements of axis {dim} of {input:?}",
                        input[a]
                    ),
                ));
            }
            (t, at)
        }
        ReshapeTo::Flatten { start, end } => {
            let a = sample_axis(*start, input.len(), &child(pointer, "start_dim"))?;
            let b = sample_axis(*end, input.len(), &child(pointer, "end_dim"))?;
            if a > b {
                return Err(SpecError::invalid(
                    child(pointer, "start_dim"),
                    format!("start_dim {start} comes after end_dim {end} on {input:?}"),
                ));
            }
            let merged = whole(&input[a..=b])
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| SpecError::invalid(pointer, "the flattened size overflows"))?;
            let mut t: Vec<i64> = input[..a].iter().map(|&d| d as i64).collect();
            t.push(merged);
            t.extend(input[b + 1..].iter().map(|&d| d as i64));
            (t, pointer.to_string())
        }
    };
    if target.len() > 3 {
        return Err(SpecError::invalid(
            at,
            format!("{input:?} reshaped to {} sample axes: at most 3 are supported", target.len()),
        ));
    }
    if target.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(SpecError::invalid(at, "only one size can be -1 (inferred)"));
    }
    let fixed = whole(&target.iter().filter(|&&d| d != -1).map(|&d| d as u64).collect::<Vec<_>>())
        .ok_or_else(|| SpecError::invalid(&at, "the shape's size overflows"))?;
    let mismatch = || {
        SpecError::invalid(
            &at,
            format!("cannot reshape {input:?} ({total} elements) into {target:?}, as PyTorch cannot"),
        )
    };
    let inferred = if target.contains(&-1) {
        if fixed == 0 || total % fixed != 0 {
            return Err(mismatch());
        }
        total / fixed
    } else if fixed != total {
        return Err(mismatch());
    } else {
        1
    };
    Ok(target.iter().map(|&d| if d == -1 { inferred as u64 } else { d as u64 }).collect())
}

/// The output shape of an add, mul or concat node, with PyTorch's rules: broadcasting (each
/// axis equal or 1) for add and mul, every axis but `dim` equal for concat. Every tensor has a
/// batch axis, so inputs of different rank would broadcast a sample axis against the batch:
/// they are refused.
fn merge_shape(kind: &LayerKind, edges: &[Edge], name: &str, pointer: &str) -> SpecResult<(Vec<u64>, Merge)> {
    let rank = edges[0].shape.len();
    let show = || {
        edges
            .iter()
            .map(|e| format!("{} {:?}", e.label, e.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if edges.iter().any(|e| e.shape.len() != rank) {
        return Err(SpecError::invalid(
            child(pointer, "inputs"),
            format!(
                "node {name:?} reads tensors with different numbers of axes ({}); reshape one first",
                show()
            ),
        ));
    }
    match kind {
        // q [.., L, E], k [.., S, E], v [.., S, Ev]: [.., L, Ev], the heads (if any) alike
        LayerKind::ScaledDotProductAttention { .. } => {
            let [q, k, v] = [&edges[0].shape, &edges[1].shape, &edges[2].shape];
            let fits = (2..=3).contains(&rank)
                && q[..rank - 2] == k[..rank - 2]
                && k[..rank - 2] == v[..rank - 2]
                && q[rank - 1] == k[rank - 1]
                && k[rank - 2] == v[rank - 2];
            if !fits {
                return Err(SpecError::invalid(
                    child(pointer, "inputs"),
                    format!(
                        "node {name:?} attends with {}: scaled_dot_product_attention reads q [L, E], k [S, E], v [S, Ev] (or batches of them over heads, [H, L, E]...), q's and k's features equal, k's and v's tokens equal",
                        show()
                    ),
                ));
            }
            let mut out = q.clone();
            out[rank - 1] = v[rank - 1];
            Ok((out, Merge::Attention))
        }
        LayerKind::MatMul => match (edges[0].shape.as_slice(), edges[1].shape.as_slice()) {
            ([n, k], [k2, m]) if k == k2 => Ok((vec![*n, *m], Merge::MatMul)),
            // a batch of matrices (attention's heads): [h, n, k] @ [h, k, m]
            ([h, n, k], [h2, k2, m]) if k == k2 && h == h2 => Ok((vec![*h, *n, *m], Merge::MatMul)),
            ([_, _], [_, _]) | ([_, _, _], [_, _, _]) => Err(SpecError::invalid(
                child(pointer, "inputs"),
                format!(
                    "node {name:?} multiplies {}: the first's columns must equal the second's rows (and, for batches of matrices, the batches agree)",
                    show()
                ),
            )),
            _ => Err(SpecError::invalid(
                child(pointer, "inputs"),
                format!(
                    "node {name:?} multiplies {}: matmul takes two-axis samples [n, k] @ [k, m] or batches of them [h, n, k] @ [h, k, m]",
                    show()
                ),
            )),
        },
        LayerKind::Cat { dim } => {
            let axis = sample_axis(*dim, rank, &child(pointer, "dim"))?;
            let mut out = edges[0].shape.clone();
            for e in &edges[1..] {
                if (0..rank).any(|a| a != axis && e.shape[a] != out[a]) {
                    return Err(SpecError::invalid(
                        child(pointer, "inputs"),
                        format!(
                            "node {name:?} concatenates along dim {dim}, so every other axis must agree: {}",
                            show()
                        ),
                    ));
                }
                out[axis] += e.shape[axis];
            }
            Ok((out, Merge::Cat(axis)))
        }
        _ => {
            let mut out = edges[0].shape.clone();
            for e in &edges[1..] {
                for (a, o) in out.iter_mut().enumerate() {
                    match (*o, e.shape[a]) {
                        (x, y) if x == y || y == 1 => {}
                        (1, y) => *o = y,
                        _ => {
                            return Err(SpecError::invalid(
                                child(pointer, "inputs"),
                                format!(
                                    "node {name:?} cannot broadcast {} (axis {} of a sample: sizes must be equal or 1)",
                                    show(),
                                    a
                                ),
                            ))
                        }
                    }
                }
            }
            Ok((out, if matches!(kind, LayerKind::Mul) { Merge::Mul } else { Merge::Add }))
        }
    }
}

fn sequence(shape: &[u64], what: &str, pointer: &str) -> SpecResult<[u64; 2]> {
    match shape {
        [l, d] => Ok([*l, *d]),
        _ => Err(SpecError::invalid(
            pointer,
            format!("{what} needs a sequence [L, D] (tokens, features), but its input has shape {shape:?}"),
        )),
    }
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

/// The `[C, H, W]` input of a (transposed) convolution: `in_channels` as declared and divisible
/// by `groups`.
fn grouped_image(layer: &Layer, input: &[u64], groups: u64, pointer: &str) -> SpecResult<[u64; 3]> {
    let [c, h, w] = image(input, layer.type_name(), pointer)?;
    check_groups(layer, c, groups, pointer)?;
    Ok([c, h, w])
}

/// A (transposed) convolution's `c` input channels: as declared and divisible by `groups`.
fn check_groups(layer: &Layer, c: u64, groups: u64, pointer: &str) -> SpecResult<()> {
    check_declared(layer, c, "in_channels", pointer)?;
    if c % groups != 0 {
        return Err(SpecError::invalid(
            child(pointer, "groups"),
            format!("in_channels ({c}) must be divisible by groups ({groups})"),
        ));
    }
    Ok(())
}

/// PyTorch's symmetric padding per axis, as (before, after) pairs.
fn symmetric<const N: usize>(p: [u64; N]) -> [[u64; 2]; N] {
    p.map(|p| [p, p])
}

/// A convolution's (before, after) padding per axis: explicit, or `padding="same"`: a total of
/// `dilation*(k-1)`, the odd one out at the end, exactly as PyTorch pads it.
fn conv_pads<const N: usize>(padding: &ConvPadding<[u64; N]>, kernel: [u64; N], dilation: [u64; N]) -> [[u64; 2]; N] {
    match padding {
        ConvPadding::Explicit(p) => symmetric(*p),
        ConvPadding::Same => std::array::from_fn(|a| {
            let total = dilation[a].saturating_mul(kernel[a] - 1);
            [total / 2, total - total / 2]
        }),
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

/// The name of axis `a` of a layer's `N` sliding axes.
fn axis_name(n: usize, a: usize) -> &'static str {
    if n == 3 {
        ["depth", "height", "width"][a]
    } else {
        ["height", "width"][a]
    }
}

#[allow(clippy::too_many_arguments)]
/// An adaptive pool's output sizes (`None` keeps the input's), and its windows when every output
/// size divides its input size: those of a plain average pool, kernel and stride the quotient
/// (the analyses and the probe sum them; unequal windows have none).
fn adaptive<const N: usize>(input: [u64; N], output: [Option<u64>; N], pointer: &str) -> SpecResult<([u64; N], Option<[Window; N]>)> {
    let out: [u64; N] = std::array::from_fn(|a| output[a].unwrap_or(input[a]));
    if (0..N).any(|a| input[a] % out[a] != 0) {
        return Ok((out, None));
    }
    let k = std::array::from_fn(|a| input[a] / out[a]);
    Ok((out, Some(windows(input, k, k, [1; N], [[0, 0]; N], false, pointer)?)))
}

fn windows<const N: usize>(
    input: [u64; N],
    k: [u64; N],
    s: [u64; N],
    d: [u64; N],
    pad: [[u64; 2]; N],
    ceil: bool,
    pointer: &str,
) -> SpecResult<[Window; N]> {
    let axis = |a: usize| -> SpecResult<Window> {
        let out = window_output(input[a], k[a], s[a], d[a], pad[a][0], pad[a][1], ceil).ok_or_else(|| {
            SpecError::invalid(
                child(pointer, "kernel_size"),
                format!(
                    "the {} window spans {} positions (kernel {}, dilation {}) but the padded input has only {} ({} + padding {} + {})",
                    axis_name(N, a),
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
            fill: Fill::Zeros,
        })
    };
    let mut out = Vec::with_capacity(N);
    for a in 0..N {
        out.push(axis(a)?);
    }
    Ok(out.try_into().expect("N windows"))
}

/// Windows whose padding holds `fill`; PyTorch refuses reflection as wide as the input, and
/// circular padding that would wrap around more than once.
fn filled<const N: usize>(mut ws: [Window; N], fill: Fill, pointer: &str) -> SpecResult<[Window; N]> {
    for (a, w) in ws.iter_mut().enumerate() {
        w.fill = fill;
        let (widest, axis) = (w.pad_lo.max(w.pad_hi), axis_name(N, a));
        let refused = match fill {
            Fill::Reflect if widest >= w.input => Some(format!(
                "reflect padding of {widest} must be smaller than the input's {axis} ({})",
                w.input
            )),
            Fill::Circular if widest > w.input => Some(format!(
                "circular padding of {widest} wraps around the input's {axis} ({}) more than once",
                w.input
            )),
            _ => None,
        };
        if let Some(why) = refused {
            return Err(SpecError::invalid(child(pointer, "padding"), why));
        }
    }
    Ok(ws)
}

/// The output shape and windows of a layer that reads one tensor; a 1-D layer's are its 2-D
/// form's on `[C, 1, L]`, the height dropped from the output.
fn infer_layer(layer: &Layer, input: &[u64], pointer: &str) -> SpecResult<(Vec<u64>, Option<[Window; 2]>)> {
    if !layer.one_d_on(input.len()) {
        return infer_2d(layer, input, pointer);
    }
    let [c, l] = match input {
        [c, l] => [*c, *l],
        _ => {
            return Err(SpecError::invalid(
                pointer,
                format!(
                    "{} needs a signal input [C, L] (channels, length), but its input has shape {input:?}",
                    layer.type_name()
                ),
            ))
        }
    };
    // an upsampling whose factor the input's axes decide (an int, "nearest"): by 1 along the
    // height of the 2-D form; "bilinear" is for images
    let height_one;
    let layer = match &layer.kind {
        LayerKind::Upsample { bilinear: true, .. } if !layer.one_d => {
            return Err(SpecError::invalid(
                child(pointer, "mode"),
                "modes \"bilinear\" and \"trilinear\" need an image [C, H, W] or a volume [C, D, H, W]; a 1-D signal [C, L] takes mode \"linear\"",
            ))
        }
        LayerKind::Upsample {
            scale,
            scale_each,
            size,
            bilinear,
            trilinear,
            align_corners,
        } => {
            // the length's number, after a height of one
            fn length<T: Copy>(v: &Option<Vec<T>>, one: T, key: &str, pointer: &str) -> SpecResult<Option<Vec<T>>> {
                v.as_ref().map(|v| Ok(vec![one, per_axis(v, 1, key, pointer)?[0]])).transpose()
            }
            height_one = Layer {
                kind: LayerKind::Upsample {
                    scale: length(scale, 1.0, "scale_factor", pointer)?,
                    scale_each: *scale_each,
                    size: length(size, 1, "size", pointer)?,
                    bilinear: *bilinear,
                    trilinear: *trilinear,
                    align_corners: *align_corners,
                },
                ..layer.clone()
            };
            &height_one
        }
        _ => layer,
    };
    let (out, win) = infer_2d(layer, &[c, 1, l], pointer).map_err(|mut e| {
        e.message = e.message.replace("width", "length").replace("[C, H, W]", "[C, L]");
        e
    })?;
    Ok((vec![out[0], out[2]], win))
}

/// An upsampling's `scale_factor` or `size` (`key`) for an input with `axes` spatial axes: one
/// number (every axis), or one per axis.
fn per_axis<T: Copy>(v: &[T], axes: usize, key: &str, pointer: &str) -> SpecResult<Vec<T>> {
    match v.len() {
        1 => Ok(vec![v[0]; axes]),
        n if n == axes => Ok(v.to_vec()),
        n => Err(SpecError::invalid(
            child(pointer, key),
            format!(
                "{n} numbers for an input with {axes} spatial axes: give an int or {}",
                ["[l] (a signal)", "[h, w] (an image)", "[d, h, w] (a volume)"][axes - 1]
            ),
        )),
    }
}

/// An upsampling's axes over an input's spatial sizes `input` and its output's `output`.
pub fn upsample_axes(layer: &Layer, input: &[u64], output: &[u64]) -> Vec<Interp> {
    let LayerKind::Upsample {
        scale,
        bilinear,
        align_corners,
        ..
    } = &layer.kind
    else {
        unreachable!("an upsampling")
    };
    (0..input.len())
        .map(|a| Interp {
            input: input[a],
            output: output[a],
            // one number for every axis (a signal's one: its height of 1 is copied), or one per axis
            scale: scale.as_ref().map(|s| if s.len() == 1 { s[0] } else { s[a] }),
            linear: *bilinear,
            align_corners: *align_corners,
        })
        .collect()
}

/// An upsampling's output size per spatial axis of `input` (its spatial sizes): `floor(input *
/// scale_factor)`, or the `size`. A linear mode whose rows PyTorch's float arithmetic decides
/// differently in float32 and float64 (or fused and not) is refused, naming the row.
fn upsample_sizes(layer: &Layer, input: &[u64], pointer: &str) -> SpecResult<Vec<u64>> {
    let LayerKind::Upsample { scale, size, bilinear, .. } = &layer.kind else {
        unreachable!("an upsampling")
    };
    let key = if scale.is_some() { "scale_factor" } else { "size" };
    let out: Vec<u64> = match (scale, size) {
        (Some(s), _) => {
            let s = per_axis(s, input.len(), key, pointer)?;
            let mut out = Vec::with_capacity(input.len());
            for (a, &n) in input.iter().enumerate() {
                let o = interp::scaled_size(n, s[a]);
                if o == 0 {
                    return Err(SpecError::invalid(
                        child(pointer, key),
                        format!(
                            "scales {n} positions to floor({n} * {}) = 0 (PyTorch refuses an empty output)",
                            s[a]
                        ),
                    ));
                }
                out.push(o);
            }
            out
        }
        (None, Some(size)) => per_axis(size, input.len(), key, pointer)?,
        (None, None) => unreachable!("the parser requires one"),
    };
    if out.iter().any(|&o| o > 1 << 40) {
        return Err(SpecError::invalid(pointer, "the output size overflows"));
    }
    if *bilinear {
        // (a signal's errors come back through infer_layer, which calls its width the length)
        let names: &[&str] = match input.len() {
            3 => &["depth", "height", "width"],
            _ => &["height", "width"],
        };
        for (a, ax) in upsample_axes(layer, input, &out).iter().enumerate() {
            match ax.ambiguity() {
                Ok(None) => {}
                Ok(Some(amb)) => {
                    let rows = |(a, b): (u64, u64)| if a == b { format!("row {a}") } else { format!("rows {a} and {b}") };
                    return Err(SpecError::invalid(
                        child(pointer, key),
                        format!(
                            "linear upsampling from {} to {} positions along the {}: with PyTorch's float arithmetic output position {} reads input {} in float32 and {} in {} (a weight of about 1e-7 or none), so the positions a unit reads would depend on the dtype and the device; upsamplings whose source positions never fall on an input position (even factors, 2 to 3 positions) or fall on them exactly (powers of two, align_corners from n+1 to 2n+1 or 4n+1 positions) are answered exactly",
                            ax.input,
                            ax.output,
                            names[a],
                            amb.row,
                            rows(amb.float32),
                            rows((amb.other.1, amb.other.2)),
                            match amb.other.0 {
                                interp::Arith::Float32 => "float32",
                                interp::Arith::Float32Fused => "float32 with a fused multiply-add",
                                interp::Arith::Float64 => "float64",
                                interp::Arith::Float64Fused => "float64 with a fused multiply-add",
                            },
                        ),
                    ));
                }
                Err(limit) => {
                    return Err(SpecError::invalid(
                        child(pointer, key),
                        format!(
                            "linear upsampling to {} positions along the {}: the service checks PyTorch's float positions on up to {limit} output positions an axis (past 2^23 float32 no longer holds them exactly)",
                            ax.output, names[a]
                        ),
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// A transposed convolution's output size along one axis from `n` inputs and its kernel, stride,
/// padding, output_padding and dilation there, as PyTorch computes it:
/// `(n - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1`.
fn transposed_size(n: u64, [k, s, p, op, d]: [u64; 5], axis: &str, pointer: &str) -> SpecResult<u64> {
    let out = (n as i128 - 1) * s as i128 - 2 * p as i128 + d as i128 * (k as i128 - 1) + op as i128 + 1;
    if out < 1 {
        return Err(SpecError::invalid(
            child(pointer, "padding"),
            format!("the {axis} output would have {out} positions: padding {p} crops more than the transposed convolution produces"),
        ));
    }
    u64::try_from(out)
        .ok()
        .filter(|&o| o <= 1 << 40)
        .ok_or_else(|| SpecError::invalid(pointer, "the output size overflows"))
}

/// A volume `[C, D, H, W]`, as conv3d and the 3-D pools read it.
fn volume(shape: &[u64], what: &str, pointer: &str) -> SpecResult<[u64; 4]> {
    match shape {
        [c, d, h, w] => Ok([*c, *d, *h, *w]),
        _ => Err(SpecError::invalid(
            pointer,
            format!("{what} needs a volume input [C, D, H, W], but its input has shape {shape:?}"),
        )),
    }
}

/// The output shape and windows of a volume layer (conv3d, the 3-D pools): the 2-D rules on
/// three axes, depth first.
fn infer_3d(layer: &Layer, input: &[u64], pointer: &str) -> SpecResult<(Vec<u64>, Option<[Window; 3]>)> {
    let ws = match &layer.kind {
        LayerKind::Conv3d {
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            ..
        } => {
            let [c, d, h, w] = volume(input, "conv3d", pointer)?;
            check_groups(layer, c, *groups, pointer)?;
            let pad = conv_pads(padding, *kernel, *dilation);
            let ws = filled(
                windows([d, h, w], *kernel, *stride, *dilation, pad, false, pointer)?,
                *padding_mode,
                pointer,
            )?;
            return Ok((vec![*out_channels, ws[0].output, ws[1].output, ws[2].output], Some(ws)));
        }
        LayerKind::MaxPool3d {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        } => {
            let [_, d, h, w] = volume(input, "maxpool3d", pointer)?;
            windows([d, h, w], *kernel, *stride, *dilation, symmetric(*padding), *ceil_mode, pointer)?
        }
        LayerKind::AvgPool3d {
            kernel,
            stride,
            padding,
            ceil_mode,
            ..
        } => {
            let [_, d, h, w] = volume(input, "avgpool3d", pointer)?;
            windows([d, h, w], *kernel, *stride, [1; 3], symmetric(*padding), *ceil_mode, pointer)?
        }
        // no windows: output slice k copies (nearest) or interpolates (trilinear) its sources
        LayerKind::Upsample { bilinear, trilinear, .. } => {
            let [c, d, h, w] = volume(input, "upsample", pointer)?;
            if *bilinear && !*trilinear {
                return Err(SpecError::invalid(
                    child(pointer, "mode"),
                    "mode \"bilinear\" needs an image [C, H, W]; a volume [C, D, H, W] takes \"trilinear\"",
                ));
            }
            let mut out = vec![c];
            out.extend(upsample_sizes(layer, &[d, h, w], pointer)?);
            return Ok((out, None));
        }
        // no windows: an input position adds its kernel into several outputs
        LayerKind::ConvTranspose3d {
            out_channels,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            groups,
            ..
        } => {
            let [c, d, h, w] = volume(input, "conv_transpose3d", pointer)?;
            check_groups(layer, c, *groups, pointer)?;
            let mut out = vec![*out_channels];
            for (a, n) in [d, h, w].into_iter().enumerate() {
                let (k, s, p, op, dl) = (kernel[a], stride[a], padding[a], output_padding[a], dilation[a]);
                out.push(transposed_size(n, [k, s, p, op, dl], ["depth", "height", "width"][a], pointer)?);
            }
            return Ok((out, None));
        }
        // a window of one with the padding, as the 2-D pads
        LayerKind::Pad3d { pad, fill } => {
            let [_, d, h, w] = volume(input, layer.type_name(), pointer)?;
            filled(
                windows(
                    [d, h, w],
                    [1; 3],
                    [1; 3],
                    [1; 3],
                    [[pad[4], pad[5]], [pad[2], pad[3]], [pad[0], pad[1]]],
                    false,
                    pointer,
                )?,
                *fill,
                pointer,
            )?
        }
        LayerKind::AdaptiveAvgPool3d { output } | LayerKind::AdaptiveMaxPool3d { output } => {
            let [c, d, h, w] = volume(input, layer.type_name(), pointer)?;
            let (out, ws) = adaptive([d, h, w], *output, pointer)?;
            return Ok((vec![c, out[0], out[1], out[2]], ws));
        }
        _ => unreachable!("only volume layers"),
    };
    Ok((vec![input[0], ws[0].output, ws[1].output, ws[2].output], Some(ws)))
}

fn infer_2d(layer: &Layer, input: &[u64], pointer: &str) -> SpecResult<(Vec<u64>, Option<[Window; 2]>)> {
    let mut win = None;
    let output: Vec<u64> = match &layer.kind {
        LayerKind::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups: g,
            padding_mode,
            ..
        } => {
            let [_, h, w] = grouped_image(layer, input, *g, pointer)?;
            let pad = conv_pads(padding, *kernel, *dilation);
            let ws = filled(
                windows([h, w], *kernel, *stride, *dilation, pad, false, pointer)?,
                *padding_mode,
                pointer,
            )?;
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
            let [c, h, w] = image(input, "maxpool2d", pointer)?;
            let pad = symmetric(*padding);
            let ws = windows([h, w], *kernel, *stride, *dilation, pad, *ceil_mode, pointer)?;
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
            let [c, h, w] = image(input, "avgpool2d", pointer)?;
            let pad = symmetric(*padding);
            let ws = windows([h, w], *kernel, *stride, [1, 1], pad, *ceil_mode, pointer)?;
            win = Some(ws);
            vec![c, ws[0].output, ws[1].output]
        }
        LayerKind::AdaptiveAvgPool2d { output } | LayerKind::AdaptiveMaxPool2d { output } => {
            let [c, h, w] = image(input, layer.type_name(), pointer)?;
            let ([oh, ow], ws) = adaptive([h, w], *output, pointer)?;
            win = ws;
            vec![c, oh, ow]
        }
        LayerKind::ConvTranspose2d {
            out_channels,
            kernel,
            stride,
            padding,
            output_padding,
            dilation,
            groups: g,
            ..
        } => {
            let [_, h, w] = grouped_image(layer, input, *g, pointer)?;
            let axis = |a: usize, n: u64| {
                let (k, s, p, op, d) = (kernel[a], stride[a], padding[a], output_padding[a], dilation[a]);
                transposed_size(n, [k, s, p, op, d], ["height", "width"][a], pointer)
            };
            vec![*out_channels, axis(0, h)?, axis(1, w)?]
        }
        LayerKind::Upsample { trilinear: true, .. } => {
            return Err(SpecError::invalid(
                child(pointer, "mode"),
                format!("mode \"trilinear\" needs a volume [C, D, H, W], but the input has shape {input:?}; an image takes \"bilinear\""),
            ))
        }
        LayerKind::Upsample { .. } => {
            let [c, h, w] = image(input, "upsample", pointer)?;
            let [oh, ow] = upsample_sizes(layer, &[h, w], pointer)?[..] else {
                unreachable!("two axes")
            };
            vec![c, oh, ow]
        }
        LayerKind::Linear { out_features, .. } => match input {
            [f] => {
                check_declared(layer, *f, "in_features", pointer)?;
                vec![*out_features]
            }
            // a sequence: applied to each token's features (PyTorch's last axis)
            [l, f] => {
                check_declared(layer, *f, "in_features", pointer)?;
                vec![*l, *out_features]
            }
            _ => {
                return Err(SpecError::invalid(
                    pointer,
                    format!("linear needs a feature vector [F] or a sequence [L, D], but its input has shape {input:?}; add a flatten layer before it"),
                ))
            }
        },
        LayerKind::Reshape(to) => reshape(input, to, pointer)?,
        LayerKind::FlattenSpatial => {
            let [c, h, w] = image(input, "flatten(start_dim=2)", pointer)?;
            vec![c, h * w]
        }
        LayerKind::Transpose(axes) => {
            if input.len() < 2 {
                return Err(SpecError::invalid(
                    pointer,
                    format!("{} reorders sample axes, but its input {input:?} has one", layer.type_name()),
                ));
            }
            let perm = axes.sample_perm(input.len()).map_err(|(key, why)| SpecError::invalid(child(pointer, key), why))?;
            perm.iter().map(|&a| input[a]).collect()
        }
        // the scores' last two axes [n, m]: -inf above the diagonal
        LayerKind::CausalMask => {
            if input.len() < 2 {
                return Err(SpecError::invalid(
                    pointer,
                    format!("causal_mask masks the last two axes [n, m] (attention scores), but its input has shape {input:?}"),
                ));
            }
            input.to_vec()
        }
        LayerKind::Narrow { dim, start, length } => {
            let axis = sample_axis(*dim, input.len(), &child(pointer, "dim"))?;
            if start.checked_add(*length).is_none_or(|end| end > input[axis]) {
                return Err(SpecError::invalid(
                    child(pointer, "length"),
                    format!(
                        "positions {start}..{} of dim {dim} are outside the input's {} (shape {input:?})",
                        start.saturating_add(*length),
                        input[axis]
                    ),
                ));
            }
            let mut out = input.to_vec();
            out[axis] = *length;
            out
        }
        LayerKind::ChannelShuffle { groups } => {
            if input.len() < 3 || input[0] % groups != 0 {
                return Err(SpecError::invalid(
                    child(pointer, "groups"),
                    format!("channel_shuffle of {groups} groups needs an image or a volume whose channels it divides; its input has shape {input:?}"),
                ));
            }
            input.to_vec()
        }
        LayerKind::SelectToken { index } => {
            let [l, d] = sequence(input, "select(1, index)", pointer)?;
            if *index >= l {
                return Err(SpecError::invalid(
                    child(pointer, "index"),
                    format!("token {index} is outside the sequence of {l} tokens"),
                ));
            }
            vec![d]
        }
        LayerKind::Parameter { .. } => unreachable!("parameters are shaped by the builder"),
        LayerKind::Conv3d { .. }
        | LayerKind::ConvTranspose3d { .. }
        | LayerKind::MaxPool3d { .. }
        | LayerKind::AvgPool3d { .. }
        | LayerKind::Pad3d { .. }
        | LayerKind::AdaptiveAvgPool3d { .. }
        | LayerKind::AdaptiveMaxPool3d { .. } => {
            unreachable!("volume layers are shaped by infer_3d")
        }
        LayerKind::Embedding { dim, .. } => match input {
            [l] => vec![*l, *dim],
            _ => {
                return Err(SpecError::invalid(
                    pointer,
                    format!("embedding reads token ids [L], but its input has shape {input:?}"),
                ))
            }
        },
        LayerKind::MultiheadAttention { heads, .. } => {
            let [_, e] = sequence(input, "multihead_attention", pointer)?;
            check_declared(layer, e, "embed_dim", pointer)?;
            if !e.is_multiple_of(*heads) {
                return Err(SpecError::invalid(
                    child(pointer, "num_heads"),
                    format!("embed_dim ({e}) must be divisible by num_heads ({heads})"),
                ));
            }
            input.to_vec()
        }
        LayerKind::Recurrent(r) => {
            let [l, i] = sequence(input, layer.type_name(), pointer)?;
            check_declared(layer, i, "input_size", pointer)?;
            vec![l, r.width()]
        }
        LayerKind::BatchNorm { .. } => {
            check_declared(layer, input[0], "num_features", pointer)?;
            input.to_vec()
        }
        LayerKind::GroupNorm { groups, .. } => {
            if input.len() == 2 {
                return Err(SpecError::invalid(
                    pointer,
                    format!("groupnorm on a sequence {input:?} is not supported: use layernorm over the features"),
                ));
            }
            check_declared(layer, input[0], "num_channels", pointer)?;
            if !input[0].is_multiple_of(*groups) {
                return Err(SpecError::invalid(
                    child(pointer, "num_groups"),
                    format!("the input's {} channels are not divisible into {groups} groups", input[0]),
                ));
            }
            input.to_vec()
        }
        LayerKind::InstanceNorm { volume: true, .. } => {
            volume(input, "instancenorm3d", pointer)?;
            check_declared(layer, input[0], "num_features", pointer)?;
            input.to_vec()
        }
        LayerKind::InstanceNorm { .. } => {
            image(input, "instancenorm2d", pointer)?;
            check_declared(layer, input[0], "num_features", pointer)?;
            input.to_vec()
        }
        LayerKind::LayerNorm { channels: true, .. } => {
            image(input, "layernorm2d", pointer)?;
            check_declared(layer, input[0], "normalized_shape", pointer)?;
            input.to_vec()
        }
        LayerKind::LayerNorm { shape, .. } => {
            if shape.len() > input.len() || input[input.len() - shape.len()..] != shape[..] {
                return Err(SpecError::invalid(
                    child(pointer, "normalized_shape"),
                    format!("{shape:?} must be the trailing axes of the input, which has shape {input:?}"),
                ));
            }
            input.to_vec()
        }
        LayerKind::Softmax { dim } => {
            sample_axis(*dim, input.len(), &child(pointer, "dim"))?;
            input.to_vec()
        }
        // a window of one with the padding: output row i is input row i - top (in the padding
        // when outside), which every analysis already reads through windows
        LayerKind::Pad { pad, fill } => {
            let [_, h, w] = image(input, layer.type_name(), pointer)?;
            let ws = filled(
                windows([h, w], [1, 1], [1, 1], [1, 1], [[pad[2], pad[3]], [pad[0], pad[1]]], false, pointer)?,
                *fill,
                pointer,
            )?;
            win = Some(ws);
            vec![input[0], ws[0].output, ws[1].output]
        }
        LayerKind::Mean { dims, keepdim } => {
            let axes = mean_axes(dims, input.len(), &child(pointer, "dim"))?;
            if input.len() == 2 {
                // a sequence: over the tokens (dim 1), [D] or [1, D] with keepdim
                return match axes.as_slice() {
                    [0] => Ok((if *keepdim { vec![1, input[1]] } else { vec![input[1]] }, None)),
                    _ => Err(SpecError::invalid(
                        child(pointer, "dim"),
                        format!("mean over {dims:?} of a sequence {input:?} is not supported yet: average the tokens (dim 1)"),
                    )),
                };
            }
            let spatial = input.len() == 3 && !axes.contains(&0);
            match (spatial, *keepdim, axes.as_slice()) {
                // over positions: a window as wide as each averaged axis
                (true, _, _) => {
                    let k = [if axes.contains(&1) { input[1] } else { 1 }, if axes.contains(&2) { input[2] } else { 1 }];
                    let ws = windows([input[1], input[2]], k, k, [1, 1], [[0, 0], [0, 0]], false, pointer)?;
                    win = Some(ws);
                    match keepdim {
                        true => vec![input[0], ws[0].output, ws[1].output],
                        false if axes == [1, 2] => vec![input[0]],
                        false => {
                            return Err(SpecError::invalid(
                                child(pointer, "keepdim"),
                                "averaging one spatial axis without keepdim leaves a [C, L] tensor, which is not supported yet",
                            ))
                        }
                    }
                }
                (false, true, [0]) => {
                    let mut out = input.to_vec();
                    out[0] = 1;
                    out
                }
                _ => {
                    return Err(SpecError::invalid(
                        child(pointer, "dim"),
                        format!("mean over {dims:?} of a {input:?} tensor is not supported yet: average the spatial axes ([2, 3], [2] or [3] with keepdim) or the channels (dim 1 with keepdim)"),
                    ))
                }
            }
        }
        // nn.PReLU(num_parameters): one slope, or one per channel (PyTorch's dim 1)
        LayerKind::Activation { parameters, .. } if *parameters > 1 && input.first() != Some(parameters) => {
            return Err(SpecError::invalid(
                child(pointer, "num_parameters"),
                format!(
                    "prelu has {parameters} slopes, but its input {input:?} has {} channels (axis 0): use 1 or {}",
                    input.first().copied().unwrap_or(0),
                    input.first().copied().unwrap_or(0)
                ),
            ))
        }
        LayerKind::Activation { .. } | LayerKind::Dropout { .. } | LayerKind::Scale { .. } => input.to_vec(),
        LayerKind::Flatten => vec![input
            .iter()
            .try_fold(1u64, |a, b| a.checked_mul(*b))
            .ok_or_else(|| SpecError::invalid(pointer, "the flattened size overflows"))?],
        crate::spec::merges!() => {
            unreachable!("composites and merges are shaped by the builder")
        }
    };
    Ok((output, win))
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
    /// conv_transpose2d: the weight is [in, out/groups, kh, kw] and `in_per_group` is the
    /// number of output channels per group (what each input position's kernel covers).
    pub transposed: Option<u64>,
    /// A 1-D conv: PyTorch's weight has no height axis (`[out, in/groups, k]`).
    pub one_d: bool,
    /// A 3-D conv's kernel depth: PyTorch's weight is `[out, in/groups, kd, kh, kw]`.
    pub depth: Option<u64>,
}

impl DenseWeight {
    /// PyTorch's fan_in (`weight.size(1)` times the kernel): the products per output of a
    /// conv; for a transposed conv, output channels per group times the kernel.
    pub fn fan_in(&self) -> u64 {
        self.in_per_group * self.kernel[0] * self.kernel[1] * self.depth.unwrap_or(1)
    }
    pub fn fan_out(&self) -> u64 {
        self.out * self.kernel[0] * self.kernel[1] * self.depth.unwrap_or(1)
    }
    pub fn numel(&self) -> u64 {
        self.out * self.fan_in()
    }
    /// Elements of the bias (output channels or features), when there is one.
    pub fn bias_len(&self) -> u64 {
        self.transposed.unwrap_or(self.out)
    }
    /// PyTorch's shape of the weight.
    pub fn shape(&self) -> Vec<i64> {
        let mut s = self.shape_2d();
        if self.one_d {
            s.remove(2);
        }
        if let Some(d) = self.depth {
            s.insert(2, d as i64);
        }
        s
    }

    fn shape_2d(&self) -> Vec<i64> {
        if self.transposed.is_some() {
            // [in, out/groups, kh, kw]: `out` holds in_channels here
            return vec![
                self.out as i64,
                self.in_per_group as i64,
                self.kernel[0] as i64,
                self.kernel[1] as i64,
            ];
        }
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

/// One parameter tensor of a module with several (embedding, attention, recurrent layers):
/// PyTorch's name within the module, its shape, and the fan-in of its init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedParam {
    pub name: String,
    pub shape: Vec<u64>,
    /// A bias (drawn after its weight; zero under the inits other than PyTorch's default).
    pub bias: bool,
}

impl NamedParam {
    pub fn numel(&self) -> u64 {
        numel(&self.shape)
    }
}

impl<'a> Node<'a> {
    /// A 1-D layer as its 2-D form: the same node on `[C, 1, L]` (every analysis's 2-D rule
    /// then answers for it); None for other layers.
    pub fn lifted(&self) -> Option<Node<'a>> {
        let lift = |s: &[u64]| match s {
            [c, l] => vec![*c, 1, *l],
            other => other.to_vec(),
        };
        (self.input.len() == 2 && self.layer.one_d_on(2)).then(|| Node {
            path: self.path.clone(),
            pointer: self.pointer.clone(),
            layer: self.layer,
            input: lift(&self.input),
            inputs: self
                .inputs
                .iter()
                .map(|e| Edge {
                    shape: lift(&e.shape),
                    ..e.clone()
                })
                .collect(),
            output: lift(&self.output),
            windows: self.windows,
            volume: None,
            merge: None,
            groups: Vec::new(),
            signal: false,
            above: Above::Computed,
            tie: self.tie.clone(),
        })
    }

    /// The key and value tokens of an attention layer: its second input's (cross-attention),
    /// else its own.
    pub fn key_tokens(&self) -> u64 {
        self.inputs.get(1).map_or(self.input[0], |e| e.shape[0])
    }

    /// The parameters of an embedding, attention or recurrent layer, in the order and with the
    /// names of PyTorch's `named_parameters()`; None for other layers.
    pub fn named_params(&self) -> Option<Vec<NamedParam>> {
        let p = |name: String, shape: Vec<u64>, bias: bool| NamedParam { name, shape, bias };
        Some(match &self.layer.kind {
            LayerKind::Parameter { shape, table } => {
                let rows = table.unwrap_or(shape[0]);
                vec![p("weight".into(), [&[rows], &shape[1..]].concat(), false)]
            }
            LayerKind::Embedding { num_embeddings, dim, .. } => vec![p("weight".into(), vec![*num_embeddings, *dim], false)],
            LayerKind::MultiheadAttention { bias, .. } => {
                let e = self.input[1];
                let mut v = vec![p("in_proj_weight".into(), vec![3 * e, e], false)];
                if *bias {
                    v.push(p("in_proj_bias".into(), vec![3 * e], true));
                }
                v.push(p("out_proj.weight".into(), vec![e, e], false));
                if *bias {
                    v.push(p("out_proj.bias".into(), vec![e], true));
                }
                v
            }
            LayerKind::Recurrent(r) => {
                let rows = r.rows();
                let mut v = Vec::new();
                for l in 0..r.layers {
                    let input = r.layer_input(l, self.input[1]);
                    for suffix in ["", "_reverse"].iter().take(r.directions() as usize) {
                        v.push(p(format!("weight_ih_l{l}{suffix}"), vec![rows, input], false));
                        v.push(p(format!("weight_hh_l{l}{suffix}"), vec![rows, r.hidden], false));
                        if r.bias {
                            v.push(p(format!("bias_ih_l{l}{suffix}"), vec![rows], true));
                            v.push(p(format!("bias_hh_l{l}{suffix}"), vec![rows], true));
                        }
                    }
                }
                v
            }
            _ => return None,
        })
    }

    /// A transpose's or permute's order of the sample axes: output axis `a` is input axis
    /// `perm[a]` (the identity for any other layer).
    pub fn perm(&self) -> Vec<usize> {
        match &self.layer.kind {
            LayerKind::Transpose(axes) => axes.sample_perm(self.input.len()).expect("checked by shape inference"),
            _ => (0..self.input.len()).collect(),
        }
    }

    /// What one output element of a normalization or softmax reads (see [`Coupling`]).
    pub fn coupling(&self) -> Option<Coupling> {
        let c = self.input[0];
        let rank = self.input.len();
        let spatial = |h: bool, w: bool| [h && rank == 3, w && rank == 3, false];
        // every position of an image or a volume
        let everywhere = [rank >= 3, rank >= 3, rank == 4];
        Some(match &self.layer.kind {
            LayerKind::GroupNorm { groups, .. } => Coupling {
                groups: *groups,
                spatial: everywhere,
            },
            LayerKind::InstanceNorm { .. } => Coupling {
                groups: c,
                spatial: everywhere,
            },
            // the channels at each position
            LayerKind::LayerNorm { channels: true, .. } => Coupling {
                groups: 1,
                spatial: [false; 3],
            },
            LayerKind::LayerNorm { shape, .. } => {
                let first = rank - shape.len(); // the first normalized axis
                                                // (sample axis a + 1 is coupled from the first normalized one on; a sequence's
                                                // tokens and features are no spatial axes)
                let from = |a: usize| rank >= 3 && a + 1 < rank && a + 1 >= first;
                Coupling {
                    groups: if first == 0 { 1 } else { c },
                    spatial: [from(0), from(1), from(2)],
                }
            }
            LayerKind::Softmax { dim } => {
                let axis = sample_axis(*dim, rank, "").expect("checked by shape inference");
                Coupling {
                    groups: if axis == 0 { 1 } else { c },
                    spatial: spatial(axis == 1, axis == 2),
                }
            }
            _ => return None,
        })
    }

    /// The weight of a conv2d or linear layer; None for layers without one.
    pub fn dense_weight(&self) -> Option<DenseWeight> {
        match &self.layer.kind {
            // a conv3d's kernel depth rides beside the [kh, kw] of the 2-D form
            LayerKind::Conv2d {
                out_channels,
                kernel: [kh, kw],
                groups,
                bias,
                ..
            }
            | LayerKind::Conv3d {
                out_channels,
                kernel: [_, kh, kw],
                groups,
                bias,
                ..
            } => Some(DenseWeight {
                out: *out_channels,
                in_per_group: self.input[0] / groups,
                kernel: [*kh, *kw],
                bias: *bias,
                is_conv: true,
                transposed: None,
                one_d: self.layer.one_d,
                depth: match &self.layer.kind {
                    LayerKind::Conv3d { kernel, .. } => Some(kernel[0]),
                    _ => None,
                },
            }),
            // PyTorch's weight is [in, out/groups, kh, kw]: the first axis is the input's
            LayerKind::ConvTranspose2d {
                out_channels,
                kernel,
                groups,
                bias,
                ..
            } => Some(DenseWeight {
                out: self.input[0],
                in_per_group: out_channels / groups,
                kernel: *kernel,
                bias: *bias,
                is_conv: true,
                transposed: Some(*out_channels),
                one_d: self.layer.one_d,
                depth: None,
            }),
            LayerKind::ConvTranspose3d {
                out_channels,
                kernel: [kd, kh, kw],
                groups,
                bias,
                ..
            } => Some(DenseWeight {
                out: self.input[0],
                in_per_group: out_channels / groups,
                kernel: [*kh, *kw],
                bias: *bias,
                is_conv: true,
                transposed: Some(*out_channels),
                one_d: false,
                depth: Some(*kd),
            }),
            LayerKind::Linear { out_features, bias } => Some(DenseWeight {
                out: *out_features,
                // the features: the last axis of a sequence [L, D]
                in_per_group: *self.input.last().expect("a linear layer has an input"),
                kernel: [1, 1],
                bias: *bias,
                is_conv: false,
                transposed: None,
                one_d: false,
                depth: None,
            }),
            _ => None,
        }
    }
}

impl Graph<'_> {
    /// Whether the tensor an edge reads is exactly 0 above its diagonal (a causal attention's
    /// weights: see [`Above`]).
    pub fn zero_above(&self, e: &Edge) -> bool {
        e.from.is_some_and(|f| self.nodes[f].above == Above::Zero)
    }

    /// Time steps the recurrent layers take one after the other: tokens x layers x directions.
    pub fn recurrent_steps(&self) -> u128 {
        self.nodes
            .iter()
            .map(|n| match &n.layer.kind {
                LayerKind::Recurrent(r) => r.steps(n.input[0]),
                _ => 0,
            })
            .sum()
    }
}

/// Number of elements of a shape.
pub fn numel(shape: &[u64]) -> u64 {
    shape.iter().product()
}
