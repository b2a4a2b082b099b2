/* JSON reading helpers: see store/json.h. */
#include "store/json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/em.h"

cJSON *em_json_parse(const char *text, size_t len, size_t *off, bool *trailing)
{
	const char *end = NULL;
	char *copy = malloc(len + 1);
	cJSON *root;

	*off = SIZE_MAX;
	if (trailing)
		*trailing = false;
	if (!copy)
		return NULL;
	/* cJSON wants a terminated string and stops at its first NUL: copy, so
	 * that it never reads past <len> and a NUL inside is the error it is. */
	memcpy(copy, text, len);
	copy[len] = 0;
	root = cJSON_ParseWithOpts(copy, &end, 0);
	if (!end)
		end = root ? copy + len : cJSON_GetErrorPtr();
	if (!end || end < copy || end > copy + len)
		end = copy + len;
	while (root && end < copy + len &&
	       (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
		end++;
	if (!root || end != copy + len) {
		if (trailing)
			*trailing = root != NULL;
		cJSON_Delete(root);
		root = NULL;
		*off = (size_t)(end - copy);
	}
	free(copy);
	return root;
}

static size_t push_v(struct em_json *j, const char *fmt, va_list ap)
{
	size_t old = j->plen;
	int n = vsnprintf(j->path + old, sizeof(j->path) - old, fmt, ap);

	if (n > 0)
		j->plen = EM_MIN(old + (size_t)n, sizeof(j->path) - 1);
	for (size_t i = old; i < j->plen; i++)
		if ((unsigned char)j->path[i] < 0x20 || j->path[i] == 0x7f)
			j->path[i] = '?';
	return old;
}

size_t em_json_push(struct em_json *j, const char *fmt, ...)
{
	va_list ap;
	size_t old;

	va_start(ap, fmt);
	old = push_v(j, fmt, ap);
	va_end(ap);
	return old;
}

size_t em_json_push_key(struct em_json *j, const char *key)
{
	return em_json_push(j, j->plen ? ".%s" : "%s", key ? key : "");
}

size_t em_json_push_index(struct em_json *j, size_t i)
{
	return em_json_push(j, "[%zu]", i);
}

void em_json_pop(struct em_json *j, size_t mark)
{
	if (mark < j->plen)
		j->plen = mark;
	j->path[j->plen] = 0;
}

int em_json_fail(struct em_json *j, const char *field, const char *fmt, ...)
{
	size_t mark = j->plen;
	va_list ap;
	int n = 0;

	if (!j->err || !j->errlen)
		return -EINVAL;
	if (field)
		em_json_push_key(j, field);
	if (j->plen || j->top)
		n = snprintf(j->err, j->errlen, "%s%s%s: ", j->name ? j->name : "",
		             j->name ? ": " : "", j->plen ? j->path : j->top);
	else if (j->name)
		n = snprintf(j->err, j->errlen, "%s: ", j->name);
	em_json_pop(j, mark);
	if (n >= 0 && (size_t)n < j->errlen) {
		va_start(ap, fmt);
		vsnprintf(j->err + n, j->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int em_json_oom(struct em_json *j)
{
	if (j->err && j->errlen)
		snprintf(j->err, j->errlen, "%s%sout of memory", j->name ? j->name : "",
		         j->name ? ": " : "");
	return -ENOMEM;
}

const cJSON *em_json_get(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
	return it && !cJSON_IsNull(it) ? it : NULL;
}

int em_json_object(struct em_json *j, const cJSON *v, const char *field, bool required,
                   const cJSON **out)
{
	if (!v) {
		*out = NULL;
		return required ? em_json_fail(j, field, "missing") : 0;
	}
	if (!cJSON_IsObject(v))
		return em_json_fail(j, field, "expected object");
	*out = v;
	return 0;
}

int em_json_array(struct em_json *j, const cJSON *v, const char *field, size_t max,
                  const char *what, size_t *n)
{
	*n = 0;
	if (!v)
		return 0;
	if (!cJSON_IsArray(v) || (max && (size_t)cJSON_GetArraySize(v) > max)) {
		if (max && what)
			return em_json_fail(j, field, "expected array of at most %zu %s", max,
			                    what);
		return em_json_fail(j, field, "expected array");
	}
	*n = (size_t)cJSON_GetArraySize(v);
	return 0;
}

int em_json_string(struct em_json *j, const cJSON *v, const char *field, bool required,
                   const char **out)
{
	if (!v)
		return required ? em_json_fail(j, field, "missing") : 0;
	if (!cJSON_IsString(v) || !v->valuestring)
		return em_json_fail(j, field, "expected string");
	*out = v->valuestring;
	return 0;
}

int em_json_bool(struct em_json *j, const cJSON *v, const char *field, bool *out)
{
	if (!v)
		return 0;
	if (!cJSON_IsBool(v))
		return em_json_fail(j, field, "expected true or false");
	*out = cJSON_IsTrue(v);
	return 0;
}

int em_json_int(struct em_json *j, const cJSON *v, const char *field, bool required, long long lo,
                long long hi, long long *out)
{
	double d;

	if (!v)
		return required ? em_json_fail(j, field, "missing, expected integer %lld..%lld", lo,
		                               hi)
		                : 0;
	d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;
	/* The range test also refuses NaN and makes the cast defined; the
	 * cast test refuses fractions. */
	if (!cJSON_IsNumber(v) || !(d >= (double)lo && d <= (double)hi) ||
	    d != (double)(long long)d)
		return em_json_fail(j, field, "expected integer %lld..%lld", lo, hi);
	*out = (long long)d;
	return 0;
}

int em_json_u32(struct em_json *j, const cJSON *v, const char *field, bool required, uint32_t lo,
                uint32_t hi, uint32_t *out)
{
	long long n;
	int rc = em_json_int(j, v, field, required, lo, hi, &n);

	if (!rc && v)
		*out = (uint32_t)n;
	return rc;
}

int em_json_port(struct em_json *j, const cJSON *v, const char *field, bool required, uint16_t *out)
{
	uint32_t n;
	int rc = em_json_u32(j, v, field, required, 1, 65535, &n);

	if (!rc && v)
		*out = (uint16_t)n;
	return rc;
}

int em_json_pick(const char *s, const char *const *names, size_t n)
{
	for (size_t i = 0; s && i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

int em_json_each(struct em_json *j, const cJSON *arr, const char *field, em_json_item_fn fn,
                 void *arg)
{
	const cJSON *it;
	size_t mark = field ? em_json_push_key(j, field) : j->plen, i = 0;
	int rc = 0;

	if (cJSON_IsArray(arr))
		cJSON_ArrayForEach(it, arr)
		{
			size_t m = em_json_push_index(j, i);
			rc = fn(j, it, i++, arg);
			em_json_pop(j, m);
			if (rc)
				break;
		}
	em_json_pop(j, mark);
	return rc;
}
