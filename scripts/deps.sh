#!/usr/bin/env bash
# Installs the Debian packages remora needs to build, test, demo and benchmark,
# skipping the ones already installed. Called by `make deps` (and so by
# `make test` and `make demo`). Needs root or sudo when something is missing.
set -eu

pkgs=(
    build-essential pkg-config make gcc
    libev-dev libssl-dev libnghttp2-dev node-llhttp
    protobuf-c-compiler libprotobuf-c-dev libcmocka-dev
    libjansson-dev libyaml-dev libpcre2-dev libsqlite3-dev
    curl python3 iproute2 procps util-linux
    clang libclang-rt-14-dev clang-format
    nghttp2-client nghttp2-server
)
# The gRPC tests run @grpc/grpc-js under Node.js; take Debian's only when no node is installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
fi
if [ "${1:-}" = "--bench" ]; then
    pkgs+=(wrk nghttp2-proxy haproxy nginx-light util-linux strace)
fi

missing=()
for p in "${pkgs[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in
        *"install ok installed"*) ;;
        *) missing+=("$p") ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
