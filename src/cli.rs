//! The command line, without a server: `layerscope complexity model.onnx`, `layerscope
//! receptive-field spec.json --layer pool2 --unit 1,56 --one-based`, `layerscope diagnostics
//! resnet18`. Each command builds the same request an HTTP client would send and hands it to the
//! same router in-process (no socket), so the answers, the limits and the problem texts are the
//! service's own; the command line only renders them as tables.
use crate::{app, Config};
use axum::body::Body;
use axum::http::Request;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tower::ServiceExt;

#[derive(Parser, Debug)]
#[command(
    name = "layerscope",
    version,
    about = "Exact receptive fields, parameter/FLOP tables and gradient diagnostics, verified in libtorch. Without a command: the HTTP server."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (the default); configured by LAYERSCOPE_* variables.
    Serve,
    /// Exit 0 when the local server's /healthz answers 200 (the container's HEALTHCHECK).
    Healthcheck,
    /// Print the contract (openapi.yaml) generated from the request and response types.
    Openapi,
    /// Parameters, MACs and FLOPs per layer.
    Complexity {
        #[command(flatten)]
        common: Common,
        /// Count as a tool does: fvcore, ptflops, torch_flop_counter, torchvision.
        #[arg(long)]
        profile: Option<String>,
        /// Batch size of the counted forward pass.
        #[arg(long)]
        batch: Option<u64>,
    },
    /// Receptive field per layer, and the exact input positions one unit sees.
    ReceptiveField {
        #[command(flatten)]
        common: Common,
        /// The unit's layer (path or name); with --unit.
        #[arg(long, requires = "unit")]
        layer: Option<String>,
        /// The unit's position: `i,j` on a map, `i` on features.
        #[arg(long, requires = "layer")]
        unit: Option<String>,
        /// The unit's channel (default: every channel).
        #[arg(long)]
        channel: Option<u64>,
        /// Positions counted from 1, as the course writes them.
        #[arg(long)]
        one_based: bool,
    },
    /// A real forward/backward pass in libtorch: gradient norms per layer and the verdict.
    Diagnostics {
        #[command(flatten)]
        common: Common,
        /// Batch of normal inputs.
        #[arg(long)]
        batch: Option<u64>,
        /// Weights: model (a file's own, the default for ONNX), pytorch_default, xavier_uniform, ...
        #[arg(long)]
        init: Option<String>,
        /// cpu or cuda.
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// An ONNX file (`.onnx`), a TorchScript file (`.pt`, with --input-shape), a JSON spec file
    /// (`.json`: `{"input_shape", "layers"}`, a graph or `{"preset"}`), or a preset's name.
    pub model: String,
    /// Any other request fields, as a JSON object (the endpoint's own names).
    #[arg(long)]
    pub request: Option<String>,
    /// One sample's shape for a TorchScript file (`.pt`), e.g. 3,224,224.
    #[arg(long)]
    pub input_shape: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Markdown,
}

/// What went wrong, for the exit status: 1 a refused request, 2 a local problem (a file).
pub struct Failure {
    pub code: i32,
    pub message: String,
}

enum Model {
    /// A model file, with the side files (an ONNX model's external data) its tensors name.
    File(bytes::Bytes, Vec<(String, Vec<u8>)>),
    Json(Value),
}

fn read_model(arg: &str) -> Result<Model, Failure> {
    let local = |m: String| Failure { code: 2, message: m };
    let path = std::path::Path::new(arg);
    // a file: ONNX or TorchScript, told apart by the service from its first bytes
    if arg.ends_with(".onnx") || arg.ends_with(".pt") || (path.is_file() && !arg.ends_with(".json")) {
        let bytes: bytes::Bytes = std::fs::read(path).map_err(|e| local(format!("cannot read {arg}: {e}")))?.into();
        let side = side_files(path, &bytes).map_err(local)?;
        return Ok(Model::File(bytes, side));
    }
    if arg.ends_with(".json") {
        let text = std::fs::read_to_string(path).map_err(|e| local(format!("cannot read {arg}: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| local(format!("{arg} is not JSON: {e}")))?;
        // a whole request body ({"model": ...}) or the model itself
        return Ok(Model::Json(v.get("model").cloned().unwrap_or(v)));
    }
    Ok(Model::Json(json!({ "preset": arg })))
}

/// The external data files an ONNX model names (`torch.onnx.export` writes `model.onnx.data`
/// beside `model.onnx`), read from the model's folder; none for other files. A location that
/// leaves the folder is refused, as ONNX's own checker refuses it.
fn side_files(path: &std::path::Path, bytes: &bytes::Bytes) -> Result<Vec<(String, Vec<u8>)>, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Ok(Vec::new());
    }
    // (a file that is not ONNX gets the service's own answer)
    let locations = crate::spec::onnx::external_locations(bytes.clone()).unwrap_or_default();
    let folder = path.parent().unwrap_or(std::path::Path::new("."));
    locations
        .into_iter()
        .map(|loc| {
            let rel = std::path::Path::new(&loc);
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                return Err(format!(
                    "{} names external data {loc:?} outside its folder; refused",
                    path.display()
                ));
            }
            let file = folder.join(rel);
            std::fs::read(&file)
                .map(|b| (loc.clone(), b))
                .map_err(|e| format!("cannot read {} (the external data {} names): {e}", file.display(), path.display()))
        })
        .collect()
}

/// A `multipart/form-data` body: the model as its `model` part, each side file as a `data`
/// part named by its location, and the request's fields as the `request` part.
pub fn multipart(model: &[u8], side: &[(String, Vec<u8>)], request: &str) -> (String, Vec<u8>) {
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut boundary = String::from("layerscope-boundary-7f3a9c");
    while contains(model, boundary.as_bytes()) || side.iter().any(|(_, b)| contains(b, boundary.as_bytes())) {
        boundary.push('x');
    }
    let mut body = Vec::with_capacity(model.len() + side.iter().map(|(_, b)| b.len()).sum::<usize>() + 1024);
    let mut part = |disposition: String, data: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; {disposition}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    };
    part("name=\"request\"".into(), request.as_bytes());
    part("name=\"model\"; filename=\"model.onnx\"".into(), model);
    for (name, data) in side {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        part(format!("name=\"data\"; filename=\"{quoted}\""), data);
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Runs one command and returns what to print, or the failure.
pub async fn run(command: &Command, config: Config) -> Result<String, Failure> {
    let (path, common, mut request) = match command {
        Command::Complexity { common, profile, batch } => {
            let mut r = json!({});
            if let Some(p) = profile {
                r["profile"] = json!(p);
            }
            if let Some(b) = batch {
                r["batch_size"] = json!(b);
            }
            ("/v1/complexity", common, r)
        }
        Command::ReceptiveField {
            common,
            layer,
            unit,
            channel,
            one_based,
        } => {
            let mut r = json!({});
            if let (Some(layer), Some(unit)) = (layer, unit) {
                let index: Result<Vec<i64>, _> = unit.split(',').map(|s| s.trim().parse::<i64>()).collect();
                let index = index.map_err(|_| Failure {
                    code: 2,
                    message: format!("--unit {unit:?}: expected integers like 1,56"),
                })?;
                r["position"] = json!({"layer": layer, "index": index});
                if let Some(c) = channel {
                    r["position"]["channel"] = json!(c);
                }
            }
            if *one_based {
                r["index_base"] = json!(1);
            }
            ("/v1/receptive-field", common, r)
        }
        Command::Diagnostics {
            common,
            batch,
            init,
            device,
        } => {
            let mut r = json!({});
            if let Some(b) = batch {
                r["inputs"] = json!({"batch_size": b});
            }
            if let Some(i) = init {
                r["init"] = json!(i);
            }
            if let Some(d) = device {
                r["device"] = json!(d);
            }
            ("/v1/gradient-diagnostics", common, r)
        }
        Command::Serve | Command::Healthcheck | Command::Openapi => unreachable!("handled by main"),
    };
    if let Some(extra) = &common.request {
        let extra: Value = serde_json::from_str(extra).map_err(|e| Failure {
            code: 2,
            message: format!("--request is not JSON: {e}"),
        })?;
        let Value::Object(extra) = extra else {
            return Err(Failure {
                code: 2,
                message: "--request must be a JSON object".into(),
            });
        };
        for (k, v) in extra {
            request[k] = v;
        }
    }
    if let Some(shape) = &common.input_shape {
        let dims: Result<Vec<u64>, _> = shape.split(',').map(|s| s.trim().parse::<u64>()).collect();
        request["input_shape"] = json!(dims.map_err(|_| Failure {
            code: 2,
            message: format!("--input-shape {shape:?}: expected sizes like 3,224,224"),
        })?);
    }
    let req = match read_model(&common.model)? {
        Model::File(bytes, side) if !side.is_empty() => {
            let (content_type, body) = multipart(&bytes, &side, &request.to_string());
            Request::post(path).header("content-type", content_type).body(Body::from(body))
        }
        Model::File(bytes, _) => {
            let query = url_encode(&request.to_string());
            Request::post(format!("{path}?request={query}"))
                .header("content-type", "application/octet-stream")
                .body(Body::from(bytes))
        }
        Model::Json(model) => {
            request["model"] = model;
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(request.to_string()))
        }
    }
    .expect("a valid request");
    let resp = app(config).oneshot(req).await.expect("the router is infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let at = v["pointer"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(|p| format!(" (at {p})"))
            .unwrap_or_default();
        return Err(Failure {
            code: 1,
            message: format!(
                "{} {}: {}{at}",
                status.as_u16(),
                v["title"].as_str().unwrap_or(""),
                v["detail"].as_str().unwrap_or(&String::from_utf8_lossy(&bytes))
            ),
        });
    }
    Ok(render(command, &v, common.format))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A table: headers, rows and the lines under it (totals, the unit's answer, the verdict).
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join("x"),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => format!("{f:.6e}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `1234567` as `1,234,567`, as torchinfo prints counts.
fn grouped(v: &Value) -> String {
    let Some(n) = v.as_u64() else { return cell(v) };
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Under a diagnostics table: the verdict and how the run was made.
fn run_notes(v: &Value) -> Vec<String> {
    vec![
        format!("verdict: {}", cell(&v["verdict"])),
        format!(
            "device {}, {}, batch {}",
            cell(&v["device"]),
            cell(&v["dtype"]),
            cell(&v["batch_size"])
        ),
    ]
}

/// One row per item of `v[key]`, a column per (JSON pointer, rendering).
fn pick(v: &Value, key: &str, columns: &[(&str, fn(&Value) -> String)]) -> Vec<Vec<String>> {
    let items = v[key].as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|(at, show)| show(r.pointer(at).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect()
}

/// A receptive-field axis: `2i-5 <= m <= 2i+4 (size 10, jump 2)`.
fn axis(a: &Value) -> String {
    if a.is_null() {
        return String::new();
    }
    format!("{} (size {}, jump {})", cell(&a["text"]), cell(&a["size"]), cell(&a["jump"]))
}

/// A range with floors along one axis: `floor(i/2) <= m <= floor(i/2) (size 1, jump 1/2)`, the
/// size a range where it varies with the output index.
fn rational_axis(a: &Value) -> String {
    if a.is_null() {
        return String::new();
    }
    let size = match (cell(&a["min_size"]), cell(&a["max_size"])) {
        (lo, hi) if lo == hi => lo,
        (lo, hi) => format!("{lo}-{hi}"),
    };
    format!("{} (size {size}, jump {})", cell(&a["text"]), cell(&a["jump"]))
}

fn table(command: &Command, v: &Value) -> Table {
    match command {
        Command::Complexity { .. } => {
            let t = &v["totals"];
            Table {
                headers: vec!["layer", "type", "output shape", "params", "MACs", "FLOPs"],
                rows: pick(
                    v,
                    "rows",
                    &[
                        ("/path", cell),
                        ("/type", cell),
                        ("/output_shape", cell),
                        ("/params", grouped),
                        ("/macs", grouped),
                        ("/flops", grouped),
                    ],
                ),
                notes: [
                    format!("total params: {}", grouped(&t["params"])),
                    format!("total MACs: {}", grouped(&t["macs"])),
                    format!(
                        "total FLOPs: {} ({})",
                        grouped(&t["flops"]),
                        v["profile"].as_str().unwrap_or("default convention")
                    ),
                ]
                .into_iter()
                // what the profile's tool leaves out, row by row
                .chain(
                    v["rows"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["note"].as_str().map(|n| format!("layer {}: {n}", cell(&r["path"])))),
                )
                .collect(),
            }
        }
        Command::ReceptiveField { .. } => {
            let mut notes = Vec::new();
            let p = &v["position"];
            if p.is_object() {
                notes.push(format!("unit {} of layer {}:", cell(&p["index"]), cell(&p["layer"])));
                // the axes of the model's input: rows, columns and channels of an image, the
                // tokens (and features) of a sequence, the features of a vector
                let axes: Vec<String> = [
                    ("input_slices", "slices"),
                    ("input_rows", "rows"),
                    ("input_cols", "columns"),
                    ("input_channels", "channels"),
                    ("input_tokens", "tokens"),
                    ("input_features", "features"),
                ]
                .iter()
                .filter(|(k, _)| p[*k].is_array())
                .map(|(k, name)| format!("{name} {}", p[*k]))
                .collect();
                notes.push(format!("  input {}", axes.join(", ")));
                if p["clipped"].is_object() {
                    let slices = match &p["clipped"]["slices"] {
                        Value::Null => String::new(),
                        d => format!("slices {d} "),
                    };
                    notes.push(format!(
                        "  range {slices}rows {} cols {} (clipped to the image)",
                        p["clipped"]["rows"], p["clipped"]["cols"]
                    ));
                }
            }
            if let Some(ok) = v["verification"]["agrees"].as_bool() {
                notes.push(format!(
                    "verified by autograd in libtorch: {}",
                    if ok { "agrees" } else { "DISAGREES" }
                ));
            }
            if let Some(note) = v["note"].as_str() {
                notes.push(note.to_string());
            }
            // a volume's layers have a depth column too; a range with floors (after a
            // transposed conv or an upsampling) is shown from `rational`
            let layers = v["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
            let volume = layers
                .iter()
                .any(|l| !l["receptive_field"]["depth"].is_null() || !l["rational"]["depth"].is_null());
            let mut headers = vec!["layer", "type", "output shape", "kind"];
            let mut axes = vec!["height", "width"];
            if volume {
                axes.insert(0, "depth");
            }
            headers.extend(&axes);
            let rows = layers
                .iter()
                .map(|l| {
                    let mut row: Vec<String> = ["path", "type", "output_shape", "kind"].iter().map(|k| cell(&l[*k])).collect();
                    row.extend(axes.iter().map(|a| match (&l["receptive_field"][*a], &l["rational"][*a]) {
                        (Value::Null, r) => rational_axis(r),
                        (f, _) => axis(f),
                    }));
                    row
                })
                .collect();
            Table { headers, rows, notes }
        }
        // a TorchScript module: per named parameter
        Command::Diagnostics { .. } if v["parameters"].is_array() => Table {
            headers: vec!["parameter", "shape", "|dL/dp|", "max |dL/dp|", "ratio to last weight"],
            rows: pick(
                v,
                "parameters",
                &[
                    ("/name", cell),
                    ("/shape", cell),
                    ("/grad_frobenius", cell),
                    ("/grad_max_abs", cell),
                    ("/grad_ratio_to_last_weight", cell),
                ],
            ),
            notes: run_notes(v),
        },
        Command::Diagnostics { .. } => Table {
            headers: vec!["layer", "type", "|dL/dW|", "|dL/db|", "spectral norm", "verdict"],
            rows: pick(
                v,
                "layers",
                &[
                    ("/path", cell),
                    ("/type", cell),
                    ("/weight_grad/frobenius", cell),
                    ("/bias_grad/frobenius", cell),
                    ("/spectral_norm", cell),
                    ("/verdict", cell),
                ],
            ),
            notes: run_notes(v),
        },
        Command::Serve | Command::Healthcheck | Command::Openapi => unreachable!(),
    }
}

fn render(command: &Command, v: &Value, format: Format) -> String {
    if format == Format::Json {
        return serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    }
    let t = table(command, v);
    let mut out = String::new();
    match format {
        Format::Csv => {
            let quote = |s: &str| {
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_string()
                }
            };
            out += &t.headers.join(",");
            out.push('\n');
            for r in &t.rows {
                out += &r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
                out.push('\n');
            }
        }
        Format::Markdown => {
            out += &format!("| {} |\n", t.headers.join(" | "));
            out += &format!("|{}\n", t.headers.iter().map(|_| "---|").collect::<String>());
            for r in &t.rows {
                out += &format!("| {} |\n", r.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
            }
            for n in &t.notes {
                out += &format!("\n{n}");
            }
            out.push('\n');
        }
        _ => {
            let widths: Vec<usize> = (0..t.headers.len())
                .map(|i| {
                    t.rows
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([t.headers[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<&str>| -> String {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        // numbers right-aligned, text left-aligned
                        if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ",.e-+".contains(ch)) {
                            format!("{c:>w$}", w = widths[i])
                        } else {
                            format!("{c:<w$}", w = widths[i])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            let rule = "=".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1));
            out += &format!("{rule}\n{}\n{rule}\n", line(t.headers.clone()));
            for r in &t.rows {
                out += &line(r.iter().map(String::as_str).collect());
                out.push('\n');
            }
            out += &format!("{rule}\n");
            for n in &t.notes {
                out += n;
                out.push('\n');
            }
        }
    }
    out
}
