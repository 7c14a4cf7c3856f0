"""ADS helpers for the integration tests: a test ADS server (tests/grpc/ads_server.js, real
@grpc/grpc-js serving the repo's own protos) and a bootstrap whose routes come over ADS.

    start_ads_server(ctx, port=0, host=None)  -> AdsServer .port .ctl_port (host: 127.0.0.1)
        .set(type_url, version, resources, push=True)   resources: [{"json": {...}}, ...]
        .requests()                    -> every DiscoveryRequest received, in order, as dicts
                                          ({"stream", "seq", "version_info", "response_nonce",
                                          "resource_names", "type_url", "node",
                                          "error_detail"})
        .wait_request(pred, timeout)   -> the first request satisfying pred
        .drop()                        ends every open stream (status OK)
    ads_bootstrap(clusters, ads_port, route_config_name="r1", initial_fetch_timeout=None,
                  cds=None)                  cds: a cds_config ({"ads": {}, ...}) or None
    static_cluster(name, ports), eds_cluster(name, service_name=None), assignment(name, ports)
                                       -> resources' JSON for AdsServer.set (Cluster, CLA)

Not a test file (run.py collects only test_*.py)."""

import json

from grpcutil import GRPC_DIR, need_node
from lib import Proc, TestFailure, bootstrap_dict, http_request, socket_address, wait_for

RC_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CL_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LST_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
HPO_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class AdsServer(Proc):
    """A running tests/grpc/ads_server.js."""

    port = None
    ctl_port = None
    host = "127.0.0.1"  # where both its ports listen

    def _ctl(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"content-type": "application/json"} if data is not None else None
        r = http_request(self.ctl_port, method, path, hdrs, data, host=self.host)
        if r.status != 200:
            raise TestFailure(f"{self.name}: {method} {path} answered {r.status}: {r.text}")
        return r.json()

    def set(self, type_url, version, resources, push=True):
        return self._ctl("POST", "/set", {"type_url": type_url, "version": version,
                                          "resources": resources, "push": push})

    def set_routes(self, version, route_configs, push=True):
        return self.set(RC_TYPE, version, [{"json": rc} for rc in route_configs], push)

    def set_clusters(self, version, clusters, push=True):
        return self.set(CL_TYPE, version, [{"json": c} for c in clusters], push)

    def set_endpoints(self, version, assignments, push=True):
        return self.set(CLA_TYPE, version, [{"json": a} for a in assignments], push)

    def set_listeners(self, version, listeners, push=True):
        return self.set(LST_TYPE, version, [{"json": lst} for lst in listeners], push)

    def requests(self):
        return self._ctl("GET", "/requests")["requests"]

    def info(self):
        return self._ctl("GET", "/requests")

    def wait_request(self, pred, timeout=5.0, what="a DiscoveryRequest"):
        def find():
            for rq in self.requests():
                if pred(rq):
                    return rq
            return None
        return wait_for(find, timeout, what)

    def drop(self):
        return self._ctl("POST", "/drop", {})


def start_ads_server(ctx, port=0, name="ads", timeout=10.0, host=None):
    node = need_node()
    port_file = ctx.tmp / f"{name}.port"
    if port_file.exists():
        port_file.unlink()
    argv = [node, GRPC_DIR / "ads_server.js", "--port-file", port_file]
    if port:
        argv += ["--port", str(port)]
    if host is not None:
        argv += ["--host", host]
    p = ctx.spawn(name, argv, managed=True, cls=AdsServer)
    if host is not None:
        p.host = host

    def ready():
        p._check_alive()
        text = port_file.read_text() if port_file.exists() else ""
        return text.endswith("\n") and json.loads(text)

    info = wait_for(ready, timeout, f"ADS server {name} port file")
    p.port, p.ctl_port = info["port"], info["ctl_port"]
    return p


def route_config(name, routes, domains=("*",)):
    return {"name": name,
            "virtual_hosts": [{"name": "vh", "domains": list(domains), "routes": routes}]}


def to(cluster, prefix="/"):
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster}}


def weighted(wa, wb, prefix="/"):
    return {"match": {"prefix": prefix},
            "route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": wa},
                                                         {"name": "b", "weight": wb}]}}}


def _lb_endpoints(ports):
    return [{"lb_endpoints": [{"endpoint": {"address": socket_address(p)}} for p in ports]}]


def static_cluster(name, ports):
    """A STATIC Cluster resource (JSON, as ads_server.js encodes it)."""
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": _lb_endpoints(ports)}}


def eds_cluster(name, service_name=None, fetch_timeout=None):
    """An EDS Cluster resource whose endpoints come over ADS."""
    cs = {"ads": {}, "resource_api_version": "V3"}
    if fetch_timeout is not None:
        cs["initial_fetch_timeout"] = fetch_timeout
    ec = {"eds_config": cs}
    if service_name is not None:
        ec["service_name"] = service_name
    return {"name": name, "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": ec}


def assignment(name, ports):
    """A ClusterLoadAssignment resource."""
    return {"cluster_name": name, "endpoints": _lb_endpoints(ports)}


def ads_bootstrap(clusters, ads_port, route_config_name="r1", initial_fetch_timeout=None,
                  node=None, ads_extra=None, cds=None):
    """A bootstrap with one HTTP listener whose routes come over ADS (rds with ads {}), the
    ``clusters`` ({name: [port]}) and an HTTP/2 cluster xds_cluster to 127.0.0.1:ads_port."""
    d = bootstrap_dict(clusters=clusters, connect_timeout="0.5s")
    hcm = d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["route_config"]
    cs = {"ads": {}, "resource_api_version": "V3"}
    if initial_fetch_timeout is not None:
        cs["initial_fetch_timeout"] = initial_fetch_timeout
    hcm["rds"] = {"route_config_name": route_config_name, "config_source": cs}
    d["static_resources"]["clusters"].append({
        "name": "xds_cluster",
        "type": "STATIC",
        "connect_timeout": "0.5s",
        "typed_extension_protocol_options": {HPO_KEY: {
            "@type": HPO_TYPE,
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(ads_port)}}]}]},
    })
    ads = {"api_type": "GRPC", "transport_api_version": "V3",
           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
           "set_node_on_first_message_only": True}
    ads.update(ads_extra or {})
    d["dynamic_resources"] = {"ads_config": ads}
    if cds is not None:
        d["dynamic_resources"]["cds_config"] = cds
    d["node"] = node or {"id": "mesh/m/virtualNode/web", "cluster": "web",
                         "locality": {"zone": "z1"}, "metadata": {"app": "web"}}
    return d
