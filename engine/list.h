/* Intrusive doubly linked lists for per-worker bookkeeping (timers, pools).
 * A zeroed node is "not linked"; a list head must be initialised. */
#ifndef EM_ENGINE_LIST_H
#define EM_ENGINE_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct em_dlist {
	struct em_dlist *prev, *next;
};

#define em_container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static inline void em_dlist_init(struct em_dlist *h)
{
	h->prev = h->next = h;
}

static inline bool em_dlist_empty(const struct em_dlist *h)
{
	return h->next == h;
}

static inline bool em_dlist_linked(const struct em_dlist *n)
{
	return n->next != NULL;
}

/* Unlinks <n> if linked; <n> reads as unlinked afterwards. */
static inline void em_dlist_del(struct em_dlist *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

/* Appends <n> at the tail of <h>, unlinking it first from wherever it was. */
static inline void em_dlist_push_tail(struct em_dlist *h, struct em_dlist *n)
{
	em_dlist_del(n);
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline struct em_dlist *em_dlist_first(const struct em_dlist *h)
{
	return em_dlist_empty(h) ? NULL : h->next;
}

#endif
