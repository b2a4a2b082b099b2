/* The Kubernetes API's wire formats as the watcher reads them. */
#include "store/kube_wire.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/em.h"
#include "store/json.h"

static bool dns_host(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.')
			return false;
	return true;
}

int em_kube_url_parse(const char *s, struct em_kube_url *out)
{
	memset(out, 0, sizeof(*out));
	if (strncmp(s, "https://", 8) == 0) {
		out->tls = true;
		s += 8;
	} else if (strncmp(s, "http://", 7) == 0) {
		s += 7;
	} else {
		return -EINVAL;
	}
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	const char *host = s, *port = NULL, *end = s + alen;
	size_t hlen;
	if (alen == 0 || memchr(s, '@', alen))
		return -EINVAL;
	if (s[0] == '[') {
		const char *rb = memchr(s, ']', alen);
		if (!rb)
			return -EINVAL;
		host = s + 1;
		hlen = (size_t)(rb - host);
		if (rb + 1 < end && rb[1] != ':')
			return -EINVAL;
		port = rb + 1 < end ? rb + 2 : NULL;
		char ip[64];
		struct em_addr a;
		if (hlen == 0 || hlen >= sizeof(ip))
			return -EINVAL;
		memcpy(ip, host, hlen);
		ip[hlen] = 0;
		if (em_addr_parse(ip, false, &a) || a.family != AF_INET6)
			return -EINVAL;
	} else {
		const char *colon = memchr(s, ':', alen);
		hlen = colon ? (size_t)(colon - s) : alen;
		port = colon ? colon + 1 : NULL;
		if (!dns_host(host, hlen))
			return -EINVAL;
	}
	out->port = out->tls ? 443 : 80;
	if (port) {
		unsigned long v = 0;
		if (port >= end || end - port > 5)
			return -EINVAL;
		for (const char *p = port; p < end; p++) {
			if (*p < '0' || *p > '9')
				return -EINVAL;
			v = v * 10 + (unsigned long)(*p - '0');
		}
		if (v == 0 || v > 65535)
			return -EINVAL;
		out->port = (uint16_t)v;
	}
	if (hlen >= sizeof(out->host))
		return -EINVAL;
	memcpy(out->host, host, hlen);
	out->host[hlen] = 0;
	if (slash) {
		size_t plen = strlen(slash);
		while (plen && slash[plen - 1] == '/')
			plen--;
		if (plen >= sizeof(out->prefix))
			return -EINVAL;
		for (size_t i = 0; i < plen; i++) {
			unsigned char ch = (unsigned char)slash[i];
			if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#')
				return -EINVAL;
		}
		memcpy(out->prefix, slash, plen);
		out->prefix[plen] = 0;
	}
	bool v6 = s[0] == '[';
	snprintf(out->authority, sizeof(out->authority), "%s%s%s:%u", v6 ? "[" : "", out->host,
	         v6 ? "]" : "", out->port);
	return 0;
}

void em_kube_lines_init(struct em_kube_lines *l, const struct em_http1_head *h, size_t max)
{
	l->len = 0;
	l->max = max;
	em_http1_body_init(&l->body, h);
}

void em_kube_lines_free(struct em_kube_lines *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = l->cap = 0;
}

bool em_kube_lines_done(const struct em_kube_lines *l)
{
	return em_http1_body_done(&l->body);
}

size_t em_kube_lines_partial(const struct em_kube_lines *l)
{
	return l->len;
}

/* Buffer kept between lines; a larger one is freed once its line is out. */
#define LINES_KEEP (256u * 1024)

/* Appends <n> bytes to the held line, growing the buffer by doubling up to
 * the line limit. */
static int hold(struct em_kube_lines *l, const char *p, size_t n)
{
	if (l->len + n > l->max)
		return -EMSGSIZE;
	if (l->len + n > l->cap) {
		size_t cap = l->cap ? l->cap : 4096;
		while (cap < l->len + n)
			cap *= 2;
		if (cap > l->max)
			cap = l->max;
		char *nb = realloc(l->buf, cap);
		if (!nb)
			return -ENOMEM;
		l->buf = nb;
		l->cap = cap;
	}
	memcpy(l->buf + l->len, p, n);
	l->len += n;
	return 0;
}

static int emit(const char *line, size_t len, em_kube_line_fn fn, void *arg)
{
	if (len && line[len - 1] == '\r')
		len--;
	return len ? fn(arg, line, len) : 0;
}

/* Splits decoded payload <p> (<n> bytes) into lines. Whole lines inside
 * <p> are passed without copying; only a line's unfinished tail is held. */
static int payload(struct em_kube_lines *l, const char *p, size_t n, em_kube_line_fn fn, void *arg)
{
	while (n) {
		const char *nl = memchr(p, '\n', n);
		if (!nl)
			return hold(l, p, n);
		size_t k = (size_t)(nl - p);
		int rc;
		if (l->len) {
			if ((rc = hold(l, p, k)) != 0)
				return rc;
			rc = emit(l->buf, l->len, fn, arg);
			l->len = 0;
			/* One large event does not pin its size for good. */
			if (l->cap > LINES_KEEP)
				em_kube_lines_free(l);
		} else {
			rc = k > l->max ? -EMSGSIZE : emit(p, k, fn, arg);
		}
		if (rc)
			return rc;
		p += k + 1;
		n -= k + 1;
	}
	return 0;
}

ssize_t em_kube_lines_feed(struct em_kube_lines *l, const char *buf, size_t len, em_kube_line_fn fn,
                           void *arg)
{
	size_t off = 0;
	while (off < len && !em_http1_body_done(&l->body)) {
		struct em_slice data = {0};
		ssize_t n = em_http1_body_step(&l->body, buf + off, len - off, &data);
		if (n < 0)
			return -EBADMSG;
		if (n == 0)
			break;
		off += (size_t)n;
		int rc = data.len ? payload(l, data.base, data.len, fn, arg) : 0;
		if (rc)
			return rc;
	}
	return (ssize_t)off;
}

static const char *const ev_names[] = {"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"};

int em_kube_event_parse(const char *line, size_t len, struct em_kube_event *ev, char *err,
                        size_t errlen)
{
	size_t off = 0;
	memset(ev, 0, sizeof(*ev));
	cJSON *root = em_json_parse(line, len, &off, NULL);
	if (!root) {
		if (off == SIZE_MAX)
			snprintf(err, errlen, "out of memory");
		else
			snprintf(err, errlen, "watch event: JSON syntax error at byte %zu", off);
		return off == SIZE_MAX ? -ENOMEM : -EINVAL;
	}
	const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
	cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "object");
	int t = cJSON_IsString(type)
	                ? em_json_pick(type->valuestring, ev_names, EM_ARRAY_SIZE(ev_names))
	                : -1;
	if (t < 0) {
		snprintf(err, errlen,
		         "watch event: expected \"type\" ADDED, MODIFIED, DELETED, "
		         "BOOKMARK or ERROR");
		cJSON_Delete(root);
		return -EINVAL;
	}
	if (!cJSON_IsObject(obj)) {
		snprintf(err, errlen, "watch event %s: expected \"object\" to be an object",
		         ev_names[t]);
		cJSON_Delete(root);
		return -EINVAL;
	}
	ev->type = (enum em_kube_ev)t;
	ev->root = root;
	ev->object = obj;
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const cJSON *rv = cJSON_GetObjectItemCaseSensitive(meta, "resourceVersion");
	ev->rv = cJSON_IsString(rv) ? rv->valuestring : NULL;
	ev->message = "";
	if (t == EM_KUBE_ERROR) {
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(obj, "code");
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(obj, "message");
		ev->code = cJSON_IsNumber(code) ? code->valueint : 0;
		if (cJSON_IsString(msg))
			ev->message = msg->valuestring;
	}
	return 0;
}

