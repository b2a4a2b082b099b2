/* Two sessions joined in memory (and, in one test, over a real socketpair):
 * the test pumps each one's output into the other's input in chunks of
 * varying size, so frames arrive split anywhere. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tunnel/session.h"

#define MAXID 8192

struct side {
	struct em_tunnel_session *s;
	struct em_tunnel_conf conf;
	bool done, failed, closed;
	uint32_t fail_reason, close_reason, goaway_reason;
	bool got_goaway;
	uint32_t opened[MAXID];
	uint32_t n_opened;
	uint64_t rx[MAXID];
	bool fin[MAXID], reset[MAXID], stall[MAXID];
	uint32_t reset_reason[MAXID];
	char reset_text[64];
	bool refuse_opens;
	bool auto_consume;
	uint32_t bad_bytes;
	uint32_t windows, pongs;
	uint64_t max_unconsumed_over; /* times unconsumed exceeded the window */
	/* pump_iov(): frame headers of this side's output, parsed as sent */
	uint8_t wh[EM_FRAME_HEADER_LEN];
	uint32_t wh_have, wh_skip;
};

static uint64_t now;
static uint32_t rng = 12345;

static uint32_t rnd(void)
{
	rng = rng * 1103515245u + 12345u;
	return rng >> 8;
}

static uint8_t pattern(uint32_t id, uint64_t off)
{
	return (uint8_t)(off * 131 + id * 7 + (off >> 9));
}

static void on_event(void *ctx, const struct em_tunnel_event *ev)
{
	struct side *sd = ctx;
	uint32_t id = ev->stream_id;
	if (id >= MAXID)
		return; /* ids near the end of the space: only the opener looks */
	switch (ev->type) {
	case EM_TUNNEL_EV_HANDSHAKE_DONE:
		sd->done = true;
		break;
	case EM_TUNNEL_EV_HANDSHAKE_FAILED:
		sd->failed = true;
		sd->fail_reason = ev->reason;
		break;
	case EM_TUNNEL_EV_STREAM_OPEN:
		cr_assert_lt(id, MAXID);
		cr_assert_not_null(ev->target);
		if (sd->refuse_opens) {
			cr_assert_eq(
			        em_tunnel_session_reset(sd->s, id, EM_REASON_REFUSED, "not local"),
			        0);
			break;
		}
		sd->opened[sd->n_opened++] = id;
		break;
	case EM_TUNNEL_EV_DATA:
		cr_assert_lt(id, MAXID);
		for (size_t i = 0; i < ev->data.len; i++)
			if ((uint8_t)ev->data.base[i] != pattern(id, sd->rx[id] + i))
				sd->bad_bytes++;
		sd->rx[id] += ev->data.len;
		if (sd->auto_consume && !sd->stall[id])
			cr_assert_eq(em_tunnel_session_consume(sd->s, id, ev->data.len, now), 0);
		struct em_tunnel_stream_info info;
		if (em_tunnel_session_stream_info(sd->s, id, &info) == 0 &&
		    info.unconsumed > info.recv_window)
			sd->max_unconsumed_over++;
		break;
	case EM_TUNNEL_EV_FIN:
		sd->fin[id] = true;
		break;
	case EM_TUNNEL_EV_RESET:
		sd->reset[id] = true;
		sd->reset_reason[id] = ev->reason;
		snprintf(sd->reset_text, sizeof(sd->reset_text), "%.*s", (int)ev->data.len,
		         ev->data.base);
		break;
	case EM_TUNNEL_EV_WINDOW:
		sd->windows++;
		break;
	case EM_TUNNEL_EV_GOAWAY:
		sd->got_goaway = true;
		sd->goaway_reason = ev->reason;
		break;
	case EM_TUNNEL_EV_PONG:
		sd->pongs++;
		break;
	case EM_TUNNEL_EV_CLOSED:
		sd->closed = true;
		sd->close_reason = ev->reason;
		break;
	}
}

static bool allow_all_but_mallory(void *ctx, struct em_slice name)
{
	EM_UNUSED(ctx);
	return !em_slice_eq(name, "mallory");
}

static struct side *side_new(enum em_tunnel_role role, const char *name, const char *key)
{
	struct side *sd = calloc(1, sizeof(*sd));
	cr_assert_not_null(sd);
	sd->conf.role = role;
	sd->conf.node_name = name;
	sd->conf.key = key;
	sd->conf.key_len = strlen(key);
	sd->conf.on_event = on_event;
	sd->conf.allow_node = allow_all_but_mallory;
	sd->conf.ctx = sd;
	sd->auto_consume = true;
	return sd;
}

static void side_start(struct side *sd)
{
	cr_assert_eq(em_tunnel_session_create(&sd->conf, now, &sd->s), 0);
}

static void side_free(struct side *sd)
{
	em_tunnel_session_destroy(sd->s);
	free(sd);
}

static void check_bounds(struct side *sd)
{
	uint32_t c, d;
	em_tunnel_session_queued(sd->s, &c, &d);
	uint32_t ccap = sd->conf.ctrl_buffer ? sd->conf.ctrl_buffer : 16 * 1024;
	uint32_t dcap = sd->conf.send_buffer ? sd->conf.send_buffer : 256 * 1024;
	cr_assert_leq(c, ccap);
	cr_assert_leq(d, dcap);
	cr_assert_leq(em_tunnel_session_stats(sd->s)->ctrl_hwm, ccap);
	cr_assert_leq(em_tunnel_session_stats(sd->s)->send_hwm, dcap);
}

/* Moves output of <from> into <to> in random pieces. Returns bytes moved. */
static size_t pump_one(struct side *from, struct side *to, size_t max_piece)
{
	size_t moved = 0;
	for (int guard = 0; guard < 100000; guard++) {
		struct em_slice sl = em_tunnel_session_output(from->s);
		if (!sl.len)
			break;
		size_t piece = 1 + rnd() % max_piece;
		size_t n = EM_MIN(sl.len, piece);
		em_tunnel_session_input(to->s, sl.base, n, now);
		em_tunnel_session_output_advance(from->s, n);
		moved += n;
		check_bounds(from);
		check_bounds(to);
	}
	return moved;
}

static void pump(struct side *a, struct side *b)
{
	for (int i = 0; i < 10000; i++) {
		size_t n = pump_one(a, b, 7000) + pump_one(b, a, 7000);
		if (!n)
			return;
	}
	cr_assert_fail("pump did not settle");
}

static void connect_pair(struct side *a, struct side *b)
{
	side_start(a);
	side_start(b);
	pump(a, b);
}

static struct side *A, *B;

static void setup(void)
{
	now = 1000;
	A = side_new(EM_TUNNEL_DIALER, "edge-a", "secret");
	B = side_new(EM_TUNNEL_ACCEPTOR, "edge-b", "secret");
}

static void teardown(void)
{
	side_free(A);
	side_free(B);
}

static struct em_frame_target target(void)
{
	struct em_frame_target t;
	memset(&t, 0, sizeof(t));
	t.protocol = EM_FRAME_PROTO_TCP;
	t.port = 80;
	t.node = (struct em_slice){"edge-b", 6};
	t.ns = (struct em_slice){"default", 7};
	t.service = (struct em_slice){"web", 3};
	return t;
}

/* Writes the pattern for <id> from offset <*sent> up to <total>. */
static void write_some(struct side *sd, uint32_t id, uint64_t *sent, uint64_t total, bool fin)
{
	static uint8_t buf[96 * 1024];
	while (*sent < total) {
		size_t n = (size_t)EM_MIN(sizeof(buf), total - *sent);
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(id, *sent + i);
		int w = em_tunnel_session_write(sd->s, id, buf, n, fin && *sent + n == total);
		cr_assert_geq(w, 0, "write %u: %d (closed %s)", id, w,
		              em_reason_str(em_tunnel_session_close_reason(sd->s)));
		*sent += (uint64_t)w;
		if ((size_t)w < n)
			return;
	}
}

TestSuite(session, .init = setup, .fini = teardown, .timeout = 60);

Test(session, handshake_ok)
{
	connect_pair(A, B);
	cr_assert(A->done && B->done);
	cr_assert(!A->failed && !B->failed);
	cr_assert_eq(em_tunnel_session_state(A->s), EM_TUNNEL_OPEN);
	cr_assert_str_eq(em_tunnel_session_peer_name(A->s), "edge-b");
	cr_assert_str_eq(em_tunnel_session_peer_name(B->s), "edge-a");
	cr_assert_eq(A->pongs, 1, "handshake measures the RTT");
	cr_assert_eq(B->pongs, 1);
}

Test(session, wrong_key_refused)
{
	B->conf.key = "other";
	B->conf.key_len = 5;
	connect_pair(A, B);
	cr_assert(!A->done && !B->done);
	cr_assert(A->failed && B->failed);
	cr_assert_eq(A->fail_reason, EM_REASON_AUTH_FAILED);
	cr_assert_eq(B->fail_reason, EM_REASON_AUTH_FAILED);
	cr_assert(A->closed && B->closed);
	cr_assert(em_tunnel_session_should_close(A->s));
	cr_assert(em_tunnel_session_should_close(B->s));
	cr_assert_eq(em_tunnel_session_stats(B->s)->auth_failures, 1);
	uint32_t id;
	struct em_frame_target t = target();
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), -ENOTCONN);
}

Test(session, unknown_node_refused)
{
	A->conf.node_name = "mallory";
	connect_pair(A, B);
	cr_assert(B->failed && A->failed);
	cr_assert_eq(B->fail_reason, EM_REASON_UNKNOWN_NODE);
	cr_assert_eq(A->fail_reason, EM_REASON_UNKNOWN_NODE, "told by the GOAWAY");
	cr_assert_eq(em_tunnel_session_stats(B->s)->unknown_nodes, 1);
}

Test(session, dialer_checks_peer_name)
{
	A->conf.peer_name = "edge-c";
	connect_pair(A, B);
	cr_assert(A->failed);
	cr_assert_eq(A->fail_reason, EM_REASON_UNKNOWN_NODE);
	cr_assert(B->failed);
}

Test(session, many_streams_both_ways_every_byte)
{
	enum { NS = 64, LEN = 300 * 1000 };
	uint64_t sent_a[NS] = {0}, sent_b[NS] = {0};
	uint32_t ids[NS];
	connect_pair(A, B);
	struct em_frame_target t = target();
	static uint8_t first[1000];
	for (int i = 0; i < NS; i++) {
		uint32_t id = 1 + 2 * (uint32_t)i;
		for (size_t k = 0; k < sizeof(first); k++)
			first[k] = pattern(id, k);
		int w = em_tunnel_session_open(A->s, &t, first, sizeof(first), NULL, &ids[i]);
		cr_assert_eq(ids[i], id);
		cr_assert_eq(w, (int)sizeof(first), "OPEN carries the first bytes");
		sent_a[i] = (uint64_t)w;
	}
	pump(A, B);
	cr_assert_eq(B->n_opened, NS);
	for (int round = 0; round < 100000; round++) {
		bool all = true;
		for (int i = 0; i < NS; i++) {
			write_some(A, ids[i], &sent_a[i], LEN, true);
			write_some(B, ids[i], &sent_b[i], LEN, true);
			all = all && sent_a[i] == LEN && sent_b[i] == LEN;
		}
		pump(A, B);
		if (all)
			break;
	}
	for (int i = 0; i < NS; i++) {
		cr_assert_eq(B->rx[ids[i]], LEN, "stream %u got %lu", ids[i],
		             (unsigned long)B->rx[ids[i]]);
		cr_assert_eq(A->rx[ids[i]], LEN);
		cr_assert(A->fin[ids[i]] && B->fin[ids[i]]);
	}
	cr_assert_eq(A->bad_bytes + B->bad_bytes, 0);
	cr_assert_eq(A->max_unconsumed_over + B->max_unconsumed_over, 0);
	cr_assert_eq(em_tunnel_session_streams(A->s), 0, "streams retire after both FINs");
	cr_assert_eq(em_tunnel_session_streams(B->s), 0);
	const struct em_tunnel_stats *st = em_tunnel_session_stats(B->s);
	cr_assert_eq(st->data_in, (uint64_t)NS * LEN);
	cr_assert_eq(st->streams_opened_remote, NS);
}

Test(session, stalled_stream_does_not_block_another)
{
	uint32_t s1, s2;
	uint64_t sent1 = 0, sent2 = 0;
	const uint64_t big = 8u << 20;
	connect_pair(A, B);
	struct em_frame_target t = target();
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &s1), 0);
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &s2), 0);
	B->stall[s1] = true;
	for (int round = 0; round < 10000 && sent2 < big; round++) {
		write_some(A, s1, &sent1, big, false);
		write_some(A, s2, &sent2, big, false);
		pump(A, B);
	}
	pump(A, B);
	cr_assert_eq(sent2, big);
	cr_assert_eq(B->rx[s2], big, "the live stream finished");
	cr_assert_eq(B->rx[s1], 256 * 1024, "the stalled one got exactly its window");
	cr_assert_eq(sent1, 256 * 1024);
	struct em_tunnel_stream_info info;
	cr_assert_eq(em_tunnel_session_stream_info(A->s, s1, &info), 0);
	cr_assert_eq(info.send_credit, 0);
	cr_assert_eq(em_tunnel_session_stream_info(B->s, s1, &info), 0);
	cr_assert_eq(info.unconsumed, 256 * 1024);
	/* Once the reader catches up the stalled stream moves again. */
	cr_assert_eq(em_tunnel_session_consume(B->s, s1, 256 * 1024, now), 0);
	pump(A, B);
	cr_assert_gt(A->windows, 0);
	write_some(A, s1, &sent1, big, false);
	pump(A, B);
	cr_assert_gt(B->rx[s1], 256 * 1024);
	cr_assert_eq(B->bad_bytes, 0);
}

Test(session, windows_grow_when_window_limited)
{
	uint32_t fast, slow;
	uint64_t sent_f = 0, sent_s = 0;
	A->conf.max_window = 4u << 20;
	B->conf.max_window = 4u << 20;
	connect_pair(A, B);
	struct em_frame_target t = target();
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &fast), 0);
	for (int round = 0; round < 2000 && sent_f < (32u << 20); round++) {
		write_some(A, fast, &sent_f, 32u << 20, false);
		pump(A, B);
	}
	struct em_tunnel_stream_info info;
	cr_assert_eq(em_tunnel_session_stream_info(B->s, fast, &info), 0);
	cr_assert_eq(info.recv_window, 4u << 20, "grew to the cap: %u", info.recv_window);
	cr_assert_gt(em_tunnel_session_stats(B->s)->windows_grown, 0);

	/* A reader that takes a second per half window is the limit, not the
	 * window: no growth. */
	B->auto_consume = false;
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &slow), 0);
	for (int round = 0; round < 20; round++) {
		write_some(A, slow, &sent_s, 64u << 20, false);
		pump(A, B);
		now += 1000;
		cr_assert_eq(em_tunnel_session_stream_info(B->s, slow, &info), 0);
		em_tunnel_session_consume(B->s, slow, info.unconsumed, now);
		pump(A, B);
	}
	cr_assert_eq(em_tunnel_session_stream_info(B->s, slow, &info), 0);
	cr_assert_eq(info.recv_window, 256 * 1024);
	cr_assert_gt(B->rx[slow], 1u << 20, "it still moved");
	cr_assert_eq(B->bad_bytes, 0);
}

Test(session, tunnel_window_caps_growth)
{
	uint32_t a, b;
	uint64_t sa = 0, sb = 0;
	B->conf.max_window = 8u << 20;
	B->conf.tunnel_window = 2u << 20;
	connect_pair(A, B);
	struct em_frame_target t = target();
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &a), 0);
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &b), 0);
	for (int round = 0; round < 2000 && sb < (16u << 20); round++) {
		write_some(A, a, &sa, 16u << 20, false);
		write_some(A, b, &sb, 16u << 20, false);
		pump(A, B);
	}
	struct em_tunnel_stream_info ia, ib;
	em_tunnel_session_stream_info(B->s, a, &ia);
	em_tunnel_session_stream_info(B->s, b, &ib);
	cr_assert_leq((uint64_t)ia.recv_window + ib.recv_window, 2u << 20);
	cr_assert_geq(ia.recv_window, 256 * 1024);
	cr_assert_geq(ib.recv_window, 256 * 1024);
	cr_assert_eq(B->rx[b], 16u << 20);
}

/* Feeds a hand-made frame to <sd>, as a misbehaving peer would. */
static void inject(struct side *sd, const struct em_frame *f)
{
	static uint8_t buf[EM_FRAME_HEADER_LEN + EM_FRAME_MAX_DATA];
	int n = em_frame_encode(f, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	em_tunnel_session_input(sd->s, buf, (size_t)n, now);
}

static void inject_open(struct side *sd, uint32_t id)
{
	struct em_frame f = {.type = EM_FRAME_OPEN, .stream_id = id};
	f.u.open = target();
	inject(sd, &f);
}

static void expect_goaway(uint32_t reason)
{
	cr_assert(B->closed, "B closed");
	cr_assert_eq(B->close_reason, reason, "B closed with %s", em_reason_str(B->close_reason));
	cr_assert_eq(em_tunnel_session_stats(B->s)->goaway_reason_out, reason);
	pump(A, B);
	cr_assert(A->got_goaway, "A told");
	cr_assert_eq(A->goaway_reason, reason);
	cr_assert(A->closed);
	cr_assert(em_tunnel_session_should_close(B->s));
	cr_assert_eq(em_tunnel_session_input(B->s, "x", 1, now), -EPROTO);
}

Test(session, stream_flood_closes_tunnel)
{
	B->conf.max_streams = 16;
	connect_pair(A, B);
	for (uint32_t i = 0; i < 16; i++)
		inject_open(B, 1 + 2 * i);
	cr_assert(!B->closed);
	cr_assert_eq(B->n_opened, 16);
	inject_open(B, 33);
	expect_goaway(EM_REASON_TOO_MANY_STREAMS);
	cr_assert_eq(em_tunnel_session_stats(B->s)->limit_streams, 1);
	for (uint32_t i = 0; i < 16; i++)
		cr_assert(B->reset[1 + 2 * i], "streams fail at once");
}

Test(session, local_opens_respect_peer_limit)
{
	B->conf.max_streams = 4;
	connect_pair(A, B);
	struct em_frame_target t = target();
	uint32_t id;
	for (int i = 0; i < 4; i++)
		cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), 0);
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), -EBUSY);
	pump(A, B);
	cr_assert(!B->closed);
}

Test(session, ping_flood_closes_tunnel)
{
	connect_pair(A, B);
	struct em_frame f = {.type = EM_FRAME_PING};
	/* 30 per interval are fine, also in the next interval (the first
	 * interval also held the handshake's PING). */
	now += 1000;
	for (int i = 0; i < 30; i++)
		inject(B, &f);
	now += 1000;
	for (int i = 0; i < 30; i++)
		inject(B, &f);
	cr_assert(!B->closed);
	inject(B, &f);
	expect_goaway(EM_REASON_PING_FLOOD);
	cr_assert_eq(em_tunnel_session_stats(B->s)->limit_pings, 1);
}

Test(session, closing_many_long_lived_streams_is_no_flood)
{
	B->conf.max_resets = 50;
	connect_pair(A, B);
	struct em_frame r = {.type = EM_FRAME_RST};
	r.u.rst.reason = EM_REASON_CANCEL;
	for (uint32_t i = 0; i < 60; i++)
		inject_open(B, 1 + 2 * i);
	now += 2 * EM_TUNNEL_CHURN_MS;
	for (uint32_t i = 0; i < 60; i++) {
		r.stream_id = 1 + 2 * i;
		inject(B, &r);
	}
	cr_assert(!B->closed, "60 streams reset after living 2 s are not churn");
	cr_assert_eq(em_tunnel_session_streams(B->s), 0);
	cr_assert_eq(em_tunnel_session_stats(B->s)->limit_resets, 0);
}

/* Clients giving up on young streams that already carry the answer (a
 * timeout under load, a 1,000-stream download aborted) are no flood: the
 * opener paid a round trip for each. The same number of resets before any
 * answer is. */
Test(session, resetting_answered_young_streams_is_no_flood)
{
	B->conf.max_resets = 50;
	connect_pair(A, B);
	struct em_frame r = {.type = EM_FRAME_RST};
	r.u.rst.reason = EM_REASON_CANCEL;
	for (uint32_t i = 0; i < 60; i++) {
		inject_open(B, 1 + 2 * i);
		cr_assert_eq(em_tunnel_session_write(B->s, 1 + 2 * i, "answer", 6, false), 6);
	}
	now += EM_TUNNEL_CHURN_MS / 4;
	for (uint32_t i = 0; i < 60; i++) {
		r.stream_id = 1 + 2 * i;
		inject(B, &r);
	}
	cr_assert(!B->closed, "60 answered streams reset after 250 ms are not churn");
	cr_assert_eq(em_tunnel_session_stats(B->s)->limit_resets, 0);
	for (uint32_t i = 0; i < 51; i++)
		inject_open(B, 201 + 2 * i);
	for (uint32_t i = 0; i < 51 && !B->closed; i++) {
		r.stream_id = 201 + 2 * i;
		inject(B, &r);
	}
	expect_goaway(EM_REASON_RESET_FLOOD);
}

Test(session, rapid_reset_closes_tunnel)
{
	B->conf.max_resets = 50;
	connect_pair(A, B);
	struct em_frame r = {.type = EM_FRAME_RST};
	r.u.rst.reason = EM_REASON_CANCEL;
	uint32_t id = 1;
	for (int i = 0; i < 50; i++, id += 2) {
		inject_open(B, id);
		r.stream_id = id;
		inject(B, &r);
	}
	cr_assert(!B->closed);
	cr_assert_eq(em_tunnel_session_streams(B->s), 0);
	inject_open(B, id);
	r.stream_id = id;
	inject(B, &r);
	expect_goaway(EM_REASON_RESET_FLOOD);
	cr_assert_eq(em_tunnel_session_stats(B->s)->limit_resets, 1);
}

Test(session, window_update_flood_closes_tunnel)
{
	B->conf.max_window_updates = 100;
	connect_pair(A, B);
	inject_open(B, 1);
	struct em_frame f = {.type = EM_FRAME_WINDOW_UPDATE, .stream_id = 1};
	f.u.increment = 1;
	for (int i = 0; i < 100; i++)
		inject(B, &f);
	cr_assert(!B->closed);
	inject(B, &f);
	expect_goaway(EM_REASON_WINDOW_UPDATE_FLOOD);
}

Test(session, empty_data_flood_closes_tunnel)
{
	connect_pair(A, B);
	inject_open(B, 1);
	struct em_frame f = {.type = EM_FRAME_DATA, .stream_id = 1};
	for (int i = 0; i < 100; i++)
		inject(B, &f);
	cr_assert(!B->closed);
	inject(B, &f);
	expect_goaway(EM_REASON_EMPTY_DATA_FLOOD);
}

Test(session, data_beyond_window_is_an_error)
{
	static char big[64 * 1024];
	connect_pair(A, B);
	inject_open(B, 1);
	struct em_frame f = {.type = EM_FRAME_DATA, .stream_id = 1};
	f.u.data = (struct em_slice){big, sizeof(big)};
	B->auto_consume = false;
	for (int i = 0; i < 4; i++)
		inject(B, &f);
	cr_assert(!B->closed, "exactly the window is fine");
	f.u.data.len = 1;
	inject(B, &f);
	expect_goaway(EM_REASON_FLOW_CONTROL);
}

Test(session, frames_for_unopened_streams_are_errors)
{
	connect_pair(A, B);
	struct em_frame f = {.type = EM_FRAME_WINDOW_UPDATE, .stream_id = 7};
	f.u.increment = 10;
	inject(B, &f);
	expect_goaway(EM_REASON_PROTOCOL);
}

Test(session, bad_version_closes_with_version)
{
	connect_pair(A, B);
	uint8_t h[12];
	em_frame_write_header(h, EM_FRAME_PING, 0, 0, 8);
	h[0] = 9;
	em_tunnel_session_input(B->s, h, sizeof(h), now);
	expect_goaway(EM_REASON_VERSION);
}

Test(session, memory_bounded_when_peer_does_not_read)
{
	enum { NS = 32 };
	uint32_t ids[NS];
	uint64_t sent[NS] = {0};
	connect_pair(A, B);
	struct em_frame_target t = target();
	for (int i = 0; i < NS; i++)
		cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &ids[i]), 0);
	/* Nobody drains A's output: writes stop at the send ring. */
	uint64_t total = 0;
	for (int round = 0; round < 4; round++)
		for (int i = 0; i < NS; i++) {
			write_some(A, ids[i], &sent[i], 1u << 30, false);
			cr_assert_eq(em_tunnel_session_ping(A->s) == -ENOBUFS, false);
			check_bounds(A);
		}
	for (int i = 0; i < NS; i++)
		total += sent[i];
	cr_assert_leq(total, 256 * 1024);
	uint32_t c, d;
	em_tunnel_session_queued(A->s, &c, &d);
	cr_assert_geq(d, 256 * 1024 - 16 * 1024, "ring full: %u", d);
	/* A peer that opens streams and never reads our answers cannot grow
	 * B's queues either: pings are capped, answers dropped with GOAWAY. */
	struct em_frame p = {.type = EM_FRAME_PING};
	for (int i = 0; i < 100 && !B->closed; i++) {
		inject(B, &p);
		check_bounds(B);
	}
	cr_assert(B->closed);
	/* Then everything drains and is intact. */
	pump(A, B);
	cr_assert_eq(A->bad_bytes + B->bad_bytes, 0);
}

Test(session, reset_and_refuse)
{
	uint32_t id, id2;
	connect_pair(A, B);
	B->refuse_opens = true;
	struct em_frame_target t = target();
	cr_assert_eq(em_tunnel_session_open(A->s, &t, "abc", 3, NULL, &id), 3);
	pump(A, B);
	cr_assert(A->reset[id]);
	cr_assert_eq(A->reset_reason[id], EM_REASON_REFUSED);
	cr_assert_str_eq(A->reset_text, "not local");
	cr_assert_eq(em_tunnel_session_write(A->s, id, "x", 1, false), -ENOENT);
	cr_assert_eq(em_tunnel_session_streams(B->s), 0);
	cr_assert_eq(em_tunnel_session_stats(B->s)->discarded_in, 3, "in-flight data dropped");

	B->refuse_opens = false;
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id2), 0);
	pump(A, B);
	cr_assert_eq(em_tunnel_session_reset(A->s, id2, EM_REASON_CANCEL, "client left"), 0);
	cr_assert_eq(em_tunnel_session_reset(A->s, id2, EM_REASON_CANCEL, NULL), -ENOENT);
	pump(A, B);
	cr_assert(B->reset[id2]);
	cr_assert_eq(B->reset_reason[id2], EM_REASON_CANCEL);
	cr_assert_str_eq(B->reset_text, "client left");
	cr_assert(!A->closed && !B->closed);
}

Test(session, keepalive_and_dead_peer)
{
	A->conf.keepalive_ms = 1000;
	A->conf.dead_ms = 3000;
	connect_pair(A, B);
	uint64_t wait = em_tunnel_session_tick(A->s, now);
	cr_assert_leq(wait, 1000);
	now += 1000;
	em_tunnel_session_tick(A->s, now);
	uint32_t c, d;
	em_tunnel_session_queued(A->s, &c, &d);
	cr_assert_eq(c, 20, "one PING queued");
	pump(A, B);
	cr_assert_eq(A->pongs, 2);
	/* Peer silent from now on. */
	now += 1000;
	em_tunnel_session_tick(A->s, now);
	cr_assert(!A->closed);
	now += 2000;
	em_tunnel_session_tick(A->s, now);
	cr_assert(A->closed);
	cr_assert_eq(A->close_reason, EM_REASON_TIMEOUT);
	cr_assert_eq(em_tunnel_session_stats(A->s)->timeouts, 1);
}

Test(session, handshake_timeout)
{
	side_start(A);
	now += 10000;
	em_tunnel_session_tick(A->s, now);
	cr_assert(A->failed);
	cr_assert_eq(A->fail_reason, EM_REASON_TIMEOUT);
	side_start(B);
}

Test(session, graceful_goaway_drains)
{
	uint32_t id, id2;
	uint64_t sent = 0;
	connect_pair(A, B);
	struct em_frame_target t = target();
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), 0);
	pump(A, B);
	cr_assert_eq(em_tunnel_session_goaway(B->s, EM_REASON_NO_ERROR, "restart"), 0);
	pump(A, B);
	cr_assert(A->got_goaway);
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id2), -ESHUTDOWN);
	write_some(A, id, &sent, 1000, true);
	cr_assert_eq(em_tunnel_session_write(B->s, id, "ok", 0, true), 0);
	pump(A, B);
	cr_assert_eq(B->rx[id], 1000);
	em_tunnel_session_tick(A->s, now);
	em_tunnel_session_tick(B->s, now);
	cr_assert(A->closed && B->closed);
	cr_assert_eq(A->close_reason, EM_REASON_NO_ERROR);
	cr_assert(em_tunnel_session_should_close(A->s));
	cr_assert(em_tunnel_session_should_close(B->s));
}

Test(session, bad_config_refused)
{
	struct em_tunnel_session *s;
	A->conf.node_name = "bad name";
	cr_assert_eq(em_tunnel_session_create(&A->conf, now, &s), -EINVAL);
	A->conf.node_name = "ok";
	A->conf.key_len = 0;
	cr_assert_eq(em_tunnel_session_create(&A->conf, now, &s), -EINVAL);
}

/* ---- payloads sent without copying (write_ref) ---- */

#define NREF 64
static struct {
	uint8_t *buf[NREF];
	uint32_t released[NREF]; /* times released */
	uint32_t order[NREF], n_order;
} refs;

static void on_release(void *ctx, uint64_t token)
{
	EM_UNUSED(ctx);
	cr_assert_lt(token, NREF);
	refs.released[token]++;
	refs.order[refs.n_order++ % NREF] = (uint32_t)token;
	memset(refs.buf[token], 0xee, 1); /* the session must not send it again */
}

static uint8_t *ref_buf(uint32_t token, uint32_t id, uint64_t off, size_t len)
{
	uint8_t *b = malloc(len);
	cr_assert_not_null(b);
	for (size_t i = 0; i < len; i++)
		b[i] = pattern(id, off + i);
	refs.buf[token] = b;
	return b;
}

static void refs_free(void)
{
	for (int i = 0; i < NREF; i++)
		free(refs.buf[i]);
	memset(&refs, 0, sizeof(refs));
}

/* Moves <from>'s output to <to> through output_iov(), a random number of
 * bytes per step (so steps end inside headers and payloads), and checks
 * every DATA header on the wire carries only protocol flags. */
static size_t pump_iov(struct side *from, struct side *to)
{
	static uint8_t wire[1 << 20];
	uint8_t *hdr = from->wh;
	size_t moved = 0;
	for (int guard = 0; guard < 100000; guard++) {
		struct iovec iov[16];
		unsigned n = em_tunnel_session_output_iov(from->s, iov, 1 + rnd() % 16);
		if (!n)
			break;
		size_t want = 1 + rnd() % 70000, len = 0;
		for (unsigned i = 0; i < n && len < want; i++) {
			size_t k = EM_MIN(iov[i].iov_len, want - len);
			memcpy(wire + len, iov[i].iov_base, k);
			len += k;
		}
		for (size_t i = 0; i < len; i++) {
			if (from->wh_skip) {
				from->wh_skip--;
				continue;
			}
			hdr[from->wh_have++] = wire[i];
			if (from->wh_have < EM_FRAME_HEADER_LEN)
				continue;
			from->wh_have = 0;
			cr_assert_eq(hdr[2] & 0x80, 0, "an internal flag reached the wire");
			from->wh_skip = (uint32_t)hdr[8] << 24 | (uint32_t)hdr[9] << 16 |
			                (uint32_t)hdr[10] << 8 | hdr[11];
		}
		em_tunnel_session_input(to->s, wire, len, now);
		em_tunnel_session_output_advance(from->s, len);
		check_bounds(from);
		moved += len;
	}
	return moved;
}

/* A pair whose A side releases referenced payloads through on_release, with
 * one stream A opened and B accepted; returns its id. */
static uint32_t ref_pair_open(void)
{
	A->conf.on_release = on_release;
	connect_pair(A, B);
	struct em_frame_target t = target();
	uint32_t id;
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), 0);
	pump(A, B);
	return id;
}
Test(session, write_ref_payloads_arrive_in_order_and_come_back_once)
{
	uint32_t id = ref_pair_open();
	/* Copied and referenced pieces interleaved, sizes 1 byte to 32 KiB. */
	uint64_t off = 0;
	uint32_t tokens = 0;
	static uint8_t tmp[40000];
	for (int i = 0; i < 40; i++) {
		size_t len = i % 5 == 4 ? 1 + rnd() % 3000 : 4096 + rnd() % 28000;
		if (i % 3 != 2 && tokens < NREF) {
			uint8_t *b = ref_buf(tokens, id, off, len);
			int w = 0;
			for (int k = 0; k < 100 && w == 0; k++) {
				w = em_tunnel_session_write_ref(A->s, id, b, len, tokens);
				if (w == 0) /* out of window or room: let some go */
					pump_iov(A, B), pump_iov(B, A);
			}
			cr_assert_eq(w, (int)len, "piece %d: %d", i, w);
			tokens++;
		} else {
			for (size_t k = 0; k < len; k++)
				tmp[k] = pattern(id, off + k);
			size_t done = 0;
			for (int k = 0; k < 100 && done < len; k++) {
				int w = em_tunnel_session_write(A->s, id, tmp + done, len - done,
				                                false);
				cr_assert_geq(w, 0);
				done += (size_t)w;
				if (done < len)
					pump_iov(A, B), pump_iov(B, A);
			}
			cr_assert_eq(done, len);
		}
		off += len;
		if (i % 7 == 6) /* some output before the rest is queued */
			pump_iov(A, B);
	}
	cr_assert_eq(em_tunnel_session_shutdown(A->s, id), 0);
	for (int k = 0; k < 1000 && (pump_iov(A, B) + pump_iov(B, A)); k++)
		;
	cr_assert_eq(B->rx[id], off, "got %lu of %lu", (unsigned long)B->rx[id],
	             (unsigned long)off);
	cr_assert_eq(B->bad_bytes, 0);
	cr_assert(B->fin[id]);
	for (uint32_t k = 0; k < tokens; k++) {
		cr_assert_eq(refs.released[k], 1, "token %u released %u times", k,
		             refs.released[k]);
		cr_assert_eq(refs.order[k], k, "released in queue order");
	}
	uint32_t c, d;
	em_tunnel_session_queued(A->s, &c, &d);
	cr_assert_eq(d, 0);
	cr_assert_eq(em_tunnel_session_stats(A->s)->data_out, off);
	refs_free();
}

Test(session, write_ref_is_all_or_nothing)
{
	A->conf.on_release = on_release;
	A->conf.send_buffer = 64 * 1024;
	B->conf.initial_window = 64 * 1024;
	connect_pair(A, B);
	struct em_frame_target t = target();
	uint32_t id;
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), 0);
	pump(A, B);
	uint8_t *b = ref_buf(0, id, 0, 70 * 1024);
	cr_assert_eq(em_tunnel_session_write_ref(A->s, id, b, 70 * 1024, 0), 0,
	             "more than the peer's window (and max frame): refused whole");
	cr_assert_eq(em_tunnel_session_write_ref(A->s, id, b, 40 * 1024, 0), 40 * 1024);
	cr_assert_eq(em_tunnel_session_write_ref(A->s, id, b + 40 * 1024, 30 * 1024, 1), 0,
	             "the send buffer counts referenced bytes: no room for 30 KiB more");
	int w = em_tunnel_session_write(A->s, id, b + 40 * 1024, 30 * 1024, false);
	cr_assert(w > 0 && w < 24 * 1024, "a copy takes only what is left (%d)", w);
	cr_assert_eq(em_tunnel_session_write_ref(A->s, 9999, b, 10, 1), -ENOENT);
	cr_assert_eq(em_tunnel_session_write_ref(A->s, id, b, 0, 1), 0);
	for (int k = 0; k < 100 && (pump_iov(A, B) + pump_iov(B, A)); k++)
		;
	cr_assert_eq(refs.released[0], 1);
	cr_assert_eq(B->rx[id], 40 * 1024 + (uint64_t)w);
	cr_assert_eq(B->bad_bytes, 0);
	refs_free();
}

Test(session, write_ref_payloads_come_back_on_destroy)
{
	uint32_t id = ref_pair_open();
	for (uint32_t k = 0; k < 5; k++) {
		uint8_t *b = ref_buf(k, id, k * 10000, 10000);
		cr_assert_eq(em_tunnel_session_write_ref(A->s, id, b, 10000, k), 10000);
		uint8_t small[100];
		memset(small, 1, sizeof(small));
		cr_assert_eq(em_tunnel_session_write(A->s, id, small, sizeof(small), false), 100);
	}
	/* Stop inside the second payload: the first was sent whole. */
	struct iovec iov[16];
	unsigned n = em_tunnel_session_output_iov(A->s, iov, 16);
	size_t total = 0;
	for (unsigned i = 0; i < n; i++)
		total += iov[i].iov_len;
	cr_assert_gt(n, 4, "several frames in one output: %u", n);
	em_tunnel_session_output_advance(A->s, 12 + 10000 + 12 + 100 + 12 + 5000);
	cr_assert_eq(refs.released[0], 1);
	cr_assert_eq(refs.released[1], 0, "half sent: still the session's");
	em_tunnel_session_destroy(A->s);
	A->s = NULL;
	for (uint32_t k = 0; k < 5; k++)
		cr_assert_eq(refs.released[k], 1, "token %u released %u times", k,
		             refs.released[k]);
	refs_free();
}

/* ---- window growth with a microsecond clock ---- */

static uint64_t test_us;
static uint64_t test_clock(void *ctx)
{
	EM_UNUSED(ctx);
	return test_us;
}

/* Moves at most <cap> bytes of <from>'s output to <to>. */
static size_t pump_capped(struct side *from, struct side *to, size_t cap)
{
	size_t moved = 0;
	while (moved < cap) {
		struct em_slice sl = em_tunnel_session_output(from->s);
		if (!sl.len)
			break;
		size_t n = EM_MIN(sl.len, cap - moved);
		em_tunnel_session_input(to->s, sl.base, n, now);
		em_tunnel_session_output_advance(from->s, n);
		moved += n;
	}
	return moved;
}

/* A link of 64 KiB per 100 µs round trip (about 5 Gbit/s, BDP 64 KiB): with
 * the caller's microsecond clock the receiver sees that the sender is limited
 * by the link, not by the window, which therefore stays at its initial size.
 * Timestamps in whole milliseconds cannot tell: every update looks fast and
 * the window doubles to the cap (the same run without the clock shows it). */
static uint32_t window_after_link_run(bool fine_clock, size_t link)
{
	uint32_t id;
	uint64_t sent = 0;
	test_us = 1000000;
	if (fine_clock) {
		A->conf.clock_us = test_clock;
		B->conf.clock_us = test_clock;
	}
	A->conf.max_window = B->conf.max_window = 4u << 20;
	A->conf.send_buffer = 8u << 20; /* the sender's ring is no limit */
	side_start(A);
	side_start(B);
	for (int i = 0; i < 100; i++) { /* handshake over a 100 µs RTT */
		size_t n = pump_capped(A, B, 1 << 20);
		test_us += 50;
		n += pump_capped(B, A, 1 << 20);
		test_us += 50;
		if (!n)
			break;
	}
	cr_assert(A->done && B->done);
	struct em_frame_target t = target();
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), 0);
	for (int round = 0; round < 5000 && sent < (16u << 20); round++) {
		write_some(A, id, &sent, 16u << 20, false);
		pump_capped(A, B, link);
		test_us += 50;
		pump_capped(B, A, 1 << 20);
		test_us += 50;
	}
	cr_assert_eq(sent, 16u << 20, "the transfer finished");
	cr_assert_eq(B->bad_bytes, 0);
	struct em_tunnel_stream_info info;
	cr_assert_eq(em_tunnel_session_stream_info(B->s, id, &info), 0);
	return info.recv_window;
}

Test(session, window_stays_near_the_bdp_with_a_microsecond_clock)
{
	uint32_t w = window_after_link_run(true, 64 * 1024);
	cr_assert_eq(w, 256 * 1024, "window %u", w);
}

Test(session, window_grows_with_a_microsecond_clock_when_the_window_limits)
{
	/* 4 MiB per 100 µs: the window, not the link, is the limit. */
	uint32_t w = window_after_link_run(true, 4u << 20);
	cr_assert_eq(w, 4u << 20, "window %u", w);
}

Test(session, window_overshoots_with_millisecond_timestamps_only)
{
	uint32_t w = window_after_link_run(false, 64 * 1024);
	cr_assert_eq(w, 4u << 20, "window %u", w);
}

Test(session, rtt_is_sampled_while_streams_are_open)
{
	connect_pair(A, B);
	cr_assert_eq(A->pongs, 1, "the handshake's sample");
	now += 5001;
	em_tunnel_session_tick(A->s, now);
	pump(A, B);
	cr_assert_eq(A->pongs, 1, "no stream, no keepalive due: no PING");
	struct em_frame_target t = target();
	uint32_t id;
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id), 0);
	pump(A, B);
	now += 10;
	em_tunnel_session_tick(A->s, now);
	pump(A, B);
	cr_assert_eq(A->pongs, 2, "a stream is open and the last sample is old: a new one");
	now += 1000;
	uint64_t next = em_tunnel_session_tick(A->s, now);
	pump(A, B);
	cr_assert_eq(A->pongs, 2, "not again before 5 s");
	cr_assert_leq(next, 4000, "the tick comes back for the next sample (%lu ms)",
	              (unsigned long)next);
	now += 4000;
	em_tunnel_session_tick(A->s, now);
	pump(A, B);
	cr_assert_eq(A->pongs, 3);
}

/* ---- over a real socketpair ---- */

/* One step of the byte pipe between <sd>'s session and socket <fd>: its
 * output written with writev() (as far as the socket takes it), then what
 * the socket holds read into input(). Returns bytes moved. */
static size_t sock_step(struct side *sd, int fd)
{
	static uint8_t in[65536];
	size_t moved = 0;
	struct iovec iov[16];
	unsigned n = em_tunnel_session_output_iov(sd->s, iov, 16);
	if (n) {
		ssize_t w = writev(fd, iov, (int)n);
		if (w > 0) {
			em_tunnel_session_output_advance(sd->s, (size_t)w);
			moved += (size_t)w;
		} else {
			cr_assert(w < 0 && errno == EAGAIN, "writev: %s", strerror(errno));
		}
	}
	ssize_t r = read(fd, in, sizeof(in));
	if (r > 0) {
		em_tunnel_session_input(sd->s, in, (size_t)r, now);
		moved += (size_t)r;
	} else {
		cr_assert(r < 0 && errno == EAGAIN, "read: %zd %s", r, strerror(errno));
	}
	return moved;
}

Test(session, over_a_socketpair_a_stalled_stream_does_not_block_bulk)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	A->conf.on_release = on_release;
	side_start(A);
	side_start(B);
	for (int i = 0; i < 1000 && !(A->done && B->done); i++)
		sock_step(A, sv[0]), sock_step(B, sv[1]);
	cr_assert(A->done && B->done, "handshake over the socketpair");

	struct em_frame_target t = target();
	uint32_t bulk, stalled;
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &stalled), 0);
	cr_assert_eq(em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &bulk), 0);
	B->stall[stalled] = true;
	const uint64_t big = 16u << 20;
	uint64_t sent_b = 0, sent_s = 0;
	/* The bulk stream alternates copied writes and referenced buffers,
	 * each referenced buffer reused once the session gave it back. */
	static uint8_t tmp[32768];
	uint32_t tok = 0;
	for (int round = 0; round < 200000 && (sent_b < big || B->rx[bulk] < big); round++) {
		write_some(A, stalled, &sent_s, big, false);
		if (sent_b < big && (round & 1)) {
			if (!refs.buf[tok]) {
				refs.buf[tok] = malloc(sizeof(tmp));
				refs.released[tok] = 1;
			}
			if (refs.released[tok]) {
				size_t len = (size_t)EM_MIN(sizeof(tmp), big - sent_b);
				for (size_t k = 0; k < len; k++)
					refs.buf[tok][k] = pattern(bulk, sent_b + k);
				int w = em_tunnel_session_write_ref(A->s, bulk, refs.buf[tok], len,
				                                    tok);
				cr_assert_geq(w, 0);
				if (w > 0) {
					refs.released[tok] = 0;
					sent_b += (uint64_t)w;
					tok = (tok + 1) % 16;
				}
			}
		} else {
			write_some(A, bulk, &sent_b, big, false);
		}
		sock_step(A, sv[0]);
		sock_step(B, sv[1]);
	}
	cr_assert_eq(B->rx[bulk], big, "bulk stream got %lu of %lu", (unsigned long)B->rx[bulk],
	             (unsigned long)big);
	cr_assert_eq(B->rx[stalled], 256 * 1024, "the stalled stream holds only its window");
	cr_assert_eq(B->bad_bytes, 0);
	close(sv[0]);
	close(sv[1]);
	refs_free();
}

/* Heap bytes in use (glibc; sanitizer allocators report nothing here). */
static size_t heap_in_use(void)
{
	struct mallinfo2 m = mallinfo2();
	return m.uordblks + m.hblkhd;
}

Test(session, unauthenticated_session_costs_a_few_kib)
{
	A->conf.max_streams = B->conf.max_streams = 65536;
	/* A first handshake warms up the crypto library's caches. */
	struct side *a0 = side_new(EM_TUNNEL_DIALER, "edge-a", "secret");
	struct side *b0 = side_new(EM_TUNNEL_ACCEPTOR, "edge-b", "secret");
	connect_pair(a0, b0);
	side_free(a0);
	side_free(b0);
	side_start(A);
	size_t h0 = heap_in_use();
	side_start(B);
	/* B got a HELLO and answered with its AUTH: still not authenticated. */
	pump_one(A, B, 7000);
	cr_assert(!B->done && !B->closed);
	size_t h1 = heap_in_use();
	pump(A, B);
	cr_assert(A->done && B->done);
	size_t h2 = heap_in_use();
	if (h2 - h0 < 1024 * 1024)
		cr_skip_test("heap figures not available (sanitizer allocator)");
	cr_expect_lt(h1 - h0, 4096, "an unauthenticated session holds %zu bytes", h1 - h0);
	cr_expect_gt(h2 - h1, 4 * 1024 * 1024, "the stream table comes with AUTH (%zu bytes)",
	             h2 - h1);
	struct em_frame_target t = target();
	uint32_t id;
	cr_assert_eq(em_tunnel_session_open(A->s, &t, "hi", 2, NULL, &id), 2);
	pump(A, B);
	cr_assert_eq(B->n_opened, 1);
}

Test(session, handshake_slice_survives_the_switch_to_full_rings)
{
	side_start(A);
	side_start(B);
	/* B's HELLO is handed out (as into an SQE) but not yet reported sent. */
	struct em_slice hello = em_tunnel_session_output(B->s);
	cr_assert_gt(hello.len, 0);
	uint8_t copy[1024];
	cr_assert_leq(hello.len, sizeof(copy));
	memcpy(copy, hello.base, hello.len);
	em_tunnel_session_input(A->s, hello.base, hello.len, now);
	pump_one(A, B, 7000); /* A's HELLO and AUTH: B authenticates A, grows */
	cr_assert(B->done, "B authenticated A");
	cr_assert_eq(memcmp(hello.base, copy, hello.len), 0, "the slice is unchanged");
	em_tunnel_session_output_advance(B->s, hello.len);
	struct em_slice next = em_tunnel_session_output(B->s);
	cr_assert_gt(next.len, EM_FRAME_HEADER_LEN);
	cr_assert_eq((uint8_t)next.base[1], EM_FRAME_AUTH, "B's AUTH follows its HELLO");
	pump(A, B);
	cr_assert(A->done && !A->closed && !B->closed);
	cr_assert_eq(A->pongs, 1);
	cr_assert_eq(B->pongs, 1);
}

Test(session, stream_ids_run_out_with_a_reserve_signal)
{
	connect_pair(A, B);
	struct em_frame_target t = target();
	uint32_t id;
	cr_assert_gt(em_tunnel_session_ids_left(A->s), 1u << 30);
	cr_assert_eq(em_tunnel_session_test_set_next_id(A->s, 2), -EINVAL, "wrong parity");
	uint32_t start = UINT32_MAX - 2 - 2 * (EM_TUNNEL_ID_RESERVE + 2);
	cr_assert_eq(em_tunnel_session_test_set_next_id(A->s, start), 0);
	cr_assert_eq(em_tunnel_session_test_set_next_id(A->s, 1), -EINVAL, "ids never go back");
	cr_assert_eq(em_tunnel_session_ids_left(A->s), EM_TUNNEL_ID_RESERVE + 3);
	uint32_t opened = 0, last = 0;
	for (int i = 0; i < 5000; i++) {
		int rc = em_tunnel_session_open(A->s, &t, NULL, 0, NULL, &id);
		if (rc == -EBUSY && em_tunnel_session_ids_left(A->s) == 0)
			break;
		cr_assert_eq(rc, 0, "open %d: %d", i, rc);
		cr_assert_gt(id, last);
		last = id;
		opened++;
		em_tunnel_session_reset(A->s, id, EM_REASON_CANCEL, NULL);
		if ((i & 63) == 0) {
			pump(A, B);
			now += 1100; /* no reset flood: open-and-cancel at a calm rate */
		}
	}
	pump(A, B);
	cr_assert_eq(opened, EM_TUNNEL_ID_RESERVE + 3);
	cr_assert_eq(last, UINT32_MAX - 2);
	cr_assert_eq(em_tunnel_session_ids_left(A->s), 0);
	cr_assert(!A->closed && !B->closed, "high ids are legal on the wire");
	/* The drain the caller starts then ends the tunnel cleanly. */
	cr_assert_eq(em_tunnel_session_goaway(A->s, EM_REASON_NO_ERROR, "stream ids exhausted"), 0);
	pump(A, B);
	em_tunnel_session_tick(A->s, now);
	em_tunnel_session_tick(B->s, now);
	cr_assert(A->closed && B->closed);
	cr_assert_eq(A->close_reason, EM_REASON_NO_ERROR);
}
