/* The block arena: alignment, zeroing, growth past a block, free. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "store/arena.h"

Test(arena, allocations_are_aligned_and_distinct)
{
	struct em_arena a = {0};
	char *p = em_arena_alloc(&a, 3), *q = em_arena_alloc(&a, 5);

	cr_assert_not_null(p);
	cr_assert_not_null(q);
	cr_assert_eq((uintptr_t)p % 16, 0);
	cr_assert_eq((uintptr_t)q % 16, 0);
	cr_assert_geq(q > p ? (size_t)(q - p) : (size_t)(p - q), 16);
	em_arena_free(&a);
	cr_assert_null(a.head);
	cr_assert_eq(a.bytes, 0);
}

Test(arena, calloc_zeroes_and_refuses_overflow)
{
	struct em_arena a = {0};
	unsigned char *p = em_arena_calloc(&a, 100, 3);

	cr_assert_not_null(p);
	for (size_t i = 0; i < 300; i++)
		cr_assert_eq(p[i], 0);
	cr_assert_null(em_arena_calloc(&a, SIZE_MAX / 2, 4));
	em_arena_free(&a);
}

Test(arena, grows_past_one_block_and_keeps_old_data)
{
	struct em_arena a = {0};
	char *first = em_arena_strdup(&a, "first");
	char *big = em_arena_alloc(&a, 3 * EM_ARENA_BLOCK_MAX);

	for (int i = 0; i < 1000; i++)
		cr_assert_not_null(em_arena_strdup(&a, "some label value"));
	cr_assert_not_null(big);
	memset(big, 0xab, 3 * EM_ARENA_BLOCK_MAX);
	cr_assert_str_eq(first, "first");
	cr_assert_gt(a.bytes, 3 * EM_ARENA_BLOCK_MAX);
	cr_assert_leq(a.block, EM_ARENA_BLOCK_MAX);
	cr_assert_str_eq(em_arena_strdup(&a, NULL), "");
	em_arena_free(&a);
}
