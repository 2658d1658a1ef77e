//! Per-student variants of the course's problems, from a seed: random but valid networks of the
//! course's kinds (a VGG-style stem for receptive fields, as in P4; an Inception module for
//! parameter and operation counts, as in P5), the question text in Markdown, and the questions
//! in /v1/grade's form. The same seed gives the same variant on every machine, so grading a
//! variant needs only its seed and the answers. Answer keys come from the analysis itself (the
//! grade handler computes them), never from here.
use super::rng::Rng;
use serde_json::{json, Value};

/// One student's variant.
pub struct Variant {
    pub seed: u64,
    /// The whole problem text, Markdown.
    pub markdown: String,
    /// Question objects as /v1/grade reads them (id, kind, model, ask, points), without answers.
    pub questions: Vec<Value>,
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

fn conv(name: &str, out: u64, k: u64) -> Value {
    json!({"type": "conv2d", "name": name, "out_channels": out, "kernel_size": k, "padding": k / 2})
}

/// A VGG-style stem: 2 or 3 stages of 1-3 same-padded convolutions (3x3 or 5x5) with ReLU, each
/// stage ending in a pool (2x2 stride 2, or 3x3 stride 2 padding 1).
fn stem(rng: &mut Rng) -> (Value, Vec<String>, String) {
    let size = pick(rng, &[32u64, 64, 96, 128, 224]);
    let stages = pick(rng, &[2u64, 3]);
    let mut layers = Vec::new();
    let mut text = vec![format!("Input: 3 x {size} x {size}.")];
    let mut pools = Vec::new();
    let mut n_conv = 0;
    for stage in 1..=stages {
        let width = pick(rng, &[16u64, 32, 64, 128]) * stage.min(2);
        for _ in 0..pick(rng, &[1u64, 2, 3]) {
            n_conv += 1;
            let k = pick(rng, &[3u64, 3, 5]);
            let name = format!("conv{n_conv}");
            text.push(format!(
                "`{name}`: {k}x{k} convolution, {width} filters, stride 1, padding {}, then ReLU.",
                k / 2
            ));
            layers.push(conv(&name, width, k));
            layers.push(json!({"type": "relu"}));
        }
        let name = format!("pool{stage}");
        let (k, p) = pick(rng, &[(2u64, 0u64), (2, 0), (3, 1)]);
        text.push(format!("`{name}`: {k}x{k} max pooling, stride 2, padding {p}."));
        layers.push(json!({"type": "maxpool2d", "name": name, "kernel_size": k, "stride": 2, "padding": p}));
        pools.push(name);
    }
    (json!({"input_shape": [3, size, size], "layers": layers}), pools, text.join("\n- "))
}

/// An Inception module like the course's reduced one: 1x1; 1x1 then 3x3; 1x1 then 5x5; 3x3 max
/// pool then 1x1; concatenated.
fn inception(rng: &mut Rng) -> (Value, String) {
    let cin = pick(rng, &[64u64, 128, 192, 256, 480]);
    let size = pick(rng, &[14u64, 28, 32]);
    let (c1, r3, c3, r5, c5, cp) = (
        pick(rng, &[32u64, 64, 128]),
        pick(rng, &[32u64, 64, 96]),
        pick(rng, &[64u64, 128, 192]),
        pick(rng, &[16u64, 32]),
        pick(rng, &[32u64, 64, 96]),
        pick(rng, &[32u64, 64]),
    );
    let relu = json!({"type": "relu"});
    let model = json!({"input_shape": [cin, size, size], "layers": [{"type": "concat", "name": "inception", "branches": [
        [conv("1x1", c1, 1), relu],
        [conv("3x3_reduce", r3, 1), relu, conv("3x3", c3, 3), relu],
        [conv("5x5_reduce", r5, 1), relu, conv("5x5", c5, 5), relu],
        [{"type": "maxpool2d", "name": "pool", "kernel_size": 3, "stride": 1, "padding": 1}, conv("pool_proj", cp, 1), relu],
    ]}]});
    let text = format!(
        "Input: {cin} x {size} x {size}. Four branches, concatenated on channels; every convolution has a bias, \
         \"same\" padding and stride 1, and is followed by ReLU:\n\
         1. 1x1 convolution, {c1} filters;\n\
         2. 1x1 convolution, {r3} filters, then 3x3 convolution, {c3} filters;\n\
         3. 1x1 convolution, {r5} filters, then 5x5 convolution, {c5} filters;\n\
         4. 3x3 max pooling (stride 1, padding 1), then 1x1 convolution, {cp} filters."
    );
    (model, text)
}

/// The variant for `seed`.
pub fn variant(seed: u64) -> Variant {
    let mut rng = Rng::new(seed ^ 0x7661_7269_616e_7473);
    let (stem_model, pools, stem_text) = stem(&mut rng);
    let (module, module_text) = inception(&mut rng);
    let last = pools.last().cloned().unwrap_or_default();
    let first = pools.first().cloned().unwrap_or_default();
    let q = |id: &str, kind: &str, model: &Value, ask: String, points: f64| json!({"id": id, "kind": kind, "model": model, "ask": ask, "points": points});
    let questions = vec![
        q(
            "a.rows",
            "receptive_field",
            &stem_model,
            format!("rows of layer {last} at one-based i"),
            2.0,
        ),
        q(
            "a.cols",
            "receptive_field",
            &stem_model,
            format!("cols of layer {first} at one-based i"),
            2.0,
        ),
        q("a.size", "receptive_field", &stem_model, format!("size of layer {last}"), 1.0),
        q("b.params.branch2", "complexity", &module, "params of branch 2".into(), 1.0),
        q("b.params.branch3", "complexity", &module, "params of branch 3".into(), 1.0),
        q("b.params", "complexity", &module, "total params".into(), 1.0),
        q("b.multiplications", "complexity", &module, "total multiplications".into(), 2.0),
    ];
    let markdown = format!(
        "# Variant {seed}\n\n\
         ## A. Receptive fields\n\n\
         A network:\n\n- {stem_text}\n\n\
         Output unit (i, j) of a layer, counted from 1, depends on input rows m and columns n in ranges \
         of the form `a*i + b <= m <= a*i + c` (clipping to the image aside).\n\n\
         - **a.rows** (2 points): the input rows that unit (i, j) of `{last}` depends on.\n\
         - **a.cols** (2 points): the input columns that unit (i, j) of `{first}` depends on.\n\
         - **a.size** (1 point): the receptive-field size (rows) of `{last}`.\n\n\
         ## B. Parameters and operations\n\n\
         An Inception module. {module_text}\n\n\
         - **b.params.branch2** (1 point): the parameters of branch 2 (weights and biases).\n\
         - **b.params.branch3** (1 point): the parameters of branch 3.\n\
         - **b.params** (1 point): the parameters of the module.\n\
         - **b.multiplications** (2 points): the multiplications of one forward pass on one input \
         (one per weight use, products with padding zeros included).\n\n\
         Answer with one `id: answer` line per question, e.g. `a.rows: 2i-3 <= m <= 2i+2`.\n"
    );
    Variant { seed, markdown, questions }
}

/// A UUID (version-4 form) that is the same for the same seed, for PrairieLearn's info.json.
pub fn uuid(seed: u64) -> String {
    let mut rng = Rng::new(seed ^ 0x7575_6964);
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        8 + (b >> 62),
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_variant_and_seeds_differ() {
        let a = variant(7);
        assert_eq!(a.questions, variant(7).questions);
        assert_eq!(a.markdown, variant(7).markdown);
        let distinct: std::collections::HashSet<String> = (0..50).map(|s| variant(s).questions[0]["model"].to_string()).collect();
        assert!(distinct.len() > 30, "{} distinct stems in 50 seeds", distinct.len());
        for s in 0..200 {
            let u = uuid(s);
            let groups: Vec<usize> = u.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{u}");
            assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
            assert_eq!(&u[14..15], "4");
            assert!("89ab".contains(&u[19..20]), "{u}");
        }
        assert_ne!(uuid(1), uuid(2));
    }
}
