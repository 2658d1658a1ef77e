//! Receptive fields: the affine input range of every layer, and the exact set of input
//! positions one output unit depends on.
//!
//! Conventions (zero-based internally): output row `i` of a layer depends on network-input rows
//! `jump*i + lo ..= jump*i + hi` (before clipping to the image). One-based answers, as the course
//! writes them, shift both `i` and `m` by one: `lo1 = lo - jump + 1`, `hi1 = hi - jump + 1`.
use super::intervals::IntervalSet;
use crate::spec::interp::{gcd, Floor};
use crate::spec::shape::upsample_axes;
use crate::spec::{Above, Graph, LayerKind, Merge, Node, SpecError, SpecResult, Window};
use serde::Serialize;
use utoipa::ToSchema;

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

/// One end of a rational range: `a*floor((n*i + c)/d) + e` (a, n, d >= 1). Upsampling and
/// transposed convolutions put a floor in the map: an output step moves `a*n/d` input positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = RangeEnd)]
pub struct End {
    pub a: i64,
    pub n: i64,
    pub c: i64,
    pub d: i64,
    pub e: i64,
}

impl End {
    fn affine(jump: u64, off: i64) -> Option<End> {
        Some(End {
            a: 1,
            n: i64::try_from(jump).ok()?,
            c: 0,
            d: 1,
            e: off,
        })
    }

    pub fn at(&self, i: i64) -> i128 {
        let (a, n, c, d, e) = (self.a as i128, self.n as i128, self.c as i128, self.d as i128, self.e as i128);
        a * (n * i as i128 + c).div_euclid(d) + e
    }

    /// The same function in lowest terms; a floor that divides evenly is no floor.
    fn normalize(self) -> Option<End> {
        let g = gcd(gcd(self.n, self.c), self.d).max(1);
        let (n, c, d) = (self.n / g, self.c / g, self.d / g);
        if n % d == 0 {
            // floor((n*i + c)/d) = (n/d)*i + floor(c/d)
            return Some(End {
                a: 1,
                n: self.a.checked_mul(n / d)?,
                c: 0,
                d: 1,
                e: self.a.checked_mul(c.div_euclid(d))?.checked_add(self.e)?,
            });
        }
        Some(End {
            a: self.a,
            n,
            c,
            d,
            e: self.e,
        })
    }

    /// `self(s*i + t)`: through a sliding window.
    fn linear(self, s: i64, t: i64) -> Option<End> {
        End {
            n: self.n.checked_mul(s)?,
            c: self.n.checked_mul(t)?.checked_add(self.c)?,
            ..self
        }
        .normalize()
    }

    /// `self(floor((u*i + q)/s))`: through an upsampling or a transposed convolution. Two
    /// floors nest into one when the outer map has no floor, or when both step by one; else None.
    fn floor(self, u: i64, q: i64, s: i64) -> Option<End> {
        if self.d == 1 {
            End {
                a: self.a.checked_mul(self.n)?,
                n: u,
                c: q,
                d: s,
                e: self.a.checked_mul(self.c)?.checked_add(self.e)?,
            }
            .normalize()
        } else if self.n == 1 && u == 1 {
            End {
                c: q.checked_add(self.c.checked_mul(s)?)?,
                d: self.d.checked_mul(s)?,
                ..self
            }
            .normalize()
        } else {
            None
        }
    }

    /// Input positions per output step, as a reduced fraction.
    pub fn slope(&self) -> (i64, i64) {
        let (num, den) = (self.a * self.n, self.d);
        let g = gcd(num, den).max(1);
        (num / g, den / g)
    }

    /// The same end in the requested index base: one-based, i0 = i1 - 1 and m1 = m0 + 1.
    pub fn based(&self, base: u64) -> End {
        let b = base as i64;
        End {
            c: self.c - b * self.n,
            e: self.e + b,
            ..*self
        }
    }

    /// The same end for another index base (`from` and `to` are 0 or 1).
    pub fn rebase(&self, from: u64, to: u64) -> End {
        let (f, t) = (from as i64, to as i64);
        End {
            c: self.c + (f - t) * self.n,
            e: self.e - f + t,
            ..*self
        }
    }

    /// `2*floor((i+1)/2)-3`.
    fn text(&self, var: &str) -> String {
        let (c, e) = (self.c, self.e);
        let lin = |n: i64, c: i64| -> String {
            let head = if n == 1 { var.to_string() } else { format!("{n}{var}") };
            match c {
                0 => head,
                c if c > 0 => format!("{head}+{c}"),
                c => format!("{head}{c}"),
            }
        };
        let core = if self.d == 1 {
            lin(self.n, c)
        } else if c == 0 {
            format!("floor({}/{})", lin(self.n, 0), self.d)
        } else {
            format!("floor(({})/{})", lin(self.n, c), self.d)
        };
        let core = if self.a == 1 { core } else { format!("{}*{core}", self.a) };
        match e {
            0 => core,
            e if e > 0 => format!("{core}+{e}"),
            e => format!("{core}{e}"),
        }
    }
}

/// A rational range along one axis: output index `i` sees inputs `lo(i) ..= hi(i)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisMap {
    pub lo: End,
    pub hi: End,
}

impl AxisMap {
    fn from_affine(a: &Affine) -> Option<AxisMap> {
        Some(AxisMap {
            lo: End::affine(a.jump, a.lo)?,
            hi: End::affine(a.jump, a.hi)?,
        })
    }

    /// The integer-affine map this is, if it is one.
    fn to_affine(self) -> Option<Affine> {
        (self.lo.d == 1 && self.hi.d == 1 && self.lo.n == self.hi.n && self.lo.a == 1 && self.hi.a == 1).then_some(Affine {
            jump: self.lo.n as u64,
            lo: self.lo.e,
            hi: self.hi.e,
        })
    }

    /// The least common period of both ends (their floors repeat every d steps).
    fn period(&self) -> i64 {
        self.lo.d / gcd(self.lo.d, self.hi.d) * self.hi.d
    }

    pub fn at(&self, i: u64) -> (i64, i64) {
        let clamp = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        (clamp(self.lo.at(i as i64)), clamp(self.hi.at(i as i64)))
    }
}

/// What the affine analysis can say about a layer's output.
#[derive(Clone, Debug, PartialEq)]
pub enum Rf {
    /// Height and width maps.
    Spatial([Affine; 2]),
    /// Depth, height and width maps of a volume `[C, D, H, W]`.
    Volume([Affine; 3]),
    /// Height and width maps with floors (after upsampling or a strided transposed convolution).
    Rational([AxisMap; 2]),
    /// Depth, height and width maps of a volume with floors (after a strided transposed
    /// convolution).
    RationalVolume([AxisMap; 3]),
    /// Each feature of a flat input depends on itself only (an MLP before its first linear).
    Features,
    /// Every output depends on the whole input (after a linear layer).
    Global,
    /// A sequence `[L, D]` (or token ids `[L]`): output token `i` reads input tokens
    /// `0 ..= i` when `prefix` (a causal mask, a forward LSTM), `i ..= L-1` when `suffix`, else
    /// token `i` alone; both ends open is [`Rf::Global`] (see [`Rf::sequence`]). `axis` is the
    /// sample axis that holds the tokens: 0, but for attention's heads written by hand
    /// (`[L, H, d]` has them on 0, `[H, L, d]` on 1).
    Sequence { prefix: bool, suffix: bool, axis: usize },
    /// Attention's scores written by hand, `q @ k^T` (`[.., L, S]`): element `(.., i, j)` reads
    /// query token `i` and key token `j` (each with the earlier (`prefix`) or later (`suffix`)
    /// tokens it reads); `axis` holds the queries, the last axis the keys. No range of one
    /// index; a softmax over the keys makes one: tokens `0..=i` under a causal mask, else all.
    Pairs { axis: usize, prefix: bool, suffix: bool },
    /// No affine form exists; the string says why. Exact per-unit answers still exist.
    NotAffine(String),
    /// A learned tensor (a parameter node) and what is computed from it alone: it reads no input.
    Constant,
}

impl Rf {
    /// A sequence map; one open at both ends reads every token: global.
    pub fn sequence(prefix: bool, suffix: bool) -> Rf {
        Rf::tokens(0, prefix, suffix)
    }

    /// A sequence map with its tokens on sample axis `axis`.
    pub fn tokens(axis: usize, prefix: bool, suffix: bool) -> Rf {
        if prefix && suffix {
            Rf::Global
        } else {
            Rf::Sequence { prefix, suffix, axis }
        }
    }
}

/// The tokens output token `i` of a sequence reads, in the requested index base.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct TokenRange {
    /// `0 <= t <= i` (causal), `t = i` (token by token), `i <= t <= L-1`.
    #[schema(example = "0 <= t <= i")]
    pub text: String,
    /// Reads every earlier token.
    pub prefix: bool,
    /// Reads every later token.
    pub suffix: bool,
    /// The sample axis whose index is `i`, where it is not the first: attention's heads written
    /// by hand (`[H, L, d]`: 1; k transposed, `[H, d, L]`: 2; the weights `[H, L, L]`: 1, whose
    /// elements above the diagonal read nothing).
    #[serde(skip_serializing_if = "is_zero")]
    pub axis: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn token_range(rf: &Rf, input_tokens: u64, base: u64) -> Option<TokenRange> {
    match *rf {
        Rf::Sequence { prefix, suffix, axis } => Some(TokenRange {
            axis,
            text: match (prefix, suffix) {
                (true, _) => format!("{base} <= t <= i"),
                (false, true) => format!("i <= t <= {}", input_tokens - 1 + base),
                (false, false) => "t = i".to_string(),
            },
            prefix,
            suffix,
        }),
        _ => None,
    }
}

/// An integer-affine range along one axis.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct AxisRange {
    /// The receptive-field size along the axis.
    pub size: u64,
    /// The effective stride: input positions per output step.
    pub jump: u64,
    /// In the requested index base: output index `i` sees `scale*i + lo ..= scale*i + hi`.
    pub scale: u64,
    pub lo: i64,
    pub hi: i64,
    #[schema(example = "4i-9 <= m <= 4i+6")]
    pub text: String,
}

/// Images: `height` and `width`; volumes `depth` too; a 1-D signal `[C, L]`: `length` alone.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct SpatialRf {
    /// A volume's slices: output slice k sees input slices p.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<AxisRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<AxisRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<AxisRange>,
    /// A 1-D signal's positions: output position i sees input positions m.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<AxisRange>,
}

/// A rational range along one axis, in the requested index base: output `i` sees inputs
/// `lo(i) ..= hi(i)`, each `a*floor((n*i + c)/d) + e`.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct RationalAxis {
    #[schema(example = "floor(i/2) <= m <= floor((i+1)/2)")]
    pub text: String,
    /// Input positions per output step, as a fraction.
    #[schema(example = "1/2")]
    pub jump: String,
    pub min_size: u64,
    pub max_size: u64,
    pub lo: End,
    pub hi: End,
}

/// Images: `height` and `width`; volumes `depth` too (output slice `k`, input slices `p`); a 1-D
/// signal: `length` alone.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct RationalRf {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<RationalAxis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<RationalAxis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<RationalAxis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<RationalAxis>,
}

/// One branch of a composite layer, with its own range.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct BranchRf {
    pub label: String,
    pub receptive_field: Option<SpatialRf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rational: Option<RationalRf>,
}

/// One layer's receptive field (every composite's children included, in depth-first order).
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct LayerRf {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub layer_type: String,
    pub output_shape: Vec<u64>,
    /// The output is a 1-D signal `[C, L]` (channels, positions): a unit is `[i]` over L, with a
    /// channel (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub signal: bool,
    pub kind: RfKind,
    /// Null where the range is not integer-affine over rows and columns (every kind but spatial).
    pub receptive_field: Option<SpatialRf>,
    /// `rational` layers: the ranges with floors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rational: Option<RationalRf>,
    /// Sequence layers (`token`, `causal`, `anticausal`): the input tokens output token i reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenRange>,
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

impl SpatialRf {
    /// The first axis: an image's rows, a signal's positions.
    pub fn rows(&self) -> Option<&AxisRange> {
        self.height.as_ref().or(self.length.as_ref())
    }
}

impl RationalRf {
    /// The first axis: an image's rows, a signal's positions.
    pub fn rows(&self) -> Option<&RationalAxis> {
        self.height.as_ref().or(self.length.as_ref())
    }
}

/// The ranges of an image's rows and columns, or (`signal`) of a 1-D signal's positions, the
/// height of its 2-D form dropped.
fn spatial(rf: &Rf, base: u64, signal: bool) -> Option<SpatialRf> {
    match rf {
        Rf::Spatial([_, w]) if signal => Some(SpatialRf {
            depth: None,
            height: None,
            width: None,
            length: Some(axis_range(w, base, "i", "m")),
        }),
        Rf::Spatial([h, w]) => Some(SpatialRf {
            depth: None,
            height: Some(axis_range(h, base, "i", "m")),
            width: Some(axis_range(w, base, "j", "n")),
            length: None,
        }),
        Rf::Volume([d, h, w]) => Some(SpatialRf {
            depth: Some(axis_range(d, base, "k", "p")),
            height: Some(axis_range(h, base, "i", "m")),
            width: Some(axis_range(w, base, "j", "n")),
            length: None,
        }),
        _ => None,
    }
}

fn rational_axis(m: &AxisMap, base: u64, index: &str, var: &str) -> RationalAxis {
    let (lo, hi) = (m.lo.based(base), m.hi.based(base));
    let (num, den) = m.lo.slope();
    let sizes: Vec<u64> = (0..m.period()).map(|i| (m.hi.at(i) - m.lo.at(i) + 1).max(0) as u64).collect();
    RationalAxis {
        text: format!("{} <= {var} <= {}", lo.text(index), hi.text(index)),
        jump: if den == 1 { num.to_string() } else { format!("{num}/{den}") },
        min_size: sizes.iter().copied().min().unwrap_or(0),
        max_size: sizes.iter().copied().max().unwrap_or(0),
        lo,
        hi,
    }
}

fn rational(rf: &Rf, base: u64, signal: bool) -> Option<RationalRf> {
    match rf {
        Rf::Rational([_, w]) if signal => Some(RationalRf {
            depth: None,
            height: None,
            width: None,
            length: Some(rational_axis(w, base, "i", "m")),
        }),
        Rf::Rational([h, w]) => Some(RationalRf {
            depth: None,
            height: Some(rational_axis(h, base, "i", "m")),
            width: Some(rational_axis(w, base, "j", "n")),
            length: None,
        }),
        Rf::RationalVolume([d, h, w]) => Some(RationalRf {
            depth: Some(rational_axis(d, base, "k", "p")),
            height: Some(rational_axis(h, base, "i", "m")),
            width: Some(rational_axis(w, base, "j", "n")),
            length: None,
        }),
        _ => None,
    }
}

/// What kind of dependence a layer's output has on the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RfKind {
    /// Integer-affine ranges over rows and columns (`receptive_field`).
    Spatial,
    /// Ranges with floors, after upsampling or a strided transposed convolution (`rational`).
    Rational,
    /// A flat layer: every output reads some of the input's features.
    Features,
    /// Every output reads the whole input.
    Global,
    /// No affine range (the `note` says why).
    NotAffine,
    /// A parameter node, and what is computed from it alone: reads no input.
    Constant,
    /// A sequence whose output token i reads tokens 0..=i (`tokens`).
    Causal,
    /// A sequence whose output token i reads tokens i..=L-1.
    Anticausal,
    /// A sequence whose output token i reads input token i.
    Token,
}

impl RfKind {
    /// The kind as the JSON writes it.
    pub fn name(self) -> &'static str {
        match self {
            RfKind::Spatial => "spatial",
            RfKind::Rational => "rational",
            RfKind::Features => "features",
            RfKind::Global => "global",
            RfKind::NotAffine => "not_affine",
            RfKind::Constant => "constant",
            RfKind::Causal => "causal",
            RfKind::Anticausal => "anticausal",
            RfKind::Token => "token",
        }
    }
}

fn kind_name(rf: &Rf) -> RfKind {
    match rf {
        Rf::Spatial(_) | Rf::Volume(_) => RfKind::Spatial,
        Rf::Rational(_) | Rf::RationalVolume(_) => RfKind::Rational,
        Rf::Features => RfKind::Features,
        Rf::Global => RfKind::Global,
        Rf::NotAffine(_) | Rf::Pairs { .. } => RfKind::NotAffine,
        Rf::Constant => RfKind::Constant,
        Rf::Sequence { prefix: true, .. } => RfKind::Causal,
        Rf::Sequence { suffix: true, .. } => RfKind::Anticausal,
        Rf::Sequence { .. } => RfKind::Token,
    }
}

/// The per-layer table, every composite's children included, in depth-first order, from the
/// maps [`node_rfs`] computed.
pub fn layer_table(graph: &Graph, rfs: &[NodeRf], base: u64) -> Vec<LayerRf> {
    graph
        .walk_ids()
        .into_iter()
        .map(|i| {
            let node = &graph.nodes[i];
            let n = &rfs[i];
            let mut row = LayerRf {
                path: node.path.clone(),
                name: node.layer.name.clone(),
                layer_type: node_type(node),
                output_shape: node.output.clone(),
                signal: node.signal,
                kind: kind_name(&n.rf),
                receptive_field: spatial(&n.rf, base, node.signal),
                rational: rational(&n.rf, base, node.signal),
                tokens: token_range(&n.rf, graph.input()[0], base),
                branches: node
                    .inputs
                    .iter()
                    .zip(&n.ins)
                    .map(|(e, r)| BranchRf {
                        label: e.label.clone(),
                        receptive_field: spatial(r, base, node.signal),
                        rational: rational(r, base, node.signal),
                    })
                    .collect(),
                aligned: n.aligned,
                note: n.note.clone(),
            };
            if let Rf::NotAffine(why) = &n.rf {
                row.note.get_or_insert_with(|| why.clone());
            }
            if let Rf::Pairs { .. } = &n.rf {
                row.note.get_or_insert_with(|| PAIRS.to_string());
            }
            row
        })
        .collect()
}

/// Why attention's scores written by hand have no range of one index.
const PAIRS: &str = "attention's scores: output (i, j) reads query token i and key token j; the softmax over the keys reads tokens 0..i under a causal mask, else every token; a unit's exact set is exact";

/// A node's map, and for a merge node the maps it combined and whether they are aligned.
#[derive(Clone, Debug)]
pub struct NodeRf {
    pub rf: Rf,
    /// A merge node's inputs' maps (empty for other nodes).
    ins: Vec<Rf>,
    aligned: Option<bool>,
    note: Option<String>,
}

/// The map of every node's output, in the order of [`Graph::nodes`].
pub fn node_rfs(graph: &Graph) -> Vec<NodeRf> {
    let mut rfs: Vec<NodeRf> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let mut n = match node.merge {
            // a matmul, or a cross-attention: output row (token) i reads row i of the first input
            // and all of the others
            Some(Merge::MatMul | Merge::Attention) | None if node.inputs.len() > 1 => {
                let ins: Vec<Rf> = node
                    .inputs
                    .iter()
                    .map(|e| e.from.map_or_else(|| start(graph), |f| rfs[f].rf.clone()))
                    .collect();
                let matmul = node.merge.is_some();
                let causal = matches!(node.layer.kind, LayerKind::ScaledDotProductAttention { causal: true, .. });
                let why = match node.merge {
                    Some(Merge::MatMul) => "matmul: output (i, j) reads row i of the first operand and column j of the second",
                    Some(_) if causal => "causal attention: output token i reads query token i and key and value tokens 0..i",
                    Some(_) => "attention: output token i reads query token i and every key and value token",
                    None => "cross-attention: output token i reads query token i and every key and value token",
                };
                // causal attention over sequences each token of which reads earlier tokens only,
                // their tokens on the rows (the heads' `[H, L, E]` too)
                let rows = |e: &crate::spec::shape::Edge| e.shape.len().saturating_sub(2);
                let prefix = causal
                    && node
                        .inputs
                        .iter()
                        .zip(&ins)
                        .all(|(e, r)| matches!(*r, Rf::Sequence { suffix: false, axis, .. } if axis == rows(e)));
                let by_tokens = if matmul && node.merge == Some(Merge::MatMul) {
                    matmul_tokens(graph, node, &ins)
                } else {
                    None
                };
                NodeRf {
                    rf: if prefix {
                        Rf::tokens(node.output.len() - 2, true, false)
                    } else if let Some(rf) = by_tokens {
                        rf
                    } else {
                        row_and_all(&ins[0], &ins[1..], why)
                    },
                    // a matmul lists its operands' maps as a merge does
                    ins: if matmul { ins } else { Vec::new() },
                    aligned: None,
                    note: None,
                }
            }
            Some(m) => {
                let ins = merge_inputs(graph, node, &rfs);
                let (merged, aligned, note) = merge(&ins);
                let rf = match m {
                    // a sequence's features are concatenated token by token, a signal's
                    // channels position by position: the union
                    Merge::Cat(1) if node.output.len() == 2 && !node.signal => merged,
                    Merge::Cat(0) if node.signal => merged,
                    Merge::Cat(axis) if axis > 0 || node.output.len() <= 2 => {
                        if ins.contains(&Rf::Global) {
                            Rf::Global
                        } else {
                            Rf::NotAffine(format!(
                                "concatenated along {}: consecutive outputs come from different tensors",
                                match node.output.len() {
                                    1 => "the features",
                                    2 if node.signal => "the positions",
                                    2 => "the tokens",
                                    3 => ["the channels", "the height", "the width"][axis],
                                    _ => ["the channels", "the depth", "the height", "the width"][axis],
                                }
                            ))
                        }
                    }
                    _ => merged,
                };
                // alignment speaks of unions over positions: not of a concatenation along them
                let union = matches!(m, Merge::Add | Merge::Mul | Merge::Cat(0)) && (node.output.len() != 2 || node.signal);
                NodeRf {
                    rf,
                    ins,
                    aligned: aligned.filter(|_| union),
                    note: note.filter(|_| union),
                }
            }
            None if node.inputs.is_empty() => NodeRf {
                rf: Rf::Constant,
                ins: Vec::new(),
                aligned: None,
                note: None,
            },
            None => {
                let input = match node.inputs[0].from {
                    Some(f) => rfs[f].rf.clone(),
                    None => start(graph),
                };
                NodeRf {
                    rf: apply(node, input),
                    ins: Vec::new(),
                    aligned: None,
                    note: None,
                }
            }
        };
        if n.rf == Rf::Global {
            if let Some(why) = partial_reach(graph, rfs.len(), &rfs) {
                n.rf = Rf::NotAffine(why);
            }
        }
        rfs.push(n);
    }
    rfs
}

/// Why a node whose every output reads all of its input does not read the whole model input,
/// or None when it does. A node that reads only global (and learned) tensors reads everything
/// they read: the whole input. Otherwise (a linear layer, attention or a mean reading a map) the
/// union of what its outputs read is computed exactly: a crop, or a stride that leaves the last
/// rows unread, leaves part of the input unread.
fn partial_reach(graph: &Graph, id: usize, rfs: &[NodeRf]) -> Option<String> {
    let node = &graph.nodes[id];
    let read = |e: &crate::spec::shape::Edge| e.from.map(|f| &rfs[f].rf);
    if node.inputs.iter().all(|e| matches!(read(e), Some(Rf::Global | Rf::Constant))) {
        return None;
    }
    let whole = Product(node.output.iter().map(|&n| IntervalSet::range(0, n - 1)).collect());
    let reach = back_to_input(graph, &graph.ancestors(id), id, whole);
    let input = graph.input();
    if !reach.approximate && covers(&reach.boxes.iter().collect::<Vec<_>>(), input, 0) {
        return None;
    }
    let axes: Vec<String> = (0..input.len())
        .map(|a| {
            let s = reach.axis(a);
            let runs: Vec<String> = s.ranges().iter().map(|&(lo, hi)| format!("{lo}..{hi}")).collect();
            format!(
                "{} of 0..{}",
                if runs.is_empty() { "none".into() } else { runs.join(", ") },
                input[a] - 1
            )
        })
        .collect();
    Some(format!(
        "every output reads all of its input, which does not reach the whole model input (zero-based, per axis of {input:?}: {}{}); a unit's exact set is exact",
        axes.join("; "),
        if reach.approximate { ", a hull" } else { "" }
    ))
}

/// Whether the union of `boxes` holds every element of `shape` on axes `a..` (the boxes
/// already hold the element on the axes before `a`): along axis `a`, every run between two of
/// the boxes' ends is held by the boxes that hold its first position, on the remaining axes.
fn covers(boxes: &[&Product], shape: &[u64], a: usize) -> bool {
    if a == shape.len() {
        return !boxes.is_empty();
    }
    let mut cuts = vec![0, shape[a]];
    for b in boxes {
        for &(lo, hi) in b.0[a].ranges() {
            cuts.extend([lo, hi + 1]);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).filter(|w| w[1] <= shape[a]).all(|w| {
        let held: Vec<&Product> = boxes.iter().copied().filter(|b| !b.0[a].window(w[0], 1).is_empty()).collect();
        covers(&held, shape, a + 1)
    })
}

/// The map of `a @ b` (`[.., n, k] @ [.., k, m]`, a batch of matrices each) where an operand holds
/// tokens on one axis: output `(.., i, j)` reads row `i` of `a` and column `j` of `b`. Tokens on
/// a's rows by learned columns keep their axis (`x @ W`), tokens on b's columns by learned rows
/// move to the last axis; tokens on a's rows by tokens on b's columns are attention's scores
/// (`q @ k^T`); by tokens on b's rows, a's weights exactly 0 above the diagonal (a causal
/// softmax's), output row `i` reads b's rows `0..=i` (`weights @ v`); tokens on the contracted
/// axis make every output read them all. None: [`row_and_all`] answers.
fn matmul_tokens(graph: &Graph, node: &Node, ins: &[Rf]) -> Option<Rf> {
    let (ea, eb) = (&node.inputs[0], &node.inputs[1]);
    let (ra, rb, r) = (ea.shape.len(), eb.shape.len(), node.output.len());
    if ra < 2 || rb < 2 {
        return None;
    }
    Some(match (&ins[0], &ins[1]) {
        (&Rf::Sequence { axis, .. }, _) if axis == ra - 1 => Rf::Global,
        (_, &Rf::Sequence { axis, .. }) if axis == rb - 2 && !matches!(ins[0], Rf::Sequence { .. }) => Rf::Global,
        (&Rf::Sequence { axis, prefix, suffix }, Rf::Constant) if axis == ra - 2 => Rf::tokens(r - 2, prefix, suffix),
        (Rf::Constant, &Rf::Sequence { axis, prefix, suffix }) if axis == rb - 1 => Rf::tokens(r - 1, prefix, suffix),
        (
            &Rf::Sequence { axis, prefix, suffix },
            &Rf::Sequence {
                axis: kb,
                prefix: pb,
                suffix: sb,
            },
        ) if axis == ra - 2 => {
            if kb == rb - 1 {
                Rf::Pairs {
                    axis: r - 2,
                    prefix: prefix || pb,
                    suffix: suffix || sb,
                }
            } else if kb == rb - 2 && graph.zero_above(ea) {
                Rf::tokens(r - 2, true, suffix || sb)
            } else if kb == rb - 2 {
                Rf::Global
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// The map of an output whose row i reads row i of `a` and all of `others` (`a @ b`; a
/// cross-attention's query and keys/values). By learned tensors alone, row by row as a linear
/// layer on each token; others that read the input (every token of a sequence, every position of
/// a signal) make every output read all of it; else `why`.
fn row_and_all(a: &Rf, others: &[Rf], why: &str) -> Rf {
    let reads_all = |r: &Rf| {
        matches!(
            r,
            Rf::Global
                | Rf::Sequence { .. }
                | Rf::Pairs { .. }
                | Rf::Constant
                | Rf::Spatial(_)
                | Rf::Volume(_)
                | Rf::Rational(_)
                | Rf::RationalVolume(_)
        )
    };
    if others.iter().all(|r| *r == Rf::Constant) && maps_of(a).is_none() {
        return a.clone();
    }
    if reads_all(a) && others.iter().all(reads_all) {
        return Rf::Global;
    }
    Rf::NotAffine(why.into())
}

fn start(graph: &Graph) -> Rf {
    if graph.input().len() == 4 {
        Rf::Volume([Affine::IDENTITY; 3])
    } else if graph.input().len() == 3 || graph.input_signal {
        Rf::Spatial([Affine::IDENTITY; 2])
    } else if graph.spec.token_ids || graph.input().len() == 2 {
        Rf::sequence(false, false)
    } else {
        Rf::Features
    }
}

/// The maps a merge node combines, one per input. An input broadcast over a spatial axis (size
/// 1 there, larger in the output) gives every output position the same range, which has no
/// affine form unless it is the whole input on both axes (a squeeze-and-excitation gate is
/// `global`).
fn merge_inputs(graph: &Graph, node: &Node, rfs: &[NodeRf]) -> Vec<Rf> {
    node.inputs
        .iter()
        .map(|e| {
            let rf = e.from.map_or_else(|| start(graph), |f| rfs[f].rf.clone());
            if e.shape.len() == 2 && e.broadcast(&node.output, 0) && matches!(rf, Rf::Sequence { .. }) {
                return Rf::NotAffine(format!("{} is broadcast over the tokens: every token reads its one token", e.label));
            }
            // an image's rows and columns; a signal's positions (the height of its 2-D form is 1)
            let broadcast = match e.shape.len() {
                4 if (1..4).any(|a| e.broadcast(&node.output, a)) => {
                    // a volume's gate: the whole input at every position, or one range each
                    let n = graph.input();
                    return match volume_maps(&rf) {
                        Some(m) if (0..3).all(|a| m[a].at(0).0 <= 0 && m[a].at(0).1 >= n[a + 1] as i64 - 1) => Rf::Global,
                        _ if matches!(rf, Rf::Global | Rf::Constant) => rf,
                        _ => Rf::NotAffine(format!(
                            "{} is broadcast over positions: every output position sees its one range",
                            e.label
                        )),
                    };
                }
                3 => (1..3).any(|a| e.broadcast(&node.output, a)),
                2 => node.signal && e.broadcast(&node.output, 1),
                _ => false,
            };
            match maps_of(&rf) {
                Some(maps) if broadcast => {
                    let n = extent(graph.input());
                    let covers = (0..2).all(|a| {
                        let (lo, hi) = maps[a].at(0);
                        lo <= 0 && hi >= n[a] as i64 - 1
                    });
                    if covers {
                        Rf::Global
                    } else {
                        Rf::NotAffine(format!(
                            "{} is broadcast over positions: every output position sees its one range",
                            e.label
                        ))
                    }
                }
                _ => rf,
            }
        })
        .collect()
}

/// The height and width of an image `[C, H, W]`, or of a signal `[C, L]`'s 2-D form (1, L).
fn extent(shape: &[u64]) -> [u64; 2] {
    match shape {
        [_, h, w] => [*h, *w],
        [_, l] => [1, *l],
        _ => [1, 1],
    }
}

/// The maps of a spatial or rational range, as rational maps.
pub fn maps_of(rf: &Rf) -> Option<[AxisMap; 2]> {
    match rf {
        Rf::Spatial([h, w]) => Some([AxisMap::from_affine(h)?, AxisMap::from_affine(w)?]),
        Rf::Rational(m) => Some(*m),
        _ => None,
    }
}

/// Rational maps back to a range: integer-affine when both axes are.
fn from_maps(maps: [AxisMap; 2]) -> Rf {
    match (maps[0].to_affine(), maps[1].to_affine()) {
        (Some(h), Some(w)) => Rf::Spatial([h, w]),
        _ => Rf::Rational(maps),
    }
}

/// The maps of a volume's integer-affine or rational range, as rational maps.
pub fn volume_maps(rf: &Rf) -> Option<[AxisMap; 3]> {
    match rf {
        Rf::Volume([d, h, w]) => Some([AxisMap::from_affine(d)?, AxisMap::from_affine(h)?, AxisMap::from_affine(w)?]),
        Rf::RationalVolume(m) => Some(*m),
        _ => None,
    }
}

/// A volume's rational maps back to a range: integer-affine when every axis is.
fn from_volume_maps(maps: [AxisMap; 3]) -> Rf {
    match (maps[0].to_affine(), maps[1].to_affine(), maps[2].to_affine()) {
        (Some(d), Some(h), Some(w)) => Rf::Volume([d, h, w]),
        _ => Rf::RationalVolume(maps),
    }
}

/// Each axis's map of a volume through `f` (None: no single-floor form).
fn map_volume(rf: Rf, why: &str, f: impl Fn(usize, AxisMap) -> Option<AxisMap>) -> Rf {
    match volume_maps(&rf) {
        Some(m) => match (f(0, m[0]), f(1, m[1]), f(2, m[2])) {
            (Some(d), Some(h), Some(w)) => from_volume_maps([d, h, w]),
            _ => Rf::NotAffine(why.to_string()),
        },
        None => rf,
    }
}

/// A rational map through a sliding window: output `o` reads window positions
/// `stride*o - pad_lo ..= stride*o - pad_lo + span - 1`.
fn window_map(m: AxisMap, w: &Window) -> Option<AxisMap> {
    let (s, lo) = (w.stride as i64, -(w.pad_lo as i64));
    Some(AxisMap {
        lo: m.lo.linear(s, lo)?,
        hi: m.hi.linear(s, lo.checked_add(w.span() as i64 - 1)?)?,
    })
}

/// A rational map through a transposed convolution along one axis: output `o` reads inputs
/// `ceil((o + p - d*(k-1))/s) ..= floor((o + p)/s)`.
fn transposed_map(m: AxisMap, kernel: u64, stride: u64, padding: u64, dilation: u64) -> Option<AxisMap> {
    let (s, p) = (stride as i64, padding as i64);
    let reach = i64::try_from(dilation.checked_mul(kernel - 1)?).ok()?;
    Some(AxisMap {
        lo: m.lo.floor(1, p.checked_sub(reach)?.checked_add(s - 1)?, s)?,
        hi: m.hi.floor(1, p, s)?,
    })
}

/// A rational map through an upsampling along one axis whose first and last rows read are the
/// floors `lo` and `hi` ([`crate::spec::interp::Interp::floors`]).
fn upsample_map(m: AxisMap, [lo, hi]: [Floor; 2]) -> Option<AxisMap> {
    Some(AxisMap {
        lo: m.lo.floor(lo.0, lo.1, lo.2)?,
        hi: m.hi.floor(hi.0, hi.1, hi.2)?,
    })
}

const UNEVEN: &str = "an upsampling whose source positions PyTorch's float arithmetic does not place by one floor: no single-floor range; exact sets of a unit are exact";

/// A map after a crop from `start` along its axis: output position i is input position
/// i + start (None when a number leaves 64 bits).
fn shifted(m: AxisMap, start: u64) -> Option<AxisMap> {
    let start = i64::try_from(start).ok()?;
    Some(AxisMap {
        lo: m.lo.linear(1, start)?,
        hi: m.hi.linear(1, start)?,
    })
}

/// Each axis's map through `f` (None: no single-floor form).
fn map_axes(rf: Rf, why: &str, f: impl Fn(usize, AxisMap) -> Option<AxisMap>) -> Rf {
    match maps_of(&rf) {
        Some(m) => match (f(0, m[0]), f(1, m[1])) {
            (Some(h), Some(w)) => from_maps([h, w]),
            _ => Rf::NotAffine(why.to_string()),
        },
        None => rf,
    }
}

const TOO_WIDE: &str = "the range's numbers do not fit in 64 bits";

const NESTED: &str =
    "an upsampling after a stride that does not divide it nests two floors: no single-floor range; exact sets of a unit are exact";

/// The map through a sliding-window layer's windows (conv, pool, padding, spatial mean).
fn through_windows(node: &Node, rf: Rf) -> Rf {
    match (rf, node.windows) {
        (Rf::Spatial(m), Some(ws)) => then_all(m, &ws).map_or_else(too_far, Rf::Spatial),
        (r @ Rf::Rational(_), Some(ws)) => map_axes(r, TOO_WIDE, |a, m| window_map(m, &ws[a])),
        (Rf::Spatial(_) | Rf::Rational(_), None) if node.layer.one_d => Rf::NotAffine(format!(
            "adaptive pooling from {} to {} positions uses windows of different sizes",
            node.input[2], node.output[2]
        )),
        (Rf::Spatial(_) | Rf::Rational(_), None) => Rf::NotAffine(format!(
            "adaptive pooling from {}x{} to {}x{} uses windows of different sizes",
            node.input[1], node.input[2], node.output[1], node.output[2]
        )),
        (other, _) => other,
    }
}

/// Each axis's map through its window; None when a number leaves 64 bits.
fn then_all<const N: usize>(maps: [Affine; N], ws: &[Window; N]) -> Option<[Affine; N]> {
    let mut out = maps;
    for a in 0..N {
        out[a] = maps[a].then(&ws[a])?;
    }
    Some(out)
}

fn too_far() -> Rf {
    Rf::NotAffine("the effective stride or offsets do not fit in 64 bits".into())
}

/// The map through a volume layer's windows (conv3d, the 3-D pools).
fn through_volume(node: &Node, rf: Rf) -> Rf {
    match (rf, node.volume) {
        (Rf::Volume(m), Some(ws)) => then_all(m, &ws).map_or_else(too_far, Rf::Volume),
        (r @ Rf::RationalVolume(_), Some(ws)) => map_volume(r, TOO_WIDE, |a, m| window_map(m, &ws[a])),
        (Rf::Volume(_) | Rf::RationalVolume(_), None) => Rf::NotAffine(format!(
            "adaptive pooling from {}x{}x{} to {}x{}x{} uses windows of different sizes",
            node.input[1], node.input[2], node.input[3], node.output[1], node.output[2], node.output[3]
        )),
        (other, _) => other,
    }
}

/// The map after a layer that reads one tensor (a 1-D layer: its 2-D form's).
fn apply(node: &Node, rf: Rf) -> Rf {
    // a reshape regroups the elements: a map survives only where nothing moves
    if let LayerKind::Reshape(_) = node.layer.kind {
        return match rf {
            Rf::Global | Rf::Constant => rf,
            _ if node.output == node.input => rf,
            // a token's features split into heads, or the heads merged back (`[L, C]` and
            // `[L, H, d]`): every token keeps its elements
            Rf::Sequence { axis: 0, .. } if node.input.len() >= 2 && node.output.len() >= 2 && node.output[0] == node.input[0] => rf,
            _ => Rf::NotAffine("reshaped: the elements regrouped in row-major order; a unit's exact set is exact".into()),
        };
    }
    // the axes of three-axis samples reordered (attention's heads): a map moves with its axes
    // (a transpose of a dim with itself changes nothing)
    if matches!(node.layer.kind, LayerKind::Transpose(_)) {
        if node.perm().iter().enumerate().all(|(a, &p)| a == p) {
            return rf;
        }
        if node.input.len() > 2 {
            let perm = node.perm();
            let moved = |a: usize| perm.iter().position(|&p| p == a).expect("a permutation");
            let last = node.input.len() - 1;
            return match rf {
                Rf::Global | Rf::Constant => rf,
                // the tokens move with their axis (attention's heads to the front and back)
                Rf::Sequence { axis, prefix, suffix } => Rf::tokens(moved(axis), prefix, suffix),
                Rf::Pairs { axis, prefix, suffix } if perm[last] == last => Rf::Pairs {
                    axis: moved(axis),
                    prefix,
                    suffix,
                },
                _ => Rf::NotAffine("axes reordered: no range over rows and columns; a unit's exact set is exact".into()),
            };
        }
    }
    // outputs above the diagonal read nothing, the others their own element
    if let LayerKind::CausalMask = node.layer.kind {
        return match rf {
            // the scores' elements below the diagonal read what they read, the others nothing
            Rf::Constant | Rf::Pairs { .. } => rf,
            _ => Rf::NotAffine(
                "masked: above the diagonal of the last two axes the output is -inf and reads nothing; a unit's exact set is exact".into(),
            ),
        };
    }
    match rf {
        Rf::Sequence { prefix, suffix, axis } => return apply_sequence(node, prefix, suffix, axis),
        Rf::Pairs { axis, prefix, suffix } => return apply_pairs(node, axis, prefix, suffix),
        Rf::Constant => return rf,
        _ => {}
    }
    if let Some(lifted) = node.lifted() {
        return apply(&lifted, rf);
    }
    if node.input.len() == 2 && maps_of(&rf).is_some() {
        return apply_signal(node, rf);
    }
    match &node.layer.kind {
        LayerKind::FlattenSpatial => match rf {
            Rf::Global => rf,
            _ => Rf::NotAffine("the positions flattened into one axis: each reads its own range, in row-major order".into()),
        },
        LayerKind::Transpose(_) => rf,
        LayerKind::SelectToken { .. } => match rf {
            Rf::Global => rf,
            _ => Rf::NotAffine("one token's features: each reads that token's range".into()),
        },
        LayerKind::Parameter { .. } => Rf::Constant,
        LayerKind::Reshape(_) | LayerKind::CausalMask => unreachable!("answered above"),
        LayerKind::Conv2d { .. }
        | LayerKind::MaxPool2d { .. }
        | LayerKind::AvgPool2d { .. }
        | LayerKind::Pad { .. }
        | LayerKind::AdaptiveAvgPool2d { .. }
        | LayerKind::AdaptiveMaxPool2d { .. } => through_windows(node, rf),
        LayerKind::Conv3d { .. }
        | LayerKind::MaxPool3d { .. }
        | LayerKind::AvgPool3d { .. }
        | LayerKind::Pad3d { .. }
        | LayerKind::AdaptiveAvgPool3d { .. }
        | LayerKind::AdaptiveMaxPool3d { .. } => through_volume(node, rf),
        LayerKind::ConvTranspose2d {
            kernel,
            stride,
            padding,
            dilation,
            ..
        } => map_axes(rf, NESTED, |a, m| transposed_map(m, kernel[a], stride[a], padding[a], dilation[a])),
        LayerKind::ConvTranspose3d {
            kernel,
            stride,
            padding,
            dilation,
            ..
        } => map_volume(rf, NESTED, |a, m| transposed_map(m, kernel[a], stride[a], padding[a], dilation[a])),
        LayerKind::Upsample { .. } => {
            let axes = upsample_axes(node.layer, &node.input[1..], &node.output[1..]);
            let floors: Vec<_> = axes.iter().map(|a| a.floors()).collect();
            let why = if floors.iter().all(Option::is_some) { NESTED } else { UNEVEN };
            let axis = |a: usize, m: AxisMap| upsample_map(m, floors[a]?);
            if node.input.len() == 4 {
                map_volume(rf, why, axis)
            } else {
                map_axes(rf, why, axis)
            }
        }
        LayerKind::GroupNorm { .. } | LayerKind::InstanceNorm { .. } | LayerKind::LayerNorm { .. } | LayerKind::Softmax { .. } => {
            let c = node.coupling().expect("normalizations couple");
            match rf {
                Rf::Features if c.groups == 1 => Rf::Global,
                Rf::Features => Rf::NotAffine(format!("each feature depends on its group of {}", node.input[0] / c.groups)),
                // a volume's: every position of it, or (a layernorm over its last axes) every
                // position along those
                Rf::Volume(_) | Rf::RationalVolume(_) | Rf::NotAffine(_) if c.spatial == [true; 3] => Rf::Global,
                Rf::Volume(_) | Rf::RationalVolume(_) => Rf::NotAffine(format!(
                    "{} reads every position along the {}",
                    node.layer.type_name(),
                    if c.spatial[1] { "height and width" } else { "width" }
                )),
                Rf::Spatial(_) | Rf::Rational(_) | Rf::NotAffine(_) if c.spatial[..2] == [true, true] => Rf::Global,
                Rf::Spatial(_) | Rf::Rational(_) | Rf::NotAffine(_) if c.spatial[0] || c.spatial[1] => Rf::NotAffine(format!(
                    "{} reads every position along the {}",
                    node.layer.type_name(),
                    if c.spatial[0] { "height" } else { "width" }
                )),
                other => other,
            }
        }
        // a spatial mean is a window as wide as each averaged axis; without keepdim the
        // features have no spatial index left; a mean over the channels keeps the range
        LayerKind::Mean { .. } => match (node.windows, rf) {
            (Some(_), Rf::Spatial(_) | Rf::Rational(_) | Rf::NotAffine(_)) if node.output.len() == 1 => {
                Rf::NotAffine("averaged over every position: each feature reads its channel's whole map".into())
            }
            (Some(_), rf) => through_windows(node, rf),
            (None, Rf::Features) => Rf::Global,
            (None, other) => other,
        },
        // on a sequence, token by token
        LayerKind::Linear { .. } if node.input.len() == 2 => rf,
        LayerKind::Linear { .. } => Rf::Global,
        // sequence layers reading a sequence whose map is already global or not affine
        LayerKind::Embedding { .. } | LayerKind::MultiheadAttention { .. } | LayerKind::Recurrent(_) => match rf {
            Rf::NotAffine(_) => rf,
            _ => Rf::Global,
        },
        LayerKind::Flatten => match rf {
            Rf::Spatial(_) | Rf::Volume(_) | Rf::Rational(_) | Rf::RationalVolume(_) | Rf::NotAffine(_) => {
                Rf::NotAffine("flattened: features have no spatial index; each depends on one input position".into())
            }
            other => other,
        },
        // a crop: output position i is input position i + start along that axis
        LayerKind::Narrow { dim, start, .. } => {
            let axis = crate::spec::shape::sample_axis(*dim, node.input.len(), "").expect("checked by shape inference");
            let shift = |a: usize, m: AxisMap| if a + 1 == axis { shifted(m, *start) } else { Some(m) };
            match (axis, node.input.len()) {
                (0, _) => rf,
                (_, 4) => map_volume(rf, TOO_WIDE, shift),
                _ => map_axes(rf, TOO_WIDE, shift),
            }
        }
        // channels picked or reordered: every position keeps its range
        LayerKind::BatchNorm { .. }
        | LayerKind::Activation { .. }
        | LayerKind::Dropout { .. }
        | LayerKind::Scale { .. }
        | LayerKind::ChannelShuffle { .. } => rf,
        crate::spec::merges!() => {
            unreachable!("merge nodes are combined by node_rfs")
        }
    }
}

/// The map after a layer (not a 1-D one) that reads a 1-D signal `[C, L]` with a range over its
/// positions: element-wise layers and a softmax or mean over the channels keep it; a linear
/// layer, a normalization, attention or a recurrent layer read every position.
fn apply_signal(node: &Node, rf: Rf) -> Rf {
    let axis = |dim: i64| crate::spec::shape::sample_axis(dim, 2, "").ok();
    match &node.layer.kind {
        LayerKind::BatchNorm { .. } | LayerKind::Activation { .. } | LayerKind::Dropout { .. } | LayerKind::Scale { .. } => rf,
        LayerKind::Softmax { dim } if axis(*dim) == Some(0) => rf,
        LayerKind::Mean { .. } => rf,
        // some channels, or positions start.. of the signal: output position i is input
        // position i + start
        LayerKind::Narrow { dim, start, .. } => match axis(*dim) {
            Some(0) => rf,
            _ => map_axes(rf, TOO_WIDE, |a, m| if a == 1 { shifted(m, *start) } else { Some(m) }),
        },
        LayerKind::Linear { .. }
        | LayerKind::LayerNorm { .. }
        | LayerKind::GroupNorm { .. }
        | LayerKind::Softmax { .. }
        | LayerKind::MultiheadAttention { .. }
        | LayerKind::Recurrent(_) => Rf::Global,
        LayerKind::Transpose(_) => Rf::NotAffine("transposed: the signal's positions became features".into()),
        LayerKind::Flatten => Rf::NotAffine("flattened: features have no position index; each depends on one position's range".into()),
        _ => Rf::NotAffine(format!(
            "{} on a 1-D signal: no affine range; exact sets of a unit are exact",
            node.layer.type_name()
        )),
    }
}

/// The map after a layer that reads attention's scores written by hand ([`Rf::Pairs`]): a
/// softmax over the keys reads every key of its query's row, those up to the query's own
/// under a causal mask (the softmax's output is then exactly 0 above the diagonal).
fn apply_pairs(node: &Node, axis: usize, prefix: bool, suffix: bool) -> Rf {
    let last = node.input.len() - 1;
    let same = Rf::Pairs { axis, prefix, suffix };
    match &node.layer.kind {
        LayerKind::Activation { .. } | LayerKind::Dropout { .. } | LayerKind::Scale { .. } => same,
        LayerKind::Softmax { dim } if crate::spec::shape::sample_axis(*dim, node.input.len(), "") == Ok(last) => {
            if node.above == crate::spec::Above::Zero {
                Rf::tokens(axis, true, suffix)
            } else {
                Rf::Global
            }
        }
        _ => Rf::NotAffine(PAIRS.into()),
    }
}

/// The map after a layer that reads a sequence (or token ids) whose token `i` reads input
/// tokens `0 ..= i` (`prefix`), `i ..= L-1` (`suffix`) or `i` alone, the tokens on sample axis
/// `axis`.
fn apply_sequence(node: &Node, prefix: bool, suffix: bool, axis: usize) -> Rf {
    let same = Rf::tokens(axis, prefix, suffix);
    let rank = node.input.len();
    if rank > 2 || axis > 0 {
        // attention's heads written by hand ([L, H, d], [H, L, d], the weights [H, L, L]): what
        // works within each token keeps the map, what reads along the token axis reads them all
        let on_tokens = |dim: i64| crate::spec::shape::sample_axis(dim, rank, "") == Ok(axis);
        return match &node.layer.kind {
            LayerKind::Activation { .. } | LayerKind::Dropout { .. } | LayerKind::Scale { .. } => same,
            LayerKind::Linear { .. } if axis + 1 < rank => same,
            LayerKind::LayerNorm {
                shape, channels: false, ..
            } if axis + shape.len() < rank => same,
            LayerKind::Softmax { dim } if !on_tokens(*dim) => same,
            LayerKind::Narrow { dim, start, .. } if !on_tokens(*dim) || *start == 0 => same,
            LayerKind::Linear { .. } | LayerKind::LayerNorm { .. } | LayerKind::Softmax { .. } => Rf::Global,
            _ => Rf::NotAffine(format!(
                "{} of tokens on sample axis {axis} of {rank}: a unit's exact set is exact",
                node.layer.type_name()
            )),
        };
    }
    match &node.layer.kind {
        // token by token: a lookup, a projection of each token's features, element-wise
        LayerKind::Embedding { .. }
        | LayerKind::Linear { .. }
        | LayerKind::BatchNorm { .. }
        | LayerKind::Activation { .. }
        | LayerKind::Dropout { .. }
        | LayerKind::Scale { .. } => same,
        // over the features of each token, or (normalized_shape [L, D]) over every token
        LayerKind::LayerNorm { shape, .. } if shape.len() < 2 => same,
        LayerKind::Softmax { dim } if crate::spec::shape::sample_axis(*dim, node.input.len(), "") == Ok(1) => same,
        // some features of every token, or tokens start..: output token i is input token
        // i + start, which keeps the map only from the first token
        LayerKind::Narrow { dim, start, .. } => match (crate::spec::shape::sample_axis(*dim, node.input.len(), ""), start) {
            (Ok(1), _) | (_, 0) => same,
            _ => Rf::NotAffine(format!(
                "tokens cropped from {start}: output token i is input token i+{start}, so its range is its token's, shifted; exact sets of a unit are exact"
            )),
        },
        LayerKind::MultiheadAttention { causal: true, .. } => Rf::sequence(true, suffix),
        LayerKind::Recurrent(r) if !r.bidirectional => Rf::sequence(true, suffix),
        LayerKind::Transpose(_) => Rf::NotAffine("transposed: the tokens became features".into()),
        LayerKind::SelectToken { .. } => Rf::NotAffine("one token's features: each reads that token's range".into()),
        LayerKind::Flatten if node.input.len() == 2 => {
            Rf::NotAffine("flattened: features have no token index; each depends on one token's range".into())
        }
        // a flat vector of features (token ids flattened, features of a mean)
        LayerKind::Flatten => same,
        // attention, a bidirectional recurrent layer, a mean or softmax over the tokens, a
        // layernorm over [L, D]: every token
        _ => Rf::Global,
    }
}

/// The union of parallel branches: one affine range when every branch moves with the same jump.
fn merge(ends: &[Rf]) -> (Rf, Option<bool>, Option<String>) {
    // a learned tensor adds nothing the output depends on
    let read: Vec<Rf> = ends.iter().filter(|r| **r != Rf::Constant).cloned().collect();
    if read.is_empty() {
        return (Rf::Constant, None, None);
    }
    if read.len() < ends.len() {
        return merge(&read);
    }
    if ends.contains(&Rf::Global) {
        return (Rf::Global, None, None);
    }
    if let Some(r) = ends.iter().find(|r| matches!(r, Rf::NotAffine(_))) {
        if ends
            .iter()
            .all(|r| matches!(r, Rf::Sequence { .. } | Rf::Pairs { .. } | Rf::NotAffine(_)))
        {
            return (r.clone(), None, None);
        }
    }
    // tokens (or scores) on one axis in every end: a token reads what any of them reads
    let tokens = |r: &Rf| match *r {
        Rf::Sequence { axis, prefix, suffix } => Some((false, axis, prefix, suffix)),
        Rf::Pairs { axis, prefix, suffix } => Some((true, axis, prefix, suffix)),
        _ => None,
    };
    if let Some((pairs, axis, ..)) = ends.first().and_then(tokens) {
        let joined = ends.iter().try_fold((false, false), |(p, s), r| match tokens(r) {
            Some((k, a, prefix, suffix)) if k == pairs && a == axis => Some((p || prefix, s || suffix)),
            _ => None,
        });
        if let Some((prefix, suffix)) = joined {
            let rf = if pairs {
                Rf::Pairs { axis, prefix, suffix }
            } else {
                Rf::tokens(axis, prefix, suffix)
            };
            return (rf, None, None);
        }
    }
    if ends.iter().any(|r| matches!(r, Rf::Sequence { .. } | Rf::Pairs { .. })) {
        return (
            Rf::NotAffine("tokens on different axes, or with scores: a unit's exact set is exact".into()),
            None,
            None,
        );
    }
    let volumes: Vec<[Affine; 3]> = ends
        .iter()
        .filter_map(|r| if let Rf::Volume(a) = r { Some(*a) } else { None })
        .collect();
    if ends.iter().any(|r| matches!(r, Rf::Volume(_) | Rf::RationalVolume(_))) {
        if volumes.len() != ends.len() {
            if let Some(maps) = ends.iter().map(volume_maps).collect::<Option<Vec<_>>>() {
                return merge_rational(&maps, from_volume_maps);
            }
            return match ends.iter().find(|r| matches!(r, Rf::NotAffine(_))) {
                Some(r) => (r.clone(), None, None),
                None => (
                    Rf::NotAffine("branches of different kinds: a unit's exact set is exact".into()),
                    None,
                    None,
                ),
            };
        }
        return match hull(&volumes) {
            Ok((out, aligned)) => (Rf::Volume(out), Some(aligned), misaligned(aligned)),
            Err(r) => (r, Some(false), None),
        };
    }
    let spatials: Vec<[Affine; 2]> = ends
        .iter()
        .filter_map(|r| if let Rf::Spatial(a) = r { Some(*a) } else { None })
        .collect();
    if spatials.len() != ends.len() {
        if let Some(maps) = ends.iter().map(maps_of).collect::<Option<Vec<_>>>() {
            return merge_rational(&maps, from_maps);
        }
        return match ends.iter().find(|r| matches!(r, Rf::NotAffine(_))) {
            Some(r) => (r.clone(), None, None),
            None => (Rf::Features, None, None),
        };
    }
    match hull(&spatials) {
        Ok((out, aligned)) => (Rf::Spatial(out), Some(aligned), misaligned(aligned)),
        Err(r) => (r, Some(false), None),
    }
}

fn misaligned(aligned: bool) -> Option<String> {
    (!aligned).then(|| "branches are centred differently: the union is their hull and may have holes (see an exact position)".to_string())
}

/// The hull of integer-affine maps that move with the same jump on every axis, and whether they
/// share their centres (the hull then has no holes); a refusal when the jumps differ.
fn hull<const N: usize>(maps: &[[Affine; N]]) -> Result<([Affine; N], bool), Rf> {
    let mut out = maps[0];
    let mut aligned = true;
    for s in &maps[1..] {
        for a in 0..N {
            if s[a].jump != out[a].jump {
                return Err(Rf::NotAffine(format!(
                    "branches move with different jumps ({} and {}): their union has no single affine form",
                    out[a].jump, s[a].jump
                )));
            }
            if s[a].lo + s[a].hi != maps[0][a].lo + maps[0][a].hi {
                aligned = false;
            }
            out[a].lo = out[a].lo.min(s[a].lo);
            out[a].hi = out[a].hi.max(s[a].hi);
        }
    }
    Ok((out, aligned))
}

/// The union of branches with rational maps: per axis, the branch whose lower end is lowest
/// (and the one whose upper end is highest) at every output. Ends with one slope differ
/// periodically, so one period of their floors decides for every output.
fn merge_rational<const N: usize>(maps: &[[AxisMap; N]], range: fn([AxisMap; N]) -> Rf) -> (Rf, Option<bool>, Option<String>) {
    let mut out = maps[0];
    let mut aligned = true;
    for a in 0..N {
        let slope = maps[0][a].lo.slope();
        if let Some(m) = maps.iter().find(|m| m[a].lo.slope() != slope || m[a].hi.slope() != slope) {
            let show = |(n, d): (i64, i64)| if d == 1 { n.to_string() } else { format!("{n}/{d}") };
            return (
                Rf::NotAffine(format!(
                    "branches move with different jumps ({} and {}): their union has no single form",
                    show(slope),
                    show(m[a].lo.slope())
                )),
                Some(false),
                None,
            );
        }
        let period = maps.iter().fold(1i64, |p, m| {
            let q = m[a].period();
            p / gcd(p, q) * q
        });
        if period > 1 << 16 {
            return (
                Rf::NotAffine("the branches' floors repeat too rarely to compare".into()),
                Some(false),
                None,
            );
        }
        let lowest = maps
            .iter()
            .position(|m| maps.iter().all(|o| (0..period).all(|i| m[a].lo.at(i) <= o[a].lo.at(i))));
        let highest = maps
            .iter()
            .position(|m| maps.iter().all(|o| (0..period).all(|i| m[a].hi.at(i) >= o[a].hi.at(i))));
        match (lowest, highest) {
            (Some(l), Some(h)) => {
                out[a] = AxisMap {
                    lo: maps[l][a].lo,
                    hi: maps[h][a].hi,
                }
            }
            _ => {
                return (
                    Rf::NotAffine("no single branch bounds the union at every output: it has no single form".into()),
                    Some(false),
                    None,
                )
            }
        }
        let centre = |m: &AxisMap, i: i64| m.lo.at(i) + m.hi.at(i);
        aligned &= maps.iter().all(|m| (0..period).all(|i| centre(&m[a], i) == centre(&maps[0][a], i)));
    }
    let note = (!aligned)
        .then(|| "branches are centred differently: the union is their hull and may have holes (see an exact position)".to_string());
    (range(out), Some(aligned), note)
}

/// The inputs a transposed convolution (`[kernel, stride, padding, dilation]` per spatial axis)
/// reads for the outputs `set`: its group's channels, each spatial axis by [`transposed_back`].
fn transposed_set<const N: usize>(
    node: &Node,
    set: Vec<Product>,
    out_channels: u64,
    groups: u64,
    [kernel, stride, padding, dilation]: [&[u64; N]; 4],
) -> Vec<Product> {
    let (in_per, out_per) = (node.input[0] / groups, out_channels / groups);
    set.into_iter()
        .map(|p| {
            let mut q = vec![group_channels(&p.0[0], in_per, out_per)];
            q.extend((0..N).map(|a| transposed_back(&p.0[a + 1], [kernel[a], stride[a], padding[a], dilation[a]], node.input[a + 1])));
            Product(q)
        })
        .collect()
}

/// The inputs a transposed convolution's outputs `set` read along one axis (`[kernel, stride,
/// padding, dilation]` there, `n` inputs): input x feeds output s*x - p + d*t, so for outputs
/// a..=b and tap t, the inputs ceil((a + p - d*t)/s) ..= floor((b + p - d*t)/s).
fn transposed_back(set: &IntervalSet, [k, s, p, d]: [u64; 4], n: u64) -> IntervalSet {
    let (s, p, d, n) = (s as i128, p as i128, d as i128, n as i128);
    let mut ranges = Vec::new();
    for &(lo, hi) in set.ranges() {
        for t in 0..k as i128 {
            let first = (lo as i128 + p - d * t + s - 1).div_euclid(s).max(0);
            let last = (hi as i128 + p - d * t).div_euclid(s).min(n - 1);
            if first <= last {
                ranges.push((first as u64, last as u64));
            }
        }
    }
    IntervalSet::from_ranges(ranges)
}

pub fn node_type(node: &Node) -> String {
    match node.layer.kind {
        LayerKind::BatchNorm { .. } => match node.input.len() {
            4 => "batchnorm3d",
            3 => "batchnorm2d",
            _ => "batchnorm1d",
        }
        .to_string(),
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

/// The target of a position request and every node it reads (directly or not), in
/// topological order.
pub struct Chain<'g, 'a> {
    pub graph: &'g Graph<'a>,
    pub steps: Vec<usize>,
    pub id: usize,
    pub target: &'g Node<'a>,
}

/// Resolves `layer` (top-level index, dotted path or name; null for the model's output) to the
/// node it names and the nodes leading to it.
/// A layer as a request names it: its top-level index, or a dotted path or name.
/// (Deserialized by kind in the API layer, so that a wrong kind is named.)
#[derive(Clone, Debug, PartialEq, Eq, ToSchema)]
#[serde(untagged)]
pub enum LayerRef {
    Index(u64),
    Name(String),
}

pub fn chain_to<'g, 'a>(graph: &'g Graph<'a>, layer: Option<&LayerRef>, pointer: &str) -> SpecResult<Chain<'g, 'a>> {
    let id: usize = match layer {
        None => *graph
            .outputs
            .first()
            .ok_or_else(|| SpecError::invalid(pointer, "the model has no layers"))?,
        Some(LayerRef::Index(n)) => {
            let i = Some(*n).filter(|i| (*i as usize) < graph.top.len()).ok_or_else(|| {
                SpecError::invalid(
                    pointer,
                    format!(
                        "layer index {n} is out of range: the model has {} top-level layers (0..{})",
                        graph.top.len(),
                        graph.top.len().saturating_sub(1)
                    ),
                )
            })?;
            graph.top[i as usize]
        }
        Some(LayerRef::Name(s)) => match graph.index(s) {
            Some(i) => i,
            None => {
                let named: Vec<usize> = (0..graph.nodes.len())
                    .filter(|&i| graph.nodes[i].layer.name.as_deref() == Some(s.as_str()))
                    .collect();
                match named.len() {
                    1 => named[0],
                    0 => return Err(SpecError::invalid(pointer, format!("no layer has the path or name {s:?}"))),
                    k => {
                        return Err(SpecError::invalid(
                            pointer,
                            format!("{k} layers are named {s:?}; use a path such as {:?}", graph.nodes[named[0]].path),
                        ))
                    }
                }
            }
        },
    };
    Ok(Chain {
        graph,
        steps: graph.ancestors(id),
        id,
        target: &graph.nodes[id],
    })
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
    let n = w.input as i64;
    // positions `a..=b` of the padded input: those inside, and what reflect/replicate padding
    // reads for those outside (the mirrored or the edge rows; zeros read nothing)
    let clip = |a: i64, b: i64| -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let (ia, ib) = (a.max(0), b.min(n - 1));
        if ia <= ib {
            out.push((ia as u64, ib as u64));
        }
        if w.fill != crate::spec::Fill::Zeros {
            for (x, y) in [(a, b.min(-1)), (a.max(n), b)] {
                if x <= y {
                    let (p, q) = (w.fill.source(x, n).expect("mapped"), w.fill.source(y, n).expect("mapped"));
                    out.push((p.min(q) as u64, p.max(q) as u64));
                }
            }
        }
        out
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

/// The input channels a (transposed) convolution's output channels `out` read: all of their
/// groups' (`in_per` inputs, `out_per` outputs a group).
fn group_channels(out: &IntervalSet, in_per: u64, out_per: u64) -> IntervalSet {
    IntervalSet::from_ranges(
        out.ranges()
            .iter()
            .map(|&(a, b)| ((a / out_per) * in_per, (b / out_per + 1) * in_per - 1))
            .collect(),
    )
}

/// The row-major flat indices (runs `first ..= last`, in order) that a box of a tensor of
/// `shape` covers; None past `cap` runs.
fn flat_runs(p: &[IntervalSet], shape: &[u64], cap: usize, runs: &mut Vec<(u64, u64)>, base: u64) -> Option<()> {
    let inner: u64 = shape[1..].iter().product();
    let whole_rest = p[1..].iter().zip(&shape[1..]).all(|(s, &n)| s.ranges() == [(0, n - 1)]);
    if whole_rest {
        runs.extend(
            p[0].ranges()
                .iter()
                .map(|&(lo, hi)| (base + lo * inner, base + (hi + 1) * inner - 1)),
        );
    } else {
        for v in p[0].iter() {
            flat_runs(&p[1..], &shape[1..], cap, runs, base + v * inner)?;
            if runs.len() > cap {
                return None;
            }
        }
    }
    (runs.len() <= cap).then_some(())
}

/// The boxes of a tensor of `shape` that the flat run `a ..= b` covers: a partial first slice,
/// whole slices, a partial last slice, axis by axis (at most two boxes per axis).
fn run_boxes(a: u64, b: u64, shape: &[u64], out: &mut Vec<Product>) {
    if shape.len() == 1 {
        out.push(Product(vec![IntervalSet::range(a, b)]));
        return;
    }
    let inner: u64 = shape[1..].iter().product();
    let (first, last) = (a / inner, b / inner);
    let nest = |outer: u64, lo: u64, hi: u64, out: &mut Vec<Product>| {
        let mut sub = Vec::new();
        run_boxes(lo, hi, &shape[1..], &mut sub);
        out.extend(sub.into_iter().map(|p| {
            let mut axes = vec![IntervalSet::range(outer, outer)];
            axes.extend(p.0);
            Product(axes)
        }));
    };
    if first == last {
        return nest(first, a % inner, b % inner, out);
    }
    let mut whole = (first, last);
    if a % inner != 0 {
        nest(first, a % inner, inner - 1, out);
        whole.0 += 1;
    }
    if b % inner != inner - 1 {
        nest(last, 0, b % inner, out);
        whole.1 -= 1;
    }
    if whole.0 <= whole.1 {
        let mut axes = vec![IntervalSet::range(whole.0, whole.1)];
        axes.extend(shape[1..].iter().map(|&n| IntervalSet::range(0, n - 1)));
        out.push(Product(axes));
    }
}

/// A regrouping of the same elements in row-major order (a flatten, a reshape, an unflatten):
/// the output boxes as flat runs, each run as boxes of the input. Past the box budget, the
/// whole input, flagged approximate.
fn regroup_back(input: &[u64], output: &[u64], set: &[Product], approx: &mut bool) -> Vec<Product> {
    let whole = || vec![Product(input.iter().map(|&n| IntervalSet::range(0, n - 1)).collect())];
    let mut runs = Vec::new();
    for p in set {
        if p.0.iter().any(IntervalSet::is_empty) {
            continue;
        }
        if flat_runs(&p.0, output, MAX_BOXES * 4, &mut runs, 0).is_none() {
            *approx = true;
            return whole();
        }
    }
    let mut out = Vec::new();
    for &(a, b) in IntervalSet::from_ranges(runs).ranges() {
        run_boxes(a, b, input, &mut out);
        if out.len() > MAX_BOXES * 4 {
            *approx = true;
            return whole();
        }
    }
    out
}

/// The input positions of a layer that reads one tensor, seen by the outputs in `set`.
fn back_node(node: &Node, set: Vec<Product>, approx: &mut bool) -> Vec<Product> {
    // above the diagonal a causal mask's output (and the softmax and scales after it) is a
    // constant, -inf or 0, that reads nothing
    let set = match node.above {
        Above::Computed => set,
        Above::NegInf | Above::Zero => set.iter().flat_map(below_diagonal).collect(),
    };
    // a 1-D layer: its 2-D form on boxes with one row
    if let Some(lifted) = node.lifted() {
        let row = IntervalSet::range(0, 0);
        let set = set
            .into_iter()
            .map(|p| Product(vec![p.0[0].clone(), row.clone(), p.0[1].clone()]))
            .collect();
        return back_node(&lifted, set, approx)
            .into_iter()
            .map(|mut p| {
                p.0.remove(1);
                p
            })
            .collect();
    }
    let full = |shape: &[u64]| Product(shape.iter().map(|&n| IntervalSet::range(0, n - 1)).collect());
    if node.input.len() == 2 || matches!(node.layer.kind, LayerKind::Embedding { .. }) {
        if let Some(back) = back_sequence(node, &set) {
            return back;
        }
    }
    match &node.layer.kind {
        LayerKind::Conv3d { out_channels, groups, .. } => {
            let ws = node.volume.expect("conv3d has windows");
            let (in_per, out_per) = (node.input[0] / groups, out_channels / groups);
            set.into_iter()
                .map(|p| {
                    let mut q = vec![group_channels(&p.0[0], in_per, out_per)];
                    q.extend((0..3).map(|a| window_back(&ws[a], &p.0[a + 1])));
                    Product(q)
                })
                .collect()
        }
        LayerKind::MaxPool3d { .. }
        | LayerKind::AvgPool3d { .. }
        | LayerKind::Pad3d { .. }
        | LayerKind::AdaptiveAvgPool3d { .. }
        | LayerKind::AdaptiveMaxPool3d { .. } => set
            .into_iter()
            .map(|p| {
                let mut q = vec![p.0[0].clone()];
                q.extend((0..3).map(|a| match node.volume {
                    Some(ws) => window_back(&ws[a], &p.0[a + 1]),
                    None => adaptive_back(node.input[a + 1], node.output[a + 1], &p.0[a + 1]),
                }));
                Product(q)
            })
            .collect(),
        LayerKind::Conv2d { out_channels, groups, .. } => {
            let [wh, ww] = node.windows.expect("conv has windows");
            let (in_per, out_per) = (node.input[0] / groups, out_channels / groups);
            set.into_iter()
                .map(|p| {
                    let ch = group_channels(&p.0[0], in_per, out_per);
                    Product(vec![ch, window_back(&wh, &p.0[1]), window_back(&ww, &p.0[2])])
                })
                .collect()
        }
        LayerKind::MaxPool2d { .. }
        | LayerKind::AvgPool2d { .. }
        | LayerKind::Pad { .. }
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
        LayerKind::ConvTranspose2d {
            out_channels,
            groups,
            kernel,
            stride,
            padding,
            dilation,
            ..
        } => transposed_set(node, set, *out_channels, *groups, [kernel, stride, padding, dilation]),
        LayerKind::ConvTranspose3d {
            out_channels,
            groups,
            kernel,
            stride,
            padding,
            dilation,
            ..
        } => transposed_set(node, set, *out_channels, *groups, [kernel, stride, padding, dilation]),
        LayerKind::GroupNorm { .. } | LayerKind::InstanceNorm { .. } | LayerKind::LayerNorm { .. } | LayerKind::Softmax { .. } => {
            // the group's channels (features), every position along the coupled axes
            let c = node.coupling().expect("normalizations couple");
            let per = node.input[0] / c.groups;
            set.into_iter()
                .map(|p| {
                    let mut q = vec![group_channels(&p.0[0], per, per)];
                    for a in 1..p.0.len() {
                        q.push(if c.spatial[a - 1] {
                            IntervalSet::range(0, node.input[a] - 1)
                        } else {
                            p.0[a].clone()
                        });
                    }
                    Product(q)
                })
                .collect()
        }
        LayerKind::Mean { .. } => match node.windows {
            // positions: the windows back (every position of an averaged axis)
            Some([wh, ww]) => set
                .into_iter()
                .map(|p| {
                    let (rows, cols) = if node.output.len() == 1 {
                        let one = IntervalSet::range(0, 0);
                        (one.clone(), one)
                    } else {
                        (p.0[1].clone(), p.0[2].clone())
                    };
                    Product(vec![p.0[0].clone(), window_back(&wh, &rows), window_back(&ww, &cols)])
                })
                .collect(),
            // the channels: every one of them
            None => set
                .into_iter()
                .map(|mut p| {
                    p.0[0] = IntervalSet::range(0, node.input[0] - 1);
                    p
                })
                .collect(),
        },
        // (every spatial axis: an image's two, a volume's three)
        LayerKind::Upsample { .. } => {
            let axes = upsample_axes(node.layer, &node.input[1..], &node.output[1..]);
            let axis = |a: usize, set: &IntervalSet| {
                let ax = &axes[a];
                if ax.output >= ax.input {
                    // consecutive outputs read overlapping or adjacent rows: an interval's ends
                    IntervalSet::from_ranges(set.ranges().iter().map(|&(lo, hi)| (ax.rows(lo).0, ax.rows(hi).1)).collect())
                } else {
                    // fewer outputs than inputs: rows may be skipped, output by output
                    IntervalSet::from_ranges(set.ranges().iter().flat_map(|&(lo, hi)| (lo..=hi).map(|o| ax.rows(o))).collect())
                }
            };
            set.into_iter()
                .map(|p| {
                    let mut q = vec![p.0[0].clone()];
                    q.extend((1..p.0.len()).map(|a| axis(a - 1, &p.0[a])));
                    Product(q)
                })
                .collect()
        }
        LayerKind::Linear { .. } => {
            if set.is_empty() {
                set
            } else {
                vec![full(&node.input)]
            }
        }
        LayerKind::BatchNorm { .. } | LayerKind::Activation { .. } | LayerKind::Dropout { .. } | LayerKind::Scale { .. } => set,
        // output position c along the axis is input position start + c
        LayerKind::Narrow { dim, start, .. } => {
            let axis = crate::spec::shape::sample_axis(*dim, node.input.len(), "").expect("checked by shape inference");
            set.into_iter()
                .map(|mut p| {
                    p.0[axis] = IntervalSet::from_ranges(p.0[axis].ranges().iter().map(|&(a, b)| (a + start, b + start)).collect());
                    p
                })
                .collect()
        }
        // output channel o is input channel (o % g) * (C / g) + o / g
        LayerKind::ChannelShuffle { groups } => {
            let per = node.input[0] / groups;
            set.into_iter()
                .map(|mut p| {
                    p.0[0] = IntervalSet::from_ranges(p.0[0].iter().map(|o| (o % groups) * per + o / groups).map(|c| (c, c)).collect());
                    p
                })
                .collect()
        }
        // the same elements regrouped, on any input
        LayerKind::Flatten | LayerKind::FlattenSpatial | LayerKind::Reshape(_) => regroup_back(&node.input, &node.output, &set, approx),
        // output axis a is input axis perm[a]
        LayerKind::Transpose(_) => {
            let perm = node.perm();
            set.into_iter()
                .map(|p| {
                    let mut q = p.0.clone();
                    for (a, &from) in perm.iter().enumerate() {
                        q[from] = p.0[a].clone();
                    }
                    Product(q)
                })
                .collect()
        }
        // (its outputs above the diagonal are gone from the set: see above)
        LayerKind::CausalMask => set,
        LayerKind::SelectToken { index } => set
            .into_iter()
            .map(|p| Product(vec![IntervalSet::range(*index, *index), p.0[0].clone()]))
            .collect(),
        LayerKind::Parameter { .. } => Vec::new(),
        // read sequences, answered by back_sequence
        LayerKind::Embedding { .. } | LayerKind::MultiheadAttention { .. } | LayerKind::Recurrent(_) => {
            if set.is_empty() {
                set
            } else {
                vec![full(&node.input)]
            }
        }
        crate::spec::merges!() => {
            unreachable!("merge nodes are split by back_merge")
        }
    }
}

/// The elements `(.., i, j)` of a product with `j <= i` on its last two axes (what a causal
/// mask's outputs read): whole blocks where every column is at or below the row, one row at a
/// time along the diagonal.
fn below_diagonal(p: &Product) -> Vec<Product> {
    let n = p.0.len();
    let with = |rows: IntervalSet, cols: IntervalSet| {
        let mut q = p.0.clone();
        q[n - 2] = rows;
        q[n - 1] = cols;
        Product(q)
    };
    let mut out = Vec::new();
    for &(r0, r1) in p.0[n - 2].ranges() {
        for &(c0, c1) in p.0[n - 1].ranges() {
            // rows from c1 on read all of c0..=c1
            if r1 >= c1 {
                out.push(with(IntervalSet::range(r0.max(c1), r1), IntervalSet::range(c0, c1)));
            }
            // rows c0..c1 (inside r0..=r1) read c0..=row
            for r in r0.max(c0)..=r1.min(c1.saturating_sub(1)) {
                if r < c1 {
                    out.push(with(IntervalSet::range(r, r), IntervalSet::range(c0, r)));
                }
            }
        }
    }
    out
}

/// The input of a layer reading a sequence `[L, D]` (or, for an embedding, token ids `[L]`)
/// seen by the outputs in `set`; None where the layer treats it as any tensor (element-wise).
fn back_sequence(node: &Node, set: &[Product]) -> Option<Vec<Product>> {
    let all = |n: u64| IntervalSet::range(0, n - 1);
    let tokens = node.input[0];
    let features = *node.input.last().expect("a sequence has axes");
    // every token of the union's hull up to (prefix) or from (suffix) the outputs' tokens
    let reach = |t: &IntervalSet, prefix: bool, suffix: bool| -> IntervalSet {
        match (t.min(), t.max()) {
            (Some(lo), Some(hi)) => IntervalSet::range(if prefix { 0 } else { lo }, if suffix { tokens - 1 } else { hi }),
            _ => IntervalSet::empty(),
        }
    };
    let each = |f: &dyn Fn(&Product) -> Vec<Product>| -> Vec<Product> { set.iter().flat_map(f).collect() };
    Some(match &node.layer.kind {
        LayerKind::Embedding { .. } => each(&|p| vec![Product(vec![p.0[0].clone()])]),
        LayerKind::Linear { .. } => each(&|p| vec![Product(vec![p.0[0].clone(), all(features)])]),
        LayerKind::LayerNorm { shape, .. } if shape.len() == 1 => each(&|p| vec![Product(vec![p.0[0].clone(), all(features)])]),
        LayerKind::LayerNorm { .. } => each(&|_| vec![Product(vec![all(tokens), all(features)])]),
        LayerKind::Softmax { dim } => {
            let axis = crate::spec::shape::sample_axis(*dim, 2, "").expect("checked by shape inference");
            each(&|p| {
                let mut q = p.clone();
                q.0[axis] = all(node.input[axis]);
                vec![q]
            })
        }
        LayerKind::MultiheadAttention { causal, .. } => each(&|p| vec![Product(vec![reach(&p.0[0], true, !causal), all(features)])]),
        LayerKind::Recurrent(r) => each(&|p| {
            if !r.bidirectional {
                return vec![Product(vec![reach(&p.0[0], true, false), all(features)])];
            }
            if r.layers > 1 {
                return vec![Product(vec![all(tokens), all(features)])];
            }
            // one bidirectional layer: the first hidden_size features run forwards (a prefix),
            // the rest backwards (a suffix)
            let mut out = Vec::new();
            if !p.0[1].window(0, r.hidden).is_empty() {
                out.push(Product(vec![reach(&p.0[0], true, false), all(features)]));
            }
            if !p.0[1].window(r.hidden, r.hidden).is_empty() {
                out.push(Product(vec![reach(&p.0[0], false, true), all(features)]));
            }
            out
        }),
        // over the tokens: [D] (or [1, D] with keepdim) reads every token of its features
        LayerKind::Mean { .. } => each(&|p| vec![Product(vec![all(tokens), p.0[p.0.len() - 1].clone()])]),
        _ => return None,
    })
}

/// The positions of input `k` of a merge node seen by the outputs in `set`: a broadcast axis
/// (size 1 in the input) maps every output position to 0; a concatenation passes on its part.
fn back_merge(node: &Node, merge: Merge, k: usize, set: &[Product], zero_above: &[bool]) -> Vec<Product> {
    let edge = &node.inputs[k];
    let shape = &edge.shape;
    let all = |n: u64| IntervalSet::range(0, n - 1);
    match merge {
        // output (i, j): row i of the first operand, column j of the second
        // query i reads its own row of q (every feature), and the keys 0..i under a causal mask
        // (every key without one): every feature of those of k, column j of those of v
        Merge::Attention => set
            .iter()
            .map(|p| {
                let n = shape.len();
                let mut q = p.clone();
                let keys = match node.layer.kind {
                    LayerKind::ScaledDotProductAttention { causal: true, .. } => p.0[n - 2]
                        .max()
                        .map_or_else(IntervalSet::empty, |i| IntervalSet::range(0, i.min(shape[n - 2] - 1))),
                    _ => all(shape[n - 2]),
                };
                match k {
                    0 => q.0[n - 1] = all(shape[n - 1]),
                    1 => {
                        q.0[n - 2] = keys;
                        q.0[n - 1] = all(shape[n - 1]);
                    }
                    _ => q.0[n - 2] = keys,
                }
                q
            })
            .collect(),
        // (a batch of matrices: the same matrix of each operand). Where the other operand is 0
        // above its diagonal (a causal attention's weights), output (i, j) reads only the k
        // that meet a non-zero: rows k <= i of the second operand, columns k >= j of the first.
        Merge::MatMul => set
            .iter()
            .filter_map(|p| {
                let mut q = p.clone();
                let n = shape.len();
                let (axis, inner) = if k == 0 { (n - 1, shape[n - 1]) } else { (n - 2, shape[n - 2]) };
                q.0[axis] = match (k, zero_above[1 - k]) {
                    (0, true) => IntervalSet::range(Some(p.0[n - 1].min()?).filter(|&j| j < inner)?, inner - 1),
                    (_, true) => IntervalSet::range(0, p.0[n - 2].max()?.min(inner - 1)),
                    _ => all(inner),
                };
                Some(q)
            })
            .collect(),
        Merge::Add | Merge::Mul => set
            .iter()
            .map(|p| {
                Product(
                    p.0.iter()
                        .enumerate()
                        .map(|(a, s)| {
                            if edge.broadcast(&node.output, a) {
                                IntervalSet::range(0, 0)
                            } else {
                                s.clone()
                            }
                        })
                        .collect(),
                )
            })
            .collect(),
        Merge::Cat(axis) => {
            let offset: u64 = node.inputs[..k].iter().map(|e| e.shape[axis]).sum();
            set.iter()
                .map(|p| {
                    let mut q = p.clone();
                    q.0[axis] = p.0[axis].window(offset, shape[axis]);
                    q
                })
                .filter(|q| !q.0[axis].is_empty())
                .collect()
        }
    }
}

/// Exact input dependence of the output units `index` (spatial `[i, j]` or feature `[k]`,
/// zero-based) of the chain's target, over output `channel` or all channels.
pub fn dependence(chain: &Chain, index: &[u64], channel: Option<u64>) -> DependenceSet {
    let out = &chain.target.output;
    let unit = if out.len() >= 3 {
        // an image's row and column, a volume's slice too
        let ch = match channel {
            Some(c) => IntervalSet::range(c, c),
            None => IntervalSet::range(0, out[0] - 1),
        };
        Product(std::iter::once(ch).chain(index.iter().map(|&i| IntervalSet::range(i, i))).collect())
    } else if out.len() == 2 && chain.target.signal {
        // a signal: position `index[0]`, channel `channel` or every channel
        let ch = match channel {
            Some(c) => IntervalSet::range(c, c),
            None => IntervalSet::range(0, out[0] - 1),
        };
        Product(vec![ch, IntervalSet::range(index[0], index[0])])
    } else if out.len() == 2 {
        // a sequence: token `index[0]`, feature `channel` or every feature
        let f = match channel {
            Some(c) => IntervalSet::range(c, c),
            None => IntervalSet::range(0, out[1] - 1),
        };
        Product(vec![IntervalSet::range(index[0], index[0]), f])
    } else {
        Product(vec![IntervalSet::range(index[0], index[0])])
    };
    back_to_input(chain.graph, &chain.steps, chain.id, unit)
}

/// The input elements the elements `unit` of node `id`'s output depend on, back through `steps`
/// (`id` and the nodes it reads, in topological order).
fn back_to_input(graph: &Graph, steps: &[usize], id: usize, unit: Product) -> DependenceSet {
    let mut approx = false;
    let mut sets: Vec<Vec<Product>> = vec![Vec::new(); graph.nodes.len()];
    sets[id] = vec![unit];
    let mut input = Vec::new();
    for &i in steps.iter().rev() {
        let set = std::mem::take(&mut sets[i]);
        if set.is_empty() {
            continue;
        }
        let mut s = DependenceSet::new(set);
        approx |= s.approximate;
        let set = std::mem::take(&mut s.boxes);
        let node = &graph.nodes[i];
        let mut pass = |from: Option<usize>, b: Vec<Product>| match from {
            Some(f) if sets[f].is_empty() => sets[f] = b,
            Some(f) => sets[f].extend(b),
            None => input.extend(b),
        };
        match node.merge {
            Some(m) => {
                let zeros: Vec<bool> = node.inputs.iter().map(|e| graph.zero_above(e)).collect();
                for (k, e) in node.inputs.iter().enumerate() {
                    pass(e.from, back_merge(node, m, k, &set, &zeros));
                }
            }
            // a parameter reads nothing
            None if node.inputs.is_empty() => {}
            // cross-attention: the query's tokens (every feature), every key and value
            None if node.inputs.len() > 1 => {
                let features = IntervalSet::range(0, node.input[1] - 1);
                let query = set.iter().map(|p| Product(vec![p.0[0].clone(), features.clone()])).collect();
                pass(node.inputs[0].from, query);
                for e in &node.inputs[1..] {
                    let all = e.shape.iter().map(|&n| IntervalSet::range(0, n - 1)).collect();
                    pass(e.from, vec![Product(all)]);
                }
            }
            None => pass(node.inputs[0].from, back_node(node, set, &mut approx)),
        }
    }
    let mut set = DependenceSet::new(input);
    set.approximate |= approx;
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{infer, parse_model, SpecLimits};
    use serde_json::json;

    /// The part of a product on and below the diagonal of its last two axes, against every
    /// element: 600 seeded products of one to three axes whose last two hold up to three runs.
    #[test]
    fn below_diagonal_equals_brute_force() {
        use crate::analysis::rng::Rng;
        let mut rng = Rng::new(20261208);
        let below = |n: u64, rng: &mut Rng| rng.next_u64() % n;
        for case in 0..600 {
            let lead = below(2, &mut rng) as usize;
            let mut axes = Vec::new();
            for a in 0..lead + 2 {
                let runs = 1 + below(if a < lead { 1 } else { 3 }, &mut rng);
                let ranges = (0..runs)
                    .map(|_| {
                        let lo = below(9, &mut rng);
                        (lo, lo + below(4, &mut rng))
                    })
                    .collect();
                axes.push(IntervalSet::from_ranges(ranges));
            }
            let p = Product(axes);
            let n = p.0.len();
            let got = below_diagonal(&p);
            let inside = |q: &Product, e: &[u64]| q.0.iter().zip(e).all(|(s, &x)| s.iter().any(|y| y == x));
            let mut want = 0;
            for i in p.0[n - 2].iter() {
                for j in p.0[n - 1].iter() {
                    let mut e: Vec<u64> = p.0[..n - 2].iter().map(|s| s.min().unwrap()).collect();
                    e.extend([i, j]);
                    let hits = got.iter().filter(|q| inside(q, &e)).count();
                    assert_eq!(hits, usize::from(j <= i), "case {case}: {p:?} at {e:?}: {got:?}");
                    want += usize::from(j <= i);
                }
            }
            let count: u64 = got.iter().map(|q| q.0[n - 2].count() * q.0[n - 1].count()).sum();
            assert_eq!(count as usize, want, "case {case}: {p:?}: {got:?}");
        }
    }

    /// `covers` against brute force: 600 seeded unions of 1-6 random boxes (each axis a union of
    /// up to 3 runs) in shapes of 1-3 axes of 1-6 positions, every element checked; boxes that
    /// tile the shape in pieces (not one box) are drawn too.
    #[test]
    fn covers_equals_brute_force() {
        use crate::analysis::rng::Rng;
        let mut rng = Rng::new(20261207);
        let below = |n: u64, rng: &mut Rng| rng.next_u64() % n;
        let (mut full, mut partial) = (0, 0);
        for case in 0..600 {
            let dims = 1 + below(3, &mut rng) as usize;
            let shape: Vec<u64> = (0..dims).map(|_| 1 + below(6, &mut rng)).collect();
            let mut boxes = Vec::new();
            if case % 4 == 0 {
                // a tiling in pieces: axis 0 cut after `cut`, the far side split again along the
                // last axis (along axis 0 itself for one axis)
                let whole: Vec<IntervalSet> = shape.iter().map(|&n| IntervalSet::range(0, n - 1)).collect();
                let cut = below(shape[0], &mut rng);
                let mut near = whole.clone();
                near[0] = IntervalSet::range(0, cut);
                boxes.push(Product(near));
                if cut + 1 < shape[0] {
                    let (last, from) = if dims == 1 { (0, cut + 1) } else { (dims - 1, 0) };
                    let split = from + below(shape[last] - from, &mut rng);
                    for (lo, hi) in [(from, split), (split + 1, shape[last] - 1)]
                        .into_iter()
                        .filter(|(lo, hi)| lo <= hi)
                    {
                        let mut far = whole.clone();
                        far[0] = IntervalSet::range(cut + 1, shape[0] - 1);
                        far[last] = IntervalSet::range(lo, hi);
                        boxes.push(Product(far));
                    }
                }
            } else {
                for _ in 0..1 + below(6, &mut rng) {
                    let axes = shape
                        .iter()
                        .map(|&n| {
                            let runs: Vec<(u64, u64)> = (0..1 + below(3, &mut rng))
                                .map(|_| {
                                    let a = below(n, &mut rng);
                                    (a, a + below(n - a, &mut rng))
                                })
                                .collect();
                            IntervalSet::from_ranges(runs)
                        })
                        .collect();
                    boxes.push(Product(axes));
                }
            }
            let total: u64 = shape.iter().product();
            let held = (0..total).all(|mut flat| {
                let mut at = vec![0; dims];
                for a in (0..dims).rev() {
                    at[a] = flat % shape[a];
                    flat /= shape[a];
                }
                boxes
                    .iter()
                    .any(|b: &Product| (0..dims).all(|a| !b.0[a].window(at[a], 1).is_empty()))
            });
            let refs: Vec<&Product> = boxes.iter().collect();
            assert_eq!(covers(&refs, &shape, 0), held, "case {case}: {shape:?} {boxes:?}");
            if held {
                full += 1
            } else {
                partial += 1
            }
        }
        assert!(full > 100 && partial > 100, "{full} covering, {partial} not");
    }

    /// A regrouping's exact sets against brute force: every element of random boxes (unions of
    /// interval sets per axis) of a random output shape, mapped through its flat index to the
    /// input shape, 500 seeded cases.
    #[test]
    fn regrouped_sets_are_the_elements_moved_by_hand() {
        use crate::analysis::rng::Rng;
        use std::collections::BTreeSet;
        let mut rng = Rng::new(20261128);
        let mut draw = |n: u64| rng.next_u64() % n;
        let factor = |total: u64, draw: &mut dyn FnMut(u64) -> u64| -> Vec<u64> {
            // a random shape of 1 to 3 axes with `total` elements
            let divisors: Vec<u64> = (1..=total).filter(|d| total % d == 0).collect();
            match draw(3) {
                0 => vec![total],
                1 => {
                    let a = divisors[draw(divisors.len() as u64) as usize];
                    vec![a, total / a]
                }
                _ => {
                    let a = divisors[draw(divisors.len() as u64) as usize];
                    let rest: Vec<u64> = (1..=total / a).filter(|d| (total / a) % d == 0).collect();
                    let b = rest[draw(rest.len() as u64) as usize];
                    vec![a, b, total / a / b]
                }
            }
        };
        for case in 0..500 {
            let total = 1 + draw(96);
            let (input, output) = (factor(total, &mut draw), factor(total, &mut draw));
            let boxes: Vec<Product> = (0..1 + draw(3))
                .map(|_| {
                    Product(
                        output
                            .iter()
                            .map(|&n| {
                                let ranges = (0..1 + draw(2))
                                    .map(|_| {
                                        let a = draw(n);
                                        (a, a + draw(n - a))
                                    })
                                    .collect();
                                IntervalSet::from_ranges(ranges)
                            })
                            .collect(),
                    )
                })
                .collect();
            // the flat indices of every element of some boxes of a tensor of `shape`
            let elements = |boxes: &[Product], shape: &[u64]| -> BTreeSet<u64> {
                let mut out = BTreeSet::new();
                for p in boxes {
                    let mut idx: Vec<Vec<u64>> = vec![Vec::new()];
                    for axis in &p.0 {
                        idx = idx
                            .into_iter()
                            .flat_map(|pre| axis.iter().map(move |v| [pre.clone(), vec![v]].concat()))
                            .collect();
                    }
                    out.extend(idx.iter().map(|i| i.iter().zip(shape).fold(0, |f, (&i, &n)| f * n + i)));
                }
                out
            };
            let want = elements(&boxes, &output);
            let mut approx = false;
            let got = elements(&regroup_back(&input, &output, &boxes, &mut approx), &input);
            assert!(!approx, "case {case}");
            assert_eq!(got, want, "case {case}: {output:?} -> {input:?}, boxes {boxes:?}");
        }
    }

    fn table(spec: serde_json::Value, base: u64) -> Vec<LayerRf> {
        let spec = parse_model(&spec, "", &SpecLimits::default()).unwrap();
        let g = infer(&spec, "").unwrap();
        layer_table(&g, &node_rfs(&g), base)
    }

    #[test]
    fn vgg_stem_matches_the_course_in_one_based_terms() {
        let t = table(json!({"preset": "vgg_stem"}), 1);
        let text: Vec<&str> = t
            .iter()
            .map(|r| r.receptive_field.as_ref().unwrap().height.as_ref().unwrap().text.as_str())
            .collect();
        assert_eq!(text[0], "i-1 <= m <= i+1");
        assert_eq!(text[2], "i-2 <= m <= i+2");
        assert_eq!(text[4], "2i-3 <= m <= 2i+2");
        assert_eq!(text[7], "2i-7 <= m <= 2i+6");
        assert_eq!(text[9], "4i-9 <= m <= 4i+6");
        assert_eq!(
            t[9].receptive_field.as_ref().unwrap().width.as_ref().unwrap().text,
            "4j-9 <= n <= 4j+6"
        );
        assert_eq!(t[9].receptive_field.as_ref().unwrap().height.as_ref().unwrap().size, 16);
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
        let h = t[2].receptive_field.as_ref().unwrap().height.as_ref().unwrap();
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
        let chain = chain_to(&g, None, "").unwrap();
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
        assert_eq!(t[0].kind, RfKind::NotAffine);
        for k in [
            RfKind::Spatial,
            RfKind::Rational,
            RfKind::Features,
            RfKind::Global,
            RfKind::NotAffine,
            RfKind::Constant,
            RfKind::Causal,
            RfKind::Anticausal,
            RfKind::Token,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }
}
