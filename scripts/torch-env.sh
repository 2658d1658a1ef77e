# Sourced by scripts/serve and scripts/test: makes sure PyTorch 2.11.0 (the libtorch that tch 0.24
# links against) is installed in a versioned virtualenv that every checkout shares, then exports
# what torch-sys and build.rs need to find it.
# shellcheck shell=bash
LAYERSCOPE_TORCH_VERSION=2.11.0

# Debian splits venv support out of python3: install it when we can (root), else say what to do.
layerscope_make_venv() {
  python3 -m venv "$1" 2>/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$1" && return 0
  fi
  echo "layerscope: 'python3 -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
  return 1
}
LAYERSCOPE_VENV="${LAYERSCOPE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/layerscope/torch-$LAYERSCOPE_TORCH_VERSION}"

if ! "$LAYERSCOPE_VENV/bin/python" -c "import torch, torchvision, numpy, yaml, fvcore, ptflops, schemathesis, onnx, onnxscript; assert torch.__version__.startswith('$LAYERSCOPE_TORCH_VERSION')" 2>/dev/null; then
  echo "layerscope: installing torch==$LAYERSCOPE_TORCH_VERSION into $LAYERSCOPE_VENV (first run only)" >&2
  mkdir -p "$(dirname "$LAYERSCOPE_VENV")"
  layerscope_make_venv "$LAYERSCOPE_VENV" || return 1
  "$LAYERSCOPE_VENV/bin/pip" install -q --disable-pip-version-check \
    "torch==$LAYERSCOPE_TORCH_VERSION" torchvision==0.26.0 numpy pyyaml fvcore==0.1.5.post20221221 ptflops==0.7.5 schemathesis==4.32.5 onnx==1.23.2 onnxscript==0.7.2 || return 1
fi

export VIRTUAL_ENV="$LAYERSCOPE_VENV"
export PATH="$LAYERSCOPE_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export PYTHON_SYS_EXECUTABLE="$LAYERSCOPE_VENV/bin/python3"
LAYERSCOPE_TORCH_LIB="$("$LAYERSCOPE_VENV/bin/python3" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LAYERSCOPE_TORCH_LIB
