#!/usr/bin/env bash
# npm run demo: the whole glidekv stack on the embedded file store in a temp
# dir (no MinIO): up, cp keys in, reclaim, live fork, mount the fork, compare,
# down. Prints uploads / re-uploads / uploaded bytes per phase. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "demo: needs root (losetup, mkfs.ext4, mount); run: sudo npm run demo" >&2; exit 1; fi
[ -e /dev/fuse ] || { echo "demo: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }
exec node --import tsx scripts/demo.ts "$@"
