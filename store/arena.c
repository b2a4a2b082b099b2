/* Block arena: see store/arena.h. */
#include "store/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct em_arena_block {
	struct em_arena_block *next;
	size_t used, cap;
	_Alignas(16) char data[];
};

void *em_arena_alloc(struct em_arena *a, size_t n)
{
	struct em_arena_block *b = a->head;
	void *p;

	if (n > SIZE_MAX - 15)
		return NULL;
	n = (n + 15) & ~(size_t)15;
	if (!b || b->cap - b->used < n) {
		size_t cap = a->block ? a->block : EM_ARENA_BLOCK_MIN;
		if (cap < n)
			cap = n;
		if (cap > SIZE_MAX - sizeof(*b) || !(b = malloc(sizeof(*b) + cap)))
			return NULL;
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
		a->bytes += sizeof(*b) + cap;
		/* Few blocks for large builds, little waste for small ones. */
		if (a->block < EM_ARENA_BLOCK_MAX)
			a->block = a->block ? a->block * 2 : EM_ARENA_BLOCK_MIN * 2;
	}
	p = b->data + b->used;
	b->used += n;
	return p;
}

void *em_arena_calloc(struct em_arena *a, size_t count, size_t size)
{
	void *p;

	if (size && count > SIZE_MAX / size)
		return NULL;
	if ((p = em_arena_alloc(a, count * size)))
		memset(p, 0, count * size);
	return p;
}

char *em_arena_strdup(struct em_arena *a, const char *s)
{
	size_t n = strlen(s ? s : "");
	char *p = em_arena_alloc(a, n + 1);

	if (p) {
		memcpy(p, s ? s : "", n);
		p[n] = 0;
	}
	return p;
}

void em_arena_free(struct em_arena *a)
{
	struct em_arena_block *b = a->head, *next;

	for (; b; b = next) {
		next = b->next;
		free(b);
	}
	a->head = NULL;
	a->bytes = 0;
}
