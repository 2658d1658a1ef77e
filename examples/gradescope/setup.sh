#!/usr/bin/env bash
# Gradescope autograder setup: the adapter needs only python3's standard library.
set -euo pipefail
if ! command -v python3 >/dev/null; then
  apt-get update && apt-get install -y --no-install-recommends python3
fi
