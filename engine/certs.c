/* The node's tunnel certificates (certs.h). */
#include "engine/certs.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "proto/log.h"
#include "tunnel/pki.h"
#include "tunnel/tls_pipe.h"

#define MOD "certs"

/* <t> as "YYYY-MM-DD HH:MM:SS UTC" for logs. */
static const char *when(time_t t, char buf[32])
{
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, 32, "%lld", (long long)t);
	return buf;
}

struct em_certs {
	pthread_mutex_t mu;
	struct em_engine *eng;
	bool managed, cloud;
	uint32_t days;
	char node[EM_PKI_NODE_NAME_MAX + 1];
	char ca_file[PATH_MAX], cert_file[PATH_MAX], key_file[PATH_MAX];
	struct em_pki_ca *ca; /* a cloud with ca_dir: the signer */
	char *pending_key;    /* edge: the key of the request out */
};

static struct em_tls_pipe_ctx *load(struct em_certs *c, const char *ca, const char *cert,
                                    const char *key, char *err, size_t errlen)
{
	struct em_tls_pipe_files f = {
	        .ca_file = ca, .cert_file = cert, .key_file = key, .node_name = c->node};
	return em_tls_pipe_ctx_new(&f, err, errlen);
}

/* Cloud, managed: this node's own certificate from its CA when missing or
 * due. Returns 0 or -errno (logged). */
static int self_issue(struct em_certs *c)
{
	struct em_pki_cert_info info;
	char err[512];
	if (em_pki_cert_info_file(c->cert_file, &info, NULL, 0) == 0 &&
	    strcmp(info.node, c->node) == 0 && !em_pki_renew_due(&info, time(NULL)))
		return 0;
	char *pem = NULL;
	int rc = em_pki_ca_issue_pem(c->ca, c->node, c->days, 0, &pem, &info, err, sizeof(err));
	if (!rc)
		rc = em_pki_write_file(c->cert_file, pem, strlen(pem), 0600, err, sizeof(err));
	if (pem) {
		memset(pem, 0, strlen(pem));
		free(pem);
	}
	if (rc) {
		EM_ERR(MOD, "tunnel.tls: cannot issue this node's certificate: %s", err);
		return rc;
	}
	char w[32];
	EM_INFO(MOD, "issued this node's tunnel certificate (%s, serial %s, valid until %s)",
	        c->cert_file, info.serial, when(info.not_after, w));
	return 0;
}

int em_certs_new(const struct em_config *cfg, struct em_certs **out)
{
	*out = NULL;
	if (cfg->tunnel.encryption != EM_TUNNEL_TLS || !cfg->tunnel.cluster_key[0])
		return 0;
	struct em_certs *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	c->managed = cfg->tunnel.tls.managed;
	c->cloud = cfg->role == EM_ROLE_CLOUD;
	c->days = cfg->tunnel.tls.cert_days ? cfg->tunnel.tls.cert_days : EM_PKI_NODE_DAYS;
	snprintf(c->node, sizeof(c->node), "%s", cfg->node_name);
	snprintf(c->ca_file, sizeof(c->ca_file), "%s", cfg->tunnel.tls.ca_file);
	snprintf(c->cert_file, sizeof(c->cert_file), "%s", cfg->tunnel.tls.cert_file);
	snprintf(c->key_file, sizeof(c->key_file), "%s", cfg->tunnel.tls.key_file);
	if (c->cloud && cfg->tunnel.tls.ca_dir[0]) {
		char err[512], key[PATH_MAX + 8], crt[PATH_MAX + 8];
		snprintf(key, sizeof(key), "%s/ca.key", cfg->tunnel.tls.ca_dir);
		snprintf(crt, sizeof(crt), "%s/ca.crt", cfg->tunnel.tls.ca_dir);
		if (access(key, F_OK) != 0 && access(crt, F_OK) != 0) {
			/* First start of the cluster: its CA is made here (both
			 * files missing; one alone is an error below). */
			if (em_pki_ca_init(cfg->tunnel.tls.ca_dir, EM_PKI_CA_DAYS, err, sizeof(err))) {
				EM_ERR(MOD, "%s: tunnel.tls.ca_dir: %s", cfg->path, err);
				em_certs_free(c);
				return -EINVAL;
			}
			EM_INFO(MOD, "made the cluster CA in %s (ca.key stays on this node)",
			        cfg->tunnel.tls.ca_dir);
		}
		if (!(c->ca = em_pki_ca_load(cfg->tunnel.tls.ca_dir, err, sizeof(err)))) {
			EM_ERR(MOD, "%s: tunnel.tls.ca_dir: %s", cfg->path, err);
			em_certs_free(c);
			return -EINVAL;
		}
		int rc = c->managed ? self_issue(c) : 0;
		if (rc) {
			em_certs_free(c);
			return rc;
		}
	}
	*out = c;
	return 0;
}

void em_certs_attach(struct em_certs *c, struct em_engine *eng)
{
	pthread_mutex_lock(&c->mu);
	c->eng = eng;
	pthread_mutex_unlock(&c->mu);
}

void em_certs_free(struct em_certs *c)
{
	if (!c)
		return;
	em_pki_ca_free(c->ca);
	free(c->pending_key);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static int op_sign(void *ctx, const char *node, const char *csr, size_t len, int64_t now,
                   char **cert, char **ca, char *err, size_t errlen)
{
	struct em_certs *c = ctx;
	int rc = em_pki_ca_sign(c->ca, csr, len, node, c->days, (time_t)now, cert, NULL, err,
	                        errlen);
	if (rc)
		return rc;
	if (!(*ca = strdup(em_pki_ca_pem(c->ca)))) {
		free(*cert);
		*cert = NULL;
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static char *op_request(void *ctx, bool *enrolling)
{
	struct em_certs *c = ctx;
	struct em_pki_cert_info info;
	char err[512];
	pthread_mutex_lock(&c->mu);
	bool have = em_pki_cert_info_file(c->cert_file, &info, NULL, 0) == 0;
	char *csr = NULL;
	*enrolling = !have;
	if (have && !em_pki_renew_due(&info, time(NULL)))
		goto out;
	free(c->pending_key);
	c->pending_key = NULL;
	if (em_pki_csr_new(c->node, &c->pending_key, &csr, err, sizeof(err)))
		EM_WARN(MOD, "cannot make a certificate request: %s", err);
out:
	pthread_mutex_unlock(&c->mu);
	return csr;
}

static int op_install(void *ctx, const char *cert, const char *ca, char *err, size_t errlen)
{
	struct em_certs *c = ctx;
	char tmp_pem[PATH_MAX + 8], tmp_ca[PATH_MAX + 8];
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	if (!c->pending_key) {
		snprintf(err, errlen, "no request of ours is out");
		rc = -EINVAL;
		goto out;
	}
	if (strlen(cert) > EM_PKI_PEM_MAX || strlen(ca) > EM_PKI_PEM_MAX) {
		snprintf(err, errlen, "certificate over %d bytes", EM_PKI_PEM_MAX);
		rc = -EINVAL;
		goto out;
	}
	snprintf(tmp_pem, sizeof(tmp_pem), "%s.new", c->cert_file);
	snprintf(tmp_ca, sizeof(tmp_ca), "%s.new", c->ca_file);
	size_t a = strlen(cert), b = strlen(c->pending_key);
	char *both = malloc(a + b + 2);
	if (!both) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	memcpy(both, cert, a);
	both[a] = '\n';
	memcpy(both + a + 1, c->pending_key, b + 1);
	rc = em_pki_write_file(tmp_pem, both, a + b + 1, 0600, err, errlen);
	memset(both, 0, a + b + 1);
	free(both);
	if (!rc)
		rc = em_pki_write_file(tmp_ca, ca, strlen(ca), 0644, err, errlen);
	/* The new files must make a working context before they replace
	 * anything: the right node, our key, signed by that CA, valid now. */
	struct em_tls_pipe_ctx *tls = rc ? NULL : load(c, tmp_ca, tmp_pem, tmp_pem, err, errlen);
	if (!rc && !tls)
		rc = -EINVAL;
	if (!rc && (rename(tmp_ca, c->ca_file) || rename(tmp_pem, c->cert_file))) {
		rc = -errno;
		snprintf(err, errlen, "cannot replace %s: %s", c->cert_file, strerror(errno));
	}
	if (rc) {
		unlink(tmp_pem);
		unlink(tmp_ca);
		em_tls_pipe_ctx_free(tls);
		goto out;
	}
	struct em_pki_cert_info info;
	char w[32];
	if (em_pki_cert_info_pem(cert, strlen(cert), &info, NULL, 0) == 0)
		EM_INFO(MOD, "installed the tunnel certificate from the cloud (%s, serial %s, valid "
		             "until %s)",
		        c->cert_file, info.serial, when(info.not_after, w));
	free(c->pending_key);
	c->pending_key = NULL;
	if (c->eng)
		em_engine_tls_set(c->eng, tls);
	else
		em_tls_pipe_ctx_free(tls);
out:
	pthread_mutex_unlock(&c->mu);
	return rc;
}

static void op_revoked(void *ctx, const struct em_ctl_revocation *list, size_t n)
{
	struct em_certs *c = ctx;
	pthread_mutex_lock(&c->mu);
	if (c->eng)
		em_engine_tls_revoke(c->eng, list, n);
	pthread_mutex_unlock(&c->mu);
	if (n)
		EM_INFO(MOD, "%zu certificate revocation(s) in force", n);
}

void em_certs_ops(struct em_certs *c, struct em_ctl_cert_ops *ops)
{
	*ops = (struct em_ctl_cert_ops){.revoked = op_revoked, .ctx = c};
	if (c->ca)
		ops->sign = op_sign;
	if (c->managed && !c->cloud) {
		ops->request = op_request;
		ops->install = op_install;
	}
}

void em_certs_tick(struct em_certs *c)
{
	struct em_pki_cert_info info;
	pthread_mutex_lock(&c->mu);
	bool due = c->managed && c->ca &&
	           (em_pki_cert_info_file(c->cert_file, &info, NULL, 0) != 0 ||
	            em_pki_renew_due(&info, time(NULL)));
	pthread_mutex_unlock(&c->mu);
	if (due)
		em_certs_reload(c);
}

void em_certs_reload(struct em_certs *c)
{
	char err[512];
	pthread_mutex_lock(&c->mu);
	if (c->managed && c->ca)
		self_issue(c);
	if (access(c->cert_file, F_OK) != 0 && c->managed && !c->cloud) {
		pthread_mutex_unlock(&c->mu);
		return; /* still enrolling */
	}
	struct em_tls_pipe_ctx *tls = load(c, c->ca_file, c->cert_file, c->key_file, err, sizeof(err));
	if (!tls) {
		EM_ERR(MOD, "tunnel.tls: not reloaded, the running certificate stays: %s", err);
	} else if (c->eng) {
		time_t nb, na;
		em_tls_pipe_ctx_lifetime(tls, &nb, &na);
		char w[32];
		EM_INFO(MOD, "tunnel certificate reloaded (%s, valid until %s): new tunnels use it",
		        c->cert_file, when(na, w));
		em_engine_tls_set(c->eng, tls);
	} else {
		em_tls_pipe_ctx_free(tls);
	}
	pthread_mutex_unlock(&c->mu);
}
