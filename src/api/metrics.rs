//! Prometheus metrics in the text exposition format, kept by hand (a few counters and histograms
//! do not need a metrics framework).
use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    /// requests per bucket: above the bound before, at or below its own
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// route template -> status -> latency histogram
type ByRoute = BTreeMap<String, BTreeMap<u16, Histogram>>;

#[derive(Default)]
pub struct Metrics {
    /// method -> route template -> status -> latency histogram (looked up without allocating;
    /// a key is copied once, when it is first seen)
    requests: Mutex<BTreeMap<String, ByRoute>>,
    rejections: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(method) {
            m.insert(method.to_string(), BTreeMap::new());
        }
        let routes = m.get_mut(method).expect("inserted above");
        if !routes.contains_key(route) {
            routes.insert(route.to_string(), BTreeMap::new());
        }
        let h = routes
            .get_mut(route)
            .expect("inserted above")
            .entry(status)
            .or_insert_with(|| Histogram {
                counts: vec![0; BUCKETS.len()],
                ..Default::default()
            });
        // the first bound at or above the value (none: only +Inf); /metrics sums them up
        if let Some(c) = h.counts.get_mut(BUCKETS.partition_point(|b| *b < seconds)) {
            *c += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// The request counters and latency histograms, in the text exposition format.
    fn write_requests(&self, out: &mut String) {
        *out += "# HELP layerscope_http_requests_total Requests answered, by method, route and status.\n# TYPE layerscope_http_requests_total counter\n";
        let reqs = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let flat: Vec<(&String, &String, &u16, &Histogram)> = reqs
            .iter()
            .flat_map(|(m, routes)| routes.iter().flat_map(move |(r, st)| st.iter().map(move |(s, h)| (m, r, s, h))))
            .collect();
        for (method, route, status, h) in flat.iter().copied() {
            let _ = writeln!(
                out,
                "layerscope_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {}",
                label(method),
                label(route),
                h.count
            );
        }
        *out += "# HELP layerscope_http_request_duration_seconds Request latency, by method, route and status.\n# TYPE layerscope_http_request_duration_seconds histogram\n";
        for (method, route, status, h) in flat.iter().copied() {
            let l = format!("method=\"{}\",route=\"{}\",status=\"{status}\"", label(method), label(route));
            // cumulative: every bound counts the requests at or below it
            let mut below = 0;
            for (b, n) in BUCKETS.iter().zip(&h.counts) {
                below += n;
                let _ = writeln!(out, "layerscope_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {below}");
            }
            let _ = writeln!(
                out,
                "layerscope_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "layerscope_http_request_duration_seconds_sum{{{l}}} {}", h.sum);
            let _ = writeln!(out, "layerscope_http_request_duration_seconds_count{{{l}}} {}", h.count);
        }
    }

    /// Counts a refused request by reason (unauthorized, rate_limited, queue_full, too_large...).
    pub fn reject(&self, reason: &str) {
        *self
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.to_string())
            .or_default() += 1;
    }
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub async fn handle(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    state.metrics.write_requests(&mut out);
    out += "# HELP layerscope_rejections_total Requests refused before any work, by reason.\n# TYPE layerscope_rejections_total counter\n";
    for (reason, n) in state.metrics.rejections.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "layerscope_rejections_total{{reason=\"{}\"}} {n}", label(reason));
    }
    let s = &state.pool.stats;
    let _ = write!(
        out,
        "# HELP layerscope_worker_queue_depth libtorch jobs waiting for a worker.\n# TYPE layerscope_worker_queue_depth gauge\nlayerscope_worker_queue_depth {}\n\
         # HELP layerscope_workers_busy libtorch workers running a job.\n# TYPE layerscope_workers_busy gauge\nlayerscope_workers_busy {}\n\
         # HELP layerscope_workers Size of the libtorch worker pool.\n# TYPE layerscope_workers gauge\nlayerscope_workers {}\n\
         # HELP layerscope_torch_jobs_total libtorch jobs finished.\n# TYPE layerscope_torch_jobs_total counter\nlayerscope_torch_jobs_total {}\n\
         # HELP layerscope_torch_seconds_total Time spent running libtorch jobs.\n# TYPE layerscope_torch_seconds_total counter\nlayerscope_torch_seconds_total {}\n",
        s.queued.load(Ordering::Relaxed),
        s.busy.load(Ordering::Relaxed),
        state.pool.workers(),
        s.completed.load(Ordering::Relaxed),
        s.run_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets by hand: a value on a bound counts in it; past the last bound only in +Inf.
    #[test]
    fn latency_buckets_are_cumulative() {
        let m = Metrics::default();
        for s in [0.0001, 0.0005, 0.003, 0.003, 100.0] {
            m.observe("GET", "/healthz", 200, s);
        }
        m.observe("POST", "/v1/grade", 422, 0.02);
        let mut out = String::new();
        m.write_requests(&mut out);
        let bucket = |labels: &str, le: &str| {
            let key = format!("layerscope_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} ");
            let line = out.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("{key}\n{out}"));
            line[key.len()..].parse::<u64>().unwrap()
        };
        let get = r#"method="GET",route="/healthz",status="200""#;
        let expected = [2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4];
        for (b, n) in BUCKETS.iter().zip(expected) {
            assert_eq!(bucket(get, &b.to_string()), n, "le={b}");
        }
        assert_eq!(bucket(get, "+Inf"), 5);
        let post = r#"method="POST",route="/v1/grade",status="422""#;
        assert_eq!(bucket(post, "0.01"), 0);
        assert_eq!(bucket(post, "0.025"), 1);
        assert_eq!(bucket(post, "+Inf"), 1);
        assert!(out.contains(&format!("layerscope_http_request_duration_seconds_count{{{get}}} 5\n")));
        assert!(out.contains(&format!("layerscope_http_requests_total{{{post}}} 1\n")));
    }
}
