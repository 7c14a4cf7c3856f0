/* trust: the pieces of the connection manager's trust model (Envoy's
 * ConnectionManagerUtility::mutateRequestHeaders) that are pure text work: parsing an IP address
 * out of an x-forwarded-for entry, Envoy's default internal address ranges, and picking an
 * x-forwarded-for entry counted from the right. stream.c combines them with
 * use_remote_address, xff_num_trusted_hops and skip_xff_append.
 *
 * Nothing here allocates; every function is safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/str.h"

/* An IPv4 or IPv6 address in network byte order (IPv4: the first 4 bytes). */
struct trust_ip {
    uint8_t b[16];
    bool v6;
};

/* Parses `s` as a bare IPv4 (dotted quad) or IPv6 address: no port, brackets or zone.
 * Returns false when it is not one. */
bool trust_ip_parse(struct str s, struct trust_ip *out);

/* Envoy's default internal ranges: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 127.0.0.0/8,
 * ::1 and fd00::/8, and the IPv4 ones in their IPv4-mapped IPv6 form (::ffff:a.b.c.d).
 * (Envoy's own check counts only 127.0.0.1 of 127.0.0.0/8, and not the mapped forms.) */
bool trust_ip_is_internal(const struct trust_ip *a);

/* trust_ip_parse then trust_ip_is_internal; false for text that is no address. */
bool trust_text_is_internal(struct str s);

/* The x-forwarded-for entry `skip` places from the right of `xff` (0: the last one), without
 * its surrounding whitespace, when it parses as an IP address (Envoy's getLastAddressFromXFF).
 * `*only` tells whether it is the only entry (skip 0 and no comma). Returns false when there
 * are not that many entries or the entry is not an address. */
bool trust_xff_entry(struct str xff, uint32_t skip, struct str *entry, bool *only);
