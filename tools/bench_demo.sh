#!/usr/bin/env bash
# The demo as a new user runs it, timed from an empty cache (phantom faces and the precision
# measurement included), on each CPU kind this machine can stand in for, then its held-out swap
# quality. Run it on an otherwise idle machine.
#   bash tools/bench_demo.sh OUT_DIR [SEED] [KIND ...]
# KIND: native (the CPU as it is), avx512bf16 (oneDNN limited to AVX512-BF16: a CPU with bfloat16
# instructions but no AMX), avx2 (ATen and oneDNN limited to AVX2: a CPU without bfloat16).
# Default: all three. Writes OUT_DIR/demo_KIND_SEED.json: wall seconds, phantom rendering seconds,
# the precision swap-train chose and its estimates, the CPU's flags, and the quality measures
# of tools/bench_quality.py (24 held-out frames per pair).
set -euo pipefail
out=${1:?usage: bench_demo.sh OUT_DIR [SEED] [KIND ...]}; seed=${2:-0}; shift $(( $# >= 2 ? 2 : $# ))
kinds=("$@"); [ ${#kinds[@]} -eq 0 ] && kinds=(native avx512bf16 avx2)
mkdir -p "$out"
flags=$(grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')
model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
for kind in "${kinds[@]}"; do
    env_kind=()
    case $kind in
        native) ;;
        avx512bf16) env_kind=(ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16) ;;
        avx2) env_kind=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2) ;;
        *) echo "bench_demo.sh: unknown kind $kind (native, avx512bf16, avx2)" >&2; exit 2 ;;
    esac
    cache=$(mktemp -d); run="$out/run_${kind}_$seed"; log="$out/log_${kind}_$seed.txt"; rm -rf "$run"
    start=$(date +%s.%N)
    env -u PROGRESSIVE_SWAP_CPU_PRECISION "${env_kind[@]}" PROGRESSIVE_SWAP_CACHE="$cache" \
        swap-train recipe=demo seed="$seed" out="$run" progress_every=30 >"$log" 2>&1
    end=$(date +%s.%N)
    rm -rf "$cache"
    python tools/bench_quality.py "$run/model.safetensors" --frames 24 --out "$out/quality_${kind}_$seed.json" >/dev/null
    python - "$out/demo_${kind}_$seed.json" "$start" "$end" "$kind" "$flags" "$model" "$log" \
        "$out/quality_${kind}_$seed.json" "$seed" "${env_kind[*]:-}" <<'PY'
import json, re, sys
path, start, end, kind, flags, model, log, quality, seed, env = sys.argv[1:]
text = open(log).read()
render = re.search(r"phantom faces id\d+ .*done in (\d+)m(\d+)s", text)
prec = re.search(r"^precision (\S+), .*?: the schedule's steps take an estimated (.*?) in bf16-mixed and (.*?) in 32-true",
                 text, re.M)
q = json.load(open(quality))
q = q[0] if isinstance(q, list) else q
keep = ("swap_psnr", "identity_gain_db", "recon_psnr", "swap_ssim", "hf_coherent", "frame_psnr")
json.dump({
    "kind": kind, "seed": int(seed), "env": env, "seconds": round(float(end) - float(start), 1),
    "render_seconds": int(render[1]) * 60 + int(render[2]) if render else None,
    "precision": prec[1] if prec else None,
    "estimate_bf16": prec[2] if prec else None, "estimate_fp32": prec[3] if prec else None,
    "cpu_model": model, "cpu_flags": flags.split(),
    "quality": {k: q.get(k) for k in keep if k in q},
}, open(path, "w"), indent=1)
PY
    cat "$out/demo_${kind}_$seed.json"
done
