//! Deployment artefacts: the Kubernetes manifests (base and GPU overlay) validated against the
//! Kubernetes schemas and linted (tests/k8s/check.py, tools from scripts/k8s-tools.sh).
use std::process::Command;

#[test]
fn kubernetes_manifests_validate_and_pass_the_policy_linter() {
    let tools = std::env::var("LAYERSCOPE_K8S_TOOLS")
        .unwrap_or_else(|_| format!("{}/.cache/layerscope/k8s-tools-1", std::env::var("HOME").unwrap_or_default()));
    let python = format!("{tools}/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run the tests through scripts/test, which installs it"
    );
    let out = Command::new(python).arg("tests/k8s/check.py").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 problems"));
}
