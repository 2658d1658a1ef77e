//! The playground in a real browser: tests/browser/playground.py drives Debian's headless
//! Chromium through every tab against two live servers (one without keys, one with), comparing
//! what the page shows with the API's answers. Screenshots (one per tab) and the page's load
//! timings land in target/browser-artifacts/. scripts/test installs chromium, chromium-driver
//! and selenium (scripts/browser-env.sh).
mod common;
use common::{python_ok, serve, serve_with};
use layerscope::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_shows_the_apis_numbers_in_chromium() {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: run scripts/test (it installs Debian's chromium and chromium-driver)"
        );
    }
    let url = serve().await;
    let keyed = serve_with(Config {
        api_keys: vec!["browser-test-key".into()],
        ..Config::default()
    })
    .await;
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let out = python_ok(
        &[
            "tests/browser/playground.py",
            &url,
            &artifacts.display().to_string(),
            &keyed,
            "browser-test-key",
        ],
        &[],
    )
    .await;
    assert!(out.contains("checks passed"), "{out}");
    for tab in ["receptive-field", "complexity", "gradients", "momentum", "grade", "spec-error"] {
        assert!(artifacts.join(format!("{tab}.png")).exists(), "screenshot of {tab}");
    }
}
