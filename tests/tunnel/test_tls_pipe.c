/* Two TLS pipes joined in memory: the test moves each one's output into the
 * other's input in chunks of odd sizes, so records arrive split anywhere,
 * and reads and writes plaintext in odd sizes too. Certificates are made
 * with tunnel/pki.h in a fresh directory per test. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tunnel/pki.h"
#include "tunnel/tls_pipe.h"

static char dir[PATH_MAX];
static uint32_t rng = 2463534242u;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng % n;
}

static const char *at(const char *rel)
{
	static char paths[64][PATH_MAX + 64];
	static int next;
	char *p = paths[next++ % 64];
	snprintf(p, PATH_MAX + 64, "%s/%s", dir, rel);
	return p;
}

static void make_ca(const char *sub)
{
	char err[512];
	cr_assert_eq(em_pki_ca_init(at(sub), 30, err, sizeof(err)), 0, "%s", err);
}

static void issue_at(const char *ca, const char *node, time_t now, unsigned days)
{
	char err[512];
	struct em_pki_issue req = {
	        .ca_dir = at(ca), .node = node, .out_dir = at(ca), .days = days, .now = now};
	cr_assert_eq(em_pki_cert_issue(&req, err, sizeof(err)), 0, "%s", err);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/em-tls-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	make_ca("a");
	issue_at("a", "node-a", 0, 30);
	issue_at("a", "node-b", 0, 30);
	make_ca("b");
	issue_at("b", "node-a", 0, 30);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(tls_pipe, .init = setup, .fini = teardown);

/* A context for <node> of CA <ca>, trusting <trust> (a file under dir). */
static struct em_tls_pipe_ctx *ctx_for(const char *ca, const char *node, const char *trust)
{
	char crt[64], key[64], err[EM_TLS_PIPE_ERR_LEN];
	snprintf(crt, sizeof(crt), "%s/%s.crt", ca, node);
	snprintf(key, sizeof(key), "%s/%s.key", ca, node);
	struct em_tls_pipe_files f = {
	        .ca_file = at(trust), .cert_file = at(crt), .key_file = at(key), .node_name = node};
	struct em_tls_pipe_ctx *c = em_tls_pipe_ctx_new(&f, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	cr_assert_str_eq(em_tls_pipe_ctx_node_name(c), node);
	return c;
}

/* Moves up to <max> bytes of <from>'s output into <to>, in pieces of at
 * most <chunk> bytes; returns the bytes moved. */
static size_t move(struct em_tls_pipe *from, struct em_tls_pipe *to, size_t chunk, size_t max)
{
	size_t moved = 0;
	while (moved < max) {
		const uint8_t *d;
		size_t n = em_tls_pipe_output(from, &d);
		if (n == 0)
			break;
		if (n > chunk)
			n = chunk;
		if (n > max - moved)
			n = max - moved;
		ssize_t took = em_tls_pipe_input(to, d, n);
		if (took <= 0)
			break;
		em_tls_pipe_output_advance(from, (size_t)took);
		moved += (size_t)took;
	}
	return moved;
}

/* Runs the handshake; returns when neither side moves any more. */
static void handshake(struct em_tls_pipe *d, struct em_tls_pipe *a)
{
	uint8_t scratch[64];
	for (int i = 0; i < 100; i++) {
		size_t m = move(d, a, 1 + rnd(700), SIZE_MAX) + move(a, d, 1 + rnd(700), SIZE_MAX);
		em_tls_pipe_read(d, scratch, sizeof(scratch));
		em_tls_pipe_read(a, scratch, sizeof(scratch));
		if (m == 0)
			return;
	}
	cr_assert_fail("handshake did not settle");
}

Test(tls_pipe, handshake_and_names)
{
	struct em_tls_pipe_ctx *ca = ctx_for("a", "node-a", "a/ca.crt");
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");
	struct em_tls_pipe *d = em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-b");
	struct em_tls_pipe *a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
	cr_assert(d && a);
	/* Contexts may go before their pipes. */
	em_tls_pipe_ctx_free(ca);
	em_tls_pipe_ctx_free(cb);

	const uint8_t *hello;
	cr_assert_gt(em_tls_pipe_output(d, &hello), 0, "no ClientHello queued");
	cr_assert_eq(hello[0], 22); /* handshake record */
	cr_assert_eq(em_tls_pipe_output(a, &hello), 0);
	cr_assert_eq(em_tls_pipe_write(d, "x", 1), 0, "write before the handshake");
	cr_assert_eq(em_tls_pipe_check_peer(a, "node-a"), -EAGAIN);
	cr_assert_str_eq(em_tls_pipe_peer_name(a), "");

	handshake(d, a);
	cr_assert_eq(em_tls_pipe_state(d), EM_TLS_PIPE_OPEN, "%s", em_tls_pipe_error(d));
	cr_assert_eq(em_tls_pipe_state(a), EM_TLS_PIPE_OPEN, "%s", em_tls_pipe_error(a));
	cr_assert_str_eq(em_tls_pipe_peer_name(d), "node-b");
	cr_assert_str_eq(em_tls_pipe_peer_name(a), "node-a");
	cr_assert_eq(em_tls_pipe_check_peer(a, "node-a"), 0);
	cr_assert_str_eq(em_tls_pipe_error(a), "");

	/* A clean close reaches the other end as CLOSED. */
	cr_assert_eq(em_tls_pipe_write(d, "bye", 3), 3);
	em_tls_pipe_close(d);
	cr_assert_eq(em_tls_pipe_write(d, "x", 1), -EPIPE);
	move(d, a, 5, SIZE_MAX);
	char buf[8];
	cr_assert_eq(em_tls_pipe_read(a, buf, sizeof(buf)), 3);
	cr_assert_eq(memcmp(buf, "bye", 3), 0);
	cr_assert_eq(em_tls_pipe_read(a, buf, sizeof(buf)), -EPIPE);
	cr_assert_eq(em_tls_pipe_state(a), EM_TLS_PIPE_CLOSED);

	em_tls_pipe_free(d);
	em_tls_pipe_free(a);
}

Test(tls_pipe, claimed_name_must_match_certificate)
{
	struct em_tls_pipe_ctx *ca = ctx_for("a", "node-a", "a/ca.crt");
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");
	struct em_tls_pipe *d = em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-b");
	struct em_tls_pipe *a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
	handshake(d, a);
	cr_assert_eq(em_tls_pipe_state(a), EM_TLS_PIPE_OPEN);
	/* node-a's certificate, HELLO says node-c: a node can only be itself. */
	cr_assert_eq(em_tls_pipe_check_peer(a, "node-c"), -EACCES);
	cr_assert_eq(em_tls_pipe_state(a), EM_TLS_PIPE_FAILED);
	cr_assert(strstr(em_tls_pipe_error(a), "\"node-c\"") &&
	                  strstr(em_tls_pipe_error(a), "\"node-a\""),
	          "%s", em_tls_pipe_error(a));
	char buf[8];
	cr_assert_eq(em_tls_pipe_read(a, buf, sizeof(buf)), -EPROTO);
	cr_assert_eq(em_tls_pipe_write(a, "x", 1), -EPROTO);
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);
	em_tls_pipe_ctx_free(ca);
	em_tls_pipe_ctx_free(cb);
}

/* 1 MiB each way at once, byte-exact, every size odd or random. */
Test(tls_pipe, one_mib_both_ways)
{
	enum { TOTAL = 1 << 20 };
	struct em_tls_pipe_ctx *ca = ctx_for("a", "node-a", "a/ca.crt");
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");
	struct em_tls_pipe *p[2] = {em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-b"),
	                            em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, "node-a")};
	handshake(p[0], p[1]);
	cr_assert_eq(em_tls_pipe_state(p[0]), EM_TLS_PIPE_OPEN, "%s", em_tls_pipe_error(p[0]));
	cr_assert_eq(em_tls_pipe_state(p[1]), EM_TLS_PIPE_OPEN, "%s", em_tls_pipe_error(p[1]));

	uint8_t *src[2], *dst[2];
	size_t sent[2] = {0, 0}, got[2] = {0, 0};
	for (int s = 0; s < 2; s++) {
		src[s] = malloc(TOTAL);
		dst[s] = malloc(TOTAL);
		for (size_t i = 0; i < TOTAL; i++)
			src[s][i] = (uint8_t)(i * 31 + i / 251 + s * 7);
	}
	size_t max_out = 0;
	uint8_t buf[20011];
	for (int round = 0; round < 100000 && (got[0] < TOTAL || got[1] < TOTAL); round++) {
		for (int s = 0; s < 2; s++) {
			struct em_tls_pipe *me = p[s], *peer = p[1 - s];
			if (sent[s] < TOTAL) {
				size_t n = 1 + 2 * rnd(9000); /* odd */
				if (n > TOTAL - sent[s])
					n = TOTAL - sent[s];
				ssize_t w = em_tls_pipe_write(me, src[s] + sent[s], n);
				cr_assert_geq(w, 0, "%s", em_tls_pipe_error(me));
				sent[s] += (size_t)w;
			}
			/* The output ring is the bound on queued ciphertext. */
			size_t queued = 0;
			const uint8_t *d;
			size_t n0 = em_tls_pipe_output(me, &d);
			queued = n0;
			if (queued > max_out)
				max_out = queued;
			move(me, peer, 1 + 2 * rnd(3000), 1 + rnd(40000));
			for (int k = 0; k < 4; k++) {
				size_t cap = 1 + 2 * rnd((sizeof(buf) - 1) / 2);
				ssize_t r = em_tls_pipe_read(peer, buf, cap);
				cr_assert_geq(r, 0, "%s", em_tls_pipe_error(peer));
				if (r == 0)
					break;
				cr_assert_leq(got[s] + (size_t)r, TOTAL);
				memcpy(dst[s] + got[s], buf, (size_t)r);
				got[s] += (size_t)r;
			}
		}
	}
	for (int s = 0; s < 2; s++) {
		cr_assert_eq(got[s], TOTAL, "side %d got %zu of %d", s, got[s], TOTAL);
		cr_assert_eq(memcmp(src[s], dst[s], TOTAL), 0, "side %d: bytes differ", s);
		free(src[s]);
		free(dst[s]);
	}
	cr_assert_leq(max_out, EM_TLS_PIPE_BUF);
	em_tls_pipe_free(p[0]);
	em_tls_pipe_free(p[1]);
	em_tls_pipe_ctx_free(ca);
	em_tls_pipe_ctx_free(cb);
}

/* Nobody drains: input and output stop at their rings' size. */
Test(tls_pipe, bounded)
{
	struct em_tls_pipe_ctx *ca = ctx_for("a", "node-a", "a/ca.crt");
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");
	struct em_tls_pipe *d = em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-b");
	struct em_tls_pipe *a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
	handshake(d, a);
	static uint8_t big[1 << 20];
	size_t taken = 0;
	for (;;) {
		ssize_t w = em_tls_pipe_write(d, big, sizeof(big));
		cr_assert_geq(w, 0);
		if (w == 0)
			break;
		taken += (size_t)w;
	}
	cr_assert_gt(taken, 16384);
	cr_assert_leq(taken, EM_TLS_PIPE_BUF);
	size_t out = 0;
	const uint8_t *o;
	size_t n;
	while ((n = em_tls_pipe_output(d, &o)) > 0) {
		ssize_t took = em_tls_pipe_input(a, o, n);
		em_tls_pipe_output_advance(d, n);
		cr_assert_eq(took, (ssize_t)n);
		out += n;
	}
	cr_assert_leq(out, EM_TLS_PIPE_BUF);
	/* The receive ring holds it all; more is refused until read. */
	cr_assert_eq(em_tls_pipe_write(d, big, 40000), 16384);
	n = em_tls_pipe_output(d, &o);
	ssize_t took = em_tls_pipe_input(a, o, n);
	cr_assert_lt(took, (ssize_t)n);
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);
	em_tls_pipe_ctx_free(ca);
	em_tls_pipe_ctx_free(cb);
}

/* Runs a handshake expected to fail; returns the pipe whose message is
 * checked (the one that refused). */
static void refused(struct em_tls_pipe *d, struct em_tls_pipe *a, struct em_tls_pipe *who,
                    const char *needle)
{
	handshake(d, a);
	/* The dialer learns of a refusal of its certificate on a read. */
	char buf[16];
	em_tls_pipe_read(d, buf, sizeof(buf));
	cr_assert_eq(em_tls_pipe_state(who), EM_TLS_PIPE_FAILED, "state %d",
	             em_tls_pipe_state(who));
	cr_assert(strstr(em_tls_pipe_error(who), needle), "error \"%s\" lacks \"%s\"",
	          em_tls_pipe_error(who), needle);
	cr_assert_eq(em_tls_pipe_read(who, buf, sizeof(buf)), -EPROTO);
	cr_assert_str_eq(em_tls_pipe_peer_name(who), "");
	/* The other side does not get to OPEN with data flowing either. */
	struct em_tls_pipe *other = who == d ? a : d;
	cr_assert_neq(em_tls_pipe_read(other, buf, sizeof(buf)) > 0, true);
	cr_assert_eq(em_tls_pipe_state(other), EM_TLS_PIPE_FAILED, "other side: state %d",
	             em_tls_pipe_state(other));
}

Test(tls_pipe, certificate_of_another_ca_is_refused)
{
	/* The dialer trusts both CAs but holds CA b's certificate: the
	 * acceptor, which trusts only CA a, refuses it. */
	char both[PATH_MAX + 64];
	snprintf(both, sizeof(both), "cat '%s' '%s' > '%s'", at("a/ca.crt"), at("b/ca.crt"),
	         at("both.crt"));
	cr_assert_eq(system(both), 0);
	struct em_tls_pipe_ctx *cd = ctx_for("b", "node-a", "both.crt");
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");
	struct em_tls_pipe *d = em_tls_pipe_new(cd, EM_TLS_PIPE_DIALER, "node-b");
	struct em_tls_pipe *a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
	refused(d, a, a, "peer certificate refused: unable to get local issuer certificate");
	cr_assert(strstr(em_tls_pipe_error(d), "the peer ended the connection"), "%s",
	          em_tls_pipe_error(d));
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);

	/* And the other way: a dialer of CA b refuses an acceptor of CA a. */
	struct em_tls_pipe_ctx *cd2 = ctx_for("b", "node-a", "b/ca.crt");
	d = em_tls_pipe_new(cd2, EM_TLS_PIPE_DIALER, "node-b");
	a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
	refused(d, a, d, "peer certificate refused: unable to get local issuer certificate");
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);
	em_tls_pipe_ctx_free(cd);
	em_tls_pipe_ctx_free(cd2);
	em_tls_pipe_ctx_free(cb);
}

Test(tls_pipe, expired_certificate_is_refused)
{
	/* Good for a day, until 10 s ago; the CA is 5 minutes old. */
	time_t then = time(NULL) - 86400 - 10;
	issue_at("a", "node-old", then, 1);
	/* The old node loads its certificate as at the time it was good. */
	char err[EM_TLS_PIPE_ERR_LEN];
	struct em_tls_pipe_files f = {.ca_file = at("a/ca.crt"),
	                              .cert_file = at("a/node-old.crt"),
	                              .key_file = at("a/node-old.key"),
	                              .check_time = time(NULL) - 100};
	struct em_tls_pipe_ctx *cold = em_tls_pipe_ctx_new(&f, err, sizeof(err));
	cr_assert_not_null(cold, "%s", err);
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");
	struct em_tls_pipe *d = em_tls_pipe_new(cold, EM_TLS_PIPE_DIALER, "node-b");
	struct em_tls_pipe *a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
	refused(d, a, a, "peer certificate refused: certificate has expired");
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);

	/* As acceptor, its expired certificate is refused by the dialer. */
	struct em_tls_pipe_ctx *ca = ctx_for("a", "node-a", "a/ca.crt");
	d = em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-old");
	a = em_tls_pipe_new(cold, EM_TLS_PIPE_ACCEPTOR, NULL);
	refused(d, a, d, "certificate has expired");
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);

	/* Checked against the clock, the context itself is refused. */
	f.check_time = 0;
	cr_assert_null(em_tls_pipe_ctx_new(&f, err, sizeof(err)));
	cr_assert(strstr(err, "certificate has expired") && strstr(err, "node-old.crt"), "%s", err);
	em_tls_pipe_ctx_free(cold);
	em_tls_pipe_ctx_free(cb);
	em_tls_pipe_ctx_free(ca);
}

Test(tls_pipe, unexpected_peer_name_is_refused)
{
	issue_at("a", "node-c", 0, 30);
	struct em_tls_pipe_ctx *ca = ctx_for("a", "node-a", "a/ca.crt");
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");

	/* The dialer meant to reach node-c; node-b answered. */
	struct em_tls_pipe *d = em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-c");
	struct em_tls_pipe *a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
	refused(d, a, d, "it names node \"node-b\", expected \"node-c\"");
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);

	/* The acceptor expected node-c; node-a dialled. */
	d = em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-b");
	a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, "node-c");
	refused(d, a, a, "it names node \"node-a\", expected \"node-c\"");
	em_tls_pipe_free(d);
	em_tls_pipe_free(a);

	cr_assert_null(em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "Not A Node"));
	em_tls_pipe_ctx_free(ca);
	em_tls_pipe_ctx_free(cb);
}

Test(tls_pipe, garbage_fails_cleanly)
{
	struct em_tls_pipe_ctx *ca = ctx_for("a", "node-a", "a/ca.crt");
	struct em_tls_pipe_ctx *cb = ctx_for("a", "node-b", "a/ca.crt");
	uint8_t junk[4096], buf[256];

	/* Before any handshake, either role. */
	for (int trial = 0; trial < 50; trial++) {
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)rnd(256);
		if (trial % 2)
			junk[0] = 22; /* looks like a handshake record */
		struct em_tls_pipe *p = em_tls_pipe_new(
		        trial % 3 ? cb : ca, trial % 3 ? EM_TLS_PIPE_ACCEPTOR : EM_TLS_PIPE_DIALER,
		        NULL);
		size_t off = 0;
		ssize_t r = 0;
		while (off < sizeof(junk) && r >= 0) {
			ssize_t took = em_tls_pipe_input(p, junk + off, 1 + rnd(1000));
			if (took < 0)
				break;
			off += (size_t)took;
			r = em_tls_pipe_read(p, buf, sizeof(buf));
		}
		cr_assert_eq(em_tls_pipe_state(p), EM_TLS_PIPE_FAILED, "trial %d: state %d", trial,
		             em_tls_pipe_state(p));
		cr_assert_eq(em_tls_pipe_read(p, buf, sizeof(buf)), -EPROTO);
		cr_assert_eq(em_tls_pipe_input(p, junk, 10), -EPROTO);
		cr_assert_neq(em_tls_pipe_error(p)[0], 0);
		em_tls_pipe_free(p);
	}

	/* After the handshake: a flipped bit in a record, then plain junk. */
	for (int mode = 0; mode < 2; mode++) {
		struct em_tls_pipe *d = em_tls_pipe_new(ca, EM_TLS_PIPE_DIALER, "node-b");
		struct em_tls_pipe *a = em_tls_pipe_new(cb, EM_TLS_PIPE_ACCEPTOR, NULL);
		handshake(d, a);
		cr_assert_eq(em_tls_pipe_state(a), EM_TLS_PIPE_OPEN);
		cr_assert_eq(em_tls_pipe_write(d, "hello there", 11), 11);
		const uint8_t *o;
		size_t n = em_tls_pipe_output(d, &o);
		uint8_t rec[256];
		cr_assert_leq(n, sizeof(rec));
		memcpy(rec, o, n);
		em_tls_pipe_output_advance(d, n);
		if (mode == 0)
			rec[n - 3] ^= 0x10;
		else
			memset(rec, 0x41, n);
		cr_assert_eq(em_tls_pipe_input(a, rec, n), (ssize_t)n);
		cr_assert_eq(em_tls_pipe_read(a, buf, sizeof(buf)), -EPROTO);
		cr_assert(strstr(em_tls_pipe_error(a), "TLS error"), "%s", em_tls_pipe_error(a));
		em_tls_pipe_free(d);
		em_tls_pipe_free(a);
	}
	em_tls_pipe_ctx_free(ca);
	em_tls_pipe_ctx_free(cb);
}

Test(tls_pipe, context_errors_name_the_file)
{
	char err[EM_TLS_PIPE_ERR_LEN];
	struct em_tls_pipe_files f = {.ca_file = at("a/ca.crt"),
	                              .cert_file = at("a/node-a.crt"),
	                              .key_file = at("a/node-b.key")};
	cr_assert_null(em_tls_pipe_ctx_new(&f, err, sizeof(err)));
	cr_assert(strstr(err, at("a/node-b.key")) && strstr(err, "not the key"), "%s", err);

	f.key_file = at("a/missing.key");
	cr_assert_null(em_tls_pipe_ctx_new(&f, err, sizeof(err)));
	cr_assert(strstr(err, at("a/missing.key")), "%s", err);

	f.key_file = at("a/node-a.key");
	f.ca_file = at("a/nothing.crt");
	cr_assert_null(em_tls_pipe_ctx_new(&f, err, sizeof(err)));
	cr_assert(strstr(err, at("a/nothing.crt")), "%s", err);

	/* Our own certificate from another CA than the one we trust. */
	f.ca_file = at("b/ca.crt");
	cr_assert_null(em_tls_pipe_ctx_new(&f, err, sizeof(err)));
	cr_assert(strstr(err, at("a/node-a.crt")) && strstr(err, "not valid against"), "%s", err);

	/* The certificate of another node than this one. */
	f.ca_file = at("a/ca.crt");
	f.node_name = "node-b";
	cr_assert_null(em_tls_pipe_ctx_new(&f, err, sizeof(err)));
	cr_assert(strstr(err, "\"node-a\"") && strstr(err, "\"node-b\""), "%s", err);

	/* The CA's own certificate is no node's. */
	f.node_name = NULL;
	f.cert_file = at("a/ca.crt");
	f.key_file = at("a/ca.key");
	cr_assert_null(em_tls_pipe_ctx_new(&f, err, sizeof(err)));
	cr_assert(strstr(err, "no subjectAltName"), "%s", err);

	f.cert_file = at("a/node-a.crt");
	f.key_file = at("a/node-a.key");
	struct em_tls_pipe_ctx *c = em_tls_pipe_ctx_new(&f, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	em_tls_pipe_ctx_free(c);
}
