//! ONNX files in: a `ModelProto` (decoded by prost from the vendored onnx.proto) becomes the
//! graph form of the model language, node by node, and its initializers become the model's
//! weights. Everything downstream (shapes, every analysis, grading, libtorch runs) then sees an
//! ordinary graph-form spec: there is no second implementation of any op.
//!
//! What maps (opset 11 to 23, as `torch.onnx.export` writes it, legacy or dynamo):
//! Conv, ConvTranspose (2-D), Gemm, MatMul by a constant matrix, MaxPool, AveragePool,
//! GlobalAveragePool, GlobalMaxPool, BatchNormalization, InstanceNormalization,
//! GroupNormalization, LayerNormalization, Relu, LeakyRelu, PRelu, Sigmoid, Tanh, HardSwish,
//! HardSigmoid, Mish, Gelu, Clip(0, 6), Softmax, Add, Mul, Concat, Flatten, Reshape to
//! `[batch, -1]`, Pad, Resize/Upsample (nearest floor-asymmetric, linear half-pixel or align_corners, any factors or sizes),
//! ReduceMean, Dropout and Identity; LSTM, GRU and RNN; an Expand of a learned tensor to its own
//! shape (at batch 1). Layers the exporter writes as several ops (SiLU, erf GELU, softplus Mish,
//! opset-17 GroupNorm, self- and cross-attention from either exporter) are read back as one
//! (fuse.rs); shape and mask arithmetic left in the graph is evaluated (fold.rs). Anything else is listed, every node of it, in one 422: a
//! node the service cannot read is never counted as zero.
use super::error::{SpecError, SpecResult};
use super::parse::{parse_model, SpecLimits};
use super::types::{LazyValues, ModelSpec, ModelWeights, GRAPH_INPUT};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use prost::Message;
use proto::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};

/// A constant tensor of the file (an initializer or a `Constant` node), as f64 values.
#[derive(Clone, Debug)]
struct Constant {
    dims: Vec<i64>,
    values: std::sync::Arc<LazyValues>,
    /// An initializer (a parameter of the exported module), not a `Constant` node's value.
    initializer: bool,
    /// Integer elements (shapes, indices): arithmetic on them truncates as ONNX's does.
    integer: bool,
}

mod fold;
mod fuse;

/// Largest tensor the reader accepts (elements): a claim beyond it is refused before allocating.
const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;

fn bad(pointer: &str, message: impl Into<String>) -> SpecError {
    SpecError::invalid(pointer, message)
}

/// The side files of a model saved with external data (`model.onnx.data`), by the `location`
/// its tensors name.
pub type ExternalFiles = HashMap<String, bytes::Bytes>;

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(proto::tensor_proto::DataLocation::External as i32)
}

/// The side files a model's tensors keep their data in (its initializers' and its `Constant`
/// nodes' `location`s), in the order first named; an empty list for a self-contained file.
pub fn external_locations(bytes: bytes::Bytes) -> SpecResult<Vec<String>> {
    let model = ModelProto::decode(bytes).map_err(|e| bad("", format!("is not an ONNX model (protobuf decoding failed: {e})")))?;
    let graph = model.graph.unwrap_or_default();
    let attrs = graph.node.iter().flat_map(|n| n.attribute.iter().filter_map(|a| a.t.as_ref()));
    let mut out: Vec<String> = Vec::new();
    for t in graph.initializer.iter().chain(attrs).filter(|t| is_external(t)) {
        if let Some(e) = t.external_data.iter().find(|e| e.key() == "location") {
            if !out.iter().any(|l| l == e.value()) {
                out.push(e.value().to_string());
            }
        }
    }
    Ok(out)
}

/// An external tensor's bytes: `length` bytes (else the rest of the file) at `offset` of the
/// side file its `location` names.
fn external_bytes(t: &TensorProto, files: &ExternalFiles, pointer: &str) -> SpecResult<bytes::Bytes> {
    let name = t.name();
    let key = |k: &str| t.external_data.iter().find(|e| e.key() == k).map(|e| e.value());
    let location = key("location").ok_or_else(|| {
        bad(
            pointer,
            format!("tensor {name:?} keeps its data in an external file but names no location"),
        )
    })?;
    let file = files.get(location).ok_or_else(|| {
        bad(
            pointer,
            format!(
                "tensor {name:?} keeps its data in the file {location:?}, which the request did not send: upload the model as multipart/form-data with that file as a `data` part (curl -F model=@model.onnx -F data=@{location}), or export with the weights inside the file (torch.onnx.export(..., external_data=False))"
            ),
        )
    })?;
    let number = |k: &str| -> SpecResult<Option<u64>> {
        key(k)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(pointer, format!("tensor {name:?}: external data {k} {v:?} is not a byte count")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let len = file.len() as u64;
    let end = match number("length")? {
        Some(n) => offset.checked_add(n),
        None => Some(len),
    };
    match end {
        Some(end) if offset <= end && end <= len => Ok(file.slice(offset as usize..end as usize)),
        _ => Err(bad(
            pointer,
            format!(
                "tensor {name:?}: its data (offset {offset}, length {}) lies outside {location:?}, which holds {len} bytes (a truncated or different file?)",
                key("length").unwrap_or("to the end")
            ),
        )),
    }
}

/// The elements of an initializer as f64, checked against its declared shape (its bytes read
/// from a side file when it keeps them there).
fn tensor_values(t: &TensorProto, files: &ExternalFiles, pointer: &str) -> SpecResult<Constant> {
    let resolved;
    let t = if is_external(t) {
        resolved = TensorProto {
            raw_data: Some(external_bytes(t, files, pointer)?),
            data_location: None,
            external_data: Vec::new(),
            ..t.clone()
        };
        &resolved
    } else {
        t
    };
    let name = t.name();
    let mut n: u64 = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(bad(pointer, format!("tensor {name:?} has a negative dimension {d}")));
        }
        n = n.saturating_mul(d as u64);
    }
    if n > MAX_TENSOR_ELEMENTS {
        return Err(SpecError::too_large(
            pointer,
            "max_file_tensor_elements",
            MAX_TENSOR_ELEMENTS,
            format!(
                "tensor {name:?} claims {n} elements (shape {:?}); one tensor of a file may hold 2^31",
                t.dims
            ),
        ));
    }
    let ty = t.data_type();
    // float32 weights stay the file's bytes until something reads them
    if let (Ok(DataType::Float), Some(b)) = (DataType::try_from(ty), t.raw_data.as_ref()) {
        if b.len() as u64 != 4 * n {
            return Err(bad(
                pointer,
                format!(
                    "tensor {name:?} declares shape {:?} ({n} elements) but holds {} bytes (a truncated or corrupt file?)",
                    t.dims,
                    b.len()
                ),
            ));
        }
        return Ok(Constant {
            dims: t.dims.clone(),
            values: std::sync::Arc::new(LazyValues::f32_le(b.clone())),
            initializer: true,
            integer: false,
        });
    }
    let raw = t.raw_data.as_deref();
    let values: Vec<f64> = match (DataType::try_from(ty), raw) {
        // (float32 bytes were taken above, unread)
        (Ok(DataType::Float), _) => t.float_data.iter().map(|&x| x as f64).collect(),
        (Ok(DataType::Double), Some(b)) => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        (Ok(DataType::Double), None) => t.double_data.clone(),
        (Ok(DataType::Int64), Some(b)) => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        (Ok(DataType::Int64), None) => t.int64_data.iter().map(|&x| x as f64).collect(),
        (Ok(DataType::Int32), Some(b)) => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        (Ok(DataType::Int32), None) => t.int32_data.iter().map(|&x| x as f64).collect(),
        // (a causal mask's pattern: one byte each, or int32_data)
        (Ok(DataType::Bool), Some(b)) => b.iter().map(|&x| f64::from(u8::from(x != 0))).collect(),
        (Ok(DataType::Bool), None) => t.int32_data.iter().map(|&x| f64::from(u8::from(x != 0))).collect(),
        (other, _) => {
            return Err(bad(
                pointer,
                format!(
                    "tensor {name:?} has data type {}; float, double, int32, int64 and bool are read",
                    other.map(|d| d.as_str_name().to_string()).unwrap_or_else(|_| ty.to_string())
                ),
            ))
        }
    };
    if values.len() as u64 != n || raw.is_some_and(|b| b.len() as u64 % n.max(1) != 0) {
        return Err(bad(
            pointer,
            format!(
                "tensor {name:?} declares shape {:?} ({n} elements) but holds {} (a truncated or corrupt file?)",
                t.dims,
                values.len()
            ),
        ));
    }
    Ok(Constant {
        dims: t.dims.clone(),
        values: std::sync::Arc::new(values.into()),
        initializer: true,
        integer: matches!(DataType::try_from(ty), Ok(DataType::Int64 | DataType::Int32 | DataType::Bool)),
    })
}

/// One ONNX node's attributes by name.
struct Attrs<'a>(&'a NodeProto);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a proto::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name() == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i())
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f())
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn strings(&self, name: &str) -> Option<Vec<String>> {
        self.get(name)
            .map(|a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
    }
    fn string(&self, name: &str, default: &str) -> String {
        self.get(name)
            .and_then(|a| a.s.as_deref())
            .map_or(default.to_string(), |s| String::from_utf8_lossy(s).into_owned())
    }
}

/// The dynamo exporter's metadata entry `key` of a node (`pkg.torch.onnx.name_scopes`, ...).
pub(super) fn meta<'a>(node: &'a NodeProto, key: &str) -> Option<&'a str> {
    node.metadata_props.iter().find(|p| p.key() == key).map(|p| p.value())
}

/// The quoted strings of a Python list's repr, `['', 'layer1', 'layer1.0']`.
pub(super) fn python_list(text: &str) -> Vec<&str> {
    text.split('\'').skip(1).step_by(2).collect()
}

/// PyTorch's module name from the dynamo exporter's metadata: `pkg.torch.onnx.name_scopes` lists
/// the qualified names of the modules the op ran in (`['', 'layer1', 'layer1.0',
/// 'layer1.0.relu', 'relu_1']`) and `pkg.torch.onnx.class_hierarchy` their classes. An op run by
/// a `torch.nn` layer module is that module (`layer1.0.relu`); one a composite module runs in its
/// forward is named inside it (`layer1.0.add`).
fn dynamo_name(node: &NodeProto) -> Option<String> {
    let scopes = python_list(meta(node, "pkg.torch.onnx.name_scopes")?);
    let classes = python_list(meta(node, "pkg.torch.onnx.class_hierarchy").unwrap_or_default());
    let (op, modules) = scopes.split_last()?;
    let op = op.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_');
    // an op of the model's own forward (`x.view(...)`) is named by itself
    let Some(module) = modules.iter().rev().find(|m| !m.is_empty()) else {
        return (!op.is_empty()).then(|| op.to_string());
    };
    // the class of the innermost module, one before the op's own entry
    let class = classes.len().checked_sub(2).and_then(|i| classes.get(i)).copied().unwrap_or("");
    // a recurrent op (aten.lstm, gru, rnn_tanh, rnn_relu) is the module that runs it, even one
    // of the model's own subclasses of nn.LSTM
    let recurrent = classes.last().is_some_and(|c| {
        ["aten.lstm", "aten.gru", "aten.rnn_tanh", "aten.rnn_relu"]
            .iter()
            .any(|r| c.starts_with(r))
    });
    let layer = recurrent || (class.starts_with("torch.nn.modules.") && !class.starts_with("torch.nn.modules.container."));
    Some(if layer { module.to_string() } else { format!("{module}.{op}") })
}

/// The arguments of the call the dynamo exporter recorded for a node (`pkg.torch.onnx.fx_node`:
/// `%y : [...] = call_function[target=torch.ops.aten.conv2d.default](args = (%x, %p_w, 3), kwargs
/// = {})`) when its target starts with one of `targets` (after `torch.ops.aten.`), each argument
/// as written, closing parentheses trimmed; None without such a record.
fn fx_args<'a>(node: &'a NodeProto, targets: &[&str]) -> Option<Vec<&'a str>> {
    let fx = meta(node, "pkg.torch.onnx.fx_node")?;
    let (head, args) = fx.split_once("](args = (")?;
    let target = head.split_once("target=torch.ops.aten.")?.1;
    targets
        .iter()
        .any(|t| target.starts_with(t))
        .then(|| args.split(", ").map(|a| a.trim_end_matches(')').trim()).collect())
}

/// The bias of zeros that the dynamo exporter drops from a Conv or Gemm (torchvision
/// zeroes ViT's `conv_proj` and head biases, for one): its metadata still shows the op's bias
/// parameter (`aten.conv2d(%x, %p_conv_proj_weight, %p_conv_proj_bias, ...)`), so the layer keeps
/// its parameter, as the module has it.
fn zero_bias(node: &NodeProto, len: i64) -> Option<Constant> {
    let bias = *fx_args(node, &["conv", "linear"])?.get(2)?;
    (bias.starts_with("%p_") && bias.ends_with("bias") && (1..=1 << 24).contains(&len)).then(|| Constant {
        dims: vec![len],
        values: std::sync::Arc::new(LazyValues::from(vec![0.0; len as usize])),
        initializer: true,
        integer: false,
    })
}

/// A BatchNorm that the dynamo exporter's optimizer folded into the Conv, ConvTranspose or Gemm
/// before it: the node's metadata is then the norm's call,
/// `aten._native_batch_norm_legit_no_training(%conv2d, %p_1_weight, %p_1_bias, %b_1_running_mean,
/// %b_1_running_var, 0.1, 1e-05)` (`None, None` for affine=False), and its name scopes the norm's
/// module. The norm's own numbers are gone (folded into the weights); its place, affine, eps
/// and channels are not, and a bias the layer did not have of its own is the norm's `shift`.
struct FoldedNorm {
    affine: bool,
    eps: f64,
    channels: i64,
    shift: Option<Constant>,
}

/// An embedding's `padding_idx` from the dynamo exporter's metadata: ONNX's Gather has none, but
/// the node's `pkg.torch.onnx.fx_node` keeps the call, `aten.embedding.default(%w, %ids, 3)`
/// (nn.Embedding passes a non-negative index; PyTorch's default -1, no padding row, is left out).
/// The TorchScript exporter keeps no such record.
fn embedding_padding(node: &NodeProto, rows: i64) -> Option<u64> {
    let index: i64 = fx_args(node, &["embedding.default"])?.get(2)?.parse().ok()?;
    u64::try_from(index).ok().filter(|&i| (i as i64) < rows)
}

/// PyTorch's module name from the legacy exporter's scope names: `/layer1/layer1.0/relu/Relu`
/// is module `layer1.0.relu`, `/layer1/layer1.0/Add` the add of module `layer1.0`. Other names
/// are kept as they are.
fn scoped_name(name: &str, op: &str) -> Option<String> {
    let Some(scoped) = name.strip_prefix('/') else {
        return (!name.is_empty()).then(|| name.to_string());
    };
    let (module, last) = legacy_scope(scoped)?;
    let op_part = if last.split('_').next() == Some(op) { None } else { Some(last) };
    match (module.is_empty(), op_part) {
        (true, _) => Some(last.to_ascii_lowercase()),
        (false, None) if matches!(op, "Add" | "Mul" | "Concat" | "Flatten" | "Reshape" | "Sum") => {
            Some(format!("{module}.{}", last.to_ascii_lowercase()))
        }
        (false, None) => Some(module),
        (false, Some(p)) => Some(format!("{module}.{p}")),
    }
}

/// `layer1/layer1.0/relu/Relu` -> (`layer1.0.relu`, `Relu`).
pub(super) fn legacy_scope(scoped: &str) -> Option<(String, &str)> {
    let mut parts: Vec<&str> = scoped.split('/').filter(|p| !p.is_empty()).collect();
    let last = parts.pop()?;
    // each scope is named relative to its parent's own name: features / features.1 / conv /
    // conv.0 / conv.0.2 is module features.1.conv.0.2
    let mut module = String::new();
    let mut prev = "";
    for p in parts {
        let local = p.strip_prefix(prev).and_then(|r| r.strip_prefix('.')).filter(|_| !prev.is_empty());
        module = match (module.is_empty(), local) {
            (true, _) => p.to_string(),
            (false, Some(rest)) => format!("{module}.{rest}"),
            (false, None) => format!("{module}.{p}"),
        };
        prev = p;
    }
    // the last part is the op type, numbered when a module runs it more than once (`Add_1`)
    Some((module, last))
}

/// Why one node cannot be mapped (collected, then refused all together).
type Refusal = String;

/// A whole file, read: the graph-form spec (as the JSON a user would have written, so one parser
/// checks both) and the weights by node name.
pub struct Imported {
    pub spec: Value,
    pub weights: ModelWeights,
    /// Node names of the spec in order, each with the ONNX node it came from: `(name, onnx
    /// name, op_type)`.
    pub origin: Vec<(String, String, String)>,
    /// Reshapes to a fixed `[1, F]`: (spec node index, F).
    pub features: Vec<(usize, u64)>,
}

struct Reader {
    constants: HashMap<String, std::rc::Rc<Constant>>,
    /// ONNX tensor name -> the spec node (or "input") that produces it.
    tensors: HashMap<String, String>,
    /// A learned tensor passed on unchanged (an Expand to its own shape) -> the initializer.
    aliases: HashMap<String, String>,
    nodes: Vec<Value>,
    origin: Vec<(String, String, String)>,
    names: HashMap<String, usize>,
    weights: ModelWeights,
    refused: Vec<String>,
    /// A refused node is one of the per-step ops of an `nn.RNN` the dynamo exporter unrolled.
    unrolled_rnn: bool,
    /// Reshapes to `[1, F]`: (spec node index, F), checked against the inferred shape.
    features: Vec<(usize, u64)>,
    /// Module names that own a `<module>.weight` initializer: their nodes take those names.
    modules: std::collections::HashSet<String>,
    /// Every module path the initializers' names hold, with its parents (`transformer`,
    /// `transformer.h`, `transformer.h.0`, `transformer.h.0.c_attn` for
    /// `transformer.h.0.c_attn.bias`).
    module_paths: std::collections::HashSet<String>,
    /// Axes of the model's sample (its input without the batch axis), and of the tensors whose
    /// shapes were learned: a global pool of a three-axis tensor `[N, C, L]` is a 1-D one.
    input_rank: usize,
    ranks: HashMap<String, usize>,
    /// The shapes learned so far (batch axis included; None where unknown).
    dims: HashMap<String, Vec<Option<i64>>>,
    /// The input holds token ids (an embedding's Gather reads them).
    token_ids: bool,
    /// The ONNX tensors that hold their spec tensor in another layout (see [`Layout`]).
    layouts: HashMap<String, Layout>,
    /// The Transpose(0, 2, 3, 1) that made a tensor channels-last, for naming its permute
    /// where something reads it other than position by position (see `materialize`).
    transposed_by: HashMap<String, (NodeProto, usize)>,
    /// How many nodes read each tensor, and the tensors the model returns.
    readers: HashMap<String, usize>,
    outputs: std::collections::HashSet<String>,
    /// An initializer the dynamo exporter's optimizer folded from one model parameter (ViT's
    /// `class_token.expand(n, -1, -1)` at batch 1 becomes an initializer named `expand`): the
    /// parameter's own name, from the value's `pkg.onnxscript.optimizer.folded_from`.
    folded_from: HashMap<String, String>,
}

/// A `narrow` layer's body: positions `start..start + length` along PyTorch's `dim`.
fn narrow(dim: i64, start: u64, length: u64) -> Map<String, Value> {
    Map::from_iter([
        ("type".to_string(), json!("narrow")),
        ("dim".to_string(), json!(dim)),
        ("start".to_string(), json!(start)),
        ("length".to_string(), json!(length)),
    ])
}

/// A name and its exporter's counter: `view_2` is (`view`, true), `expand` (`expand`, false).
fn counted(n: &str) -> (&str, bool) {
    match n.rsplit_once('_') {
        Some((op, d)) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => (op, true),
        _ => (n, false),
    }
}

/// The one model parameter a folded value came from: the names in its
/// `pkg.onnxscript.optimizer.folded_from` list but the exporter's temporaries (`val_3`), if
/// exactly one is left and it reads as a PyTorch name, and the value keeps the parameter's
/// elements in their order (the exporter names it after the op: `expand`, `view_2`; a folded
/// `transpose` or `mul` is another tensor and keeps its own name).
fn folded_parameters(graph: &proto::GraphProto) -> HashMap<String, String> {
    let same_elements = |n: &str| {
        matches!(
            counted(n).0,
            "expand" | "view" | "reshape" | "_unsafe_view" | "clone" | "contiguous" | "unsqueeze" | "squeeze" | "alias" | "detach"
        )
    };
    let temporary = |n: &str| counted(n) == ("val", true);
    let pytorch_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 160
            && n.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    };
    graph
        .value_info
        .iter()
        .filter_map(|v| {
            let list = v
                .metadata_props
                .iter()
                .find(|p| p.key() == "pkg.onnxscript.optimizer.folded_from")?
                .value();
            match python_list(list).into_iter().filter(|n| !temporary(n)).collect::<Vec<_>>()[..] {
                [one] if pytorch_name(one) && one != v.name() && same_elements(v.name()) => Some((v.name().to_string(), one.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// A layout the exporter writes a spec tensor in around the ops that need it: the ONNX tensor is
/// the same spec tensor, readable only by those ops and the transposes and reshapes around them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// A sequence time-major, `[L, N, D]` (a Transpose(1, 0, 2) of a batch-first `[N, L, D]`),
    /// for a recurrent op.
    TimeMajor,
    /// A recurrent op's output `Y`, `[L, dirs, N, H]`, or (`moved`) its Transpose(0, 2, 1, 3)
    /// `[L, N, dirs, H]`: time-major once squeezed or reshaped to `[L, N, dirs * H]`.
    Recurrent { dirs: i64, moved: bool },
    /// An image channels-last, `[N, H, W, C]` (a Transpose(0, 2, 3, 1), as torchvision's ConvNeXt
    /// blocks permute for their layernorm and linear layers): read by a layernorm over the
    /// channels (`layernorm2d`), a linear layer over them (a 1x1 `conv2d`), element-wise
    /// activations and the Transpose back.
    ChannelsLast,
}

/// The spatial attribute of a 1-D (`one_d`: one value, as an int) or 2-D operation.
fn spatial(v: &[i64], one_d: bool, what: &str) -> Result<Value, Refusal> {
    match (v, one_d) {
        ([a], true) if *a >= 0 => Ok(json!(a)),
        (_, false) => Ok(json!(spatial_ints(v, what)?)),
        _ => Err(format!("{what} {v:?}: a 1-D operation takes one value")),
    }
}

/// ONNX pads `[begin, end]` of a 1-D operation as PyTorch's symmetric padding, or None.
fn symmetric1(p: &[i64]) -> Option<u64> {
    match p {
        [b, e] if b == e && *b >= 0 => Some(*b as u64),
        _ => None,
    }
}

fn spatial_ints(v: &[i64], what: &str) -> Result<Vec<u64>, Refusal> {
    match v {
        [_, _] | [_, _, _] if v.iter().all(|&x| x >= 0) => Ok(v.iter().map(|&x| x as u64).collect()),
        _ => Err(format!(
            "{what} {v:?}: only 1-D, 2-D and 3-D operations (one to three spatial axes) are supported"
        )),
    }
}

/// ONNX pads `[begins..., ends...]` (`[top, left, bottom, right]`, or a volume's
/// `[front, top, left, back, bottom, right]`) as PyTorch's symmetric `[h, w]` or `[d, h, w]`,
/// or None.
fn symmetric(p: &[i64]) -> Option<Vec<u64>> {
    let (begins, ends) = p.split_at(p.len() / 2);
    (matches!(p.len(), 4 | 6) && begins == ends && begins.iter().all(|&x| x >= 0)).then(|| begins.iter().map(|&x| x as u64).collect())
}

impl Reader {
    /// Axes of a tensor, batch included: its learned rank, else the model input's.
    fn rank_of(&self, t: &str) -> usize {
        self.ranks.get(t).copied().unwrap_or(self.input_rank + 1)
    }

    /// Axis `axis` of tensor `t` counted from its start: a negative axis needs `t`'s rank, which
    /// is known for the model's input and once shapes are learned (a refusal until then makes
    /// the reader learn the shapes of what it read and read again; guessing the input's rank
    /// would read `x[..., :3]` after an embedding as a crop of the tokens).
    fn axis_of(&self, t: &str, axis: i64) -> Result<i64, Refusal> {
        if axis >= 0 {
            return Ok(axis);
        }
        let rank = match self.tensors.get(t).map(String::as_str) {
            Some(GRAPH_INPUT) => Some(self.input_rank + 1),
            _ => self.ranks.get(t).copied(),
        };
        rank.map(|r| axis + r as i64)
            .ok_or_else(|| format!("reads axis {axis} of {t:?}, whose rank is not known"))
    }

    fn constant(&self, name: &str) -> Option<&Constant> {
        self.constants.get(name).map(|c| &**c)
    }

    /// The spec node that produces a tensor.
    fn source(&self, tensor: &str) -> Result<String, Refusal> {
        self.tensors.get(tensor).cloned().ok_or_else(|| {
            if self.constants.contains_key(tensor) {
                format!("reads the constant {tensor:?} as a data input (only weights of Conv, Gemm, MatMul and normalizations are read)")
            } else {
                format!("reads {tensor:?}, which no node produces")
            }
        })
    }

    /// A module's name from the TorchScript exporter's scopes, rooted: its scopes leave out a
    /// container whose own forward never runs (nanoGPT's `ModuleDict` `transformer`), so that
    /// `h.0.c_attn` is `transformer.h.0.c_attn` where the initializers' names put `h.0` under one
    /// parent only, and `h` nowhere at the top.
    /// Only a scope of two parts or more is rooted, by its first two (`h.0`): a top-level layer
    /// whose weights were all renamed (a GRU's packed `onnx::GRU_N`, a MatMul's folded weight) is
    /// known by no initializer, and its one-part name (`1`, `head`) may end another path.
    fn rooted(&self, scoped: String) -> String {
        let parts: Vec<&str> = scoped.splitn(3, '.').collect();
        if parts.len() < 2 || self.module_paths.contains(parts[0]) {
            return scoped;
        }
        let under = format!(".{}.{}", parts[0], parts[1]);
        let parents: std::collections::BTreeSet<&str> = self.module_paths.iter().filter_map(|m| m.strip_suffix(&under)).collect();
        match parents.iter().next() {
            Some(parent) if parents.len() == 1 => format!("{parent}.{scoped}"),
            _ => scoped,
        }
    }

    /// A unique node name: the PyTorch module's name where the node has a weight named
    /// `<module>.weight`, else the ONNX node's name.
    fn name_for(&mut self, node: &NodeProto, index: usize, weight: Option<&str>) -> String {
        // a weight that several nodes read (the dynamo exporter keeps one copy of equal tensors,
        // such as every LayerNorm's ones at initialization) names none of them: the metadata does
        // and an embedding's table may be a tied tensor that the dynamo exporter names after the
        // other module (GPT-2's `lm_head.weight` for `transformer.wte`'s Gather)
        let dynamo = dynamo_name(node);
        let shared =
            (weight.is_some_and(|w| self.readers.get(w).copied().unwrap_or(0) > 1) || node.op_type() == "Gather") && dynamo.is_some();
        let has_weight = weight.is_some();
        let weight = weight.filter(|_| !shared);
        let base = weight
            .and_then(|w| w.strip_suffix(".weight"))
            .map(str::to_string)
            .or_else(|| {
                // an op inside a module that owns weights (F.pad in a reflect-padded Conv2d)
                // leaves the module's name to the module's own op
                dynamo
                    .or_else(|| scoped_name(node.name(), node.op_type()).map(|n| self.rooted(n)))
                    .map(|n| match !has_weight && self.modules.contains(&n) {
                        true => format!("{n}.{}", node.op_type().to_ascii_lowercase()),
                        false => n,
                    })
            })
            .filter(|n| n.len() <= 160 && n != GRAPH_INPUT)
            .unwrap_or_else(|| format!("{}_{index}", node.op_type().to_ascii_lowercase()));
        let mut name = base.clone();
        let mut k = 1;
        while self.names.contains_key(&name) || name == GRAPH_INPUT {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.names.insert(name.clone(), self.nodes.len());
        name
    }

    fn push(&mut self, node: &NodeProto, index: usize, weight: Option<&str>, inputs: Vec<String>, mut body: Map<String, Value>) -> String {
        let name = self.name_for(node, index, weight);
        body.insert("name".into(), json!(name));
        body.insert("inputs".into(), json!(inputs));
        self.nodes.push(Value::Object(body));
        self.origin
            .push((name.clone(), node.name().to_string(), node.op_type().to_string()));
        name
    }

    /// A BatchNorm folded into `node` (a Conv, ConvTranspose or Gemm) by the dynamo exporter, and
    /// the folded shift: the node's bias `b` when the layer had none of its own (the optimizer
    /// names it `{weight}_bias`; the layer's own is `{module}.bias`), taken out of `b`.
    fn unfolded(&self, node: &NodeProto, b: &mut Option<Constant>, channels: i64) -> Option<FoldedNorm> {
        let args = fx_args(node, &["_native_batch_norm_legit_no_training.default"])?;
        let eps = args
            .get(6)
            .and_then(|e| e.parse::<f64>().ok())
            .filter(|e| e.is_finite() && *e > 0.0 && *e < 1.0)
            .unwrap_or(1e-5);
        let own = node
            .input
            .get(1)
            .and_then(|w| w.strip_suffix(".weight"))
            .map(|m| format!("{m}.bias"));
        let shift = match node.input.get(2) {
            Some(t) if !t.is_empty() && Some(t) != own.as_ref() => b.take(),
            _ => None,
        };
        Some(FoldedNorm {
            affine: args.get(1).is_some_and(|a| a.starts_with('%')),
            eps,
            channels,
            shift,
        })
    }

    /// The BatchNorm the exporter folded into layer `layer`, back in its place as the module has
    /// it (its module's name, affine, eps, channels: every count and parameter is the module's):
    /// the folded weights already hold its scale, so it is an identity here, up to rounding
    /// (weight 1, bias 0, running_var 1 - eps), its running mean minus the folded shift where
    /// the layer had no bias of its own. Returns the norm's node name.
    fn restore_norm(&mut self, node: &NodeProto, index: usize, layer: String, norm: FoldedNorm) -> String {
        let n = norm.channels.max(0) as usize;
        let filled = |v: Vec<f64>| std::sync::Arc::new(LazyValues::from(v));
        let mean = match norm.shift {
            Some(s) => filled(s.values.iter().map(|v| -v).collect()),
            None => filled(vec![0.0; n]),
        };
        let mut tensors = Vec::new();
        if norm.affine {
            tensors.push(("weight".to_string(), filled(vec![1.0; n])));
            tensors.push(("bias".to_string(), filled(vec![0.0; n])));
        }
        tensors.push(("running_mean".to_string(), mean));
        tensors.push(("running_var".to_string(), filled(vec![1.0 - norm.eps; n])));
        let body: Map<String, Value> = [
            ("type".to_string(), json!("batchnorm")),
            ("num_features".to_string(), json!(norm.channels)),
            ("eps".to_string(), json!(norm.eps)),
            ("affine".to_string(), json!(norm.affine)),
        ]
        .into_iter()
        .collect();
        let name = self.push(node, index, None, vec![layer], body);
        self.weights.insert(name.clone(), tensors);
        name
    }

    /// The value of a one-element float constant that is no parameter: a `Constant` node's, or an
    /// initializer the dynamo exporter named `val_N` (its constants; parameters keep their
    /// module's names).
    fn scalar_constant(&self, t: &str) -> Option<f64> {
        let c = self.constant(t)?;
        let exporters = !c.initializer
            || t.strip_prefix("val_")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        (exporters && !c.integer && c.values.count() == 1).then(|| c.values[0])
    }

    /// A `Mul` or `Div` of a tensor by such a constant (`x * c`, `c * x`, `x / c`): the tensor's
    /// input index and the factor it is multiplied by.
    fn scaling(&self, node: &NodeProto) -> Option<(usize, f64)> {
        let [a, b] = node.input.as_slice() else { return None };
        match (node.op_type(), self.scalar_constant(a), self.scalar_constant(b)) {
            ("Mul", _, Some(c)) => Some((0, c)),
            ("Mul", Some(c), None) => Some((1, c)),
            ("Div", _, Some(c)) => Some((0, 1.0 / c)),
            _ => None,
        }
    }

    /// A causal mask written by hand on a computed tensor: `Where(mask, -inf, x)` with a constant
    /// mask true exactly above the diagonal (nanoGPT's `masked_fill(tril[:, :, :T, :T] == 0,
    /// -inf)`), `Where(mask, x, -inf)` with one true on and below it, or `x + mask` with a
    /// constant -inf above the diagonal and 0 elsewhere. The data input's index and the mask's
    /// last two axes `[n, m]` (its others 1).
    fn causal_masking(&self, node: &NodeProto) -> Option<(usize, [i64; 2])> {
        let computed = |t: &String| self.constant(t).is_none();
        // -inf, or the most negative float (Hugging Face's torch.finfo(dtype).min)
        let neg_inf = |t: &String| self.scalar_constant(t).is_some_and(fuse::masked);
        let (x, mask, above, below): (usize, &String, fn(f64) -> bool, fn(f64) -> bool) = match (node.op_type(), node.input.as_slice()) {
            ("Where", [c, a, b]) if neg_inf(a) && computed(b) => (2, c, |v| v != 0.0, |v| v == 0.0),
            ("Where", [c, a, b]) if neg_inf(b) && computed(a) => (1, c, |v| v == 0.0, |v| v != 0.0),
            ("Add", [a, b]) if computed(a) && !computed(b) => (0, b, fuse::masked, |v| v == 0.0),
            ("Add", [a, b]) if computed(b) && !computed(a) => (1, a, fuse::masked, |v| v == 0.0),
            _ => return None,
        };
        fuse::triangle(self.constant(mask)?, above, below).map(|nm| (x, nm))
    }

    fn weight(&self, node: &NodeProto, i: usize, role: &str) -> Result<Option<Constant>, Refusal> {
        match node.input.get(i).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(t) => self
                .constant(t)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("its {role} {t:?} is computed, not a constant initializer (not supported)")),
        }
    }

    /// Emits the one layer of a pattern of ops (fuse.rs) at its first node.
    fn fused(&mut self, node: &NodeProto, index: usize, f: &fuse::Fusion) -> Result<(), Refusal> {
        // (a cross-attention's latent queries or memory are learned tensors: parameter nodes)
        let mut srcs = vec![if f.extra.is_empty() {
            self.source(&f.input)?
        } else {
            self.data_or_learned(node, &f.input, Some(2))?
        }];
        for t in &f.extra {
            srcs.push(self.data_or_learned(node, t, Some(2))?);
        }
        let mut body = Map::new();
        let mut tensors = Vec::new();
        let mut module = None;
        match &f.layer {
            fuse::Layer::Attention {
                module: m,
                heads,
                bias,
                causal,
                need_weights,
                weights,
                ..
            } => {
                body.insert("type".into(), json!("multihead_attention"));
                body.insert("num_heads".into(), json!(heads));
                body.insert("bias".into(), json!(bias));
                body.insert("is_causal".into(), json!(causal));
                body.insert("need_weights".into(), json!(need_weights));
                tensors.extend(weights.iter().map(|(role, v)| (role.to_string(), v.clone())));
                module = Some(format!("{m}.weight"));
            }
            fuse::Layer::UnrolledRnn {
                module: m,
                time_major_in,
                time_major_out: _,
                relu,
                input_size,
                hidden,
                layers,
                bidirectional,
                bias,
                weights,
            } => {
                // (a module that starts without the Transpose to time-major reads a sequence the
                // exporter left time-major for it; anything else is a module that is not batch
                // first, which the model language does not have)
                if *time_major_in != (self.layout(&f.input) == Some(Layout::TimeMajor)) {
                    return Err(if *time_major_in {
                        format!("{m:?} reads {:?} as a time-major sequence: an nn.RNN with batch_first=False is not supported (the model language's rnn is batch first)", f.input)
                    } else {
                        format!("{m:?} reads {:?}, a sequence in the exporter's layout around a recurrent op, in a way the importer does not follow", f.input)
                    });
                }
                body.insert("type".into(), json!("rnn"));
                body.insert("input_size".into(), json!(input_size));
                body.insert("hidden_size".into(), json!(hidden));
                body.insert("num_layers".into(), json!(layers));
                body.insert("bidirectional".into(), json!(bidirectional));
                body.insert("bias".into(), json!(bias));
                body.insert("nonlinearity".into(), json!(if *relu { "relu" } else { "tanh" }));
                tensors.extend(weights.iter().cloned());
                module = Some(format!("{m}.weight"));
            }
            fuse::Layer::Sdpa {
                causal,
                scale,
                k_heads_last,
            } => {
                if let Some((proto, i)) = k_heads_last {
                    srcs[1] = self.push_permute(proto, *i, srcs[1].clone(), [0, 2, 1, 3]);
                }
                body.insert("type".into(), json!("scaled_dot_product_attention"));
                body.insert("is_causal".into(), json!(causal));
                // PyTorch's default, 1/sqrt(E), unless the exporter's factors say otherwise
                let e = self.dims.get(&f.input).and_then(|d| d.last().copied().flatten());
                if !e.is_some_and(|e| e > 0 && (scale * (e as f64).sqrt() - 1.0).abs() < 1e-5) {
                    body.insert("scale".into(), json!(scale));
                }
            }
            fuse::Layer::Silu => {
                body.insert("type".into(), json!("silu"));
            }
            fuse::Layer::Gelu => {
                body.insert("type".into(), json!("gelu"));
            }
            fuse::Layer::Mish => {
                body.insert("type".into(), json!("mish"));
            }
            fuse::Layer::ChannelShuffle { groups } => {
                body.insert("type".into(), json!("channel_shuffle"));
                body.insert("groups".into(), json!(groups));
            }
            fuse::Layer::GroupNorm { groups, eps, weight, bias } => {
                let affine = weight.as_ref().is_some_and(|w| w.initializer);
                body.insert("type".into(), json!("groupnorm"));
                body.insert("num_groups".into(), json!(groups));
                body.insert("eps".into(), json!(eps));
                body.insert("affine".into(), json!(affine));
                if let (true, Some(w), Some(b)) = (affine, weight, bias) {
                    tensors.push(("weight".to_string(), w.values.clone()));
                    tensors.push(("bias".to_string(), b.values.clone()));
                }
            }
        }
        // named after the module whose forward the pattern is (`/2/Reshape` is module 2); a
        // scaled_dot_product_attention call after the function, in its module's scope
        let scope = node
            .name()
            .strip_prefix('/')
            .and_then(legacy_scope)
            .map(|(m, _)| m)
            .filter(|m| !m.is_empty());
        let module = module.or_else(|| match (&f.layer, scope) {
            (fuse::Layer::Sdpa { .. }, Some(m)) => Some(format!("{m}.scaled_dot_product_attention.weight")),
            (fuse::Layer::Sdpa { .. }, None) => Some("scaled_dot_product_attention.weight".into()),
            (_, m) => m.map(|m| format!("{m}.weight")),
        });
        let name = self.push(node, index, module.as_deref(), srcs, body);
        if !tensors.is_empty() {
            self.weights.insert(name.clone(), tensors);
        }
        // an activation written as several ops keeps a channels-last image channels-last; an
        // attention's output may be left time-major for the recurrent op that reads it
        let layout = match f.layer {
            fuse::Layer::Attention { time_major: true, .. } | fuse::Layer::UnrolledRnn { time_major_out: true, .. } => {
                Some(Layout::TimeMajor)
            }
            _ => self.layout(&f.input).filter(|l| *l == Layout::ChannelsLast),
        };
        self.bind(f.output.clone(), name, layout);
        Ok(())
    }

    /// The spec tensor an element-wise op or a concatenation reads as `t`: a node's output, or a
    /// learned tensor of the file (an initializer such as ConvNeXt's `layer_scale` [C, 1, 1] or
    /// ViT's `pos_embedding` [1, L, E]) as a `parameter` node under the initializer's name, its
    /// shape the sample's (a leading batch axis of 1 dropped where the tensor it meets has
    /// one more axis than the sample... as the batched broadcast does).
    fn data_or_parameter(&mut self, node: &NodeProto, t: &str) -> Result<String, Refusal> {
        self.data_or_learned(node, t, None)
    }

    /// [`Self::data_or_parameter`] where the reader knows the sample's rank (a cross-attention
    /// reads sequences: a learned `[1, E]` is one token, not a batch axis and E features).
    fn data_or_learned(&mut self, node: &NodeProto, t: &str, rank: Option<usize>) -> Result<String, Refusal> {
        let alias = self.aliases.get(t).cloned();
        let t = alias.as_deref().unwrap_or(t);
        let Some(c) = self.constant(t).filter(|c| c.initializer && !c.integer).cloned() else {
            return self.source(t);
        };
        if let Some(name) = self.tensors.get(t) {
            return Ok(name.clone());
        }
        // the sample rank of a tensor the op also reads (learned shapes carry the batch axis);
        // before shapes are learned, a leading 1 is taken for the batch axis (a [C, 1, 1] scale
        // has none): waiting for the shapes would cost one reading of the file per block
        // a learned sequence the dynamo exporter folded time-major at batch 1, [L, 1, E], is
        // [L, E] (the same values in the same order)
        let c = match (rank, c.dims.as_slice()) {
            (Some(2), &[l, 1, e]) => Constant {
                dims: vec![l, e],
                ..c.clone()
            },
            _ => c,
        };
        let rank = rank.or_else(|| {
            node.input
                .iter()
                .filter(|o| o.as_str() != t && self.constant(o).is_none())
                .find_map(|o| match self.tensors.get(o).map(String::as_str) {
                    Some(GRAPH_INPUT) => Some(self.input_rank),
                    _ => self.ranks.get(o).map(|r| r.saturating_sub(1)),
                })
        });
        let dims: Vec<u64> = match (c.dims.as_slice(), rank) {
            ([1, rest @ ..], Some(rank)) if rest.len() == rank => rest.iter().map(|&d| d as u64).collect(),
            ([1, rest @ ..], None) if !rest.is_empty() => rest.iter().map(|&d| d as u64).collect(),
            (d, Some(rank)) if d.len() == rank => d.iter().map(|&d| d as u64).collect(),
            (d, None) if !d.is_empty() => d.iter().map(|&d| d as u64).collect(),
            (d, rank) => {
                return Err(format!(
                    "reads the learned tensor {t:?} of shape {d:?} against a sample of {} axes: only a tensor of the sample's axes (or with a leading 1) is supported",
                    rank.map_or("unknown".to_string(), |r| r.to_string())
                ))
            }
        };
        // (the parameter's own name where the exporter folded it into another tensor)
        let own = self.folded_from.get(t).map_or(t, String::as_str);
        let name = if self.names.contains_key(own) || own == GRAPH_INPUT || own.is_empty() || own.len() > 160 {
            format!("{own}_{}", self.nodes.len())
        } else {
            own.to_string()
        };
        self.names.insert(name.clone(), self.nodes.len());
        self.nodes
            .push(json!({"name": name, "type": "parameter", "shape": dims, "inputs": []}));
        self.origin.push((name.clone(), t.to_string(), "initializer".to_string()));
        self.weights.insert(name.clone(), vec![("weight".to_string(), c.values.clone())]);
        self.tensors.insert(t.to_string(), name.clone());
        Ok(name)
    }

    /// A Reshape's target shape, which must be a constant.
    fn reshape_target(&self, node: &NodeProto) -> Result<&Constant, Refusal> {
        node.input
            .get(1)
            .and_then(|t| self.constant(t))
            .ok_or_else(|| "its shape is computed in the graph; export with constant folding".to_string())
    }

    /// The layout the ONNX tensor `t` holds its spec tensor in (None: the spec's own).
    fn layout(&self, t: &str) -> Option<Layout> {
        self.layouts.get(t).copied()
    }

    /// The ONNX tensor `out` is the spec node `node`'s tensor, in `layout`.
    fn bind(&mut self, out: String, node: String, layout: Option<Layout>) {
        if let Some(l) = layout {
            self.layouts.insert(out.clone(), l);
        }
        self.tensors.insert(out, node);
    }

    /// A channels-last tensor `t` (the spec's image, held `[N, H, W, C]`) made what it holds:
    /// a permute of the image, named after the Transpose that made it, which `t` now names.
    fn materialize(&mut self, t: &str) -> Result<(), Refusal> {
        let src = self.source(t)?;
        let (proto, index) = self
            .transposed_by
            .get(t)
            .cloned()
            .ok_or_else(|| format!("reads {t:?}, a channels-last image, other than position by position"))?;
        let name = self.push_permute(&proto, index, src, [0, 2, 3, 1]);
        self.layouts.remove(t);
        self.tensors.insert(t.to_string(), name);
        Ok(())
    }

    /// A `permute` of the spec tensor `src` that no ONNX node writes by itself (the exporter
    /// folded it into another order, or dropped it), named after the file's Transpose `proto`.
    fn push_permute(&mut self, proto: &NodeProto, index: usize, src: String, dims: [i64; 4]) -> String {
        let mut body = Map::new();
        body.insert("type".into(), json!("permute"));
        body.insert("dims".into(), json!(dims));
        self.push(proto, index, None, vec![src], body)
    }

    /// `out` is the tensor `from` in another layout of the exporter's (the same spec tensor).
    fn relayout(&mut self, from: &str, out: String, layout: Option<Layout>) -> Result<(), Refusal> {
        let n = self.source(from)?;
        self.bind(out, n, layout);
        Ok(())
    }

    /// `Add(bias, MatMul(x, W))` where the MatMul became a linear layer without a bias and no
    /// other node reads its output: the bias goes into that layer, the Add's output is its.
    fn linear_bias(&mut self, node: &NodeProto) -> bool {
        let [a, b] = node.input.as_slice() else { return false };
        let (c, t) = match (self.constant(a), self.constant(b)) {
            (Some(c), None) => (c.clone(), b),
            (None, Some(c)) => (c.clone(), a),
            _ => return false,
        };
        let Some(name) = self.tensors.get(t).cloned() else { return false };
        let Some(&i) = self.names.get(&name) else { return false };
        let layer = &self.nodes[i];
        // a linear layer, or the 1x1 convolution a linear layer over channels-last channels is
        let outputs = if layer["type"] == "linear" {
            &layer["out_features"]
        } else if layer["type"] == "conv2d" && layer["kernel_size"] == 1 && self.layout(t) == Some(Layout::ChannelsLast) {
            &layer["out_channels"]
        } else {
            return false;
        };
        let fits = layer["bias"] == false && c.dims.len() == 1 && *outputs == json!(c.dims[0]) && self.readers.get(t) == Some(&1);
        if !fits {
            return false;
        }
        self.nodes[i]["bias"] = json!(true);
        self.weights
            .entry(name.clone())
            .or_default()
            .push(("bias".to_string(), c.values.clone()));
        if let Some(out) = node.output.first() {
            let layout = self.layout(t).filter(|l| *l == Layout::ChannelsLast);
            self.bind(out.clone(), name, layout);
        }
        true
    }

    /// An ONNX LSTM, GRU or RNN (one layer, forward or bidirectional) on the exporter's
    /// time-major sequence: PyTorch's layer, its weights in PyTorch's gate order (LSTM i, f, g, o
    /// from ONNX's i, o, f, c; GRU r, z, n from z, r, h) and names (`weight_ih_l0`,
    /// `bias_hh_l0_reverse`, ...).
    fn recurrent(&mut self, node: &NodeProto, index: usize) -> Result<(), Refusal> {
        let a = Attrs(node);
        let op = node.op_type();
        let x = node.input.first().map(String::as_str).unwrap_or("");
        if self.layout(x) != Some(Layout::TimeMajor) {
            return Err("reads a sequence that is not the exporter's time-major layout (a Transpose(1, 0, 2) of [batch, L, D]); layout=1 is not supported".into());
        }
        if a.int("layout", 0) != 0 {
            return Err("layout=1 is not supported".into());
        }
        if node.input.get(4).is_some_and(|t| !t.is_empty()) {
            return Err("sequence_lens (packed sequences) is not supported".into());
        }
        for (i, what) in [(5, "initial_h"), (6, "initial_c"), (7, "P (peepholes)")] {
            if let Some(t) = node.input.get(i).filter(|t| !t.is_empty()) {
                let zero = self.constant(t).is_some_and(|c| c.values.iter().all(|&v| v == 0.0));
                if !zero || i == 7 {
                    return Err(format!("its {what} is not zeros (PyTorch's default): not supported"));
                }
            }
        }
        if a.get("clip").is_some() || a.get("input_forget").is_some_and(|x| x.i() != 0) {
            return Err("clip and input_forget are not supported".into());
        }
        let dirs: i64 = match a.string("direction", "forward").as_str() {
            "forward" => 1,
            "bidirectional" => 2,
            d => return Err(format!("direction {d:?}: forward or bidirectional (PyTorch's) only")),
        };
        let (cell, gates, order): (&str, i64, &[usize]) = match op {
            "LSTM" => ("lstm", 4, &[0, 2, 3, 1]),
            "GRU" => ("gru", 3, &[1, 0, 2]),
            _ => ("rnn", 1, &[0]),
        };
        let activations = a.strings("activations");
        let nonlinearity = match (op, activations.as_deref()) {
            (_, None) => "tanh",
            ("RNN", Some(acts)) if acts.iter().all(|x| x == "Tanh") => "tanh",
            ("RNN", Some(acts)) if acts.iter().all(|x| x == "Relu") => "relu",
            (_, Some(acts)) => return Err(format!("activations {acts:?}: PyTorch's own only")),
        };
        if op == "GRU" && a.int("linear_before_reset", 0) != 1 {
            return Err(
                "linear_before_reset=0: PyTorch's GRU applies the reset gate after the recurrent product (linear_before_reset=1)".into(),
            );
        }
        let hidden = a.int("hidden_size", 0);
        let w = self.weight(node, 1, "W")?.ok_or("has no W")?;
        let r = self.weight(node, 2, "R")?.ok_or("has no R")?;
        let b = self.weight(node, 3, "B")?;
        let rows = gates * hidden;
        let input_size = w.dims.get(2).copied().unwrap_or(0);
        if hidden < 1
            || w.dims != [dirs, rows, input_size]
            || r.dims != [dirs, rows, hidden]
            || b.as_ref().is_some_and(|b| b.dims != [dirs, 2 * rows])
        {
            return Err(format!(
                "W {:?}, R {:?}, B {:?} do not fit hidden_size {hidden} and {dirs} direction(s)",
                w.dims,
                r.dims,
                b.as_ref().map(|b| b.dims.clone())
            ));
        }
        // gate g of PyTorch's layout is ONNX's gate order[g], each `hidden` rows of `cols`
        let reorder = |values: &[f64], cols: usize| -> std::sync::Arc<LazyValues> {
            let block = hidden as usize * cols;
            let v: Vec<f64> = order
                .iter()
                .flat_map(|&g| values[g * block..(g + 1) * block].iter().copied())
                .collect();
            std::sync::Arc::new(LazyValues::from(v))
        };
        // The exporter writes a multi-layer module as one op per layer: a layer of the same
        // module (ONNX scope) and configuration reading the previous layer's output, which
        // nothing else reads, becomes that layer's next one (PyTorch's weight_ih_l1, ...).
        let src = self.source(x)?;
        let scope = |onnx: &str| onnx.rsplit_once('/').map(|(s, _)| s.to_string());
        // the dynamo exporter names no scope in node names: its metadata names the module
        let module = dynamo_name(node);
        let stacked = self.names.get(&src).copied().filter(|&i| {
            let prev = &self.nodes[i];
            let same_module = match &module {
                Some(m) => prev["name"].as_str() == Some(m.as_str()),
                None => self
                    .origin
                    .iter()
                    .find(|(n, _, _)| *n == src)
                    .is_some_and(|(_, onnx, _)| scope(onnx).is_some() && scope(onnx) == scope(node.name())),
            };
            let private = self
                .tensors
                .iter()
                .filter(|(_, n)| **n == src)
                .all(|(t, _)| self.readers.get(t).copied().unwrap_or(0) <= 1 && !self.outputs.contains(t));
            same_module
                && private
                && prev["type"] == cell
                && prev["hidden_size"] == json!(hidden)
                && prev["bidirectional"] == json!(dirs == 2)
                && prev["bias"] == json!(b.is_some())
                && prev.get("nonlinearity").is_none_or(|v| v == nonlinearity)
        });
        let layer = stacked.map_or(0, |i| self.nodes[i]["num_layers"].as_u64().unwrap_or(1));
        let mut roles: Vec<(String, std::sync::Arc<LazyValues>)> = Vec::new();
        for d in 0..dirs as usize {
            let suffix = if d == 0 { "" } else { "_reverse" };
            let (wn, rn) = (rows as usize * input_size as usize, rows as usize * hidden as usize);
            roles.push((
                format!("weight_ih_l{layer}{suffix}"),
                reorder(&w.values[d * wn..(d + 1) * wn], input_size as usize),
            ));
            roles.push((
                format!("weight_hh_l{layer}{suffix}"),
                reorder(&r.values[d * rn..(d + 1) * rn], hidden as usize),
            ));
            if let Some(b) = &b {
                let bn = 2 * rows as usize;
                let bias = &b.values[d * bn..(d + 1) * bn];
                roles.push((format!("bias_ih_l{layer}{suffix}"), reorder(&bias[..rows as usize], 1)));
                roles.push((format!("bias_hh_l{layer}{suffix}"), reorder(&bias[rows as usize..], 1)));
            }
        }
        if let Some(i) = stacked {
            self.nodes[i]["num_layers"] = json!(layer + 1);
            self.weights.entry(src.clone()).or_default().extend(roles);
            if let Some(y) = node.output.first().filter(|y| !y.is_empty()) {
                self.bind(y.clone(), src, Some(Layout::Recurrent { dirs, moved: false }));
            }
            return Ok(());
        }
        let mut body = Map::new();
        body.insert("type".into(), json!(cell));
        body.insert("input_size".into(), json!(input_size));
        body.insert("hidden_size".into(), json!(hidden));
        body.insert("bidirectional".into(), json!(dirs == 2));
        body.insert("bias".into(), json!(b.is_some()));
        if cell == "rnn" {
            body.insert("nonlinearity".into(), json!(nonlinearity));
        }
        body.insert("num_layers".into(), json!(1));
        let name = self.push(node, index, None, vec![src], body);
        self.weights.insert(name.clone(), roles);
        if let Some(y) = node.output.first().filter(|y| !y.is_empty()) {
            self.bind(y.clone(), name, Some(Layout::Recurrent { dirs, moved: false }));
        }
        Ok(())
    }

    /// Maps one node; an Identity or Dropout only passes its input on under its output's name.
    fn node(&mut self, node: &NodeProto, index: usize) -> Result<(), Refusal> {
        let a = Attrs(node);
        let op = node.op_type();
        let out = node.output.first().cloned().unwrap_or_default();
        let data = || node.input.first().map(String::as_str).unwrap_or("");
        let mut body = Map::new();
        let mut set = |k: &str, v: Value| {
            body.insert(k.to_string(), v);
        };
        let mut weight_name: Option<String> = None;
        let mut tensors: Vec<(&'static str, Constant)> = Vec::new();
        let mut inputs = vec![];
        // a BatchNorm folded into this node
        let mut folded: Option<FoldedNorm> = None;
        // the exporter's time-major layout around recurrent ops is read by those ops, and by the
        // transposes, squeezes and reshapes that make it, alone
        let layout_op = matches!(
            op,
            "LSTM" | "GRU" | "RNN" | "Transpose" | "Squeeze" | "Reshape" | "Identity" | "Dropout"
        );
        if let Some(t) = node
            .input
            .iter()
            .find(|t| !layout_op && matches!(self.layout(t), Some(Layout::TimeMajor | Layout::Recurrent { .. })))
        {
            return Err(format!(
                "reads {t:?}, a time-major sequence (the exporter's layout around a recurrent op), which only recurrent ops and the Transpose, Squeeze and Reshape around them may read"
            ));
        }
        // a channels-last tensor read other than position by position, or by a product of two
        // computed tensors, is the permute that made it (attention written by hand: k's
        // `.view(B, L, H, d).transpose(1, 2).transpose(-2, -1)` is one Transpose(0, 2, 3, 1))
        let computed_matmul = op == "MatMul" && node.input.len() == 2 && node.input.iter().all(|t| self.constant(t).is_none());
        let back = a.ints("perm").as_deref() == Some(&[0, 3, 1, 2]);
        let keeps_channels_last = per_position_op(op) && !computed_matmul && (op != "Transpose" || back);
        if !keeps_channels_last {
            for t in &node.input {
                if self.layout(t) == Some(Layout::ChannelsLast) {
                    self.materialize(t)?;
                }
            }
        }
        let channels_last = node.input.first().is_some_and(|t| self.layout(t) == Some(Layout::ChannelsLast));
        match op {
            // x[:, index] on a sequence [batch, L, D] (ViT's class token): one token's features
            "Gather"
                if self.constant(data()).is_none()
                    && a.int("axis", 0) == 1
                    && node
                        .input
                        .get(1)
                        .and_then(|t| self.constant(t))
                        .is_some_and(|c| c.dims.is_empty() && c.values.len() == 1 && c.values[0] >= 0.0) =>
            {
                let index = self.constant(&node.input[1]).map_or(0.0, |c| c.values[0]);
                set("type", json!("select"));
                set("dim", json!(1));
                set("index", json!(index as u64));
                inputs.push(self.source(data())?);
            }
            "Gather" => {
                // an embedding: the rows of a learned [V, E] table picked by the token ids
                let table = self.weight(node, 0, "table")?.ok_or("has no table")?;
                let ids = node.input.get(1).map(String::as_str).unwrap_or("");
                if table.dims.len() != 2 || a.int("axis", 0) != 0 || !self.token_ids || self.source(ids)? != GRAPH_INPUT {
                    return Err(
                        "only an embedding (the rows of a learned [V, E] table picked by the model's token ids) is supported".into(),
                    );
                }
                set("type", json!("embedding"));
                set("num_embeddings", json!(table.dims[0]));
                set("embedding_dim", json!(table.dims[1]));
                if let Some(index) = embedding_padding(node, table.dims[0]) {
                    set("padding_idx", json!(index));
                }
                weight_name = node.input.first().cloned();
                tensors.push(("weight", table));
                inputs.push(GRAPH_INPUT.to_string());
            }
            "Transpose" => {
                let perm = a.ints("perm").unwrap_or_default();
                let src = data().to_string();
                match perm.as_slice() {
                    // batch and time swapped: the same sequence, time-major (or back)
                    [1, 0, 2] => {
                        let layout = (self.layout(&src) != Some(Layout::TimeMajor)).then_some(Layout::TimeMajor);
                        return self.relayout(&src, out, layout);
                    }
                    // a recurrent op's directions moved next to its features
                    [0, 2, 1, 3] if matches!(self.layout(&src), Some(Layout::Recurrent { moved: false, .. })) => {
                        let moved = self.layout(&src).map(|l| match l {
                            Layout::Recurrent { dirs, .. } => Layout::Recurrent { dirs, moved: true },
                            other => other,
                        });
                        return self.relayout(&src, out, moved);
                    }
                    // an image channels-last and back: the same image
                    [0, 2, 3, 1] => {
                        self.transposed_by.insert(out.clone(), (node.clone(), index));
                        return self.relayout(&src, out, Some(Layout::ChannelsLast));
                    }
                    [0, 3, 1, 2] if self.layout(&src) == Some(Layout::ChannelsLast) => return self.relayout(&src, out, None),
                    // any order of the sample's axes (the batch axis first): attention's heads
                    // moved in front, [batch, L, H, d] to [batch, H, L, d], and back
                    [0, rest @ ..] if rest.len() >= 2 => {
                        set("type", json!("permute"));
                        set("dims", json!(perm));
                        inputs.push(self.source(&src)?);
                    }
                    other => {
                        return Err(format!(
                            "perm {other:?}: only orders that keep the batch axis first, or the batch-time swaps around a recurrent op, are supported"
                        ))
                    }
                }
            }
            // a one-direction recurrent output [L, 1, N, H] without its directions: time-major
            "Squeeze" if self.layout(data()) == Some(Layout::Recurrent { dirs: 1, moved: false }) => {
                let axes: Option<Vec<i64>> = a.ints("axes").or_else(|| {
                    node.input
                        .get(1)
                        .and_then(|t| self.constant(t))
                        .map(|c| c.values.iter().map(|&x| x as i64).collect())
                });
                if axes.as_deref() != Some(&[1]) {
                    return Err(format!(
                        "squeezes axes {axes:?} of a recurrent op's output: only its directions (axis 1)"
                    ));
                }
                return self.relayout(data(), out, Some(Layout::TimeMajor));
            }
            // [L, N, directions, H] to [L, N, directions * H]: time-major
            "Reshape" if matches!(self.layout(data()), Some(Layout::Recurrent { moved: true, .. })) => {
                let shape = self.reshape_target(node)?;
                match shape.values.as_slice() {
                    [_, _, last] if *last == -1.0 || *last >= 1.0 => {}
                    other => {
                        return Err(format!(
                            "reshapes a recurrent op's output to {other:?}: only [L, N, directions * H]"
                        ))
                    }
                }
                return self.relayout(data(), out, Some(Layout::TimeMajor));
            }
            // a recurrent op's zero initial state: zeros of the (folded) shape
            "Expand" => {
                let zeros = self.constant(data()).is_some_and(|c| c.values.iter().all(|&v| v == 0.0));
                let shape = node.input.get(1).and_then(|t| self.constant(t));
                match shape {
                    // an expand to the tensor's own shape (ViT's `class_token.expand(n, -1, -1)`
                    // at batch 1) is the tensor itself, a parameter still (even one of zeros)
                    Some(shape)
                        if self.constant(data()).is_some_and(|c| {
                            // the broadcast adds no size but (at batch 1) a leading batch axis
                            let dims = &c.dims;
                            let lead = shape.values.len().saturating_sub(dims.len());
                            lead <= 1
                                && shape.values[..lead].iter().all(|&t| t == 1.0)
                                && shape
                                    .values
                                    .iter()
                                    .rev()
                                    .zip(dims.iter().rev())
                                    .all(|(&t, &d)| t == 1.0 || t == d as f64)
                        }) =>
                    {
                        let c = self.constants[data()].clone();
                        let source = self.aliases.get(data()).cloned().unwrap_or_else(|| data().to_string());
                        self.aliases.insert(out.clone(), source);
                        self.constants.insert(out, c);
                        return Ok(());
                    }
                    Some(shape) if zeros && shape.values.iter().all(|&d| (0.0..=65536.0).contains(&d)) => {
                        let dims: Vec<i64> = shape.values.iter().map(|&d| d as i64).collect();
                        let n = dims.iter().product::<i64>() as usize;
                        let c = Constant {
                            dims,
                            values: std::sync::Arc::new(LazyValues::from(vec![0.0; n])),
                            initializer: false,
                            integer: false,
                        };
                        self.constants.insert(out, c.into());
                        return Ok(());
                    }
                    _ => {
                        return Err(
                            "expands a tensor that is not zeros, or to a computed shape (only a recurrent op's zero initial state is read)"
                                .into(),
                        )
                    }
                }
            }
            "LSTM" | "GRU" | "RNN" => return self.recurrent(node, index),
            "Identity" | "Dropout" => {
                if let Some(c) = self.constants.get(data()).cloned() {
                    // the exporter shares equal initializers through Identity nodes
                    self.constants.insert(out, c);
                    return Ok(());
                }
                // the same tensor in the same layout (channels-last, time-major, ...)
                return self.relayout(data(), out, self.layout(data()));
            }
            "Conv" | "ConvTranspose" => {
                let w = self.weight(node, 1, "weight")?.ok_or("has no weight")?;
                if !(3..=5).contains(&w.dims.len()) {
                    return Err(format!(
                        "a {}-D {} (weight of rank {}): only 1-D, 2-D and 3-D (transposed) convolutions are supported",
                        w.dims.len().saturating_sub(2),
                        if op == "Conv" { "convolution" } else { "transposed convolution" },
                        w.dims.len()
                    ));
                }
                let one_d = w.dims.len() == 3;
                let three_d = w.dims.len() == 5;
                let ones = vec![1; w.dims.len() - 2];
                let group = a.int("group", 1).max(1);
                let kernel = spatial(&a.ints("kernel_shape").unwrap_or(w.dims[2..].to_vec()), one_d, "kernel_shape")?;
                let strides = a.ints("strides").unwrap_or(ones.clone());
                let stride = spatial(&strides, one_d, "strides")?;
                let dilation = spatial(&a.ints("dilations").unwrap_or(ones.clone()), one_d, "dilations")?;
                let pads = a.ints("pads").unwrap_or(vec![0; 2 * ones.len()]);
                let auto_pad = a.string("auto_pad", "NOTSET");
                let transposed = op == "ConvTranspose";
                let out_channels = if transposed { w.dims[1] * group } else { w.dims[0] };
                set(
                    "type",
                    // conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d,
                    // conv_transpose3d: the weight's spatial axes
                    json!(format!(
                        "{}{}d",
                        if transposed { "conv_transpose" } else { "conv" },
                        w.dims.len() - 2
                    )),
                );
                set("in_channels", json!(if transposed { w.dims[0] } else { w.dims[1] * group }));
                set("out_channels", json!(out_channels));
                set("kernel_size", json!(kernel));
                set("stride", json!(stride));
                set("dilation", json!(dilation));
                set("groups", json!(group));
                let src = self.source(data())?;
                inputs.push(src);
                let padding = if one_d {
                    symmetric1(&pads).map(|p| json!(p))
                } else {
                    symmetric(&pads).map(|p| json!(p))
                };
                match (auto_pad.as_str(), padding) {
                    ("NOTSET", Some(p)) => set("padding", p),
                    ("VALID", _) => set("padding", json!(0)),
                    ("SAME_UPPER", _) if !transposed && strides.iter().all(|&s| s == 1) => set("padding", json!("same")),
                    ("NOTSET", None) if !transposed && !one_d && !three_d && pads.len() == 4 && pads.iter().all(|&p| p >= 0) => {
                        // asymmetric zero padding: a ZeroPad2d node first, as PyTorch would write it
                        let pad_name = self.push(
                            node,
                            index,
                            weight_name.as_deref(),
                            vec![inputs.pop().unwrap()],
                            [
                                ("type".to_string(), json!("zeropad2d")),
                                ("padding".to_string(), json!([pads[1], pads[3], pads[0], pads[2]])),
                            ]
                            .into_iter()
                            .collect(),
                        );
                        inputs.push(pad_name);
                        set("padding", json!(0));
                    }
                    _ => return Err(format!("auto_pad {auto_pad:?} with pads {pads:?} is not supported")),
                }
                if transposed {
                    if a.get("output_shape").is_some() {
                        return Err("output_shape is not supported; give output_padding".into());
                    }
                    let op = a.ints("output_padding").unwrap_or(vec![0; ones.len()]);
                    set("output_padding", spatial(&op, one_d, "output_padding")?);
                }
                let out_channels = if op == "Conv" { w.dims[0] } else { w.dims[1] * a.int("group", 1) };
                let mut b = self.weight(node, 2, "bias")?.or_else(|| zero_bias(node, out_channels));
                folded = self.unfolded(node, &mut b, out_channels);
                set("bias", json!(b.is_some()));
                weight_name = node.input.get(1).cloned();
                tensors.push(("weight", w));
                if let Some(b) = b {
                    tensors.push(("bias", b));
                }
            }
            // a @ b of two computed tensors (q @ k^T, softmax(...) @ v): `matmul`
            "MatMul" if computed_matmul => {
                set("type", json!("matmul"));
                for t in &node.input {
                    inputs.push(self.source(t)?);
                }
            }
            "Gemm" | "MatMul" => {
                let gemm = op == "Gemm";
                if gemm && (a.float("alpha", 1.0) != 1.0 || a.float("beta", 1.0) != 1.0 || a.int("transA", 0) != 0) {
                    return Err("Gemm with alpha or beta other than 1 or transA=1 is not a Linear layer".into());
                }
                let w = self.weight(node, 1, "second operand")?.ok_or("has no second operand")?;
                if w.dims.len() != 2 {
                    return Err(format!(
                        "multiplies by a constant of rank {}: only a [in, out] matrix (a Linear layer) is supported",
                        w.dims.len()
                    ));
                }
                // PyTorch's weight is [out, in]: Gemm's B with transB=1, else B transposed
                let trans_b = gemm && a.int("transB", 0) == 1;
                let (rows, cols) = (w.dims[0] as usize, w.dims[1] as usize);
                let weight = if trans_b {
                    w
                } else {
                    Constant {
                        dims: vec![cols as i64, rows as i64],
                        // transposed when first read: a table never reads the weights
                        values: std::sync::Arc::new(w.values.transposed(rows, cols)),
                        initializer: w.initializer,
                        integer: false,
                    }
                };
                // (a MatMul's bias, if any, is the Add after it)
                let mut b = if gemm {
                    self.weight(node, 2, "bias")?.or_else(|| zero_bias(node, weight.dims[0]))
                } else {
                    None
                };
                if gemm {
                    folded = self.unfolded(node, &mut b, weight.dims[0]);
                }
                if let Some(b) = &b {
                    if b.values.len() as i64 != weight.dims[0] {
                        return Err(format!(
                            "its bias has shape {:?}: only a per-output bias (a Linear layer) is supported",
                            b.dims
                        ));
                    }
                }
                if channels_last {
                    // over the channels of a channels-last image: a 1x1 convolution (its weight
                    // [out, in, 1, 1] holds the same numbers)
                    set("type", json!("conv2d"));
                    set("in_channels", json!(weight.dims[1]));
                    set("out_channels", json!(weight.dims[0]));
                    set("kernel_size", json!(1));
                } else {
                    set("type", json!("linear"));
                    set("in_features", json!(weight.dims[1]));
                    set("out_features", json!(weight.dims[0]));
                }
                set("bias", json!(b.is_some()));
                inputs.push(self.source(data())?);
                weight_name = node.input.get(1).cloned();
                tensors.push(("weight", weight));
                if let Some(b) = b {
                    tensors.push(("bias", b));
                }
            }
            "MaxPool" | "AveragePool" => {
                let kernel_shape = a.ints("kernel_shape").ok_or("has no kernel_shape")?;
                let one_d = kernel_shape.len() == 1;
                let ones = vec![1; kernel_shape.len()];
                let kernel = spatial(&kernel_shape, one_d, "kernel_shape")?;
                let stride = spatial(&a.ints("strides").unwrap_or(ones.clone()), one_d, "strides")?;
                let pads = a.ints("pads").unwrap_or(vec![0; 2 * ones.len()]);
                let auto_pad = a.string("auto_pad", "NOTSET");
                let symmetric_pads = if one_d {
                    symmetric1(&pads).map(|p| json!(p))
                } else {
                    symmetric(&pads).map(|p| json!(p))
                };
                let padding = match (auto_pad.as_str(), symmetric_pads) {
                    ("NOTSET", Some(p)) => p,
                    ("VALID", _) => json!(0),
                    _ => return Err(format!("auto_pad {auto_pad:?} with pads {pads:?} (asymmetric) is not supported")),
                };
                set("kernel_size", kernel);
                set("stride", stride);
                set("padding", padding);
                set("ceil_mode", json!(a.int("ceil_mode", 0) == 1));
                if op == "MaxPool" {
                    if node.output.len() > 1 && !node.output[1].is_empty() {
                        return Err("returns indices (not supported)".into());
                    }
                    set("type", json!(format!("maxpool{}d", kernel_shape.len())));
                    set("dilation", spatial(&a.ints("dilations").unwrap_or(ones), one_d, "dilations")?);
                } else {
                    set("type", json!(format!("avgpool{}d", kernel_shape.len())));
                    set("count_include_pad", json!(a.int("count_include_pad", 0) == 1));
                    if a.ints("dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
                        return Err("dilated average pooling is not supported".into());
                    }
                }
                inputs.push(self.source(data())?);
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                // of [N, C, L] (its learned shape, else the model's input's axes): a 1-D pool;
                // of [N, C, D, H, W] a 3-D one
                let rank = self.rank_of(data());
                set(
                    "type",
                    json!(match (op == "GlobalMaxPool", rank) {
                        (true, 5) => "adaptive_maxpool3d",
                        (true, 3) => "adaptive_maxpool1d",
                        (true, _) => "adaptive_maxpool2d",
                        (false, 5) => "adaptive_avgpool3d",
                        (false, 3) => "adaptive_avgpool1d",
                        (false, _) => "adaptive_avgpool2d",
                    }),
                );
                set("output_size", json!(1));
                inputs.push(self.source(data())?);
            }
            "BatchNormalization" => {
                if a.int("training_mode", 0) == 1 {
                    return Err("training_mode=1 (batch statistics) is not supported".into());
                }
                set("type", json!("batchnorm"));
                set("eps", json!(a.float("epsilon", 1e-5) as f64));
                for (i, role) in [(1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var")] {
                    tensors.push((role, self.weight(node, i, role)?.ok_or(format!("has no {role}"))?));
                }
                weight_name = node.input.get(1).cloned();
                set("num_features", json!(tensors[0].1.values.count()));
                // affine=False: the exporter writes ones and zeros as Constant nodes
                let affine = tensors[0].1.initializer;
                set("affine", json!(affine));
                if !affine {
                    tensors.drain(..2);
                }
                inputs.push(self.source(data())?);
            }
            "InstanceNormalization" | "GroupNormalization" | "LayerNormalization" => {
                let eps = a.float("epsilon", 1e-5) as f64;
                set("eps", json!(eps));
                // a bias the exporter wrote as a Constant node (nn.LayerNorm(bias=False)) is no
                // parameter
                let scale = self.weight(node, 1, "scale")?;
                let affine = scale.as_ref().is_some_and(|s| s.initializer);
                let bias = self.weight(node, 2, "bias")?.filter(|b| b.initializer && affine);
                match op {
                    "InstanceNormalization" => {
                        // of [N, C, D, H, W] (its learned shape, else the model's input's axes)
                        let rank = self.rank_of(data());
                        set("type", json!(if rank == 5 { "instancenorm3d" } else { "instancenorm2d" }));
                        set("affine", json!(affine));
                    }
                    "GroupNormalization" => {
                        set("type", json!("groupnorm"));
                        set("num_groups", json!(a.int("num_groups", 1)));
                        set("affine", json!(affine));
                        let groups = a.int("num_groups", 1) as usize;
                        // opset 18's scale and bias are per group; opset 21's per channel
                        if scale.as_ref().is_some_and(|s| s.values.len() == groups) && groups > 1 {
                            return Err("opset 18's per-group scale is not PyTorch's GroupNorm; export with opset 21".into());
                        }
                    }
                    _ => {
                        // nn.LayerNorm(normalized_shape): the scale's shape; the axis must agree
                        let s = scale.as_ref().ok_or("has no scale")?;
                        let axis = a.int("axis", -1);
                        if axis < 0 && -axis as usize != s.dims.len() {
                            return Err(format!(
                                "axis {axis} with a scale of shape {:?}: not nn.LayerNorm's normalized_shape",
                                s.dims
                            ));
                        }
                        // over the channels of a channels-last image: torchvision's LayerNorm2d
                        set("type", json!(if channels_last { "layernorm2d" } else { "layernorm" }));
                        set("normalized_shape", json!(s.dims));
                        set("elementwise_affine", json!(affine));
                        set("bias", json!(bias.is_some()));
                    }
                }
                weight_name = node.input.get(1).cloned();
                if let Some(s) = scale.filter(|_| affine) {
                    tensors.push(("weight", s));
                }
                if let Some(b) = bias {
                    tensors.push(("bias", b));
                }
                inputs.push(self.source(data())?);
            }
            "Relu" | "Sigmoid" | "Tanh" | "HardSwish" | "Mish" => {
                let t = match op {
                    "Relu" => "relu",
                    "Sigmoid" => "sigmoid",
                    "Tanh" => "tanh",
                    "HardSwish" => "hardswish",
                    _ => "mish",
                };
                set("type", json!(t));
                inputs.push(self.source(data())?);
            }
            // nn.PReLU: a slope of one element, or one per channel (the exporters write [C, 1, 1],
            // [1, C, 1, 1], [C] or [1, C]: broadcast from the right onto [N, C, ...])
            "PRelu" => {
                let slope = self.weight(node, 1, "slope")?.ok_or("has no slope")?;
                let rank = self.rank_of(data());
                let n = slope.values.len();
                let channel_axis = slope.dims.len() as i64 - (rank as i64 - 1);
                let per_channel = slope.dims.iter().enumerate().all(|(k, &d)| d == 1 || k as i64 == channel_axis);
                if n != 1 && !per_channel {
                    return Err(format!(
                        "a slope of shape {:?} on a rank-{rank} input varies along another axis than the channels (axis 1): not nn.PReLU",
                        slope.dims
                    ));
                }
                set("type", json!("prelu"));
                set("num_parameters", json!(n));
                weight_name = node.input.get(1).cloned();
                tensors.push(("weight", slope));
                inputs.push(self.source(data())?);
            }
            // x.chunk(k, d) / x.split(sizes, d) along a sample axis (channels, a sequence's
            // features: q, k, v = qkv.chunk(3, -1)): one narrow per output
            "Split" => {
                let given = a.int("axis", 0);
                let axis = self.axis_of(data(), given)?;
                if axis < 1 {
                    return Err(format!("splits axis {given}, the batch: only a sample axis is read, as narrows"));
                }
                let size = self.dims.get(data()).and_then(|d| d.get(axis as usize).copied().flatten());
                let sizes: Vec<u64> = match node.input.get(1).filter(|t| !t.is_empty()) {
                    Some(t) => self
                        .constant(t)
                        .ok_or("splits by computed sizes")?
                        .values
                        .iter()
                        .map(|&v| v as u64)
                        .collect(),
                    // num_outputs (opset 18): equal parts, the last one smaller (torch.chunk's rule)
                    None => {
                        let k = a.int("num_outputs", node.output.len() as i64).max(1) as u64;
                        let n = size.ok_or("splits an axis whose size is not known yet")? as u64;
                        let part = n.div_ceil(k);
                        (0..k).map(|i| part.min(n.saturating_sub(i * part))).collect()
                    }
                };
                if sizes.len() != node.output.len() || sizes.contains(&0) || size.is_some_and(|n| sizes.iter().sum::<u64>() != n as u64) {
                    return Err(format!(
                        "splits axis {given} into {sizes:?} for {} outputs, of {size:?} positions",
                        node.output.len()
                    ));
                }
                let src = self.source(data())?;
                let mut start = 0;
                for (k, &length) in sizes.iter().enumerate() {
                    let name = self.push(node, index, None, vec![src.clone()], narrow(axis, start, length));
                    self.bind(node.output[k].clone(), name, None);
                    start += length;
                }
                return Ok(());
            }
            // x[:, a:b] (x.chunk(k, 1), x.narrow(d, a, b - a)) along one axis or several (a crop
            // x[:, :, a:b, c:d]): one narrow per axis
            "Slice" => {
                let value = |i: usize| {
                    node.input
                        .get(i)
                        .filter(|t| !t.is_empty())
                        .map(|t| self.constant(t).map(|c| c.values.clone()))
                };
                let (Some(Some(starts)), Some(Some(ends))) = (value(1), value(2)) else {
                    return Err("slices a tensor with computed bounds (only constant bounds, after shape folding)".into());
                };
                let rank = self.rank_of(data()) as f64;
                let axes = match value(3) {
                    None => (0..starts.len()).map(|a| a as f64).collect(),
                    Some(Some(a)) => a
                        .iter()
                        .map(|&a| self.axis_of(data(), a as i64).map(|a| a as f64))
                        .collect::<Result<Vec<_>, _>>()?,
                    Some(None) => return Err("slices along computed axes".into()),
                };
                let steps_one = match value(4) {
                    None => true,
                    Some(Some(s)) => s.iter().all(|&s| s == 1.0),
                    Some(None) => false,
                };
                if !steps_one || axes.len() != starts.len() || ends.len() != starts.len() || axes.is_empty() {
                    return Err("slices with a step, or with bounds that do not match its axes: only x[..., a:b] is read".into());
                }
                let mut src = self.source(data())?;
                for ((&axis, &start), &end) in axes.iter().zip(starts.iter()).zip(ends.iter()) {
                    if axis < 1.0 || axis >= rank || start < 0.0 {
                        return Err(format!(
                            "slices axis {axis} from {start}: only a sample axis, from its start, is read (x[..., a:b], a >= 0)"
                        ));
                    }
                    // an open end (x[:, a:]) is the axis's size, where the shape is known
                    let size = self.dims.get(data()).and_then(|d| d.get(axis as usize).copied().flatten());
                    let end = match size {
                        Some(n) => end.min(n as f64),
                        None if end < 1e9 => end,
                        None => return Err("slices to an open end of an axis whose size is not known yet".into()),
                    };
                    if end <= start {
                        return Err(format!("slices {start}..{end} of axis {axis}: empty"));
                    }
                    src = self.push(
                        node,
                        index,
                        None,
                        vec![src],
                        narrow(axis as i64, start as u64, (end - start) as u64),
                    );
                }
                self.bind(out, src, None);
                return Ok(());
            }
            "LeakyRelu" => {
                set("type", json!("leaky_relu"));
                set("negative_slope", json!(a.float("alpha", 0.01) as f64));
                inputs.push(self.source(data())?);
            }
            "HardSigmoid" => {
                let (alpha, beta) = (a.float("alpha", 0.2), a.float("beta", 0.5));
                if (alpha - 1.0 / 6.0).abs() > 1e-6 || beta != 0.5 {
                    return Err(format!("alpha {alpha} and beta {beta} are not nn.Hardsigmoid's 1/6 and 1/2"));
                }
                set("type", json!("hardsigmoid"));
                inputs.push(self.source(data())?);
            }
            "Gelu" => {
                if a.string("approximate", "none") != "none" {
                    return Err("approximate=\"tanh\" is not supported".into());
                }
                set("type", json!("gelu"));
                inputs.push(self.source(data())?);
            }
            "Clip" => {
                let bound = |i: usize, attr: &str| -> Option<f64> {
                    match node.input.get(i).map(String::as_str) {
                        Some(t) if !t.is_empty() => self.constant(t).and_then(|c| c.values.first().copied()),
                        _ => a.get(attr).map(|x| x.f() as f64),
                    }
                };
                match (bound(1, "min"), bound(2, "max")) {
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => set("type", json!("relu6")),
                    (Some(lo), None) if lo == 0.0 => set("type", json!("relu")),
                    (lo, hi) => return Err(format!("Clip to [{lo:?}, {hi:?}]: only [0, 6] (ReLU6) and [0, inf) are layers")),
                }
                inputs.push(self.source(data())?);
            }
            "Softmax" => {
                set("type", json!("softmax"));
                set("dim", json!(a.int("axis", -1)));
                inputs.push(self.source(data())?);
            }
            // a linear layer's bias on a sequence (MatMul by a constant, then Add of a constant
            // row read by nothing else): the linear layer with its bias
            "Add" if self.linear_bias(node) => return Ok(()),
            // x * c or x / c by a constant of one element that is not a parameter (a Constant
            // node; the dynamo exporter's `val_N` initializers): `scale`
            "Mul" | "Div" if self.scaling(node).is_some() => {
                let (x, factor) = self.scaling(node).expect("checked");
                if !factor.is_finite() || factor == 0.0 {
                    return Err(format!("scales by {factor}: only a finite, non-zero factor"));
                }
                set("type", json!("scale"));
                set("factor", json!(factor));
                inputs.push(self.source(&node.input[x])?);
            }
            // a causal mask written by hand, of the tensor's own last two axes
            "Where" | "Add" if self.causal_masking(node).is_some() => {
                let (x, [n, m]) = self.causal_masking(node).expect("checked");
                let t = &node.input[x];
                match self.dims.get(t) {
                    Some(d) if d.len() >= 3 && d[d.len() - 2..] == [Some(n), Some(m)] => {}
                    Some(d) => {
                        return Err(format!(
                            "masks {t:?} of shape {d:?} with a [{n}, {m}] causal mask: only a mask of the tensor's own last two axes is supported"
                        ))
                    }
                    None => return Err(format!("masks {t:?}, whose shape is not known")),
                }
                set("type", json!("causal_mask"));
                inputs.push(self.source(t)?);
            }
            "Add" | "Mul" | "Sum" => {
                set("type", json!(if op == "Mul" { "mul" } else { "add" }));
                for t in &node.input {
                    inputs.push(self.data_or_parameter(node, t)?);
                }
            }
            "Concat" => {
                set("type", json!("concat"));
                set("dim", json!(a.int("axis", 1)));
                for t in &node.input {
                    inputs.push(self.data_or_parameter(node, t)?);
                }
            }
            "Flatten" => {
                if a.int("axis", 1) != 1 {
                    return Err(format!("axis {}: only Flatten(axis=1), one sample into features", a.int("axis", 1)));
                }
                set("type", json!("flatten"));
                inputs.push(self.source(data())?);
            }
            "Reshape" => {
                let shape = self.reshape_target(node)?;
                match shape.values.as_slice() {
                    // [batch, -1], or [1, F] as the dynamo exporter writes a view for batch 1
                    [b, f] if (*b == 1.0 || *b == 0.0 || *b == -1.0) && (*f == -1.0 || *f >= 1.0) => {
                        set("type", json!("flatten"));
                        if *f >= 1.0 {
                            self.features.push((self.nodes.len(), *f as u64));
                        }
                    }
                    // any other regrouping of a sample: the batch axis kept (0 copies it, -1 or 1
                    // for batch 1), 1 to 3 sample sizes, positive or one -1
                    [b, rest @ ..]
                        if (*b == 1.0 || *b == 0.0 || *b == -1.0)
                            && (1..=3).contains(&rest.len())
                            && rest.iter().all(|&d| d >= 1.0 || d == -1.0)
                            && rest.iter().filter(|&&d| d == -1.0).count() + usize::from(*b == -1.0) <= 1 =>
                    {
                        set("type", json!("reshape"));
                        set("shape", json!(rest.iter().map(|&d| d as i64).collect::<Vec<_>>()));
                    }
                    other => {
                        return Err(format!(
                            "to {other:?}: a reshape keeps the batch axis (0, or 1 for batch 1) and gives 1 to 3 sample sizes, positive or one -1 (a 0 that copies an input axis is not supported yet)"
                        ))
                    }
                }
                inputs.push(self.source(data())?);
            }
            "Pad" => {
                let pads: Vec<i64> = match node.input.get(1).filter(|t| !t.is_empty()) {
                    Some(t) => self
                        .constant(t)
                        .ok_or("its pads are computed in the graph")?
                        .values
                        .iter()
                        .map(|&x| x as i64)
                        .collect(),
                    None => a.ints("pads").ok_or("has no pads")?,
                };
                if node
                    .input
                    .get(2)
                    .is_some_and(|t| !t.is_empty() && self.constant(t).is_some_and(|c| c.values.iter().any(|&v| v != 0.0)))
                {
                    return Err("pads with a constant other than zero".into());
                }
                // [b, c, h, w begins, then ends]
                let fill = match a.string("mode", "constant").as_str() {
                    "constant" => "zeropad",
                    "reflect" => "reflectionpad",
                    "edge" => "replicationpad",
                    m => return Err(format!("mode {m:?} is not supported")),
                };
                match pads.as_slice() {
                    [0, 0, t, l, 0, 0, b, r] if [t, l, b, r].iter().all(|&&x| x >= 0) => {
                        set("type", json!(format!("{fill}2d")));
                        set("padding", json!([l, r, t, b]));
                    }
                    // [b, c, l begins, then ends]: a 1-D signal's
                    [0, 0, l, 0, 0, r] if *l >= 0 && *r >= 0 => {
                        set("type", json!(format!("{fill}1d")));
                        set("padding", json!([l, r]));
                    }
                    // [b, c, d, h, w begins, then ends]: a volume's (conv3d's reflect and
                    // replicate padding_mode export as this Pad and the Conv after it)
                    [0, 0, f, t, l, 0, 0, bk, b, r] if [f, t, l, bk, b, r].iter().all(|&&x| x >= 0) => {
                        set("type", json!(format!("{fill}3d")));
                        set("padding", json!([l, r, t, b, f, bk]));
                    }
                    other => {
                        return Err(format!(
                            "pads {other:?}: only non-negative padding of the spatial axes of an image, a volume or a 1-D signal"
                        ))
                    }
                }
                inputs.push(self.source(data())?);
            }
            "Resize" | "Upsample" => {
                let mode = a.string("mode", "nearest");
                let ctm = a.string(
                    "coordinate_transformation_mode",
                    if op == "Upsample" { "asymmetric" } else { "half_pixel" },
                );
                let scales: Option<Vec<f64>> = match op {
                    "Upsample" => node.input.get(1).and_then(|t| self.constant(t)).map(|c| c.values.to_vec()),
                    _ => node
                        .input
                        .get(2)
                        .filter(|t| !t.is_empty())
                        .and_then(|t| self.constant(t))
                        .map(|c| c.values.to_vec()),
                };
                let sizes: Option<Vec<f64>> = node
                    .input
                    .get(3)
                    .filter(|t| !t.is_empty())
                    .and_then(|t| self.constant(t))
                    .map(|c| c.values.to_vec());
                // scales or sizes of a three-axis tensor: a 1-D signal's upsampling; of a
                // five-axis one: a volume's
                let rank = scales.as_ref().filter(|s| !s.is_empty()).or(sizes.as_ref()).map_or(4, |v| v.len());
                match (mode.as_str(), ctm.as_str()) {
                    ("nearest", "asymmetric") if a.string("nearest_mode", "round_prefer_floor") == "floor" || op == "Upsample" => {
                        set("mode", json!("nearest"))
                    }
                    ("linear", "half_pixel" | "pytorch_half_pixel" | "align_corners") => {
                        set(
                            "mode",
                            json!(match rank {
                                3 => "linear",
                                5 => "trilinear",
                                _ => "bilinear",
                            }),
                        );
                        if ctm == "align_corners" {
                            set("align_corners", json!(true));
                        }
                    }
                    (m, c) => {
                        return Err(format!(
                            "mode {m:?} with coordinate_transformation_mode {c:?} is not PyTorch's nearest or (bi/tri)linear"
                        ))
                    }
                }
                set("type", json!("upsample"));
                // the spatial axes' scales (the batch's and the channels' 1) or sizes: one
                // number where every axis has the same factor (as nn.Upsample(scale_factor=s)
                // keeps it), else one per axis
                let spatial = |v: &[f64]| (3..=5).contains(&v.len());
                match (scales.filter(|s| !s.is_empty()), sizes) {
                    (Some(s), _) if spatial(&s) && s[0] == 1.0 && s[1] == 1.0 && s[2..].iter().all(|f| f.is_finite() && *f > 0.0) => {
                        let f: Vec<f64> = s[2..].iter().map(|&x| model_scale(x)).collect();
                        if f.len() > 1 && f.iter().all(|&x| x == f[0]) {
                            set("scale_factor", json!(f[0]))
                        } else {
                            set("scale_factor", json!(f))
                        }
                    }
                    (None, Some(z)) if spatial(&z) && z[2..].iter().all(|&n| n >= 1.0 && n.fract() == 0.0) => {
                        set("size", json!(z[2..].iter().map(|&n| n as u64).collect::<Vec<_>>()))
                    }
                    (s, z) => {
                        return Err(format!(
                            "scales {s:?} / sizes {z:?}: only positive factors or sizes of the spatial axes of an image, a volume or a 1-D signal"
                        ))
                    }
                }
                inputs.push(self.source(data())?);
            }
            "ReduceMean" => {
                let axes: Vec<i64> = match a.ints("axes") {
                    Some(x) => x,
                    None => node
                        .input
                        .get(1)
                        .filter(|t| !t.is_empty())
                        .and_then(|t| self.constant(t))
                        .map(|c| c.values.iter().map(|&x| x as i64).collect())
                        .ok_or("reduces over every axis or over computed axes (not supported)")?,
                };
                // nn.AdaptiveAvgPool2d(1) (3d), as the dynamo exporter writes it: a mean over the
                // spatial axes, kept, inside that module (its metadata's class hierarchy): the
                // module, as the TorchScript exporter's GlobalAveragePool is
                let module = meta(node, "pkg.torch.onnx.class_hierarchy").and_then(|c| python_list(c).into_iter().rev().nth(1));
                // (the input's rank where not learned yet: the module's class says which pool)
                let rank = Some(self.rank_of(data())).filter(|&r| r == 4 || r == 5);
                let spatial: Option<Vec<i64>> = rank.map(|r| {
                    let mut d: Vec<i64> = axes.iter().map(|&x| if x < 0 { x + r as i64 } else { x }).collect();
                    d.sort_unstable();
                    d
                });
                let pool = match (module, rank, spatial.as_deref()) {
                    (Some("torch.nn.modules.pooling.AdaptiveAvgPool2d"), Some(4), Some([2, 3])) => Some("adaptive_avgpool2d"),
                    (Some("torch.nn.modules.pooling.AdaptiveAvgPool3d"), Some(5), Some([2, 3, 4])) => Some("adaptive_avgpool3d"),
                    _ => None,
                };
                match pool {
                    Some(pool) if a.int("keepdims", 1) == 1 => {
                        set("type", json!(pool));
                        set("output_size", json!(1));
                    }
                    _ => {
                        set("type", json!("mean"));
                        set("dim", json!(axes));
                        set("keepdim", json!(a.int("keepdims", 1) == 1));
                    }
                }
                inputs.push(self.source(data())?);
            }
            "Constant" => return Ok(()),
            other => return Err(format!("op type {other:?} is not supported")),
        }
        let mut name = self.push(node, index, weight_name.as_deref(), inputs, body);
        if !tensors.is_empty() {
            self.weights
                .insert(name.clone(), tensors.into_iter().map(|(r, c)| (r.to_string(), c.values)).collect());
        }
        if let Some(norm) = folded {
            name = self.restore_norm(node, index, name, norm);
        }
        // what reads a channels-last image position by position writes one
        self.bind(out, name, channels_last.then_some(Layout::ChannelsLast));
        Ok(())
    }
}

/// One reading of the file: constants folded (with the shapes learned so far), patterns fused,
/// every other node mapped. Returns the reader and the nodes that never became ready (a cycle,
/// or tensors nobody produces).
/// The ops that read a channels-last image position by position (a layernorm or linear layer
/// over its channels, element-wise activations, the Transpose back) and so keep it one.
fn per_position_op(op: &str) -> bool {
    matches!(
        op,
        "Transpose"
            | "LayerNormalization"
            | "MatMul"
            | "Add"
            | "Identity"
            | "Dropout"
            | "Relu"
            | "Gelu"
            | "Sigmoid"
            | "Tanh"
            | "HardSwish"
            | "Mish"
    )
}

fn read(
    graph: &proto::GraphProto,
    mut constants: HashMap<String, std::rc::Rc<Constant>>,
    input: &str,
    input_rank: usize,
    token_ids: bool,
    learned: &HashMap<String, Vec<Option<i64>>>,
) -> (Reader, Vec<usize>) {
    let folded = fold::fold(graph, &mut constants, learned);
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name()).collect();
    let fusions = fuse::find(&graph.node, &outputs, &constants);
    let absorbed: std::collections::HashSet<usize> = fusions.values().flat_map(|f| f.absorbed.iter().copied()).collect();
    let mut r = Reader {
        constants,
        tensors: HashMap::from([(input.to_string(), GRAPH_INPUT.to_string())]),
        aliases: HashMap::new(),
        nodes: Vec::new(),
        origin: Vec::new(),
        names: HashMap::new(),
        weights: HashMap::new(),
        refused: Vec::new(),
        unrolled_rnn: false,
        features: Vec::new(),
        modules: graph
            .initializer
            .iter()
            .filter_map(|t| t.name().strip_suffix(".weight").map(str::to_string))
            .collect(),
        module_paths: graph
            .initializer
            .iter()
            .flat_map(|t| {
                let name = t.name();
                name.match_indices('.').map(|(i, _)| name[..i].to_string()).collect::<Vec<_>>()
            })
            .collect(),
        input_rank,
        ranks: learned.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
        dims: learned.clone(),
        token_ids,
        layouts: HashMap::new(),
        transposed_by: HashMap::new(),
        // the readers left once the shape arithmetic is folded (a Shape reads a sequence for
        // its recurrent op's initial state)
        readers: graph
            .node
            .iter()
            .enumerate()
            .filter(|(i, _)| !folded.contains(i))
            .flat_map(|(_, n)| n.input.iter())
            .fold(HashMap::new(), |mut m, t| {
                *m.entry(t.clone()).or_insert(0) += 1;
                m
            }),
        outputs: graph.output.iter().map(|o| o.name().to_string()).collect(),
        folded_from: folded_parameters(graph),
    };
    // The file's nodes are sorted topologically (ONNX requires it); an unsorted or cyclic file
    // is read in passes until nothing more resolves.
    let mut pending: Vec<usize> = (0..graph.node.len())
        .filter(|i| !folded.contains(i) && !absorbed.contains(i))
        .collect();
    loop {
        let mut next = Vec::new();
        let before = pending.len();
        for &i in &pending {
            let n = &graph.node[i];
            let ready = match fusions.get(&i) {
                Some(f) => std::iter::once(&f.input)
                    .chain(&f.extra)
                    .all(|t| r.tensors.contains_key(t) || r.constants.contains_key(t.as_str())),
                None => n.input.iter().enumerate().all(|(k, t)| {
                    t.is_empty()
                        || r.tensors.contains_key(t)
                        || r.constants.contains_key(t.as_str())
                        || (k > 0 && n.op_type() == "Constant")
                }),
            };
            if !ready {
                next.push(i);
                continue;
            }
            let done = match fusions.get(&i) {
                Some(f) => r.fused(n, i, f),
                None => r.node(n, i),
            };
            if let Err(why) = done {
                r.refused.push(format!("{:?} ({}): {why}", n.name(), n.op_type()));
                r.unrolled_rnn |= !matches!(n.op_type(), "RNN" | "LSTM" | "GRU")
                    && meta(n, "pkg.torch.onnx.stack_trace").is_some_and(|t| t.contains("nn/modules/rnn.py"));
                // later nodes still get read, so every unmappable node is listed at once
                let outs = fusions.get(&i).map(|f| vec![f.output.clone()]).unwrap_or_else(|| n.output.clone());
                for o in outs {
                    r.tensors.insert(o, String::new());
                }
            }
        }
        pending = next;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    (r, pending)
}

/// The shapes (batch axis 1) of the tensors a partial reading produced, by the model language's
/// own shape inference over the nodes that were read; empty when that fails.
/// The model's input as the spec writes it: its shape, and `input_dtype` int64 for token ids.
fn input_json(shape: &[u64], token_ids: bool) -> Value {
    if token_ids {
        json!({"input_shape": shape, "input_dtype": "int64"})
    } else {
        json!({"input_shape": shape})
    }
}

fn partial_shapes(r: &Reader, input: &Value) -> HashMap<String, Vec<Option<i64>>> {
    let mut kept: std::collections::HashSet<&str> = std::collections::HashSet::from([GRAPH_INPUT]);
    let mut nodes = Vec::new();
    for n in &r.nodes {
        let reads_known = n["inputs"]
            .as_array()
            .is_some_and(|i| i.iter().all(|t| t.as_str().is_some_and(|t| kept.contains(t))));
        if reads_known {
            kept.insert(n["name"].as_str().unwrap_or(""));
            nodes.push(n.clone());
        }
    }
    // the longest prefix of them whose shapes infer: a node read on a guess that the shapes
    // refute (a learned [1, D] read as [D] before the rank of what it is added to was known)
    // leaves the shapes before it learned, and the next round reads it right
    let model = loop {
        // with no node read yet, the input's tensors (a transposed input) still have shapes
        if nodes.is_empty() {
            break None;
        }
        let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
        let mut spec = input.clone();
        spec["graph"] = json!({"nodes": nodes, "outputs": names});
        let failed_at = match parse_model(&spec, "", &SpecLimits::default()) {
            Ok(m) => match super::shape::infer(&m, "") {
                Ok(_) => break Some(m),
                Err(e) => e.pointer,
            },
            Err(e) => e.pointer,
        };
        match failed_at
            .strip_prefix("/graph/nodes/")
            .and_then(|r| r.split('/').next()?.parse::<usize>().ok())
        {
            Some(k) if k < nodes.len() => nodes.truncate(k),
            _ => break None,
        }
    };
    let graph = model.as_ref().and_then(|m| super::shape::infer(m, "").ok());
    let input_shape: Vec<u64> = input["input_shape"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    r.tensors
        .iter()
        .filter(|(_, node)| !node.is_empty())
        .filter_map(|(tensor, node)| {
            let out: &[u64] = if node == GRAPH_INPUT {
                &input_shape
            } else {
                let g = graph.as_ref()?;
                &g.nodes[g.index(node)?].output
            };
            let mut shape: Vec<Option<i64>> = std::iter::once(Some(1)).chain(out.iter().map(|&d| Some(d as i64))).collect();
            // the exporter's layouts around recurrent ops: [L, N, D]; Y [L, dirs, N, H] or
            // [L, N, dirs, H]
            match (r.layout(tensor), shape.as_slice()) {
                (Some(Layout::TimeMajor), [_, _, _]) => shape.swap(0, 1),
                (Some(Layout::ChannelsLast), [n, c, h, w]) => shape = vec![*n, *h, *w, *c],
                (Some(Layout::Recurrent { dirs, moved }), [_, Some(l), Some(f)]) => {
                    let (l, h) = (*l, *f / dirs);
                    shape = if moved {
                        vec![Some(l), Some(1), Some(dirs), Some(h)]
                    } else {
                        vec![Some(l), Some(dirs), Some(1), Some(h)]
                    };
                }
                _ => {}
            }
            Some((tensor.clone(), shape))
        })
        .collect()
}

/// Decodes a file and maps it to the graph form. Errors point at `pointer` (the `onnx` field).
pub fn import(bytes: bytes::Bytes, files: &ExternalFiles, pointer: &str) -> SpecResult<Imported> {
    let model = ModelProto::decode(bytes).map_err(|e| bad(pointer, format!("is not an ONNX model (protobuf decoding failed: {e})")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad(pointer, "the ONNX model has no graph (is this an ONNX file?)"))?;
    if graph.node.is_empty() {
        return Err(bad(pointer, "the ONNX graph has no nodes"));
    }
    if let Some(op) = model.opset_import.iter().find(|o| o.domain().is_empty() || o.domain() == "ai.onnx") {
        if op.version() < 7 {
            return Err(bad(
                pointer,
                format!("opset {} is older than the oldest supported (7)", op.version()),
            ));
        }
    }
    let mut constants: HashMap<String, std::rc::Rc<Constant>> = HashMap::new();
    for t in &graph.initializer {
        constants.insert(t.name().to_string(), tensor_values(t, files, pointer)?.into());
    }
    for n in &graph.node {
        if n.op_type() == "Constant" {
            if let (Some(out), Some(t)) = (n.output.first(), Attrs(n).get("value").and_then(|a| a.t.as_ref())) {
                let c = Constant {
                    initializer: false,
                    ..tensor_values(t, files, pointer)?
                };
                constants.insert(out.clone(), c.into());
            } else if let (Some(out), Some(v)) = (n.output.first(), Attrs(n).get("value_ints")) {
                let c = Constant {
                    dims: vec![v.ints.len() as i64],
                    values: std::sync::Arc::new(v.ints.iter().map(|&x| x as f64).collect::<Vec<_>>().into()),
                    initializer: false,
                    integer: true,
                };
                constants.insert(out.clone(), c.into());
            }
        }
        // the exporter shares equal initializers through Identity nodes (two zero biases are
        // one tensor): the copy is the same constant, for the fusions too
        if n.op_type() == "Identity" {
            if let (Some(out), Some(c)) = (n.output.first(), n.input.first().and_then(|i| constants.get(i)).cloned()) {
                constants.insert(out.clone(), c);
            }
        }
    }
    // the data input: the graph input that is not an initializer
    let data: Vec<&proto::ValueInfoProto> = graph.input.iter().filter(|i| !constants.contains_key(i.name())).collect();
    let [input] = data.as_slice() else {
        return Err(bad(
            pointer,
            format!(
                "the model has {} data inputs ({}); one input (an image, a sequence, features or token ids) is supported",
                data.len(),
                data.iter().map(|i| format!("{:?}", i.name())).collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let (shape, token_ids) = input_shape(input).map_err(|m| bad(pointer, format!("input {:?}: {m}", input.name())))?;
    // Shape arithmetic needs the shapes of tensors the file does not state (the legacy exporter
    // writes none): each round infers the shapes of what was read so far and folds again.
    let mut learned: HashMap<String, Vec<Option<i64>>> = HashMap::new();
    let (mut r, pending) = loop {
        let (r, pending) = read(graph, constants.clone(), input.name(), shape.len(), token_ids, &learned);
        if r.refused.is_empty() {
            break (r, pending);
        }
        let more = partial_shapes(&r, &input_json(&shape, token_ids));
        let before = learned.len();
        learned.extend(more);
        if learned.len() == before {
            break (r, pending);
        }
    };
    if !pending.is_empty() {
        let names: Vec<String> = pending
            .iter()
            .take(10)
            .map(|&i| format!("{:?} ({})", graph.node[i].name(), graph.node[i].op_type()))
            .collect();
        return Err(bad(
            pointer,
            format!(
                "{} ONNX node{} read tensors that no node produces, or form a cycle: {}",
                pending.len(),
                if pending.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
        ));
    }
    if !r.refused.is_empty() {
        let n = r.refused.len();
        let shown: Vec<&str> = r.refused.iter().take(40).map(String::as_str).collect();
        return Err(bad(
            pointer,
            format!(
                "{n} ONNX node{} cannot be mapped to layers: {}{}{}",
                if n == 1 { "" } else { "s" },
                shown.join("; "),
                if n > 40 { format!("; and {} more", n - 40) } else { String::new() },
                // torch 2.11's dynamo exporter writes nn.RNN (not LSTM or GRU) as its loop unrolled
                // into per-step MatMul, Slice and Tanh/Relu ops
                if r.unrolled_rnn {
                    ". Some of these are an nn.RNN that the dynamo exporter (torch.onnx.export's default) unrolled into per-step ops, which are read back as the layer only for a batch-first module on two or more tokens: export with dynamo=False, which writes an ONNX RNN op"
                } else {
                    ""
                }
            ),
        ));
    }
    let mut outputs = Vec::new();
    for o in &graph.output {
        match r.tensors.get(o.name()) {
            Some(s) if s == GRAPH_INPUT => return Err(bad(pointer, format!("output {:?} is the input itself", o.name()))),
            Some(s) if !s.is_empty() => outputs.push(s.clone()),
            _ => return Err(bad(pointer, format!("output {:?} is produced by no node", o.name()))),
        }
    }
    tie_weights(&mut r.nodes, &mut r.weights);
    Ok(Imported {
        spec: {
            let mut spec = input_json(&shape, token_ids);
            spec["graph"] = json!({"nodes": r.nodes, "outputs": outputs});
            spec
        },
        weights: r.weights,
        origin: r.origin,
        features: r.features,
    })
}

/// GPT-2's tied weights (`lm_head.weight = wte.weight`): both exporters write the one tensor
/// twice, as the embedding's Gather table `[V, D]` and, folded from its transpose, as the
/// head's MatMul operand `[D, V]`. A linear whose weight equals an embedding's table element for
/// element (and holds more than one number: two tensors filled with one constant are not taken
/// for one) is read as `weight_of` that embedding, and its copy dropped.
fn tie_weights(nodes: &mut [Value], weights: &mut ModelWeights) {
    let weight = |weights: &ModelWeights, name: &str| {
        weights
            .get(name)
            .and_then(|ts| ts.iter().find(|(role, _)| role == "weight"))
            .map(|(_, v)| v.clone())
    };
    let tables: Vec<(String, Value, Arc<LazyValues>)> = nodes
        .iter()
        .filter(|n| n["type"] == "embedding")
        .filter_map(|n| {
            let name = n["name"].as_str()?.to_string();
            let table = weight(weights, &name)?;
            Some((name, n["num_embeddings"].clone(), table))
        })
        .collect();
    if tables.is_empty() {
        return;
    }
    for node in nodes.iter_mut().filter(|n| n["type"] == "linear") {
        let Some(name) = node["name"].as_str().map(str::to_string) else {
            continue;
        };
        let Some(w) = weight(weights, &name) else { continue };
        let Some((owner, ..)) = tables
            .iter()
            .find(|(_, rows, table)| node["out_features"] == *rows && table.same_tensor(&w))
        else {
            continue;
        };
        node["weight_of"] = json!(owner);
        if let Some(ts) = weights.get_mut(&name) {
            ts.retain(|(role, _)| role != "weight");
        }
    }
}

/// `[N, C, H, W]`, `[N, C, L]`, `[N, L, D]` or `[N, F]` without the batch axis (floats), or `[N, L]`
/// token ids (integers); the second value says which.
fn input_shape(input: &proto::ValueInfoProto) -> Result<(Vec<u64>, bool), String> {
    use proto::tensor_shape_proto::dimension::Value as Dim;
    use proto::type_proto::Value as Ty;
    let Some(Ty::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err("is not a tensor".into());
    };
    let token_ids = match DataType::try_from(t.elem_type()) {
        Ok(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16) => false,
        Ok(DataType::Int64 | DataType::Int32) => true,
        _ => {
            return Err(format!(
                "has element type {}: float inputs, or int64/int32 token ids, are supported",
                t.elem_type()
            ))
        }
    };
    let dims = &t.shape.as_ref().ok_or("has no shape")?.dim;
    let dims: Vec<Option<i64>> = dims
        .iter()
        .map(|d| match &d.value {
            Some(Dim::DimValue(v)) => Some(*v),
            _ => None,
        })
        .collect();
    if token_ids && dims.len() != 2 {
        return Err(format!("holds token ids of rank {}: [batch, L] is supported", dims.len()));
    }
    if !(2..=5).contains(&dims.len()) {
        return Err(format!(
            "has rank {}: [batch, C, H, W], [batch, C, D, H, W] (a volume), [batch, C, L] (a 1-D signal) or [batch, features] is supported",
            dims.len()
        ));
    }
    dims[1..]
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(v) if *v >= 1 => Ok(*v as u64),
            _ => Err(format!("axis {} has no fixed size; export with a fixed input size", i + 1)),
        })
        .collect::<Result<Vec<u64>, String>>()
        .map(|shape| (shape, token_ids))
}

/// `{"onnx": "<base64>"}` (or the raw bytes of an upload) to a parsed model. Errors inside the
/// converted spec are reported at `pointer` naming the ONNX node they come from.
pub fn model_from_onnx(bytes: bytes::Bytes, files: &ExternalFiles, pointer: &str, limits: &SpecLimits) -> SpecResult<ModelSpec> {
    let imported = import(bytes, files, pointer)?;
    let relocate = |e: SpecError| {
        let mut msg = e.message.clone();
        if e.pointer.starts_with("/input_shape") {
            msg = format!("the input's shape (batch axis dropped) {}: {msg}", imported.spec["input_shape"]);
        }
        if let Some(rest) = e.pointer.strip_prefix("/graph/nodes/") {
            let idx: Option<usize> = rest.split('/').next().and_then(|s| s.parse().ok());
            if let Some((name, onnx_name, op)) = idx.and_then(|i| imported.origin.get(i)) {
                msg = format!("ONNX node {onnx_name:?} ({op}, read as {name:?}): {msg}");
            }
        }
        SpecError {
            pointer: pointer.to_string(),
            message: msg,
            ..e
        }
    };
    let mut spec = parse_model(&imported.spec, "", limits).map_err(relocate)?;
    let graph = super::shape::infer(&spec, "").map_err(relocate)?;
    for &(i, f) in &imported.features {
        let name = &imported.origin[i].0;
        let got: u64 = graph.nodes[graph.index(name).expect("every node is in the graph")]
            .output
            .iter()
            .product();
        if got != f {
            return Err(relocate(SpecError::invalid(
                format!("/graph/nodes/{i}"),
                format!("reshapes {got} features per sample to {f}: only a flatten to [batch, -1] is supported"),
            )));
        }
    }
    drop(graph);
    spec.weights = Some(Arc::new(imported.weights));
    spec.source = Some("onnx".into());
    Ok(spec)
}

/// Decodes the `onnx` field's base64.
pub fn decode_base64(text: &str, pointer: &str) -> SpecResult<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| bad(pointer, format!("is not base64 ({e})")))
}

/// The model's scale_factor behind a file's float32 scale: the float64 of the simplest fraction
/// p/q (q up to 1000) that rounds to the same float32, as a model writes 1.7, 1.5 or 2/3 (the
/// kernel steps by 1/scale: 1/0.6666667 is not 1.5 in float32, 1/(2/3) is), else the value.
fn model_scale(x: f64) -> f64 {
    let stored = x as f32;
    (1..=1000u32)
        .find_map(|q| {
            let p = (x * q as f64).round();
            (p >= 1.0 && (p / q as f64) as f32 == stored).then(|| p / q as f64)
        })
        .unwrap_or(x)
}
