# Sourced by scripts/test: a versioned virtualenv (shared by checkouts) with the Kubernetes
# schema validator and the policy linter used by tests/k8s/check.py.
# shellcheck shell=bash
LAYERSCOPE_K8S_TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/layerscope/k8s-tools-1"
if ! "$LAYERSCOPE_K8S_TOOLS/bin/python" -c "import kubernetes_validate, checkov" 2>/dev/null; then
  echo "layerscope: installing kubernetes-validate and checkov into $LAYERSCOPE_K8S_TOOLS (first run only)" >&2
  layerscope_make_venv "$LAYERSCOPE_K8S_TOOLS" || return 1
  "$LAYERSCOPE_K8S_TOOLS/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 checkov==3.3.30 || return 1
fi
export LAYERSCOPE_K8S_TOOLS
