#!/usr/bin/env bash
# `make demo`: remora on 127.0.0.1:10000 in front of two test upstreams, admin on
# 127.0.0.1:9901. Prints curl commands to try; Ctrl-C stops everything it started.
set -euo pipefail
B=${1:-build}
LISTEN_PORT=${DEMO_PORT:-10000}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9901}
dir=$(mktemp -d /tmp/remora-demo.XXXXXX)
pids=()
cleanup() {
    trap - INT TERM EXIT
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
    echo
    echo "demo stopped"
}
trap cleanup INT TERM EXIT

for port in "$LISTEN_PORT" "$ADMIN_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; set DEMO_PORT / DEMO_ADMIN_PORT" >&2
        exit 1
    fi
done

wait_file() {
    for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.05; done
    echo "timed out waiting for $1" >&2; exit 1
}

"$B/remora-test-upstream" --listen 127.0.0.1:0 --name blue --port-file "$dir/blue.port" >/dev/null &
pids+=($!)
"$B/remora-test-upstream" --listen 127.0.0.1:0 --name green --port-file "$dir/green.port" >/dev/null &
pids+=($!)
wait_file "$dir/blue.port"
wait_file "$dir/green.port"
BLUE=$(cat "$dir/blue.port")
GREEN=$(cat "$dir/green.port")

cat > "$dir/envoy.yaml" <<YAML
node: {id: demo-node, cluster: demo}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN_PORT}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: $LISTEN_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          use_remote_address: true  # an edge listener: the peer is the client
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
          route_config:
            name: local
            virtual_hosts:
            - name: demo
              domains: ["*"]
              routes:
              - match: {prefix: "/blue/"}
                route: {cluster: blue, prefix_rewrite: "/"}
              - match: {path: "/hello"}
                direct_response: {status: 200, body: {inline_string: "hello from remora\n"}}
              - match: {prefix: "/"}
                route: {cluster: both}
                response_headers_to_add:
                - header: {key: x-demo, value: remora}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: blue
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: blue
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BLUE}}}
  - name: both
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: both
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $BLUE}}}
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $GREEN}}}
YAML

"$B/remora" -c "$dir/envoy.yaml" --concurrency 2 -l info &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null || { echo "remora did not become ready" >&2; exit 1; }

cat <<MSG

remora is running: listener 127.0.0.1:$LISTEN_PORT, admin 127.0.0.1:$ADMIN_PORT
config: $dir/envoy.yaml (upstreams: blue on $BLUE, green on $GREEN)

Try:
  curl -i http://127.0.0.1:$LISTEN_PORT/            # round robin over blue and green
  curl -i http://127.0.0.1:$LISTEN_PORT/blue/x      # prefix_rewrite to blue
  curl -i http://127.0.0.1:$LISTEN_PORT/hello       # direct_response
  curl -i http://127.0.0.1:$LISTEN_PORT/ -H 'x-upstream-status: 503'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats | grep -E 'downstream_rq|upstream_rq'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | head
  curl -s http://127.0.0.1:$ADMIN_PORT/clusters
  curl -s http://127.0.0.1:$ADMIN_PORT/server_info

Access log lines appear below. Ctrl-C stops everything.
MSG
wait "${pids[-1]}"
