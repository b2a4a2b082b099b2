/* Internal to engine/: the responses the proxy answers itself.
 *
 * One line of plain text each ("no ready endpoint"), with
 * "Connection: close"; the head is built once per process, so every
 * Content-Length matches its body by construction. */
#ifndef EM_ENGINE_HTTP_PAGE_H
#define EM_ENGINE_HTTP_PAGE_H

#include <stdbool.h>
#include <stdint.h>

enum em_http_page {
	EM_PAGE_400,
	EM_PAGE_408,
	EM_PAGE_414,
	EM_PAGE_431,
	EM_PAGE_501,
	EM_PAGE_502_REFUSED, /* upstream refused the connection */
	EM_PAGE_502_BAD,     /* bad response from upstream */
	EM_PAGE_503_NOSVC,   /* no such service */
	EM_PAGE_503_NOEP,    /* no ready endpoint */
	EM_PAGE_504,
	EM_PAGE_505,
	EM_PAGE_404_ROUTE, /* Router: no rule for the path */
	EM_PAGE_503_EDGE,  /* Router: the edge is not connected */
	EM_PAGE_504_EDGE,  /* Router: the edge did not answer in time */
	EM_PAGE_502_EDGE,  /* Router: the edge lost or refused the call */
	EM_PAGE__COUNT
};

/* The whole response of <page> (head and body), <*len> bytes, valid for the
 * life of the process. Any thread; the pages are built on the first call. */
const char *em_http_page(enum em_http_page page, uint32_t *len);

/* The one-line reason <page> gives ("no ready endpoint"). */
const char *em_http_page_reason(enum em_http_page page);

/* The page for an HTTP status a parser reported (proto/http1.h
 * em_http1_status): 408, 414, 431, 501, 502, 504, 505; 400 for any other. */
enum em_http_page em_http_page_for(int status);

/* Retry-After values whose 429 pages are kept once built. */
#define EM_HTTP_429_KEEP 3600u

/* The answer to a request over its service's QPS limit: "429 Too Many
 * Requests" with "Retry-After: <secs>" (0 is sent as 1), "Connection:
 * keep-alive" or "close" after <keepalive>, and a one-line body; <*len>
 * bytes. Pages up to EM_HTTP_429_KEEP seconds are built on first use and
 * kept for the life of the process (<*owned> false); longer ones are
 * malloc'd for the caller to free (<*owned> true). Any thread. NULL when
 * out of memory. */
const char *em_http_page_429(uint32_t secs, bool keepalive, uint32_t *len, bool *owned);

#endif
