//! The playground page at `/`: plain HTML, CSS and JavaScript modules (in `src/api/ui/`)
//! embedded in the binary, so the page needs no CDN or network at run time. The page calls the
//! same `/v1` endpoints as everyone else, under the same API keys and CORS rules; these routes
//! are open, like `/healthz`, because the page holds no data.
use super::error::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file: its name under `/ui/`, content type and bytes.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    /// FNV-1a of the body, computed at compile time: the strong validator in the ETag.
    pub etag: u64,
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("ui/", $name)),
            etag: etag_of(include_str!(concat!("ui/", $name))),
        }
    };
}

/// Every file of the page (the first is the page itself, served at `/`).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("svg.js", "text/javascript; charset=utf-8"),
    asset!("json.js", "text/javascript; charset=utf-8"),
    asset!("rf.js", "text/javascript; charset=utf-8"),
    asset!("complexity.js", "text/javascript; charset=utf-8"),
    asset!("gradients.js", "text/javascript; charset=utf-8"),
    asset!("momentum.js", "text/javascript; charset=utf-8"),
    asset!("grade.js", "text/javascript; charset=utf-8"),
];

/// Only the service's own origin: no inline script, no third-party anything.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// FNV-1a of an asset's bytes (a `const fn`, so that [`ASSETS`] carries the results).
const fn etag_of(body: &str) -> u64 {
    let bytes = body.as_bytes();
    let mut h: u64 = 0xcbf29ce484222325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    // revalidate every time: a new binary's page must never run an old script
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is header-safe"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// `GET /ui/{asset}`: its scripts and style sheet.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a, &headers),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!(
                "no page asset {name:?}; the page's files are {}",
                ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
            ),
        )
        .into_response(),
    }
}
