#!/usr/bin/env bash
# Set up the project on a Debian 12 machine: .venv, torch (CUDA build when a GPU answers,
# else the CPU build), then the package. With --test also the servers the tests start
# (PostgreSQL, Redis), headless Chromium and a C++ compiler, installed with apt when missing
# (needs root).
# Idempotent: a repeat run with nothing to do takes a few seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    -h|--help) echo "usage: bash scripts/setup.sh [--test]"; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

say() { echo "[setup] $*" >&2; }

# --- Debian packages for the tests -------------------------------------------------------
have_pg() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null; }
if [[ $TEST == 1 ]]; then
  missing=()
  have_pg || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  # the curl simulator's CPU kernel is compiled on first use: a C++ compiler, Python headers
  command -v g++ >/dev/null || missing+=(g++)
  python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=(python3-dev)
  if (( ${#missing[@]} )); then
    if [[ $EUID -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
      say "missing ${missing[*]}; run this script as root to install them with apt-get"; exit 1
    fi
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# --- Python environment --------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv"
  python3 -m venv .venv
fi
PY=.venv/bin/python
pip() { "$PY" -m pip -qq --disable-pip-version-check "$@"; }

GPU=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi
EXTRA=$([[ $TEST == 1 ]] && echo '.[test]' || echo '.')

# Skip pip when this exact set-up (pyproject, mode, GPU, Python) already succeeded and the
# package still imports; delete .venv/.syngeo-setup-* to force a reinstall.
key=$({ cat pyproject.toml; echo "$EXTRA $GPU"; "$PY" -VV; } | sha256sum | cut -c1-16)
stamp=".venv/.syngeo-setup-$TEST"
if [[ -f $stamp && $(cat "$stamp") == "$key" ]] && "$PY" -c 'import syngeo, torch' 2>/dev/null; then
  say "python environment up to date"
  exit 0
fi

say "upgrading pip"
pip install --upgrade pip
if [[ $GPU == 1 ]]; then
  # A CPU-only torch left from an earlier set-up would satisfy `pip install torch`: drop it.
  if "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)' 2>/dev/null; then
    say "replacing the CPU-only torch with the CUDA build"
    pip uninstall -y torch
  fi
  say "installing torch (CUDA build)"
  pip install torch
else
  say "installing torch 2.13.0 (CPU build)"
  pip install 'torch==2.13.0'
fi
say "installing syngeo ($EXTRA)"
pip install -e "$EXTRA"
"$PY" -c 'import syngeo, torch'
echo "$key" > "$stamp"
say "done"
