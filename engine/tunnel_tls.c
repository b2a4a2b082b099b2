/* Tunnel TLS state of the engine (engine.h, "tunnel TLS"): the context new
 * tunnels' pipes are made from and the revocations in force, shared by the
 * workers under <tls_mu>. Below engine.c and the tunnel files, which both
 * use it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/worker.h"
#include "proto/log.h"
#include "tunnel/pki.h"
#include "tunnel/tls_pipe.h"

const char *em_engine_tls_check(void *arg, const char *node, time_t not_before)
{
	struct em_engine *e = arg;
	const char *why = NULL;
	pthread_mutex_lock(&e->tls_mu);
	for (size_t i = 0; i < e->n_revs && !why; i++)
		if (strcmp(e->revs[i].node, node) == 0 &&
		    (int64_t)not_before + EM_PKI_SKEW_S <= e->revs[i].at)
			why = "it was revoked (meshctl cert revoke)";
	pthread_mutex_unlock(&e->tls_mu);
	return why;
}

void em_engine_tls_set(struct em_engine *e, struct em_tls_pipe_ctx *ctx)
{
	em_tls_pipe_ctx_set_check(ctx, em_engine_tls_check, e);
	pthread_mutex_lock(&e->tls_mu);
	struct em_tls_pipe_ctx *old = e->tls;
	e->tls = ctx;
	pthread_mutex_unlock(&e->tls_mu);
	/* Pipes made from <old> hold what they need of it. */
	em_tls_pipe_ctx_free(old);
	atomic_fetch_add(&e->tls_gen, 1);
}

bool em_engine_tls_ready(struct em_engine *e)
{
	pthread_mutex_lock(&e->tls_mu);
	bool r = e->tls != NULL;
	pthread_mutex_unlock(&e->tls_mu);
	return r;
}

void em_engine_tls_revoke(struct em_engine *e, const struct em_ctl_revocation *list, size_t n)
{
	struct em_ctl_revocation *v = n ? malloc(n * sizeof(*v)) : NULL;
	if (n && !v) {
		EM_ERR("tunnel", "out of memory: %zu certificate revocations not applied", n);
		return;
	}
	if (n)
		memcpy(v, list, n * sizeof(*v));
	pthread_mutex_lock(&e->tls_mu);
	free(e->revs);
	e->revs = v;
	e->n_revs = n;
	pthread_mutex_unlock(&e->tls_mu);
	atomic_fetch_add(&e->revs_gen, 1);
}

struct em_tls_pipe *em_engine_tls_pipe(struct em_engine *e, bool dialer, const char *peer)
{
	pthread_mutex_lock(&e->tls_mu);
	struct em_tls_pipe *p =
	        e->tls ? em_tls_pipe_new(e->tls, dialer ? EM_TLS_PIPE_DIALER : EM_TLS_PIPE_ACCEPTOR,
	                                 peer)
	               : NULL;
	pthread_mutex_unlock(&e->tls_mu);
	return p;
}

void em_engine_tls_lifetime(struct em_engine *e, int64_t *half, uint32_t *gen)
{
	pthread_mutex_lock(&e->tls_mu);
	time_t nb = 0, na = 0;
	if (e->tls)
		em_tls_pipe_ctx_lifetime(e->tls, &nb, &na);
	*gen = atomic_load(&e->tls_gen);
	pthread_mutex_unlock(&e->tls_mu);
	*half = (int64_t)nb + ((int64_t)na - (int64_t)nb) / 2;
}
