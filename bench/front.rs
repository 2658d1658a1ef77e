//! `cargo bench --bench front`: what the service adds to a light request, in-process (no sockets,
//! so wrk's share of the CPUs and the machine's drift do not blur it): `GET /healthz` through
//! layerscope's whole router (request id, API keys and rate limit, metrics, the request's log
//! line) against a bare axum router answering the same route, and the request's log line alone,
//! written directly (`logging::request`) against the `tracing::info!` event it stands for,
//! formatted by `logging::Line`. Logs go to a sink that discards them, through the same batch
//! writer as the server's stdout.
use axum::body::Body;
use axum::http::Request;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tower::ServiceExt;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (writer, _flush) = layerscope::logging::batch(Box::new(std::io::sink()));
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .event_format(layerscope::logging::Line)
        .with_writer(writer.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let healthz = || Request::get("/healthz").body(Body::empty()).unwrap();
    let bare = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let app = layerscope::app(layerscope::Config::default());
    let (id, path) = ("ls-1f2e-123456", "/v1/complexity");
    // the tracing event first: once direct lines are on, logging::request writes them itself
    c.bench_function("request_line_tracing_event", |b| {
        b.iter(|| tracing::info!(target: "layerscope::api", request_id = %black_box(id), method = %"POST", path = black_box(path), status = 200u16, micros = 1234u64, "request"))
    });
    layerscope::logging::write_request_lines(writer);
    c.bench_function("request_line_direct", |b| {
        b.iter(|| layerscope::logging::request(black_box(id), "POST", black_box(path), 200, 1234))
    });
    c.bench_function("healthz_bare_axum_router", |b| {
        b.iter(|| rt.block_on(bare.clone().oneshot(healthz())).unwrap())
    });
    c.bench_function("healthz_layerscope_router", |b| {
        b.iter(|| rt.block_on(app.clone().oneshot(healthz())).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
