/* Transparent capture of connections to cluster IPs (flow F1).
 *
 * With capture.enabled, edgemesh owns one nat chain, EM_CAPTURE_CHAIN, jumped
 * to from OUTPUT (apps on this node) and PREROUTING (containers behind a
 * bridge) by a rule "-p tcp -j EDGEMESH" inserted first in each hook. The
 * chain holds, in this order:
 *   1. "-m mark --mark <capture.mark> -j RETURN" (edgemesh's own dials),
 *   2. "-d <cidr> -j RETURN" for each capture.exclude_cidrs entry,
 *   3. "-p tcp --dport <port> -j RETURN" for each capture.exclude_ports entry,
 *   4. "-d <cidr> -p tcp -j REDIRECT --to-ports <capture.port>" for each
 *      capture.service_cidrs entry.
 * IPv4 CIDRs go to iptables, IPv6 CIDRs to ip6tables; a family without
 * service CIDRs gets no rules and its tools are only asked to clean up.
 *
 * edgemesh's own traffic is exempted by its socket mark: every upstream and
 * tunnel socket the engine dials carries SO_MARK capture.mark, and rule 1
 * returns it before any REDIRECT. An endpoint or node address inside a
 * service CIDR therefore cannot make edgemesh connect to itself. (A uid
 * match would only work in OUTPUT and needs the owner module.)
 *
 * REDIRECT sends OUTPUT traffic to the loopback address and PREROUTING traffic
 * to the primary address of the incoming interface, so the capture listener
 * must be bound to the wildcard address of its family to see both.
 *
 * The tools (iptables-save, iptables-restore and the ip6tables twins) are run
 * as child processes, found through PATH and then /usr/sbin and /sbin, each
 * bounded by EM_CAPTURE_TIMEOUT_MS; a failure is logged with the tool's
 * stderr. These functions block and are for start-up and exit only, never a
 * worker's loop. They need CAP_NET_ADMIN. Not thread-safe against each other
 * (one caller, the daemon's main thread).
 */
#ifndef EM_ENGINE_CAPTURE_H
#define EM_ENGINE_CAPTURE_H

#include <stddef.h>

#include "proto/em.h"
#include "store/config.h"

#define EM_CAPTURE_CHAIN      "EDGEMESH"
#define EM_CAPTURE_TIMEOUT_MS 10000

/* Writes into <buf> (<len> bytes, NUL-terminated) the iptables-restore input
 * for a fresh install of <family> (AF_INET or AF_INET6) from <cfg>'s capture
 * section: the nat table, the EM_CAPTURE_CHAIN declaration (which also
 * flushes a chain left by an earlier run, under --noflush), the rules in the
 * order above, one jump inserted first in OUTPUT and in PREROUTING, COMMIT.
 * Only CIDRs of <family> are used; exclude_ports apply to both families.
 * capture.enabled is not looked at. Pure: no I/O.
 * Returns the text's length (0, with <buf> "" if it fits, when <cfg> has no
 * service CIDR of <family>), -EINVAL for a bad <family> or capture.port 0,
 * -ENOSPC when <len> is too small. */
int em_capture_rules(const struct em_config *cfg, int family, char *buf, size_t len);

/* Installs the capture rules of <cfg> for every family that has service
 * CIDRs, each family in one iptables-restore --noflush transaction so that
 * other chains of the nat table are left alone and traffic is never
 * uncaptured half-way. Idempotent: a chain left by a crashed run is replaced
 * in the same transaction, and jumps already present are counted (from
 * iptables-save) so that exactly one remains per hook. A family without
 * service CIDRs has any leftover chain and jumps removed.
 * Does nothing and returns 0 when capture.enabled is false.
 * Returns 0, -EINVAL when capture.port is 0 or there are no service CIDRs,
 * or -errno / -EIO (a tool failed; logged) / -ETIMEDOUT; on failure the rules
 * of every family are removed again. */
int em_capture_install(const struct em_config *cfg);

/* Removes EM_CAPTURE_CHAIN and every "-p tcp -j EDGEMESH" jump from OUTPUT and
 * PREROUTING in both families, whatever <cfg> says (a crashed run may have had
 * another config). A family that has nothing installed is left untouched.
 * IPv6 failures are neither logged nor returned unless <cfg> (may be NULL) has
 * an IPv6 service CIDR, so a host without ip6tables nat does not complain at
 * every exit. Returns 0, or the first error as em_capture_install. */
int em_capture_remove(const struct em_config *cfg);

/* Number of families (0..2) in which EM_CAPTURE_CHAIN or one of its jumps is
 * present, as em_capture_remove would find them; lets `--remove-capture` say
 * that there is nothing to remove. IPv6 errors count as "nothing" under the
 * same condition as em_capture_remove. Returns the count or -errno / -EIO. */
int em_capture_installed(const struct em_config *cfg);

/* Stores into <out> the destination a captured connection <fd> (an accepted
 * socket) had before REDIRECT: SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST
 * for IPv6. <family> is the socket's family, or 0 to look it up; an AF_INET6
 * socket whose peer is IPv4-mapped is asked the IPv4 way.
 * Returns 0, or -errno of getsockopt (-ENOENT: no conntrack entry, i.e. the
 * connection was not NATed), -EAFNOSUPPORT for another family. */
int em_capture_original_dst(int fd, int family, struct em_addr *out);

#endif
