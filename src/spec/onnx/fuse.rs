//! Layers that an exporter writes as several ONNX ops, read back as the one layer:
//! - `x * sigmoid(x)` is `nn.SiLU`;
//! - `x * 0.5 * (1 + erf(x / sqrt(2)))` is `nn.GELU` (opsets before 20 have no Gelu op);
//! - `x * tanh(softplus(x))` is `nn.Mish` (opsets before 18);
//! - `Reshape(x, [0, G, -1])`, `InstanceNormalization` with ones and zeros, `Reshape` back, then
//!   `Mul` and `Add` by per-channel constants is `nn.GroupNorm(G, C)` (opsets before 18).
//!
//! - every op an exporter writes inside one `nn.MultiheadAttention` module (the dynamo
//!   exporter's metadata or the TorchScript exporter's scopes name the module; the module owns
//!   `<module>.out_proj.weight`, or its ops hold one softmax and in-projections by constant
//!   `[E, c*E]` blocks) is that attention layer: self-attention from one packed projection,
//!   cross-attention from a query's and keys-and-values' (or keys' and values') projections.
//!
//! Each pattern must be a chain whose inner tensors nobody else reads; otherwise the ops stay
//! separate (and are refused if they cannot be read one by one).
use super::{Attrs, Constant};
use crate::spec::onnx::proto::NodeProto;
use std::collections::HashMap;
use std::rc::Rc;

pub(super) enum Layer {
    /// `nn.MultiheadAttention(embed_dim, heads)` as self-attention, its weights in PyTorch's
    /// layout (`in_proj_weight` [3E, E], `out_proj.weight` [E, E]) and names.
    Attention {
        module: String,
        heads: u64,
        bias: bool,
        causal: bool,
        need_weights: bool,
        weights: Vec<(&'static str, std::sync::Arc<crate::spec::LazyValues>)>,
        /// The module's output is left time-major `[L, batch, E]`: the exporter cancelled its last
        /// Transpose against a recurrent layer's first.
        time_major: bool,
    },
    /// `nn.RNN` as the dynamo exporter unrolls it, batch first, its weights in PyTorch's names.
    UnrolledRnn {
        module: String,
        /// The module reads (`time_major_in`) or leaves (`time_major_out`) its sequence
        /// time-major `[L, batch, D]`: the exporter cancelled its first or last Transpose against
        /// the one of the attention or recurrent layer next to it.
        time_major_in: bool,
        time_major_out: bool,
        relu: bool,
        input_size: u64,
        hidden: u64,
        layers: u64,
        bidirectional: bool,
        bias: bool,
        weights: Vec<(String, std::sync::Arc<crate::spec::LazyValues>)>,
    },
    /// `F.scaled_dot_product_attention(q, k, v, is_causal, scale)` as both exporters decompose
    /// it (q and k^T each multiplied by sqrt(scale), MatMul, the causal mask added, Softmax,
    /// MatMul by v); `scale` None: 1/sqrt(E).
    Sdpa {
        causal: bool,
        scale: f64,
        /// k is read as the `[batch, L, H, d]` before its transpose to the heads (the
        /// TorchScript exporter dropped the `Transpose(0, 2, 1, 3)` the call was given, when
        /// nothing else read it): a permute of it, named after this Transpose of the file.
        k_heads_last: Option<(NodeProto, usize)>,
    },
    Silu,
    Gelu,
    Mish,
    /// ShuffleNet's `channel_shuffle`: x.view(b, g, C/g, ...).transpose(1, 2).view(b, C, ...).
    ChannelShuffle {
        groups: u64,
    },
    GroupNorm {
        groups: u64,
        eps: f64,
        weight: Option<Rc<Constant>>,
        bias: Option<Rc<Constant>>,
    },
}

/// A pattern found: its first node (where the layer is emitted, reading `input`), the nodes it
/// absorbs, and the tensor its last node writes.
pub(super) struct Fusion {
    pub layer: Layer,
    pub input: String,
    /// More tensors the layer reads after `input`: a cross-attention's keys and values (or its
    /// keys-and-values tensor).
    pub extra: Vec<String>,
    pub output: String,
    pub absorbed: Vec<usize>,
}

struct Graph<'a> {
    nodes: &'a [NodeProto],
    consumers: HashMap<&'a str, Vec<usize>>,
    producer: HashMap<&'a str, usize>,
    constants: &'a HashMap<String, Rc<Constant>>,
}

impl<'a> Graph<'a> {
    /// The one node that reads node `i`'s output, with its op type.
    fn only_reader(&self, i: usize, op: &str) -> Option<usize> {
        match self.consumers.get(self.nodes[i].output.first()?.as_str())?.as_slice() {
            [j] if self.nodes.get(*j).is_some_and(|n| n.op_type() == op) => Some(*j),
            _ => None,
        }
    }

    /// The constant among node `j`'s two inputs and the other input's name.
    fn with_constant(&self, j: usize, other_than: &str) -> Option<(Rc<Constant>, &'a str)> {
        let n = &self.nodes[j];
        let [a, b] = n.input.as_slice() else { return None };
        let (c, x) = if a == other_than { (b, a) } else { (a, b) };
        Some((self.constants.get(c.as_str())?.clone(), x.as_str()))
    }

    /// The edges of a group of ops: the tensors its ops write (`inside`), the tensors of the
    /// model it reads (not its own, not constants), and the ones it writes that an op outside
    /// it or the model's output reads (a constant the group computes, such as a causal mask
    /// the exporter shares between modules, may be read outside).
    fn boundary(&self, members: &[usize]) -> (std::collections::HashSet<&'a str>, Vec<&'a str>, Vec<&'a str>) {
        let inside: std::collections::HashSet<&'a str> = members
            .iter()
            .flat_map(|&i| self.nodes[i].output.iter().map(String::as_str))
            .collect();
        let mut reads: Vec<&'a str> = members
            .iter()
            .flat_map(|&i| self.nodes[i].input.iter().map(String::as_str))
            .filter(|t| !t.is_empty() && !inside.contains(t) && !self.constants.contains_key(*t))
            .collect();
        reads.sort_unstable();
        reads.dedup();
        let writes: Vec<&'a str> = inside
            .iter()
            .copied()
            .filter(|t| !self.constants.contains_key(*t))
            .filter(|t| self.consumers.get(t).is_some_and(|c| c.iter().any(|j| !members.contains(j))))
            .collect();
        (inside, reads, writes)
    }

    /// The file's ops grouped by the module `module_of` names for each (ops it names none left
    /// out), in the modules' order.
    fn by_module(&self, module_of: impl Fn(&NodeProto) -> Option<String>) -> std::collections::BTreeMap<String, Vec<usize>> {
        let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(m) = module_of(n) {
                groups.entry(m).or_default().push(i);
            }
        }
        groups
    }

    fn scalar(&self, t: &str) -> Option<f64> {
        let c = self.constants.get(t)?;
        (c.values.len() == 1).then(|| c.values[0])
    }

    /// The ops of each `nn.MultiheadAttention` module (a subclass included), grouped by the
    /// module the dynamo exporter's metadata or the TorchScript exporter's scope names, as one
    /// self-attention layer at the group's first op: the group must read one tensor from outside
    /// and write one that is read outside.
    fn attention(&self) -> Vec<(usize, Fusion)> {
        let owns = |m: &str| !m.is_empty() && self.constants.contains_key(&format!("{m}.out_proj.weight"));
        // the dynamo exporter splits a cross-attention's in_proj_weight and in_proj_bias at run
        // time, in ops without metadata: they belong to the module that owns the tensor
        let split_of = |n: &NodeProto| {
            let t = n.input.first()?;
            let m = t.strip_suffix(".in_proj_weight").or_else(|| t.strip_suffix(".in_proj_bias"))?;
            (n.op_type() == "Split" && owns(m)).then(|| m.to_string())
        };
        let module_of = |n: &NodeProto| match super::meta(n, "pkg.torch.onnx.name_scopes") {
            Some(scopes) => super::python_list(scopes).into_iter().rev().find(|m| owns(m)).map(str::to_string),
            // else the TorchScript exporter's scopes (`/encoder/layers.0/self_attn/MatMul`): the
            // module that ran the op (attention runs functionally inside its module; a module
            // without bias has no named weights, so each scope is a candidate, and
            // attention_group keeps those that are attention)
            None => split_of(n).or_else(|| {
                n.name()
                    .strip_prefix('/')
                    .and_then(super::legacy_scope)
                    .map(|(path, _)| path)
                    .filter(|p| !p.is_empty())
            }),
        };
        self.by_module(module_of)
            .into_iter()
            .filter_map(|(m, members)| self.attention_group(m, members))
            .collect()
    }

    fn attention_group(&self, module: String, members: Vec<usize>) -> Option<(usize, Fusion)> {
        use crate::spec::LazyValues;
        use std::sync::Arc;
        let (inside, reads, writes) = self.boundary(&members);
        let member = |j: &usize| members.contains(j);
        let [output] = writes.as_slice() else {
            return None;
        };
        let ops: Vec<&NodeProto> = members.iter().map(|&i| &self.nodes[i]).collect();
        // where a tensor the group reads comes from: followed back through the group's own
        // views (the exporter transposes a batch-first sequence to time-major first) to a tensor
        // of the model or a learned one (a cross-attention's latent queries or memory)
        let origin = |mut t: &'a str| -> Option<&'a str> {
            for _ in 0..16 {
                if !inside.contains(t) {
                    return Some(t);
                }
                let n = &self.nodes[*self.producer.get(t)?];
                if !matches!(n.op_type(), "Transpose" | "Reshape" | "Unsqueeze" | "Squeeze" | "Identity") {
                    return None;
                }
                t = n.input.first()?.as_str();
            }
            None
        };
        // the in-projections: x @ W^T by a constant [E, c*E] (c = 3: q, k and v of one tensor,
        // self-attention; c = 1 and 2, or three times 1: a cross-attention's query and its keys
        // and values), in the order the module computes them (q first), each maybe followed by
        // its bias [c*E] added (found by its place: the exporter keeps one copy of equal tensors,
        // so two modules' zero biases may be one initializer under the first one's name)
        struct Projection<'s> {
            /// The tensor it reads, and the one it writes.
            source: &'s str,
            out: &'s str,
            /// Its output is `width` times E wide (3: q, k and v; 2: k and v; 1).
            width: i64,
            /// Its constant `[E, width*E]` (W^T), where the file has one.
            weight: Option<Rc<Constant>>,
        }
        let mut projections: Vec<Projection> = ops
            .iter()
            .filter(|n| n.op_type() == "MatMul")
            .filter_map(|n| {
                let w = self.constants.get(n.input.get(1)?.as_str())?;
                let [a, b] = w.dims[..] else { return None };
                (a > 0 && b % a == 0 && (1..=3).contains(&(b / a))).then_some(())?;
                Some(Projection {
                    source: origin(n.input.first()?.as_str())?,
                    out: n.output.first()?.as_str(),
                    width: b / a,
                    weight: Some(w.clone()),
                })
            })
            .collect();
        // (the dynamo exporter's cross-attention: each projection a MatMul by the transpose of
        // one block of `<module>.in_proj_weight`, split at run time; the blocks in q, k, v order)
        let named_in = self.constants.get(&format!("{module}.in_proj_weight"));
        let split_at_run_time = projections.is_empty();
        let e = if split_at_run_time {
            let w = named_in?;
            let [rows, e] = w.dims[..] else { return None };
            if rows != 3 * e || !(1..=1 << 20).contains(&e) {
                return None;
            }
            let mut found: Vec<(usize, Projection)> = Vec::new();
            for n in ops.iter().filter(|n| n.op_type() == "MatMul") {
                let mut t = n.input.get(1)?.as_str();
                while let Some(p) = self.producer.get(t).map(|&p| &self.nodes[p]).filter(|p| p.op_type() == "Transpose") {
                    t = p.input.first()?.as_str();
                }
                let Some(split) = self
                    .producer
                    .get(t)
                    .map(|&p| &self.nodes[p])
                    .filter(|p| p.op_type() == "Split" && p.input.first() == Some(&format!("{module}.in_proj_weight")))
                else {
                    continue;
                };
                let chunk = split.output.iter().position(|o| o == t)?;
                let sizes: Vec<i64> = match split.input.get(1).and_then(|s| self.constants.get(s.as_str())) {
                    Some(c) => c.values.iter().map(|&v| v as i64).collect(),
                    None => super::Attrs(split)
                        .ints("split")
                        .unwrap_or_else(|| vec![rows / split.output.len() as i64; split.output.len()]),
                };
                let projection = Projection {
                    source: origin(n.input.first()?.as_str())?,
                    out: n.output.first()?.as_str(),
                    width: *sizes.get(chunk)? / e,
                    weight: None,
                };
                found.push((chunk, projection));
            }
            found.sort_by_key(|f| f.0);
            projections = found.into_iter().map(|(_, p)| p).collect();
            e
        } else {
            projections[0].weight.as_ref()?.dims[0]
        };
        let widths: Vec<i64> = projections.iter().map(|p| p.width).collect();
        if !(1..=1 << 20).contains(&e)
            || projections.iter().any(|p| p.weight.as_ref().is_some_and(|w| w.dims[0] != e))
            || !matches!(widths[..], [3] | [1, 2] | [1, 1, 1])
            || ops.iter().filter(|n| n.op_type() == "Softmax").count() != 1
        {
            return None;
        }
        // (the module's own out_proj.weight, where the file names it, must agree)
        if self
            .constants
            .get(&format!("{module}.out_proj.weight"))
            .is_some_and(|c| c.dims != [e, e])
        {
            return None;
        }
        // the group reads the projections' sources and nothing else
        let sources: Vec<&str> = projections.iter().map(|p| p.source).collect();
        if reads.iter().any(|t| !sources.contains(t)) {
            return None;
        }
        let (input, extra) = (sources[0], sources[1..].iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // the weight in PyTorch's layout: the named tensor, or the blocks transposed back
        let in_w: Arc<LazyValues> = match (split_at_run_time, &projections[..]) {
            (true, _) => named_in?.values.clone(),
            (false, [p]) => Arc::new(p.weight.as_ref()?.values.transposed(e as usize, 3 * e as usize)),
            (false, _) => {
                let mut rows: Vec<f64> = Vec::with_capacity(3 * (e * e) as usize);
                for p in &projections {
                    rows.extend_from_slice(&p.weight.as_ref()?.values.transposed(e as usize, (p.width * e) as usize));
                }
                Arc::new(rows.into())
            }
        };
        let biases: Vec<Option<Rc<Constant>>> = projections
            .iter()
            .map(|p| {
                ops.iter().find_map(|n| {
                    if n.op_type() != "Add" || !n.input.iter().any(|t| t == p.out) {
                        return None;
                    }
                    n.input
                        .iter()
                        .filter_map(|t| self.constants.get(t.as_str()))
                        .find(|c| c.dims == [p.width * e])
                        .cloned()
                })
            })
            .collect();
        let in_b: Option<Arc<LazyValues>> = match &biases[..] {
            _ if split_at_run_time => self.constants.get(&format!("{module}.in_proj_bias")).map(|b| b.values.clone()),
            [Some(b)] => Some(b.values.clone()),
            all if all.iter().all(Option::is_some) => Some(Arc::new(
                all.iter()
                    .flatten()
                    .flat_map(|b| b.values.iter().copied())
                    .collect::<Vec<f64>>()
                    .into(),
            )),
            all if all.iter().all(Option::is_none) => None,
            _ => return None,
        };
        // what the projections write (and their biases added): viewed per head further on
        let projected: Vec<&str> = projections
            .iter()
            .map(|p| p.out)
            .chain(
                ops.iter()
                    .filter(|n| n.op_type() == "Add" && n.input.iter().any(|t| projections.iter().any(|p| p.out == t)))
                    .filter_map(|n| n.output.first().map(String::as_str)),
            )
            .collect();
        // the output projection: Gemm(x, out_proj.weight, transB=1) with its bias, if any (a
        // bias of zeros may be dropped by the exporter), or (no bias, the TorchScript exporter)
        // a MatMul by its transpose
        let square = |n: &NodeProto| {
            n.input
                .get(1)
                .and_then(|t| self.constants.get(t.as_str()))
                .filter(|c| c.dims == [e, e])
        };
        let (out_w, out_b) = match ops
            .iter()
            .find(|n| n.op_type() == "Gemm" && super::Attrs(n).int("transB", 0) == 1 && square(n).is_some())
        {
            Some(gemm) => (
                square(gemm)?.values.clone(),
                gemm.input
                    .get(2)
                    .filter(|t| !t.is_empty())
                    .and_then(|t| self.constants.get(t.as_str())),
            ),
            None => {
                let mm = ops
                    .iter()
                    .find(|n| n.op_type() == "MatMul" && square(n).is_some() && n.input.first().and_then(|t| origin(t)).is_none())?;
                (Arc::new(square(mm)?.values.transposed(e as usize, e as usize)), None)
            }
        };
        let bias = in_b.is_some();
        if !bias && out_b.is_some() {
            return None;
        }
        // the heads: q, k and v, each taken from the projection (a Gather of the packed one, or
        // a cross-attention's own projections), are viewed as [L, batch * heads, head_dim]
        let heads = ops
            .iter()
            .filter(|n| n.op_type() == "Reshape")
            .filter(|n| {
                n.input.first().is_some_and(|t| {
                    projected.contains(&t.as_str())
                        || self
                            .producer
                            .get(t.as_str())
                            .is_some_and(|&p| member(&p) && self.nodes[p].op_type() == "Gather")
                })
            })
            .filter_map(|n| self.constants.get(n.input.get(1)?.as_str()))
            // (not the keys-and-values projection unflattened to [L, batch, 2, E])
            .filter(|c| c.values.len() == 3)
            .filter_map(|c| c.values.last().map(|&d| d as i64))
            .find(|&d| d > 0 && e % d == 0)
            .map_or(1, |d| e / d);
        // a causal mask is a constant added to the scores, -inf above the diagonal and 0 on and
        // below it (any other mask is not a layer the model language has: no fusion), or the
        // TorchScript exporter's scaled_dot_product_attention(is_causal=True), which builds it
        // from q's shape: Where(Trilu(ones, upper=0) == 0, -inf, 0)
        let masks: Vec<bool> = ops
            .iter()
            .filter(|n| n.op_type() == "Add")
            .flat_map(|n| n.input.iter().filter_map(|t| self.constants.get(t.as_str())))
            .filter_map(|c| causal_mask(c))
            .collect();
        if masks.contains(&false) {
            return None;
        }
        let causal = masks.contains(&true)
            || ops.iter().any(|n| {
                n.op_type() == "Trilu"
                    && super::Attrs(n).int("upper", 1) == 0
                    && n.input.len() == 1
                    && self
                        .consumers
                        .get(n.output.first().map_or("", String::as_str))
                        .is_some_and(|c| c.iter().all(|&j| member(&j) && self.nodes[j].op_type() == "Equal"))
            });
        // (a causal mask is for self-attention: the model language has no masked cross-attention)
        if causal && !extra.is_empty() {
            return None;
        }
        // (the dynamo exporter's metadata names the op; the TorchScript exporter writes
        // scaled_dot_product_attention's scale from q's shape, 1/sqrt(Cast(Shape(q)[-1])), where
        // the bmm path multiplies q by a number)
        let dynamo = ops.iter().any(|n| super::meta(n, "pkg.torch.onnx.class_hierarchy").is_some());
        let need_weights = if dynamo {
            ops.iter().any(|n| {
                super::meta(n, "pkg.torch.onnx.class_hierarchy").is_some_and(|c| c.contains("aten.bmm") || c.contains("aten.baddbmm"))
            })
        } else {
            !ops.iter().any(|n| n.op_type() == "Sqrt")
        };
        let mut weights = vec![("in_proj_weight", in_w)];
        if let Some(b) = in_b {
            weights.push(("in_proj_bias", b));
        }
        weights.push(("out_proj.weight", out_w));
        if bias {
            let b = out_b.map_or_else(|| Arc::new(LazyValues::from(vec![0.0; e as usize])), |b| b.values.clone());
            weights.push(("out_proj.bias", b));
        }
        // nn.MultiheadAttention works time-major: its last op transposes back to batch-first,
        // unless the exporter cancelled that against the Transpose of a recurrent op reading it
        let time_major = !ops.iter().any(|n| {
            n.op_type() == "Transpose"
                && n.output.first().is_some_and(|o| o == output)
                && super::Attrs(n).ints("perm").as_deref() == Some(&[1, 0, 2])
        });
        let first = *members.iter().min()?;
        Some((
            first,
            Fusion {
                layer: Layer::Attention {
                    module,
                    heads: heads as u64,
                    bias,
                    causal,
                    need_weights,
                    weights,
                    time_major,
                },
                input: input.to_string(),
                extra,
                output: output.to_string(),
                absorbed: members.into_iter().filter(|&i| i != first).collect(),
            },
        ))
    }

    /// torch 2.11's dynamo exporter writes `nn.RNN` (not LSTM or GRU) as its loop unrolled: per
    /// chain (layer and direction) an input projection `MatMul` by `W_ih^T` over every step at
    /// once, then per step a `MatMul` by `W_hh^T` of the previous hidden state (the first step's
    /// folded away at h0 = 0), the adds, and `Tanh` or `Relu`. The ops of one module that runs
    /// `torch/nn/modules/rnn.py` (a subclass included) become the one recurrent layer, batch
    /// first, its weights in PyTorch's names.
    fn unrolled_rnn(&self) -> Vec<(usize, Fusion)> {
        let module_of = |n: &NodeProto| {
            super::meta(n, "pkg.torch.onnx.stack_trace").filter(|t| t.contains("nn/modules/rnn.py"))?;
            let scopes = super::python_list(super::meta(n, "pkg.torch.onnx.name_scopes")?);
            match scopes.as_slice() {
                [.., module, _] if !module.is_empty() => Some(module.to_string()),
                _ => None,
            }
        };
        self.by_module(module_of)
            .into_iter()
            .filter_map(|(m, members)| self.rnn_group(m, members))
            .collect()
    }

    fn rnn_group(&self, module: String, members: Vec<usize>) -> Option<(usize, Fusion)> {
        use crate::spec::LazyValues;
        use std::sync::Arc;
        let (_, reads, writes) = self.boundary(&members);
        let ops: Vec<&NodeProto> = members.iter().map(|&i| &self.nodes[i]).collect();
        let ([input], [output]) = (reads.as_slice(), writes.as_slice()) else {
            return None;
        };
        // batch first: the module transposes its input to time-major first and its output back,
        // unless the exporter cancelled either Transpose against a neighbour's (an attention
        // module left time-major before it, a recurrent op after it): the sequence is then read
        // or left time-major, as the importer checks against the layout it tracks
        let swap = |n: &NodeProto| n.op_type() == "Transpose" && super::Attrs(n).ints("perm").as_deref() == Some(&[1, 0, 2]);
        let first = ops.iter().find(|n| swap(n) && n.input.first().map(String::as_str) == Some(*input));
        let time_major_in = first.is_none();
        let time_major_out = !ops.iter().any(|n| swap(n) && n.output.first().map(String::as_str) == Some(*output));
        let x = match first {
            Some(first) => first.output.first()?.as_str(),
            None => input,
        };
        let relu = ops.iter().any(|n| n.op_type() == "Relu");
        let act = if relu { "Relu" } else { "Tanh" };
        if !ops.iter().any(|n| n.op_type() == act) || (relu && ops.iter().any(|n| n.op_type() == "Tanh")) {
            return None;
        }
        // the projections: by the hidden state (a MatMul reading the activation) or by the
        // chain's input (the rest), each weight once per chain, in the order of the chains
        let mut ih: Vec<(&str, Rc<Constant>)> = Vec::new();
        let mut hh: Vec<(&str, Rc<Constant>)> = Vec::new();
        let mut first_layer = 0;
        for n in ops.iter().filter(|n| n.op_type() == "MatMul") {
            let wname = n.input.get(1)?.as_str();
            let w = self.constants.get(wname)?;
            let data = n.input.first()?.as_str();
            let recurrent = self.producer.get(data).is_some_and(|&p| self.nodes[p].op_type() == act);
            let list = if recurrent { &mut hh } else { &mut ih };
            if !list.iter().any(|(name, _)| *name == wname) {
                if !recurrent && data == x {
                    first_layer += 1;
                }
                list.push((wname, w.clone()));
            }
        }
        let chains = ih.len();
        let dirs = first_layer;
        if chains == 0 || hh.len() != chains || !(1..=2).contains(&dirs) || chains % dirs != 0 {
            return None;
        }
        let layers = chains / dirs;
        let [hidden, h2] = hh[0].1.dims[..] else { return None };
        let input_size = *ih[0].1.dims.first()?;
        if hidden != h2 || !(1..=1 << 20).contains(&hidden) || !(1..=1 << 20).contains(&input_size) {
            return None;
        }
        let bias = self.constants.contains_key(&format!("{module}.bias_ih_l0"));
        // without named biases every constant the steps add must be zeros (the first step's
        // folded W_hh h0): a bias the file keeps under another name is not guessed at
        if !bias
            && ops.iter().filter(|n| n.op_type() == "Add").any(|n| {
                n.input
                    .iter()
                    .filter_map(|t| self.constants.get(t.as_str()))
                    .any(|c| c.values.iter().any(|&v| v != 0.0))
            })
        {
            return None;
        }
        let mut weights: Vec<(String, Arc<LazyValues>)> = Vec::new();
        for c in 0..chains {
            let (layer, suffix) = (c / dirs, if c % dirs == 1 { "_reverse" } else { "" });
            let cols = if layer == 0 { input_size } else { dirs as i64 * hidden };
            if ih[c].1.dims != [cols, hidden] || hh[c].1.dims != [hidden, hidden] {
                return None;
            }
            weights.push((
                format!("weight_ih_l{layer}{suffix}"),
                Arc::new(ih[c].1.values.transposed(cols as usize, hidden as usize)),
            ));
            weights.push((
                format!("weight_hh_l{layer}{suffix}"),
                Arc::new(hh[c].1.values.transposed(hidden as usize, hidden as usize)),
            ));
            if bias {
                for kind in ["ih", "hh"] {
                    let b = self
                        .constants
                        .get(&format!("{module}.bias_{kind}_l{layer}{suffix}"))
                        .filter(|b| b.dims == [hidden])?;
                    weights.push((format!("bias_{kind}_l{layer}{suffix}"), b.values.clone()));
                }
            }
        }
        let start = *members.iter().min()?;
        Some((
            start,
            Fusion {
                layer: Layer::UnrolledRnn {
                    module,
                    time_major_in,
                    time_major_out,
                    relu,
                    input_size: input_size as u64,
                    hidden: hidden as u64,
                    layers: layers as u64,
                    bidirectional: dirs == 2,
                    bias,
                    weights,
                },
                input: input.to_string(),
                extra: Vec::new(),
                output: output.to_string(),
                absorbed: members.into_iter().filter(|&i| i != start).collect(),
            },
        ))
    }

    fn silu(&self, s: usize) -> Option<Fusion> {
        let x = self.nodes[s].input.first()?;
        let m = self.only_reader(s, "Mul")?;
        let n = &self.nodes[m];
        let s_out = self.nodes[s].output.first()?;
        let ok =
            (n.input.first() == Some(x) && n.input.get(1) == Some(s_out)) || (n.input.get(1) == Some(x) && n.input.first() == Some(s_out));
        ok.then(|| Fusion {
            layer: Layer::Silu,
            input: x.clone(),
            extra: Vec::new(),
            output: n.output[0].clone(),
            absorbed: vec![m],
        })
    }

    /// The ops of one `F.scaled_dot_product_attention` call, anchored at its Softmax: known by
    /// the dynamo exporter's metadata (the op's fx node) or by the TorchScript exporter's scale,
    /// a Mul of q (and of k^T) by a Sqrt of 1/sqrt(E) computed from q's shape; attention
    /// written by hand (a scale after the product, or none) stays the ops it is. k is the
    /// tensor before the exporter's transpose to k^T: `Transpose(k, [0, 1, 3, 2])`, the dynamo
    /// exporter's Reshape, Transpose(0, 2, 1), Reshape of it, or (TorchScript, which fuses
    /// k's two transposes into one `Transpose(x, [0, 2, 3, 1])`) the `Transpose(x, [0, 2, 1,
    /// 3])` the call was given.
    fn sdpa(&self, s: usize) -> Option<(usize, Fusion)> {
        let soft = &self.nodes[s];
        let dynamo = super::meta(soft, "pkg.torch.onnx.fx_node").is_some_and(|m| m.contains("aten.scaled_dot_product_attention"));
        let made = |t: &str| self.producer.get(t).map(|&i| (i, &self.nodes[i]));
        let mut members = vec![s];
        // the scores, with the causal mask added
        let (mut scores, mut causal) = (made(soft.input.first()?)?, false);
        if scores.1.op_type() == "Add" {
            let add = scores;
            let (mask, t) = add
                .1
                .input
                .iter()
                .find_map(|t| self.constants.get(t.as_str()).map(|c| (c.clone(), t)))?;
            // (one query and one key: is_causal's mask is a single 0, no mask at all)
            causal = match causal_mask(&mask) {
                Some(c) => c,
                None if mask.values.iter().all(|&v| v == 0.0) => false,
                None => return None,
            };
            let other = add.1.input.iter().find(|x| *x != t)?;
            members.push(add.0);
            scores = made(other)?;
        }
        if scores.1.op_type() != "MatMul" {
            return None;
        }
        members.push(scores.0);
        // q * sqrt(scale) and k^T * sqrt(scale)
        let mut scale = 1.0;
        let mut sqrt_scale = false;
        let mut operand = |t: &str, members: &mut Vec<usize>| -> Option<String> {
            let Some((i, n)) = made(t).filter(|(_, n)| n.op_type() == "Mul") else {
                return Some(t.to_string());
            };
            let [a, b] = n.input.as_slice() else { return None };
            let (c_name, x) = if self.constants.contains_key(b.as_str()) { (b, a) } else { (a, b) };
            let c = self.constants.get(c_name.as_str())?;
            if c.values.count() != 1 || self.constants.contains_key(x.as_str()) {
                return None;
            }
            sqrt_scale |= made(c_name).is_some_and(|(_, p)| p.op_type() == "Sqrt");
            scale *= c.values[0];
            members.push(i);
            Some(x.to_string())
        };
        let q = operand(scores.1.input.first()?, &mut members)?;
        let kt = operand(scores.1.input.get(1)?, &mut members)?;
        if !(dynamo || sqrt_scale) {
            return None;
        }
        // k from k^T
        let (ti, tn) = made(&kt)?;
        let mut k_heads_last = None;
        let perm = |n: &NodeProto| super::Attrs(n).ints("perm");
        let k = match tn.op_type() {
            "Transpose" if perm(tn).as_deref() == Some(&[0, 1, 3, 2]) => {
                members.push(ti);
                tn.input.first()?.clone()
            }
            "Transpose" if perm(tn).as_deref() == Some(&[0, 2, 3, 1]) => {
                members.push(ti);
                let x = tn.input.first()?;
                let given = self.consumers.get(x.as_str()).and_then(|c| {
                    c.iter().copied().find(|&j| {
                        self.nodes
                            .get(j)
                            .is_some_and(|n| n.op_type() == "Transpose" && perm(n).as_deref() == Some(&[0, 2, 1, 3]))
                    })
                });
                match given {
                    Some(j) => self.nodes[j].output.first()?.clone(),
                    None => {
                        k_heads_last = Some((tn.clone(), ti));
                        x.clone()
                    }
                }
            }
            "Reshape" => {
                let (t2, n2) = made(tn.input.first()?)?;
                let (r1, n1) = made(n2.input.first()?)?;
                if n2.op_type() != "Transpose" || perm(n2).as_deref() != Some(&[0, 2, 1]) || n1.op_type() != "Reshape" {
                    return None;
                }
                members.extend([ti, t2, r1]);
                n1.input.first()?.clone()
            }
            _ => return None,
        };
        // the weights times v
        let out = self.only_reader(s, "MatMul")?;
        let v = self.nodes[out].input.get(1)?.clone();
        if self.nodes[out].input.first() != soft.output.first() {
            return None;
        }
        members.push(out);
        // the inner tensors are the call's own
        for &m in &members {
            if m != out
                && self
                    .consumers
                    .get(self.nodes[m].output.first()?.as_str())
                    .is_some_and(|c| c.iter().any(|j| !members.contains(j)))
            {
                return None;
            }
        }
        let first = *members.iter().min()?;
        Some((
            first,
            Fusion {
                layer: Layer::Sdpa {
                    causal,
                    scale,
                    k_heads_last,
                },
                input: q,
                extra: vec![k, v],
                output: self.nodes[out].output.first()?.clone(),
                absorbed: members.into_iter().filter(|&i| i != first).collect(),
            },
        ))
    }

    fn mish(&self, sp: usize) -> Option<Fusion> {
        let x = self.nodes[sp].input.first()?;
        let t = self.only_reader(sp, "Tanh")?;
        let m = self.only_reader(t, "Mul")?;
        self.nodes[m].input.contains(x).then(|| Fusion {
            layer: Layer::Mish,
            input: x.clone(),
            extra: Vec::new(),
            output: self.nodes[m].output[0].clone(),
            absorbed: vec![t, m],
        })
    }

    fn gelu(&self, d: usize) -> Option<Fusion> {
        let x = self.nodes[d].input.first()?;
        if (self.scalar(self.nodes[d].input.get(1)?)? - std::f64::consts::SQRT_2).abs() > 1e-5 {
            return None;
        }
        let e = self.only_reader(d, "Erf")?;
        let a = self.only_reader(e, "Add")?;
        let (one, _) = self.with_constant(a, &self.nodes[e].output[0])?;
        let m1 = self.only_reader(a, "Mul")?;
        let n1 = &self.nodes[m1];
        if !n1.input.contains(x) {
            return None;
        }
        let m2 = self.only_reader(m1, "Mul")?;
        let (half, _) = self.with_constant(m2, &n1.output[0])?;
        (**one.values == [1.0] && **half.values == [0.5]).then(|| Fusion {
            layer: Layer::Gelu,
            input: x.clone(),
            extra: Vec::new(),
            output: self.nodes[m2].output[0].clone(),
            absorbed: vec![e, a, m1, m2],
        })
    }

    /// A Reshape splitting the channels into `[g, C/g]`, a Transpose swapping those two axes and
    /// a Reshape joining them again: `channel_shuffle(groups=g)`.
    fn channel_shuffle(&self, h: usize) -> Option<Fusion> {
        let head = &self.nodes[h];
        let x = head.input.first()?;
        let split = &self.constants.get(head.input.get(1)?.as_str())?.values;
        // [b, g, n, rest...] with b 1 (or 0, copied), g and n whole and positive
        if split.len() < 4 || !(split[0] == 0.0 || split[0] == 1.0) || split[1] < 1.0 || split[2] < 1.0 {
            return None;
        }
        let t = self.only_reader(h, "Transpose")?;
        let perm = self.nodes[t].attribute.iter().find(|a| a.name() == "perm")?;
        let swap: Vec<i64> = (0..split.len() as i64)
            .map(|k| [0, 2, 1].get(k as usize).copied().unwrap_or(k))
            .collect();
        if perm.ints != swap {
            return None;
        }
        let r2 = self.only_reader(t, "Reshape")?;
        let back = &self.constants.get(self.nodes[r2].input.get(1)?.as_str())?.values;
        // [b, g*n (or -1), rest...]: the two channel axes joined, the others as they were
        let joined = back.len() == split.len() - 1
            && (back[0] == 0.0 || back[0] == 1.0 || back[0] == -1.0)
            && (back[1] == split[1] * split[2] || back[1] == -1.0)
            && back[2..] == split[3..];
        joined.then(|| Fusion {
            layer: Layer::ChannelShuffle { groups: split[1] as u64 },
            input: x.clone(),
            extra: Vec::new(),
            output: self.nodes[r2].output[0].clone(),
            absorbed: vec![t, r2],
        })
    }

    fn group_norm(&self, h: usize) -> Option<Fusion> {
        let head = &self.nodes[h];
        let x = head.input.first()?;
        let shape = self.constants.get(head.input.get(1)?.as_str())?;
        let [b, g, rest] = shape.values[..] else { return None };
        if !(b == 0.0 || b == 1.0) || rest != -1.0 || g < 1.0 {
            return None;
        }
        let groups = g as usize;
        let i = self.only_reader(h, "InstanceNormalization")?;
        let inorm = &self.nodes[i];
        let ones = self.constants.get(inorm.input.get(1)?.as_str())?;
        let zeros = self.constants.get(inorm.input.get(2)?.as_str())?;
        if ones.values.len() != groups || ones.values.iter().any(|&v| v != 1.0) || zeros.values.iter().any(|&v| v != 0.0) {
            return None;
        }
        let r2 = self.only_reader(i, "Reshape")?;
        let mut absorbed = vec![i, r2];
        // the shape back: Shape(x), read by nothing else, or a constant
        let back = self.nodes[r2].input.get(1)?;
        if let Some(&s) = self.producer.get(back.as_str()) {
            let sh = &self.nodes[s];
            if sh.op_type() == "Shape" && sh.input.first() == Some(x) && self.consumers.get(back.as_str())?.len() == 1 {
                absorbed.push(s);
            } else if !self.constants.contains_key(back.as_str()) {
                return None;
            }
        }
        let mut tail = r2;
        let (mut weight, mut bias) = (None, None);
        if let Some(m) = self.only_reader(r2, "Mul") {
            let (w, _) = self.with_constant(m, &self.nodes[r2].output[0])?;
            let a = self.only_reader(m, "Add")?;
            let (bb, _) = self.with_constant(a, &self.nodes[m].output[0])?;
            if w.values.len() != bb.values.len() {
                return None;
            }
            absorbed.extend([m, a]);
            tail = a;
            weight = Some(w);
            bias = Some(bb);
        }
        Some(Fusion {
            layer: Layer::GroupNorm {
                groups: groups as u64,
                eps: Attrs(inorm).float("epsilon", 1e-5) as f64,
                weight,
                bias,
            },
            input: x.clone(),
            extra: Vec::new(),
            output: self.nodes[tail].output[0].clone(),
            absorbed,
        })
    }
}

/// A masked score: -inf, or a number so negative (Hugging Face's `torch.finfo(dtype).min`)
/// that the softmax after it is exactly 0.
pub(super) fn masked(v: f64) -> bool {
    v == f64::NEG_INFINITY || v < -1e30
}

/// The last two axes `[n, m]` of a constant `[1.., n, m]` whose elements above the diagonal
/// (`(i, j)` with `j > i`) are what `above` accepts and the others what `below` accepts.
pub(super) fn triangle(c: &Constant, above: impl Fn(f64) -> bool, below: impl Fn(f64) -> bool) -> Option<[i64; 2]> {
    let [lead @ .., n, m] = c.dims.as_slice() else { return None };
    let fits = lead.iter().all(|&d| d == 1)
        && *n >= 1
        && *m >= 1
        && c.values.count() as i64 == n * m
        && c.values
            .iter()
            .enumerate()
            .all(|(i, &v)| if i as i64 % m > i as i64 / m { above(v) } else { below(v) });
    fits.then_some([*n, *m])
}

/// Whether a constant added to attention scores is a mask `[1.., L, L]` holding a masked score
/// somewhere: `Some(true)` when it is the causal one (masked exactly above the diagonal, 0 on
/// and below it), `Some(false)` for any other mask, `None` for no mask.
fn causal_mask(c: &Constant) -> Option<bool> {
    let d = &c.dims;
    let [.., rows, cols] = d[..] else { return None };
    if rows != cols || rows < 1 || d[..d.len() - 2].iter().any(|&x| x != 1) || !c.values.iter().any(|&v| masked(v)) {
        return None;
    }
    Some(triangle(c, masked, |v| v == 0.0).is_some())
}

/// Every pattern in the file, by the index of its first node.
pub(super) fn find(nodes: &[NodeProto], outputs: &[&str], constants: &HashMap<String, Rc<Constant>>) -> HashMap<usize, Fusion> {
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut producer = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for t in &n.input {
            consumers.entry(t.as_str()).or_default().push(i);
        }
        for o in &n.output {
            producer.insert(o.as_str(), i);
        }
    }
    // a graph output is read from outside: no pattern may absorb it
    for o in outputs {
        consumers.entry(o).or_default().push(usize::MAX);
    }
    let g = Graph {
        nodes,
        consumers,
        producer,
        constants,
    };
    let mut found: HashMap<usize, Fusion> = g.attention().into_iter().chain(g.unrolled_rnn()).collect();
    // the nodes a pattern found so far emits or absorbs
    let mut taken: std::collections::HashSet<usize> = found
        .iter()
        .flat_map(|(&first, f)| std::iter::once(first).chain(f.absorbed.iter().copied()))
        .collect();
    // scaled_dot_product_attention calls (not inside an nn.MultiheadAttention found above),
    // emitted at their first node, before the one-node patterns (the dynamo exporter's
    // Reshape, Transpose, Reshape of k is no channel shuffle)
    for (i, n) in nodes.iter().enumerate() {
        if n.op_type() != "Softmax" || taken.contains(&i) {
            continue;
        }
        if let Some((first, f)) = g
            .sdpa(i)
            .filter(|(first, f)| !taken.contains(first) && !f.absorbed.iter().any(|j| taken.contains(j)))
        {
            taken.insert(first);
            taken.extend(f.absorbed.iter().copied());
            found.insert(first, f);
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if taken.contains(&i) {
            continue;
        }
        let f = match n.op_type() {
            "Sigmoid" => g.silu(i),
            "Div" => g.gelu(i),
            "Softplus" => g.mish(i),
            "Reshape" => g.group_norm(i).or_else(|| g.channel_shuffle(i)),
            _ => None,
        };
        if let Some(f) = f.filter(|f| !f.absorbed.iter().any(|j| taken.contains(j))) {
            found.insert(i, f);
        }
    }
    found
}
