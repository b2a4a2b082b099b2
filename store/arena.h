/* Bump allocator over a list of blocks, for data that is built once and
 * freed whole: a service table snapshot, a decoded Kubernetes object.
 *
 * All-zero is an empty arena. Not thread-safe; an arena belongs to whoever
 * builds it. */
#ifndef EM_STORE_ARENA_H
#define EM_STORE_ARENA_H

#include <stddef.h>

struct em_arena_block;

struct em_arena {
	struct em_arena_block *head;
	size_t bytes; /* held in blocks, headers included */
	size_t block; /* size of the next block; 0: EM_ARENA_BLOCK_MIN. Doubles
	                 with each new block up to EM_ARENA_BLOCK_MAX. */
};

#define EM_ARENA_BLOCK_MIN 512
#define EM_ARENA_BLOCK_MAX (64 * 1024)

/* <n> bytes aligned to 16, uninitialised, valid until em_arena_free.
 * Returns NULL when out of memory (the arena stays usable). */
void *em_arena_alloc(struct em_arena *a, size_t n);

/* As em_arena_alloc for <count> items of <size> bytes, zeroed. Returns NULL
 * on overflow or when out of memory. */
void *em_arena_calloc(struct em_arena *a, size_t count, size_t size);

/* A copy of <s> (NULL copies as ""). Returns NULL when out of memory. */
char *em_arena_strdup(struct em_arena *a, const char *s);

/* Releases every block; <a> is empty again. The arena struct itself may
 * live inside one of its blocks: copy it out first. */
void em_arena_free(struct em_arena *a);

#endif
