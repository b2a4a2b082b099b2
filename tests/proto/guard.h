/* Places test input so that it ends exactly where a PROT_NONE page begins:
 * a parser that reads one byte past its input crashes the test. */
#ifndef EM_TESTS_GUARD_H
#define EM_TESTS_GUARD_H

#include <criterion/criterion.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_DATA_PAGES 12 /* room for 48 KiB of input on 4 KiB pages */

static char *guard_area;
static size_t guard_span;

/* Copies <len> bytes of <data> so that they end at the guard page and
 * returns the copy; valid until the next call. */
static const char *guard_put(const void *data, size_t len)
{
	if (!guard_area) {
		size_t page = (size_t)sysconf(_SC_PAGESIZE);
		guard_span = page * GUARD_DATA_PAGES;
		guard_area = mmap(NULL, guard_span + page, PROT_READ | PROT_WRITE,
		                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert(guard_area != MAP_FAILED);
		cr_assert(mprotect(guard_area + guard_span, page, PROT_NONE) == 0);
	}
	cr_assert(len <= guard_span);
	memcpy(guard_area + guard_span - len, data, len);
	return guard_area + guard_span - len;
}

#endif
