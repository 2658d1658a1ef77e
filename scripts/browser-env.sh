# Sourced by scripts/test: what the playground's browser test (tests/browser.rs) needs: Debian's
# Chromium and ChromeDriver (no browser download) and selenium in the torch virtualenv.
# shellcheck shell=bash
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "layerscope: installing Debian's chromium and chromium-driver for the browser test (first run only)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null || return 1
  else
    echo "layerscope: the browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)" >&2
    return 1
  fi
fi
if ! "$LAYERSCOPE_VENV/bin/python" -c "import selenium" 2>/dev/null; then
  "$LAYERSCOPE_VENV/bin/pip" install -q --disable-pip-version-check selenium==4.51.0 || return 1
fi
