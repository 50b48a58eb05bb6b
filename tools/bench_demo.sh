#!/usr/bin/env bash
# The demo as a new user runs it, timed from an empty phantom cache, at the CPU's own precision
# and in fp32 (what a CPU without hardware bfloat16 runs), then its held-out swap quality.
#   bash tools/bench_demo.sh OUT_DIR [SEED]
# Writes OUT_DIR/demo_{native,fp32}.json (wall seconds, CPU flags) and quality_{native,fp32}.json.
set -euo pipefail
out=${1:?usage: bench_demo.sh OUT_DIR [SEED]}; seed=${2:-0}
mkdir -p "$out"
flags=$(grep -o -w -E 'avx512_bf16|amx_bf16|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')
for kind in native fp32; do
    extra=(); [ "$kind" = fp32 ] && extra=(trainer.precision=32-true)
    cache=$(mktemp -d); run="$out/run_${kind}_$seed"; rm -rf "$run"
    start=$(date +%s.%N)
    PROGRESSIVE_SWAP_CACHE=$cache swap-train recipe=demo seed="$seed" out="$run" "${extra[@]}" >"$out/log_${kind}_$seed.txt" 2>&1
    end=$(date +%s.%N)
    python - "$out/demo_${kind}_$seed.json" "$start" "$end" "$kind" "$flags" "$(uptime)" <<'PY'
import json, sys
path, start, end, kind, flags, up = sys.argv[1:]
json.dump({"kind": kind, "seconds": round(float(end) - float(start), 1), "cpu_flags": flags.split(),
           "uptime_after": up.strip()}, open(path, "w"), indent=1)
PY
    rm -rf "$cache"
    python tools/bench_quality.py "$run/model.safetensors" --frames 24 --out "$out/quality_${kind}_$seed.json" >/dev/null
done
cat "$out"/demo_*_"$seed".json
