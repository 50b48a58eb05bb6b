#!/usr/bin/env bash
# The applications the tests drive for real, from Debian's packages, installed when missing:
# Chromium and its driver (the face-set reviewer's browser tests) and Blender (the export's
# compositing tests). Needs root (or sudo) and the package registry; about two minutes on a fresh
# machine.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
command -v blender >/dev/null || need+=(blender)  # the Blender tests composite layers in it (~55 s alone)
command -v oiiotool >/dev/null || need+=(openimageio-tools)  # the plate tests composite our EXR layers with it
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
