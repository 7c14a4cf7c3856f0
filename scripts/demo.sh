#!/usr/bin/env bash
# `make demo`: remora on 127.0.0.1:10000 in front of two test upstreams, admin on
# 127.0.0.1:9901; and a small mesh: remora-xds (the App Mesh API on 127.0.0.1:9080, xDS on a
# free port) holding a mesh made through its API, and a second remora on 127.0.0.1:10001 as that
# mesh's sidecar, taking its clusters, endpoints and routes from remora-xds over ADS. Prints curl
# commands to try; Ctrl-C stops everything it started.
set -euo pipefail
B=${1:-build}
LISTEN_PORT=${DEMO_PORT:-10000}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9901}
MESH_PORT=${DEMO_MESH_PORT:-10001}
MESH_ADMIN_PORT=${DEMO_MESH_ADMIN_PORT:-9902}
API_PORT=${DEMO_API_PORT:-9080}
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

for port in "$LISTEN_PORT" "$ADMIN_PORT" "$MESH_PORT" "$MESH_ADMIN_PORT" "$API_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; set DEMO_PORT / DEMO_ADMIN_PORT / DEMO_MESH_PORT /" \
            "DEMO_MESH_ADMIN_PORT / DEMO_API_PORT" >&2
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

# ---- the mesh: remora-xds and a remora sidecar fed over ADS ----
"$B/remora-xds" --db "$dir/mesh.db" --listen "127.0.0.1:$API_PORT" --xds-listen 127.0.0.1:0 \
    --xds-port-file "$dir/xds.port" -l warning &
pids+=($!)
wait_file "$dir/xds.port"
XDS_PORT=$(cat "$dir/xds.port")
API="http://127.0.0.1:$API_PORT/v20190125/meshes"
put() { # PATH JSON: one App Mesh API call (what `aws appmesh ... --endpoint-url` sends)
    curl -fsS -X PUT -H 'content-type: application/json' --data "$2" "$API$1" >/dev/null ||
        { echo "App Mesh API call PUT $1 failed" >&2; exit 1; }
}
put "" '{"meshName": "demo", "spec": {"egressFilter": {"type": "DROP_ALL"}}}'
for n in blue green; do
    port=$BLUE
    [ "$n" = green ] && port=$GREEN
    put /demo/virtualNodes '{"virtualNodeName": "'$n'", "spec": {"listeners": [{"portMapping":
        {"port": '$port', "protocol": "http"}}], "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}}'
done
put /demo/virtualRouters '{"virtualRouterName": "color-router", "spec": {"listeners":
    [{"portMapping": {"port": 8080, "protocol": "http"}}]}}'
ROUTE_90_10='{"priority": 0, "httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets":
    [{"virtualNode": "blue", "weight": 90}, {"virtualNode": "green", "weight": 10}]}}}'
put /demo/virtualRouter/color-router/routes '{"routeName": "color-route", "spec": '"$ROUTE_90_10"'}'
put /demo/virtualServices '{"virtualServiceName": "color.demo.local", "spec": {"provider":
    {"virtualRouter": {"virtualRouterName": "color-router"}}}}'
put /demo/virtualNodes '{"virtualNodeName": "front", "spec": {"backends": [{"virtualService":
    {"virtualServiceName": "color.demo.local"}}], "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}}'

cat > "$dir/sidecar.yaml" <<YAML
# The sidecar of virtual node "front": clusters, endpoints and routes over ADS from remora-xds
# (examples/ads_cds.yaml explains each part). The listener is static: remora takes no LDS yet.
node: {id: mesh/demo/virtualNode/front, cluster: front}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $MESH_ADMIN_PORT}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]
    set_node_on_first_message_only: true
  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 10s}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $XDS_PORT}}}
  listeners:
  - name: egress_8080
    address: {socket_address: {address: 127.0.0.1, port_value: $MESH_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: egress
          rds:
            route_config_name: rds_egress_http_8080
            config_source: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 10s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
YAML
"$B/remora" -c "$dir/sidecar.yaml" --concurrency 1 -l warning &
pids+=($!)
for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$MESH_ADMIN_PORT/ready" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -fs "http://127.0.0.1:$MESH_ADMIN_PORT/ready" >/dev/null ||
    { echo "the mesh sidecar did not become ready" >&2; exit 1; }

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

The mesh: remora-xds serves the App Mesh API on 127.0.0.1:$API_PORT (mesh "demo": virtual
nodes blue and green, router color-router with a 90/10 route, service color.demo.local, node
front) and xDS on 127.0.0.1:$XDS_PORT; a second remora, front's sidecar, listens on
127.0.0.1:$MESH_PORT (admin $MESH_ADMIN_PORT) with its clusters, endpoints and routes from it:
  for i in \$(seq 20); do curl -s -H 'host: color.demo.local' http://127.0.0.1:$MESH_PORT/; done | sort | uniq -c
  curl -s -X PUT -H 'content-type: application/json' $API/demo/virtualRouter/color-router/routes/color-route \\
    -d '{"spec": {"priority": 0, "httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets":
        [{"virtualNode": "blue", "weight": 0}, {"virtualNode": "green", "weight": 100}]}}}}'
  # ...and the sidecar sends everything to green within a moment; the AWS CLI works too:
  # aws appmesh list-virtual-nodes --mesh-name demo --endpoint-url http://127.0.0.1:$API_PORT
  curl -s http://127.0.0.1:$MESH_ADMIN_PORT/clusters | grep added_via_api
  curl -s http://127.0.0.1:$MESH_ADMIN_PORT/stats | grep -E 'control_plane|cds\.|rds\.'

Access log lines appear below. Ctrl-C stops everything.
MSG
# Until remora exits, or whoever started us does: `timeout make demo` signals make alone, and
# this script, left behind, would keep everything running.
parent=$PPID
while kill -0 "${pids[2]}" 2>/dev/null && kill -0 "$parent" 2>/dev/null; do
    sleep 1
done
