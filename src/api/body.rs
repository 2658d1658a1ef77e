//! The JSON body extractor: content type, size and nesting are checked here, once, so that
//! handlers only see a parsed `serde_json::Value`.
use super::error::ApiError;
use super::AppState;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde_json::Value;

pub struct JsonBody(pub Value);

/// A model file uploaded as the body (raw or multipart), with the side files a multipart
/// upload sent beside it (an ONNX model's external data, by file name).
pub struct Upload {
    pub model: axum::body::Bytes,
    pub external: crate::spec::onnx::ExternalFiles,
}

tokio::task_local! {
    /// The model file of an upload, for the request that sent it.
    static UPLOAD: std::cell::RefCell<Option<Upload>>;
}

/// The model key that stands for the request's own uploaded body.
pub const UPLOADED: &str = "uploaded_body";

/// Whether a media type (any case, no parameters) is a model file's.
fn is_upload_mime(mime: &str) -> bool {
    ["application/octet-stream", "application/onnx", MULTIPART]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(mime))
}

const MULTIPART: &str = "multipart/form-data";

/// Whether the request's body is a model file (the raw upload form).
pub fn is_upload(req: &Request) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    is_upload_mime(ct.split(';').next().unwrap_or("").trim())
}

/// Runs a request with an empty upload slot of its own.
pub async fn with_upload_slot<F: std::future::Future>(f: F) -> F::Output {
    UPLOAD.scope(std::cell::RefCell::new(None), f).await
}

/// The file this request uploaded, taken (once).
pub fn take_upload() -> Option<Upload> {
    UPLOAD.try_with(|slot| slot.borrow_mut().take()).ok().flatten()
}

fn depth(v: &Value) -> usize {
    // Iterative, so a hostile document cannot overflow the stack here.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

/// Reads a whole body under the size limit (413) and the body timeout (408).
pub async fn read_body(body: axum::body::Body, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    read_limited(body, state, state.config.max_body_bytes, "max_body_bytes").await
}

/// The body into one buffer sized by `Content-Length` when the client sent it (a 100 MB model
/// read by doubling a buffer moved and page-faulted twice its size), refused past `limit`.
async fn collect(mut body: axum::body::Body, limit: usize, expected: Option<usize>) -> Result<axum::body::Bytes, ()> {
    use http_body_util::BodyExt;
    if expected.is_some_and(|n| n > limit) {
        return Err(());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(expected.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ())?.into_data() else { continue };
        if buf.len() + data.len() > limit {
            return Err(());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.into())
}

async fn read_limited(body: axum::body::Body, state: &AppState, limit: usize, limit_name: &str) -> Result<axum::body::Bytes, ApiError> {
    read_sized(body, state, limit, limit_name, None).await
}

async fn read_sized(
    body: axum::body::Body,
    state: &AppState,
    limit: usize,
    limit_name: &str,
    expected: Option<usize>,
) -> Result<axum::body::Bytes, ApiError> {
    let secs = state.config.body_timeout_secs;
    let read = tokio::time::timeout(std::time::Duration::from_secs(secs), collect(body, limit, expected))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                format!("the request body did not arrive within {secs} s"),
            )
            .at("")
        })?;
    read.map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            format!("the body is larger than {limit} bytes"),
        )
        .at("");
        e.limit = Some((limit_name.into(), limit as u64));
        e
    })
}

/// A model file sent as the body itself (`application/octet-stream`, or `application/onnx`):
/// the rest of the request is the JSON in the `request` query parameter (default `{}`), and the
/// file becomes its `model`. Files too large for a JSON body (resnet50's ONNX is 100 MB) come
/// this way, up to `max_model_bytes`.
async fn raw_model(req: Request, state: &AppState) -> Result<Value, ApiError> {
    let (options, bytes) = read_upload(req, state).await?;
    with_model(options, bytes, Default::default())
}

/// An upload's `request` query parameter and its whole body, read under `max_model_bytes`.
async fn read_upload(req: Request, state: &AppState) -> Result<(Option<String>, axum::body::Bytes), ApiError> {
    let options = query_options(&req)?;
    let expected = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let bytes = read_sized(req.into_body(), state, state.config.max_model_bytes, "max_model_bytes", expected).await?;
    Ok((options, bytes))
}

/// A model file and its side files as `multipart/form-data`: a `model` part (the file), `data`
/// parts (an ONNX model's external data, each named by its file name, as the model's tensors
/// name it) and the request's other fields as JSON in a `request` part or the `request` query
/// parameter. The whole body is held to `max_model_bytes`.
async fn multipart_model(req: Request, state: &AppState, content_type: &str) -> Result<Value, ApiError> {
    let malformed = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "Malformed multipart body", why).at("");
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| malformed(format!("the content-type names no multipart boundary ({e})")))?;
    let (mut options, bytes) = read_upload(req, state).await?;
    let stream = futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(bytes)));
    let mut parts = multer::Multipart::new(stream, boundary);
    let (mut model, mut external) = (None, crate::spec::onnx::ExternalFiles::new());
    let part_error = |e: multer::Error| malformed(format!("the multipart body cannot be read: {e}"));
    let invalid = |pointer: &str, why: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request", why).at(pointer);
    while let Some(field) = parts.next_field().await.map_err(part_error)? {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        match name.as_str() {
            "model" if model.is_some() => return Err(invalid("/model", "the multipart body has two `model` parts; send one model file".into())),
            "model" => model = Some(field.bytes().await.map_err(part_error)?),
            "request" if options.is_some() => {
                return Err(invalid(
                    "",
                    "the request's fields came twice (a `request` part and the `request` query parameter, or two parts); send them once".into(),
                ))
            }
            "request" => {
                let text = field.text().await.map_err(part_error)?;
                options = Some(text);
            }
            "data" => {
                let Some(file) = file_name.filter(|f| !f.is_empty()) else {
                    return Err(invalid(
                        "/model",
                        "a `data` part has no file name: it must carry the name the model's tensors give their file (curl -F data=@model.onnx.data)".into(),
                    ));
                };
                if external.contains_key(&file) {
                    return Err(invalid("/model", format!("two `data` parts are named {file:?}")));
                }
                external.insert(file, field.bytes().await.map_err(part_error)?);
            }
            other => {
                return Err(invalid(
                    "",
                    format!("the multipart body has a part named {other:?}; its parts are `model` (the file), `data` (an ONNX model's external data files) and `request` (the other fields, as JSON)"),
                ))
            }
        }
    }
    let model = model.ok_or_else(|| {
        invalid(
            "/model",
            "the multipart body has no `model` part (curl -F model=@model.onnx)".into(),
        )
    })?;
    with_model(options, model, external)
}

/// The `request` query parameter's text, if the request has one.
fn query_options(req: &Request) -> Result<Option<String>, ApiError> {
    let query = req.uri().query().unwrap_or("");
    let mut options: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "request" {
            options = Some(percent_decode(v).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Malformed query",
                    "the request query parameter is not valid percent-encoded UTF-8",
                )
                .at("")
            })?);
        }
    }
    Ok(options)
}

/// The request's fields (`options`, JSON; `{}` when absent) with the uploaded file as its model.
fn with_model(options: Option<String>, bytes: axum::body::Bytes, external: crate::spec::onnx::ExternalFiles) -> Result<Value, ApiError> {
    let mut value: Value = match options {
        None => Value::Object(Default::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "Malformed JSON",
                format!("the request's fields (the request query parameter or part) are not valid JSON: {e}"),
            )
            .at("")
        })?,
    };
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
            "the request's fields (the request query parameter or part) must be a JSON object",
        )
        .at(""));
    };
    if obj.contains_key("model") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request",
            "the body is the model: leave \"model\" out of the request parameter",
        )
        .at("/model"));
    }
    use base64::Engine;
    // torch.jit.save writes a zip archive; an ONNX file is a protobuf message
    let model = if bytes.starts_with(b"PK\x03\x04") {
        if !external.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid request",
                "a TorchScript file keeps its weights inside it: `data` parts are an ONNX model's external data",
            )
            .at("/model"));
        }
        let file = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let mut m = serde_json::json!({ "torchscript": file });
        if let Some(shape) = obj.remove("input_shape") {
            m["input_shape"] = shape;
        }
        m
    } else {
        // the bytes go to the handler as they are (resnet50's 100 MB would otherwise be
        // encoded to base64 and decoded again)
        let _ = UPLOAD.try_with(|slot| *slot.borrow_mut() = Some(Upload { model: bytes, external }));
        serde_json::json!({ UPLOADED: true })
    };
    obj.insert("model".into(), model);
    Ok(value)
}

/// `%XX` and `+` decoding of one query value.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let mime = ct.split(';').next().unwrap_or("").trim();
            if mime == MULTIPART {
                // (the boundary as sent: it is case-sensitive)
                let original = req.headers()[header::CONTENT_TYPE].to_str().unwrap_or("").to_string();
                return Ok(JsonBody(multipart_model(req, state, &original).await?));
            }
            if is_upload_mime(mime) {
                return Ok(JsonBody(raw_model(req, state).await?));
            }
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Unsupported media type",
                    format!("the body must be JSON (content-type: application/json) or a model file (application/octet-stream, or multipart/form-data with the file as its `model` part), got {mime:?}; with curl add -H 'content-type: application/json'"),
                ));
            }
        }
        let bytes = read_body(req.into_body(), state).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            let what = if e.to_string().contains("recursion limit") {
                "the JSON is nested too deeply".to_string()
            } else {
                e.to_string()
            };
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "Malformed JSON",
                format!("the body is not valid JSON: {what}"),
            )
            .at("")
        })?;
        let d = depth(&value);
        if d > state.config.max_json_depth {
            let mut e = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                format!("the JSON is nested {d} levels deep; the limit is {}", state.config.max_json_depth),
            )
            .at("");
            e.limit = Some(("max_json_depth".into(), state.config.max_json_depth as u64));
            return Err(e);
        }
        Ok(JsonBody(value))
    }
}
