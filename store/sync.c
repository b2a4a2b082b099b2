/* The sync thread's loop: poll(2) over the API socket, its clients and a
 * wake-up eventfd. The thread is not an RCU reader: it is the writer, so it
 * may wait for grace periods (em_table_publish) without deadlock. */
#include "store/sync.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <netinet/in.h>

#include "proto/clock.h"
#include "proto/log.h"
#include "store/admin.h"
#include "store/api.h"
#include "store/changelog.h"
#include "store/control.h"
#include "store/kube.h"
#include "store/manifest_dir.h"
#include "store/store.h"
#include "store/table.h"

#define MAX_CLIENTS     64
#define CLIENT_IDLE_MS  30000
#define METRICS_KEEP_MS 300000u /* longer than any scrape interval in use */

struct client {
	int fd;
	struct em_buf in, out;
	size_t out_off;
	uint64_t deadline;
	bool closing; /* close once <out> is written */
};

/* A client of the admin listener: one request, one answer, closed. */
struct admin_client {
	int fd;
	char head[EM_ADMIN_MAX_HEAD];
	size_t len;
	struct em_buf out;
	size_t out_off;
	uint64_t deadline;
	bool answered;
};

struct em_sync {
	pthread_t thread;
	int wake_fd;
	int listen_fd;
	int admin_fd; /* admin.listen, -1 when off */
	struct admin_client admin[EM_ADMIN_MAX_CLIENTS];
	size_t n_admin;
	/* The largest answer buffer of the admin clients gone, kept for the
	 * next /metrics: a page of 10,000 ports with traffic is 24 MB, and
	 * faulting in fresh pages for it costs more than rendering it. Let go
	 * after METRICS_KEEP_MS without a scrape. */
	struct em_buf metrics_buf;
	uint64_t metrics_last_ms;
	atomic_bool stop;
	atomic_bool reload;
	atomic_uint_fast64_t reloads, reload_failures;
	struct em_store *store;
	struct em_mdir *mdir; /* controller.manifests_dir, or NULL */
	struct em_kube *kube; /* controller.kubernetes, or NULL */
	struct em_clog *clog; /* cloud role: the changes edges will be sent */
	struct em_ctl *ctl;   /* the control stream's side (store/control.h) */
	struct pollfd *pfd;   /* the poll set, grown as needed */
	size_t pfd_cap;
	uint64_t clog_failures;
	uint64_t publish_failures;
	char config_path[PATH_MAX];
	char node_name[254];
	char socket_path[108];
	struct client clients[MAX_CLIENTS];
	size_t n_clients;
	pthread_mutex_t counters_mu; /* guards counters_fn/ctx and their calls */
	em_api_counters_fn counters_fn;
	void *counters_ctx;
	int (*stats_fn)(void *ctx, struct cJSON *reply); /* under counters_mu too */
	void *stats_ctx;
	pthread_mutex_t published_mu; /* guards published_fn/ctx and their calls */
	void (*published_fn)(void *ctx, const struct em_table *t);
	void *published_ctx;
};

static size_t locked_counters(void *ctx, struct em_api_counter *out, size_t cap)
{
	struct em_sync *s = ctx;
	size_t n = 0;
	pthread_mutex_lock(&s->counters_mu);
	if (s->counters_fn)
		n = s->counters_fn(s->counters_ctx, out, cap);
	pthread_mutex_unlock(&s->counters_mu);
	/* The manifests directory and the change log belong to this thread, as
	 * does the caller. */
	if (s->clog && cap - n >= 4) {
		struct em_clog_stats cs;
		em_clog_stats(s->clog, &cs);
		out[n++] = (struct em_api_counter){"controller", "changelog_entries", cs.entries};
		out[n++] = (struct em_api_counter){"controller", "changelog_bytes", cs.bytes};
		out[n++] = (struct em_api_counter){"controller", "changelog_floor", cs.floor};
		out[n++] = (struct em_api_counter){"controller", "changelog_newest", cs.newest};
	}
	if (s->ctl && cap > n)
		n += em_ctl_counters(s->ctl, out + n, cap - n);
	if (s->mdir && cap - n >= 5) {
		struct em_mdir_stats st;
		em_mdir_stats(s->mdir, &st);
		out[n++] = (struct em_api_counter){"controller", "manifest_files", st.files};
		out[n++] = (struct em_api_counter){"controller", "manifest_objects", st.objects};
		out[n++] = (struct em_api_counter){"controller", "manifest_loads", st.applied};
		out[n++] =
		        (struct em_api_counter){"controller", "manifest_load_failures", st.failed};
		out[n++] = (struct em_api_counter){"controller", "manifest_objects_deleted",
		                                   st.deleted};
	}
	if (s->kube && cap - n >= 7) {
		struct em_kube_stats ks;
		em_kube_stats(s->kube, &ks);
		out[n++] = (struct em_api_counter){"controller", "kube_lists", ks.lists};
		out[n++] = (struct em_api_counter){"controller", "kube_relists", ks.relists};
		out[n++] = (struct em_api_counter){"controller", "kube_watches", ks.watches};
		out[n++] = (struct em_api_counter){"controller", "kube_events", ks.events};
		out[n++] = (struct em_api_counter){"controller", "kube_errors", ks.errors};
		out[n++] = (struct em_api_counter){"controller", "kube_objects", ks.objects};
		out[n++] = (struct em_api_counter){"controller", "kube_refused", ks.refused};
	}
	return n;
}

void em_sync_set_counters(struct em_sync *s, em_api_counters_fn fn, void *ctx)
{
	pthread_mutex_lock(&s->counters_mu);
	s->counters_fn = fn;
	s->counters_ctx = ctx;
	pthread_mutex_unlock(&s->counters_mu);
}

void em_sync_set_stats(struct em_sync *s, int (*fn)(void *ctx, struct cJSON *reply), void *ctx)
{
	pthread_mutex_lock(&s->counters_mu);
	s->stats_fn = fn;
	s->stats_ctx = ctx;
	pthread_mutex_unlock(&s->counters_mu);
}

void em_sync_set_published(struct em_sync *s, void (*fn)(void *ctx, const struct em_table *t),
                           void *ctx)
{
	pthread_mutex_lock(&s->published_mu);
	s->published_fn = fn;
	s->published_ctx = ctx;
	pthread_mutex_unlock(&s->published_mu);
}

static void locked_published(void *ctx, const struct em_table *t)
{
	struct em_sync *s = ctx;
	pthread_mutex_lock(&s->published_mu);
	if (s->published_fn)
		s->published_fn(s->published_ctx, t);
	pthread_mutex_unlock(&s->published_mu);
}

static int locked_stats(void *ctx, struct cJSON *reply)
{
	struct em_sync *s = ctx;
	int rc = 0;
	pthread_mutex_lock(&s->counters_mu);
	if (s->stats_fn)
		rc = s->stats_fn(s->stats_ctx, reply);
	pthread_mutex_unlock(&s->counters_mu);
	return rc;
}

static void client_close(struct em_sync *s, size_t i)
{
	close(s->clients[i].fd);
	em_buf_free(&s->clients[i].in);
	em_buf_free(&s->clients[i].out);
	s->clients[i] = s->clients[--s->n_clients];
	memset(&s->clients[s->n_clients], 0, sizeof(s->clients[0]));
}

/* Endpoint addresses inside the captured service ranges would loop back
 * into the mesh; with capture off the ranges mean nothing here. */
static int store_limits(struct em_sync *s, const struct em_config *cfg)
{
	bool on = cfg->capture.enabled;
	return em_store_set_service_cidrs(s->store, on ? cfg->capture.service_cidrs : NULL,
	                                  on ? cfg->capture.n_service_cidrs : 0);
}

static void reload_config(struct em_sync *s)
{
	struct em_config *next;
	const struct em_config *cur = em_config_current();
	const char *key;
	char err[1024];

	if (em_config_load(s->config_path, &next, err, sizeof(err))) {
		atomic_fetch_add(&s->reload_failures, 1);
		EM_ERR("config", "reload refused, keeping the running config: %s", err);
		return;
	}
	if ((key = em_config_restart_key(cur, next))) {
		atomic_fetch_add(&s->reload_failures, 1);
		EM_ERR("config",
		       "reload refused, keeping the running config: %s: %s changed, which needs a "
		       "restart",
		       s->config_path, key);
		em_config_free(next);
		return;
	}
	em_log_level = next->log_level;
	if (store_limits(s, next))
		EM_WARN("config", "out of memory: keeping the previous service ranges for "
		                  "endpoint checks");
	em_config_publish(next);
	atomic_fetch_add(&s->reloads, 1);
	EM_INFO("config", "reloaded %s", s->config_path);
	/* What follows the table may depend on the config too (the balancer):
	 * it sees the current snapshot again. This thread is its only
	 * publisher, so the snapshot stays valid for the call. */
	locked_published(s, em_table_current());
}

static int control_status(void *ctx, struct cJSON *reply)
{
	return em_ctl_status(ctx, reply);
}

/* Builds and publishes the service table when changes wait for it (the
 * store defers builds to once per turn of the loop). */
static void publish(struct em_sync *s)
{
	if (em_store_publish_pending(s->store) && s->publish_failures++ == 0)
		EM_WARN("sync", "out of memory building the service table; retrying");
}

/* What the API's stats reply and /metrics report besides the store. */
static int ctl_revoke(void *ctx, const char *node, char *err, size_t errlen)
{
	return em_ctl_revoke(ctx, node, err, errlen);
}

static struct em_api_info api_info(struct em_sync *s)
{
	return (struct em_api_info){.config_path = s->config_path,
	                            .node_name = s->node_name,
	                            .reloads = atomic_load(&s->reloads),
	                            .reload_failures = atomic_load(&s->reload_failures),
	                            .counters = locked_counters,
	                            .counters_ctx = s,
	                            .control = s->ctl ? control_status : NULL,
	                            .control_ctx = s->ctl,
	                            .stats = locked_stats,
	                            .stats_ctx = s,
	                            .revoke = s->ctl ? ctl_revoke : NULL,
	                            .revoke_ctx = s->ctl};
}

static void handle_input(struct em_sync *s, struct client *c)
{
	struct em_api_info info = api_info(s);

	if (em_api_serve(s->store, &info, &c->in, &c->out, &c->out_off))
		c->closing = true;
	/* The reply is sent only after the table holds what it applied. */
	publish(s);
}

/* Returns false when the client is to be closed now. Requests are served as
 * they arrive, and reading stops while the client leaves its replies unread
 * (em_api_may_read), so neither buffer grows past its bound. */
static bool client_read(struct em_sync *s, struct client *c)
{
	char buf[65536];
	while (!c->closing && em_api_may_read(&c->in, &c->out, c->out_off)) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n > 0) {
			if (em_buf_append(&c->in, buf, (size_t)n))
				return false;
			if (memchr(buf, '\n', (size_t)n) || c->in.len > EM_API_MAX_REQUEST)
				handle_input(s, c);
			continue;
		}
		if (n == 0) {
			/* The peer half-closed: answer the complete requests it sent,
			 * then close; a partial request is dropped. */
			c->closing = true;
			break;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		if (errno == EINTR)
			continue;
		return false;
	}
	return true;
}

static bool client_write(struct client *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
		                 MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n == -1 && errno == EINTR)
			continue;
		return false;
	}
	c->out.len = c->out_off = 0;
	return true;
}

static void accept_clients(struct em_sync *s)
{
	/* When full, further clients wait in the listen backlog (backpressure)
	 * until a slot frees; the socket is local and mode 0600. */
	while (s->n_clients < MAX_CLIENTS) {
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			return;
		struct client *c = &s->clients[s->n_clients++];
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->deadline = em_now_ms() + CLIENT_IDLE_MS;
	}
}

static void admin_close(struct em_sync *s, size_t i)
{
	close(s->admin[i].fd);
	struct em_buf *o = &s->admin[i].out;
	if (o->cap > s->metrics_buf.cap) {
		em_buf_free(&s->metrics_buf);
		s->metrics_buf = *o;
		*o = (struct em_buf){0};
	}
	em_buf_free(o);
	s->admin[i] = s->admin[--s->n_admin];
	memset(&s->admin[s->n_admin], 0, sizeof(s->admin[0]));
}

static void admin_accept(struct em_sync *s)
{
	while (s->n_admin < EM_ADMIN_MAX_CLIENTS) {
		int fd = accept4(s->admin_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			return;
		struct admin_client *a = &s->admin[s->n_admin++];
		memset(a, 0, sizeof(*a));
		a->fd = fd;
		a->deadline = em_now_ms() + EM_ADMIN_IDLE_MS;
	}
}

/* Why this node is not ready to serve, or NULL when it is: its first table
 * is not published, or it is an edge with a cloud that never synced. */
static const char *not_ready(struct em_sync *s)
{
	struct em_store_stats st;
	em_store_stats(s->store, &st);
	if (st.generation == 0)
		return "the table is not published yet";
	if (s->ctl && !em_ctl_synced(s->ctl))
		return "never in sync with the cloud";
	return NULL;
}

/* The answer to one admin request, by path. */
static void admin_answer(struct em_sync *s, struct admin_client *a, const char *path, bool head)
{
	static const char text[] = "text/plain; charset=utf-8";
	int rc;
	if (strcmp(path, "/healthz") == 0) {
		rc = em_admin_response(&a->out, 200, text, "ok\n", 3, head);
	} else if (strcmp(path, "/readyz") == 0) {
		const char *why = not_ready(s);
		char body[96];
		int n = snprintf(body, sizeof(body), why ? "not ready: %s\n" : "ready\n", why);
		rc = em_admin_response(&a->out, why ? 503 : 200, text, body, (size_t)n, head);
	} else if (strcmp(path, "/metrics") == 0) {
		/* The stats reply, as meshctl stats gets it, rendered; the
		 * QPS buckets and the per Service port counters straight
		 * from their registries. */
		struct em_api_info info = api_info(s);
		/* The body is rendered into the client's buffer after room for
		 * the head, which goes in front of it once its length is known:
		 * a large body is not copied again. */
		enum { HEAD_ROOM = 256 };
		static const char room[HEAD_ROOM];
		struct em_buf *b = &a->out, h = {0};
		if (s->metrics_buf.cap > b->cap) {
			em_buf_free(b);
			*b = s->metrics_buf;
			s->metrics_buf = (struct em_buf){0};
		}
		s->metrics_last_ms = em_now_ms();
		b->len = 0;
		cJSON *r = em_api_stats(s->store, &info, false);
		rc = r ? em_buf_append(b, room, HEAD_ROOM) : -ENOMEM;
		if (!rc)
			rc = em_admin_metrics(r, b);
		if (!rc)
			rc = em_admin_metrics_qps(b);
		if (!rc)
			rc = em_admin_metrics_services(b);
		if (!rc)
			rc = em_admin_response(&h, 200, "text/plain; version=0.0.4; charset=utf-8",
			                       NULL, b->len - HEAD_ROOM, true);
		if (!rc && h.len > HEAD_ROOM)
			rc = -EINVAL;
		if (!rc) {
			memcpy(b->data + HEAD_ROOM - h.len, h.data, h.len);
			a->out_off = HEAD_ROOM - h.len;
			if (head)
				b->len = HEAD_ROOM;
		}
		cJSON_Delete(r);
		em_buf_free(&h);
	} else {
		static const char nf[] = "no such page (expected /metrics, /healthz or /readyz)\n";
		rc = em_admin_response(&a->out, 404, text, nf, sizeof(nf) - 1, head);
	}
	if (rc) {
		a->out.len = 0;
		a->out_off = 0;
		static const char oom[] = "out of memory\n";
		em_admin_response(&a->out, 500, text, oom, sizeof(oom) - 1, false);
	}
	a->answered = true;
}

/* Reads, answers and writes; false when the client is to be closed. */
static bool admin_io(struct em_sync *s, struct admin_client *a, short re)
{
	static const char text[] = "text/plain; charset=utf-8";
	if (!a->answered && (re & (POLLIN | POLLHUP | POLLERR))) {
		ssize_t n = read(a->fd, a->head + a->len, sizeof(a->head) - a->len);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
			return false;
		if (n > 0)
			a->len += (size_t)n;
		char path[256];
		bool head = false;
		switch (em_admin_parse(a->head, a->len, path, sizeof(path), &head)) {
		case EM_ADMIN_INCOMPLETE:
			return true;
		case EM_ADMIN_OK:
			admin_answer(s, a, path, head);
			break;
		case EM_ADMIN_METHOD: {
			static const char b[] = "only GET and HEAD are served\n";
			em_admin_response(&a->out, 405, text, b, sizeof(b) - 1, false);
			a->answered = true;
			break;
		}
		case EM_ADMIN_TOO_LONG: {
			static const char b[] = "request head over 8 KiB\n";
			em_admin_response(&a->out, 431, text, b, sizeof(b) - 1, false);
			a->answered = true;
			break;
		}
		default: {
			static const char b[] = "malformed request (expected GET /path HTTP/1.1)\n";
			em_admin_response(&a->out, 400, text, b, sizeof(b) - 1, false);
			a->answered = true;
			break;
		}
		}
	}
	while (a->answered && a->out_off < a->out.len) {
		ssize_t n = send(a->fd, a->out.data + a->out_off, a->out.len - a->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			a->out_off += (size_t)n;
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return true;
		return false;
	}
	return !a->answered || a->out_off < a->out.len;
}

static void *sync_main(void *arg)
{
	struct em_sync *s = arg;
	/* wake, listener, manifests directory, Kubernetes API, control
	 * stream wake-ups (each fd -1 when none), clients, then control
	 * streams */
	enum { FIXED = 6, KUBE_PFD = 3, ADMIN_PFD = 5 };

	while (!atomic_load(&s->stop)) {
		size_t need = FIXED + MAX_CLIENTS + EM_ADMIN_MAX_CLIENTS +
		              (s->ctl ? em_ctl_max_pollfds(s->ctl) : 0);
		if (need > s->pfd_cap) {
			struct pollfd *p = realloc(s->pfd, need * sizeof(*p));
			if (!p) {
				EM_ERR("sync", "out of memory for the poll set");
				break;
			}
			s->pfd = p;
			s->pfd_cap = need;
		}
		struct pollfd *pfd = s->pfd;
		int timeout = 1000;
		size_t n = 0;
		pfd[n++] = (struct pollfd){.fd = s->wake_fd, .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = s->listen_fd,
		                           .events = s->n_clients < MAX_CLIENTS ? POLLIN : 0};
		pfd[n++] =
		        (struct pollfd){.fd = s->mdir ? em_mdir_fd(s->mdir) : -1, .events = POLLIN};
		pfd[n++] =
		        (struct pollfd){.fd = s->kube ? em_kube_fd(s->kube) : -1, .events = POLLIN};
		pfd[n++] =
		        (struct pollfd){.fd = s->ctl ? em_ctl_wake_fd(s->ctl) : -1, .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = s->admin_fd,
		                           .events = s->n_admin < EM_ADMIN_MAX_CLIENTS ? POLLIN : 0};
		for (size_t i = 0; i < s->n_clients; i++) {
			struct client *c = &s->clients[i];
			short ev = c->closing || !em_api_may_read(&c->in, &c->out, c->out_off)
			                   ? 0
			                   : POLLIN;
			/* Held-back requests: a writable socket is the cue to serve
			 * them (the replies before them have left). */
			if (c->out.len > c->out_off || em_api_has_work(&c->in, &c->out, c->out_off))
				ev |= POLLOUT;
			pfd[n++] = (struct pollfd){.fd = c->fd, .events = ev};
		}
		size_t n_api = n - FIXED;
		for (size_t i = 0; i < s->n_admin; i++) {
			struct admin_client *a = &s->admin[i];
			pfd[n++] = (struct pollfd){.fd = a->fd, .events = a->answered ? POLLOUT : POLLIN};
			if (timeout > (int)EM_ADMIN_IDLE_MS)
				timeout = (int)EM_ADMIN_IDLE_MS;
		}
		size_t n_adm = n - FIXED - n_api;
		size_t n_ctl = s->ctl ? em_ctl_pollfds(s->ctl, pfd + n, s->pfd_cap - n, &timeout) : 0;
		n += n_ctl;
		if (poll(pfd, n, timeout) == -1 && errno != EINTR) {
			EM_ERR("sync", "poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents & POLLIN) {
			uint64_t v;
			if (read(s->wake_fd, &v, sizeof(v)) < 0)
				EM_DEBUG("sync", "wake read: %s", strerror(errno));
		}
		if (atomic_exchange(&s->reload, false))
			reload_config(s);
		if (pfd[2].revents & POLLIN)
			em_mdir_handle(s->mdir);
		if (pfd[KUBE_PFD].revents & POLLIN)
			em_kube_handle(s->kube);
		uint64_t now = em_now_ms();
		/* Walk backwards: client_close moves the last client into slot i. The
		 * clients accepted this turn have no pollfd yet and are skipped. */
		for (size_t i = EM_MIN(s->n_clients, n_api); i-- > 0;) {
			struct client *c = &s->clients[i];
			short re = pfd[i + FIXED].revents;
			bool keep = true;
			if (re & (POLLIN | POLLHUP | POLLERR))
				keep = client_read(s, c);
			if (keep && c->out.len > c->out_off)
				keep = client_write(c);
			/* Requests held back while the replies were unread. */
			if (keep && em_api_has_work(&c->in, &c->out, c->out_off)) {
				handle_input(s, c);
				if (c->out.len > c->out_off)
					keep = client_write(c);
			}
			if (keep && c->closing && c->out.len == c->out_off &&
			    !em_api_has_work(&c->in, &c->out, c->out_off))
				keep = false;
			if (re)
				c->deadline = now + CLIENT_IDLE_MS;
			if (!keep || now > c->deadline)
				client_close(s, i);
		}
		/* After the clients: slots freed by departed clients count. */
		if (pfd[1].revents & POLLIN)
			accept_clients(s);
		for (size_t i = EM_MIN(s->n_admin, n_adm); i-- > 0;) {
			short re = pfd[FIXED + n_api + i].revents;
			bool keep = !re || admin_io(s, &s->admin[i], re);
			if (!keep || now > s->admin[i].deadline)
				admin_close(s, i);
		}
		if (pfd[ADMIN_PFD].revents & POLLIN)
			admin_accept(s);
		if (s->metrics_buf.cap && now > s->metrics_last_ms + METRICS_KEEP_MS)
			em_buf_free(&s->metrics_buf);
		/* Last: what the manifests and API requests changed this turn is
		 * pushed to the edges now. */
		if (s->ctl)
			em_ctl_run(s->ctl, pfd + FIXED + n_api + n_adm, n_ctl);
		/* After the pushes: the edges need not wait for this node's
		 * own table. */
		publish(s);
		/* The Router's counters, at most once a second. */
		em_store_flush_status(s->store, em_now_ms());
	}
	while (s->n_clients)
		client_close(s, s->n_clients - 1);
	while (s->n_admin)
		admin_close(s, s->n_admin - 1);
	em_buf_free(&s->metrics_buf);
	return NULL;
}

/* The admin listener's socket at <a>: a listening, non-blocking TCP socket,
 * or -errno. */
static int bind_admin(const struct em_addr *a)
{
	struct sockaddr_storage ss;
	socklen_t sl = em_addr_to_sockaddr(a, &ss);
	char txt[EM_ADDR_STRLEN];
	int one = 1, rc;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 64) == -1) {
		rc = -errno;
		close(fd);
		return rc;
	}
	EM_INFO("admin", "serving /metrics, /healthz and /readyz on %s",
	        em_addr_format(a, true, txt, sizeof(txt)));
	return fd;
}

/* Removes the socket file we bound, and nothing that has replaced it since. */
static void unlink_socket(const char *path)
{
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
}

static int bind_socket(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;
	mode_t old;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		EM_ERR("api", "%s: socket path too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	/* A socket file left by a dead process is replaced; one that answers
	 * belongs to a running daemon and is not ours to take. Anything that is
	 * not a socket (the database, a config file) is never removed: config
	 * load refuses it too, this is the last word before the unlink. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			EM_ERR("api", "%s: exists and is not a socket; refusing to replace it",
			       path);
			return -EEXIST;
		}
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe != -1 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			close(fd);
			EM_ERR("api", "%s: another edgemesh is serving this socket", path);
			return -EADDRINUSE;
		}
		if (probe != -1)
			close(probe);
		unlink(path);
	}
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		int e = errno;
		umask(old);
		close(fd);
		EM_ERR("api", "bind %s: %s", path, strerror(e));
		return -e;
	}
	umask(old);
	chmod(path, 0600);
	if (listen(fd, 64) == -1) {
		int e = errno;
		close(fd);
		unlink_socket(path);
		EM_ERR("api", "listen %s: %s", path, strerror(e));
		return -e;
	}
	return fd;
}

/* The change log's bounds: changes an edge may be behind by and still be
 * sent only what it missed. */
#define CLOG_MAX_ENTRIES 100000u
#define CLOG_MAX_BYTES   (64u * 1024 * 1024)

static void log_change(void *ctx, uint64_t generation, enum em_bh_op op, const char *key,
                       const char *json)
{
	struct em_sync *s = ctx;
	int rc = em_clog_append(s->clog, generation, op, key, json);
	if (rc == 0)
		return;
	/* A change missing from the log must not go unnoticed by an edge. */
	em_clog_reset(s->clog, generation);
	if (s->clog_failures++ == 0)
		EM_WARN("controller",
		        "change log: %s: %s: log emptied (edges behind it get a snapshot)", key,
		        strerror(-rc));
}

int em_sync_start(struct em_config *cfg, struct em_sync **out)
{
	struct em_sync *s = calloc(1, sizeof(*s));
	int rc;

	if (!s) {
		em_config_publish(cfg);
		return -ENOMEM;
	}
	s->listen_fd = s->wake_fd = s->admin_fd = -1;
	pthread_mutex_init(&s->counters_mu, NULL);
	pthread_mutex_init(&s->published_mu, NULL);
	snprintf(s->config_path, sizeof(s->config_path), "%s", cfg->path);
	snprintf(s->node_name, sizeof(s->node_name), "%s", cfg->node_name);
	snprintf(s->socket_path, sizeof(s->socket_path), "%s", cfg->api_socket);
	em_log_level = cfg->log_level;
	em_config_publish(cfg);

	if ((rc = em_store_open(cfg->data_dir, cfg->node_name, &s->store)) ||
	    (rc = store_limits(s, cfg)))
		goto fail;
	em_store_defer_publish(s->store, true);
	em_store_set_published(s->store, locked_published, s);
	if (cfg->role == EM_ROLE_CLOUD) {
		struct em_store_stats ss;
		em_store_stats(s->store, &ss);
		s->clog = em_clog_new(ss.generation, CLOG_MAX_ENTRIES, CLOG_MAX_BYTES);
		if (!s->clog) {
			rc = -ENOMEM;
			goto fail;
		}
		em_store_set_observer(s->store, log_change, s);
	}
	if (cfg->role == EM_ROLE_CLOUD || cfg->cloud.address[0]) {
		if (!(s->ctl = em_ctl_new(cfg, s->store, s->clog))) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	if (cfg->role == EM_ROLE_CLOUD && cfg->controller.manifests_dir[0]) {
		char state[PATH_MAX + 32];
		snprintf(state, sizeof(state), "%s/manifests-state.json", cfg->data_dir);
		if ((rc = em_mdir_open(cfg->controller.manifests_dir, state, s->store, &s->mdir)))
			goto fail;
	}
	if (cfg->role == EM_ROLE_CLOUD && cfg->controller.kubernetes.server[0]) {
		struct em_kube_conf kc = {.server = cfg->controller.kubernetes.server,
		                          .token_file = cfg->controller.kubernetes.token_file,
		                          .ca_file = cfg->controller.kubernetes.ca_file};
		if ((rc = em_kube_start(&kc, s->store, &s->kube)))
			goto fail;
	}
	if ((s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1) {
		rc = -errno;
		goto fail;
	}
	if ((rc = bind_socket(s->socket_path)) < 0)
		goto fail;
	s->listen_fd = rc;
	if (cfg->admin.listen.family) {
		if ((rc = bind_admin(&cfg->admin.listen)) >= 0) {
			s->admin_fd = rc;
		} else if (cfg->admin.listen_set) {
			char a[EM_ADDR_STRLEN];
			EM_ERR("admin", "%s: admin.listen %s: %s", cfg->path,
			       em_addr_format(&cfg->admin.listen, true, a, sizeof(a)), strerror(-rc));
			goto fail;
		} else {
			char a[EM_ADDR_STRLEN];
			EM_WARN("admin", "admin.listen %s (the default): %s; going on without it",
			        em_addr_format(&cfg->admin.listen, true, a, sizeof(a)), strerror(-rc));
		}
	}
	/* What the manifests directory gave at start is in the first table. */
	if ((rc = em_store_publish_pending(s->store)))
		goto fail;
	if ((rc = pthread_create(&s->thread, NULL, sync_main, s))) {
		rc = -rc;
		unlink_socket(s->socket_path);
		goto fail;
	}
	EM_INFO("api", "serving %s", s->socket_path);
	*out = s;
	return 0;
fail:
	if (s->admin_fd != -1)
		close(s->admin_fd);
	if (s->listen_fd != -1)
		close(s->listen_fd);
	if (s->wake_fd != -1)
		close(s->wake_fd);
	em_kube_stop(s->kube);
	em_mdir_close(s->mdir);
	em_ctl_free(s->ctl);
	em_store_close(s->store);
	em_clog_free(s->clog);
	free(s);
	return rc;
}

static void wake(struct em_sync *s)
{
	uint64_t one = 1;
	if (write(s->wake_fd, &one, sizeof(one)) < 0)
		EM_DEBUG("sync", "wake: %s", strerror(errno));
}

void em_sync_reload(struct em_sync *s)
{
	atomic_store(&s->reload, true);
	wake(s);
}

void em_sync_reload_counts(struct em_sync *s, uint64_t *applied, uint64_t *refused)
{
	*applied = atomic_load(&s->reloads);
	*refused = atomic_load(&s->reload_failures);
}

struct em_ctl *em_sync_control(struct em_sync *s)
{
	return s->ctl;
}

void em_sync_stop(struct em_sync *s)
{
	if (!s)
		return;
	atomic_store(&s->stop, true);
	wake(s);
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
	if (s->admin_fd != -1)
		close(s->admin_fd);
	unlink_socket(s->socket_path);
	close(s->wake_fd);
	em_kube_stop(s->kube);
	em_mdir_close(s->mdir);
	em_ctl_free(s->ctl);
	free(s->pfd);
	em_store_close(s->store);
	em_clog_free(s->clog);
	pthread_mutex_destroy(&s->counters_mu);
	pthread_mutex_destroy(&s->published_mu);
	free(s);
}
