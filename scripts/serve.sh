#!/usr/bin/env bash
# Start the dashboard (embedded default: http://127.0.0.1:8000). Extra args go to `syngeo serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/syngeo serve "$@"
