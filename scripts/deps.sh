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
    curl python3 iproute2 iptables procps util-linux openssl
    clang libclang-rt-14-dev clang-format
    nghttp2-client nghttp2-server
)
# The gRPC tests run @grpc/grpc-js under Node.js; take Debian's only when no node is installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
fi
# remora-xds's integration tests drive it with the AWS CLI (Debian 12: awscli 2.9); keep an
# `aws` that is already installed (pip's or AWS's own installer).
if ! command -v aws >/dev/null 2>&1; then
    pkgs+=(awscli)
fi
if [ "${1:-}" = "--bench" ]; then
    pkgs+=(wrk nghttp2-proxy haproxy nginx-light util-linux strace valgrind)
fi

missing=()
for p in "${pkgs[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in
        *"install ok installed"*) ;;
        *) missing+=("$p") ;;
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The gRPC test harness (tests/grpc: @grpc/grpc-js, @grpc/grpc-js-xds as a real xDS client,
# @grpc/proto-loader; pinned by the committed package-lock.json).
# node_modules is not committed; `npm ci` installs exactly the locked versions. Install
# scripts are skipped: the harness needs none (protobufjs's only prints a version warning).
grpc_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/grpc"
if [ ! -d "$grpc_dir/node_modules/@grpc/grpc-js" ] || [ ! -d "$grpc_dir/node_modules/@grpc/grpc-js-xds" ] ||
    [ ! -d "$grpc_dir/node_modules/@grpc/proto-loader" ]; then
    echo "deps: npm ci in tests/grpc" >&2
    (cd "$grpc_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
