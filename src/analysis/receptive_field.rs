//! Receptive fields: the affine input range of every layer, and the exact set of input
//! positions one output unit depends on.
//!
//! Conventions (zero-based internally): output row `i` of a layer depends on network-input rows
//! `jump*i + lo ..= jump*i + hi` (before clipping to the image). One-based answers, as the course
//! writes them, shift both `i` and `m` by one: `lo1 = lo - jump + 1`, `hi1 = hi - jump + 1`.
use super::intervals::IntervalSet;
use crate::spec::{Graph, LayerKind, Node, SpecError, SpecResult, Window};
use serde::Serialize;

/// Zero-based affine map from an output index to the input range it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Affine {
    pub jump: u64,
    pub lo: i64,
    pub hi: i64,
}

impl Affine {
    pub const IDENTITY: Affine = Affine { jump: 1, lo: 0, hi: 0 };

    /// The range seen through one more sliding window; None when the numbers leave 64 bits
    /// (strides of 2^20 stacked a few times), which no image has room for anyway.
    pub fn then(self, w: &Window) -> Option<Affine> {
        let j = i64::try_from(self.jump).ok()?;
        let reach = i64::try_from(w.dilation.checked_mul(w.kernel - 1)?)
            .ok()?
            .checked_sub(w.pad_lo as i64)?;
        Some(Affine {
            jump: self.jump.checked_mul(w.stride)?,
            lo: self.lo.checked_sub(j.checked_mul(w.pad_lo as i64)?)?,
            hi: self.hi.checked_add(j.checked_mul(reach)?)?,
        })
    }

    pub fn size(&self) -> u64 {
        (self.hi as i128 - self.lo as i128 + 1) as u64
    }

    /// Offsets in the requested index base (0 or 1).
    pub fn based(&self, base: u64) -> (i64, i64) {
        let shift = base as i64 * (1 - self.jump as i64);
        (self.lo + shift, self.hi + shift)
    }

    /// Unclipped input range of output index `i` (zero-based), saturating at the i64 range.
    pub fn at(&self, i: u64) -> (i64, i64) {
        let s = self.jump as i128 * i as i128;
        let clamp = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        (clamp(s + self.lo as i128), clamp(s + self.hi as i128))
    }
}

/// What the affine analysis can say about a layer's output.
#[derive(Clone, Debug, PartialEq)]
pub enum Rf {
    /// Height and width maps.
    Spatial([Affine; 2]),
    /// Each feature of a flat input depends on itself only (an MLP before its first linear).
    Features,
    /// Every output depends on the whole input (after a linear layer).
    Global,
    /// No affine form exists; the string says why. Exact per-unit answers still exist.
    NotAffine(String),
}

#[derive(Serialize, Debug, Clone)]
pub struct AxisRange {
    pub size: u64,
    pub jump: u64,
    /// In the requested index base: output index `i` sees `scale*i + lo ..= scale*i + hi`.
    pub scale: u64,
    pub lo: i64,
    pub hi: i64,
    pub text: String,
}

#[derive(Serialize, Debug, Clone)]
pub struct SpatialRf {
    pub height: AxisRange,
    pub width: AxisRange,
}

#[derive(Serialize, Debug, Clone)]
pub struct BranchRf {
    pub label: String,
    pub receptive_field: Option<SpatialRf>,
}

#[derive(Serialize, Debug, Clone)]
pub struct LayerRf {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub layer_type: String,
    pub output_shape: Vec<u64>,
    /// `spatial`, `features`, `global` or `not_affine`.
    pub kind: &'static str,
    pub receptive_field: Option<SpatialRf>,
    /// Composite layers: each branch's own range.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<BranchRf>,
    /// Composite layers: whether all branches share jump and centre (their union is then a
    /// single affine range with no holes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aligned: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `4i-9 <= m <= 4i+6`.
pub fn range_text(scale: u64, lo: i64, hi: i64, index: &str, var: &str) -> String {
    let term = |c: i64| {
        let coef = if scale == 1 { index.to_string() } else { format!("{scale}{index}") };
        match c {
            0 => coef,
            c if c > 0 => format!("{coef}+{c}"),
            c => format!("{coef}{c}"),
        }
    };
    format!("{} <= {var} <= {}", term(lo), term(hi))
}

fn axis_range(a: &Affine, base: u64, index: &str, var: &str) -> AxisRange {
    let (lo, hi) = a.based(base);
    AxisRange {
        size: a.size(),
        jump: a.jump,
        scale: a.jump,
        lo,
        hi,
        text: range_text(a.jump, lo, hi, index, var),
    }
}

fn spatial(rf: &Rf, base: u64) -> Option<SpatialRf> {
    match rf {
        Rf::Spatial([h, w]) => Some(SpatialRf {
            height: axis_range(h, base, "i", "m"),
            width: axis_range(w, base, "j", "n"),
        }),
        _ => None,
    }
}

fn kind_name(rf: &Rf) -> &'static str {
    match rf {
        Rf::Spatial(_) => "spatial",
        Rf::Features => "features",
        Rf::Global => "global",
        Rf::NotAffine(_) => "not_affine",
    }
}

/// The per-layer table, every composite's children included, in depth-first order.
pub fn layer_table(graph: &Graph, base: u64) -> Vec<LayerRf> {
    let start = if graph.input().len() == 3 {
        Rf::Spatial([Affine::IDENTITY; 2])
    } else {
        Rf::Features
    };
    let mut rows = Vec::new();
    walk_list(&graph.nodes, start, base, &mut rows);
    rows
}

fn walk_list(nodes: &[Node], mut rf: Rf, base: u64, rows: &mut Vec<LayerRf>) -> Rf {
    for node in nodes {
        rf = walk_node(node, rf, base, rows);
    }
    rf
}

fn walk_node(node: &Node, rf: Rf, base: u64, rows: &mut Vec<LayerRf>) -> Rf {
    let slot = rows.len();
    rows.push(LayerRf {
        path: node.path.clone(),
        name: node.layer.name.clone(),
        layer_type: node_type(node),
        output_shape: node.output.clone(),
        kind: "",
        receptive_field: None,
        branches: Vec::new(),
        aligned: None,
        note: None,
    });
    let mut note = None;
    let mut aligned = None;
    let mut branches = Vec::new();
    let out = match &node.layer.kind {
        LayerKind::Conv2d { .. }
        | LayerKind::MaxPool2d { .. }
        | LayerKind::AvgPool2d { .. }
        | LayerKind::AdaptiveAvgPool2d { .. }
        | LayerKind::AdaptiveMaxPool2d { .. } => match (rf, node.windows) {
            (Rf::Spatial([h, w]), Some([wh, ww])) => match (h.then(&wh), w.then(&ww)) {
                (Some(h), Some(w)) => Rf::Spatial([h, w]),
                _ => Rf::NotAffine("the effective stride or offsets do not fit in 64 bits".into()),
            },
            (Rf::Spatial(_), None) => Rf::NotAffine(format!(
                "adaptive pooling from {}x{} to {}x{} uses windows of different sizes",
                node.input[1], node.input[2], node.output[1], node.output[2]
            )),
            (other, _) => other,
        },
        LayerKind::Linear { .. } => Rf::Global,
        LayerKind::Flatten => match rf {
            Rf::Spatial(_) | Rf::NotAffine(_) => {
                Rf::NotAffine("flattened: features have no spatial index; each depends on one input position".into())
            }
            other => other,
        },
        LayerKind::BatchNorm { .. } | LayerKind::Activation { .. } | LayerKind::Dropout { .. } => rf,
        LayerKind::Concat { .. } | LayerKind::Residual { .. } => {
            let ends: Vec<(String, Rf)> = node
                .groups
                .iter()
                .map(|g| (g.label.clone(), walk_list(&g.nodes, rf.clone(), base, rows)))
                .collect();
            branches = ends
                .iter()
                .map(|(label, r)| BranchRf {
                    label: label.clone(),
                    receptive_field: spatial(r, base),
                })
                .collect();
            let (merged, is_aligned, why) = merge(&ends.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>());
            aligned = is_aligned;
            note = why;
            merged
        }
    };
    let row = &mut rows[slot];
    row.kind = kind_name(&out);
    row.receptive_field = spatial(&out, base);
    if let Rf::NotAffine(why) = &out {
        note.get_or_insert_with(|| why.clone());
    }
    row.note = note;
    row.aligned = aligned;
    row.branches = branches;
    out
}

/// The union of parallel branches: one affine range when every branch moves with the same jump.
fn merge(ends: &[Rf]) -> (Rf, Option<bool>, Option<String>) {
    if ends.iter().any(|r| *r == Rf::Global) {
        return (Rf::Global, None, None);
    }
    let spatials: Vec<[Affine; 2]> = ends
        .iter()
        .filter_map(|r| if let Rf::Spatial(a) = r { Some(*a) } else { None })
        .collect();
    if spatials.len() != ends.len() {
        return match ends.iter().find(|r| matches!(r, Rf::NotAffine(_))) {
            Some(r) => (r.clone(), None, None),
            None => (Rf::Features, None, None),
        };
    }
    let mut out = spatials[0];
    let mut aligned = true;
    for s in &spatials[1..] {
        for a in 0..2 {
            if s[a].jump != out[a].jump {
                return (
                    Rf::NotAffine(format!(
                        "branches move with different jumps ({} and {}): their union has no single affine form",
                        out[a].jump, s[a].jump
                    )),
                    Some(false),
                    None,
                );
            }
            if s[a].lo + s[a].hi != spatials[0][a].lo + spatials[0][a].hi {
                aligned = false;
            }
            out[a].lo = out[a].lo.min(s[a].lo);
            out[a].hi = out[a].hi.max(s[a].hi);
        }
    }
    let note = (!aligned)
        .then(|| "branches are centred differently: the union is their hull and may have holes (see an exact position)".to_string());
    (Rf::Spatial(out), Some(aligned), note)
}

pub fn node_type(node: &Node) -> String {
    match node.layer.kind {
        LayerKind::BatchNorm { .. } => if node.input.len() == 3 { "batchnorm2d" } else { "batchnorm1d" }.to_string(),
        _ => node.layer.type_name().to_string(),
    }
}

// ----------------------------------------------------------------------------------------------
// Exact dependence of one output unit.

/// A box of input positions: one interval set per axis of the shape (`[C, H, W]` or `[F]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Product(pub Vec<IntervalSet>);

/// The set one unit depends on, as a union of boxes (exact: each layer maps a box to a box, and
/// branches only add boxes).
#[derive(Clone, Debug)]
pub struct DependenceSet {
    pub boxes: Vec<Product>,
    /// Set when the union grew past `MAX_BOXES` and was replaced by its hull.
    pub approximate: bool,
}

const MAX_BOXES: usize = 256;

/// How the target of a position request is reached: the layers run in order to produce it.
pub struct Chain<'g, 'a> {
    pub steps: Vec<&'g Node<'a>>,
    pub target: &'g Node<'a>,
}

/// Resolves `layer` (top-level index, dotted path or name) to the chain of nodes leading to it.
pub fn chain_to<'g, 'a>(graph: &'g Graph<'a>, layer: &serde_json::Value, pointer: &str) -> SpecResult<Chain<'g, 'a>> {
    let path: String = match layer {
        serde_json::Value::Null => graph
            .nodes
            .last()
            .map(|n| n.path.clone())
            .ok_or_else(|| SpecError::invalid(pointer, "the model has no layers"))?,
        serde_json::Value::Number(n) => {
            let i = n.as_u64().filter(|i| (*i as usize) < graph.nodes.len()).ok_or_else(|| {
                SpecError::invalid(
                    pointer,
                    format!(
                        "layer index {n} is out of range: the model has {} top-level layers (0..{})",
                        graph.nodes.len(),
                        graph.nodes.len().saturating_sub(1)
                    ),
                )
            })?;
            i.to_string()
        }
        serde_json::Value::String(s) => {
            let all = graph.walk();
            if all.iter().any(|n| &n.path == s) {
                s.clone()
            } else {
                let named: Vec<_> = all.iter().filter(|n| n.layer.name.as_deref() == Some(s.as_str())).collect();
                match named.len() {
                    1 => named[0].path.clone(),
                    0 => return Err(SpecError::invalid(pointer, format!("no layer has the path or name {s:?}"))),
                    k => {
                        return Err(SpecError::invalid(
                            pointer,
                            format!("{k} layers are named {s:?}; use a path such as {:?}", named[0].path),
                        ))
                    }
                }
            }
        }
        other => {
            return Err(SpecError::invalid(
                pointer,
                format!("expected a layer index, path or name, got {}", crate::spec::json::describe(other)),
            ))
        }
    };
    let mut steps = Vec::new();
    let mut nodes: &'g [Node<'a>] = &graph.nodes;
    let mut rest: &str = &path;
    loop {
        let (head, tail) = match rest.split_once('.') {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        let idx: usize = head
            .parse()
            .map_err(|_| SpecError::invalid(pointer, format!("bad layer path {path:?}")))?;
        let node = nodes
            .get(idx)
            .ok_or_else(|| SpecError::invalid(pointer, format!("bad layer path {path:?}")))?;
        steps.extend(nodes[..idx].iter());
        match tail {
            None => {
                steps.push(node);
                return Ok(Chain { steps, target: node });
            }
            Some(t) => {
                // `branches.B.rest`, `body.rest` or `shortcut.rest`
                let group = node
                    .groups
                    .iter()
                    .find(|g| t.starts_with(&format!("{}.", g.label)))
                    .ok_or_else(|| SpecError::invalid(pointer, format!("bad layer path {path:?}")))?;
                rest = &t[group.label.len() + 1..];
                nodes = &group.nodes;
            }
        }
    }
}

impl DependenceSet {
    fn new(boxes: Vec<Product>) -> Self {
        let mut s = DependenceSet { boxes, approximate: false };
        s.normalize();
        s
    }

    /// Projection on one axis of the input.
    pub fn axis(&self, a: usize) -> IntervalSet {
        self.boxes.iter().fold(IntervalSet::empty(), |acc, b| acc.union(&b.0[a]))
    }

    fn normalize(&mut self) {
        self.boxes.retain(|b| b.0.iter().all(|s| !s.is_empty()));
        loop {
            let mut changed = false;
            'outer: for i in 0..self.boxes.len() {
                for j in 0..self.boxes.len() {
                    if i == j {
                        continue;
                    }
                    let (a, b) = (&self.boxes[i], &self.boxes[j]);
                    if a.0.iter().zip(&b.0).all(|(x, y)| x.is_superset(y)) {
                        self.boxes.remove(j);
                        changed = true;
                        break 'outer;
                    }
                    let differing: Vec<usize> = (0..a.0.len()).filter(|&k| a.0[k] != b.0[k]).collect();
                    if differing.len() == 1 {
                        let k = differing[0];
                        let merged = a.0[k].union(&b.0[k]);
                        self.boxes[i].0[k] = merged;
                        self.boxes.remove(j);
                        changed = true;
                        break 'outer;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        if self.boxes.len() > MAX_BOXES {
            let dims = self.boxes[0].0.len();
            let hull = (0..dims).map(|a| {
                let s = self.axis(a);
                IntervalSet::range(s.min().unwrap_or(0), s.max().unwrap_or(0))
            });
            self.boxes = vec![Product(hull.collect())];
            self.approximate = true;
        }
    }
}

/// Input positions of a sliding window's inputs seen by the output positions in `out`.
fn window_back(w: &Window, out: &IntervalSet) -> IntervalSet {
    let mut ranges = Vec::new();
    let clip = |a: i64, b: i64| -> Option<(u64, u64)> {
        let (a, b) = (a.max(0), b.min(w.input as i64 - 1));
        (a <= b).then_some((a as u64, b as u64))
    };
    for &(a, b) in out.ranges() {
        if w.dilation == 1 && w.stride <= w.kernel {
            // Consecutive windows touch or overlap: one contiguous run.
            ranges.extend(clip(w.start(a), w.start(b) + w.kernel as i64 - 1));
        } else {
            for i in a..=b {
                for t in 0..w.kernel {
                    let p = w.start(i) + (t * w.dilation) as i64;
                    ranges.extend(clip(p, p));
                }
            }
        }
    }
    IntervalSet::from_ranges(ranges)
}

/// Adaptive pooling's window for output `i`: `floor(i*in/out) ..= ceil((i+1)*in/out) - 1`.
fn adaptive_back(input: u64, output: u64, out: &IntervalSet) -> IntervalSet {
    IntervalSet::from_ranges(
        out.ranges()
            .iter()
            .map(|&(a, b)| ((a * input) / output, ((b + 1) * input).div_ceil(output) - 1))
            .collect(),
    )
}

fn back_list(nodes: &[&Node], mut set: Vec<Product>, approx: &mut bool) -> Vec<Product> {
    for node in nodes.iter().rev() {
        let mut s = DependenceSet::new(back_node(node, set, approx));
        *approx |= s.approximate;
        set = std::mem::take(&mut s.boxes);
    }
    set
}

fn back_node(node: &Node, set: Vec<Product>, approx: &mut bool) -> Vec<Product> {
    let full = |shape: &[u64]| Product(shape.iter().map(|&n| IntervalSet::range(0, n - 1)).collect());
    match &node.layer.kind {
        LayerKind::Conv2d { out_channels, groups, .. } => {
            let [wh, ww] = node.windows.expect("conv has windows");
            let (in_per, out_per) = (node.input[0] / groups, out_channels / groups);
            set.into_iter()
                .map(|p| {
                    let ch = IntervalSet::from_ranges(
                        p.0[0]
                            .ranges()
                            .iter()
                            .map(|&(a, b)| ((a / out_per) * in_per, (b / out_per + 1) * in_per - 1))
                            .collect(),
                    );
                    Product(vec![ch, window_back(&wh, &p.0[1]), window_back(&ww, &p.0[2])])
                })
                .collect()
        }
        LayerKind::MaxPool2d { .. }
        | LayerKind::AvgPool2d { .. }
        | LayerKind::AdaptiveAvgPool2d { .. }
        | LayerKind::AdaptiveMaxPool2d { .. } => set
            .into_iter()
            .map(|p| match node.windows {
                Some([wh, ww]) => Product(vec![p.0[0].clone(), window_back(&wh, &p.0[1]), window_back(&ww, &p.0[2])]),
                None => Product(vec![
                    p.0[0].clone(),
                    adaptive_back(node.input[1], node.output[1], &p.0[1]),
                    adaptive_back(node.input[2], node.output[2], &p.0[2]),
                ]),
            })
            .collect(),
        LayerKind::Linear { .. } => {
            if set.is_empty() {
                set
            } else {
                vec![full(&node.input)]
            }
        }
        LayerKind::Flatten => {
            if node.input.len() == 1 {
                return set;
            }
            let (h, w) = (node.input[1], node.input[2]);
            let mut out = Vec::new();
            for p in set {
                for &(a, b) in p.0[0].ranges() {
                    if a == 0 && b == node.output[0] - 1 {
                        out.push(full(&node.input));
                        continue;
                    }
                    // Split the feature run at row boundaries: each piece is (channel, row, cols).
                    let mut f = a;
                    while f <= b {
                        let (c, y, x) = (f / (h * w), (f / w) % h, f % w);
                        let end = b.min(f - x + w - 1);
                        out.push(Product(vec![
                            IntervalSet::range(c, c),
                            IntervalSet::range(y, y),
                            IntervalSet::range(x, end % w),
                        ]));
                        f = end + 1;
                        if out.len() > MAX_BOXES * 4 {
                            *approx = true;
                            return vec![full(&node.input)];
                        }
                    }
                }
            }
            out
        }
        LayerKind::BatchNorm { .. } | LayerKind::Activation { .. } | LayerKind::Dropout { .. } => set,
        LayerKind::Concat { .. } => {
            let mut out = Vec::new();
            let mut offset = 0;
            for g in &node.groups {
                let c = g.output[0];
                let part: Vec<Product> = set
                    .iter()
                    .map(|p| {
                        let mut q = p.clone();
                        q.0[0] = p.0[0].window(offset, c);
                        q
                    })
                    .filter(|q| !q.0[0].is_empty())
                    .collect();
                if !part.is_empty() {
                    out.extend(back_list(&g.nodes.iter().collect::<Vec<_>>(), part, approx));
                }
                offset += c;
            }
            out
        }
        LayerKind::Residual { .. } => {
            let mut out = Vec::new();
            for g in &node.groups {
                out.extend(back_list(&g.nodes.iter().collect::<Vec<_>>(), set.clone(), approx));
            }
            out
        }
    }
}

/// Exact input dependence of the output units `index` (spatial `[i, j]` or feature `[k]`,
/// zero-based) of the chain's target, over output `channel` or all channels.
pub fn dependence(chain: &Chain, index: &[u64], channel: Option<u64>) -> DependenceSet {
    let out = &chain.target.output;
    let unit = if out.len() == 3 {
        let ch = match channel {
            Some(c) => IntervalSet::range(c, c),
            None => IntervalSet::range(0, out[0] - 1),
        };
        Product(vec![
            ch,
            IntervalSet::range(index[0], index[0]),
            IntervalSet::range(index[1], index[1]),
        ])
    } else {
        Product(vec![IntervalSet::range(index[0], index[0])])
    };
    let mut approx = false;
    let boxes = back_list(&chain.steps, vec![unit], &mut approx);
    let mut set = DependenceSet::new(boxes);
    set.approximate |= approx;
    set
}

/// The affine map of the chain's target, if it has one.
pub fn chain_rf(chain: &Chain, input_rank: usize) -> Rf {
    let mut rf = if input_rank == 3 {
        Rf::Spatial([Affine::IDENTITY; 2])
    } else {
        Rf::Features
    };
    let mut scratch = Vec::new();
    for node in &chain.steps {
        rf = walk_node(node, rf, 0, &mut scratch);
    }
    rf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{infer, parse_model, SpecLimits};
    use serde_json::json;

    fn table(spec: serde_json::Value, base: u64) -> Vec<LayerRf> {
        let spec = parse_model(&spec, "", &SpecLimits::default()).unwrap();
        let g = infer(&spec, "").unwrap();
        layer_table(&g, base)
    }

    #[test]
    fn vgg_stem_matches_the_course_in_one_based_terms() {
        let t = table(json!({"preset": "vgg_stem"}), 1);
        let text: Vec<&str> = t.iter().map(|r| r.receptive_field.as_ref().unwrap().height.text.as_str()).collect();
        assert_eq!(text[0], "i-1 <= m <= i+1");
        assert_eq!(text[2], "i-2 <= m <= i+2");
        assert_eq!(text[4], "2i-3 <= m <= 2i+2");
        assert_eq!(text[7], "2i-7 <= m <= 2i+6");
        assert_eq!(text[9], "4i-9 <= m <= 4i+6");
        assert_eq!(t[9].receptive_field.as_ref().unwrap().width.text, "4j-9 <= n <= 4j+6");
        assert_eq!(t[9].receptive_field.as_ref().unwrap().height.size, 16);
    }

    #[test]
    fn zero_based_offsets_by_hand() {
        // conv k3 p1 then pool k2 s2: rows 2i-2 ..= 2i+3 zero-based (one-based 2i-3..2i+2).
        let t = table(
            json!({"input_shape": [1, 8, 8], "layers": [
            {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1},
            {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1},
            {"type": "maxpool2d", "kernel_size": 2}]}),
            0,
        );
        let h = &t[2].receptive_field.as_ref().unwrap().height;
        assert_eq!((h.scale, h.lo, h.hi), (2, -2, 3));
    }

    #[test]
    fn dilated_strided_units_have_holes() {
        let spec = parse_model(
            &json!({"input_shape": [1, 20, 20], "layers": [
            {"type": "conv2d", "out_channels": 1, "kernel_size": 3, "dilation": 2},
            {"type": "conv2d", "out_channels": 1, "kernel_size": 2, "dilation": 3}]}),
            "",
            &SpecLimits::default(),
        )
        .unwrap();
        let g = infer(&spec, "").unwrap();
        let chain = chain_to(&g, &json!(null), "").unwrap();
        let dep = dependence(&chain, &[0, 0], None);
        // second conv: rows 0 and 3; first conv maps r to r, r+2, r+4: {0,2,4} U {3,5,7}
        assert_eq!(dep.axis(1).iter().collect::<Vec<_>>(), vec![0, 2, 3, 4, 5, 7]);
    }

    #[test]
    fn misaligned_branches_are_reported() {
        let t = table(
            json!({"input_shape": [1, 16, 16], "layers": [{"type": "concat", "branches": [
            [{"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1}],
            [{"type": "conv2d", "out_channels": 1, "kernel_size": 2, "padding": "same"}]]}]}),
            0,
        );
        assert_eq!(t[0].aligned, Some(false));
        let t = table(
            json!({"input_shape": [1, 16, 16], "layers": [{"type": "concat", "branches": [
            [{"type": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": 1}],
            [{"type": "conv2d", "out_channels": 1, "kernel_size": 3, "stride": 2, "padding": 1}, {"type": "adaptive_avgpool2d", "output_size": 16}]]}]}),
            0,
        );
        assert_eq!(t[0].kind, "not_affine");
    }
}
