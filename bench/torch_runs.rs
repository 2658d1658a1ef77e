//! `cargo bench --bench torch_runs`: libtorch work in-process (no HTTP), one worker's view:
//! the receptive-field probe on presets and the gradient diagnostics of the 10x512 sigmoid MLP
//! (the same model as bench/gradient.py), with the spectral norms alone beside it.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use layerscope::spec::{parse_model, SpecLimits};
use layerscope::torch::diagnostics::{self, Inputs, ObjectiveKind, Request};
use layerscope::torch::net::{Init, InitSpec};
use layerscope::torch::probe;
use serde_json::json;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

fn bench(c: &mut Criterion) {
    tch::set_num_threads(std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(1));
    let limits = SpecLimits::default();
    // the endpoint's default unit: the centre of the last layer
    for preset in ["vgg16", "resnet50", "inception_naive", "efficientnet_b0", "r3d_18"] {
        let spec = parse_model(&json!({"preset": preset}), "", &limits).unwrap();
        let graph = layerscope::spec::infer(&spec, "").unwrap();
        let last = graph.nodes.last().unwrap();
        let (target, out) = (last.path.clone(), last.output.clone());
        let index: Vec<u64> = if out.len() >= 3 {
            out[1..].iter().map(|n| n / 2).collect()
        } else {
            vec![out[0] / 2]
        };
        c.bench_function(&format!("probe_{preset}_default_unit"), |b| {
            b.iter(|| black_box(probe::probe(&spec, &target, &index, None, Device::Cpu).unwrap()))
        });
    }
    let mut layers = Vec::new();
    for _ in 0..9 {
        layers.push(json!({"type": "linear", "out_features": 512}));
        layers.push(json!({"type": "sigmoid"}));
    }
    layers.push(json!({"type": "linear", "out_features": 512}));
    let spec = parse_model(&json!({"input_shape": [512], "layers": layers}), "", &limits).unwrap();
    let req = Request {
        spec,
        init: InitSpec {
            init: Init::PytorchDefault,
            scale: 1.0,
            seed: 0,
        },
        explicit: HashMap::new(),
        inputs: Inputs::Normal { batch: 256, seed: 0 },
        objective: ObjectiveKind::SumOutput,
        kind: Kind::Float,
        device: Device::Cpu,
        saturation: 4.0,
        spectral_tolerance: diagnostics::SPECTRAL_TOLERANCE,
    };
    // where one run's time goes (printed, not measured by criterion)
    let _ = diagnostics::run(&req).unwrap();
    for _ in 0..3 {
        let r = diagnostics::run(&req).unwrap();
        eprintln!(
            "diagnostics phases (ms): {:?}",
            r.phases.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>()
        );
    }
    let mut group = c.benchmark_group("diagnostics");
    group.sample_size(20);
    group.bench_function("mlp_10x512_batch256_float32", |b| {
        b.iter(|| black_box(diagnostics::run(&req).unwrap()))
    });
    let weights: Vec<Tensor> = (0..10)
        .map(|i| Tensor::randn([512, 512], (Kind::Float, Device::Cpu)) * (0.1 + i as f64 * 0.01))
        .collect();
    // one matrix at a time (each call on one core), and all ten in one call as the diagnostics
    // compute them (spread over the cores)
    group.bench_function("spectral_norms_10x512x512_one_by_one", |b| {
        b.iter(|| {
            black_box(
                weights
                    .iter()
                    .map(|w| diagnostics::spectral_norm(w, diagnostics::SPECTRAL_TOLERANCE))
                    .collect::<Vec<_>>(),
            )
        })
    });
    group.bench_function("spectral_norms_10x512x512_together", |b| {
        b.iter(|| black_box(diagnostics::spectral_norms(&weights, diagnostics::SPECTRAL_TOLERANCE)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
