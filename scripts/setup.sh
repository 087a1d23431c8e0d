#!/usr/bin/env bash
# Install what glidekv needs to build, test and benchmark, idempotently.
# Quick when everything is present: each step checks before it acts.
#   - Debian packages: libfuse2 (fuse-native's runtime), fuse3 (fusermount),
#     e2fsprogs (mkfs.ext4, filefrag), util-linux (losetup, fsfreeze), jq, attr
#     (getfattr), s3backer (the peer in bench:mount).
#   - node_modules via `npm ci` when missing or older than package-lock.json.
#   - A MinIO server built with the Go toolchain at a pinned version, cached
#     outside the repository in $GLIDEKV_CACHE_HOME (default ~/.cache/glidekv)
#     and reused across runs and clones.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# --- Debian packages --------------------------------------------------------
pkgs=(libfuse2 fuse3 e2fsprogs util-linux jq attr s3backer)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root or install them: apt-get install ${missing[*]})"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- node_modules -------------------------------------------------------------
stamp=node_modules/.glidekv-lock-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "npm ci"
  npm ci --no-fund --no-audit --loglevel=error >&2
  echo "$want" > "$stamp"
fi

# --- MinIO --------------------------------------------------------------------
version=$(cat scripts/minio.version)
cache_home=${GLIDEKV_CACHE_HOME:-$HOME/.cache/glidekv}
bin_dir="$cache_home/minio-$version"
if [ ! -x "$bin_dir/minio" ]; then
  command -v go >/dev/null || { log "the Go toolchain is needed to build MinIO"; exit 1; }
  log "building MinIO $version with go install (once; cached in $bin_dir)"
  mkdir -p "$bin_dir"
  tmp_bin=$(mktemp -d "$cache_home/.minio-build.XXXXXX")
  (cd "$tmp_bin" && GOBIN="$tmp_bin" GOFLAGS=-trimpath go install "github.com/minio/minio@$version" >&2)
  mv "$tmp_bin/minio" "$bin_dir/minio"
  rmdir "$tmp_bin" 2>/dev/null || rm -rf "$tmp_bin"
fi
