# Sourced by scripts/test: what the playground's browser test (tests/browser.rs) needs: Debian's
# Chromium with ChromeDriver and Firefox ESR (no browser download), geckodriver (built from
# crates.io: Debian does not package it), selenium in the torch virtualenv, and axe-core.
# shellcheck shell=bash
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/firefox-esr ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "layerscope: installing Debian's chromium, chromium-driver and firefox-esr for the browser test (first run only)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver firefox-esr >/dev/null || return 1
  else
    echo "layerscope: the browser test needs Debian's chromium, chromium-driver and firefox-esr (apt-get install chromium chromium-driver firefox-esr)" >&2
    return 1
  fi
fi
LAYERSCOPE_GECKO_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/layerscope/geckodriver-0.37.1"
if [ ! -x "$LAYERSCOPE_GECKO_DIR/bin/geckodriver" ]; then
  echo "layerscope: building geckodriver 0.37.1 from crates.io into $LAYERSCOPE_GECKO_DIR (first run only, about 2 minutes)" >&2
  cargo install --quiet --locked --root "$LAYERSCOPE_GECKO_DIR" geckodriver@0.37.1 || return 1
fi
export GECKODRIVER="$LAYERSCOPE_GECKO_DIR/bin/geckodriver"
if ! "$LAYERSCOPE_VENV/bin/python" -c "import selenium" 2>/dev/null; then
  "$LAYERSCOPE_VENV/bin/pip" install -q --disable-pip-version-check selenium==4.51.0 || return 1
fi
# axe-core (the accessibility rules engine) from the npm registry, injected by the test into the page
LAYERSCOPE_AXE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/layerscope/axe-core-4.14.1"
if [ ! -f "$LAYERSCOPE_AXE_DIR/node_modules/axe-core/axe.min.js" ]; then
  command -v npm >/dev/null || { echo "layerscope: the browser test needs npm (for axe-core)" >&2; return 1; }
  mkdir -p "$LAYERSCOPE_AXE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$LAYERSCOPE_AXE_DIR" axe-core@4.14.1 >/dev/null || return 1
fi
export LAYERSCOPE_AXE="$LAYERSCOPE_AXE_DIR/node_modules/axe-core/axe.min.js"
