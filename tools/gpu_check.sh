#!/usr/bin/env bash
# The GPU check of the 256 recipe (default network against comb): throughput at the batch the
# finder picks, MFU, peak memory, FSDP and compile smoke tests, quality after equal minutes of
# training. JSON on stdout (and --out FILE). At most about 8 minutes on one H100/H200.
#   bash tools/gpu_check.sh --out gpu_check.json
#   bash tools/gpu_check.sh --toy --out toy.json    # toy sizes on the CPU (the tests run this)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$(command -v python3)}"
[ -x "$here/../.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && py="$here/../.venv/bin/python"
exec "$py" "$here/gpu_check.py" "$@"
