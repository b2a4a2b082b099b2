/* Manifest files (JSON or YAML) to cJSON objects, Lists flattened. */
#include "store/manifest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <yaml.h>

#include "proto/em.h"
#include "store/json.h"

struct mctx {
	const char *name;
	char *err;
	size_t errlen;
	cJSON *out; /* the objects so far */
	size_t n;
};

static int fail(struct mctx *m, size_t line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static int fail(struct mctx *m, size_t line, const char *fmt, ...)
{
	char what[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (m->err && m->errlen)
		snprintf(m->err, m->errlen, "%s:%zu: %s", m->name, line, what);
	return -EINVAL;
}

static int oom(struct mctx *m)
{
	if (m->err && m->errlen)
		snprintf(m->err, m->errlen, "%s: out of memory", m->name);
	return -ENOMEM;
}

enum em_manifest_format em_manifest_format_of(const char *path)
{
	const char *dot = strrchr(path, '.');
	if (!dot || strchr(dot, '/'))
		return EM_MANIFEST_NONE;
	if (strcmp(dot, ".json") == 0)
		return EM_MANIFEST_JSON;
	if (strcmp(dot, ".yaml") == 0 || strcmp(dot, ".yml") == 0)
		return EM_MANIFEST_YAML;
	return EM_MANIFEST_NONE;
}

/* Appends <obj> (taken) to the result: itself, or the items of a List. */
static int add_top(struct mctx *m, cJSON *obj, size_t line)
{
	if (!cJSON_IsObject(obj)) {
		cJSON_Delete(obj);
		return fail(m, line, "expected a Kubernetes object (a mapping), not %s",
		            cJSON_IsArray(obj) ? "a sequence" : "a scalar");
	}
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(obj, "kind");
	cJSON *items = cJSON_GetObjectItemCaseSensitive(obj, "items");
	size_t kl = cJSON_IsString(kind) ? strlen(kind->valuestring) : 0;
	bool list =
	        kl >= 4 && strcmp(kind->valuestring + kl - 4, "List") == 0 && cJSON_IsArray(items);
	if (!list) {
		if (m->n >= EM_MANIFEST_MAX_OBJECTS) {
			cJSON_Delete(obj);
			return fail(m, line, "more than %u objects in one file",
			            EM_MANIFEST_MAX_OBJECTS);
		}
		cJSON_AddItemToArray(m->out, obj);
		m->n++;
		return 0;
	}
	int rc = 0;
	size_t i = 0;
	for (cJSON *it = items->child; it && rc == 0; i++) {
		cJSON *next = it->next;
		if (!cJSON_IsObject(it))
			rc = fail(m, line, "items[%zu] of the %s is not an object", i,
			          kind->valuestring);
		else if (m->n >= EM_MANIFEST_MAX_OBJECTS)
			rc = fail(m, line, "more than %u objects in one file",
			          EM_MANIFEST_MAX_OBJECTS);
		else {
			cJSON_AddItemToArray(m->out, cJSON_DetachItemViaPointer(items, it));
			m->n++;
		}
		it = next;
	}
	cJSON_Delete(obj);
	return rc;
}

/* ---- JSON ---- */

static size_t line_at(const char *text, size_t off)
{
	size_t line = 1;
	for (size_t i = 0; i < off; i++)
		line += text[i] == '\n';
	return line;
}

static int parse_json(struct mctx *m, const char *text, size_t len)
{
	size_t off = 0;
	bool trailing = false;
	cJSON *root = em_json_parse(text, len, &off, &trailing);
	if (!root) {
		if (off == SIZE_MAX)
			return oom(m);
		return fail(m, line_at(text, EM_MIN(off, len)), "%s",
		            trailing ? "more than one JSON value" : "invalid JSON");
	}
	return add_top(m, root, 1);
}

/* ---- YAML ---- */

#define YTAG "tag:yaml.org,2002:"

struct frame {
	cJSON *node; /* mapping (object) or sequence (array) being filled */
	char *key;   /* mapping: the key whose value comes next, or NULL */
	size_t line; /* where it started */
};

struct yctx {
	struct frame st[EM_MANIFEST_MAX_DEPTH];
	size_t depth;
	cJSON *root; /* of the document being read */
	size_t root_line;
};

static bool all_of(const char *s, const char *set)
{
	return *s && strspn(s, set) == strlen(s);
}

/* A plain scalar's value in the core schema: null, bool, number or string. */
static cJSON *plain_value(const char *s)
{
	if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
	    !strcmp(s, "NULL"))
		return cJSON_CreateNull();
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
		return cJSON_CreateTrue();
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
		return cJSON_CreateFalse();
	const char *d = s + (*s == '-' || *s == '+');
	if (all_of(d, "0123456789"))
		return cJSON_CreateNumber(strtod(s, NULL));
	if (!strncmp(s, "0o", 2) && all_of(s + 2, "01234567"))
		return cJSON_CreateNumber((double)strtoull(s + 2, NULL, 8));
	if (!strncmp(s, "0x", 2) && all_of(s + 2, "0123456789abcdefABCDEF"))
		return cJSON_CreateNumber((double)strtoull(s + 2, NULL, 16));
	/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
	const char *p = d;
	size_t digits = strspn(p, "0123456789");
	p += digits;
	if (*p == '.') {
		size_t frac = strspn(p + 1, "0123456789");
		digits += frac;
		p += 1 + frac;
	}
	if (digits && (*p == 'e' || *p == 'E')) {
		const char *q = p + 1 + (p[1] == '-' || p[1] == '+');
		size_t ex = strspn(q, "0123456789");
		p = ex ? q + ex : p;
	}
	if (digits && !*p)
		return cJSON_CreateNumber(strtod(s, NULL));
	return cJSON_CreateString(s);
}

static cJSON *scalar_value(struct mctx *m, const yaml_event_t *ev, int *rc)
{
	const char *s = (const char *)ev->data.scalar.value;
	const char *tag = (const char *)ev->data.scalar.tag;
	size_t line = ev->start_mark.line + 1;
	if (strlen(s) != ev->data.scalar.length) {
		*rc = fail(m, line, "NUL byte in a scalar");
		return NULL;
	}
	bool quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
	if (!tag || !strcmp(tag, "!"))
		return quoted || tag ? cJSON_CreateString(s) : plain_value(s);
	if (!strcmp(tag, YTAG "str"))
		return cJSON_CreateString(s);
	const char *want = NULL;
	if (!strcmp(tag, YTAG "int") || !strcmp(tag, YTAG "float"))
		want = "number";
	else if (!strcmp(tag, YTAG "bool"))
		want = "bool";
	else if (!strcmp(tag, YTAG "null"))
		want = "null";
	if (!want) {
		*rc = fail(m, line, "unsupported tag %.60s", tag);
		return NULL;
	}
	cJSON *v = plain_value(s);
	bool ok = v && ((!strcmp(want, "number") && cJSON_IsNumber(v)) ||
	                (!strcmp(want, "bool") && cJSON_IsBool(v)) ||
	                (!strcmp(want, "null") && cJSON_IsNull(v)));
	if (v && !ok) {
		cJSON_Delete(v);
		*rc = fail(m, line, "\"%.60s\" is not a %s (tag %s)", s, want, tag);
		return NULL;
	}
	return v;
}

/* Puts <v> (taken) where the document stands: its root, the next item of a
 * sequence, or the value of the pending key of a mapping. */
static void place(struct yctx *y, cJSON *v, size_t line)
{
	if (y->depth == 0) {
		y->root = v;
		y->root_line = line;
		return;
	}
	struct frame *f = &y->st[y->depth - 1];
	if (cJSON_IsArray(f->node)) {
		cJSON_AddItemToArray(f->node, v);
		return;
	}
	char *key = f->key;
	f->key = NULL;
	cJSON_AddItemToObject(f->node, key, v);
	free(key);
}

/* A scalar in a mapping where a key is due: it becomes the pending key. */
static int take_key(struct mctx *m, struct frame *f, const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t line = ev->start_mark.line + 1;
	if (strlen(s) != ev->data.scalar.length)
		return fail(m, line, "NUL byte in a key");
	if (cJSON_GetObjectItemCaseSensitive(f->node, s))
		return fail(m, line, "duplicate key \"%.60s\"", s);
	f->key = strdup(s);
	return f->key ? 0 : oom(m);
}

static bool key_due(const struct yctx *y)
{
	return y->depth && cJSON_IsObject(y->st[y->depth - 1].node) && !y->st[y->depth - 1].key;
}

static int yaml_event(struct mctx *m, struct yctx *y, const yaml_event_t *ev)
{
	size_t line = ev->start_mark.line + 1;
	int rc = 0;
	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		y->root = NULL;
		y->depth = 0;
		return 0;
	case YAML_DOCUMENT_END_EVENT: {
		cJSON *root = y->root;
		y->root = NULL;
		if (!root || cJSON_IsNull(root)) {
			cJSON_Delete(root);
			return 0; /* an empty document */
		}
		return add_top(m, root, y->root_line);
	}
	case YAML_ALIAS_EVENT:
		return fail(m, line, "aliases (*%.60s) are not supported", ev->data.alias.anchor);
	case YAML_SCALAR_EVENT: {
		if (key_due(y))
			return take_key(m, &y->st[y->depth - 1], ev);
		cJSON *v = scalar_value(m, ev, &rc);
		if (!v)
			return rc ? rc : oom(m);
		place(y, v, line);
		return 0;
	}
	case YAML_MAPPING_START_EVENT:
	case YAML_SEQUENCE_START_EVENT: {
		bool map = ev->type == YAML_MAPPING_START_EVENT;
		const char *tag = (const char *)(map ? ev->data.mapping_start.tag
		                                     : ev->data.sequence_start.tag);
		if (tag && strcmp(tag, map ? YTAG "map" : YTAG "seq") != 0)
			return fail(m, line, "unsupported tag %.60s", tag);
		if (key_due(y))
			return fail(m, line, "a key must be a plain string, not a %s",
			            map ? "mapping" : "sequence");
		if (y->depth == EM_MANIFEST_MAX_DEPTH)
			return fail(m, line, "nested deeper than %u levels", EM_MANIFEST_MAX_DEPTH);
		cJSON *v = map ? cJSON_CreateObject() : cJSON_CreateArray();
		if (!v)
			return oom(m);
		/* Placed now, filled afterwards: the parent owns it from here. */
		place(y, v, line);
		y->st[y->depth++] = (struct frame){.node = v, .line = line};
		return 0;
	}
	case YAML_MAPPING_END_EVENT:
	case YAML_SEQUENCE_END_EVENT:
		if (y->depth)
			y->depth--;
		return 0;
	default:
		return 0;
	}
}

static int parse_yaml(struct mctx *m, const char *text, size_t len)
{
	yaml_parser_t p;
	if (!yaml_parser_initialize(&p))
		return oom(m);
	yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
	struct yctx *y = calloc(1, sizeof(*y));
	if (!y) {
		yaml_parser_delete(&p);
		return oom(m);
	}
	int rc = 0;
	for (bool done = false; !done && rc == 0;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&p, &ev)) {
			const yaml_mark_t *mk = p.problem ? &p.problem_mark : &p.context_mark;
			rc = p.error == YAML_MEMORY_ERROR
			             ? oom(m)
			             : fail(m, mk->line + 1, "%s%s%s",
			                    p.problem ? p.problem : "invalid YAML",
			                    p.context ? " " : "", p.context ? p.context : "");
			break;
		}
		done = ev.type == YAML_STREAM_END_EVENT;
		rc = yaml_event(m, y, &ev);
		yaml_event_delete(&ev);
	}
	/* A key whose value never came, and the document cut short. */
	for (size_t i = 0; i < y->depth; i++)
		free(y->st[i].key);
	cJSON_Delete(y->root);
	free(y);
	yaml_parser_delete(&p);
	return rc;
}

int em_manifest_parse(const char *name, const char *text, size_t len,
                      enum em_manifest_format format, struct cJSON **out, char *err, size_t errlen)
{
	struct mctx m = {.name = name, .err = err, .errlen = errlen};
	*out = NULL;
	if (memchr(text, 0, len)) {
		return fail(&m, line_at(text, (size_t)((const char *)memchr(text, 0, len) - text)),
		            "NUL byte in the file");
	}
	m.out = cJSON_CreateArray();
	if (!m.out)
		return oom(&m);
	int rc = format == EM_MANIFEST_JSON   ? parse_json(&m, text, len)
	         : format == EM_MANIFEST_YAML ? parse_yaml(&m, text, len)
	                                      : fail(&m, 1, "not a .json, .yaml or .yml file");
	if (rc) {
		cJSON_Delete(m.out);
		return rc;
	}
	*out = m.out;
	return 0;
}
