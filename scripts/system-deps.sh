#!/usr/bin/env bash
# Install the system programs kmq's tests and benchmarks use (Debian/Ubuntu), if missing:
# chromium (headless browser tests), ffmpeg (reference codecs), pngquant (reference quantizer).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v pngquant >/dev/null 2>&1 || missing+=(pngquant)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: please install: ${missing[*]} (no apt-get on this machine)" >&2
    exit 2
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    echo "error: installing ${missing[*]} needs root (run as root or with sudo)" >&2
    exit 2
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q >/dev/null
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
