//! JSON -> [`ModelSpec`], with PyTorch's defaults and pointer-precise errors.
use super::error::{child, SpecError, SpecResult};
use super::json::{describe, uint, Obj};
use super::presets;
use super::types::*;
use serde_json::Value;

/// Structural limits checked while parsing, before any shape arithmetic runs.
#[derive(Clone, Debug)]
pub struct SpecLimits {
    /// Layers in the whole model, counting those inside composites.
    pub max_layers: usize,
    /// Nesting depth of concat/residual inside each other.
    pub max_depth: usize,
    /// Largest size of any one axis (channels, height, width, features, kernel, stride...).
    pub max_dim: u64,
}

impl Default for SpecLimits {
    fn default() -> Self {
        SpecLimits {
            max_layers: 2000,
            max_depth: 16,
            max_dim: 1 << 20,
        }
    }
}

/// A built-in network, parsed once per process (they are constants; re-building and re-parsing
/// resnet50's JSON on every request cost more than analysing it).
fn preset_spec(name: &str) -> Option<ModelSpec> {
    static PARSED: std::sync::OnceLock<std::collections::HashMap<&'static str, ModelSpec>> = std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        let unlimited = SpecLimits {
            max_layers: usize::MAX,
            max_depth: usize::MAX,
            max_dim: u64::MAX,
        };
        presets::NAMES
            .iter()
            .map(|&n| {
                let json = presets::get(n).expect("every listed preset exists");
                let mut spec = parse_model(&json, "", &unlimited).expect("built-in presets are valid");
                spec.preset = Some(n.to_string());
                (n, spec)
            })
            .collect()
    });
    parsed.get(name).cloned()
}

/// Parses `{"input_shape": [...], "layers": [...]}` or `{"preset": NAME}` found at `pointer`.
pub fn parse_model(value: &Value, pointer: &str, limits: &SpecLimits) -> SpecResult<ModelSpec> {
    let obj = Obj::new(value, pointer)?;
    if obj.has("torchscript") {
        return Err(SpecError::invalid(
            obj.at("torchscript"),
            "a TorchScript module is run, not read: /v1/gradient-diagnostics and /v1/receptive-field take it; for a table of its parameters and FLOPs (or grading), export ONNX with torch.onnx.export and send {\"onnx\": ...}",
        ));
    }
    if let Some(file) = obj.opt_str("onnx")? {
        obj.finish("onnx (alone): the ONNX file, base64")?;
        let at = obj.at("onnx");
        let bytes = super::onnx::decode_base64(file, &at)?;
        return super::onnx::model_from_onnx(bytes.into(), &Default::default(), &at, limits);
    }
    if let Some(name) = obj.opt_str("preset")? {
        obj.finish("preset (alone), onnx (alone), or input_shape and layers")?;
        return preset_spec(name).ok_or_else(|| {
            SpecError::invalid(
                obj.at("preset"),
                format!("unknown preset {name:?}; known: {}", presets::NAMES.join(", ")),
            )
        });
    }
    let shape_ptr = obj.at("input_shape");
    let shape = obj
        .array("input_shape")?
        .ok_or_else(|| SpecError::invalid(&shape_ptr, "is required (or give a preset)"))?;
    if !(1..=4).contains(&shape.len()) {
        return Err(SpecError::invalid(
            &shape_ptr,
            format!(
                "expected [C, H, W] (images), [C, D, H, W] (volumes read by conv3d), [L, D] (a sequence of L tokens), [C, L] (a 1-D signal read by conv1d) or [F] (features; [L] token ids with input_dtype int64) without the batch axis, got {} numbers",
                shape.len()
            ),
        ));
    }
    let token_ids = match obj.str_or("input_dtype", "float32")? {
        "float32" | "float" | "float64" => false,
        "int64" | "long" => true,
        other => {
            return Err(SpecError::invalid(
                obj.at("input_dtype"),
                format!("unknown input_dtype {other:?}: float32 (the default) or int64 (token ids for an embedding)"),
            ))
        }
    };
    if token_ids && shape.len() != 1 {
        return Err(SpecError::invalid(
            &shape_ptr,
            format!("int64 token ids have the shape [L] (one sequence), got {} numbers", shape.len()),
        ));
    }
    let input_shape = shape
        .iter()
        .enumerate()
        .map(|(i, v)| uint(v, &child(&shape_ptr, i), 1, limits.max_dim))
        .collect::<SpecResult<Vec<_>>>()?;
    let mut counter = 0usize;
    if obj.has("graph") {
        let graph = parse_graph(obj.raw("graph").expect("present"), &obj.at("graph"), limits, &mut counter)?;
        obj.finish("input_shape, input_dtype with layers or graph, or preset")?;
        return Ok(ModelSpec {
            input_shape,
            token_ids,
            layers: Vec::new(),
            graph: Some(graph),
            preset: None,
            weights: None,
            source: None,
        });
    }
    let layers_ptr = obj.at("layers");
    let layers = obj
        .array("layers")?
        .ok_or_else(|| SpecError::invalid(&layers_ptr, "is required (or a \"graph\")"))?;
    obj.finish("input_shape, input_dtype with layers or graph, or preset")?;
    let layers = parse_layers(layers, &layers_ptr, limits, 0, &mut counter)?;
    Ok(ModelSpec {
        input_shape,
        token_ids,
        layers,
        graph: None,
        preset: None,
        weights: None,
        source: None,
    })
}

/// `{"nodes": [{"name", "type", "inputs", ...PyTorch arguments}], "outputs": [names]}`. A node
/// without `inputs` reads the node listed before it (the first one reads `input`); without
/// `outputs` the model returns the last node. Names are checked here; order, cycles and shapes
/// by shape inference.
fn parse_graph(value: &Value, pointer: &str, limits: &SpecLimits, counter: &mut usize) -> SpecResult<GraphSpec> {
    let obj = Obj::new(value, pointer)?;
    let nodes_ptr = obj.at("nodes");
    let items = obj.array("nodes")?.ok_or_else(|| obj.missing("nodes"))?;
    if items.is_empty() {
        return Err(SpecError::invalid(&nodes_ptr, "needs at least one node"));
    }
    let mut nodes: Vec<GraphNode> = Vec::with_capacity(items.len().min(limits.max_layers));
    let mut names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let ptr = child(&nodes_ptr, i);
        let o = Obj::new(item, &ptr)?;
        let layer = layer_in(&o, limits, 0, counter, true)?;
        let parameter = matches!(layer.kind, LayerKind::Parameter { .. });
        let inputs = match o.array("inputs")? {
            None if parameter => Vec::new(),
            None => vec![nodes.last().map_or(GRAPH_INPUT.to_string(), |n: &GraphNode| node_name(&n.layer))],
            Some(list) if parameter && list.is_empty() => Vec::new(),
            Some(list) if list.is_empty() => return Err(SpecError::invalid(o.at("inputs"), "needs at least one input name")),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(j, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(SpecError::invalid(
                        child(&o.at("inputs"), j),
                        format!("expected a node name, got {}", describe(other)),
                    )),
                })
                .collect::<SpecResult<Vec<_>>>()?,
        };
        o.finish("\"name\", \"type\", \"inputs\" and the layer's PyTorch arguments")?;
        let name = layer
            .name
            .clone()
            .ok_or_else(|| SpecError::invalid(o.at("name"), "is required: every graph node has a name"))?;
        if name.is_empty() || name == GRAPH_INPUT {
            return Err(SpecError::invalid(
                o.at("name"),
                format!("{name:?} cannot name a node (\"{GRAPH_INPUT}\" is the model's input)"),
            ));
        }
        if let Some(first) = names.insert(name.clone(), i) {
            return Err(SpecError::invalid(
                o.at("name"),
                format!("node {first} is also named {name:?}: names must be unique"),
            ));
        }
        let arity = match layer.kind {
            LayerKind::Add | LayerKind::Mul | LayerKind::Cat { .. } => None,
            LayerKind::MatMul => Some(2),
            LayerKind::ScaledDotProductAttention { .. } => Some(3),
            // self-attention reads one tensor; cross-attention its query, then the keys and
            // values (one tensor for both, or one each)
            LayerKind::MultiheadAttention { .. } if inputs.len() > 3 => {
                return Err(SpecError::invalid(
                    o.at("inputs"),
                    format!(
                        "a multihead_attention node reads its query, then optionally its keys and values (one name for both, or one each): 1 to 3 names, got {}",
                        inputs.len()
                    ),
                ))
            }
            LayerKind::MultiheadAttention { .. } => None,
            LayerKind::Parameter { .. } => Some(0),
            _ => Some(1),
        };
        if arity.is_some_and(|a| a != inputs.len()) {
            return Err(SpecError::invalid(
                o.at("inputs"),
                format!(
                    "a {} node reads {}, got {} names",
                    layer.type_name(),
                    match arity {
                        Some(0) => "no tensor",
                        Some(2) => "two tensors",
                        Some(3) => "three tensors (q, k, v)",
                        _ => "one tensor",
                    },
                    inputs.len()
                ),
            ));
        }
        nodes.push(GraphNode { layer, inputs });
    }
    for (i, n) in nodes.iter().enumerate() {
        for (j, input) in n.inputs.iter().enumerate() {
            if input != GRAPH_INPUT && !names.contains_key(input) {
                return Err(SpecError::invalid(
                    child(&child(&child(&nodes_ptr, i), "inputs"), j),
                    format!(
                        "node {:?} reads {input:?}, which is neither a node nor \"{GRAPH_INPUT}\"{}",
                        node_name(&n.layer),
                        closest(input, &names)
                    ),
                ));
            }
        }
    }
    let outputs = match obj.array("outputs")? {
        None => vec![node_name(&nodes.last().expect("non-empty").layer)],
        Some(list) if list.is_empty() => return Err(SpecError::invalid(obj.at("outputs"), "needs at least one node name")),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let ptr = child(&obj.at("outputs"), j);
                match v {
                    Value::String(s) if names.contains_key(s) => Ok(s.clone()),
                    Value::String(s) => Err(SpecError::invalid(ptr, format!("no node is named {s:?}{}", closest(s, &names)))),
                    other => Err(SpecError::invalid(ptr, format!("expected a node name, got {}", describe(other)))),
                }
            })
            .collect::<SpecResult<Vec<_>>>()?,
    };
    obj.finish("nodes, outputs")?;
    Ok(GraphSpec { nodes, outputs })
}

fn node_name(layer: &Layer) -> String {
    layer.name.clone().unwrap_or_default()
}

/// `; did you mean "conv1"?` when a known name is within two edits.
fn closest(name: &str, names: &std::collections::HashMap<String, usize>) -> String {
    names
        .keys()
        .map(String::as_str)
        .chain([GRAPH_INPUT])
        .filter(|k| super::json::edit_distance(k, name) <= 2)
        .min_by_key(|k| (super::json::edit_distance(k, name), k.to_string()))
        .map(|k| format!("; did you mean {k:?}?"))
        .unwrap_or_default()
}

fn parse_layers(items: &[Value], pointer: &str, limits: &SpecLimits, depth: usize, counter: &mut usize) -> SpecResult<Vec<Layer>> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_layer(v, &child(pointer, i), limits, depth, counter))
        .collect()
}

/// A max pool's `return_indices`: false only.
fn no_indices(o: &Obj) -> SpecResult<()> {
    if o.bool("return_indices", false)? {
        return Err(SpecError::invalid(
            o.at("return_indices"),
            "must be false: the layer's output is its values",
        ));
    }
    Ok(())
}

/// `Conv2d`, `conv2d`, `max_pool2d`, `MaxPool2d` all name the same layer.
fn canonical_type(t: &str) -> String {
    t.chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Every layer type the reader knows, as the unknown-type refusal lists them (a test checks that
/// they are exactly the variants of [`super::ops::LayerOp`]).
pub const LAYER_TYPES: &str = "layernorm2d, embedding, multihead_attention, lstm, gru, rnn, conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d, upsample, linear, groupnorm, instancenorm2d, instancenorm3d, layernorm, softmax, mean, zeropad2d, reflectionpad2d, replicationpad2d, circularpad2d, zeropad3d, reflectionpad3d, replicationpad3d, circularpad3d, zeropad1d, reflectionpad1d, replicationpad1d, circularpad1d, maxpool1d, maxpool2d, maxpool3d, avgpool1d, avgpool2d, avgpool3d, adaptive_avgpool1d, adaptive_avgpool2d, adaptive_avgpool3d, adaptive_maxpool1d, adaptive_maxpool2d, adaptive_maxpool3d, batchnorm1d, batchnorm2d, batchnorm3d, relu, relu6, leaky_relu, prelu, sigmoid, tanh, gelu, silu, hardswish, hardsigmoid, mish, identity, dropout, scale, causal_mask, flatten, reshape, view, unflatten, transpose, permute, select, narrow, channel_shuffle, concat, residual; in a graph also add, mul, matmul, scaled_dot_product_attention, parameter";

/// Reads one layer object as a `layers` entry or (`graph`) a graph node's op, and returns the
/// keys the reader consulted: tests bind the typed wire form in `ops.rs` to them.
#[doc(hidden)]
pub fn consulted_keys(value: &Value, graph: bool) -> (SpecResult<Layer>, Vec<&'static str>) {
    let o = match Obj::new(value, "") {
        Ok(o) => o,
        Err(e) => return (Err(e), Vec::new()),
    };
    let layer = layer_in(&o, &SpecLimits::default(), 0, &mut 0, graph).and_then(|l| o.finish("").map(|()| l));
    (layer, o.consulted())
}

fn parse_layer(value: &Value, pointer: &str, limits: &SpecLimits, depth: usize, counter: &mut usize) -> SpecResult<Layer> {
    let o = Obj::new(value, pointer)?;
    let layer = layer_in(&o, limits, depth, counter, false)?;
    o.finish("the layer's PyTorch arguments, \"type\" and \"name\"")?;
    Ok(layer)
}

/// The layer in `o`, every field it knows read (the caller refuses the rest). `graph` allows
/// the graph form's operations on several tensors: `add` and `concat` without `body`,
/// `shortcut` or `branches`, and `mul`.
fn layer_in(o: &Obj, limits: &SpecLimits, depth: usize, counter: &mut usize, graph: bool) -> SpecResult<Layer> {
    *counter += 1;
    if *counter > limits.max_layers {
        return Err(SpecError::too_large(
            o.pointer.clone(),
            "max_layers",
            limits.max_layers as u64,
            format!("the model has more than {} layers", limits.max_layers),
        ));
    }
    let type_ptr = o.at("type");
    let ty = match o.raw("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(SpecError::invalid(
                type_ptr,
                format!("expected a layer type string, got {}", describe(other)),
            ))
        }
        None => return Err(SpecError::invalid(type_ptr, format!("is required; one of {LAYER_TYPES}"))),
    };
    let name = match o.opt_str("name")? {
        Some(n) if n.len() > 200 => return Err(SpecError::invalid(o.at("name"), "is longer than 200 characters")),
        n => n.map(str::to_string),
    };
    let max = limits.max_dim;
    let mut declared_in = None;
    let composite = o.has("branches") || o.has("body") || o.has("shortcut");
    // the 1-D layers are their 2-D forms on a height of 1
    let canon = canonical_type(ty);
    let (canon, mut one_d) = match canon.as_str() {
        "conv1d" => ("conv2d", true),
        "convtranspose1d" => ("convtranspose2d", true),
        "maxpool1d" => ("maxpool2d", true),
        "avgpool1d" => ("avgpool2d", true),
        "adaptiveavgpool1d" => ("adaptiveavgpool2d", true),
        "adaptivemaxpool1d" => ("adaptivemaxpool2d", true),
        "zeropad1d" => ("zeropad2d", true),
        "reflectionpad1d" => ("reflectionpad2d", true),
        "replicationpad1d" => ("replicationpad2d", true),
        "circularpad1d" => ("circularpad2d", true),
        other => (other, false),
    };
    let kind = match canon {
        "add" if graph && !composite => LayerKind::Add,
        "mul" if graph => LayerKind::Mul,
        "matmul" | "mm" | "bmm" if graph => LayerKind::MatMul,
        "matmul" | "mm" | "bmm" => {
            return Err(SpecError::invalid(
                type_ptr,
                "matmul multiplies two tensors: describe the model as a \"graph\" with named nodes",
            ))
        }
        "scaleddotproductattention" if graph => {
            let scale = match o.raw("scale") {
                None | Some(Value::Null) => None,
                Some(_) => Some(nonzero(
                    o,
                    "scale",
                    "a scale of 0 makes every score 0: give a non-zero scale, or none for 1/sqrt(E)",
                )?),
            };
            LayerKind::ScaledDotProductAttention {
                causal: o.bool("is_causal", false)?,
                scale,
            }
        }
        "scaleddotproductattention" => {
            return Err(SpecError::invalid(
                type_ptr,
                "scaled_dot_product_attention reads q, k and v: describe the model as a \"graph\" with named nodes",
            ))
        }
        "concat" | "cat" if graph && !composite => {
            let dim = match o.raw("dim") {
                None => 1,
                Some(v) => torch_dim(v, &o.at("dim"))?,
            };
            LayerKind::Cat { dim }
        }
        "mul" => {
            return Err(SpecError::invalid(
                type_ptr,
                "mul multiplies several tensors: describe the model as a \"graph\" with named nodes",
            ))
        }
        "conv2d" => {
            declared_in = o.opt_u64("in_channels", 1, max)?;
            conv_kind!(Conv2d, conv_args::<2>(o, max, one_d)?)
        }
        "conv3d" => {
            declared_in = o.opt_u64("in_channels", 1, max)?;
            conv_kind!(Conv3d, conv_args::<3>(o, max, false)?)
        }
        "convtranspose2d" => {
            declared_in = o.opt_u64("in_channels", 1, max)?;
            let t = transposed_args::<2>(o, max, one_d)?;
            LayerKind::ConvTranspose2d {
                out_channels: t.out_channels,
                kernel: t.kernel,
                stride: t.stride,
                padding: t.padding,
                output_padding: t.output_padding,
                dilation: t.dilation,
                groups: t.groups,
                bias: t.bias,
            }
        }
        "convtranspose3d" => {
            declared_in = o.opt_u64("in_channels", 1, max)?;
            let t = transposed_args::<3>(o, max, false)?;
            LayerKind::ConvTranspose3d {
                out_channels: t.out_channels,
                kernel: t.kernel,
                stride: t.stride,
                padding: t.padding,
                output_padding: t.output_padding,
                dilation: t.dilation,
                groups: t.groups,
                bias: t.bias,
            }
        }
        "upsample" | "upsamplingnearest2d" => {
            // a 1-D signal's upsampling: mode "linear", or a one-element scale_factor or size
            // (an int with "nearest" is decided by the input's axes)
            let one_element = |k: &'static str| matches!(o.raw(k), Some(Value::Array(a)) if a.len() == 1);
            let mode = o.str_or("mode", "nearest")?;
            let bilinear = match mode {
                "nearest" => false,
                "bilinear" | "trilinear" => true,
                "linear" => {
                    one_d = true;
                    true
                }
                mode => {
                    return Err(SpecError::invalid(
                        o.at("mode"),
                        format!("mode {mode:?} is not supported yet: \"nearest\", \"bilinear\" (images), \"trilinear\" (volumes) or \"linear\" (1-D signals)"),
                    ))
                }
            };
            let trilinear = mode == "trilinear";
            one_d |= one_element("scale_factor") || one_element("size");
            let align_corners = match (bilinear, o.raw("align_corners")) {
                (false, Some(_)) => {
                    return Err(SpecError::invalid(
                        o.at("align_corners"),
                        "align_corners applies to linear modes only (PyTorch refuses it for nearest)",
                    ))
                }
                (true, Some(v)) => v
                    .as_bool()
                    .ok_or_else(|| SpecError::invalid(o.at("align_corners"), format!("expected true or false, got {}", describe(v))))?,
                _ => false,
            };
            if o.raw("recompute_scale_factor").is_some_and(|v| v != &Value::Bool(false)) {
                return Err(SpecError::invalid(o.at("recompute_scale_factor"), "only the default is supported"));
            }
            // a number, or one number per axis (the input's axes decide which form it is)
            fn per_axis<T>(o: &Obj, key: &'static str, read: impl Fn(&Value, &str) -> SpecResult<T>) -> SpecResult<Option<Vec<T>>> {
                match o.raw(key) {
                    None => Ok(None),
                    Some(v @ Value::Number(_)) => Ok(Some(vec![read(v, &o.at(key))?])),
                    Some(Value::Array(items)) if (1..=3).contains(&items.len()) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| read(v, &child(&o.at(key), i)))
                        .collect::<SpecResult<Vec<_>>>()
                        .map(Some),
                    Some(other) => Err(SpecError::invalid(
                        o.at(key),
                        format!(
                            "expected a number, [h, w] (an image), [d, h, w] (a volume) or [l] (a signal), got {}",
                            describe(other)
                        ),
                    )),
                }
            }
            // any positive factor (PyTorch's output is floor(input * factor), at least 1)
            let factor = |v: &Value, at: &str| -> SpecResult<f64> {
                match v.as_f64() {
                    Some(f) if f.is_finite() && f > 0.0 && f <= 1024.0 => Ok(f),
                    Some(f) if f.is_finite() => Err(SpecError::invalid(at, format!("must be above 0 and at most 1024, got {f}"))),
                    _ => Err(SpecError::invalid(at, format!("expected a number, got {}", describe(v)))),
                }
            };
            let scale = per_axis(o, "scale_factor", factor)?;
            let size = per_axis(o, "size", |v, at| uint(v, at, 1, max))?;
            match (scale.is_some(), size.is_some()) {
                (true, true) => {
                    return Err(SpecError::invalid(
                        o.at("size"),
                        "give size or scale_factor, not both (PyTorch refuses both)",
                    ))
                }
                (false, false) => return Err(SpecError::invalid(o.at("scale_factor"), "is required (or size)")),
                _ => {}
            }
            LayerKind::Upsample {
                scale,
                scale_each: matches!(o.raw("scale_factor"), Some(Value::Array(_))),
                size,
                bilinear,
                trilinear,
                align_corners,
            }
        }
        "parameter" if graph => LayerKind::Parameter {
            shape: items(
                o,
                "shape",
                1..=3,
                "the tensor's shape without the batch axis, 1 to 3 sizes",
                |v, p| uint(v, p, 1, max),
            )?,
            table: None,
        },
        "parameter" => {
            return Err(SpecError::invalid(
                type_ptr,
                "a parameter is a tensor that add or concat nodes read: describe the model as a \"graph\"",
            ))
        }
        "transpose" => {
            let dim = |key: &'static str| match o.raw(key) {
                Some(v) => torch_dim(v, &o.at(key)),
                None => Err(o.missing(key)),
            };
            LayerKind::Transpose(Axes::Swap(dim("dim0")?, dim("dim1")?))
        }
        "permute" => {
            let dims = items(
                o,
                "dims",
                3..=5,
                "every axis of the input in its new order, batch first (3 to 5 dims, e.g. [0, 2, 1, 3])",
                torch_dim,
            )?;
            if dims[0] != 0 {
                return Err(SpecError::invalid(
                    child(&o.at("dims"), 0),
                    "the batch axis stays first: dims[0] must be 0",
                ));
            }
            LayerKind::Transpose(Axes::Order(dims))
        }
        "causalmask" => LayerKind::CausalMask,
        "narrow" => {
            let dim = match o.raw("dim") {
                Some(v) => torch_dim(v, &o.at("dim"))?,
                None => return Err(o.missing("dim")),
            };
            LayerKind::Narrow {
                dim,
                start: o.u64_in("start", None, 0, max)?,
                length: o.u64_in("length", None, 1, max)?,
            }
        }
        "channelshuffle" => LayerKind::ChannelShuffle {
            groups: o.u64_in("groups", None, 1, max)?,
        },
        "select" => {
            if o.raw("dim").and_then(Value::as_i64) != Some(1) {
                return Err(SpecError::invalid(
                    o.at("dim"),
                    "only dim 1 (the tokens of a sequence) is supported",
                ));
            }
            LayerKind::SelectToken {
                index: o.u64_in("index", None, 0, max)?,
            }
        }
        "embedding" if graph && o.has("positions") => {
            // nanoGPT's wpe(torch.arange(L)): the first L rows of the table, a learned [L, D]
            let num_embeddings = o.u64_in("num_embeddings", None, 1, max)?;
            let dim = o.u64_in("embedding_dim", None, 1, max)?;
            let rows = o.u64_in("positions", None, 1, num_embeddings)?;
            for key in ["padding_idx", "max_norm"] {
                if o.raw(key).is_some_and(|v| !v.is_null()) {
                    return Err(SpecError::invalid(o.at(key), format!("{key} is not supported with positions")));
                }
            }
            let _ = o.bool("scale_grad_by_freq", false)?;
            let _ = o.bool("sparse", false)?;
            LayerKind::Parameter {
                shape: vec![rows, dim],
                table: Some(num_embeddings),
            }
        }
        "embedding" => {
            if o.raw("positions").is_some() {
                return Err(SpecError::invalid(
                    o.at("positions"),
                    "a position embedding is a tensor that add or concat nodes read: describe the model as a \"graph\"",
                ));
            }
            let num_embeddings = o.u64_in("num_embeddings", None, 1, max)?;
            let dim = o.u64_in("embedding_dim", None, 1, max)?;
            let padding_idx = o.opt_u64("padding_idx", 0, num_embeddings - 1)?;
            if o.raw("max_norm").is_some_and(|v| !v.is_null()) {
                return Err(SpecError::invalid(
                    o.at("max_norm"),
                    "max_norm renormalizes the weights in the forward pass: not supported",
                ));
            }
            let _ = o.bool("scale_grad_by_freq", false)?;
            let _ = o.bool("sparse", false)?;
            LayerKind::Embedding {
                num_embeddings,
                dim,
                padding_idx,
            }
        }
        "multiheadattention" | "attention" => {
            declared_in = o.opt_u64("embed_dim", 1, max)?;
            let heads = o.u64_in("num_heads", None, 1, max)?;
            let bias = o.bool("bias", true)?;
            let _ = o.bool("batch_first", false)?;
            let _ = o.f64_in("dropout", Some(0.0), 0.0, 1.0)?;
            for key in ["add_bias_kv", "add_zero_attn"] {
                if o.bool(key, false)? {
                    return Err(SpecError::invalid(o.at(key), format!("{key}=true is not supported")));
                }
            }
            for key in ["kdim", "vdim"] {
                if let Some(v) = o.opt_u64(key, 1, max)? {
                    if declared_in.is_some_and(|e| e != v) || declared_in.is_none() {
                        return Err(SpecError::invalid(
                            o.at(key),
                            "self-attention reads one tensor: kdim and vdim must equal embed_dim",
                        ));
                    }
                }
            }
            // both read, so that either (or both) may be given
            let (is_causal, causal) = (o.bool("is_causal", false)?, o.bool("causal", false)?);
            let causal = is_causal || causal;
            let need_weights = o.bool("need_weights", false)?;
            LayerKind::MultiheadAttention {
                heads,
                bias,
                causal,
                need_weights,
            }
        }
        "lstm" | "gru" | "rnn" => {
            declared_in = o.opt_u64("input_size", 1, max)?;
            let hidden = o.u64_in("hidden_size", None, 1, max)?;
            let layers = o.u64_in("num_layers", Some(1), 1, 64)?;
            let bias = o.bool("bias", true)?;
            let _ = o.bool("batch_first", false)?;
            let _ = o.f64_in("dropout", Some(0.0), 0.0, 1.0)?;
            let bidirectional = o.bool("bidirectional", false)?;
            let cell = match canonical_type(ty).as_str() {
                "lstm" => {
                    o.u64_in("proj_size", Some(0), 0, 0)?;
                    Cell::Lstm
                }
                "gru" => Cell::Gru,
                _ => match o.choice("nonlinearity", "tanh", &["tanh", "relu"])? {
                    "relu" => Cell::RnnRelu,
                    _ => Cell::RnnTanh,
                },
            };
            LayerKind::Recurrent(Recurrent {
                cell,
                hidden,
                layers,
                bias,
                bidirectional,
            })
        }
        "linear" => {
            declared_in = o.opt_u64("in_features", 1, max)?;
            LayerKind::Linear {
                out_features: o.u64_in("out_features", None, 1, max)?,
                bias: o.bool("bias", true)?,
            }
        }
        "maxpool2d" => {
            let p = pool_args::<2>(o, max, one_d, true)?;
            LayerKind::MaxPool2d {
                kernel: p.kernel,
                stride: p.stride,
                padding: p.padding,
                dilation: p.dilation,
                ceil_mode: p.ceil_mode,
            }
        }
        "maxpool3d" => {
            let p = pool_args::<3>(o, max, false, true)?;
            LayerKind::MaxPool3d {
                kernel: p.kernel,
                stride: p.stride,
                padding: p.padding,
                dilation: p.dilation,
                ceil_mode: p.ceil_mode,
            }
        }
        "avgpool3d" => {
            let p = pool_args::<3>(o, max, false, false)?;
            LayerKind::AvgPool3d {
                kernel: p.kernel,
                stride: p.stride,
                padding: p.padding,
                ceil_mode: p.ceil_mode,
                count_include_pad: p.count_include_pad,
            }
        }
        "adaptiveavgpool3d" | "adaptivemaxpool3d" => {
            let ptr = o.at("output_size");
            let output = match o.raw("output_size") {
                None => return Err(SpecError::invalid(ptr, "is required")),
                Some(Value::Array(items)) if items.len() == 3 => {
                    let mut out = [None; 3];
                    for (i, item) in items.iter().enumerate() {
                        if !item.is_null() {
                            out[i] = Some(uint(item, &child(&ptr, i), 1, max)?);
                        }
                    }
                    out
                }
                Some(v) => super::json::sizes::<3>(v, &ptr, 1, max)?.map(Some),
            };
            if canon == "adaptivemaxpool3d" {
                no_indices(o)?;
                LayerKind::AdaptiveMaxPool3d { output }
            } else {
                LayerKind::AdaptiveAvgPool3d { output }
            }
        }
        "avgpool2d" => {
            let p = pool_args::<2>(o, max, one_d, false)?;
            LayerKind::AvgPool2d {
                kernel: p.kernel,
                stride: p.stride,
                padding: p.padding,
                ceil_mode: p.ceil_mode,
                count_include_pad: p.count_include_pad,
            }
        }
        "adaptiveavgpool2d" | "adaptivemaxpool2d" => {
            let ptr = o.at("output_size");
            let output = match o.raw("output_size") {
                None => return Err(SpecError::invalid(ptr, "is required")),
                // a 1-D pool: an int or [l] (PyTorch's 1-D adaptive pools refuse None)
                Some(v) if one_d => [Some(1), Some(super::json::length(v, &ptr, 1, max)?)],
                Some(Value::Array(items)) if items.len() == 2 => {
                    let axis = |i: usize| -> SpecResult<Option<u64>> {
                        if items[i].is_null() {
                            Ok(None)
                        } else {
                            uint(&items[i], &child(&ptr, i), 1, max).map(Some)
                        }
                    };
                    [axis(0)?, axis(1)?]
                }
                Some(v) => {
                    let n = super::json::pair(v, &ptr, 1, max)?;
                    [Some(n[0]), Some(n[1])]
                }
            };
            if canon == "adaptivemaxpool2d" {
                no_indices(o)?;
                LayerKind::AdaptiveMaxPool2d { output }
            } else {
                LayerKind::AdaptiveAvgPool2d { output }
            }
        }
        "batchnorm2d" | "batchnorm1d" | "batchnorm3d" | "batchnorm" => {
            declared_in = o.opt_u64("num_features", 1, max)?;
            let eps = o.f64_in("eps", Some(1e-5), 0.0, 1.0)?;
            let _m = o.f64_in("momentum", Some(0.1), 0.0, 1.0)?;
            let affine = o.bool("affine", true)?;
            let _t = o.bool("track_running_stats", true)?;
            LayerKind::BatchNorm { affine, eps }
        }
        "groupnorm" => {
            let groups = o.u64_in("num_groups", None, 1, max)?;
            declared_in = o.opt_u64("num_channels", 1, max)?;
            let eps = o.f64_in("eps", Some(1e-5), 0.0, 1.0)?;
            let affine = o.bool("affine", true)?;
            LayerKind::GroupNorm { groups, affine, eps }
        }
        "instancenorm2d" | "instancenorm3d" => {
            declared_in = o.opt_u64("num_features", 1, max)?;
            let eps = o.f64_in("eps", Some(1e-5), 0.0, 1.0)?;
            let _m = o.f64_in("momentum", Some(0.1), 0.0, 1.0)?;
            let affine = o.bool("affine", false)?;
            if o.bool("track_running_stats", false)? {
                return Err(SpecError::invalid(
                    o.at("track_running_stats"),
                    "only instance statistics (track_running_stats=false, PyTorch's default) are supported",
                ));
            }
            LayerKind::InstanceNorm {
                affine,
                eps,
                volume: canon == "instancenorm3d",
            }
        }
        "layernorm" => {
            let shape = match o.raw("normalized_shape") {
                None => return Err(o.missing("normalized_shape")),
                // (up to a volume's four axes)
                Some(Value::Array(items)) if !items.is_empty() && items.len() <= 4 => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| uint(v, &child(&o.at("normalized_shape"), i), 1, max))
                    .collect::<SpecResult<Vec<_>>>()?,
                Some(v @ Value::Number(_)) => vec![uint(v, &o.at("normalized_shape"), 1, max)?],
                Some(other) => {
                    return Err(SpecError::invalid(
                        o.at("normalized_shape"),
                        format!(
                            "expected an int or a list of 1 to 4 ints (the trailing axes), got {}",
                            describe(other)
                        ),
                    ))
                }
            };
            let eps = o.f64_in("eps", Some(1e-5), 0.0, 1.0)?;
            let affine = o.bool("elementwise_affine", true)?;
            let bias = o.bool("bias", true)?;
            LayerKind::LayerNorm {
                shape,
                affine,
                bias: affine && bias,
                eps,
                channels: false,
            }
        }
        "layernorm2d" => {
            let c = match o.raw("normalized_shape") {
                Some(Value::Array(items)) if items.len() == 1 => uint(&items[0], &child(&o.at("normalized_shape"), 0), 1, max)?,
                Some(v @ Value::Number(_)) => uint(v, &o.at("normalized_shape"), 1, max)?,
                Some(other) => {
                    return Err(SpecError::invalid(
                        o.at("normalized_shape"),
                        format!("expected the number of channels, got {}", describe(other)),
                    ))
                }
                None => return Err(o.missing("normalized_shape")),
            };
            declared_in = Some(c);
            let eps = o.f64_in("eps", Some(1e-5), 0.0, 1.0)?;
            let affine = o.bool("elementwise_affine", true)?;
            let bias = o.bool("bias", true)?;
            LayerKind::LayerNorm {
                shape: vec![c],
                affine,
                bias: affine && bias,
                eps,
                channels: true,
            }
        }
        "mean" => {
            let dims = match o.raw("dim") {
                None => {
                    return Err(SpecError::invalid(
                        o.at("dim"),
                        "is required: the axes to average, batch axis 0 (e.g. [2, 3])",
                    ))
                }
                Some(Value::Array(items)) if !items.is_empty() && items.len() <= 3 => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| torch_dim(v, &child(&o.at("dim"), i)))
                    .collect::<SpecResult<Vec<_>>>()?,
                Some(v) => vec![torch_dim(v, &o.at("dim"))?],
            };
            let keepdim = o.bool("keepdim", false)?;
            LayerKind::Mean { dims, keepdim }
        }
        "softmax" => {
            let dim = match o.raw("dim") {
                None => {
                    return Err(SpecError::invalid(
                        o.at("dim"),
                        "is required (PyTorch's implicit dim is deprecated): the axis, batch axis 0",
                    ))
                }
                Some(v) => torch_dim(v, &o.at("dim"))?,
            };
            LayerKind::Softmax { dim }
        }
        "prelu" => {
            let _inplace = o.bool("inplace", false)?;
            let parameters = o.u64_in("num_parameters", Some(1), 1, max)?;
            let negative_slope = o.f64_in("init", Some(0.25), -1e6, 1e6)?;
            LayerKind::Activation {
                kind: Activation::Prelu,
                negative_slope,
                parameters,
            }
        }
        "relu" | "relu6" | "leakyrelu" | "sigmoid" | "tanh" | "gelu" | "silu" | "hardswish" | "hardsigmoid" | "mish" | "identity" => {
            let kind = match canonical_type(ty).as_str() {
                "relu" => Activation::Relu,
                "relu6" => Activation::Relu6,
                "leakyrelu" => Activation::LeakyRelu,
                "sigmoid" => Activation::Sigmoid,
                "tanh" => Activation::Tanh,
                "gelu" => Activation::Gelu,
                "silu" => Activation::Silu,
                "hardswish" => Activation::Hardswish,
                "hardsigmoid" => Activation::Hardsigmoid,
                "mish" => Activation::Mish,
                _ => Activation::Identity,
            };
            let _inplace = o.bool("inplace", false)?;
            let negative_slope = if kind == Activation::LeakyRelu {
                o.f64_in("negative_slope", Some(0.01), -1e6, 1e6)?
            } else {
                0.0
            };
            if kind == Activation::Gelu {
                o.choice("approximate", "none", &["none"])?;
            }
            LayerKind::Activation {
                kind,
                negative_slope,
                parameters: 0,
            }
        }
        "zeropad2d" | "reflectionpad2d" | "replicationpad2d" | "circularpad2d" => {
            let fill = pad_fill(canon);
            // an int pads every side; PyTorch's 4-tuple is (left, right, top, bottom)
            let pad = match o.raw("padding") {
                None => return Err(o.missing("padding")),
                // a 1-D pad: an int or PyTorch's (left, right), on the length
                Some(Value::Array(items)) if one_d && items.len() == 2 => [
                    uint(&items[0], &child(&o.at("padding"), 0), 0, max)?,
                    uint(&items[1], &child(&o.at("padding"), 1), 0, max)?,
                    0,
                    0,
                ],
                Some(v @ Value::Number(_)) if one_d => {
                    let p = uint(v, &o.at("padding"), 0, max)?;
                    [p, p, 0, 0]
                }
                Some(other) if one_d => {
                    return Err(SpecError::invalid(
                        o.at("padding"),
                        format!("expected an int or [left, right] (a 1-D pad), got {}", describe(other)),
                    ))
                }
                Some(_) => pads(o, max, "[left, right, top, bottom]")?,
            };
            LayerKind::Pad { pad, fill }
        }
        "zeropad3d" | "reflectionpad3d" | "replicationpad3d" | "circularpad3d" => {
            // PyTorch's 6-tuple is (left, right, top, bottom, front, back)
            let pad = pads(o, max, "[left, right, top, bottom, front, back]")?;
            LayerKind::Pad3d {
                pad,
                fill: pad_fill(canon),
            }
        }
        "scale" => LayerKind::Scale {
            factor: nonzero(o, "factor", "a factor of 0 makes the output a constant: give a non-zero factor")?,
        },
        "dropout" => {
            let _inplace = o.bool("inplace", false)?;
            LayerKind::Dropout {
                p: o.f64_in("p", Some(0.5), 0.0, 1.0)?,
            }
        }
        "flatten" => {
            let dim = |key: &'static str, default: i64| -> SpecResult<i64> { o.raw(key).map_or(Ok(default), |v| torch_dim(v, &o.at(key))) };
            let (start, end) = (dim("start_dim", 1)?, dim("end_dim", -1)?);
            match (start, end) {
                (1, -1) => LayerKind::Flatten,
                (2, -1 | 3) => LayerKind::FlattenSpatial,
                (0, _) => {
                    return Err(SpecError::invalid(
                        o.at("start_dim"),
                        "start_dim 0 flattens the batch axis into the sample: not supported (1 is nn.Flatten's default)",
                    ))
                }
                // any other dims: the same elements regrouped (checked against the input's axes)
                (start, end) => LayerKind::Reshape(ReshapeTo::Flatten { start, end }),
            }
        }
        "reshape" | "view" => {
            let what = "the sample's new shape without the batch axis (x.reshape(batch, *shape))";
            LayerKind::Reshape(ReshapeTo::Shape(reshape_sizes(o, "shape", what, max)?))
        }
        "unflatten" => {
            let dim = match o.raw("dim") {
                None => return Err(o.missing("dim")),
                Some(v) => torch_dim(v, &o.at("dim"))?,
            };
            let sizes = reshape_sizes(o, "unflattened_size", "the sizes that dim is split into", max)?;
            LayerKind::Reshape(ReshapeTo::Unflatten { dim, sizes })
        }
        "concat" | "cat" => {
            check_depth(o, depth, limits)?;
            let ptr = o.at("branches");
            let items = o
                .array("branches")?
                .ok_or_else(|| SpecError::invalid(&ptr, "is required: a list of layer lists"))?;
            if items.is_empty() {
                return Err(SpecError::invalid(&ptr, "needs at least one branch"));
            }
            let _dim = o.u64_in("dim", Some(1), 1, 1)?;
            let branches = items
                .iter()
                .enumerate()
                .map(|(b, v)| {
                    let bp = child(&ptr, b);
                    match v {
                        Value::Array(layers) => parse_layers(layers, &bp, limits, depth + 1, counter),
                        other => Err(SpecError::invalid(
                            bp,
                            format!("a branch is a list of layers, got {}", describe(other)),
                        )),
                    }
                })
                .collect::<SpecResult<Vec<_>>>()?;
            LayerKind::Concat { branches }
        }
        "residual" | "add" => {
            check_depth(o, depth, limits)?;
            let mut list = |key: &'static str| -> SpecResult<Vec<Layer>> {
                match o.array(key)? {
                    None => Ok(vec![]),
                    Some(layers) => parse_layers(layers, &o.at(key), limits, depth + 1, counter),
                }
            };
            let body = list("body")?;
            let shortcut = list("shortcut")?;
            LayerKind::Residual { body, shortcut }
        }
        _ => {
            return Err(SpecError::invalid(
                type_ptr,
                format!("unknown layer type {ty:?}; known: {LAYER_TYPES}"),
            ))
        }
    };
    // a tied weight: read on the two layers that can share one (elsewhere the key is unknown)
    let weight_of = match kind {
        LayerKind::Linear { .. } | LayerKind::Embedding { .. } => match o.opt_str("weight_of")? {
            Some(n) if n.is_empty() || n.len() > 200 => {
                return Err(SpecError::invalid(
                    o.at("weight_of"),
                    "names the layer whose weight this one uses: 1 to 200 characters",
                ))
            }
            n => n.map(str::to_string),
        },
        _ => None,
    };
    let functional = o.bool("functional", false)?;
    if functional
        && !matches!(
            kind,
            LayerKind::Activation { .. }
                | LayerKind::MaxPool2d { .. }
                | LayerKind::AvgPool2d { .. }
                | LayerKind::AdaptiveAvgPool2d { .. }
                | LayerKind::AdaptiveMaxPool2d { .. }
                | LayerKind::MaxPool3d { .. }
                | LayerKind::AvgPool3d { .. }
                | LayerKind::AdaptiveAvgPool3d { .. }
                | LayerKind::AdaptiveMaxPool3d { .. }
                | LayerKind::Upsample { .. }
                | LayerKind::LayerNorm { channels: true, .. }
                | LayerKind::Conv2d { .. }
                | LayerKind::Conv3d { .. }
        )
    {
        return Err(SpecError::invalid(
            o.at("functional"),
            "only activations, pooling, upsampling, convolutions and layernorm2d layers may be marked functional (called as torch.nn.functional in forward, or a subclass of the module such as torchvision's Conv3DSimple)",
        ));
    }
    Ok(Layer {
        name,
        kind,
        declared_in,
        functional,
        one_d,
        weight_of,
    })
}

/// The convolution `$variant` (Conv2d, Conv3d) of the arguments `$args` ([`ConvArgs`]).
macro_rules! conv_kind {
    ($variant:ident, $args:expr) => {{
        let c = $args;
        LayerKind::$variant {
            padding_mode: c.padding_mode,
            out_channels: c.out_channels,
            kernel: c.kernel,
            stride: c.stride,
            padding: c.padding,
            dilation: c.dilation,
            groups: c.groups,
            bias: c.bias,
        }
    }};
}
use conv_kind;

/// A convolution's arguments on `N` axes (Conv2d's, Conv1d's as its 2-D form, Conv3d's).
struct ConvArgs<const N: usize> {
    out_channels: u64,
    kernel: [u64; N],
    stride: [u64; N],
    padding: ConvPadding<[u64; N]>,
    dilation: [u64; N],
    groups: u64,
    bias: bool,
    padding_mode: Fill,
}

fn conv_args<const N: usize>(o: &Obj, max: u64, one_d: bool) -> SpecResult<ConvArgs<N>> {
    let out_channels = o.u64_in("out_channels", None, 1, max)?;
    let kernel = o.sizes("kernel_size", None, 1, max, one_d)?;
    let stride = o.sizes("stride", Some([1; N]), 1, max, one_d)?;
    let dilation = o.sizes("dilation", Some([1; N]), 1, max, one_d)?;
    let padding = match o.raw("padding") {
        None => ConvPadding::Explicit([0; N]),
        Some(Value::String(s)) if s == "valid" => ConvPadding::Explicit([0; N]),
        Some(Value::String(s)) if s == "same" => {
            if stride != [1; N] {
                return Err(SpecError::invalid(
                    o.at("padding"),
                    "padding=\"same\" is not supported for strided convolutions (PyTorch refuses it too)",
                ));
            }
            ConvPadding::Same
        }
        Some(Value::String(s)) => {
            return Err(SpecError::invalid(
                o.at("padding"),
                format!(
                    "unknown padding {s:?}; expected an int, {}, \"same\" or \"valid\"",
                    if N == 3 { "[d, h, w]" } else { "[h, w]" }
                ),
            ))
        }
        Some(_) => ConvPadding::Explicit(o.sizes("padding", None, 0, max, one_d)?),
    };
    let (groups, bias) = conv_groups_bias(o, out_channels, max)?;
    let padding_mode = match o.str_or("padding_mode", "zeros")? {
        "zeros" => Fill::Zeros,
        "reflect" => Fill::Reflect,
        "replicate" => Fill::Replicate,
        "circular" => Fill::Circular,
        other => {
            return Err(SpecError::invalid(
                o.at("padding_mode"),
                format!("unknown padding_mode {other:?}; expected zeros, reflect, replicate or circular"),
            ))
        }
    };
    Ok(ConvArgs {
        out_channels,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
    })
}

/// What a pad layer (`zeropad2d`, `reflectionpad3d`, ...) fills with.
fn pad_fill(canon: &str) -> Fill {
    match canon {
        c if c.starts_with("zero") => Fill::Zeros,
        c if c.starts_with("reflection") => Fill::Reflect,
        c if c.starts_with("circular") => Fill::Circular,
        _ => Fill::Replicate,
    }
}

/// A pad layer's `padding`: an int (every side) or PyTorch's tuple of `N` (`form`).
fn pads<const N: usize>(o: &Obj, max: u64, form: &str) -> SpecResult<[u64; N]> {
    match o.raw("padding") {
        None => Err(o.missing("padding")),
        Some(Value::Array(items)) if items.len() == N => {
            let mut pad = [0u64; N];
            for (i, v) in items.iter().enumerate() {
                pad[i] = uint(v, &child(&o.at("padding"), i), 0, max)?;
            }
            Ok(pad)
        }
        Some(v @ Value::Number(_)) => Ok([uint(v, &o.at("padding"), 0, max)?; N]),
        Some(other) => Err(SpecError::invalid(
            o.at("padding"),
            format!("expected an int or {form}, got {}", describe(other)),
        )),
    }
}

/// A transposed convolution's arguments on `N` axes (ConvTranspose2d's, ConvTranspose1d's as
/// its 2-D form, ConvTranspose3d's).
struct TransposedArgs<const N: usize> {
    out_channels: u64,
    kernel: [u64; N],
    stride: [u64; N],
    padding: [u64; N],
    output_padding: [u64; N],
    dilation: [u64; N],
    groups: u64,
    bias: bool,
}

fn transposed_args<const N: usize>(o: &Obj, max: u64, one_d: bool) -> SpecResult<TransposedArgs<N>> {
    let out_channels = o.u64_in("out_channels", None, 1, max)?;
    let kernel = o.sizes("kernel_size", None, 1, max, one_d)?;
    let stride = o.sizes("stride", Some([1; N]), 1, max, one_d)?;
    let dilation = o.sizes("dilation", Some([1; N]), 1, max, one_d)?;
    let padding = o.sizes("padding", Some([0; N]), 0, max, one_d)?;
    let output_padding = o.sizes("output_padding", Some([0; N]), 0, max, one_d)?;
    for a in 0..N {
        if output_padding[a] >= stride[a].max(dilation[a]) {
            return Err(SpecError::invalid(
                o.at("output_padding"),
                format!(
                    "output_padding ({}) must be smaller than either stride ({}) or dilation ({}), as PyTorch requires",
                    output_padding[a], stride[a], dilation[a]
                ),
            ));
        }
    }
    let (groups, bias) = conv_groups_bias(o, out_channels, max)?;
    if o.str_or("padding_mode", "zeros")? != "zeros" {
        return Err(SpecError::invalid(
            o.at("padding_mode"),
            "transposed convolutions support only \"zeros\" padding (as PyTorch)",
        ));
    }
    Ok(TransposedArgs {
        out_channels,
        kernel,
        stride,
        padding,
        output_padding,
        dilation,
        groups,
        bias,
    })
}

/// `groups` (dividing out_channels) and `bias` of a conv or a transposed conv.
fn conv_groups_bias(o: &Obj, out_channels: u64, max: u64) -> SpecResult<(u64, bool)> {
    let groups = o.u64_in("groups", Some(1), 1, max)?;
    if !out_channels.is_multiple_of(groups) {
        return Err(SpecError::invalid(
            o.at("groups"),
            format!("out_channels ({out_channels}) must be divisible by groups ({groups})"),
        ));
    }
    let bias = o.bool("bias", true)?;
    Ok((groups, bias))
}

/// A reshape's target sizes under `key`: 1 to 3 of them, each a whole number or -1.
fn reshape_sizes(o: &Obj, key: &'static str, what: &str, max: u64) -> SpecResult<Vec<i64>> {
    items(o, key, 1..=3, &format!("{what}, 1 to 3 sizes, one of them -1 at most"), |v, p| {
        reshape_size(v, p, max)
    })
}

/// The array under `key`: `lens` items, each read by `item` at its own pointer; anything else
/// is a refusal saying what was `expected`.
fn items<T>(
    o: &Obj,
    key: &'static str,
    lens: std::ops::RangeInclusive<usize>,
    expected: &str,
    item: impl Fn(&Value, &str) -> SpecResult<T>,
) -> SpecResult<Vec<T>> {
    match o.raw(key) {
        None => Err(o.missing(key)),
        Some(Value::Array(values)) if lens.contains(&values.len()) => {
            values.iter().enumerate().map(|(i, v)| item(v, &child(&o.at(key), i))).collect()
        }
        Some(other) => Err(SpecError::invalid(
            o.at(key),
            format!("expected {expected}, got {}", describe(other)),
        )),
    }
}

/// A finite number under `key` that is not 0 (`why` says what 0 would mean).
fn nonzero(o: &Obj, key: &'static str, why: &str) -> SpecResult<f64> {
    let x = o.f64_in(key, None, -1e30, 1e30)?;
    if x == 0.0 {
        return Err(SpecError::invalid(o.at(key), why));
    }
    Ok(x)
}

/// One size of a reshape's target: a whole number from 1 to `max`, or -1 (inferred).
fn reshape_size(v: &Value, pointer: &str, max: u64) -> SpecResult<i64> {
    if v.as_i64() == Some(-1) {
        return Ok(-1);
    }
    uint(v, pointer, 1, max.min(i64::MAX as u64))
        .map(|n| n as i64)
        .map_err(|e| SpecError::invalid(e.pointer, format!("{} (or -1, inferred)", e.message)))
}

/// A PyTorch `dim` (batch axis 0, negative from the end), range-checked before any use.
fn torch_dim(v: &Value, pointer: &str) -> SpecResult<i64> {
    v.as_i64().filter(|d| (-8..=8).contains(d)).ok_or_else(|| {
        SpecError::invalid(
            pointer,
            format!("expected an integer dim (PyTorch's, batch axis 0), got {}", super::json::show(v)),
        )
    })
}

fn check_depth(o: &Obj, depth: usize, limits: &SpecLimits) -> SpecResult<()> {
    if depth >= limits.max_depth {
        return Err(SpecError::too_large(
            o.pointer.clone(),
            "max_depth",
            limits.max_depth as u64,
            format!("composite layers are nested deeper than {}", limits.max_depth),
        ));
    }
    Ok(())
}

/// PyTorch: "pad should be at most half of effective kernel size".
/// A max (`max_pool`) or average pool's arguments on `N` axes (a 1-D pool as its 2-D form).
struct PoolArgs<const N: usize> {
    kernel: [u64; N],
    stride: [u64; N],
    padding: [u64; N],
    dilation: [u64; N],
    ceil_mode: bool,
    count_include_pad: bool,
}

fn pool_args<const N: usize>(o: &Obj, max: u64, one_d: bool, max_pool: bool) -> SpecResult<PoolArgs<N>> {
    let kernel = o.sizes("kernel_size", None, 1, max, one_d)?;
    let stride = o.sizes("stride", Some(kernel), 1, max, one_d)?;
    let padding = o.sizes("padding", Some([0; N]), 0, max, one_d)?;
    let (mut dilation, mut count_include_pad) = ([1; N], true);
    if max_pool {
        dilation = o.sizes("dilation", Some([1; N]), 1, max, one_d)?;
    }
    let ceil_mode = o.bool("ceil_mode", false)?;
    if max_pool {
        no_indices(o)?;
    } else {
        count_include_pad = o.bool("count_include_pad", true)?;
        if o.has("divisor_override") {
            return Err(SpecError::invalid(o.at("divisor_override"), "divisor_override is not supported"));
        }
    }
    check_pool_padding(o, kernel, padding)?;
    Ok(PoolArgs {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad,
    })
}

fn check_pool_padding<const N: usize>(o: &Obj, kernel: [u64; N], padding: [u64; N]) -> SpecResult<()> {
    for axis in 0..N {
        if padding[axis] > kernel[axis] / 2 {
            return Err(SpecError::invalid(
                o.at("padding"),
                format!(
                    "pooling padding ({}) must be at most half the kernel size ({}), as PyTorch requires",
                    padding[axis], kernel[axis]
                ),
            ));
        }
    }
    Ok(())
}
