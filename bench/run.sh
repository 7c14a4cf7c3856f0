#!/usr/bin/env bash
# bench/run.sh: load benchmark of remora against direct, HAProxy, nginx (wrk) and nghttpx
# (h2load). Starts two loopback backends and every proxy itself under a temporary directory,
# pins each proxy to one core and the load generator to the other, runs the workloads
# interleaved across targets, and prints a markdown report (also written to bench/results/).
# It is a benchmark, not a test: no figure ever fails it. It exits 1 when the harness cannot
# run at all (tool or backend missing) and 2 when a selected target failed to start, after
# measuring and reporting the others. See bench/README.md for the method.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--reps N] [--duration S] [--targets LIST] [--workloads LIST]
                    [--wait-quiet S] [--no-strace] [--no-callgrind] [--keep-tmp] [--out FILE]

  --quick           1 repetition, 3 s runs, workloads c64,h2,idle-c64, no strace and no
                    callgrind (< 1 min);
                    writes bench/results/latest-quick.md
  --reps N          repetitions, interleaved across targets (default 3)
  --duration S      seconds per run for every workload (default: 10 for c64, idle-c64 and h2,
                    5 for the others)
  --targets LIST    comma list out of: direct,remora,haproxy,nginx,nghttpx (default: all)
  --workloads LIST  comma list out of: c64,c8,c1,weighted,big,h2,tls,idle-c64 (default: all)
  --wait-quiet S    before each run, wait up to S seconds (6*S in all) for other processes to
                    use less than 10% of a core (default 15; 0 in --quick; 0 disables)
  --no-strace       skip the syscalls-per-request measurement
  --no-callgrind    skip the instructions-per-request count (valgrind --tool=callgrind)
  --keep-tmp        keep the temporary directory (configs, logs, raw outputs)
  --out FILE        where to write the report (default bench/results/latest.md)

Environment: REMORA_BUILD (default build), BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1).
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${REMORA_BUILD:-$ROOT/build}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PROXY_CPU=${BENCH_PROXY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

ALL_TARGETS=(direct remora haproxy nginx nghttpx)
# idle-c64 comes last: the memory a proxy keeps from its 1000-request burst would otherwise show
# in the RSS under load of every later workload of the first repetition.
ALL_WORKLOADS=(c64 c8 c1 weighted big h2 tls idle-c64)
QUICK_WORKLOADS=(c64 h2 idle-c64)
declare -A DUR=([c64]=10 [c8]=5 [c1]=5 [idle-c64]=10 [weighted]=5 [big]=5 [h2]=10 [tls]=10)
IDLE_CONNS=1000
# After the burst of idle-c64, how long the connections are left idle before RSS is read again
# (first repetition, full mode only): longer than the periodic trims of the proxies (remora's
# worker caches after 1 s quiet, main's malloc_trim every 5 s).
SETTLE_S=7
# nginx serves the file at /1m; the test upstream reads the size from the query string.
BIG_PATH="/1m?body_size=1048576"
STRACE_SECS=3
# The callgrind phase: requests counted per cell, unrecorded warm-up requests before them, and
# the readiness deadline of a proxy starting under valgrind.
CG_REQS=30000
CG_WARMUP=500
CG_READY_SECS=60
WARMUP_SECS=1
READY_SECS=15

mode=full
reps=3
dur_override=""
targets_arg=""
workloads_arg=""
do_strace=1
do_callgrind=1
quiet_secs=""
keep_tmp=0
out_md=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) mode=quick ;;
        --reps) reps=$2; shift ;;
        --duration) dur_override=$2; shift ;;
        --targets) targets_arg=$2; shift ;;
        --workloads) workloads_arg=$2; shift ;;
        --wait-quiet) quiet_secs=$2; shift ;;
        --no-strace) do_strace=0 ;;
        --no-callgrind) do_callgrind=0 ;;
        --keep-tmp) keep_tmp=1 ;;
        --out) out_md=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench: unknown argument '$1'" >&2; usage >&2; exit 1 ;;
    esac
    shift
done

if [ "$mode" = quick ]; then
    [ -n "$quiet_secs" ] || quiet_secs=0
    reps=1
    do_strace=0
    do_callgrind=0
    for w in "${!DUR[@]}"; do DUR[$w]=3; done
    WORKLOADS=("${QUICK_WORKLOADS[@]}")
    [ -n "$out_md" ] || out_md=$HERE/results/latest-quick.md
else
    WORKLOADS=("${ALL_WORKLOADS[@]}")
    [ -n "$out_md" ] || out_md=$HERE/results/latest.md
fi
[ -n "$quiet_secs" ] || quiet_secs=15
QUIET_PCT=10
QUIET_BUDGET=$((6 * quiet_secs))
if [ -n "$dur_override" ]; then
    for w in "${!DUR[@]}"; do DUR[$w]=$dur_override; done
fi
# "single" and "single90" are not workloads of their own: they run right before and after each
# weighted run, so that the split is compared with a single cluster a few seconds apart rather
# than with the c64 run minutes earlier (this machine drifts by more than the 5 % looked for).
# "single" is c64's route (one cluster, the two backends round robin); "single90" (remora only)
# is one cluster whose two endpoints have the split's weights, 90 and 10, so the backends carry
# the same load as under the split and the pair measures the split alone (bench/README.md,
# "Tenth session": sending 90 % to one backend costs the load core more per request). HAProxy's
# and nginx's "weighted" routes are such single backends with weighted servers already.
DUR[single]=${DUR[weighted]}
DUR[single90]=${DUR[weighted]}
[ -n "$workloads_arg" ] && IFS=, read -r -a WORKLOADS <<<"$workloads_arg"
TARGETS=("${ALL_TARGETS[@]}")
[ -n "$targets_arg" ] && IFS=, read -r -a TARGETS <<<"$targets_arg"
for w in "${WORKLOADS[@]}"; do
    [ -n "${DUR[$w]:-}" ] || { echo "bench: unknown workload '$w'" >&2; exit 1; }
done
for t in "${TARGETS[@]}"; do
    case " ${ALL_TARGETS[*]} " in *" $t "*) ;; *) echo "bench: unknown target '$t'" >&2; exit 1 ;; esac
done

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# Which targets a workload is run against. h2 is compared between the two h2c-capable proxies
# asked for (remora, nghttpx); the weighted split has no meaning for direct, nor has TLS
# termination (the backends are plaintext).
applies() {
    local t=$1 w=$2
    case "$w" in
        h2) [ "$t" = remora ] || [ "$t" = nghttpx ] ;;
        weighted | single | tls) [ "$t" = remora ] || [ "$t" = haproxy ] || [ "$t" = nginx ] ;;
        single90) [ "$t" = remora ] ;;
        *) [ "$t" != nghttpx ] ;;
    esac
}
has_workload() { case " ${WORKLOADS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }
has_target() { case " ${TARGETS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }
target_used() {
    local w
    for w in "${WORKLOADS[@]}"; do applies "$1" "$w" && return 0; done
    return 1
}

# ---- tools ------------------------------------------------------------------------------------
for tool in wrk taskset curl nginx timeout; do
    command -v "$tool" >/dev/null || die "'$tool' not found: run 'make deps-bench' (scripts/deps.sh --bench)"
done
if has_workload h2; then
    command -v h2load >/dev/null || die "'h2load' not found: run 'make deps-bench'"
fi
[ "$(nproc)" -ge 2 ] || log "warning: $(nproc) core(s): proxy and load generator share a core"

if [ "$do_strace" = 1 ] && ! command -v strace >/dev/null; then
    # strace is not in scripts/deps.sh: install it here only when it is missing.
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing strace (apt-get)"
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends \
            strace >/dev/null 2>&1 || true
    fi
    command -v strace >/dev/null || { log "strace unavailable: syscall counts skipped"; do_strace=0; }
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=65536
# HAProxy wants 2 fds per connection plus some: size maxconn to what the limit allows.
HAPROXY_MAXCONN=$(((NOFILE - 200) / 2))
[ $HAPROXY_MAXCONN -gt 20000 ] && HAPROXY_MAXCONN=20000
[ $HAPROXY_MAXCONN -ge $((IDLE_CONNS + 200)) ] ||
    die "open file limit $NOFILE is too low for $IDLE_CONNS idle connections (ulimit -n)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/remora-bench.XXXXXX") || die "mktemp failed"
# nginx workers run as nobody when started as root: they must reach the 1 MiB file.
chmod 755 "$TMP"
STARTED=()
SAMPLER=""

stop_tree() {
    local root=$1 pids p i
    pids=$("$PY" "$HERE/procstat.py" tree "$root" 2>/dev/null)
    kill -TERM "$root" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    wait "$root" 2>/dev/null
}

cleanup() {
    local pid
    [ -n "$SAMPLER" ] && kill -TERM "$SAMPLER" 2>/dev/null
    for pid in "${STARTED[@]}"; do stop_tree "$pid"; done
    if [ "$keep_tmp" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

procstat() { "$PY" "$HERE/procstat.py" "$@"; }
bg_pct() { # SNAP0 SNAP1 -> % of one core used by processes outside this script's tree
    awk -v n="$(nproc)" '{ w = ($6 - $2) / n; if (w > 0) printf "%.0f\n", (($5 - $1) - ($8 - $4)) * 100 / w; else print 0 }' <<<"$1 $2"
}
CLKTCK=$(procstat clktck)
read -r -a PORTS <<<"$(procstat ports 24 | tr '\n' ' ')"
next_port() { NEXT_PORT=${PORTS[0]}; PORTS=("${PORTS[@]:1}"); }

# spawn NAME CMD...: start CMD in the background, output to $TMP/NAME.log; pid in SPAWNED.
spawn() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    SPAWNED=$!
    STARTED+=("$SPAWNED")
}

# wait_http PID URL [curl args...]: poll until URL answers 200, PID dies, or the deadline.
wait_http() {
    local pid=$1 url=$2 code
    shift 2
    local deadline=$((SECONDS + READY_SECS))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null)
        [ "$code" = 200 ] && return 0
        sleep 0.05
    done
    return 1
}

# ---- facts and results ------------------------------------------------------------------------
RESULTS=$TMP/results.tsv
FACTS=$TMP/facts.tsv
: >"$FACTS"
NOTES_FILE=$TMP/notes.txt
: >"$NOTES_FILE"
note() { printf '%s\n' "$*" | tr '\t' ' ' >>"$NOTES_FILE"; }
declare -A PID PORT_MAIN PORT_W PORT_S90 PORT_H2 PORT_TLS STATUS
fact() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$FACTS"; }
fail_target() {
    STATUS[$1]="failed to start"
    fact "$1" status "failed to start"
    note "$1 failed to start: $2"
    log "$1 FAILED TO START: $2"
}
tail_log() { tail -n 3 "$TMP/$1.log" 2>/dev/null | tr '\n' ' ' | cut -c1-300; }

if [ "$do_callgrind" = 1 ]; then
    for tool in valgrind callgrind_control h2load; do
        if ! command -v "$tool" >/dev/null; then
            log "'$tool' not found: instruction counts (callgrind) skipped"
            note "instructions per request skipped: '$tool' not found (make deps-bench)"
            do_callgrind=0
            break
        fi
    done
fi

# Other work on the machine skews every figure but CPU/request: say so before starting.
bg_snap0=$(procstat snap $$)
sleep 1
bg_snap1=$(procstat snap $$)
BG_START=$(bg_pct "$bg_snap0" "$bg_snap1")
# Calibration: one round trip between two processes on the same core and across the cores.
# Every proxied request crosses cores four times, a direct one never does.
PP_SAME=$(procstat pingpong "$LOAD_CPU" "$LOAD_CPU")
PP_CROSS=$(procstat pingpong "$PROXY_CPU" "$LOAD_CPU")
log "round trip over a socketpair: ${PP_SAME} µs on one core, ${PP_CROSS} µs across cores"
if [ "${BG_START:-0}" -gt 10 ]; then
    log "warning: other processes are using ${BG_START}% of a core: figures will be noisy"
    note "at start, other processes were using ${BG_START}% of a core"
fi

# The tls workload's certificate: ECDSA P-256, self-signed, for every proxy (TLS 1.3 with each
# one's default cipher suites; wrk does not verify it). haproxy.pem is HAProxy's form: the
# certificate and its key in one file.
TLS_DIR=$TMP/tls
if has_workload tls; then
    mkdir -p "$TLS_DIR"
    if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" >"$TLS_DIR/openssl.log" 2>&1; then
        cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/haproxy.pem"
        chmod -R a+rX "$TLS_DIR" # nginx's workers run as nobody
    else
        log "openssl could not make the tls workload's certificate: tls skipped"
        note "tls workload skipped: openssl req failed: $(head -n 2 "$TLS_DIR/openssl.log" | tr '\n' ' ')"
        kept=()
        for w in "${WORKLOADS[@]}"; do [ "$w" = tls ] || kept+=("$w"); done
        WORKLOADS=("${kept[@]}")
    fi
fi

# ---- backends ---------------------------------------------------------------------------------
mkdir -p "$TMP/www"
head -c 1048576 /dev/zero | tr '\0' 'x' >"$TMP/www/1m"
chmod -R a+rX "$TMP/www"

# master_process is left at its default (on), not written: the callgrind phase turns it off
# with -g, which nginx refuses for a directive the file sets too.
nginx_common() { # DIR
    cat <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections 8192; }
EOF
}
nginx_http_common() { # DIR
    cat <<EOF
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

start_nginx_backend() { # NAME PORT
    local name=$1 port=$2 dir=$TMP/$1
    mkdir -p "$dir"
    {
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir"
        cat <<EOF
    sendfile on;
    default_type text/plain;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = /1m { root $TMP/www; }
        location = /__status { stub_status; }
        location / { return 200 "remora-bench-$name\n"; }
    }
}
EOF
    } >"$dir/nginx.conf"
    spawn "$name" taskset -c "$LOAD_CPU" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    BPID[$name]=$SPAWNED
    wait_http "$SPAWNED" "http://127.0.0.1:$port/" ||
        die "backend $name (nginx on 127.0.0.1:$port) failed to start: $(tail -n 3 "$dir/error.log" 2>/dev/null)"
}

declare -A BPID
next_port; B1=$NEXT_PORT
next_port; B2=$NEXT_PORT
BACKEND_KIND=nginx
start_nginx_backend b1 "$B1"
start_nginx_backend b2 "$B2"
BACKEND_DESC="2 × nginx $(nginx -v 2>&1 | sed 's|.*nginx/||') (1 worker each, return 200 of a 16-byte body, keep-alive; /1m a static 1 MiB file)"

# The backend choice: wrk -c64 directly against one backend, PORT, for SECONDS, adding to
# PROBE_REQ[KIND] the requests served and to PROBE_TICKS[KIND] the CPU ticks its process PID
# used. Both share the load core with wrk, so what a backend costs per request is what the
# proxies' runs, often bound by that core, need to know. One req/s figure per kind was not
# enough: the two read within a few percent of each other, and the choice flipped from run to
# run (nginx won by 46k to 44k req/s in one run, lost by 38k to 44k in another).
declare -A PROBE_REQ=([nginx]=0 [tu]=0) PROBE_TICKS=([nginx]=0 [tu]=0)
probe() { # KIND PORT PID SECONDS
    local c0 c1 n
    c0=$(procstat cpu "$3")
    timeout $(($4 + 15)) taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$4"s "http://127.0.0.1:$2/" \
        >"$TMP/probe.out" 2>&1 || return 1
    c1=$(procstat cpu "$3")
    n=$("$PY" "$HERE/report.py" wrk-requests "$TMP/probe.out") || return 1
    PROBE_REQ[$1]=$((PROBE_REQ[$1] + n))
    PROBE_TICKS[$1]=$((PROBE_TICKS[$1] + c1 - c0))
}
probe_us() { # KIND -> CPU µs per request, or nothing
    awk -v t="${PROBE_TICKS[$1]}" -v n="${PROBE_REQ[$1]}" -v hz="$CLKTCK" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n }'
}

# The project's test upstream replaces nginx if it is built, serves the 1 MiB path, and costs
# no more CPU per request: probes alternate, nginx, test upstream, test upstream, nginx.
TU=$BUILD/remora-test-upstream
if [ -x "$TU" ]; then
    probe_secs=2
    [ "$mode" = quick ] && probe_secs=1
    next_port; T1=$NEXT_PORT
    next_port; T2=$NEXT_PORT
    spawn tu1 taskset -c "$LOAD_CPU" "$TU" --listen "127.0.0.1:$T1" --name remora-bench-b1
    tu1=$SPAWNED
    spawn tu2 taskset -c "$LOAD_CPU" "$TU" --listen "127.0.0.1:$T2" --name remora-bench-b2
    tu2=$SPAWNED
    if wait_http "$tu1" "http://127.0.0.1:$T1/" && wait_http "$tu2" "http://127.0.0.1:$T2/"; then
        big=$(curl -s -o /dev/null -w '%{size_download}' --max-time 5 "http://127.0.0.1:$T1$BIG_PATH")
        probes=(nginx tu)
        [ "$mode" = quick ] || probes+=(tu nginx) # quick: one probe of each
        rounds=$((${#probes[@]} / 2))
        for k in "${probes[@]}"; do
            if [ "$k" = nginx ]; then probe nginx "$B1" "${BPID[b1]}" $probe_secs || break
            else probe tu "$T1" "$tu1" $probe_secs || break; fi
        done
        n_us=$(probe_us nginx)
        t_us=$(probe_us tu)
        n_rps=$((PROBE_REQ[nginx] / (rounds * probe_secs)))
        t_rps=$((PROBE_REQ[tu] / (rounds * probe_secs)))
        what="nginx ${n_us:-?} µs/req (${n_rps} req/s), test upstream ${t_us:-?} µs/req (${t_rps} req/s): backend CPU per request, direct wrk -c64, ${rounds} × ${probe_secs} s each"
        log "backend choice: $what"
        if [ "$big" != 1048576 ]; then
            note "backend: test upstream not used, GET $BIG_PATH did not return 1 MiB (got ${big:-nothing}); $what"
        elif [ -n "$t_us" ] && [ -n "$n_us" ] && awk -v t="$t_us" -v n="$n_us" 'BEGIN { exit !(t <= n) }'; then
            stop_tree "${BPID[b1]}"
            stop_tree "${BPID[b2]}"
            B1=$T1 B2=$T2 BACKEND_KIND=test-upstream
            BACKEND_DESC="2 × build/remora-test-upstream (1 thread each, 200 with a 16-byte body, keep-alive; body_size=1048576 for 1 MiB)"
            note "backend: test upstream chosen ($what)"
        else
            note "backend: nginx chosen ($what)"
        fi
    else
        note "backend: build/remora-test-upstream did not answer 200 on /: nginx used"
    fi
    if [ "$BACKEND_KIND" = nginx ]; then
        stop_tree "$tu1"
        stop_tree "$tu2"
    fi
else
    note "backend: nginx (build/remora-test-upstream not built, so not compared)"
fi
log "backends ($BACKEND_KIND) on 127.0.0.1:$B1 and 127.0.0.1:$B2, core $LOAD_CPU"

# ---- targets ----------------------------------------------------------------------------------
remora_hcm() { # STAT_PREFIX CODEC ROUTE_YAML(one line, after "route:")
    cat <<EOF
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
EOF
    [ -n "$2" ] && echo "          codec_type: $2"
    cat <<EOF
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: $3
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
EOF
}
remora_cluster() { # NAME PORT[:WEIGHT]...
    local name=$1 p
    shift
    cat <<EOF
  - name: $name
    connect_timeout: 1s
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: $name
      endpoints:
      - lb_endpoints:
EOF
    for p in "$@"; do
        echo "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${p%%:*}}}}"
        [ "${p#*:}" = "$p" ] || echo "          load_balancing_weight: ${p#*:}"
    done
}
remora_config() { # WITH_WEIGHTED WITH_H2 WITH_TLS
    cat <<EOF
admin: {address: {socket_address: {address: 127.0.0.1, port_value: ${PORT_ADMIN[remora]}}}}
static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: ${PORT_MAIN[remora]}}}
EOF
    remora_hcm bench "" "{cluster: backends}"
    if [ "$1" = 1 ]; then
        cat <<EOF
  - name: bench_weighted
    address: {socket_address: {address: 127.0.0.1, port_value: ${PORT_W[remora]}}}
EOF
        remora_hcm bench_weighted "" \
            "{weighted_clusters: {clusters: [{name: b1, weight: 90}, {name: b2, weight: 10}]}}"
        cat <<EOF
  - name: bench_single90
    address: {socket_address: {address: 127.0.0.1, port_value: ${PORT_S90[remora]}}}
EOF
        remora_hcm bench_single90 "" "{cluster: b90}"
    fi
    if [ "$2" = 1 ]; then
        cat <<EOF
  - name: bench_h2
    address: {socket_address: {address: 127.0.0.1, port_value: ${PORT_H2[remora]}}}
EOF
        remora_hcm bench_h2 HTTP2 "{cluster: backends}"
    fi
    if [ "${3:-0}" = 1 ]; then
        cat <<EOF
  - name: bench_tls
    address: {socket_address: {address: 127.0.0.1, port_value: ${PORT_TLS[remora]}}}
EOF
        remora_hcm bench_tls "" "{cluster: backends}"
        cat <<EOF
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {filename: $TLS_DIR/cert.pem}
              private_key: {filename: $TLS_DIR/key.pem}
EOF
    fi
    echo "  clusters:"
    remora_cluster backends "$B1" "$B2"
    if [ "$1" = 1 ]; then
        remora_cluster b1 "$B1"
        remora_cluster b2 "$B2"
        remora_cluster b90 "$B1:90" "$B2:10"
    fi
}
declare -A PORT_ADMIN

remora_validate() { # FILE -> 0 if accepted; first line of its output in VALIDATE_ERR
    timeout 20 "$BUILD/remora" --mode validate -c "$1" >"$1.validate" 2>&1
    local rc=$?
    VALIDATE_ERR=$(grep -v '^[[:space:]]*$' "$1.validate" | head -n 1 | cut -c1-200)
    [ "$rc" = 0 ]
}

start_remora() {
    local dir=$TMP/remora w=0 h=0 tl=0
    mkdir -p "$dir"
    if [ ! -x "$BUILD/remora" ]; then
        fail_target remora "$BUILD/remora not found (run make all)"
        return
    fi
    next_port; PORT_MAIN[remora]=$NEXT_PORT
    next_port; PORT_W[remora]=$NEXT_PORT
    next_port; PORT_S90[remora]=$NEXT_PORT
    next_port; PORT_H2[remora]=$NEXT_PORT
    next_port; PORT_TLS[remora]=$NEXT_PORT
    next_port; PORT_ADMIN[remora]=$NEXT_PORT
    # Each optional feature is validated on its own: an unsupported one becomes "n/a", the rest
    # is still measured.
    if has_workload weighted; then
        remora_config 1 0 >"$dir/weighted.yaml"
        if remora_validate "$dir/weighted.yaml"; then
            w=1
        else
            fact remora na:weighted "n/a (not supported yet)"
            note "remora weighted_clusters: --mode validate said: ${VALIDATE_ERR:-nothing}"
        fi
    fi
    if has_workload h2; then
        remora_config 0 1 >"$dir/h2.yaml"
        if remora_validate "$dir/h2.yaml"; then
            h=1
        else
            fact remora na:h2 "n/a (not supported yet)"
            note "remora codec_type HTTP2: --mode validate said: ${VALIDATE_ERR:-nothing}"
        fi
    fi
    if has_workload tls; then
        remora_config 0 0 1 >"$dir/tls.yaml"
        if remora_validate "$dir/tls.yaml"; then
            tl=1
        else
            fact remora na:tls "n/a (not supported yet)"
            note "remora DownstreamTlsContext: --mode validate said: ${VALIDATE_ERR:-nothing}"
        fi
    fi
    if [ "$tl" = 1 ]; then
        # The RSS idle target is about the plaintext routes: a certificate and its SSL_CTX touch
        # about 2.8 MiB more of libssl and libcrypto (file-backed pages shared with every other
        # process using them). So the idle RSS is read from the same config without the TLS
        # listener, started alone first; the full one's is noted beside it.
        remora_config "$w" "$h" 0 >"$dir/plain.yaml"
        spawn remora-plain taskset -c "$PROXY_CPU" "$BUILD/remora" -c "$dir/plain.yaml" \
            --concurrency 1 -l warning
        if wait_http "$SPAWNED" "http://127.0.0.1:${PORT_MAIN[remora]}/"; then
            RSS_IDLE_PLAIN=$(procstat rss "$SPAWNED")
        fi
        stop_tree "$SPAWNED"
    fi
    remora_config "$w" "$h" "$tl" >"$dir/remora.yaml"
    CMD_remora=("$BUILD/remora" -c "$dir/remora.yaml" --concurrency 1 -l warning)
    spawn remora taskset -c "$PROXY_CPU" "${CMD_remora[@]}"
    PID[remora]=$SPAWNED
    if ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_MAIN[remora]}/"; then
        fail_target remora "no 200 on 127.0.0.1:${PORT_MAIN[remora]} within ${READY_SECS}s: $(tail_log remora)"
        return
    fi
    if [ $w = 1 ] && ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_W[remora]}/"; then
        fact remora na:weighted "n/a (no 200 on the weighted listener)"
    fi
    if [ $w = 1 ] && ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_S90[remora]}/"; then
        fact remora na:single90 "n/a (no 200 on the single90 listener)"
    fi
    if [ $h = 1 ] && ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_H2[remora]}/" --http2-prior-knowledge; then
        fact remora na:h2 "n/a (no 200 over h2c)"
    fi
    if [ $tl = 1 ] && ! wait_http "$SPAWNED" "https://127.0.0.1:${PORT_TLS[remora]}/" -k; then
        fact remora na:tls "n/a (no 200 over TLS)"
    fi
    STATUS[remora]=ok
}

start_haproxy() {
    local dir=$TMP/haproxy
    mkdir -p "$dir"
    command -v haproxy >/dev/null || { fail_target haproxy "haproxy not installed (make deps-bench)"; return; }
    next_port; PORT_MAIN[haproxy]=$NEXT_PORT
    next_port; PORT_W[haproxy]=$NEXT_PORT
    next_port; PORT_TLS[haproxy]=$NEXT_PORT
    local tls_frontend=""
    has_workload tls && tls_frontend="frontend bench_tls
    bind 127.0.0.1:${PORT_TLS[haproxy]} ssl crt $TLS_DIR/haproxy.pem
    default_backend backends"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN

defaults
    mode http
    maxconn $HAPROXY_MAXCONN
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    timeout http-request 300s

frontend bench
    bind 127.0.0.1:${PORT_MAIN[haproxy]}
    default_backend backends

frontend bench_weighted
    bind 127.0.0.1:${PORT_W[haproxy]}
    default_backend weighted

$tls_frontend

backend backends
    balance roundrobin
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2

backend weighted
    balance roundrobin
    server b1 127.0.0.1:$B1 weight 90
    server b2 127.0.0.1:$B2 weight 10
EOF
    CMD_haproxy=(haproxy -db -f "$dir/haproxy.cfg")
    spawn haproxy taskset -c "$PROXY_CPU" "${CMD_haproxy[@]}"
    PID[haproxy]=$SPAWNED
    if ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_MAIN[haproxy]}/" ||
        ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_W[haproxy]}/"; then
        fail_target haproxy "no 200 within ${READY_SECS}s: $(tail_log haproxy)"
        return
    fi
    if has_workload tls && ! wait_http "$SPAWNED" "https://127.0.0.1:${PORT_TLS[haproxy]}/" -k; then
        fact haproxy na:tls "n/a (no 200 over TLS)"
    fi
    STATUS[haproxy]=ok
}

start_nginx() {
    local dir=$TMP/nginx
    mkdir -p "$dir"
    next_port; PORT_MAIN[nginx]=$NEXT_PORT
    next_port; PORT_W[nginx]=$NEXT_PORT
    next_port; PORT_TLS[nginx]=$NEXT_PORT
    {
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir"
        cat <<EOF
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    upstream weighted {
        server 127.0.0.1:$B1 weight=90;
        server 127.0.0.1:$B2 weight=10;
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_max_temp_file_size 0;
    server {
        listen 127.0.0.1:${PORT_MAIN[nginx]} backlog=4096;
        location / { proxy_pass http://backends; }
    }
    server {
        listen 127.0.0.1:${PORT_W[nginx]} backlog=4096;
        location / { proxy_pass http://weighted; }
    }
EOF
        if has_workload tls; then
            cat <<EOF
    server {
        listen 127.0.0.1:${PORT_TLS[nginx]} ssl backlog=4096;
        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        location / { proxy_pass http://backends; }
    }
EOF
        fi
        echo "}"
    } >"$dir/nginx.conf"
    CMD_nginx=(nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log")
    spawn nginx taskset -c "$PROXY_CPU" "${CMD_nginx[@]}"
    PID[nginx]=$SPAWNED
    if ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_MAIN[nginx]}/" ||
        ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_W[nginx]}/"; then
        fail_target nginx "no 200 within ${READY_SECS}s: $(tail -n 3 "$dir/error.log" 2>/dev/null | tr '\n' ' ')"
        return
    fi
    if has_workload tls && ! wait_http "$SPAWNED" "https://127.0.0.1:${PORT_TLS[nginx]}/" -k; then
        fact nginx na:tls "n/a (no 200 over TLS)"
    fi
    STATUS[nginx]=ok
}

start_nghttpx() {
    local dir=$TMP/nghttpx
    mkdir -p "$dir"
    command -v nghttpx >/dev/null || { fail_target nghttpx "nghttpx not installed (make deps-bench)"; return; }
    next_port; PORT_H2[nghttpx]=$NEXT_PORT
    # --conf stops nghttpx from reading /etc/nghttpx/nghttpx.conf.
    cat >"$dir/nghttpx.conf" <<EOF
frontend=127.0.0.1,${PORT_H2[nghttpx]};no-tls
backend=127.0.0.1,$B1;;proto=http/1.1
backend=127.0.0.1,$B2;;proto=http/1.1
workers=1
single-thread=yes
backend-keep-alive-timeout=300s
errorlog-file=$dir/error.log
EOF
    CMD_nghttpx=(nghttpx --conf="$dir/nghttpx.conf")
    spawn nghttpx taskset -c "$PROXY_CPU" "${CMD_nghttpx[@]}"
    PID[nghttpx]=$SPAWNED
    if ! wait_http "$SPAWNED" "http://127.0.0.1:${PORT_H2[nghttpx]}/" --http2-prior-knowledge; then
        fail_target nghttpx "no 200 over h2c within ${READY_SECS}s: $(tail -n 3 "$dir/error.log" 2>/dev/null | tr '\n' ' ')"
        return
    fi
    STATUS[nghttpx]=ok
}

START_T0=$SECONDS
for t in "${TARGETS[@]}"; do
    target_used "$t" || continue
    case "$t" in
        direct)
            PORT_MAIN[direct]=$B1
            STATUS[direct]=ok
            ;;
        remora) start_remora ;;
        haproxy) start_haproxy ;;
        nginx) start_nginx ;;
        nghttpx) start_nghttpx ;;
    esac
    [ "${STATUS[$t]:-}" = ok ] || continue
    fact "$t" status ok
    if [ -n "${PID[$t]:-}" ]; then
        rss_now=$(procstat rss "${PID[$t]}")
        if [ "$t" = remora ] && [ -n "${RSS_IDLE_PLAIN:-}" ]; then
            fact "$t" rss_idle "$RSS_IDLE_PLAIN"
            note "remora RSS idle: $RSS_IDLE_PLAIN KiB with the plaintext listeners alone (the figure reported); $rss_now KiB with the tls workload's TLS listener too (libssl/libcrypto pages the certificate and SSL_CTX touch); HAProxy's and nginx's RSS idle are read with their TLS listeners"
        else
            fact "$t" rss_idle "$rss_now"
        fi
        log "$t started (pid ${PID[$t]}, core $PROXY_CPU)"
    fi
done
for t in "${TARGETS[@]}"; do
    for w in "${WORKLOADS[@]}"; do
        applies "$t" "$w" && fact "$t" "applies:$w" yes
    done
done

# ---- runs -------------------------------------------------------------------------------------
url_for() { # TARGET WORKLOAD
    local t=$1 w=$2 port path=/ scheme=http
    case "$w" in
        weighted) port=${PORT_W[$t]} ;;
        single90) port=${PORT_S90[$t]} ;;
        h2) port=${PORT_H2[$t]} ;;
        tls) port=${PORT_TLS[$t]} scheme=https ;;
        *) port=${PORT_MAIN[$t]} ;;
    esac
    [ "$w" = big ] && path=$BIG_PATH
    echo "$scheme://127.0.0.1:$port$path"
}
conns_for() {
    case "$1" in c8 | big) echo 8 ;; c1) echo 1 ;; *) echo 64 ;; esac
}
runnable() { # TARGET WORKLOAD
    [ "${STATUS[$1]:-}" = ok ] && applies "$1" "$2" && ! grep -q "^$1	na:$2	" "$FACTS"
}
wait_file() { # FILE PID: poll until FILE exists or PID dies (60 s at most)
    local deadline=$((SECONDS + 60))
    while [ ! -e "$1" ] && [ $SECONDS -lt $deadline ] && kill -0 "$2" 2>/dev/null; do
        sleep 0.02
    done
    [ -e "$1" ]
}
backend_requests() { # PORT -> the backend's request counter
    if [ "$BACKEND_KIND" = nginx ]; then
        curl -s --max-time 2 "http://127.0.0.1:$1/__status" | awk 'NR == 3 { print $3 }'
    else
        curl -s --max-time 2 "http://127.0.0.1:$1/__upstream/stats" |
            sed -n 's/.*"requests": *\([0-9]*\).*/\1/p'
    fi
}

# Other engineers' builds and fuzzers share this machine: before a run, wait (bounded per run
# and in total) until they leave the cores alone. The bg CPU column shows what was left.
QUIET_WAITED=0
wait_quiet() {
    [ "$quiet_secs" -gt 0 ] && [ $QUIET_WAITED -lt $QUIET_BUDGET ] || return 0
    local t0=$SECONDS a b pct
    while :; do
        a=$(procstat snap $$)
        sleep 0.3
        b=$(procstat snap $$)
        pct=$(bg_pct "$a" "$b")
        [ "$pct" -le $QUIET_PCT ] && break
        [ $((SECONDS - t0)) -ge "$quiet_secs" ] && break
        [ $((QUIET_WAITED + SECONDS - t0)) -ge $QUIET_BUDGET ] && break
    done
    QUIET_WAITED=$((QUIET_WAITED + SECONDS - t0))
}

core_ticks() { # -> "busy total" ticks of the proxy's core, then of the load core (/proc/stat)
    awk -v p="cpu$PROXY_CPU" -v l="cpu$LOAD_CPU" '
        $1 == p || $1 == l { t = 0; for (i = 2; i <= 9; i++) t += $i  # guest is in user
                             v[$1] = (t - $5 - $6 - $9) " " t }           # not idle, iowait, steal
        END { print v[p], v[l] }' /proc/stat
}

run_one() { # TARGET WORKLOAD REP
    local t=$1 w=$2 rep=$3 dur=${DUR[$2]} url out=$TMP/run.out pid=${PID[$1]:-}
    local snap0 snap1 idle_pid="" rss_pre="" rss_seq="" rss_idle1k="" rss_settled="" extra=""
    local c0="" c1="" s1="" s2=""
    url=$(url_for "$t" "$w")
    rm -f "$TMP"/idle.ready* "$TMP/rss.max" "$TMP/h2.log" "$TMP/lat.out"
    if [ "$w" = idle-c64 ]; then
        local port=${url#http://127.0.0.1:} ready=$TMP/idle.ready
        port=${port%%/*}
        [ -n "$pid" ] && rss_pre=$(procstat rss "$pid")
        spawn idle taskset -c "$LOAD_CPU" "$PY" "$HERE/idle_conns.py" --port "$port" \
            --count $IDLE_CONNS --ready "$ready" --hold-max $((dur + 120))
        idle_pid=$SPAWNED
        # Phase 1 (sequential), then RSS, then phase 2 (burst), then RSS: see idle_conns.py.
        if wait_file "$ready.seq" "$idle_pid"; then
            [ -n "$pid" ] && rss_seq=$(procstat rss "$pid")
            touch "$ready.go"
            wait_file "$ready" "$idle_pid"
        fi
        if [ ! -e "$ready" ]; then
            log "  $t $w: idle connections failed: $(cat "$ready.err" 2>/dev/null)"
            note "$t $w rep $rep: could not hold $IDLE_CONNS idle connections: $(cat "$ready.err" 2>/dev/null)"
            stop_tree "$idle_pid"
            return
        fi
        [ -n "$pid" ] && rss_idle1k=$(procstat rss "$pid")
        if [ -n "$pid" ] && [ "$rep" = 1 ] && [ "$mode" != quick ]; then
            sleep $SETTLE_S # the measured interval itself: what is kept once the trims ran
            rss_settled=$(procstat rss "$pid")
        fi
    fi
    if [ "$w" = weighted ] || [ "$w" = single90 ]; then
        s1=$(backend_requests "$B1")
        s2=$(backend_requests "$B2")
    fi
    wait_quiet
    local cores0 cores1
    cores0=$(core_ticks)
    snap0=$(procstat snap $$)
    if [ -n "$pid" ]; then
        c0=$(procstat cpu "$pid")
        taskset -c "$LOAD_CPU" "$PY" "$HERE/procstat.py" sample "$TMP/rss.max" "$pid" &
        SAMPLER=$!
    fi
    if [ "$w" = h2 ]; then
        timeout $((dur + 20)) taskset -c "$LOAD_CPU" h2load -t1 -c16 -m10 -D "$dur" \
            "$url" >"$out" 2>&1
    else
        timeout $((dur + 20)) taskset -c "$LOAD_CPU" wrk -t1 -c"$(conns_for "$w")" -d"${dur}s" \
            --latency "$url" >"$out" 2>&1
    fi
    local rc=$?
    snap1=$(procstat snap $$)
    cores1=$(core_ticks)
    if [ -n "$pid" ]; then
        c1=$(procstat cpu "$pid")
        kill -TERM "$SAMPLER" 2>/dev/null
        wait "$SAMPLER" 2>/dev/null
        SAMPLER=""
    fi
    # h2load prints no percentiles; its --log-file has every request's duration, but writing it
    # costs h2load about 1.8 us of the load core per request (10 % of that core, measured by
    # hand), which caps a proxy that is faster than the load core. So req/s and CPU come from
    # the run above, without the log, and p50/p99 from a shorter run with it, just after.
    if [ "$w" = h2 ] && [ $rc = 0 ]; then
        local lat=$((dur / 2))
        [ $lat -ge 1 ] || lat=1
        timeout $((lat + 20)) taskset -c "$LOAD_CPU" h2load -t1 -c16 -m10 -D "$lat" \
            --log-file="$TMP/h2.log" "$url" >"$TMP/lat.out" 2>&1
    fi
    if [ -n "$s1" ] && [ -n "$s2" ]; then
        local e1 e2
        e1=$(backend_requests "$B1")
        e2=$(backend_requests "$B2")
        extra=$(awk -v a=$((e1 - s1)) -v b=$((e2 - s2)) \
            'BEGIN { if (a + b > 0) printf "split b1:b2 %.1f:%.1f", 100 * a / (a + b), 100 * b / (a + b) }')
    fi
    if [ -n "$idle_pid" ]; then
        stop_tree "$idle_pid"
        local open
        open=$(awk '{ print $2 }' "$TMP/idle.ready.done" 2>/dev/null)
        if [ "${open:-?}" != "$IDLE_CONNS" ]; then
            extra="idle conns still open after the run: ${open:-?}/$IDLE_CONNS"
        fi
    fi
    # How busy each core was: a load core near 100 % means the run measured the load side
    # (wrk or h2load plus the backends) as much as the proxy.
    local busy
    busy=$(echo "$cores0 $cores1" | awk '{ if ($6 > $2 && $8 > $4)
        printf "cores busy: proxy %.0f %%, load %.0f %%", 100 * ($5 - $1) / ($6 - $2),
            100 * ($7 - $3) / ($8 - $4) }')
    extra=${extra:+$extra; }$busy
    [ $rc = 0 ] || log "  $t $w: load generator exited $rc: $(tail -n 2 "$out" | tr '\n' ' ')"
    local args=(record "$RESULTS" --target "$t" --workload "$w" --rep "$rep" --out "$out"
        --clktck "$CLKTCK" --snaps "$snap0 $snap1" --extra "$extra")
    if [ "$w" = h2 ]; then
        args+=(--tool h2load --lat-out "$TMP/lat.out" --h2log "$TMP/h2.log")
    else
        args+=(--tool wrk)
    fi
    [ -n "$c0" ] && [ -n "$c1" ] && args+=(--cpu-ticks $((c1 - c0)))
    [ -s "$TMP/rss.max" ] && args+=(--rss-load "$(cat "$TMP/rss.max")")
    [ -n "$rss_idle1k" ] && args+=(--rss-idle1k "$rss_idle1k" --rss-pre "$rss_pre" --rss-seq "$rss_seq")
    [ -n "$rss_settled" ] && args+=(--rss-settled "$rss_settled")
    local line
    line=$("$PY" "$HERE/report.py" "${args[@]}" 2>&1)
    log "  rep $rep $(printf '%-9s %-8s' "$w" "$t") $line"
}

# Warm-up: one short unrecorded run per listener, so first-touch costs (page faults, pools,
# upstream connections) are not in the first repetition. RSS idle was taken before it.
warm=()
for w in "${WORKLOADS[@]}"; do
    case "$w" in
        weighted | h2 | tls) warm+=("$w") ;;
        *) case " ${warm[*]} " in *" c64 "*) ;; *) warm+=(c64) ;; esac ;;
    esac
done
for t in "${TARGETS[@]}"; do
    [ "${STATUS[$t]:-}" = ok ] || continue
    for w in "${warm[@]}"; do
        runnable "$t" "$w" || continue
        if [ "$w" = h2 ]; then
            timeout $((WARMUP_SECS + 15)) taskset -c "$LOAD_CPU" h2load -t1 -c16 -m10 -D $WARMUP_SECS \
                "$(url_for "$t" "$w")" >/dev/null 2>&1
        else
            timeout $((WARMUP_SECS + 15)) taskset -c "$LOAD_CPU" wrk -t1 -c64 -d${WARMUP_SECS}s \
                "$(url_for "$t" "$w")" >/dev/null 2>&1
        fi
    done
done

log "mode $mode: ${reps} rep(s) of [${WORKLOADS[*]}] over [${TARGETS[*]}]"
for ((rep = 1; rep <= reps; rep++)); do
    # Every other repetition takes the targets in reverse, so that what comes first in a
    # workload (just after the quiet wait, or just after another target's load) is not
    # always the same target.
    order=("${TARGETS[@]}")
    if [ $((rep % 2)) = 0 ]; then
        order=()
        for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[i]}"); done
    fi
    for w in "${WORKLOADS[@]}"; do
        for t in "${order[@]}"; do
            runnable "$t" "$w" || continue
            if [ -n "${PID[$t]:-}" ] && ! kill -0 "${PID[$t]}" 2>/dev/null; then
                STATUS[$t]="exited during the run"
                fact "$t" status "exited during the run"
                note "$t exited during the run (before $w, rep $rep): $(tail_log "$t")"
                log "$t EXITED DURING THE RUN: $(tail_log "$t")"
                continue
            fi
            if [ "$w" = weighted ]; then
                # The pair alternates its order between repetitions, so a steady drift does
                # not always favour the same side.
                # The split sits between its two partners, next to each of them.
                first=single last=single90
                if [ $((rep % 2)) = 0 ]; then first=single90 last=single; fi
                ! runnable "$t" "$first" || run_one "$t" "$first" "$rep"
                run_one "$t" weighted "$rep"
                ! runnable "$t" "$last" || run_one "$t" "$last" "$rep"
            else
                run_one "$t" "$w" "$rep"
            fi
        done
    done
done

# ---- syscalls per request ---------------------------------------------------------------------
if [ "$do_strace" = 1 ]; then
    for t in remora haproxy nginx; do
        if ! has_target "$t" || [ "${STATUS[$t]:-}" != ok ]; then
            continue
        fi
        pids=$(procstat tree "${PID[$t]}")
        pargs=()
        for p in $pids; do pargs+=(-p "$p"); done
        sout=$TMP/strace.$t
        timeout $((STRACE_SECS + 60)) strace -c -f -o "$sout" "${pargs[@]}" 2>"$sout.err" &
        spid=$!
        deadline=$((SECONDS + 10))
        n_pids=$(wc -w <<<"$pids")
        while [ $SECONDS -lt $deadline ] && kill -0 "$spid" 2>/dev/null; do
            n_att=$(grep -c attached "$sout.err" 2>/dev/null)
            [ "${n_att:-0}" -ge "$n_pids" ] && break
            sleep 0.05
        done
        timeout $((STRACE_SECS + 20)) taskset -c "$LOAD_CPU" wrk -t1 -c64 -d${STRACE_SECS}s \
            "$(url_for "$t" c64)" >"$TMP/strace.out" 2>&1
        kill -INT "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
        n_req=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$TMP/strace.out")
        if res=$("$PY" "$HERE/report.py" strace "$sout" "${n_req:-0}"); then
            fact "$t" syscalls "$(cut -f1 <<<"$res")"
            fact "$t" syscalls_top "$(cut -f2 <<<"$res")"
            fact "$t" syscalls_requests "$n_req"
            log "  strace $t: $(cut -f1 <<<"$res") syscalls/req ($(cut -f2 <<<"$res"))"
        else
            fact "$t" syscalls_na "strace failed: $(head -n 2 "$sout.err" | tr '\n' ' ')"
        fi
    done
fi

# ---- instructions per request (callgrind) -----------------------------------------------------
# Wall-clock figures drift 15-35 % between runs on this VM; instruction counts do not. Each proxy
# is started again, alone, as a single process under callgrind, with the config file of its timed
# instance (stopped first: its runs are over, and the new one takes the same ports), pinned to the
# proxy core. Per cell: a warm-up, then CG_REQS requests with instrumentation on, then a dump;
# Ir / succeeded requests. Only user-space instructions are counted, not the kernel's.
# --instr-atstart=no rather than --collect-atstart=no: with collection off, `callgrind_control
# -i on` turns instrumentation on but counts nothing (totals: 0).
CG_DIR=$TMP/callgrind
CG_SECS=0
cg_ctl() { # ARGS...: callgrind_control, bounded
    timeout 30 callgrind_control "$@" >>"$CG_DIR/control.log" 2>&1
}
cg_cell() { # TARGET WORKLOAD VGPID: one count, recorded as fact cg:W or cg_na:W
    local t=$1 w=$2 vpid=$3 url args out=$CG_DIR/$1.$2.h2load base=$CG_DIR/$1.out n dump i rc res
    url=$(url_for "$t" "$w")
    if [ "$w" = h2 ]; then args=(-c16 -m10); else args=(--h1 -c64); fi
    timeout 120 taskset -c "$LOAD_CPU" h2load -t1 "${args[@]}" -n $CG_WARMUP "$url" \
        >"$out.warmup" 2>&1
    if ! cg_ctl -z "$vpid" || ! cg_ctl -i on "$vpid"; then
        fact "$t" "cg_na:$w" "n/a (callgrind_control failed: $(tail -n 1 "$CG_DIR/control.log"))"
        return
    fi
    local t0=$SECONDS
    timeout 300 taskset -c "$LOAD_CPU" h2load -t1 "${args[@]}" -n $CG_REQS "$url" >"$out" 2>&1
    rc=$?
    local secs=$((SECONDS - t0))
    n=$(find "$CG_DIR" -name "$t.out.*" | wc -l)
    dump=$base.$((n + 1))
    if ! cg_ctl -i off "$vpid" || ! cg_ctl -d "$vpid"; then
        fact "$t" "cg_na:$w" "n/a (callgrind_control failed: $(tail -n 1 "$CG_DIR/control.log"))"
        return
    fi
    for ((i = 0; i < 200; i++)); do # the dump ends with its totals line
        grep -q '^totals:' "$dump" 2>/dev/null && break
        sleep 0.05
    done
    if [ $rc != 0 ]; then
        fact "$t" "cg_na:$w" "n/a (h2load exited $rc after ${secs}s: $(tail -n 1 "$out" | cut -c1-120))"
    elif res=$("$PY" "$HERE/report.py" callgrind "$dump" "$out"); then
        fact "$t" "cg:$w" "$(cut -f1 <<<"$res")"
        log "  callgrind $t $w: $(cut -f1 <<<"$res") instructions/req ($(cut -f2 <<<"$res") Ir, $(cut -f3 <<<"$res") requests, ${secs}s)"
    else
        fact "$t" "cg_na:$w" "n/a (${res:-no callgrind dump})"
        log "  callgrind $t $w: ${res:-no callgrind dump}"
    fi
}
callgrind_target() { # TARGET
    local t=$1 w cells=() extra=() vpid
    for w in c64 weighted h2 tls; do
        has_workload "$w" && runnable "$t" "$w" && cells+=("$w")
        [ "$w" = weighted ] && has_workload weighted && runnable "$t" single90 && cells+=(single90)
    done
    [ ${#cells[@]} -gt 0 ] || return 0
    # One process: nginx without its master, nghttpx without its worker process.
    case "$t" in
        nginx) extra=(-g "master_process off;") ;;
        nghttpx) extra=(--single-process) ;;
    esac
    local -n cmd=CMD_$t
    stop_tree "${PID[$t]}"
    spawn "$t.callgrind" taskset -c "$PROXY_CPU" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$CG_DIR/$t.out" "${cmd[@]}" "${extra[@]}"
    vpid=$SPAWNED
    for w in "${cells[@]}"; do
        local curl_args=()
        [ "$w" = h2 ] && curl_args=(--http2-prior-knowledge)
        [ "$w" = tls ] && curl_args=(-k)
        if ! READY_SECS=$CG_READY_SECS wait_http "$vpid" "$(url_for "$t" "$w")" "${curl_args[@]}"; then
            fact "$t" "cg_na:$w" "n/a (no 200 under valgrind within ${CG_READY_SECS}s)"
            note "$t under valgrind: no 200 on its $w listener within ${CG_READY_SECS}s: $(tail_log "$t.callgrind")"
            continue
        fi
        cg_cell "$t" "$w" "$vpid"
    done
    stop_tree "$vpid"
}
if [ "$do_callgrind" = 1 ]; then
    mkdir -p "$CG_DIR"
    cg_t0=$SECONDS
    for t in remora haproxy nginx nghttpx; do
        has_target "$t" && [ "${STATUS[$t]:-}" = ok ] && callgrind_target "$t"
    done
    CG_SECS=$((SECONDS - cg_t0))
    log "callgrind phase: ${CG_SECS}s"
fi

# ---- report -----------------------------------------------------------------------------------
ver() { "$@" 2>&1 | head -n 1; }
META=$TMP/meta.txt
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine=$(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -n)"
    echo "kernel=$(uname -sr)"
    echo "pingpong=${PP_SAME} µs on one core, ${PP_CROSS} µs across cores 0 and 1 (one-byte round trip between two processes over a socketpair, python, measured at start; before the runs the machine had ${BG_START}% of a core busy)"
    echo "versions=haproxy $(ver haproxy -v | awk '{ print $3 }'); nginx $(ver nginx -v | sed 's|.*nginx/||'); wrk $(ver wrk -v | awk '{ print $2 }'); h2load $(ver h2load --version | awk '{ print $2 }'); nghttpx $(ver nghttpx --version | awk '{ print $2 }'); strace $(ver strace -V | awk '{ print $4 }'); valgrind $(command -v valgrind >/dev/null && ver valgrind --version | sed 's/^valgrind-//' || echo -)"
    echo "remora=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown) ($BUILD/remora: ${STATUS[remora]:-not selected})"
    echo "mode=$mode"
    echo "reps=$reps"
    echo "idle_conns=$IDLE_CONNS"
    echo "settle_s=$SETTLE_S"
    echo "backends=$BACKEND_DESC; 127.0.0.1 only"
    echo "pinning=proxy on core $PROXY_CPU (taskset, 1 worker/thread); wrk/h2load, backends, idle-connection helper and RSS sampler on core $LOAD_CPU"
    echo "targets=$(IFS=,; echo "${TARGETS[*]}")"
    echo "workloads=$(IFS=,; echo "${WORKLOADS[*]}")"
    d=""
    for w in "${WORKLOADS[@]}"; do d+="$w:${DUR[$w]},"; done
    echo "durations=$d"
    echo "strace_duration=$STRACE_SECS"
    echo "proxy_cpu=$PROXY_CPU"
    echo "callgrind_reqs=$CG_REQS"
    echo "callgrind_warmup=$CG_WARMUP"
    echo "callgrind_secs=$CG_SECS"
    echo "quiet=waited ${QUIET_WAITED}s in all for other processes to drop under ${QUIET_PCT}% of a core (at most ${quiet_secs}s per run, ${QUIET_BUDGET}s in all)"
    echo "notes_file=$NOTES_FILE"
} >"$META"
"$PY" "$HERE/report.py" render "$RESULTS" "$FACTS" "$META" >"$TMP/report.md" || die "report failed"
mkdir -p "$(dirname "$out_md")"
cp "$TMP/report.md" "$out_md"
cat "$TMP/report.md"
log "done in $((SECONDS - START_T0))s (${QUIET_WAITED}s of it waiting for a quiet machine); report written to $out_md"

failed=()
for t in "${TARGETS[@]}"; do
    [ "${STATUS[$t]:-ok}" = ok ] || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'bench: error: failed to start or exited: %s (details in the report notes above)\n' "${failed[*]}" >&2
    exit 2
fi
exit 0
