/* Sans-I/O TLS 1.3 for tunnels (tls_pipe.h).
 *
 * The SSL object talks to one end of a BIO pair, the caller to the other.
 * A BIO pair rather than two memory BIOs: its two rings have a fixed size,
 * allocated once, so received and outgoing ciphertext are bounded without
 * counting, and no record makes a buffer grow. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tunnel/pki.h"
#include "tunnel/tls_pipe.h"

#define NAME_LEN  (EM_PKI_NODE_NAME_MAX + 1)
#define MAX_PLAIN 16384
/* Room a record needs beyond its plaintext; TLS 1.3 with AEAD ciphers needs
 * 22 bytes, the bound of RFC 8446 is 256 plus the header. */
#define RECORD_EXTRA (EM_TLS_PIPE_MAX_RECORD - MAX_PLAIN)

struct em_tls_pipe_ctx {
	SSL_CTX *ssl_ctx;
	char node[NAME_LEN];
	em_tls_pipe_check_fn check;
	void *check_arg;
	time_t own_not_before, own_not_after;
};

struct em_tls_pipe {
	SSL *ssl;
	BIO *net; /* the caller's end of the pair */
	enum em_tls_pipe_state state;
	bool want_write; /* OpenSSL waits for output room before it reads on */
	bool closing;
	char expected[NAME_LEN]; /* "" : learn it from the certificate */
	char peer[NAME_LEN];
	em_tls_pipe_check_fn check;
	void *check_arg;
	time_t peer_not_before;
	char err[EM_TLS_PIPE_ERR_LEN];
};

static void set_msg(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void set_msg(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
}

static const char *ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	return r ? r : "unknown error";
}

/* The node a certificate names: its only subjectAltName dNSName, which must
 * be a node name. Returns 0 with the name in <out>, or -1 with why not in
 * <why>. */
static int cert_node_name(X509 *x, char *out, char *why, size_t whylen)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int n = 0, rc = -1;

	out[0] = 0;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		if (g->type != GEN_DNS)
			continue;
		const ASN1_IA5STRING *s = g->d.dNSName;
		if (++n > 1)
			continue;
		if ((size_t)s->length >= NAME_LEN ||
		    memchr(s->data, 0, (size_t)s->length) != NULL) {
			set_msg(why, whylen, "its subjectAltName is not a node name");
			goto out;
		}
		memcpy(out, s->data, (size_t)s->length);
		out[s->length] = 0;
	}
	if (n == 0) {
		set_msg(why, whylen, "it has no subjectAltName dNSName (the node name)");
	} else if (n > 1) {
		set_msg(why, whylen,
		        "it names %d nodes (subjectAltName), a node certificate names one", n);
	} else {
		char e[200];
		if (em_pki_node_name_check(out, e, sizeof(e)) == 0)
			rc = 0;
		else
			set_msg(why, whylen, "its subjectAltName: %s", e);
	}
out:
	GENERAL_NAMES_free(names);
	if (rc)
		out[0] = 0;
	return rc;
}

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

/* ---- context ---- */

static int pem_error(char *err, size_t errlen, const char *what, const char *file)
{
	set_msg(err, errlen, "%s %s: %s", what, file, ssl_reason());
	ERR_clear_error();
	return -1;
}

static int verify_cb(int ok, X509_STORE_CTX *sctx);

/* Our own certificate must pass the checks the peer will make. */
static int check_own_cert(struct em_tls_pipe_ctx *c, const struct em_tls_pipe_files *f, char *err,
                          size_t errlen)
{
	X509 *crt = SSL_CTX_get0_certificate(c->ssl_ctx);
	STACK_OF(X509) *chain = NULL;
	X509_STORE_CTX *sctx;
	char why[200];
	int ok;

	if (!crt) {
		set_msg(err, errlen, "%s holds no certificate", f->cert_file);
		return -1;
	}
	if (cert_node_name(crt, c->node, why, sizeof(why))) {
		set_msg(err, errlen, "%s cannot identify a node: %s", f->cert_file, why);
		return -1;
	}
	if (f->node_name && strcmp(f->node_name, c->node) != 0) {
		set_msg(err, errlen, "%s is the certificate of node \"%s\", this node is \"%s\"",
		        f->cert_file, c->node, f->node_name);
		return -1;
	}
	if (X509_check_purpose(crt, X509_PURPOSE_SSL_CLIENT, 0) != 1 ||
	    X509_check_purpose(crt, X509_PURPOSE_SSL_SERVER, 0) != 1) {
		set_msg(err, errlen,
		        "%s cannot serve both ends of a tunnel: it needs extendedKeyUsage "
		        "serverAuth and clientAuth",
		        f->cert_file);
		ERR_clear_error();
		return -1;
	}
	SSL_CTX_get0_chain_certs(c->ssl_ctx, &chain);
	sctx = X509_STORE_CTX_new();
	if (!sctx || !X509_STORE_CTX_init(sctx, SSL_CTX_get_cert_store(c->ssl_ctx), crt, chain)) {
		X509_STORE_CTX_free(sctx);
		return pem_error(err, errlen, "cannot check", f->cert_file);
	}
	if (f->check_time)
		X509_STORE_CTX_set_time(sctx, 0, f->check_time);
	ok = X509_verify_cert(sctx);
	if (ok != 1)
		set_msg(err, errlen, "%s is not valid against the CA of %s: %s", f->cert_file,
		        f->ca_file, X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
	X509_STORE_CTX_free(sctx);
	ERR_clear_error();
	return ok == 1 ? 0 : -1;
}

struct em_tls_pipe_ctx *em_tls_pipe_ctx_new(const struct em_tls_pipe_files *f, char *err,
                                            size_t errlen)
{
	struct em_tls_pipe_ctx *c = calloc(1, sizeof(*c));
	EVP_PKEY *key = NULL;
	BIO *kb = NULL;
	SSL_CTX *s;

	ERR_clear_error();
	if (!c || !(c->ssl_ctx = s = SSL_CTX_new(TLS_method()))) {
		set_msg(err, errlen, "out of memory");
		free(c);
		return NULL;
	}
	if (!f->ca_file || !f->cert_file || !f->key_file) {
		set_msg(err, errlen, "ca_file, cert_file and key_file are all needed");
		goto fail;
	}
	if (!SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(s, TLS1_3_VERSION)) {
		pem_error(err, errlen, "TLS 1.3 is not available", "");
		goto fail;
	}
	/* Sessions are long-lived and few: no resumption, no tickets. */
	SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(s, 0);
	SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
	/* Send what cert_file holds, not a chain completed from the trusted
	 * CAs: the peer has the root already. */
	SSL_CTX_set_mode(s, SSL_MODE_NO_AUTO_CHAIN);
	/* AES-128-GCM first: as safe here and the fastest with AES-NI. */
	SSL_CTX_set_ciphersuites(s, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
	                            "TLS_CHACHA20_POLY1305_SHA256");
	if (SSL_CTX_load_verify_file(s, f->ca_file) != 1) {
		pem_error(err, errlen, "cannot load the CA certificate", f->ca_file);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(s, f->cert_file) != 1) {
		pem_error(err, errlen, "cannot load the certificate", f->cert_file);
		goto fail;
	}
	/* Read here rather than by SSL_CTX_use_PrivateKey_file(), whose
	 * "key values mismatch" would not say which files. */
	if (!(kb = BIO_new_file(f->key_file, "r")) ||
	    !(key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL))) {
		pem_error(err, errlen, "cannot load the private key", f->key_file);
		goto fail;
	}
	if (X509_check_private_key(SSL_CTX_get0_certificate(s), key) != 1) {
		set_msg(err, errlen, "%s is not the key of the certificate in %s", f->key_file,
		        f->cert_file);
		ERR_clear_error();
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey(s, key) != 1) {
		pem_error(err, errlen, "cannot use the private key", f->key_file);
		goto fail;
	}
	if (f->check_time)
		X509_VERIFY_PARAM_set_time(SSL_CTX_get0_param(s), f->check_time);
	if (check_own_cert(c, f, err, errlen))
		goto fail;
	SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	c->own_not_before = asn1_time(X509_get0_notBefore(SSL_CTX_get0_certificate(s)));
	c->own_not_after = asn1_time(X509_get0_notAfter(SSL_CTX_get0_certificate(s)));
	EVP_PKEY_free(key);
	BIO_free(kb);
	return c;
fail:
	EVP_PKEY_free(key);
	BIO_free(kb);
	em_tls_pipe_ctx_free(c);
	return NULL;
}

const char *em_tls_pipe_ctx_node_name(const struct em_tls_pipe_ctx *c)
{
	return c->node;
}

void em_tls_pipe_ctx_set_check(struct em_tls_pipe_ctx *c, em_tls_pipe_check_fn fn, void *arg)
{
	c->check = fn;
	c->check_arg = arg;
}

void em_tls_pipe_ctx_lifetime(const struct em_tls_pipe_ctx *c, time_t *not_before,
                              time_t *not_after)
{
	*not_before = c->own_not_before;
	*not_after = c->own_not_after;
}

time_t em_tls_pipe_peer_not_before(const struct em_tls_pipe *p)
{
	return p->state == EM_TLS_PIPE_OPEN ? p->peer_not_before : 0;
}

void em_tls_pipe_ctx_free(struct em_tls_pipe_ctx *c)
{
	if (!c)
		return;
	SSL_CTX_free(c->ssl_ctx);
	free(c);
}

/* ---- pipe ---- */

static void fail(struct em_tls_pipe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The first reason found wins: later ones are consequences. */
static void fail(struct em_tls_pipe *p, const char *fmt, ...)
{
	if (!p->err[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err, sizeof(p->err), fmt, ap);
		va_end(ap);
	}
	p->state = EM_TLS_PIPE_FAILED;
}

/* Checks a verified certificate's name; a refusal fails the pipe. */
static int check_name(struct em_tls_pipe *p, X509 *x)
{
	char why[200];

	if (cert_node_name(x, p->peer, why, sizeof(why))) {
		fail(p, "peer certificate refused: %s", why);
		return -1;
	}
	if (p->expected[0] && strcmp(p->expected, p->peer) != 0) {
		fail(p, "peer certificate refused: it names node \"%s\", expected \"%s\"", p->peer,
		     p->expected);
		p->peer[0] = 0;
		return -1;
	}
	p->peer_not_before = asn1_time(X509_get0_notBefore(x));
	const char *no = p->check ? p->check(p->check_arg, p->peer, p->peer_not_before) : NULL;
	if (no) {
		fail(p, "peer certificate of %s refused: %s", p->peer, no);
		p->peer[0] = 0;
		return -1;
	}
	return 0;
}

/* Runs for each certificate of the peer's chain, the leaf (depth 0) last:
 * turns OpenSSL's verdicts into our message and adds the node-name rules. */
static int verify_cb(int ok, X509_STORE_CTX *sctx)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct em_tls_pipe *p = ssl ? SSL_get_app_data(ssl) : NULL;

	if (!p)
		return ok;
	if (!ok) {
		int e = X509_STORE_CTX_get_error(sctx);
		fail(p, "peer certificate refused: %s", X509_verify_cert_error_string(e));
		return 0;
	}
	if (X509_STORE_CTX_get_error_depth(sctx) == 0 &&
	    check_name(p, X509_STORE_CTX_get_current_cert(sctx))) {
		X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}

struct em_tls_pipe *em_tls_pipe_new(struct em_tls_pipe_ctx *c, enum em_tls_pipe_role role,
                                    const char *peer_name)
{
	struct em_tls_pipe *p;
	BIO *inner = NULL;

	if (peer_name && em_pki_node_name_check(peer_name, NULL, 0))
		return NULL;
	if (!(p = calloc(1, sizeof(*p))))
		return NULL;
	if (peer_name)
		strcpy(p->expected, peer_name);
	p->check = c->check;
	p->check_arg = c->check_arg;
	ERR_clear_error();
	if (!(p->ssl = SSL_new(c->ssl_ctx)) ||
	    !BIO_new_bio_pair(&inner, EM_TLS_PIPE_BUF, &p->net, EM_TLS_PIPE_BUF))
		goto fail;
	SSL_set_bio(p->ssl, inner, inner);
	SSL_set_app_data(p->ssl, p);
	if (role == EM_TLS_PIPE_DIALER) {
		SSL_set_connect_state(p->ssl);
		/* The ClientHello: a new pipe's ring has room for it. */
		if (SSL_do_handshake(p->ssl) == 1)
			goto fail;
		if (SSL_get_error(p->ssl, -1) != SSL_ERROR_WANT_READ)
			goto fail;
	} else {
		SSL_set_accept_state(p->ssl);
	}
	ERR_clear_error();
	return p;
fail:
	ERR_clear_error();
	em_tls_pipe_free(p);
	return NULL;
}

void em_tls_pipe_free(struct em_tls_pipe *p)
{
	if (!p)
		return;
	SSL_free(p->ssl); /* frees the inner BIO too */
	BIO_free(p->net);
	free(p);
}

/* Sets FAILED with the best message there is after an OpenSSL failure. */
static void fail_ssl(struct em_tls_pipe *p, int rc)
{
	int e = SSL_get_error(p->ssl, rc);
	unsigned long code = ERR_peek_last_error();
	long v = SSL_get_verify_result(p->ssl);

	if (p->err[0]) {
		p->state = EM_TLS_PIPE_FAILED; /* the verify callback said why */
	} else if (v != X509_V_OK) {
		fail(p, "peer certificate refused: %s", X509_verify_cert_error_string(v));
	} else if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
	           ERR_GET_REASON(code) >= SSL_AD_REASON_OFFSET) {
		fail(p, "the peer ended the connection: %s", ssl_reason());
	} else if (code) {
		fail(p, "TLS error: %s", ssl_reason());
	} else {
		fail(p, "TLS error (%s)",
		     e == SSL_ERROR_SYSCALL ? "unexpected end of the stream" : "internal");
	}
	ERR_clear_error();
}

static void handshake(struct em_tls_pipe *p)
{
	int rc, e;

	if (p->state != EM_TLS_PIPE_HANDSHAKE)
		return;
	ERR_clear_error();
	rc = SSL_do_handshake(p->ssl);
	if (rc == 1) {
		/* The callback checked the name already; this covers a chain
		 * verified without it reaching depth 0 with success. */
		X509 *peer = SSL_get0_peer_certificate(p->ssl);
		if (!peer)
			fail(p, "peer sent no certificate");
		else if (check_name(p, peer) == 0)
			p->state = EM_TLS_PIPE_OPEN;
		return;
	}
	e = SSL_get_error(p->ssl, rc);
	if (e == SSL_ERROR_WANT_READ)
		return;
	if (e == SSL_ERROR_WANT_WRITE) {
		p->want_write = true;
		return;
	}
	fail_ssl(p, rc);
}

ssize_t em_tls_pipe_input(struct em_tls_pipe *p, const void *data, size_t len)
{
	int n;

	if (p->state == EM_TLS_PIPE_FAILED)
		return -EPROTO;
	if (len == 0)
		return 0;
	if (len > INT32_MAX)
		len = INT32_MAX;
	n = BIO_write(p->net, data, (int)len);
	if (n <= 0)
		return 0; /* ring full */
	handshake(p);
	return n;
}

ssize_t em_tls_pipe_read(struct em_tls_pipe *p, void *buf, size_t cap)
{
	int rc, e;

	if (p->state == EM_TLS_PIPE_HANDSHAKE) {
		/* Room was made, or input came: try again. */
		p->want_write = false;
		handshake(p);
	}
	if (p->state == EM_TLS_PIPE_FAILED)
		return -EPROTO;
	if (p->state == EM_TLS_PIPE_CLOSED)
		return -EPIPE;
	if (p->state == EM_TLS_PIPE_HANDSHAKE || cap == 0)
		return 0;
	if (cap > INT32_MAX)
		cap = INT32_MAX;
	p->want_write = false;
	ERR_clear_error();
	rc = SSL_read(p->ssl, buf, (int)cap);
	if (rc > 0)
		return rc;
	e = SSL_get_error(p->ssl, rc);
	if (e == SSL_ERROR_WANT_READ)
		return 0;
	if (e == SSL_ERROR_WANT_WRITE) {
		p->want_write = true;
		return 0;
	}
	if (e == SSL_ERROR_ZERO_RETURN) {
		p->state = EM_TLS_PIPE_CLOSED;
		return -EPIPE;
	}
	fail_ssl(p, rc);
	return -EPROTO;
}

ssize_t em_tls_pipe_write(struct em_tls_pipe *p, const void *data, size_t len)
{
	size_t room;
	int rc;

	if (p->state == EM_TLS_PIPE_FAILED)
		return -EPROTO;
	if (p->closing || p->state == EM_TLS_PIPE_CLOSED)
		return -EPIPE;
	/* A write now would first flush what SSL_read left pending, which
	 * OpenSSL allows only with the same arguments: wait for the read. */
	if (p->state != EM_TLS_PIPE_OPEN || p->want_write || len == 0)
		return 0;
	room = BIO_ctrl_get_write_guarantee(SSL_get_wbio(p->ssl));
	if (room <= RECORD_EXTRA)
		return 0;
	room -= RECORD_EXTRA;
	if (len > room)
		len = room;
	if (len > MAX_PLAIN)
		len = MAX_PLAIN;
	/* One record that fits in the ring: SSL_write cannot block half-way. */
	ERR_clear_error();
	rc = SSL_write(p->ssl, data, (int)len);
	if (rc > 0)
		return rc;
	fail_ssl(p, rc);
	return -EPROTO;
}

size_t em_tls_pipe_output(struct em_tls_pipe *p, const uint8_t **data)
{
	char *buf;
	ssize_t n = BIO_nread0(p->net, &buf);

	if (n <= 0) {
		*data = NULL;
		return 0;
	}
	*data = (const uint8_t *)buf;
	return (size_t)n;
}

void em_tls_pipe_output_advance(struct em_tls_pipe *p, size_t n)
{
	char *buf;

	while (n > 0) {
		int step = n > INT32_MAX ? INT32_MAX : (int)n;
		int got = BIO_nread(p->net, &buf, step);
		if (got <= 0)
			break;
		n -= (size_t)got;
	}
}

void em_tls_pipe_close(struct em_tls_pipe *p)
{
	if (p->closing || p->state != EM_TLS_PIPE_OPEN)
		return;
	p->closing = true;
	ERR_clear_error();
	SSL_shutdown(p->ssl); /* queues close_notify; the answer is not awaited */
	ERR_clear_error();
}

enum em_tls_pipe_state em_tls_pipe_state(const struct em_tls_pipe *p)
{
	return p->state;
}

const char *em_tls_pipe_peer_name(const struct em_tls_pipe *p)
{
	return p->state == EM_TLS_PIPE_OPEN ? p->peer : "";
}

int em_tls_pipe_check_peer(struct em_tls_pipe *p, const char *claimed)
{
	if (p->state == EM_TLS_PIPE_HANDSHAKE)
		return -EAGAIN;
	if (p->state != EM_TLS_PIPE_OPEN)
		return -EACCES;
	if (claimed && strcmp(claimed, p->peer) == 0)
		return 0;
	fail(p, "peer claims to be node \"%.*s\" but its certificate names \"%s\"",
	     claimed ? EM_PKI_NODE_NAME_MAX : 0, claimed ? claimed : "", p->peer);
	return -EACCES;
}

const char *em_tls_pipe_error(const struct em_tls_pipe *p)
{
	return p->err;
}
