//! Runtime configuration, read once from `LAYERSCOPE_*` environment variables (see README).
use crate::spec::SpecLimits;
use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    /// A model file uploaded raw (`content-type: application/octet-stream`) may be this large.
    pub max_model_bytes: usize,
    pub max_json_depth: usize,
    pub spec: SpecLimits,
    /// Limits on work handed to libtorch (verify passes, diagnostics, momentum runs).
    pub max_run_params: u64,
    pub max_run_activations: u64,
    pub max_run_macs: u64,
    /// Time steps recurrent layers take one after the other (tokens x layers x directions): the
    /// part of a run no core count shortens.
    pub max_run_recurrent_steps: u64,
    pub max_batch: u64,
    pub max_steps: u64,
    pub max_tensor_elements: u64,
    pub request_timeout_secs: u64,
    pub workers: usize,
    pub torch_threads: usize,
    pub queue: usize,
    pub log_json: bool,
    /// Bearer keys required on /v1 routes; empty means open.
    pub api_keys: Vec<String>,
    /// Requests a minute per key (or for everyone when there are no keys); 0 turns it off.
    pub rate_limit_per_minute: u64,
    pub rate_limit_burst: u64,
    /// Origins allowed by CORS (`*` for any); empty means no CORS headers.
    pub cors_origins: Vec<String>,
    /// A request body that has not arrived within this many seconds gets 408.
    pub body_timeout_secs: u64,
    /// Request headers not complete within this many seconds: the connection is closed.
    pub header_timeout_secs: u64,
    /// Bytes of analytic answers kept for repeated identical requests (0: off).
    pub response_cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Config {
            addr: "127.0.0.1:8080".parse().unwrap(),
            max_body_bytes: 4 << 20,
            // torchvision's vit_b_16 is 347 MB as ONNX, convnext_base 354 MB
            max_model_bytes: 512 << 20,
            max_json_depth: 64,
            spec: SpecLimits::default(),
            max_run_params: 200_000_000,
            max_run_activations: 200_000_000,
            max_run_macs: 50_000_000_000,
            max_run_recurrent_steps: 20_000,
            max_batch: 4096,
            max_steps: 100_000,
            max_tensor_elements: 10_000_000,
            request_timeout_secs: 120,
            // One worker using every core answers a single heavy request fastest; workers x
            // torch_threads above the core count oversubscribes (idle OpenMP teams spin).
            workers: 1,
            torch_threads: cores,
            queue: 32,
            log_json: false,
            api_keys: Vec::new(),
            rate_limit_per_minute: 0,
            rate_limit_burst: 60,
            cors_origins: Vec::new(),
            body_timeout_secs: 30,
            header_timeout_secs: 10,
            response_cache_bytes: 64 << 20,
        }
    }
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not valid")),
        Err(_) => Ok(default),
    }
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let d = Config::default();
        Ok(Config {
            addr: var("LAYERSCOPE_ADDR", d.addr)?,
            max_body_bytes: var("LAYERSCOPE_MAX_BODY_BYTES", d.max_body_bytes)?,
            max_model_bytes: var("LAYERSCOPE_MAX_MODEL_BYTES", d.max_model_bytes)?,
            max_json_depth: var("LAYERSCOPE_MAX_JSON_DEPTH", d.max_json_depth)?,
            spec: SpecLimits {
                max_layers: var("LAYERSCOPE_MAX_LAYERS", d.spec.max_layers)?,
                max_depth: var("LAYERSCOPE_MAX_NESTING", d.spec.max_depth)?,
                max_dim: var("LAYERSCOPE_MAX_DIM", d.spec.max_dim)?,
            },
            max_run_params: var("LAYERSCOPE_MAX_RUN_PARAMS", d.max_run_params)?,
            max_run_activations: var("LAYERSCOPE_MAX_RUN_ACTIVATIONS", d.max_run_activations)?,
            max_run_macs: var("LAYERSCOPE_MAX_RUN_MACS", d.max_run_macs)?,
            max_run_recurrent_steps: var("LAYERSCOPE_MAX_RUN_RECURRENT_STEPS", d.max_run_recurrent_steps)?,
            max_batch: var("LAYERSCOPE_MAX_BATCH", d.max_batch)?,
            max_steps: var("LAYERSCOPE_MAX_STEPS", d.max_steps)?,
            max_tensor_elements: var("LAYERSCOPE_MAX_TENSOR_ELEMENTS", d.max_tensor_elements)?,
            request_timeout_secs: var("LAYERSCOPE_REQUEST_TIMEOUT_SECS", d.request_timeout_secs)?,
            workers: var("LAYERSCOPE_WORKERS", d.workers)?.max(1),
            torch_threads: var("LAYERSCOPE_TORCH_THREADS", d.torch_threads)?.max(1),
            queue: var("LAYERSCOPE_QUEUE", d.queue)?,
            log_json: var::<String>("LAYERSCOPE_LOG_FORMAT", "text".into())? == "json",
            api_keys: api_keys()?,
            rate_limit_per_minute: var("LAYERSCOPE_RATE_LIMIT_PER_MINUTE", d.rate_limit_per_minute)?,
            rate_limit_burst: var("LAYERSCOPE_RATE_LIMIT_BURST", d.rate_limit_burst)?,
            cors_origins: list(&std::env::var("LAYERSCOPE_CORS_ORIGINS").unwrap_or_default()),
            body_timeout_secs: var("LAYERSCOPE_BODY_TIMEOUT_SECS", d.body_timeout_secs)?,
            header_timeout_secs: var("LAYERSCOPE_HEADER_TIMEOUT_SECS", d.header_timeout_secs)?.max(1),
            response_cache_bytes: var("LAYERSCOPE_RESPONSE_CACHE_BYTES", d.response_cache_bytes)?,
        })
    }
}

fn list(s: &str) -> Vec<String> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Keys from LAYERSCOPE_API_KEYS (comma-separated) and LAYERSCOPE_API_KEYS_FILE (one a line).
fn api_keys() -> Result<Vec<String>, String> {
    let mut keys = list(&std::env::var("LAYERSCOPE_API_KEYS").unwrap_or_default());
    if let Ok(path) = std::env::var("LAYERSCOPE_API_KEYS_FILE") {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("LAYERSCOPE_API_KEYS_FILE={path:?}: {e}"))?;
        keys.extend(list(&text));
    }
    Ok(keys)
}
