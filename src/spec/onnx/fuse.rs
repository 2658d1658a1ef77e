//! Layers that an exporter writes as several ONNX ops, read back as the one layer:
//! - `x * sigmoid(x)` is `nn.SiLU`;
//! - `x * 0.5 * (1 + erf(x / sqrt(2)))` is `nn.GELU` (opsets before 20 have no Gelu op);
//! - `x * tanh(softplus(x))` is `nn.Mish` (opsets before 18);
//! - `Reshape(x, [0, G, -1])`, `InstanceNormalization` with ones and zeros, `Reshape` back, then
//!   `Mul` and `Add` by per-channel constants is `nn.GroupNorm(G, C)` (opsets before 18).
//!
//! Each pattern must be a chain whose inner tensors nobody else reads; otherwise the ops stay
//! separate (and are refused if they cannot be read one by one).
use super::{Attrs, Constant};
use crate::spec::onnx::proto::NodeProto;
use std::collections::HashMap;
use std::rc::Rc;

pub(super) enum Layer {
    Silu,
    Gelu,
    Mish,
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

    fn scalar(&self, t: &str) -> Option<f64> {
        let c = self.constants.get(t)?;
        (c.values.len() == 1).then(|| c.values[0])
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
            output: n.output[0].clone(),
            absorbed: vec![m],
        })
    }

    fn mish(&self, sp: usize) -> Option<Fusion> {
        let x = self.nodes[sp].input.first()?;
        let t = self.only_reader(sp, "Tanh")?;
        let m = self.only_reader(t, "Mul")?;
        self.nodes[m].input.contains(x).then(|| Fusion {
            layer: Layer::Mish,
            input: x.clone(),
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
            output: self.nodes[m2].output[0].clone(),
            absorbed: vec![e, a, m1, m2],
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
            output: self.nodes[tail].output[0].clone(),
            absorbed,
        })
    }
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
    let mut found = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let f = match n.op_type() {
            "Sigmoid" => g.silu(i),
            "Div" => g.gelu(i),
            "Softplus" => g.mish(i),
            "Reshape" => g.group_norm(i),
            _ => None,
        };
        if let Some(f) = f {
            found.insert(i, f);
        }
    }
    found
}
