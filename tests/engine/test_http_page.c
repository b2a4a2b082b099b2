/* The proxy's own responses (engine/http_page.c): each parses as a complete
 * HTTP/1.1 response whose Content-Length is exactly its body, with the
 * status it is named for and "Connection: close". */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/http_page.h"

static const int status_of[EM_PAGE__COUNT] = {
        [EM_PAGE_400] = 400,     [EM_PAGE_408] = 408,       [EM_PAGE_414] = 414,
        [EM_PAGE_431] = 431,     [EM_PAGE_501] = 501,       [EM_PAGE_502_REFUSED] = 502,
        [EM_PAGE_502_BAD] = 502, [EM_PAGE_503_NOSVC] = 503, [EM_PAGE_503_NOEP] = 503,
        [EM_PAGE_504] = 504,     [EM_PAGE_505] = 505,       [EM_PAGE_404_ROUTE] = 404,
        [EM_PAGE_503_EDGE] = 503, [EM_PAGE_504_EDGE] = 504, [EM_PAGE_502_EDGE] = 502,
};

Test(http_page, every_page_is_framed_by_its_length)
{
	for (int i = 0; i < EM_PAGE__COUNT; i++) {
		uint32_t len = 0;
		const char *p = em_http_page((enum em_http_page)i, &len);
		cr_assert_gt(len, 0);
		const char *end = strstr(p, "\r\n\r\n");
		cr_assert_not_null(end, "page %d has no end of head", i);
		size_t head = (size_t)(end - p) + 4;
		const char *cl = strstr(p, "Content-Length: ");
		cr_assert(cl && cl < end, "page %d has no Content-Length", i);
		unsigned long n = strtoul(cl + 16, NULL, 10);
		cr_assert_eq(n, len - head, "page %d: Content-Length %lu, body %zu", i, n,
		             (size_t)(len - head));
		cr_assert_eq(p[len - 1], '\n', "page %d: the body is one line", i);
		cr_assert_eq(strlen(p), len);
		char want[16];
		snprintf(want, sizeof(want), "HTTP/1.1 %d ", status_of[i]);
		cr_assert_eq(strncmp(p, want, strlen(want)), 0, "page %d: %.20s", i, p);
		cr_assert(strstr(p, "\r\nConnection: close\r\n") && strstr(p, "Connection") < end);
	}
}

Test(http_page, parser_statuses_map_to_their_pages)
{
	cr_assert_eq(em_http_page_for(408), EM_PAGE_408);
	cr_assert_eq(em_http_page_for(414), EM_PAGE_414);
	cr_assert_eq(em_http_page_for(431), EM_PAGE_431);
	cr_assert_eq(em_http_page_for(501), EM_PAGE_501);
	cr_assert_eq(em_http_page_for(502), EM_PAGE_502_REFUSED);
	cr_assert_eq(em_http_page_for(504), EM_PAGE_504);
	cr_assert_eq(em_http_page_for(505), EM_PAGE_505);
	cr_assert_eq(em_http_page_for(400), EM_PAGE_400);
	cr_assert_eq(em_http_page_for(0), EM_PAGE_400);
}

Test(http_page, too_many_requests_carries_retry_after)
{
	const uint32_t secs[] = {0, 1, 7, EM_HTTP_429_KEEP, EM_HTTP_429_KEEP + 1};
	for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++)
		for (int ka = 0; ka < 2; ka++) {
			uint32_t len = 0;
			bool owned = true;
			const char *p = em_http_page_429(secs[i], ka, &len, &owned);
			cr_assert_not_null(p);
			cr_assert_eq(owned, secs[i] > EM_HTTP_429_KEEP);
			cr_assert_eq(strncmp(p, "HTTP/1.1 429 ", 13), 0);
			const char *end = strstr(p, "\r\n\r\n");
			cr_assert_not_null(end);
			const char *cl = strstr(p, "Content-Length: ");
			cr_assert_eq(strtoul(cl + 16, NULL, 10), len - (size_t)(end + 4 - p));
			char want[48];
			snprintf(want, sizeof(want), "\r\nRetry-After: %u\r\n",
			         secs[i] ? secs[i] : 1);
			cr_assert_not_null(strstr(p, want), "%s", p);
			cr_assert_not_null(strstr(p, ka ? "Connection: keep-alive\r\n"
			                                : "Connection: close\r\n"));
			cr_assert_eq(p[len - 1], '\n');
			if (!owned) {
				/* Kept: the same page again. */
				uint32_t len2;
				bool owned2;
				cr_assert_eq(em_http_page_429(secs[i], ka, &len2, &owned2), p);
			} else {
				free((char *)p);
			}
		}
}
