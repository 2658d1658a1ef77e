//! The answer cache of the analytic endpoints: a repeated request gets the same bytes from
//! memory; a libtorch run, an error, or a request that differs in query or Accept is never
//! answered from another's entry; the API-key guard still applies to cached answers.
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use layerscope::{app, Config};
use tower::ServiceExt;

async fn call(router: &axum::Router, uri: &str, body: &str, key: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = Request::post(uri)
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string());
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cache = resp.headers().get("x-layerscope-cache").map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, cache, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn repeated_analytic_requests_are_served_from_memory_byte_for_byte() {
    let router = app(Config::default());
    for (uri, body) in [
        (
            "/v1/receptive-field",
            r#"{"model": {"preset": "vgg_stem"}, "verify": false, "index_base": 1, "position": {"layer": "pool2", "index": [1, 56]}}"#,
        ),
        ("/v1/complexity", r#"{"model": {"preset": "inception_reduced"}, "verify": false}"#),
        (
            "/v1/complexity?format=csv",
            r#"{"model": {"preset": "inception_reduced"}, "verify": false}"#,
        ),
    ] {
        let first = call(&router, uri, body, None).await;
        let second = call(&router, uri, body, None).await;
        assert_eq!((first.0, first.1.as_deref()), (200, Some("miss")), "{uri}");
        assert_eq!((second.0, second.1.as_deref()), (200, Some("hit")), "{uri}");
        assert_eq!(first.2, second.2, "{uri}: the cached bytes differ");
    }
    // the query is part of the key: JSON and CSV of the same body are different answers
    let body = r#"{"model": {"preset": "inception_reduced"}, "verify": false}"#;
    let json = call(&router, "/v1/complexity", body, None).await;
    let csv = call(&router, "/v1/complexity?format=csv", body, None).await;
    assert!(json.2.starts_with('{') && csv.2.starts_with("path,"), "{}", &csv.2[..40]);
    // a one-based and a zero-based question differ only in the body
    let one = call(
        &router,
        "/v1/receptive-field",
        r#"{"model": {"preset": "vgg_stem"}, "verify": false, "index_base": 1}"#,
        None,
    )
    .await;
    let zero = call(
        &router,
        "/v1/receptive-field",
        r#"{"model": {"preset": "vgg_stem"}, "verify": false, "index_base": 0}"#,
        None,
    )
    .await;
    assert_ne!(one.2, zero.2);
}

#[tokio::test]
async fn libtorch_runs_and_errors_are_never_cached() {
    let router = app(Config::default());
    let verified = r#"{"model": {"preset": "vgg_stem"}}"#;
    for _ in 0..2 {
        let (status, cache, text) = call(&router, "/v1/receptive-field", verified, None).await;
        assert_eq!((status, cache), (200, None));
        assert!(text.contains("\"verification\""));
    }
    let bad = r#"{"model": {"preset": "vgg_stem"}, "verify": false, "index_base": 2}"#;
    for _ in 0..2 {
        let (status, cache, _) = call(&router, "/v1/receptive-field", bad, None).await;
        assert_eq!((status, cache), (422, None));
    }
}

#[tokio::test]
async fn cached_answers_still_need_the_api_key() {
    let router = app(Config {
        api_keys: vec!["sesame".into()],
        ..Config::default()
    });
    let body = r#"{"model": {"preset": "vgg_stem"}, "verify": false}"#;
    assert_eq!(
        call(&router, "/v1/receptive-field", body, Some("sesame")).await.1.as_deref(),
        Some("miss")
    );
    assert_eq!(
        call(&router, "/v1/receptive-field", body, Some("sesame")).await.1.as_deref(),
        Some("hit")
    );
    let refused = call(&router, "/v1/receptive-field", body, None).await;
    assert_eq!((refused.0, refused.1), (401, None));
}

#[tokio::test]
async fn a_disabled_cache_answers_every_request_itself() {
    let router = app(Config {
        response_cache_bytes: 0,
        ..Config::default()
    });
    let body = r#"{"model": {"preset": "vgg_stem"}, "verify": false}"#;
    for _ in 0..2 {
        assert_eq!(call(&router, "/v1/receptive-field", body, None).await.1, None);
    }
}
