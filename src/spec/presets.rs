//! Built-in networks, written in the same JSON layer spec that users send, so that a preset and
//! its hand-written copy are analysed by exactly the same code. The torchvision ones follow
//! torchvision's module definitions layer for layer (parameter counts are tested against
//! torchvision's published numbers).
use serde_json::{json, Value};

pub const NAMES: &[&str] = &[
    "vgg_stem",
    "inception_naive",
    "inception_reduced",
    "vgg16",
    "alexnet",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "googlenet",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "efficientnet_b0",
    "unet_small",
    "lstm_lm",
    "vit_b_16",
    "convnext_tiny",
    "r3d_18",
];

pub fn describe(name: &str) -> &'static str {
    match name {
        "vgg_stem" => "The course's VGG-style stem (P4): two 3x3 convs, 2x2 max pool, two 3x3 convs, 2x2 max pool, on 3x224x224.",
        "inception_naive" => "The course's naive Inception module (P5) on 256x32x32: 1x1-128, 3x3-192, 5x5-96 and 3x3 max-pool branches.",
        "inception_reduced" => "The course's Inception module with 1x1 reductions (P5) on 256x32x32.",
        "vgg16" => "torchvision.models.vgg16 (configuration D, no batchnorm), 3x224x224.",
        "alexnet" => "torchvision.models.alexnet, 3x224x224.",
        "resnet18" => "torchvision.models.resnet18, 3x224x224.",
        "resnet50" => "torchvision.models.resnet50 (v1.5: stride on the 3x3 conv), 3x224x224.",
        "mobilenet_v2" => "torchvision.models.mobilenet_v2 (width 1.0), 3x224x224.",
        "googlenet" => "torchvision.models.googlenet without the auxiliary heads, 3x224x224.",
        "mobilenet_v3_small" => "torchvision.models.mobilenet_v3_small, 3x224x224, in the graph form: squeeze-and-excitation gates (mul) and residual adds, node names as torchvision's module names.",
        "shufflenet_v2_x0_5" => "torchvision.models.shufflenet_v2_x0_5, 3x224x224, in the graph form: a 3x3 stride-2 stem and max pool, three stages of inverted residuals (4, 8, 4; 48, 96, 192 channels) whose first unit runs two branches on the whole input (a depthwise 3x3 stride-2 conv and a 1x1, and 1x1 / depthwise / 1x1) and the others split the channels in two (narrow) and run the second half, each unit concatenated and its channels shuffled in 2 groups, a 1x1 conv to 1024, the spatial mean and the 1000-class linear; node names as torchvision's modules.",
        "efficientnet_b0" => "torchvision.models.efficientnet_b0, 3x224x224, in the graph form: MBConv blocks with SiLU, squeeze-and-excitation gates (mul) and residual adds, node names as torchvision's module names.",
        "unet_small" => "A small U-Net on 1x64x64 (graph form): two encoder levels of two 3x3 conv + batchnorm + ReLU (16, 32 channels) with 2x2 max pools, a 64-channel bottleneck, decoders that upsample by a 2x2 stride-2 transposed convolution and concatenate the encoder's skip, and a 1x1 conv to 2 classes.",
        "vit_b_16" => "torchvision.models.vit_b_16, 3x224x224, in the graph form: a 16x16 stride-16 patch convolution to 768 channels, the 196 positions flattened and transposed into tokens, the class token concatenated and the position embedding added, 12 pre-norm encoder blocks (layernorm, 12-head self-attention, residual; layernorm, 3072-unit GELU MLP, residual), a final layernorm, token 0 to the 1000-class head; node names as torchvision's modules and parameters.",
        "convnext_tiny" => "torchvision.models.convnext_tiny, 3x224x224, in the graph form: a 4x4 stride-4 stem with LayerNorm2d, four stages of CNBlocks (3, 3, 9, 3; 96 to 768 channels: 7x7 depthwise conv, layernorm over the channels, the pointwise MLP 4x wide with GELU, layer scale, residual) with LayerNorm2d + 2x2 stride-2 conv downsampling between them, global average pool, LayerNorm2d and the 1000-class linear; node names as torchvision's modules and parameters. The blocks' Linear layers act on channels-last tensors, written here as the equal 1x1 convolutions (same parameters, products and FLOPs).",
        "r3d_18" => "torchvision.models.video.r3d_18 (an 18-layer ResNet of 3x3x3 convolutions) on a clip of 16 frames, 3x16x112x112: a 3x7x7 stride 1x2x2 stem, four stages of two BasicBlocks (64 to 512 channels, stride 2 in every axis from the second stage on, 1x1x1 stride-2 downsampling shortcuts), batchnorm3d, global average pool, and the 400-class (Kinetics-400) linear.",
        "lstm_lm" => "A 2-layer LSTM language model (Zaremba et al.'s medium configuration) on 35 token ids: a 10000 x 650 embedding, a 2-layer LSTM of 650 units (dropout 0.5 between layers and around them, off in evaluation), and a linear decoder back to the 10000 words.",
        _ => "",
    }
}

pub fn get(name: &str) -> Option<Value> {
    let layers = match name {
        "vgg_stem" => return Some(json!({"input_shape": [3, 224, 224], "layers": vgg_stem()})),
        "inception_naive" => return Some(json!({"input_shape": [256, 32, 32], "layers": [inception_naive()]})),
        "inception_reduced" => return Some(json!({"input_shape": [256, 32, 32], "layers": [inception_reduced()]})),
        "vgg16" => vgg16(),
        "alexnet" => alexnet(),
        "resnet18" => resnet(false, [2, 2, 2, 2]),
        "resnet50" => resnet(true, [3, 4, 6, 3]),
        "mobilenet_v2" => mobilenet_v2(),
        "googlenet" => googlenet(),
        "mobilenet_v3_small" => return Some(json!({"input_shape": [3, 224, 224], "graph": {"nodes": mobilenet_v3_small()}})),
        "efficientnet_b0" => return Some(json!({"input_shape": [3, 224, 224], "graph": {"nodes": efficientnet_b0()}})),
        "shufflenet_v2_x0_5" => return Some(json!({"input_shape": [3, 224, 224], "graph": {"nodes": shufflenet_v2_x0_5()}})),
        "unet_small" => return Some(json!({"input_shape": [1, 64, 64], "graph": {"nodes": unet_small()}})),
        "vit_b_16" => return Some(json!({"input_shape": [3, 224, 224], "graph": {"nodes": vit_b_16()}})),
        "convnext_tiny" => return Some(json!({"input_shape": [3, 224, 224], "graph": {"nodes": convnext_tiny()}})),
        "r3d_18" => return Some(json!({"input_shape": [3, 16, 112, 112], "layers": r3d_18()})),
        "lstm_lm" => {
            return Some(json!({"input_shape": [35], "input_dtype": "int64", "layers": [
                {"type": "embedding", "name": "encoder", "num_embeddings": 10000, "embedding_dim": 650},
                {"type": "dropout", "name": "drop_in", "p": 0.5},
                {"type": "lstm", "name": "rnn", "input_size": 650, "hidden_size": 650, "num_layers": 2, "dropout": 0.5},
                {"type": "dropout", "name": "drop_out", "p": 0.5},
                {"type": "linear", "name": "decoder", "in_features": 650, "out_features": 10000}]}))
        }
        _ => return None,
    };
    Some(json!({"input_shape": [3, 224, 224], "layers": layers}))
}

fn conv(out: u64, k: u64, stride: u64, pad: u64, bias: bool) -> Value {
    json!({"type": "conv2d", "out_channels": out, "kernel_size": k, "stride": stride, "padding": pad, "bias": bias})
}

fn relu() -> Value {
    json!({"type": "relu"})
}

fn bn() -> Value {
    json!({"type": "batchnorm2d"})
}

fn maxpool(k: u64, s: u64, pad: u64, ceil: bool) -> Value {
    json!({"type": "maxpool2d", "kernel_size": k, "stride": s, "padding": pad, "ceil_mode": ceil})
}

fn named(mut v: Value, name: &str) -> Value {
    v["name"] = json!(name);
    v
}

fn vgg_stem() -> Vec<Value> {
    vec![
        named(conv(64, 3, 1, 1, true), "conv1"),
        relu(),
        named(conv(64, 3, 1, 1, true), "conv2"),
        relu(),
        named(maxpool(2, 2, 0, false), "pool1"),
        named(conv(128, 3, 1, 1, true), "conv3"),
        relu(),
        named(conv(128, 3, 1, 1, true), "conv4"),
        relu(),
        named(maxpool(2, 2, 0, false), "pool2"),
    ]
}

fn inception_naive() -> Value {
    json!({"type": "concat", "name": "inception", "branches": [
        [named(conv(128, 1, 1, 0, true), "1x1"), relu()],
        [named(conv(192, 3, 1, 1, true), "3x3"), relu()],
        [named(conv(96, 5, 1, 2, true), "5x5"), relu()],
        [named(maxpool(3, 1, 1, false), "pool")],
    ]})
}

fn inception_reduced() -> Value {
    json!({"type": "concat", "name": "inception", "branches": [
        [named(conv(128, 1, 1, 0, true), "1x1"), relu()],
        [named(conv(64, 1, 1, 0, true), "3x3_reduce"), relu(), named(conv(192, 3, 1, 1, true), "3x3"), relu()],
        [named(conv(64, 1, 1, 0, true), "5x5_reduce"), relu(), named(conv(96, 5, 1, 2, true), "5x5"), relu()],
        [named(maxpool(3, 1, 1, false), "pool"), named(conv(64, 1, 1, 0, true), "pool_proj"), relu()],
    ]})
}

fn classifier(in_features: u64, hidden: u64, dropout_first: bool) -> Vec<Value> {
    let dropout = json!({"type": "dropout", "p": 0.5});
    let mut v = vec![json!({"type": "flatten"})];
    if dropout_first {
        v.push(dropout.clone());
    }
    v.push(json!({"type": "linear", "in_features": in_features, "out_features": hidden}));
    v.push(relu());
    v.push(dropout.clone());
    v.push(json!({"type": "linear", "out_features": hidden}));
    v.push(relu());
    if !dropout_first {
        v.push(dropout);
    }
    v.push(json!({"type": "linear", "out_features": 1000}));
    v
}

fn vgg16() -> Vec<Value> {
    let mut v = Vec::new();
    for (i, stage) in [
        vec![64, 64],
        vec![128, 128],
        vec![256, 256, 256],
        vec![512, 512, 512],
        vec![512, 512, 512],
    ]
    .iter()
    .enumerate()
    {
        for (j, c) in stage.iter().enumerate() {
            v.push(named(conv(*c, 3, 1, 1, true), &format!("conv{}_{}", i + 1, j + 1)));
            v.push(relu());
        }
        v.push(named(maxpool(2, 2, 0, false), &format!("pool{}", i + 1)));
    }
    v.push(json!({"type": "adaptive_avgpool2d", "output_size": 7}));
    v.extend(classifier(512 * 7 * 7, 4096, false));
    v
}

fn alexnet() -> Vec<Value> {
    let mut v = vec![
        conv(64, 11, 4, 2, true),
        relu(),
        maxpool(3, 2, 0, false),
        conv(192, 5, 1, 2, true),
        relu(),
        maxpool(3, 2, 0, false),
        conv(384, 3, 1, 1, true),
        relu(),
        conv(256, 3, 1, 1, true),
        relu(),
        conv(256, 3, 1, 1, true),
        relu(),
        maxpool(3, 2, 0, false),
        json!({"type": "adaptive_avgpool2d", "output_size": 6}),
    ];
    v.extend(classifier(256 * 6 * 6, 4096, true));
    v
}

fn resnet(bottleneck: bool, blocks: [u64; 4]) -> Vec<Value> {
    let mut v = vec![named(conv(64, 7, 2, 3, false), "conv1"), bn(), relu(), maxpool(3, 2, 1, false)];
    let expansion = if bottleneck { 4 } else { 1 };
    let mut inplanes = 64;
    for (stage, (&n, planes)) in blocks.iter().zip([64u64, 128, 256, 512]).enumerate() {
        for b in 0..n {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let body = if bottleneck {
                vec![
                    conv(planes, 1, 1, 0, false),
                    bn(),
                    relu(),
                    conv(planes, 3, stride, 1, false),
                    bn(),
                    relu(),
                    conv(planes * 4, 1, 1, 0, false),
                    bn(),
                ]
            } else {
                vec![conv(planes, 3, stride, 1, false), bn(), relu(), conv(planes, 3, 1, 1, false), bn()]
            };
            let shortcut = if stride != 1 || inplanes != planes * expansion {
                vec![conv(planes * expansion, 1, stride, 0, false), bn()]
            } else {
                vec![]
            };
            v.push(json!({"type": "residual", "name": format!("layer{}.{}", stage + 1, b), "body": body, "shortcut": shortcut}));
            v.push(relu());
            inplanes = planes * expansion;
        }
    }
    v.push(json!({"type": "adaptive_avgpool2d", "output_size": 1}));
    v.push(json!({"type": "flatten"}));
    v.push(json!({"type": "linear", "name": "fc", "out_features": 1000}));
    v
}

/// torchvision's VideoResNet with BasicBlocks of Conv3DSimple (3x3x3) convolutions.
fn r3d_18() -> Vec<Value> {
    let conv3 = |out: u64, k: Value, stride: Value, pad: Value| json!({"type": "conv3d", "out_channels": out, "kernel_size": k, "stride": stride, "padding": pad, "bias": false});
    let bn3 = || json!({"type": "batchnorm3d"});
    let mut v = vec![
        named(conv3(64, json!([3, 7, 7]), json!([1, 2, 2]), json!([1, 3, 3])), "stem.0"),
        bn3(),
        relu(),
    ];
    let mut inplanes = 64;
    for (stage, planes) in [64u64, 128, 256, 512].into_iter().enumerate() {
        for b in 0..2 {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            // torchvision's Conv3DSimple subclasses nn.Conv3d, which ptflops (hooking modules by
            // exact type) does not count: marked functional, as ptflops sees it
            let simple = |stride: u64| {
                let mut c = conv3(planes, json!(3), json!(stride), json!(1));
                c["functional"] = json!(true);
                c
            };
            let body = vec![simple(stride), bn3(), relu(), simple(1), bn3()];
            let shortcut = if stride != 1 || inplanes != planes {
                vec![conv3(planes, json!(1), json!(stride), json!(0)), bn3()]
            } else {
                vec![]
            };
            v.push(json!({"type": "residual", "name": format!("layer{}.{}", stage + 1, b), "body": body, "shortcut": shortcut}));
            v.push(relu());
            inplanes = planes;
        }
    }
    v.push(json!({"type": "adaptive_avgpool3d", "output_size": 1, "name": "avgpool"}));
    v.push(json!({"type": "flatten"}));
    v.push(json!({"type": "linear", "name": "fc", "out_features": 400}));
    v
}

fn conv_bn_relu6(out: u64, k: u64, stride: u64, groups: u64) -> Vec<Value> {
    vec![
        json!({"type": "conv2d", "out_channels": out, "kernel_size": k, "stride": stride, "padding": (k - 1) / 2, "groups": groups, "bias": false}),
        bn(),
        json!({"type": "relu6"}),
    ]
}

fn mobilenet_v2() -> Vec<Value> {
    let mut v = conv_bn_relu6(32, 3, 2, 1);
    let mut inp = 32;
    for (t, c, n, s) in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ] {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = inp * t;
            let mut block = Vec::new();
            if t != 1 {
                block.extend(conv_bn_relu6(hidden, 1, 1, 1));
            }
            block.extend(conv_bn_relu6(hidden, 3, stride, hidden));
            block.push(conv(c, 1, 1, 0, false));
            block.push(bn());
            if stride == 1 && inp == c {
                v.push(json!({"type": "residual", "body": block}));
            } else {
                v.extend(block);
            }
            inp = c;
        }
    }
    v.extend(conv_bn_relu6(1280, 1, 1, 1));
    // torchvision's forward calls nn.functional.adaptive_avg_pool2d
    v.push(json!({"type": "adaptive_avgpool2d", "output_size": 1, "functional": true}));
    v.push(json!({"type": "flatten"}));
    v.push(json!({"type": "dropout", "p": 0.2}));
    v.push(json!({"type": "linear", "out_features": 1000}));
    v
}

/// torchvision's BasicConv2d: conv without bias, batchnorm with eps 0.001, then F.relu (called
/// in its forward, not a module).
fn basic_conv(out: u64, k: u64, stride: u64, pad: u64) -> Vec<Value> {
    vec![
        conv(out, k, stride, pad, false),
        json!({"type": "batchnorm2d", "eps": 0.001}),
        json!({"type": "relu", "functional": true}),
    ]
}

fn googlenet_inception(name: &str, c1: u64, c3r: u64, c3: u64, c5r: u64, c5: u64, pool: u64) -> Value {
    let cat = |a: Vec<Value>, b: Vec<Value>| -> Vec<Value> { a.into_iter().chain(b).collect() };
    // torchvision's "5x5" branch really uses a 3x3 kernel (a known quirk it keeps for weights).
    json!({"type": "concat", "name": name, "branches": [
        basic_conv(c1, 1, 1, 0),
        cat(basic_conv(c3r, 1, 1, 0), basic_conv(c3, 3, 1, 1)),
        cat(basic_conv(c5r, 1, 1, 0), basic_conv(c5, 3, 1, 1)),
        cat(vec![maxpool(3, 1, 1, true)], basic_conv(pool, 1, 1, 0)),
    ]})
}

fn googlenet() -> Vec<Value> {
    let mut v = basic_conv(64, 7, 2, 3);
    v.push(maxpool(3, 2, 0, true));
    v.extend(basic_conv(64, 1, 1, 0));
    v.extend(basic_conv(192, 3, 1, 1));
    v.push(maxpool(3, 2, 0, true));
    v.push(googlenet_inception("inception3a", 64, 96, 128, 16, 32, 32));
    v.push(googlenet_inception("inception3b", 128, 128, 192, 32, 96, 64));
    v.push(maxpool(3, 2, 0, true));
    v.push(googlenet_inception("inception4a", 192, 96, 208, 16, 48, 64));
    v.push(googlenet_inception("inception4b", 160, 112, 224, 24, 64, 64));
    v.push(googlenet_inception("inception4c", 128, 128, 256, 24, 64, 64));
    v.push(googlenet_inception("inception4d", 112, 144, 288, 32, 64, 64));
    v.push(googlenet_inception("inception4e", 256, 160, 320, 32, 128, 128));
    v.push(maxpool(2, 2, 0, true));
    v.push(googlenet_inception("inception5a", 256, 160, 320, 32, 128, 128));
    v.push(googlenet_inception("inception5b", 384, 192, 384, 48, 128, 128));
    v.push(json!({"type": "adaptive_avgpool2d", "output_size": 1}));
    v.push(json!({"type": "flatten"}));
    v.push(json!({"type": "dropout", "p": 0.2}));
    v.push(json!({"type": "linear", "name": "fc", "out_features": 1000}));
    v
}

/// Graph nodes, each reading the tensors named in `inputs`.
struct Nodes(Vec<Value>);

impl Nodes {
    fn add(&mut self, name: &str, mut v: Value, inputs: &[&str]) -> String {
        v["name"] = json!(name);
        v["inputs"] = json!(inputs);
        self.0.push(v);
        name.to_string()
    }

    /// torchvision's Conv2dNormActivation: conv without bias, batchnorm (`eps`), then the
    /// activation if any; names `PREFIX.0`, `.1`, `.2`.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(&mut self, prefix: &str, input: &str, out: u64, k: u64, stride: u64, groups: u64, eps: f64, act: Option<&str>) -> String {
        let conv = json!({"type": "conv2d", "out_channels": out, "kernel_size": k, "stride": stride, "padding": (k - 1) / 2, "groups": groups, "bias": false});
        let c = self.add(&format!("{prefix}.0"), conv, &[input]);
        let b = self.add(&format!("{prefix}.1"), json!({"type": "batchnorm2d", "eps": eps}), &[&c]);
        match act {
            Some(a) => self.add(&format!("{prefix}.2"), json!({"type": a}), &[&b]),
            None => b,
        }
    }

    /// torchvision's SqueezeExcitation at `prefix`: `scale_activation(fc2(activation(fc1(
    /// avgpool(x))))) * x`, the product named `prefix`.
    fn squeeze_excitation(&mut self, prefix: &str, input: &str, channels: u64, squeeze: u64, act: &str, gate: &str) -> String {
        let s = prefix;
        let pool = self.add(
            &format!("{s}.avgpool"),
            json!({"type": "adaptive_avgpool2d", "output_size": 1}),
            &[input],
        );
        let fc1 = self.add(&format!("{s}.fc1"), conv(squeeze, 1, 1, 0, true), &[&pool]);
        let a = self.add(&format!("{s}.activation"), json!({"type": act}), &[&fc1]);
        let fc2 = self.add(&format!("{s}.fc2"), conv(channels, 1, 1, 0, true), &[&a]);
        let scale = self.add(&format!("{s}.scale_activation"), json!({"type": gate}), &[&fc2]);
        self.add(s, json!({"type": "mul"}), &[&scale, input])
    }
}

/// One of torchvision's inverted residual blocks (MobileNetV3's InvertedResidual, EfficientNet's
/// MBConv): a 1x1 expansion when `exp` differs from `inp`, a depthwise `k`x`k` conv, the
/// squeeze-and-excitation gate if any (squeeze channels, activation, gate), a 1x1 projection,
/// and the residual add when the shape is kept.
struct Block {
    inp: u64,
    exp: u64,
    out: u64,
    k: u64,
    stride: u64,
    act: &'static str,
    eps: f64,
    se: Option<(u64, &'static str, &'static str)>,
}

impl Nodes {
    /// `b` at `name` (its layers at `name.block.j`, the add at `name`), reading `x`.
    fn inverted_residual(&mut self, name: &str, x: &str, b: &Block) -> String {
        let p = format!("{name}.block");
        let mut j = 0;
        let mut h = x.to_string();
        if b.exp != b.inp {
            h = self.conv_bn(&format!("{p}.{j}"), &h, b.exp, 1, 1, 1, b.eps, Some(b.act));
            j += 1;
        }
        h = self.conv_bn(&format!("{p}.{j}"), &h, b.exp, b.k, b.stride, b.exp, b.eps, Some(b.act));
        j += 1;
        if let Some((squeeze, act, gate)) = b.se {
            h = self.squeeze_excitation(&format!("{p}.{j}"), &h, b.exp, squeeze, act, gate);
            j += 1;
        }
        h = self.conv_bn(&format!("{p}.{j}"), &h, b.out, 1, 1, 1, b.eps, None);
        if b.stride == 1 && b.inp == b.out {
            h = self.add(name, json!({"type": "add"}), &[&h, x]);
        }
        h
    }
}

/// torchvision's `_make_divisible(v, 8)`.
fn make_divisible(v: u64) -> u64 {
    let d = 8;
    let new = d.max((v + d / 2) / d * d);
    if (new as f64) < 0.9 * v as f64 {
        new + d
    } else {
        new
    }
}

/// torchvision.models.mobilenet_v3_small: inverted residuals with squeeze-and-excitation
/// (`scale = hardsigmoid(fc2(relu(fc1(avgpool(x)))))`, then `scale * x`).
fn mobilenet_v3_small() -> Vec<Value> {
    let mut g = Nodes(Vec::new());
    let eps = 0.001;
    let mut x = g.conv_bn("features.0", "input", 16, 3, 2, 1, eps, Some("hardswish"));
    let mut inp = 16;
    // kernel, expanded, out, squeeze-and-excitation, activation, stride
    let blocks = [
        (3, 16, 16, true, "relu", 2),
        (3, 72, 24, false, "relu", 2),
        (3, 88, 24, false, "relu", 1),
        (5, 96, 40, true, "hardswish", 2),
        (5, 240, 40, true, "hardswish", 1),
        (5, 240, 40, true, "hardswish", 1),
        (5, 120, 48, true, "hardswish", 1),
        (5, 144, 48, true, "hardswish", 1),
        (5, 288, 96, true, "hardswish", 2),
        (5, 576, 96, true, "hardswish", 1),
        (5, 576, 96, true, "hardswish", 1),
    ];
    for (i, (k, exp, out, se, act, stride)) in blocks.into_iter().enumerate() {
        let block = Block {
            inp,
            exp,
            out,
            k,
            stride,
            act,
            eps,
            se: se.then(|| (make_divisible(exp / 4), "relu", "hardsigmoid")),
        };
        x = g.inverted_residual(&format!("features.{}", i + 1), &x, &block);
        inp = out;
    }
    x = g.conv_bn("features.12", &x, 576, 1, 1, 1, eps, Some("hardswish"));
    let pool = g.add("avgpool", json!({"type": "adaptive_avgpool2d", "output_size": 1}), &[&x]);
    let flat = g.add("flatten", json!({"type": "flatten"}), &[&pool]);
    let fc = g.add("classifier.0", json!({"type": "linear", "out_features": 1024}), &[&flat]);
    let hs = g.add("classifier.1", json!({"type": "hardswish"}), &[&fc]);
    let drop = g.add("classifier.2", json!({"type": "dropout", "p": 0.2}), &[&hs]);
    g.add("classifier.3", json!({"type": "linear", "out_features": 1000}), &[&drop]);
    g.0
}

/// torchvision.models.shufflenet_v2_x0_5: InvertedResidual units. Stride 2: `cat(branch1(x),
/// branch2(x))`; stride 1: `x1, x2 = x.chunk(2, 1)`, `cat(x1, branch2(x2))`; then
/// `channel_shuffle(out, 2)`. branch1 = depthwise 3x3 (stride), BN, 1x1, BN, ReLU; branch2 =
/// 1x1, BN, ReLU, depthwise 3x3 (stride), BN, 1x1, BN, ReLU; every conv without bias.
fn shufflenet_v2_x0_5() -> Vec<Value> {
    let mut g = Nodes(Vec::new());
    let conv = |out: u64, k: u64, stride: u64, groups: u64| json!({"type": "conv2d", "out_channels": out, "kernel_size": k, "stride": stride, "padding": (k - 1) / 2, "groups": groups, "bias": false});
    let c = g.add("conv1.0", conv(24, 3, 2, 1), &["input"]);
    let c = g.add("conv1.1", bn(), &[&c]);
    let c = g.add("conv1.2", relu(), &[&c]);
    let mut x = g.add("maxpool", maxpool(3, 2, 1, false), &[&c]);
    let mut inp = 24;
    for (stage, repeats, out) in [(2, 4, 48), (3, 8, 96), (4, 4, 192)] {
        let half = out / 2;
        for i in 0..repeats {
            let p = format!("stage{stage}.{i}");
            let stride = if i == 0 { 2 } else { 1 };
            // the first unit's branch1 reads the whole input; the others pass the first half on
            let (left, right) = if stride == 2 {
                let b = g.add(&format!("{p}.branch1.0"), conv(inp, 3, 2, inp), &[&x]);
                let b = g.add(&format!("{p}.branch1.1"), bn(), &[&b]);
                let b = g.add(&format!("{p}.branch1.2"), conv(half, 1, 1, 1), &[&b]);
                let b = g.add(&format!("{p}.branch1.3"), bn(), &[&b]);
                let b = g.add(&format!("{p}.branch1.4"), relu(), &[&b]);
                (b, x.clone())
            } else {
                let narrow = |start: u64| json!({"type": "narrow", "dim": 1, "start": start, "length": half});
                let l = g.add(&format!("{p}.chunk.0"), narrow(0), &[&x]);
                let r = g.add(&format!("{p}.chunk.1"), narrow(half), &[&x]);
                (l, r)
            };
            let b = g.add(&format!("{p}.branch2.0"), conv(half, 1, 1, 1), &[&right]);
            let b = g.add(&format!("{p}.branch2.1"), bn(), &[&b]);
            let b = g.add(&format!("{p}.branch2.2"), relu(), &[&b]);
            let b = g.add(&format!("{p}.branch2.3"), conv(half, 3, stride, half), &[&b]);
            let b = g.add(&format!("{p}.branch2.4"), bn(), &[&b]);
            let b = g.add(&format!("{p}.branch2.5"), conv(half, 1, 1, 1), &[&b]);
            let b = g.add(&format!("{p}.branch2.6"), bn(), &[&b]);
            let b = g.add(&format!("{p}.branch2.7"), relu(), &[&b]);
            let cat = g.add(&format!("{p}.cat"), json!({"type": "concat", "dim": 1}), &[&left, &b]);
            x = g.add(&p, json!({"type": "channel_shuffle", "groups": 2}), &[&cat]);
            inp = out;
        }
    }
    let c = g.add("conv5.0", conv(1024, 1, 1, 1), &[&x]);
    let c = g.add("conv5.1", bn(), &[&c]);
    let c = g.add("conv5.2", relu(), &[&c]);
    let m = g.add("mean", json!({"type": "mean", "dim": [2, 3]}), &[&c]);
    g.add("fc", json!({"type": "linear", "out_features": 1000}), &[&m]);
    g.0
}

/// torchvision.models.efficientnet_b0: MBConv blocks (expand 1x1, depthwise, squeeze-and-
/// excitation with SiLU and a sigmoid gate, project 1x1; residual add when the shape is kept;
/// stochastic depth is the identity in eval mode), batchnorm with PyTorch's default eps.
fn efficientnet_b0() -> Vec<Value> {
    let mut g = Nodes(Vec::new());
    let eps = 1e-5;
    let mut x = g.conv_bn("features.0", "input", 32, 3, 2, 1, eps, Some("silu"));
    // expand ratio, kernel, stride, in, out, layers
    let stages = [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ];
    for (s, (t, k, stride, input, out, n)) in stages.into_iter().enumerate() {
        for l in 0..n {
            let (inp, stride) = if l == 0 { (input, stride) } else { (out, 1) };
            let block = Block {
                inp,
                exp: make_divisible(inp * t),
                out,
                k,
                stride,
                act: "silu",
                eps,
                se: Some(((inp / 4).max(1), "silu", "sigmoid")),
            };
            x = g.inverted_residual(&format!("features.{}.{l}", s + 1), &x, &block);
        }
    }
    x = g.conv_bn("features.8", &x, 1280, 1, 1, 1, eps, Some("silu"));
    let pool = g.add("avgpool", json!({"type": "adaptive_avgpool2d", "output_size": 1}), &[&x]);
    let flat = g.add("flatten", json!({"type": "flatten"}), &[&pool]);
    let drop = g.add("classifier.0", json!({"type": "dropout", "p": 0.2}), &[&flat]);
    g.add("classifier.1", json!({"type": "linear", "out_features": 1000}), &[&drop]);
    g.0
}

/// The README's small U-Net: `PREFIX.conv1`, `.bn1`, `.relu1`, `.conv2`, `.bn2`, `.relu2` per
/// double conv.
fn unet_small() -> Vec<Value> {
    let mut g = Nodes(Vec::new());
    let double = |g: &mut Nodes, prefix: &str, input: &str, ch: u64| -> String {
        let mut x = input.to_string();
        for i in 1..=2 {
            x = g.add(&format!("{prefix}.conv{i}"), conv(ch, 3, 1, 1, false), &[&x]);
            x = g.add(&format!("{prefix}.bn{i}"), bn(), &[&x]);
            x = g.add(&format!("{prefix}.relu{i}"), relu(), &[&x]);
        }
        x
    };
    let e1 = double(&mut g, "enc1", "input", 16);
    let p1 = g.add("pool1", maxpool(2, 2, 0, false), &[&e1]);
    let e2 = double(&mut g, "enc2", &p1, 32);
    let p2 = g.add("pool2", maxpool(2, 2, 0, false), &[&e2]);
    let b = double(&mut g, "bottleneck", &p2, 64);
    let up = json!({"type": "conv_transpose2d", "out_channels": 32, "kernel_size": 2, "stride": 2});
    let u2 = g.add("up2", up, &[&b]);
    let c2 = g.add("cat2", json!({"type": "concat", "dim": 1}), &[&e2, &u2]);
    let d2 = double(&mut g, "dec2", &c2, 32);
    let up = json!({"type": "conv_transpose2d", "out_channels": 16, "kernel_size": 2, "stride": 2});
    let u1 = g.add("up1", up, &[&d2]);
    let c1 = g.add("cat1", json!({"type": "concat", "dim": 1}), &[&e1, &u1]);
    let d1 = double(&mut g, "dec1", &c1, 16);
    g.add("head", conv(2, 1, 1, 0, true), &[&d1]);
    g.0
}

/// torchvision's VisionTransformer (vit_b_16): patch embedding, class token, position
/// embedding, 12 encoder blocks of (ln_1, self_attention, dropout, + input) and (ln_2, mlp, +),
/// encoder.ln, token 0, heads.head. LayerNorm eps 1e-6, as torchvision's.
fn vit_b_16() -> Vec<Value> {
    let (d, mlp, heads, layers) = (768u64, 3072u64, 12u64, 12);
    let ln = || json!({"type": "layernorm", "normalized_shape": d, "eps": 1e-6});
    let mut g = Nodes(Vec::new());
    let x = g.add(
        "conv_proj",
        json!({"type": "conv2d", "out_channels": d, "kernel_size": 16, "stride": 16}),
        &["input"],
    );
    let x = g.add("flatten", json!({"type": "flatten", "start_dim": 2}), &[&x]);
    let x = g.add("permute", json!({"type": "permute", "dims": [0, 2, 1]}), &[&x]);
    let cls = g.add("class_token", json!({"type": "parameter", "shape": [1, d]}), &[]);
    let x = g.add("cat", json!({"type": "concat", "dim": 1}), &[&cls, &x]);
    let pos = g.add("encoder.pos_embedding", json!({"type": "parameter", "shape": [197, d]}), &[]);
    let x = g.add("encoder.add_pos_embedding", json!({"type": "add"}), &[&x, &pos]);
    let mut x = g.add("encoder.dropout", json!({"type": "dropout", "p": 0.0}), &[&x]);
    for i in 0..layers {
        let b = format!("encoder.layers.encoder_layer_{i}");
        let y = g.add(&format!("{b}.ln_1"), ln(), &[&x]);
        let y = g.add(
            &format!("{b}.self_attention"),
            json!({"type": "multihead_attention", "embed_dim": d, "num_heads": heads, "batch_first": true}),
            &[&y],
        );
        let y = g.add(&format!("{b}.dropout"), json!({"type": "dropout", "p": 0.0}), &[&y]);
        let r = g.add(&format!("{b}.add_1"), json!({"type": "add"}), &[&y, &x]);
        let y = g.add(&format!("{b}.ln_2"), ln(), &[&r]);
        let y = g.add(&format!("{b}.mlp.0"), json!({"type": "linear", "out_features": mlp}), &[&y]);
        let y = g.add(&format!("{b}.mlp.1"), json!({"type": "gelu"}), &[&y]);
        let y = g.add(&format!("{b}.mlp.2"), json!({"type": "dropout", "p": 0.0}), &[&y]);
        let y = g.add(&format!("{b}.mlp.3"), json!({"type": "linear", "out_features": d}), &[&y]);
        let y = g.add(&format!("{b}.mlp.4"), json!({"type": "dropout", "p": 0.0}), &[&y]);
        x = g.add(&format!("{b}.add_2"), json!({"type": "add"}), &[&y, &r]);
    }
    let x = g.add("encoder.ln", ln(), &[&x]);
    let x = g.add("select", json!({"type": "select", "dim": 1, "index": 0}), &[&x]);
    g.add("heads.head", json!({"type": "linear", "out_features": 1000}), &[&x]);
    g.0
}

/// torchvision's ConvNeXt-T: stem (conv 4/4, LayerNorm2d), stages of CNBlocks (depthwise 7x7,
/// Permute + LayerNorm + Permute as `layernorm2d`, Linear 4C, GELU, Linear C as 1x1 convs,
/// layer_scale [C, 1, 1] times the block, + input; stochastic depth is the identity in
/// evaluation), downsampling (LayerNorm2d, conv 2/2), avgpool, classifier (LayerNorm2d,
/// flatten, linear). LayerNorm eps 1e-6 as torchvision's; LayerNorm2d is marked functional
/// (its forward calls F.layer_norm, which ptflops does not hook).
fn convnext_tiny() -> Vec<Value> {
    let (dims, depths) = ([96u64, 192, 384, 768], [3u64, 3, 9, 3]);
    let ln2d = |c: u64, functional: bool| json!({"type": "layernorm2d", "normalized_shape": c, "eps": 1e-6, "functional": functional});
    let mut g = Nodes(Vec::new());
    let x = g.add(
        "features.0.0",
        json!({"type": "conv2d", "out_channels": 96, "kernel_size": 4, "stride": 4}),
        &["input"],
    );
    let mut x = g.add("features.0.1", ln2d(96, true), &[&x]);
    for (stage, (&c, &depth)) in dims.iter().zip(&depths).enumerate() {
        if stage > 0 {
            let f = format!("features.{}", 2 * stage);
            let y = g.add(&format!("{f}.0"), ln2d(dims[stage - 1], true), &[&x]);
            x = g.add(
                &format!("{f}.1"),
                json!({"type": "conv2d", "out_channels": c, "kernel_size": 2, "stride": 2}),
                &[&y],
            );
        }
        for b in 0..depth {
            let p = format!("features.{}.{b}", 2 * stage + 1);
            let y = g.add(
                &format!("{p}.block.0"),
                json!({"type": "conv2d", "out_channels": c, "kernel_size": 7, "padding": 3, "groups": c}),
                &[&x],
            );
            let y = g.add(&format!("{p}.block.2"), ln2d(c, false), &[&y]);
            let y = g.add(
                &format!("{p}.block.3"),
                json!({"type": "conv2d", "out_channels": 4 * c, "kernel_size": 1}),
                &[&y],
            );
            let y = g.add(&format!("{p}.block.4"), json!({"type": "gelu"}), &[&y]);
            let y = g.add(
                &format!("{p}.block.5"),
                json!({"type": "conv2d", "out_channels": c, "kernel_size": 1}),
                &[&y],
            );
            let s = g.add(&format!("{p}.layer_scale"), json!({"type": "parameter", "shape": [c, 1, 1]}), &[]);
            let y = g.add(&format!("{p}.scale"), json!({"type": "mul"}), &[&s, &y]);
            x = g.add(&format!("{p}.add"), json!({"type": "add"}), &[&y, &x]);
        }
    }
    let x = g.add("avgpool", json!({"type": "adaptive_avgpool2d", "output_size": 1}), &[&x]);
    let x = g.add("classifier.0", ln2d(768, true), &[&x]);
    let x = g.add("classifier.1", json!({"type": "flatten"}), &[&x]);
    g.add("classifier.2", json!({"type": "linear", "out_features": 1000}), &[&x]);
    g.0
}
