/* The proxy's own responses, built once with computed lengths. */
#include "engine/http_page.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/em.h"

static const struct {
	const char *status, *body;
} page_src[EM_PAGE__COUNT] = {
        [EM_PAGE_400] = {"400 Bad Request", "malformed request"},
        [EM_PAGE_408] = {"408 Request Timeout", "request head timeout"},
        [EM_PAGE_414] = {"414 URI Too Long", "request line too long"},
        [EM_PAGE_431] = {"431 Request Header Fields Too Large", "request header fields too large"},
        [EM_PAGE_501] = {"501 Not Implemented", "transfer coding not implemented"},
        [EM_PAGE_502_REFUSED] = {"502 Bad Gateway", "upstream refused the connection"},
        [EM_PAGE_502_BAD] = {"502 Bad Gateway", "bad response from upstream"},
        [EM_PAGE_503_NOSVC] = {"503 Service Unavailable", "no such service"},
        [EM_PAGE_503_NOEP] = {"503 Service Unavailable", "no ready endpoint"},
        [EM_PAGE_504] = {"504 Gateway Timeout", "upstream connect timeout"},
        [EM_PAGE_505] = {"505 HTTP Version Not Supported", "http version not supported"},
        [EM_PAGE_404_ROUTE] = {"404 Not Found",
                               "no rule for this path (expected /<node>/<namespace>/<path>)"},
        [EM_PAGE_503_EDGE] = {"503 Service Unavailable", "edge not connected to the cloud"},
        [EM_PAGE_504_EDGE] = {"504 Gateway Timeout", "edge did not answer in time"},
        [EM_PAGE_502_EDGE] = {"502 Bad Gateway", "edge refused or lost the call"},
};

static struct {
	char text[224];
	uint32_t len;
} pages[EM_PAGE__COUNT];
static pthread_once_t pages_once = PTHREAD_ONCE_INIT;

static void pages_init(void)
{
	for (int i = 0; i < EM_PAGE__COUNT; i++) {
		int n = snprintf(
		        pages[i].text, sizeof(pages[i].text),
		        "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
		        "Connection: close\r\n\r\n%s\n",
		        page_src[i].status, strlen(page_src[i].body) + 1, page_src[i].body);
		EM_ASSERT(n > 0 && (size_t)n < sizeof(pages[i].text));
		pages[i].len = (uint32_t)n;
	}
}

const char *em_http_page(enum em_http_page page, uint32_t *len)
{
	pthread_once(&pages_once, pages_init);
	*len = pages[page].len;
	return pages[page].text;
}

const char *em_http_page_reason(enum em_http_page page)
{
	return page_src[page].body;
}

enum em_http_page em_http_page_for(int status)
{
	switch (status) {
	case 408:
		return EM_PAGE_408;
	case 414:
		return EM_PAGE_414;
	case 431:
		return EM_PAGE_431;
	case 501:
		return EM_PAGE_501;
	case 502:
		return EM_PAGE_502_REFUSED;
	case 504:
		return EM_PAGE_504;
	case 505:
		return EM_PAGE_505;
	default:
		return EM_PAGE_400;
	}
}

static char *kept_429[2][EM_HTTP_429_KEEP + 1];

static char *build_429(uint32_t secs, bool keepalive)
{
	static const char body[] = "request rate over the service's limit (edgemesh.io/qps)\n";
	char buf[256];
	int n = snprintf(buf, sizeof(buf),
	                 "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n"
	                 "Content-Length: %zu\r\nRetry-After: %u\r\nConnection: %s\r\n\r\n%s",
	                 sizeof(body) - 1, secs, keepalive ? "keep-alive" : "close", body);
	EM_ASSERT(n > 0 && (size_t)n < sizeof(buf));
	return strdup(buf);
}

const char *em_http_page_429(uint32_t secs, bool keepalive, uint32_t *len, bool *owned)
{
	char *p;
	if (secs == 0)
		secs = 1;
	*owned = secs > EM_HTTP_429_KEEP;
	if (*owned) {
		p = build_429(secs, keepalive);
	} else {
		/* Built once by whichever worker needs it first; a loser of the
		 * race frees its copy. */
		char **slot = &kept_429[keepalive][secs];
		p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
		if (!p && (p = build_429(secs, keepalive))) {
			char *none = NULL;
			if (!__atomic_compare_exchange_n(slot, &none, p, false, __ATOMIC_ACQ_REL,
			                                 __ATOMIC_ACQUIRE)) {
				free(p);
				p = none;
			}
		}
	}
	if (p)
		*len = (uint32_t)strlen(p);
	return p;
}
