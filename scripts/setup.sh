#!/usr/bin/env bash
# One entry point for a fresh machine: installs the project into .venv, then runs a target.
#   scripts/setup.sh demo   install, then pre-edit + encode a real clip through the embedded Triton
#   scripts/setup.sh test   install, then run the default test suite
#   scripts/setup.sh        install only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${PREEDIT_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch==2.13.0 resolves to the CPU build on this machine kind; listed first so nothing pulls a CUDA build.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e '.[train,perf,test]'
# Runtime fix-ups the wheels need (python-backend stub for this Python, libb64/libcudart for
# perf_analyzer): idempotent, all under .cache/, no system changes.
"$VENV/bin/python" -m preedit.install_support
# Prometheus (Debian's `prometheus` package) for the dashboard test: installed only when missing,
# running as root, with apt-get; otherwise that test skips and says why.
if ! command -v prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } \
    || echo "setup: could not install prometheus; the dashboard test will skip" >&2
fi

case "${1:-}" in
  demo)
    shift
    "$VENV/bin/preedit" run --demo "$@"
    # The demo's effect: bits saved at equal quality on the same (held-out) clip, plain encode
    # vs pre-edited + encode (libx265 and SVT-AV1), 5 CRF points each, scored against the original
    # with libvmaf.
    echo
    echo "Rate-distortion on the demo clip (BD-rate of pre-edited vs plain encode; negative = bits saved):"
    exec "$VENV/bin/preedit" eval "${PREEDIT_CLIPS:-../shared/data/clips}/flower.mp4" --codecs libx265,libsvtav1 \
      --variants source,preedit --frames 16 --out out/demo_eval --no-progress
    ;;
  test)
    shift
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [demo|test] [args...]" >&2; exit 2 ;;
esac
