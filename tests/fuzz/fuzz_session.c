/* libFuzzer harness for the tunnel session: the input is fed to an acceptor
 * that has not authenticated anyone (as a stranger on the tunnel port would
 * send it: it must stay in its small handshake state), then two sessions
 * complete a real handshake and the input is fed to the acceptor as if its
 * authenticated peer had sent it. Whatever arrives, the session must not crash, must keep
 * its queues within their caps and must not deliver more than the window;
 * every payload queued without copying comes back exactly once. */
#include <stdlib.h>

#include "tunnel/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	struct em_tunnel_session *s;
	uint64_t delivered;
	unsigned events;
	long refs; /* write_ref payloads not yet released */
};

static const char ref_payload[2048];

static void on_release(void *ctx, uint64_t token)
{
	struct fz *z = ctx;
	(void)token;
	if (--z->refs < 0)
		abort();
}

static void on_event(void *ctx, const struct em_tunnel_event *ev)
{
	struct fz *z = ctx;
	z->events++;
	if (!z->s)
		return;
	if (ev->type == EM_TUNNEL_EV_DATA) {
		z->delivered += ev->data.len;
		/* Consume most data, reset now and then: both paths matter. */
		if (ev->data.len && (uint8_t)ev->data.base[0] == 0xee)
			em_tunnel_session_reset(z->s, ev->stream_id, EM_REASON_CANCEL, "fuzz");
		else if (ev->data.len % 3)
			em_tunnel_session_consume(z->s, ev->stream_id, ev->data.len, 0);
	} else if (ev->type == EM_TUNNEL_EV_STREAM_OPEN) {
		if (em_tunnel_session_write_ref(z->s, ev->stream_id, ref_payload,
		                                1 + ev->stream_id % sizeof(ref_payload),
		                                ev->stream_id) > 0)
			z->refs++;
		em_tunnel_session_write(z->s, ev->stream_id, "ok", 2, (ev->stream_id & 2) != 0);
	}
}

static void pump(struct em_tunnel_session *a, struct em_tunnel_session *b)
{
	for (int i = 0; i < 16; i++) {
		struct em_slice sl = em_tunnel_session_output(a);
		if (sl.len) {
			em_tunnel_session_input(b, sl.base, sl.len, 0);
			em_tunnel_session_output_advance(a, sl.len);
		}
		struct em_slice sl2 = em_tunnel_session_output(b);
		if (sl2.len) {
			em_tunnel_session_input(a, sl2.base, sl2.len, 0);
			em_tunnel_session_output_advance(b, sl2.len);
		}
		if (!sl.len && !sl2.len)
			return;
	}
}

/* A stranger's bytes: a session that never saw a valid AUTH holds no
 * stream state and queues only handshake frames. */
static void stranger(const struct em_tunnel_conf *conf, const uint8_t *data, size_t size)
{
	struct fz z = {0};
	struct em_tunnel_conf c = *conf;
	c.ctx = &z;
	if (em_tunnel_session_create(&c, 0, &z.s))
		abort();
	size_t off = 0;
	while (off < size) {
		size_t n = 1 + data[off] % 64;
		off++;
		n = n < size - off ? n : size - off;
		em_tunnel_session_input(z.s, data + off, n, off);
		off += n;
		uint32_t q_ctrl, q_send;
		em_tunnel_session_queued(z.s, &q_ctrl, &q_send);
		if (q_send != 0 || q_ctrl > 1024 || em_tunnel_session_streams(z.s) != 0)
			abort();
		struct em_slice sl = em_tunnel_session_output(z.s);
		em_tunnel_session_output_advance(z.s, sl.len);
	}
	em_tunnel_session_tick(z.s, size + 100000);
	em_tunnel_session_destroy(z.s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz za = {0}, zb = {0};
	struct em_tunnel_conf ca = {.role = EM_TUNNEL_DIALER,
	                            .node_name = "a",
	                            .key = "k",
	                            .key_len = 1,
	                            .on_event = on_event,
	                            .on_release = on_release,
	                            .ctx = &za,
	                            .max_streams = 8,
	                            .send_buffer = 4096,
	                            .ctrl_buffer = 1024};
	struct em_tunnel_conf cb = ca;
	cb.role = EM_TUNNEL_ACCEPTOR;
	cb.node_name = "b";
	cb.ctx = &zb;
	stranger(&cb, data, size);
	if (em_tunnel_session_create(&ca, 0, &za.s) || em_tunnel_session_create(&cb, 0, &zb.s))
		abort();
	pump(za.s, zb.s);
	if (em_tunnel_session_state(zb.s) != EM_TUNNEL_OPEN)
		abort();
	/* The dialer's later frames would collide with the fuzz input's. */
	em_tunnel_session_destroy(za.s);
	za.s = NULL;

	/* Feed in pieces whose sizes come from the input itself. */
	size_t off = 0;
	while (off < size) {
		size_t n = 1 + data[off] % 64;
		off++;
		n = n < size - off ? n : size - off;
		em_tunnel_session_input(zb.s, data + off, n, off);
		off += n;
		struct iovec iov[16];
		unsigned nv = em_tunnel_session_output_iov(zb.s, iov, 1 + data[off - 1] % 16);
		size_t out = 0;
		for (unsigned i = 0; i < nv; i++)
			out += iov[i].iov_len;
		em_tunnel_session_output_advance(zb.s, out / 2);
		uint32_t c, d;
		em_tunnel_session_queued(zb.s, &c, &d);
		if (c > 1024 || d > 4096)
			abort();
	}
	em_tunnel_session_tick(zb.s, size + 100000);
	em_tunnel_session_destroy(zb.s);
	if (zb.refs != 0)
		abort();
	return 0;
}
