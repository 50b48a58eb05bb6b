#!/usr/bin/env bash
# One whole plate job, from EXR plates to a finished composite (docs/plates.md, "One whole job"):
#   1. plates:  two identities' phantom ACEScg EXR sequences (tools/phantom_plates.py), or yours
#               (--plates DIR: DIR/A/plate.1001.exr … and DIR/B/…, with DIR/A/landmarks.json
#               and DIR/B/landmarks.json if you have landmarks; else the detector finds them);
#   2. extract: both identities' face sets, in one crop space (--crop-space), with swap-extract;
#   3. train:   swap-train recipe=demo on the two sets (KEY=VALUE arguments are passed to it);
#   4. export:  swap-export of B's face onto A's plates: premultiplied EXR layers in the plate's
#               (linear) space, on the plate's frame numbers (OUT/shot/layers/face.1001.exr …);
#   5. comp:    each layer over its plate with oiiotool (OUT/comp/comp.1001.exr …).
# Each step's output goes to OUT/logs/STEP.log; one line per step here. OUT must be new or empty.
# OIIOTOOL=PATH picks the oiiotool (default: the first on PATH; the OpenImageIO wheel installs one
# beside its Python, Debian's openimageio-tools one in /usr/bin). PYTHON=PATH the Python that makes
# the phantom plates (default: the one beside swap-extract).
# Bad input or a failed step: one line on stderr and a non-zero exit (2: bad input, else the
# step's own exit code).
set -euo pipefail
prog=plate_job.sh
usage="usage: $prog OUT [--plates DIR] [--frames N] [--size PX] [--crop PX] [--crop-space auto|srgb|acescct] [--seed N] [swap-train KEY=VALUE ...]"
die() { echo "$prog: error: $1" >&2; exit "${2:-2}"; }

[ $# -ge 1 ] || die "no OUT folder; $usage"
case $1 in -h|--help) echo "$usage"; exit 0 ;; -*) die "the first argument is the OUT folder, got $1; $usage" ;; esac
out=$1; shift
plates=""; frames=200; size=128; crop=64; crop_space=auto; seed=0; train_args=()
int() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 $2: a whole number is needed; $usage"; }
while [ $# -gt 0 ]; do
    case $1 in
        --plates|--frames|--size|--crop|--crop-space|--seed)
            [ $# -ge 2 ] || die "$1 needs a value; $usage"
            case $1 in
                --plates) plates=$2 ;;
                --frames) int "$1" "$2"; frames=$2 ;;
                --size) int "$1" "$2"; size=$2 ;;
                --crop) int "$1" "$2"; crop=$2 ;;
                --crop-space) crop_space=$2 ;;
                --seed) int "$1" "$2"; seed=$2 ;;
            esac
            shift 2 ;;
        *=*) train_args+=("$1"); shift ;;
        *) die "unknown argument $1; $usage" ;;
    esac
done
case $crop_space in auto|srgb|acescct) ;; *) die "--crop-space $crop_space: auto, srgb or acescct" ;; esac

# Everything the job needs, checked before anything is written.
oiiotool=${OIIOTOOL:-oiiotool}
command -v "$oiiotool" >/dev/null || die "$oiiotool not found: it composites the layers (Debian: apt-get install openimageio-tools)"
oiio_version=$("$oiiotool" --version 2>/dev/null | head -n 1) || die "$oiiotool --version failed: is it oiiotool?"
for c in swap-extract swap-train swap-export; do
    command -v "$c" >/dev/null || die "$c not found: install progressive-swap ('pip install progressive-swap[plates]') or activate its environment"
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON:-$(dirname "$(command -v swap-extract)")/python}
[ -x "$py" ] || py=$(command -v python3) || die "no Python found (set PYTHON=)"
if [ -n "$plates" ]; then
    [ -d "$plates" ] || die "--plates $plates: no such folder"
    for id in A B; do
        compgen -G "$plates/$id/plate.*.exr" >/dev/null || die "--plates $plates: no $id/plate.NNNN.exr files in it"
    done
fi
if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; }; then
    die "$out exists and is not an empty folder: name a new one"
fi
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)

step() {  # step NAME COMMAND...: run it, its output to OUT/logs/NAME.log, one line here
    local name=$1 start=$SECONDS rc=0; shift
    "$@" >"$out/logs/$name.log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        local last; last=$(grep -v '^[[:space:]]*$' "$out/logs/$name.log" | tail -n 1 | cut -c1-300)
        die "$name failed (exit $rc): ${last:-no output}; log: $out/logs/$name.log" "$rc"
    fi
    echo "$prog: $name done in $((SECONDS - start)) s"
}

# 1. Plates.
if [ -z "$plates" ]; then
    plates=$out/plates
    step plates "$py" "$here/phantom_plates.py" "$plates" --frames "$frames" --size "$size" --seed "$seed"
fi
given() {  # given ID: the landmarks arguments for identity ID's plates, into the array lm
    lm=()
    if [ -f "$plates/$1/landmarks.json" ]; then lm=(landmarks=given "landmarks_file=$plates/$1/landmarks.json"); fi
}

# 2. Both identities' face sets, in one crop space.
for id in A B; do
    given "$id"
    step "extract_$id" swap-extract input="$plates/$id/plate.####.exr" out="$out/faces/$id" identity="$id" \
        size="$crop" crop_space="$crop_space" progress=false "${lm[@]}"
done

# 3. Train.
step train swap-train recipe=demo data=facesets "data.faces=[$out/faces/A,$out/faces/B]" out="$out/run" \
    progress_every=30 "${train_args[@]}"

# 4. B's face on A's plates: EXR layers, premultiplied, in the plate's linear space.
given A
step export swap-export checkpoint="$out/run/model.safetensors" input="$plates/A/plate.####.exr" out="$out/shot" \
    identity=B format=exr progress=false "${lm[@]}"

# 5. Each layer over its plate with oiiotool, written to a temporary name and renamed. (A function
# run by step, so set -e is off inside it: every command says how it fails.)
comp() {
    mkdir -p "$out/comp"
    local n=0 layer num tmp
    for layer in "$out"/shot/layers/face.*.exr; do
        [ -e "$layer" ] || { echo "no layers in $out/shot/layers"; return 1; }
        num=${layer##*/face.}; num=${num%.exr}
        [ -f "$plates/A/plate.$num.exr" ] || { echo "layer $layer has no plate $plates/A/plate.$num.exr"; return 1; }
        tmp=$out/comp/.tmp.comp.$num.exr
        "$oiiotool" "$layer" "$plates/A/plate.$num.exr" --ch R,G,B,A=1.0 --over --ch R,G,B --eraseattrib "^alpha$" -d half \
            --compression zip -o "$tmp" || { rm -f "$tmp"; echo "oiiotool failed on frame $num"; return 1; }
        mv -f "$tmp" "$out/comp/comp.$num.exr" || return 1
        n=$((n + 1))
    done
    local want; want=$(compgen -G "$plates/A/plate.*.exr" | wc -l)
    [ "$n" -eq "$want" ] || { echo "$n finished frames for $want plates"; return 1; }
    echo "$n finished frames in $out/comp (oiiotool $oiio_version)"
}
step comp comp
echo "$prog: $(tail -n 1 "$out/logs/comp.log"), from layers in $out/shot/layers"
