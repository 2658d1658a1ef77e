//! A cache of whole answers for the analytic endpoints.
//!
//! An analytic answer (receptive-field or complexity table without a libtorch run) is a pure
//! function of the request: method, path, query, `Accept` and body bytes. A course's autograder
//! and a class's browsers send the same few requests over and over, so the answer to a repeated
//! request is served from memory. Handlers opt in per answer by putting [`Cacheable`] in the
//! response's extensions: anything that ran libtorch (timings, device) is never cached, nor is
//! any error. The key is compared in full on a hit (a hash collision cannot return another
//! request's numbers). The layer sits inside the API-key and rate-limit guard, so cached answers
//! are refused and counted like any other.
use super::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Marks a response whose body may be replayed for an identical request.
#[derive(Clone, Copy, Debug)]
pub struct Cacheable;

/// Marks `response` cacheable unless its answer carries a libtorch verification (timings,
/// device): the handlers' one rule for what may be replayed.
pub fn mark_unless_verified(response: &mut Response, verified: bool) {
    if !verified {
        response.extensions_mut().insert(Cacheable);
    }
}

/// Bodies over this are not looked at (they are never the repeated light requests).
const MAX_KEY_BODY: usize = 64 * 1024;
/// Answers over this are not kept.
const MAX_ENTRY_BYTES: usize = 4 << 20;

pub struct ResponseCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<u64, (Vec<u8>, HeaderValue, Bytes)>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl ResponseCache {
    /// Keeps at most `max_bytes` of keys and answers, oldest out first; 0 disables it.
    pub fn new(max_bytes: usize) -> ResponseCache {
        ResponseCache {
            max_bytes,
            inner: Mutex::default(),
        }
    }

    fn get(&self, hash: u64, key: &[u8]) -> Option<(HeaderValue, Bytes)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.map.get(&hash) {
            Some((k, ct, body)) if k == key => Some((ct.clone(), body.clone())),
            _ => None,
        }
    }

    fn put(&self, hash: u64, key: Vec<u8>, content_type: HeaderValue, body: Bytes) {
        let size = key.len() + body.len();
        if size > MAX_ENTRY_BYTES || size > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, _, b)) = inner.map.insert(hash, (key, content_type, body)) {
            inner.bytes -= k.len() + b.len();
        } else {
            inner.order.push_back(hash);
        }
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some((k, _, b)) = inner.map.remove(&old) {
                inner.bytes -= k.len() + b.len();
            }
        }
    }
}

fn key_of(req: &Request, body: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(body.len() + 64);
    for part in [
        req.method().as_str().as_bytes(),
        req.uri().path().as_bytes(),
        req.uri().query().unwrap_or("").as_bytes(),
        req.headers().get(header::ACCEPT).map(|v| v.as_bytes()).unwrap_or(b""),
        req.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()).unwrap_or(b""),
    ] {
        key.extend_from_slice(&(part.len() as u32).to_le_bytes());
        key.extend_from_slice(part);
    }
    key.extend_from_slice(body);
    key
}

/// The middleware: answers a repeated request from the cache, else runs it and keeps a
/// cacheable answer.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let cache = &state.cache;
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n <= MAX_KEY_BODY);
    if cache.max_bytes == 0 || !small {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match super::body::read_body(body, &state).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let req = Request::from_parts(parts, Body::from(bytes.clone()));
    let key = key_of(&req, &bytes);
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    let hash = h.finish();
    if let Some((content_type, body)) = cache.get(hash, &key) {
        let mut resp = Response::new(Body::from(body));
        resp.headers_mut().insert(header::CONTENT_TYPE, content_type);
        resp.headers_mut().insert("x-layerscope-cache", HeaderValue::from_static("hit"));
        return resp;
    }
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK || resp.extensions().get::<Cacheable>().is_none() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // the whole answer, however long (put() keeps only small ones): a limit here would replace
    // a long answer with an empty one
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return super::error::ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()).into_response(),
    };
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE).cloned() {
        cache.put(hash, key, ct, bytes.clone());
    }
    parts.headers.insert("x-layerscope-cache", HeaderValue::from_static("miss"));
    Response::from_parts(parts, Body::from(bytes))
}
