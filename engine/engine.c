/* Engine start and stop: listeners, worker threads, the choice of I/O
 * backend and the io_uring feature probe. */
#include "engine/engine.h"
#include "engine/fastpath.h"

#include <cjson/cJSON.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/client.h"
#include "engine/io_epoll.h"
#include "engine/router_tls.h"
#include "engine/tunnel.h"
#include "proto/log.h"
#include "tunnel/pki.h"
#include "tunnel/tls_pipe.h"

static int open_listener(const struct em_addr *a)
{
	struct sockaddr_storage ss;
	socklen_t sl = em_addr_to_sockaddr(a, &ss);
	int one = 1, rc;
	int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1 ||
	    (a->family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1) ||
	    bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 4096) == -1) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* Every opcode the data path submits; a kernel without one is refused at
 * start rather than failing connections later. With <quiet> nothing is
 * logged (io_backend "auto" then runs epoll and says why). */
static int probe_features(bool quiet, char *why, size_t why_len)
{
	static const struct {
		int op;
		const char *name;
	} need[] = {
	        {IORING_OP_ACCEPT, "accept"},
	        {IORING_OP_RECV, "recv"},
	        {IORING_OP_SEND, "send"},
	        {IORING_OP_CONNECT, "connect"},
	        {IORING_OP_LINK_TIMEOUT, "link_timeout"},
	        {IORING_OP_SHUTDOWN, "shutdown"},
	        {IORING_OP_ASYNC_CANCEL, "async_cancel"},
	        {IORING_OP_TIMEOUT, "timeout"},
	        {IORING_OP_READ, "read"},
	};
	/* io_uring_setup itself first: a seccomp filter (the default profiles
	 * of Docker and containerd), kernel.io_uring_disabled or a kernel
	 * without io_uring refuse it, and its errno says which. */
	struct io_uring ring;
	int rc = io_uring_queue_init(2, &ring, 0);
	if (rc < 0) {
		snprintf(why, why_len, "io_uring_setup failed: %s", strerror(-rc));
		if (!quiet)
			EM_ERR("engine", "io_uring unavailable (%s)", why);
		return rc;
	}
	io_uring_queue_exit(&ring);
	struct io_uring_probe *p = io_uring_get_probe();
	if (!p) {
		snprintf(why, why_len, "io_uring_get_probe failed");
		if (!quiet)
			EM_ERR("engine", "io_uring unavailable (io_uring_get_probe failed)");
		return -ENOSYS;
	}
	for (size_t i = 0; i < EM_ARRAY_SIZE(need); i++) {
		if (!io_uring_opcode_supported(p, need[i].op)) {
			snprintf(why, why_len, "io_uring lacks opcode %s", need[i].name);
			if (!quiet)
				EM_ERR("engine", "io_uring lacks opcode %s", need[i].name);
			rc = -ENOSYS;
		}
	}
	io_uring_free_probe(p);
	return rc;
}

static void free_engine(struct em_engine *e)
{
	em_router_tls_free(e->rtls);
	if (e->workers) {
		for (unsigned i = 0; i < e->n_workers; i++) {
			struct em_worker *w = &e->workers[i];
			for (size_t k = 0; k < w->n_listeners; k++)
				if (w->listeners[k].fd >= 0)
					close(w->listeners[k].fd);
			free(w->listeners);
			if (w->wake_fd >= 0)
				close(w->wake_fd);
			if (w->eng) {
				em_worker_inbox_close(w);
				pthread_mutex_destroy(&w->inbox_mu);
				pthread_mutex_destroy(&w->peers_mu);
				free(w->peers);
			}
		}
	}
	em_tun_hub_free(e);
	em_tls_pipe_ctx_free(e->tls);
	free(e->revs);
	pthread_mutex_destroy(&e->tls_mu);
	free(e->workers);
	if (e->ctl_fd >= 0)
		close(e->ctl_fd);
	pthread_mutex_destroy(&e->ctl_mu);
	sem_destroy(&e->ready);
	free(e);
}

static int add_listener(struct em_worker *w, const struct em_addr *a, uint16_t idx, bool optional)
{
	char as[EM_ADDR_STRLEN];
	int fd = open_listener(a);
	if (fd < 0) {
		if (optional && fd == -EAFNOSUPPORT)
			return 0;
		EM_ERR("engine", "listen on %s: %s", em_addr_format(a, true, as, sizeof(as)),
		       strerror(-fd));
		return fd;
	}
	struct em_listener *l = &w->listeners[w->n_listeners++];
	l->w = w;
	l->fd = fd;
	l->idx = idx;
	l->accept = idx == EM_LISTENER_TUNNEL ? em_tun_accept : em_client_accept;
	return 0;
}

static void stop_workers(struct em_engine *e, unsigned started, uint32_t drain_ms)
{
	atomic_store(&e->drain_ms, drain_ms);
	atomic_store(&e->stop, true);
	for (unsigned i = 0; i < started; i++) {
		uint64_t one = 1;
		if (write(e->workers[i].wake_fd, &one, sizeof(one)) == -1)
			EM_WARN("engine", "wake worker %u: %s", i, strerror(errno));
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(e->workers[i].thread, NULL);
}

int em_engine_start(const struct em_config *cfg, struct em_engine **out)
{
	if (!em_config_current()) {
		EM_ERR("engine", "start: no config published");
		return -EINVAL;
	}
	/* EDGEMESH_IO_BACKEND overrides the config (tests run a suite on
	 * either backend with it). */
	enum em_io_backend want = cfg->io_backend;
	const char *env = getenv("EDGEMESH_IO_BACKEND");
	if (env && strcmp(env, "epoll") == 0)
		want = EM_IO_EPOLL;
	else if (env && strcmp(env, "io_uring") == 0)
		want = EM_IO_URING;
	char why[96] = "";
	bool epoll = want == EM_IO_EPOLL;
	int rc = 0;
	if (!epoll) {
		rc = probe_features(want == EM_IO_AUTO, why, sizeof(why));
		if (rc && want == EM_IO_AUTO) {
			EM_WARN("engine", "io_backend \"auto\": %s; running the epoll backend",
			        why);
			epoll = true;
			rc = 0;
		}
	}
	if (rc)
		return rc;
	struct em_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->epoll = epoll;
	e->cloud = cfg->role == EM_ROLE_CLOUD;
	sem_init(&e->ready, 0, 0);
	pthread_mutex_init(&e->ctl_mu, NULL);
	pthread_mutex_init(&e->tls_mu, NULL);
	e->ctl_fd = -1;
	/* A kill switch for the kernel's recv cap, should one misbehave; the
	 * tests also run the uncapped path with it. */
	const char *cap = getenv("EDGEMESH_RECV_CAP");
	e->recv_cap_off = cap && strcmp(cap, "0") == 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	e->n_workers = cfg->workers ? cfg->workers : (unsigned)(ncpu > 0 ? ncpu : 1);
	/* Only captured traffic can loop back into us; without capture the
	 * daemon may run unprivileged and SO_MARK would need CAP_NET_ADMIN. */
	e->mark = cfg->capture.enabled ? cfg->capture.mark : 0;
	if (cfg->n_listeners > UINT16_MAX - 1) {
		rc = -EINVAL;
		goto fail;
	}
	e->workers = calloc(e->n_workers, sizeof(*e->workers));
	if (!e->workers || em_tun_hub_init(e)) {
		rc = -ENOMEM;
		goto fail;
	}
	if (cfg->tunnel.encryption == EM_TUNNEL_TLS && cfg->tunnel.cluster_key[0]) {
		char err[EM_TLS_PIPE_ERR_LEN];
		struct em_tls_pipe_files f = {.ca_file = cfg->tunnel.tls.ca_file,
		                              .cert_file = cfg->tunnel.tls.cert_file,
		                              .key_file = cfg->tunnel.tls.key_file,
		                              .node_name = cfg->node_name};
		e->tls_on = true;
		e->tls_signer = cfg->role == EM_ROLE_CLOUD && cfg->tunnel.tls.ca_dir[0];
		if (cfg->tunnel.tls.managed && cfg->role != EM_ROLE_CLOUD &&
		    access(cfg->tunnel.tls.cert_file, F_OK) != 0) {
			EM_INFO("tunnel",
			        "no tunnel certificate yet (%s): enrolling with the cloud at %s over "
			        "the cluster key; tunnels to other nodes wait for it",
			        cfg->tunnel.tls.cert_file, cfg->cloud.address);
		} else if (!(e->tls = em_tls_pipe_ctx_new(&f, err, sizeof(err)))) {
			EM_ERR("tunnel", "%s: tunnel.tls: %s", cfg->path, err);
			rc = -EINVAL;
			goto fail;
		} else {
			em_tls_pipe_ctx_set_check(e->tls, em_engine_tls_check, e);
			EM_INFO("tunnel", "tunnels run TLS 1.3 with the certificate of %s (%s)",
			        cfg->node_name, cfg->tunnel.tls.cert_file);
		}
	} else if (cfg->tunnel.listen.family || cfg->cloud.address[0]) {
		EM_WARN("tunnel", "tunnel.encryption \"none\": tunnel frames travel in clear "
		                  "(only the handshake is authenticated)");
	}
	/* With TLS the Router's listener is the TLS front's, not the workers'. */
	bool router_tls = cfg->router.listen.family && cfg->router.tls.cert_file[0];
	bool router_plain = cfg->router.listen.family && !router_tls;
	size_t per = cfg->n_listeners + (cfg->capture.enabled ? 2 : 0) +
	             (cfg->tunnel.listen.family ? 1 : 0) + (router_plain ? 1 : 0);
	for (unsigned i = 0; i < e->n_workers; i++) {
		struct em_worker *w = &e->workers[i];
		w->eng = e;
		w->id = i;
		w->wake_fd = -1;
		pthread_mutex_init(&w->inbox_mu, NULL);
		pthread_mutex_init(&w->peers_mu, NULL);
		w->serve_http = em_client_serve;
		w->serve_conn = em_client_take;
		w->listeners = calloc(per ? per : 1, sizeof(*w->listeners));
		if (!w->listeners) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	for (unsigned i = 0; i < e->n_workers; i++) {
		struct em_worker *w = &e->workers[i];
		w->wake_fd = eventfd(0, EFD_CLOEXEC);
		if (w->wake_fd == -1) {
			rc = -errno;
			goto fail;
		}
		if (cfg->capture.enabled) {
			struct em_addr any4 = {.family = AF_INET, .port = cfg->capture.port};
			struct em_addr any6 = {.family = AF_INET6, .port = cfg->capture.port};
			if ((rc = add_listener(w, &any4, EM_LISTENER_CAPTURE, false)) ||
			    (rc = add_listener(w, &any6, EM_LISTENER_CAPTURE, true)))
				goto fail;
		}
		for (size_t k = 0; k < cfg->n_listeners; k++)
			if ((rc = add_listener(w, &cfg->listeners[k].listen, (uint16_t)k, false)))
				goto fail;
		if (cfg->tunnel.listen.family &&
		    (rc = add_listener(w, &cfg->tunnel.listen, EM_LISTENER_TUNNEL, false)))
			goto fail;
		if (router_plain &&
		    (rc = add_listener(w, &cfg->router.listen, EM_LISTENER_ROUTER, false)))
			goto fail;
	}
	/* Opened before the workers start, as theirs are: a port in use fails
	 * the start early. */
	int router_lfd = -1;
	if (router_tls && (router_lfd = open_listener(&cfg->router.listen)) < 0) {
		char as[EM_ADDR_STRLEN];
		rc = router_lfd;
		EM_ERR("engine", "listen on %s: %s",
		       em_addr_format(&cfg->router.listen, true, as, sizeof(as)), strerror(-rc));
		goto fail;
	}
	/* Per Service port counters: one set per worker, counting from 0. */
	if ((rc = em_svcstat_workers(e->n_workers)))
		goto fail;
	for (unsigned i = 0; i < e->n_workers; i++)
		e->workers[i].svc = em_svcstat_set(i);
	unsigned started = 0;
	for (; started < e->n_workers; started++) {
		struct em_worker *w = &e->workers[started];
		rc = -pthread_create(&w->thread, NULL, em_worker_main, w);
		if (rc)
			break;
		sem_wait(&e->ready);
		if (w->init_rc) {
			rc = w->init_rc;
			pthread_join(w->thread, NULL);
			break;
		}
	}
	if (!rc && router_tls) {
		rc = em_router_tls_start(e, router_lfd, cfg, &e->rtls);
		router_lfd = -1;
	}
	if (rc) {
		if (router_lfd >= 0)
			close(router_lfd);
		stop_workers(e, started, 0);
		goto fail;
	}
	unsigned f = e->ring_flags;
	const char *sends = "one send(2) each";
	if (e->epoll && em_epoll_aio(e->workers[0].ep))
		sends = "batched with Linux AIO";
	if (e->epoll)
		EM_INFO("engine",
		        "%u workers, io backend epoll (io_backend \"%s\"), edge-triggered, "
		        "sends %s, buffers %u x %u, %zu listeners per worker",
		        e->n_workers, want == EM_IO_EPOLL ? "epoll" : "auto", sends, EM_BUF_COUNT,
		        EM_BUF_SIZE, e->workers[0].n_listeners);
	else
		EM_INFO("engine",
		        "%u workers, io backend io_uring %s, multishot accept, buffer ring %u x "
		        "%u, "
		        "multishot recv%s, %zu listeners per worker",
		        e->n_workers,
		        (f & IORING_SETUP_DEFER_TASKRUN)  ? "SINGLE_ISSUER|DEFER_TASKRUN"
		        : (f & IORING_SETUP_COOP_TASKRUN) ? "COOP_TASKRUN"
		                                          : "without task-run flags",
		        EM_BUF_COUNT, EM_BUF_SIZE,
		        e->recv_cap       ? " (capped)"
		        : e->recv_cap_off ? " (uncapped: EDGEMESH_RECV_CAP=0)"
		                          : "",
		        e->workers[0].n_listeners);
	if (e->rtls) {
		char as[EM_ADDR_STRLEN];
		EM_INFO("engine", "Router: HTTPS on %s (TLS front thread, certificate %s)",
		        em_addr_format(&cfg->router.listen, true, as, sizeof(as)),
		        cfg->router.tls.cert_file);
	}
	*out = e;
	return 0;
fail:
	free_engine(e);
	return rc;
}

static const struct {
	const char *group, *name;
} counter_names[EM_C__COUNT] = {
#define EM_X_NAME(id, g, n) [EM_C_##id] = {g, n},
        EM_COUNTERS(EM_X_NAME)
#undef EM_X_NAME
};

size_t em_engine_counters(void *eng, struct em_api_counter *out, size_t cap)
{
	struct em_engine *e = eng;
	for (unsigned i = 0; i < EM_C__COUNT && i < cap; i++) {
		uint64_t sum = 0;
		for (unsigned k = 0; k < e->n_workers; k++)
			sum += __atomic_load_n(&e->workers[k].pub[i], __ATOMIC_RELAXED);
		out[i] =
		        (struct em_api_counter){counter_names[i].group, counter_names[i].name, sum};
	}
	size_t n = EM_MIN((size_t)EM_C__COUNT, cap);
	if (e->rtls && cap > n)
		n += em_router_tls_counters(e->rtls, out + n, cap - n);
	return n;
}

int em_engine_node_stats(void *eng, struct cJSON *stats)
{
	struct em_engine *e = eng;
	if (!cJSON_AddStringToObject(stats, "io_backend", e->epoll ? "epoll" : "io_uring"))
		return -ENOMEM;
	struct em_fastpath *fp = __atomic_load_n(&e->fastpath, __ATOMIC_ACQUIRE);
	if (fp && em_fastpath_stats(fp, stats))
		return -ENOMEM;
	return e->cloud ? em_engine_stats(eng, stats) : em_engine_peer_stats(eng, stats);
}

void em_engine_set_fastpath(struct em_engine *e, struct em_fastpath *fp)
{
	__atomic_store_n(&e->fastpath, fp, __ATOMIC_RELEASE);
}

void em_engine_set_control(struct em_engine *e, em_engine_control_fn fn, void *ctx)
{
	pthread_mutex_lock(&e->ctl_mu);
	e->ctl_fn = fn;
	e->ctl_ctx = ctx;
	pthread_mutex_unlock(&e->ctl_mu);
}

int em_engine_control_open(struct em_engine *e, int fd, const struct em_addr *cloud)
{
	pthread_mutex_lock(&e->ctl_mu);
	if (e->ctl_fd >= 0)
		close(e->ctl_fd);
	e->ctl_fd = fd;
	e->ctl_addr = *cloud;
	e->has_cloud = true;
	pthread_mutex_unlock(&e->ctl_mu);
	uint64_t one = 1;
	if (write(e->workers[0].wake_fd, &one, sizeof(one)) == -1)
		return -errno; /* the request stays; the fd is closed at stop */
	return 0;
}

void em_engine_stop(struct em_engine *eng, uint32_t drain_ms)
{
	if (!eng)
		return;
	/* The TLS front stops accepting first; its open connections end as
	 * the workers close their ends. */
	em_router_tls_quit(eng->rtls, drain_ms);
	stop_workers(eng, eng->n_workers, drain_ms);
	free_engine(eng);
}
