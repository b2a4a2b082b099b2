/* Tunnel buffers: the tunnel sockets' receive ring, slices of it queued on
 * sockets without a copy, and the pooled chunks DATA is copied into. */
#include "engine/tunnel_int.h"

#include <stdlib.h>

/* A chunk of CH_SMALL or CH_BIG bytes (the smallest <want> fits), or of
 * CH_HUGE for <want> beyond CH_BIG. */
struct tchunk *tun_chunk_get(struct em_tun_worker *t, size_t want)
{
	if (want > CH_BIG) {
		struct tchunk *h = malloc(sizeof(*h) + CH_HUGE);
		if (h)
			h->cap = CH_HUGE;
		return h;
	}
	bool small = want <= CH_SMALL;
	struct tchunk **fl = small ? &t->free_small : &t->free_big;
	struct tchunk *c = *fl;
	if (c) {
		*fl = c->next;
		if (small)
			t->n_free_small--;
		else
			t->n_free_big--;
		return c;
	}
	uint32_t cap = small ? CH_SMALL : CH_BIG;
	c = malloc(sizeof(*c) + cap);
	if (c)
		c->cap = cap;
	return c;
}

/* A held slice was sent or dropped: its window goes back, and the buffer
 * to the ring when it was the last slice of a buffer input is done with. */
static void ref_put(struct em_worker *w, const char *p)
{
	struct em_tun_worker *t = w->tun;
	size_t at = (size_t)(p - t->rb.base);
	uint16_t bid = (uint16_t)(at / TUN_BUF_SIZE);
	uint32_t off = (uint32_t)(at % TUN_BUF_SIZE);
	struct tbufhold *h = &t->hold[bid];
	for (unsigned i = 0; i < TUN_REFS; i++) {
		struct tref *r = &h->r[i];
		if (!r->ts || r->off != off)
			continue;
		struct em_tstream *ts = r->ts;
		if (ts->gen == r->gen && ts->tc && ts->id) {
			em_tunnel_session_consume(ts->tc->sess, ts->id, r->len, w->now_ms);
			tun_mark_dirty(w, ts->tc);
		}
		r->ts = NULL;
		if (--h->refs == 0) {
			t->n_held--;
			if (h->held) {
				h->held = false;
				em_bufring_put(&t->rb, bid);
			}
		}
		return;
	}
}

/* Queues <d> (a slice of the buffer being parsed) on <s> without copying.
 * Returns false when it must be copied instead. */
bool tun_ref_enqueue(struct em_worker *w, struct em_tstream *ts, struct em_sock *s,
                     struct em_slice d)
{
	struct em_tun_worker *t = w->tun;
	if (d.len < TUN_REF_MIN || t->cur_bid == EM_NO_BUF)
		return false;
	const char *b = em_bufring_buf(&t->rb, (uint16_t)t->cur_bid);
	if (d.base < b || d.base + d.len > b + TUN_BUF_SIZE)
		return false;
	struct tbufhold *h = &t->hold[t->cur_bid];
	if (h->refs == 0 && t->n_held >= TUN_HOLD_MAX)
		return false;
	struct tref *r = NULL;
	for (unsigned i = 0; i < TUN_REFS && !r; i++)
		if (!h->r[i].ts)
			r = &h->r[i];
	if (!r)
		return false;
	uint16_t e = em_worker_static_get(w, d.base, tun_chunk_release);
	if (e == EM_Q_NONE)
		return false;
	r->ts = ts;
	r->gen = ts->gen;
	r->off = (uint32_t)(d.base - b);
	r->len = (uint32_t)d.len;
	if (h->refs++ == 0)
		t->n_held++;
	em_sock_enqueue(w, s, e, (uint32_t)d.len);
	return true;
}

/* A queued chunk or slice of a tunnel buffer was sent or dropped: its
 * window goes back to its stream, the memory to its pool. */
void tun_chunk_release(struct em_worker *w, const char *p)
{
	struct em_tun_worker *t = w->tun;
	if (t->rb.base && p >= t->rb.base &&
	    p < t->rb.base + (size_t)TUN_BUF_COUNT * TUN_BUF_SIZE) {
		ref_put(w, p);
		return;
	}
	struct tchunk *c = (struct tchunk *)(void *)(p - offsetof(struct tchunk, data));
	struct em_tstream *ts = c->ts;
	if (ts && ts->gen == c->gen && ts->tc && ts->id) {
		em_tunnel_session_consume(ts->tc->sess, ts->id, c->len, w->now_ms);
		tun_mark_dirty(w, ts->tc);
	}
	if (c->cap == CH_SMALL && t->n_free_small < CH_FREE_SMALL) {
		c->next = t->free_small;
		t->free_small = c;
		t->n_free_small++;
	} else if (c->cap == CH_BIG && t->n_free_big < CH_FREE_BIG) {
		c->next = t->free_big;
		t->free_big = c;
		t->n_free_big++;
	} else {
		free(c);
	}
}

/* The chunk behind socket <s>'s last queue entry when it is a heap chunk of
 * stream <ts> with room left, else NULL. */
struct tchunk *tun_tail_chunk(struct em_worker *w, struct em_tstream *ts, struct em_sock *s)
{
	uint16_t e = s->q_len ? s->q_last : EM_Q_NONE;
	if (e == EM_Q_NONE || em_worker_entry_owner(w, e) != tun_chunk_release)
		return NULL;
	const char *p = w->st_ptr[e - EM_BUF_COUNT];
	const struct em_tun_worker *t = w->tun;
	if (t->rb.base && p >= t->rb.base && p < t->rb.base + (size_t)TUN_BUF_COUNT * TUN_BUF_SIZE)
		return NULL; /* a slice of a tunnel buffer */
	struct tchunk *c = (struct tchunk *)(void *)(p - offsetof(struct tchunk, data));
	if (c->ts != ts || c->gen != ts->gen || c->len >= c->cap || w->q_bytes[e] != c->len)
		return NULL;
	return c;
}

bool em_tun_trim(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	if (!t)
		return true;
	if (t->n_held)
		return false;
	em_bufring_trim(&t->rb);
	while (t->free_small) {
		struct tchunk *c = t->free_small;
		t->free_small = c->next;
		free(c);
	}
	while (t->free_big) {
		struct tchunk *c = t->free_big;
		t->free_big = c->next;
		free(c);
	}
	t->n_free_small = t->n_free_big = 0;
	return true;
}

void tun_buf_free(struct em_worker *w)
{
	struct em_tun_worker *t = w->tun;
	em_bufring_free(&t->rb);
	struct tchunk *lists[2] = {t->free_small, t->free_big};
	for (int i = 0; i < 2; i++)
		while (lists[i]) {
			struct tchunk *c = lists[i];
			lists[i] = c->next;
			free(c);
		}
	t->free_small = t->free_big = NULL;
	t->n_free_small = t->n_free_big = 0;
}
