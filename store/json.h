/* Reading JSON documents (cJSON trees) with error messages that name the
 * place: "<name>: <path>: <what was expected>", where <path> is built as the
 * reader descends ("spec.ports[2].port"). Shared by the config file reader
 * (store/config.c) and the Kubernetes object decoder (store/k8s.c).
 *
 * Conventions of every reader below: <v> is the value read, NULL when it is
 * absent; <field> names it under the current path in a message (NULL: the
 * current path names <v> itself). A reader returns 0, or -EINVAL after
 * writing one message into the context's <err>; it writes its output only on
 * success, so an absent optional value leaves <*out> as the caller set it.
 * Keys echoed from the document have their control bytes replaced by '?' so
 * that a message stays one line. Nothing here allocates. */
#ifndef EM_STORE_JSON_H
#define EM_STORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

struct em_json {
	const char *name; /* message prefix (the file), or NULL for none */
	const char *top;  /* path shown for the root ("top level"), or NULL */
	char *err;        /* the message; may be NULL */
	size_t errlen;
	size_t plen;
	char path[256]; /* truncated when deeper */
};

/* Parses <len> bytes of <text> (need not be terminated) as one JSON value
 * followed by nothing but white space; a NUL byte inside is an error.
 * Returns the tree (the caller frees it with cJSON_Delete), or NULL with
 * <*off> the offset of the error (<len> when the text ended too early), or
 * SIZE_MAX when out of memory. <*trailing> (when given) tells whether the
 * error is that more than white space follows a complete value. */
struct cJSON *em_json_parse(const char *text, size_t len, size_t *off, bool *trailing);

/* Pushes ".<key>" (or "<key>" at the root) / "[<i>]" / a raw printf segment
 * onto the path. Each returns a mark for em_json_pop. */
size_t em_json_push_key(struct em_json *j, const char *key);
size_t em_json_push_index(struct em_json *j, size_t i);
size_t em_json_push(struct em_json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Restores the path as it was when <mark> was returned (0: the root). */
void em_json_pop(struct em_json *j, size_t mark);

/* Writes "[<name>: ]<path>[.<field>]: <message>" into the context's <err>
 * ("<top>" for an empty path when set, no path part otherwise). Returns
 * -EINVAL. The path is left as it was. */
int em_json_fail(struct em_json *j, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Writes "[<name>: ]out of memory"; returns -ENOMEM. */
int em_json_oom(struct em_json *j);

/* Member <name> of object <obj>; NULL when <obj> is NULL or not an object,
 * or the member is absent or JSON null (Kubernetes prints omitted fields
 * either way). */
const struct cJSON *em_json_get(const struct cJSON *obj, const char *name);

/* An object. Absent: "missing" when <required>, else 0 and <*out> NULL. */
int em_json_object(struct em_json *j, const struct cJSON *v, const char *field, bool required,
                   const struct cJSON **out);

/* An array of at most <max> items (0: any number); its length in <*n>
 * (0 when absent). The message names <what> the items are when given:
 * "expected array of at most 256 ports". */
int em_json_array(struct em_json *j, const struct cJSON *v, const char *field, size_t max,
                  const char *what, size_t *n);

/* A string, pointing into the tree. Absent: "missing" when <required>. */
int em_json_string(struct em_json *j, const struct cJSON *v, const char *field, bool required,
                   const char **out);

/* true or false. Absent: 0. */
int em_json_bool(struct em_json *j, const struct cJSON *v, const char *field, bool *out);

/* An integer in <lo>..<hi> (a JSON number with no fraction): "expected
 * integer <lo>..<hi>". Absent: "missing, expected ..." when <required>. */
int em_json_int(struct em_json *j, const struct cJSON *v, const char *field, bool required,
                long long lo, long long hi, long long *out);
/* As em_json_int into a uint32_t (<lo>, <hi> within its range). */
int em_json_u32(struct em_json *j, const struct cJSON *v, const char *field, bool required,
                uint32_t lo, uint32_t hi, uint32_t *out);
/* A port, integer 1..65535. */
int em_json_port(struct em_json *j, const struct cJSON *v, const char *field, bool required,
                 uint16_t *out);

/* Index of string <s> in <names>, or -1 (also for NULL <s>). */
int em_json_pick(const char *s, const char *const *names, size_t n);

/* Calls <fn> for each item of array <arr> in order, with "<field>[<i>]"
 * pushed on the path (just "[<i>]" when <field> is NULL), synchronously;
 * stops at and returns the first non-zero result. <arr> NULL or not an
 * array: 0 and no call (check it with em_json_array first). */
typedef int (*em_json_item_fn)(struct em_json *j, const struct cJSON *item, size_t i, void *arg);
int em_json_each(struct em_json *j, const struct cJSON *arr, const char *field, em_json_item_fn fn,
                 void *arg);

#endif
