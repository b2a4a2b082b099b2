/* libFuzzer harness for a tunnel session behind its TLS pipe, as the engine
 * runs it with tunnel.encryption "tls": two nodes complete the TLS 1.3
 * handshake (mutual certificates of one CA) and the tunnel handshake inside
 * it, then the input reaches the acceptor's side in one of three ways
 * (its first byte % 3):
 *   0  raw bytes on the wire after the handshake, as anyone on the path
 *      could inject them: not one byte of plaintext may come out of them
 *      (no record can be forged without the keys), and the pipe ends FAILED
 *      or still waiting;
 *   1  plaintext the authenticated peer sends, in real records: the session
 *      must keep its queues within their caps (as in fuzz_session);
 *   2  the same records with one byte changed on the wire (where: the next
 *      two input bytes; how: the third): the plaintext delivered must be
 *      a prefix of what was sent and must stop before the changed record.
 * Whatever happens, the tunnel is then closed as the engine closes it
 * (session destroyed, pipe freed: no leak), and a second tunnel between the
 * same two contexts, up since the start, must still carry a message each
 * way: a malformed record closes only its own tunnel. The certificates are
 * made once, in a temporary directory removed at once after loading. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tunnel/pki.h"
#include "tunnel/session.h"
#include "tunnel/tls_pipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_SEND_BUF 4096
#define FZ_CTRL_BUF 1024

static struct em_tls_pipe_ctx *ctx_a, *ctx_b;

/* One end of a tunnel: its session (may be NULL) and its pipe. */
struct end {
	struct em_tunnel_session *s;
	struct em_tls_pipe *p;
	uint64_t delivered; /* plaintext bytes the pipe gave out */
};

static void on_event(void *ctxp, const struct em_tunnel_event *ev)
{
	struct end *e = ctxp;
	if (!e->s)
		return;
	if (ev->type == EM_TUNNEL_EV_DATA) {
		if (ev->data.len && (uint8_t)ev->data.base[0] == 0xee)
			em_tunnel_session_reset(e->s, ev->stream_id, EM_REASON_CANCEL, "fuzz");
		else
			em_tunnel_session_consume(e->s, ev->stream_id, ev->data.len, 0);
	} else if (ev->type == EM_TUNNEL_EV_STREAM_OPEN) {
		em_tunnel_session_write(e->s, ev->stream_id, "ok", 2, (ev->stream_id & 2) != 0);
	}
}

static void on_release(void *ctxp, uint64_t token)
{
	(void)ctxp;
	(void)token;
}

static struct em_tls_pipe_ctx *load(const char *dir, const char *node)
{
	char ca[PATH_MAX], crt[PATH_MAX], key[PATH_MAX], err[512];
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(crt, sizeof(crt), "%s/%s.crt", dir, node);
	snprintf(key, sizeof(key), "%s/%s.key", dir, node);
	struct em_pki_issue req = {.ca_dir = dir, .node = node, .out_dir = dir, .days = 2};
	if (em_pki_cert_issue(&req, err, sizeof(err)))
		abort();
	struct em_tls_pipe_files f = {.ca_file = ca, .cert_file = crt, .key_file = key};
	struct em_tls_pipe_ctx *c = em_tls_pipe_ctx_new(&f, err, sizeof(err));
	unlink(crt);
	unlink(key);
	if (!c)
		abort();
	return c;
}

/* Moves ciphertext from <from>'s pipe to <to>'s; returns the bytes moved. */
static size_t wire(struct end *from, struct end *to)
{
	const uint8_t *o;
	size_t q, moved = 0;
	while ((q = em_tls_pipe_output(from->p, &o)) > 0) {
		ssize_t took = em_tls_pipe_input(to->p, o, q);
		if (took <= 0)
			break;
		em_tls_pipe_output_advance(from->p, (size_t)took);
		moved += (size_t)took;
	}
	return moved;
}

/* Plaintext out of <e>'s pipe into its session (if any); into <copy> (up to
 * <cap> bytes, from <*at>) when given. Returns the bytes read, or -1 once the
 * pipe is CLOSED or FAILED. */
static ssize_t up(struct end *e, uint8_t *copy, size_t cap, size_t *at)
{
	uint8_t buf[4096];
	ssize_t r, total = 0;
	while ((r = em_tls_pipe_read(e->p, buf, sizeof(buf))) > 0) {
		e->delivered += (uint64_t)r;
		total += r;
		if (copy) {
			if (*at + (size_t)r > cap)
				abort(); /* more plaintext than was ever sent */
			memcpy(copy + *at, buf, (size_t)r);
			*at += (size_t)r;
		}
		if (e->s)
			em_tunnel_session_input(e->s, buf, (size_t)r, 0);
	}
	return r < 0 ? -1 : total;
}

/* The session's output into its pipe, as records. */
static size_t down(struct end *e)
{
	size_t moved = 0;
	if (!e->s)
		return 0;
	for (;;) {
		struct em_slice sl = em_tunnel_session_output(e->s);
		if (!sl.len)
			break;
		ssize_t took = em_tls_pipe_write(e->p, sl.base, sl.len);
		if (took <= 0)
			break;
		em_tunnel_session_output_advance(e->s, (size_t)took);
		moved += (size_t)took;
	}
	return moved;
}

/* Runs both ends until nothing moves. */
static void pump(struct end *a, struct end *b)
{
	for (int i = 0; i < 64; i++) {
		size_t m = down(a) + down(b) + wire(a, b) + wire(b, a);
		ssize_t ra = up(a, NULL, 0, NULL), rb = up(b, NULL, 0, NULL);
		if (!m && ra <= 0 && rb <= 0)
			return;
	}
}

/* The bystander: two bare pipes between the same contexts, opened once. */
static struct end by_a, by_b;
static unsigned by_round;

static void bystander_open(void)
{
	by_a.p = em_tls_pipe_new(ctx_a, EM_TLS_PIPE_DIALER, "node-b");
	by_b.p = em_tls_pipe_new(ctx_b, EM_TLS_PIPE_ACCEPTOR, NULL);
	if (!by_a.p || !by_b.p)
		abort();
	pump(&by_a, &by_b);
	if (em_tls_pipe_state(by_a.p) != EM_TLS_PIPE_OPEN ||
	    em_tls_pipe_state(by_b.p) != EM_TLS_PIPE_OPEN)
		abort();
}

/* One message each way over the bystander, checked. */
static void bystander_check(void)
{
	char msg[32], got[64];
	struct end *ends[2] = {&by_a, &by_b};
	for (int k = 0; k < 2; k++) {
		struct end *from = ends[k], *to = ends[1 - k];
		int n = snprintf(msg, sizeof(msg), "ping %u %d", by_round, k);
		if (em_tls_pipe_write(from->p, msg, (size_t)n) != n)
			abort();
		size_t at = 0;
		wire(from, to);
		if (up(to, (uint8_t *)got, sizeof(got), &at) < 0 || at != (size_t)n ||
		    memcmp(got, msg, (size_t)n) != 0)
			abort();
	}
	by_round++;
}

static void setup(void)
{
	char dir[] = "/tmp/em-fuzz-tlss-XXXXXX", path[PATH_MAX], err[512];
	if (!mkdtemp(dir))
		abort();
	if (em_pki_ca_init(dir, 2, err, sizeof(err)))
		abort();
	ctx_a = load(dir, "node-a");
	ctx_b = load(dir, "node-b");
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	unlink(path);
	rmdir(dir);
	bystander_open();
}

/* A's session and pipe, B's: both handshakes done, B's session OPEN. */
static void open_tunnel(struct end *a, struct end *b)
{
	struct em_tunnel_conf ca = {.role = EM_TUNNEL_DIALER,
	                            .node_name = "node-a",
	                            .key = "k",
	                            .key_len = 1,
	                            .on_event = on_event,
	                            .on_release = on_release,
	                            .ctx = a,
	                            .max_streams = 8,
	                            .send_buffer = FZ_SEND_BUF,
	                            .ctrl_buffer = FZ_CTRL_BUF};
	struct em_tunnel_conf cb = ca;
	cb.role = EM_TUNNEL_ACCEPTOR;
	cb.node_name = "node-b";
	cb.ctx = b;
	a->p = em_tls_pipe_new(ctx_a, EM_TLS_PIPE_DIALER, "node-b");
	b->p = em_tls_pipe_new(ctx_b, EM_TLS_PIPE_ACCEPTOR, NULL);
	if (!a->p || !b->p || em_tunnel_session_create(&ca, 0, &a->s) ||
	    em_tunnel_session_create(&cb, 0, &b->s))
		abort();
	pump(a, b);
	if (em_tunnel_session_state(b->s) != EM_TUNNEL_OPEN ||
	    em_tls_pipe_check_peer(b->p, "node-a") != 0)
		abort();
	/* From here on A's pipe only encrypts what the input says A sends:
	 * its session's own frames would collide with the input's. */
	em_tunnel_session_destroy(a->s);
	a->s = NULL;
	a->delivered = b->delivered = 0;
}

static void check_queues(struct end *b)
{
	uint32_t c, d;
	em_tunnel_session_queued(b->s, &c, &d);
	if (c > FZ_CTRL_BUF || d > FZ_SEND_BUF)
		abort();
}

/* B's replies go nowhere (A's pipe is not read): keep B's output ring free. */
static void drop_output(struct end *b)
{
	const uint8_t *o;
	size_t q;
	down(b);
	while ((q = em_tls_pipe_output(b->p, &o)) > 0)
		em_tls_pipe_output_advance(b->p, q);
}

/* 0: bytes nobody with the keys sent. */
static void inject(struct end *b, const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		size_t n = 1 + data[off] % 61;
		off++;
		n = n < size - off ? n : size - off;
		ssize_t took = em_tls_pipe_input(b->p, data + off, n);
		if (took < 0)
			break;
		if (up(b, NULL, 0, NULL) < 0)
			break;
		if (b->delivered)
			abort(); /* a forged record was accepted */
		drop_output(b);
		if (took == 0)
			break; /* the ring is full and nothing comes out: it waits */
		off += (size_t)took;
	}
	if (b->delivered || em_tls_pipe_state(b->p) == EM_TLS_PIPE_CLOSED)
		abort();
}

/* 1 and 2: <data> as the peer's plaintext, in records made by A's pipe; with
 * <flip>, one byte of the ciphertext at <where> (modulo its length) is
 * changed by <mask> (non-zero) before B sees it. */
static void send_as_peer(struct end *a, struct end *b, const uint8_t *data, size_t size, bool flip,
                         size_t where, uint8_t mask)
{
	uint8_t *wirebuf = NULL, *got = malloc(size + 1);
	size_t wlen = 0, at = 0;
	if (!got)
		abort();
	/* Encrypt everything first (in pieces whose sizes the input gives),
	 * collecting the ciphertext. */
	for (size_t off = 0; off < size;) {
		size_t n = 1 + data[off] % 251;
		n = n < size - off ? n : size - off;
		ssize_t took = em_tls_pipe_write(a->p, data + off, n);
		if (took <= 0)
			abort();
		off += (size_t)took;
		const uint8_t *o;
		size_t q;
		while ((q = em_tls_pipe_output(a->p, &o)) > 0) {
			uint8_t *nw = realloc(wirebuf, wlen + q);
			if (!nw)
				abort();
			wirebuf = nw;
			memcpy(wirebuf + wlen, o, q);
			wlen += q;
			em_tls_pipe_output_advance(a->p, q);
		}
	}
	if (flip && wlen)
		wirebuf[where % wlen] ^= mask;
	/* Feed it to B in pieces. */
	for (size_t off = 0; off < wlen;) {
		size_t n = 1 + (off < size ? data[off] : 0) % 997;
		n = n < wlen - off ? n : wlen - off;
		ssize_t took = em_tls_pipe_input(b->p, wirebuf + off, n);
		if (took < 0)
			break;
		off += (size_t)took;
		ssize_t r = up(b, got, size, &at);
		if (b->s && !flip)
			check_queues(b);
		drop_output(b);
		if (r < 0)
			break;
		if (took == 0 && (r = up(b, got, size, &at)) <= 0) {
			if (!flip)
				abort(); /* whole records the pipe neither takes nor decrypts */
			break;
		}
	}
	/* What came out is what A sent, up to where it stopped. */
	if (memcmp(got, data, at) != 0)
		abort();
	if (flip && wlen && at == size)
		abort(); /* the changed record was delivered all the same */
	if (!flip && at != size)
		abort();
	free(wirebuf);
	free(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ctx_a)
		setup();
	if (size < 1)
		return 0;
	struct end a = {0}, b = {0};
	open_tunnel(&a, &b);
	switch (data[0] % 3) {
	case 0:
		inject(&b, data + 1, size - 1);
		break;
	case 1:
		send_as_peer(&a, &b, data + 1, size - 1, false, 0, 0);
		em_tunnel_session_tick(b.s, size + 100000);
		break;
	default:
		if (size < 5)
			break;
		send_as_peer(&a, &b, data + 4, size - 4, true, (size_t)data[1] << 8 | data[2],
		             data[3] ? data[3] : 1);
		break;
	}
	/* The tunnel is over, as the engine ends one. */
	em_tunnel_session_destroy(b.s);
	em_tls_pipe_free(b.p);
	em_tls_pipe_free(a.p);
	bystander_check();
	return 0;
}
