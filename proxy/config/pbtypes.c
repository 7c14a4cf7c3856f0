/* pbtypes: the const table of compiled message types, for Any resolution (see pbtypes.h). It
 * lists every top-level message of the xds/proto/ subset; nested messages and map entries are
 * never packed into an Any on their own. Lookup is a linear scan: it runs at config time only,
 * over about sixty names. */
#include "proxy/config/pbtypes.h"

#include <string.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/circuit_breaker.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/core/v3/grpc_method_list.pb-c.h"
#include "envoy/config/core/v3/grpc_service.pb-c.h"
#include "envoy/config/core/v3/health_check.pb-c.h"
#include "envoy/config/core/v3/protocol.pb-c.h"
#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint_components.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/config/metrics/v3/stats.pb-c.h"
#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/config/trace/v3/http_tracer.pb-c.h"
#include "envoy/config/trace/v3/xray.pb-c.h"
#include "envoy/config/trace/v3/zipkin.pb-c.h"
#include "envoy/type/tracing/v3/custom_tag.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/filters/listener/original_dst/v3/original_dst.pb-c.h"
#include "envoy/extensions/filters/listener/proxy_protocol/v3/proxy_protocol.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"
#include "envoy/config/common/mutation_rules/v3/mutation_rules.pb-c.h"
#include "envoy/extensions/filters/common/fault/v3/fault.pb-c.h"
#include "envoy/extensions/filters/http/buffer/v3/buffer.pb-c.h"
#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "envoy/extensions/filters/http/grpc_stats/v3/config.pb-c.h"
#include "envoy/extensions/filters/http/header_mutation/v3/header_mutation.pb-c.h"
#include "envoy/extensions/filters/http/health_check/v3/health_check.pb-c.h"
#include "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.pb-c.h"
#include "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "envoy/type/matcher/v3/path.pb-c.h"
#include "envoy/type/matcher/v3/regex.pb-c.h"
#include "envoy/type/matcher/v3/string.pb-c.h"
#include "envoy/type/v3/percent.pb-c.h"
#include "envoy/type/v3/http_status.pb-c.h"
#include "envoy/type/v3/range.pb-c.h"
#include "envoy/type/v3/token_bucket.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "google/rpc/status.pb-c.h"

static const ProtobufCMessageDescriptor *const types[] = {
    /* bootstrap, listener, cluster, endpoint, route: the xDS resource types */
    &envoy__config__bootstrap__v3__bootstrap__descriptor,
    &envoy__config__bootstrap__v3__admin__descriptor,
    /* stats sinks (build_stats.c) */
    &envoy__config__metrics__v3__statsd_sink__descriptor,
    &envoy__config__metrics__v3__dog_statsd_sink__descriptor,
    &envoy__config__listener__v3__listener__descriptor,
    &envoy__config__listener__v3__api_listener__descriptor,
    &envoy__config__listener__v3__filter__descriptor,
    &envoy__config__listener__v3__filter_chain__descriptor,
    &envoy__config__listener__v3__filter_chain_match__descriptor,
    &envoy__config__listener__v3__listener_filter__descriptor,
    &envoy__config__cluster__v3__cluster__descriptor,
    &envoy__config__cluster__v3__circuit_breakers__descriptor,
    &envoy__config__cluster__v3__outlier_detection__descriptor,
    &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    &envoy__config__endpoint__v3__endpoint__descriptor,
    &envoy__config__endpoint__v3__lb_endpoint__descriptor,
    &envoy__config__endpoint__v3__locality_lb_endpoints__descriptor,
    &envoy__config__route__v3__route_configuration__descriptor,
    &envoy__config__route__v3__vhds__descriptor,
    &envoy__config__route__v3__virtual_host__descriptor,
    &envoy__config__route__v3__route__descriptor,
    &envoy__config__route__v3__weighted_cluster__descriptor,
    &envoy__config__route__v3__route_match__descriptor,
    &envoy__config__route__v3__cors_policy__descriptor,
    &envoy__config__route__v3__route_action__descriptor,
    &envoy__config__route__v3__retry_policy__descriptor,
    &envoy__config__route__v3__redirect_action__descriptor,
    &envoy__config__route__v3__direct_response_action__descriptor,
    &envoy__config__route__v3__header_matcher__descriptor,
    &envoy__config__route__v3__query_parameter_matcher__descriptor,
    /* extensions: the types that travel in typed_config */
    &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
    &envoy__extensions__filters__network__http_connection_manager__v3__rds__descriptor,
    &envoy__extensions__filters__network__http_connection_manager__v3__scoped_routes__descriptor,
    &envoy__extensions__filters__network__http_connection_manager__v3__http_filter__descriptor,
    &envoy__extensions__filters__http__router__v3__router__descriptor,
    &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
    &envoy__extensions__filters__listener__original_dst__v3__original_dst__descriptor,
    &envoy__extensions__filters__listener__tls_inspector__v3__tls_inspector__descriptor,
    &envoy__extensions__filters__listener__proxy_protocol__v3__proxy_protocol__descriptor,
    /* HTTP filters (filters/registry.c) */
    &envoy__extensions__filters__http__fault__v3__fault_abort__descriptor,
    &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
    &envoy__extensions__filters__common__fault__v3__fault_delay__descriptor,
    &envoy__extensions__filters__http__local_ratelimit__v3__local_rate_limit__descriptor,
    &envoy__extensions__filters__http__header_mutation__v3__mutations__descriptor,
    &envoy__extensions__filters__http__header_mutation__v3__header_mutation_per_route__descriptor,
    &envoy__extensions__filters__http__header_mutation__v3__header_mutation__descriptor,
    &envoy__extensions__filters__http__grpc_stats__v3__filter_config__descriptor,
    &envoy__extensions__filters__http__buffer__v3__buffer__descriptor,
    &envoy__extensions__filters__http__buffer__v3__buffer_per_route__descriptor,
    &envoy__extensions__filters__http__health_check__v3__health_check__descriptor,
    &envoy__extensions__filters__http__health_check__v3__health_check__cluster_min_healthy_percentages_entry__descriptor,
    &envoy__extensions__filters__http__cors__v3__cors__descriptor,
    &envoy__extensions__filters__http__cors__v3__cors_policy__descriptor,
    &envoy__config__core__v3__grpc_method_list__descriptor,
    &envoy__config__common__mutation_rules__v3__header_mutation__descriptor,
    &envoy__config__accesslog__v3__access_log__descriptor,
    &envoy__extensions__access_loggers__file__v3__file_access_log__descriptor,
    &envoy__extensions__access_loggers__stream__v3__stdout_access_log__descriptor,
    &envoy__extensions__access_loggers__stream__v3__stderr_access_log__descriptor,
    &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor,
    &envoy__extensions__retry__host__previous_hosts__v3__previous_hosts_predicate__descriptor,
    /* transport sockets (TransportSocket.typed_config) and SDS secrets */
    &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
    &envoy__extensions__transport_sockets__raw_buffer__v3__raw_buffer__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__tls_certificate__descriptor,
    /* core */
    &envoy__config__core__v3__locality__descriptor,
    &envoy__config__core__v3__node__descriptor,
    &envoy__config__core__v3__runtime_double__descriptor,
    &envoy__config__core__v3__runtime_fractional_percent__descriptor,
    &envoy__config__core__v3__header_value__descriptor,
    &envoy__config__core__v3__header_value_option__descriptor,
    &envoy__config__core__v3__data_source__descriptor,
    &envoy__config__core__v3__transport_socket__descriptor,
    &envoy__config__core__v3__pipe__descriptor,
    &envoy__config__core__v3__socket_address__descriptor,
    &envoy__config__core__v3__address__descriptor,
    &envoy__config__core__v3__cidr_range__descriptor,
    &envoy__config__core__v3__http_protocol_options__descriptor,
    &envoy__config__core__v3__http1_protocol_options__descriptor,
    &envoy__config__core__v3__http2_protocol_options__descriptor,
    &envoy__config__core__v3__grpc_service__descriptor,
    &envoy__config__core__v3__api_config_source__descriptor,
    &envoy__config__core__v3__aggregated_config_source__descriptor,
    &envoy__config__core__v3__self_config_source__descriptor,
    &envoy__config__core__v3__config_source__descriptor,
    &envoy__config__core__v3__path_config_source__descriptor,
    &envoy__config__core__v3__watched_directory__descriptor,
    &envoy__config__core__v3__health_check__descriptor,
    &envoy__config__core__v3__substitution_format_string__descriptor,
    &envoy__type__matcher__v3__regex_matcher__descriptor,
    &envoy__type__matcher__v3__regex_match_and_substitute__descriptor,
    &envoy__type__matcher__v3__string_matcher__descriptor,
    &envoy__type__matcher__v3__path_matcher__descriptor,
    /* RBAC (filters/rbac) */
    &envoy__config__rbac__v3__rbac__descriptor,
    &envoy__config__rbac__v3__policy__descriptor,
    &envoy__config__rbac__v3__permission__descriptor,
    &envoy__config__rbac__v3__principal__descriptor,
    &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
    &envoy__extensions__filters__http__rbac__v3__rbacper_route__descriptor,
    &envoy__extensions__filters__network__rbac__v3__rbac__descriptor,
    &envoy__type__v3__int64_range__descriptor,
    &envoy__type__v3__fractional_percent__descriptor,
    &envoy__type__v3__token_bucket__descriptor,
    &envoy__type__v3__http_status__descriptor,
    &envoy__type__v3__int32_range__descriptor,
    &envoy__type__v3__percent__descriptor,
    &envoy__config__trace__v3__tracing__descriptor,
    &envoy__config__trace__v3__zipkin_config__descriptor,
    &envoy__config__trace__v3__xray_config__descriptor,
    &envoy__type__tracing__v3__custom_tag__descriptor,
    /* well-known types */
    &google__protobuf__any__descriptor,
    &google__protobuf__duration__descriptor,
    &google__protobuf__struct__descriptor,
    &google__protobuf__value__descriptor,
    &google__protobuf__list_value__descriptor,
    &google__protobuf__double_value__descriptor,
    &google__protobuf__float_value__descriptor,
    &google__protobuf__int64_value__descriptor,
    &google__protobuf__uint64_value__descriptor,
    &google__protobuf__int32_value__descriptor,
    &google__protobuf__uint32_value__descriptor,
    &google__protobuf__bool_value__descriptor,
    &google__protobuf__string_value__descriptor,
    &google__protobuf__bytes_value__descriptor,
    &google__rpc__status__descriptor,
    &envoy__service__discovery__v3__discovery_response__descriptor,
};

const ProtobufCMessageDescriptor *pbtypes_find(const char *full_name, size_t len)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        const char *n = types[i]->name;
        if (strlen(n) == len && memcmp(n, full_name, len) == 0) {
            return types[i];
        }
    }
    return NULL;
}

size_t pbtypes_count(void)
{
    return sizeof(types) / sizeof(types[0]);
}

const ProtobufCMessageDescriptor *pbtypes_at(size_t i)
{
    return i < pbtypes_count() ? types[i] : NULL;
}
