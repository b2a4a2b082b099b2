/* Connect-time balancing in the kernel: the fast path for plain TCP services.
 *
 * BPF programs (engine/fastpath.bpf.c) on the cgroup connect4/connect6,
 * getpeername4/getpeername6 and sock_ops hooks of fastpath.cgroup pick an
 * endpoint when a process of that cgroup (in any network namespace) calls
 * connect() to a cluster IP and port. A local pick becomes the socket's
 * destination: the app talks straight to the pod and nothing relays. A
 * remote pick leaves the destination alone: capture brings the connection to
 * the engine as before, and the engine connects to the kernel's pick
 * (em_fastpath_handoff) instead of picking again.
 *
 * Which ports are balanced there: em_fastpath_port_ok. Everything else keeps
 * the engine's path. The programs are attached through BPF links held by
 * this process: when it ends, however it ends, they are detached.
 *
 * Threads: em_fastpath_start and em_fastpath_detach/free on the main thread;
 * em_fastpath_publish and em_fastpath_stats on any one thread at a time
 * (they share a lock); em_fastpath_handoff on workers, concurrently. */
#ifndef EM_ENGINE_FASTPATH_H
#define EM_ENGINE_FASTPATH_H

#include <stdbool.h>

#include "proto/em.h"
#include "store/config.h"
#include "store/table.h"

struct em_fastpath;
struct cJSON;

/* Whether connects to <sp> may be balanced in the kernel: a TCP port of a
 * Service with a cluster IP, none of whose ports is HTTP, without a QPS
 * limit and without the annotation edgemesh.io/fastpath "off". Pure. */
bool em_fastpath_port_ok(const struct em_svc_port *sp);

/* Per <cfg>'s fastpath section (the environment variable EDGEMESH_FASTPATH
 * "off" overrides it: several daemons on one machine, as tests run them,
 * must not rewrite each other's connects): with mode "auto", loads the programs and
 * attaches them to fastpath.cgroup; when that cannot be done (no cgroup v2
 * directory there, no privilege, a kernel refusing a program) the fast path
 * is off and the reason is logged once. Mode "off": off, logged. Either way
 * it logs one line "fastpath: on: cgroup <path>" or "fastpath: off: <why>"
 * and returns an object for em_fastpath_stats; NULL only on ENOMEM. */
struct em_fastpath *em_fastpath_start(const struct em_config *cfg);

/* True when the programs are attached. */
bool em_fastpath_on(const struct em_fastpath *fp);

/* Makes the kernel's maps match <t> (a published snapshot that stays valid
 * for the call) under the live config's balancer: writes only the ports
 * whose endpoints or settings changed since the last call, each so that a
 * program sees its old endpoint set or its new one, never a mix; removes
 * the ports gone. Connections already made are not touched. With balancer
 * "least_requests" (which needs the engine's counts) the maps are emptied.
 * A map write that fails is logged and leaves that port to the engine.
 * No-op when off. */
void em_fastpath_publish(struct em_fastpath *fp, const struct em_table *t);

/* For a captured connection from <client> (address and port) to <dst> (the
 * cluster IP and port it asked for) of the port <sp>: the endpoint the
 * kernel picked for it when that pick was not local, taken out of the map
 * (one system call), if it is still a ready endpoint of <sp>; else NULL
 * (the caller picks). Call only for ports em_fastpath_port_ok accepts. */
const struct em_endpoint *em_fastpath_handoff(struct em_fastpath *fp,
                                              const struct em_svc_port *sp,
                                              const struct em_addr *client,
                                              const struct em_addr *dst);

/* Adds "fastpath" to <stats>: {"state": "on"|"off", "reason" (when off),
 * "cgroup", "ports" (cluster IP and port entries in the maps), "publishes",
 * "publish_us" (the last publish's cost), "connections" (connects sent
 * straight to an endpoint), "handoffs" (connects left to the engine with the
 * kernel's pick), "write_failures", "services": [{"service": "ns/name",
 * "cluster_ip", "port", "endpoints" (ready ones in the maps), "policy"
 * ("round_robin", "random" or "client_ip"), "connections", "handoffs"}]
 * (per cluster IP and port)}. Returns 0
 * or -ENOMEM. */
int em_fastpath_stats(struct em_fastpath *fp, struct cJSON *stats);

/* Detaches the programs (new connects take the capture path); the maps stay
 * for em_fastpath_handoff until em_fastpath_free. */
void em_fastpath_detach(struct em_fastpath *fp);

/* Detaches and frees everything. NULL is a no-op. */
void em_fastpath_free(struct em_fastpath *fp);

#endif
