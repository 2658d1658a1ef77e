//! The playground page at `/`: served from the binary with the right types and headers, complete
//! (every file in src/api/ui is embedded and every reference resolves), small, and open when API
//! keys are on. The page itself is driven in headless Chromium by tests/browser.rs.
mod common;
use axum::body::Body;
use axum::http::Request;
use common::*;
use layerscope::api::ui::ASSETS;
use layerscope::Config;

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_types_and_validators() {
    let r = get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/html; charset=utf-8");
    assert!(r.text.contains(r#"<script type="module" src="/ui/app.js">"#));
    for a in ASSETS {
        let r = get(&format!("/ui/{}", a.name)).await;
        assert_eq!(r.status, 200, "{}", a.name);
        assert_eq!(r.content_type, a.content_type, "{}", a.name);
        assert_eq!(r.text, a.body);
    }
    let first = conditional_get("/ui/app.js", None).await;
    let etag = first["etag"].to_str().unwrap().to_string();
    assert!(first["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert_eq!(first["cache-control"], "no-cache");
    assert_eq!(first["x-content-type-options"], "nosniff");
    assert_eq!(first["x-test-status"], "200");
    assert_eq!(conditional_get("/ui/app.js", Some(&etag)).await["x-test-status"], "304");
    let other = conditional_get("/ui/rf.js", Some(&etag)).await;
    assert_eq!(other["x-test-status"], "200", "another file's ETag does not match");
}

/// GET with an optional If-None-Match; the response headers plus "x-test-status".
async fn conditional_get(path: &str, etag: Option<&str>) -> axum::http::HeaderMap {
    use tower::ServiceExt;
    let mut req = Request::get(path);
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
    }
    let resp = layerscope::app(Config::default())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut headers = resp.headers().clone();
    headers.insert("x-test-status", resp.status().as_str().parse().unwrap());
    headers
}

#[tokio::test]
async fn an_unknown_asset_is_a_problem_listing_the_files() {
    let r = get("/ui/missing.js").await;
    assert_eq!(r.status, 404);
    assert!(r.content_type.starts_with("application/problem+json"));
    let v = r.json();
    assert!(v["detail"].as_str().unwrap().contains("app.js"), "{v}");
    let r = get("/ui/..%2Fapi.rs").await;
    assert_eq!(r.status, 404);
}

#[test]
fn every_file_of_the_page_is_embedded_and_every_reference_resolves() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/ui");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "src/api/ui and ui::ASSETS must list the same files");
    let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
    let imports = regex_lite_find(ASSETS.iter().map(|a| a.body));
    assert!(imports.len() >= 15, "found the imports: {imports:?}");
    for name in imports {
        assert!(names.contains(&name.as_str()), "{name} is referenced but not embedded");
    }
}

/// The file names of `from './x.js'` imports and `/ui/x` references.
fn regex_lite_find<'a>(bodies: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for body in bodies {
        for (open, close) in [("from './", '\''), ("\"/ui/", '"')] {
            let mut rest = body;
            while let Some(at) = rest.find(open) {
                rest = &rest[at + open.len()..];
                out.push(rest[..rest.find(close).unwrap()].to_string());
            }
        }
    }
    out
}

#[test]
fn the_embedded_page_adds_less_than_one_megabyte() {
    let bytes: usize = ASSETS.iter().map(|a| a.body.len()).sum();
    println!("embedded page: {bytes} bytes in {} files", ASSETS.len());
    assert!(bytes < 1 << 20, "{bytes} bytes");
}

#[tokio::test]
async fn the_page_stays_open_when_api_keys_are_on() {
    let config = || Config {
        api_keys: vec!["k1".into()],
        ..Config::default()
    };
    let r = send(config(), Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 200);
    let r = send(config(), Request::get("/ui/app.js").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 200);
    let r = send(config(), Request::get("/v1/info").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 401);
}
