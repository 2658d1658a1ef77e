//! `cargo bench`: the analytic paths in-process (no libtorch is touched by either).
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use layerscope::analysis::{complexity, receptive_field};
use layerscope::spec::{infer, parse_model, SpecLimits};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let limits = SpecLimits::default();
    let vgg16 = parse_model(&json!({"preset": "vgg16"}), "", &limits).unwrap();
    let resnet50 = parse_model(&json!({"preset": "resnet50"}), "", &limits).unwrap();
    c.bench_function("receptive_field_table_vgg16", |b| {
        b.iter(|| {
            let g = infer(black_box(&vgg16), "").unwrap();
            black_box(receptive_field::layer_table(&g, &receptive_field::node_rfs(&g), 1))
        })
    });
    c.bench_function("receptive_field_exact_unit_vgg16", |b| {
        let g = infer(&vgg16, "").unwrap();
        let chain = receptive_field::chain_to(&g, Some(&receptive_field::LayerRef::Name("pool5".into())), "").unwrap();
        b.iter(|| black_box(receptive_field::dependence(&chain, &[3, 3], None)))
    });
    let opts = complexity::Options {
        rule: complexity::FlopRule::Profile(complexity::Profile::TorchFlopCounter),
        additions: complexity::Additions::Accumulate,
        batch: 1,
        dtype_bytes: 4,
    };
    c.bench_function("complexity_table_resnet50", |b| {
        b.iter(|| {
            let g = infer(black_box(&resnet50), "").unwrap();
            black_box(complexity::table(&g, &opts).unwrap())
        })
    });
    // graph-form presets: shape inference of the DAG included
    for name in ["efficientnet_b0", "mobilenet_v3_small", "unet_small", "vit_b_16", "lstm_lm"] {
        let spec = parse_model(&json!({"preset": name}), "", &limits).unwrap();
        c.bench_function(&format!("complexity_table_{name}"), |b| {
            b.iter(|| {
                let g = infer(black_box(&spec), "").unwrap();
                black_box(complexity::table(&g, &opts).unwrap())
            })
        });
        c.bench_function(&format!("receptive_field_table_{name}"), |b| {
            b.iter(|| {
                let g = infer(black_box(&spec), "").unwrap();
                black_box(receptive_field::layer_table(&g, &receptive_field::node_rfs(&g), 0))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
