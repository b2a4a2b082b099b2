/* Control-stream messages in the shape of KubeEdge's beehive messages:
 *
 *   {"header": {"msg_id": "<uuid>", "parent_msg_id": "<uuid>",
 *               "timestamp": <ms since the epoch>, "resourceversion": "<rv>",
 *               "sync": true},
 *    "route": {"source": "edgecontroller", "group": "resource",
 *              "operation": "insert", "resource": "default/service/web"},
 *    "content": <any JSON: the Kubernetes object, a list, an error text>}
 *
 * parent_msg_id, resourceversion, sync and each route member are left out
 * when empty, as beehive does. The resource of an object message is
 * "<namespace>/<type>/<name>" with the types of store/k8s.h (the
 * metamanager's keys). One message is one line of compact JSON.
 *
 * Decoding is bounded and strict: a message over EM_BH_MAX_MESSAGE, a
 * member of the wrong type, an unknown operation or a string over its
 * field's size is refused with the path of the member. Runs on any thread;
 * allocates only the content tree. */
#ifndef EM_STORE_BEEHIVE_H
#define EM_STORE_BEEHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

#define EM_BH_MAX_MESSAGE (16u * 1024 * 1024)

enum em_bh_op {
	EM_BH_INSERT = 0,
	EM_BH_UPDATE,
	EM_BH_DELETE,
	EM_BH_QUERY,
	EM_BH_RESPONSE,
	EM_BH_ERROR,
	EM_BH__OPS
};

struct em_bh_msg {
	char msg_id[64];
	char parent_id[64]; /* "" when none */
	int64_t timestamp_ms;
	char resource_version[64]; /* "" when none */
	bool sync;
	char source[64];
	char group[64];
	enum em_bh_op op;
	char resource[600];
	struct cJSON *content; /* owned; NULL means JSON null */
};

/* The wire name of <op> ("insert", ...). */
const char *em_bh_op_name(enum em_bh_op op);

/* Fills <id> with a new random UUID (version 4, lower-case, 36 characters
 * and a NUL). Returns 0, or -errno when no random bytes could be had. */
int em_bh_new_id(char id[37]);

/* Decodes one message from <len> bytes of <text> (need not be terminated).
 * Returns 0 with <*out> filled (the caller frees it with em_bh_free), or
 * -EINVAL with "<path>: <reason>" in <err> and nothing allocated. */
int em_bh_decode(const char *text, size_t len, struct em_bh_msg *out, char *err, size_t errlen);

/* Encodes <m> as one line of compact JSON (no newline). Returns a new
 * string (free()) and its length in <*len>, or NULL when out of memory. */
char *em_bh_encode(const struct em_bh_msg *m, size_t *len);

/* Frees the content of <m>. */
void em_bh_free(struct em_bh_msg *m);

/* Splits an object resource "<namespace>/<type>/<name>" into <*kind>
 * (store/k8s.h enum em_kind), <ns> and <name> (each copied, at most
 * <cap> - 1 bytes). Returns 0, or -EINVAL for any other shape, an unknown
 * type or a part too long. */
int em_bh_resource_split(const char *res, int *kind, char *ns, char *name, size_t cap);

#endif
