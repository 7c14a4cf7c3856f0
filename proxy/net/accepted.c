/* accepted: the local and original destination addresses of an accepted socket. */
#include "proxy/net/accepted.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>, whose other
 * definitions clash with glibc's. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

bool sockaddr_ip_set(union sockaddr_ip *out, const struct sockaddr *sa)
{
    memset(out, 0, sizeof(*out));
    if (sa != NULL && sa->sa_family == AF_INET) {
        out->in = *(const struct sockaddr_in *)sa;
        return true;
    }
    if (sa != NULL && sa->sa_family == AF_INET6) {
        out->in6 = *(const struct sockaddr_in6 *)sa;
        return true;
    }
    out->sa.sa_family = AF_UNSPEC;
    return false;
}

bool accepted_local_addr(int fd, bool original_dst, struct sockaddr_storage *out)
{
    socklen_t len = sizeof(*out);
    if (getsockname(fd, (struct sockaddr *)out, &len) != 0) {
        return false;
    }
    if (!original_dst) {
        return true;
    }
    /* An IPv4 connection on a dual-stack IPv6 socket was tracked (and redirected) as IPv4. */
    bool v4 = out->ss_family == AF_INET ||
              (out->ss_family == AF_INET6 &&
               IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)out)->sin6_addr));
    struct sockaddr_storage od;
    socklen_t olen = v4 ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    int rc = v4 ? getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &od, &olen)
                : getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &od, &olen);
    if (rc == 0 && (od.ss_family == AF_INET || od.ss_family == AF_INET6)) {
        memcpy(out, &od, olen);
    }
    return true;
}

void accepted_addr_text(const struct sockaddr *sa, char ip[48], uint16_t *port)
{
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, 48);
        *port = ntohs(in->sin_port);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, 48);
        *port = ntohs(in6->sin6_port);
    } else {
        strcpy(ip, "unknown");
        *port = 0;
    }
}

size_t sockaddr_text(const struct sockaddr *sa, char out[SOCKADDR_TEXT_MAX])
{
    char ip[48];
    uint16_t port;
    accepted_addr_text(sa, ip, &port);
    int n = snprintf(out, SOCKADDR_TEXT_MAX,
                     sa != NULL && sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
    return n > 0 ? (size_t)n : 0;
}
