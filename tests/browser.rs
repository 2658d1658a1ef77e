//! The playground in real browsers: tests/browser/playground.py drives Debian's headless
//! Chromium, and Firefox ESR, through every tab against two live servers (one without keys, one
//! with), comparing what the page shows with the API's answers, and checking each view with
//! axe-core's WCAG 2 A/AA rules. Screenshots (one per tab) and the page's load timings land in
//! target/browser-artifacts/{chromium,firefox}/. scripts/test installs chromium, chromium-driver,
//! firefox-esr, geckodriver, selenium and axe-core (scripts/browser-env.sh).
mod common;
use common::{python_ok, serve, serve_with};
use layerscope::Config;

/// One browser at a time: on a small machine two would time each other's page loads.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the page's checks in one browser against a server without keys and one with.
async fn drive(browser: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let axe = std::env::var("LAYERSCOPE_AXE").unwrap_or_default();
    assert!(
        std::path::Path::new(&axe).exists(),
        "LAYERSCOPE_AXE ({axe:?}) must name axe.min.js: run scripts/test (scripts/browser-env.sh installs axe-core)"
    );
    let url = serve().await;
    let keyed = serve_with(Config {
        api_keys: vec!["browser-test-key".into()],
        ..Config::default()
    })
    .await;
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/browser-artifacts/{browser}"));
    let _ = std::fs::remove_dir_all(&artifacts);
    let out = python_ok(
        &[
            "tests/browser/playground.py",
            &url,
            &artifacts.display().to_string(),
            &keyed,
            "browser-test-key",
        ],
        &[("LAYERSCOPE_BROWSER", browser)],
    )
    .await;
    assert!(out.contains("checks passed"), "{out}");
    for tab in ["receptive-field", "complexity", "gradients", "momentum", "grade", "spec-error"] {
        assert!(artifacts.join(format!("{tab}.png")).exists(), "screenshot of {tab}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_shows_the_apis_numbers_in_chromium() {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: run scripts/test (it installs Debian's chromium and chromium-driver)"
        );
    }
    drive("chromium").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_shows_the_apis_numbers_in_firefox() {
    let gecko = std::env::var("GECKODRIVER").unwrap_or_default();
    for bin in ["/usr/bin/firefox-esr", gecko.as_str()] {
        assert!(
            !bin.is_empty() && std::path::Path::new(bin).exists(),
            "{bin:?} is missing: run scripts/test (it installs firefox-esr and builds geckodriver)"
        );
    }
    drive("firefox").await;
}
