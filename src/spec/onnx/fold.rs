//! Shape arithmetic the exporter left in the graph, evaluated here: `Shape` of a tensor whose
//! shape the file states, then `Gather`, `Slice`, `Concat`, `Unsqueeze`, `Cast`,
//! `ConstantOfShape`, `Expand` (of one number), `Reshape`, `Transpose`, `Trilu`, `Equal`, `Where`, `Sqrt` and elementwise arithmetic on constants. What comes
//! out is an ordinary constant (an upsample's `sizes`, a reflect pad's `pads`), so the node that
//! reads it maps as if the exporter had folded it. Only small tensors are evaluated (shape
//! arithmetic, not weights); anything else is left for the mapper, which refuses what it cannot
//! read.
use super::{Attrs, Constant};
use crate::spec::onnx::proto::{tensor_proto::DataType, GraphProto, NodeProto, ValueInfoProto};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Largest constant this pass produces.
const MAX_FOLDED: usize = 1 << 16;

/// The static shapes the file states for its tensors (inputs, value_info, outputs); an axis
/// without a size (a symbolic batch) is None.
fn stated_shapes(graph: &GraphProto) -> HashMap<&str, Vec<Option<i64>>> {
    use crate::spec::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    use crate::spec::onnx::proto::type_proto::Value as Ty;
    let shape = |v: &ValueInfoProto| -> Option<Vec<Option<i64>>> {
        let Some(Ty::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
            return None;
        };
        Some(
            t.shape
                .as_ref()?
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(x)) if x >= 0 => Some(x),
                    _ => None,
                })
                .collect(),
        )
    };
    graph
        .input
        .iter()
        .chain(&graph.value_info)
        .chain(&graph.output)
        .filter_map(|v| Some((v.name(), shape(v)?)))
        .collect()
}

fn numel(dims: &[i64]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| if d < 0 { None } else { n.checked_mul(d as usize) })
}

fn strides(dims: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1].max(0) as usize;
    }
    s
}

fn axis(a: i64, rank: usize) -> Option<usize> {
    let a = if a < 0 { a + rank as i64 } else { a };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

fn ints(c: &Constant) -> Vec<i64> {
    c.values.iter().map(|&v| v as i64).collect()
}

fn make(dims: Vec<i64>, values: Vec<f64>, integer: bool) -> Option<Constant> {
    (numel(&dims)? == values.len() && values.len() <= MAX_FOLDED).then_some(Constant {
        dims,
        values: std::sync::Arc::new(values.into()),
        initializer: false,
        integer,
    })
}

/// The shape and element count of an elementwise op on arguments that are all one shape or
/// single numbers (None otherwise: left to the graph): numpy's broadcast, so a single number of
/// higher rank (`[1, 1]` against `[3]`) makes the result `[1, 3]`.
fn same_or_single(args: &[&Constant]) -> Option<(Vec<i64>, usize)> {
    let rank = args.iter().map(|c| c.dims.len()).max()?;
    let shared = args.iter().find(|c| c.values.len() != 1);
    if let Some(s) = shared {
        if args.iter().any(|c| c.values.len() != 1 && c.dims != s.dims) {
            return None;
        }
    }
    let inner = shared.map(|s| s.dims.as_slice()).unwrap_or_default();
    let mut dims = vec![1; rank - inner.len()];
    dims.extend_from_slice(inner);
    Some((dims, shared.map_or(1, |s| s.values.len())))
}

/// Element `i` of an argument of [`same_or_single`]'s elementwise ops (a single number's one).
fn at(c: &Constant, i: usize) -> f64 {
    if c.values.len() == 1 {
        c.values[0]
    } else {
        c.values[i]
    }
}

/// One node on constant inputs, or None when it cannot be evaluated here.
fn eval(n: &NodeProto, inputs: &[Option<&Constant>], shapes: &HashMap<&str, Vec<Option<i64>>>) -> Option<Constant> {
    let a = Attrs(n);
    let x = || inputs.first().copied().flatten();
    let arg = |i: usize| inputs.get(i).copied().flatten();
    match n.op_type() {
        "Shape" => {
            // the batch axis of a file exported for one sample may be symbolic: it is 1 here,
            // and only a flatten's [batch, -1] can read it back
            let dims = shapes.get(n.input.first()?.as_str())?;
            let all: Option<Vec<i64>> = dims.iter().enumerate().map(|(i, d)| d.or((i == 0).then_some(1))).collect();
            let all = all?;
            let r = all.len() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) } as usize;
            let (s, e) = (clamp(a.int("start", 0)), clamp(a.int("end", r)));
            let v: Vec<f64> = all.get(s..e.max(s))?.iter().map(|&d| d as f64).collect();
            make(vec![v.len() as i64], v, true)
        }
        "Cast" => {
            let c = x()?;
            let to = DataType::try_from(a.int("to", 1) as i32).ok()?;
            let int = matches!(
                to,
                DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint8 | DataType::Bool
            );
            let v = c.values.iter().map(|&v| if int { v.trunc() } else { v }).collect();
            make(c.dims.clone(), v, int)
        }
        // (scaled_dot_product_attention's scale, 1/sqrt(E) from q's shape, by the TorchScript
        // exporter)
        "Sqrt" => {
            let c = x()?;
            make(c.dims.clone(), c.values.iter().map(|v| v.sqrt()).collect(), false)
        }
        "Gather" => {
            let (d, idx) = (x()?, arg(1)?);
            if d.dims.len() != 1 {
                return None;
            }
            let len = d.dims[0];
            let v: Option<Vec<f64>> = ints(idx)
                .iter()
                .map(|&i| {
                    let i = if i < 0 { i + len } else { i };
                    d.values.get(usize::try_from(i).ok()?).copied()
                })
                .collect();
            make(idx.dims.clone(), v?, d.integer)
        }
        "Unsqueeze" | "Squeeze" => {
            let c = x()?;
            let axes: Vec<i64> = arg(1).map(ints).or_else(|| a.ints("axes"))?;
            let mut dims = c.dims.clone();
            if n.op_type() == "Unsqueeze" {
                let rank = dims.len() + axes.len();
                let mut ax: Vec<usize> = axes.iter().map(|&x| axis(x, rank)).collect::<Option<_>>()?;
                ax.sort_unstable();
                for i in ax {
                    dims.insert(i.min(dims.len()), 1);
                }
            } else {
                let mut ax: Vec<usize> = axes.iter().map(|&x| axis(x, dims.len())).collect::<Option<_>>()?;
                ax.sort_unstable();
                for i in ax.into_iter().rev() {
                    if dims[i] != 1 {
                        return None;
                    }
                    dims.remove(i);
                }
            }
            make(dims, c.values.to_vec(), c.integer)
        }
        "Concat" => {
            let parts: Vec<&Constant> = inputs.iter().copied().collect::<Option<_>>()?;
            let first = parts.first()?;
            let rank = first.dims.len();
            let ax = axis(a.int("axis", 0), rank)?;
            if parts
                .iter()
                .any(|p| p.dims.len() != rank || (0..rank).any(|i| i != ax && p.dims[i] != first.dims[i]))
            {
                return None;
            }
            let outer: usize = first.dims[..ax].iter().map(|&d| d as usize).product();
            let mut values = Vec::new();
            for o in 0..outer {
                for p in &parts {
                    let block: usize = p.dims[ax..].iter().map(|&d| d as usize).product();
                    values.extend_from_slice(&p.values[o * block..(o + 1) * block]);
                }
            }
            let mut dims = first.dims.clone();
            dims[ax] = parts.iter().map(|p| p.dims[ax]).sum();
            make(dims, values, parts.iter().all(|p| p.integer))
        }
        // one number that is no parameter broadcast to a shape (scaled_dot_product_attention's
        // ones before its causal Trilu, by the TorchScript exporter); a learned tensor expanded
        // (ViT's class token) stays the mapper's
        "Expand" => {
            let (c, shape) = (x()?, ints(arg(1)?));
            if c.initializer || c.values.len() != 1 || shape.len() < c.dims.len() || shape.iter().any(|&d| d < 1) {
                return None;
            }
            let count = numel(&shape)?;
            (count <= MAX_FOLDED)
                .then(|| make(shape, vec![c.values[0]; count], c.integer))
                .flatten()
        }
        "ConstantOfShape" => {
            let shape = ints(x()?);
            let (value, integer) = match a.get("value").and_then(|v| v.t.as_ref()) {
                Some(t) => {
                    let c = super::tensor_values(t, &Default::default(), "").ok()?;
                    (*c.values.first()?, c.integer)
                }
                None => (0.0, false),
            };
            let count = numel(&shape)?;
            (count <= MAX_FOLDED).then(|| make(shape, vec![value; count], integer)).flatten()
        }
        "Reshape" => {
            let (c, target) = (x()?, ints(arg(1)?));
            let mut dims: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d == 0 && a.int("allowzero", 0) == 0 {
                        c.dims.get(i).copied().unwrap_or(0)
                    } else {
                        d
                    }
                })
                .collect();
            if let Some(free) = dims.iter().position(|&d| d == -1) {
                let known: i64 = dims.iter().filter(|&&d| d != -1).product();
                if known <= 0 || c.values.len() as i64 % known != 0 {
                    return None;
                }
                dims[free] = c.values.len() as i64 / known;
            }
            make(dims, c.values.to_vec(), c.integer)
        }
        "Transpose" => {
            let c = x()?;
            let rank = c.dims.len();
            let perm: Vec<usize> = a
                .ints("perm")
                .map(|p| p.iter().map(|&x| axis(x, rank)).collect::<Option<Vec<_>>>())
                .unwrap_or_else(|| Some((0..rank).rev().collect()))?;
            if perm.len() != rank {
                return None;
            }
            let dims: Vec<i64> = perm.iter().map(|&p| c.dims[p]).collect();
            let (src, dst) = (strides(&c.dims), strides(&dims));
            let mut values = vec![0.0; c.values.len()];
            for (i, v) in values.iter_mut().enumerate() {
                let at: usize = (0..rank).map(|k| (i / dst[k]) % dims[k] as usize * src[perm[k]]).sum();
                *v = c.values[at];
            }
            make(dims, values, c.integer)
        }
        "Slice" => {
            let c = x()?;
            let rank = c.dims.len();
            let (starts, ends, axes, steps) = if inputs.len() > 1 {
                (ints(arg(1)?), ints(arg(2)?), arg(3).map(ints), arg(4).map(ints))
            } else {
                (a.ints("starts")?, a.ints("ends")?, a.ints("axes"), None)
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            // per axis: the kept indices
            let mut keep: Vec<Vec<i64>> = c.dims.iter().map(|&d| (0..d).collect()).collect();
            for k in 0..starts.len() {
                let ax = axis(*axes.get(k)?, rank)?;
                let (d, step) = (c.dims[ax], *steps.get(k)?);
                if step == 0 {
                    return None;
                }
                let norm = |v: i64, lo: i64, hi: i64| if v < 0 { (v + d).clamp(lo, hi) } else { v.clamp(lo, hi) };
                let (s, e) = if step > 0 {
                    (norm(starts[k], 0, d), norm(*ends.get(k)?, 0, d))
                } else {
                    (norm(starts[k], -1, d - 1), norm(*ends.get(k)?, -1, d - 1))
                };
                let mut idx = Vec::new();
                let mut i = s;
                while (step > 0 && i < e) || (step < 0 && i > e) {
                    idx.push(i);
                    i += step;
                }
                keep[ax] = idx;
            }
            let dims: Vec<i64> = keep.iter().map(|k| k.len() as i64).collect();
            let (src, dst) = (strides(&c.dims), strides(&dims));
            let total = numel(&dims)?;
            let mut values = Vec::with_capacity(total);
            for i in 0..total {
                let at: usize = (0..rank).map(|k| keep[k][(i / dst[k]) % dims[k] as usize] as usize * src[k]).sum();
                values.push(c.values[at]);
            }
            make(dims, values, c.integer)
        }
        op @ ("Add" | "Sub" | "Mul" | "Div" | "Mod") => {
            let (l, r) = (x()?, arg(1)?);
            // Mod by zero has no value; fmod=0 takes the divisor's sign (Python's %), 1 C's fmod
            if op == "Mod" && r.values.contains(&0.0) {
                return None;
            }
            let c_fmod = a.int("fmod", 0) == 1;
            let (dims, n) = same_or_single(&[l, r])?;
            let integer = l.integer && r.integer;
            let v = (0..n)
                .map(|i| {
                    let (p, q) = (at(l, i), at(r, i));
                    match op {
                        "Add" => p + q,
                        "Sub" => p - q,
                        "Mul" => p * q,
                        "Mod" if c_fmod => p % q,
                        "Mod" => p - q * (p / q).floor(),
                        _ if integer => (p / q).trunc(),
                        _ => p / q,
                    }
                })
                .collect();
            make(dims, v, integer)
        }
        op @ ("Equal" | "Where") => {
            // elementwise on equal shapes or single numbers (the TorchScript exporter's
            // `expand(n, -1, -1)`: Where(Equal(shape, -1), 1, shape))
            let args: Vec<&Constant> = inputs.iter().copied().collect::<Option<_>>()?;
            let (dims, len) = same_or_single(&args)?;
            let v: Vec<f64> = match (op, &args[..]) {
                ("Equal", [a, b]) => (0..len).map(|i| f64::from(u8::from(at(a, i) == at(b, i)))).collect(),
                ("Where", [c, a, b]) => (0..len).map(|i| if at(c, i) != 0.0 { at(a, i) } else { at(b, i) }).collect(),
                _ => return None,
            };
            let integer = op == "Equal" || args[1..].iter().all(|c| c.integer);
            make(dims, v, integer)
        }
        "Trilu" => {
            // the upper (or lower) triangle of the last two axes from diagonal k, zeros elsewhere
            // (the TorchScript exporter's causal mask: triu of a matrix of -inf, diagonal 1)
            let c = x()?;
            let k = arg(1).map_or(Some(0.0), |k| k.values.first().copied())? as i64;
            let upper = a.int("upper", 1) == 1;
            let [.., rows, cols] = c.dims[..] else { return None };
            let v = c
                .values
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let (r, col) = ((i as i64 / cols) % rows, i as i64 % cols);
                    let keep = if upper { col - r >= k } else { col - r <= k };
                    if keep {
                        v
                    } else {
                        0.0
                    }
                })
                .collect();
            make(c.dims.clone(), v, c.integer)
        }
        "Floor" | "Ceil" | "Neg" => {
            let c = x()?;
            let f: fn(f64) -> f64 = match n.op_type() {
                "Floor" => f64::floor,
                "Ceil" => f64::ceil,
                _ => |v| -v,
            };
            make(c.dims.clone(), c.values.iter().map(|&v| f(v)).collect(), c.integer)
        }
        _ => None,
    }
}

/// Evaluates every node it can, in file order, adding their outputs to `constants`; returns the
/// indices of the nodes folded away.
pub(super) fn fold(
    graph: &GraphProto,
    constants: &mut HashMap<String, Rc<Constant>>,
    learned: &HashMap<String, Vec<Option<i64>>>,
) -> HashSet<usize> {
    let mut shapes = stated_shapes(graph);
    for (t, s) in learned {
        shapes.entry(t.as_str()).or_insert_with(|| s.clone());
    }
    let mut folded = HashSet::new();
    for (i, n) in graph.node.iter().enumerate() {
        if n.output.len() != 1 || n.op_type() == "Constant" {
            continue;
        }
        let inputs: Vec<Option<&Constant>> = n
            .input
            .iter()
            .map(|t| if t.is_empty() { None } else { constants.get(t).map(|c| &**c) })
            .collect();
        // Shape reads only its input's stated shape; everything else needs constant inputs
        // shape arithmetic only: a weight (a large constant) is not widened to be folded
        let small = inputs.iter().flatten().all(|c| c.values.count() <= MAX_FOLDED);
        let ready = small && (n.op_type() == "Shape" || n.input.iter().zip(&inputs).all(|(t, c)| t.is_empty() || c.is_some()));
        if !ready {
            continue;
        }
        if let Some(mut c) = eval(n, &inputs, &shapes) {
            // a parameter reshaped is still a parameter (the exporter unsqueezes norms' weights)
            if matches!(n.op_type(), "Reshape" | "Unsqueeze" | "Squeeze" | "Cast" | "Transpose") {
                c.initializer = inputs.first().copied().flatten().is_some_and(|x| x.initializer);
            }
            constants.insert(n.output[0].clone(), Rc::new(c));
            folded.insert(i);
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::onnx::proto::{attribute_proto::AttributeType, AttributeProto};

    fn c(dims: &[i64], values: &[f64]) -> Constant {
        make(dims.to_vec(), values.to_vec(), false).unwrap()
    }

    fn node(op: &str, upper: Option<i64>) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            attribute: upper
                .map(|u| AttributeProto {
                    name: Some("upper".into()),
                    i: Some(u),
                    r#type: Some(AttributeType::Int as i32),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    /// Trilu by hand on a 3x3 of ones: upper from diagonal 1 (torch.triu(x, 1), the causal
    /// mask's -inf places), lower with the diagonal (torch.tril(x)); Equal and Where as the
    /// TorchScript exporter writes `expand(n, -1, -1)` and the causal mask.
    #[test]
    fn triangles_and_selections_by_hand() {
        let ones = c(&[1, 3, 3], &[1.0; 9]);
        let shapes = HashMap::new();
        let one = c(&[], &[1.0]);
        let upper = eval(&node("Trilu", None), &[Some(&ones), Some(&one)], &shapes).unwrap();
        assert_eq!(**upper.values, [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        let lower = eval(&node("Trilu", Some(0)), &[Some(&ones)], &shapes).unwrap();
        assert_eq!(**lower.values, [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(lower.dims, [1, 3, 3]);
        let zero = c(&[1], &[0.0]);
        let eq = eval(&node("Equal", None), &[Some(&lower), Some(&zero)], &shapes).unwrap();
        let mask = eval(
            &node("Where", None),
            &[Some(&eq), Some(&c(&[1], &[f64::NEG_INFINITY])), Some(&zero)],
            &shapes,
        )
        .unwrap();
        let inf = f64::NEG_INFINITY;
        assert_eq!(**mask.values, [0.0, inf, inf, 0.0, 0.0, inf, 0.0, 0.0, 0.0]);
        // expand(n, -1, -1) of a [1, 1, 16] token: Where(Equal(shape, -1), 1, shape)
        let shape = c(&[3], &[1.0, -1.0, -1.0]);
        let is_minus = eval(&node("Equal", None), &[Some(&shape), Some(&c(&[], &[-1.0]))], &shapes).unwrap();
        let to = eval(
            &node("Where", None),
            &[Some(&is_minus), Some(&c(&[], &[1.0])), Some(&shape)],
            &shapes,
        )
        .unwrap();
        assert_eq!(**to.values, [1.0, 1.0, 1.0]);
        // a single number of higher rank broadcasts the result to its rank (numpy, ONNX)
        let row = c(&[3], &[1.0, 2.0, 3.0]);
        let two = c(&[1, 1], &[2.0]);
        for (l, r) in [(&row, &two), (&two, &row)] {
            let product = eval(&node("Mul", None), &[Some(l), Some(r)], &shapes).unwrap();
            assert_eq!(
                (product.dims.as_slice(), product.values.as_slice()),
                (&[1, 3][..], &[2.0, 4.0, 6.0][..])
            );
            let eq = eval(&node("Equal", None), &[Some(l), Some(r)], &shapes).unwrap();
            assert_eq!((eq.dims.as_slice(), eq.values.as_slice()), (&[1, 3][..], &[0.0, 1.0, 0.0][..]));
        }
        let sum = eval(&node("Add", None), &[Some(&c(&[], &[1.0])), Some(&c(&[1], &[2.0]))], &shapes).unwrap();
        assert_eq!((sum.dims.as_slice(), sum.values.as_slice()), (&[1][..], &[3.0][..]));
        let empty = eval(&node("Sub", None), &[Some(&c(&[0], &[])), Some(&c(&[1, 1], &[2.0]))], &shapes).unwrap();
        assert_eq!(empty.dims, [1, 0]);
        // shapes that do not broadcast this simply are left alone
        assert!(eval(
            &node("Equal", None),
            &[Some(&c(&[2], &[1.0, 2.0])), Some(&c(&[3], &[1.0, 2.0, 3.0]))],
            &shapes
        )
        .is_none());
    }
}
