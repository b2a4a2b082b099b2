/* The JSON reading helpers: paths, messages, typed readers, the array walk
 * and the parser's error offsets. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "store/json.h"

static cJSON *parse(const char *text)
{
	size_t off;
	cJSON *root = em_json_parse(text, strlen(text), &off, NULL);
	cr_assert_not_null(root, "parse \"%s\" failed at %zu", text, off);
	return root;
}

Test(json, path_push_pop_and_message)
{
	char err[128];
	struct em_json j = {
	        .name = "f.json", .top = "top level", .err = err, .errlen = sizeof(err)};

	cr_assert_eq(em_json_fail(&j, NULL, "x"), -EINVAL);
	cr_assert_str_eq(err, "f.json: top level: x");
	size_t m0 = em_json_push_key(&j, "spec");
	size_t m1 = em_json_push_key(&j, "ports");
	em_json_push_index(&j, 2);
	cr_assert_eq(em_json_fail(&j, "port", "expected %s", "integer"), -EINVAL);
	cr_assert_str_eq(err, "f.json: spec.ports[2].port: expected integer");
	cr_assert_str_eq(j.path, "spec.ports[2]", "the field is not left on the path");
	em_json_pop(&j, m1);
	cr_assert_str_eq(j.path, "spec");
	em_json_pop(&j, m0);
	cr_assert_str_eq(j.path, "");
}

Test(json, message_without_name_or_top)
{
	char err[64];
	struct em_json j = {.err = err, .errlen = sizeof(err)};

	em_json_fail(&j, NULL, "expected a JSON object");
	cr_assert_str_eq(err, "expected a JSON object");
	em_json_fail(&j, "kind", "missing");
	cr_assert_str_eq(err, "kind: missing");
	cr_assert_eq(em_json_oom(&j), -ENOMEM);
	cr_assert_str_eq(err, "out of memory");
}

Test(json, keys_from_the_document_stay_on_one_line)
{
	char err[64];
	struct em_json j = {.err = err, .errlen = sizeof(err)};

	em_json_push_key(&j, "a\nb\x7f");
	em_json_fail(&j, NULL, "unknown key");
	cr_assert_str_eq(err, "a?b?: unknown key");
}

Test(json, deep_paths_are_truncated_not_overrun)
{
	char err[512];
	struct em_json j = {.err = err, .errlen = sizeof(err)};

	for (int i = 0; i < 200; i++)
		em_json_push_key(&j, "segment");
	cr_assert_eq(j.plen, sizeof(j.path) - 1);
	cr_assert_eq(strlen(j.path), j.plen);
	em_json_pop(&j, 0);
	cr_assert_eq(j.plen, 0);
}

Test(json, integers_and_ports)
{
	char err[128];
	struct em_json j = {.err = err, .errlen = sizeof(err)};
	cJSON *r = parse("{\"a\":5,\"b\":1.5,\"c\":\"5\",\"d\":70000,\"e\":-1,\"f\":null}");
	long long n = 42;
	uint16_t port = 7;
	uint32_t u = 9;

	cr_assert_eq(em_json_int(&j, em_json_get(r, "a"), "a", true, 0, 10, &n), 0);
	cr_assert_eq(n, 5);
	cr_assert_eq(em_json_int(&j, em_json_get(r, "b"), "b", true, 0, 10, &n), -EINVAL);
	cr_assert_str_eq(err, "b: expected integer 0..10");
	cr_assert_eq(em_json_int(&j, em_json_get(r, "c"), "c", true, 0, 10, &n), -EINVAL);
	cr_assert_eq(em_json_port(&j, em_json_get(r, "d"), "d", true, &port), -EINVAL);
	cr_assert_str_eq(err, "d: expected integer 1..65535");
	cr_assert_eq(em_json_u32(&j, em_json_get(r, "e"), "e", true, 0, 10, &u), -EINVAL);
	cr_assert_eq(n, 5, "outputs are written only on success");
	cr_assert_eq(port, 7);
	cr_assert_eq(u, 9);
	/* null is absent: optional leaves the output, required says missing. */
	cr_assert_eq(em_json_port(&j, em_json_get(r, "f"), "f", false, &port), 0);
	cr_assert_eq(port, 7);
	cr_assert_eq(em_json_port(&j, em_json_get(r, "f"), "f", true, &port), -EINVAL);
	cr_assert_str_eq(err, "f: missing, expected integer 1..65535");
	cJSON_Delete(r);
}

Test(json, strings_bools_objects_arrays)
{
	char err[128];
	struct em_json j = {.err = err, .errlen = sizeof(err)};
	cJSON *r = parse("{\"s\":\"x\",\"t\":true,\"o\":{},\"a\":[1,2,3]}");
	const char *s = NULL;
	const cJSON *o = NULL;
	bool b = false;
	size_t n = 9;

	cr_assert_eq(em_json_string(&j, em_json_get(r, "s"), "s", true, &s), 0);
	cr_assert_str_eq(s, "x");
	cr_assert_eq(em_json_string(&j, em_json_get(r, "t"), "t", true, &s), -EINVAL);
	cr_assert_str_eq(err, "t: expected string");
	cr_assert_eq(em_json_string(&j, NULL, "u", true, &s), -EINVAL);
	cr_assert_str_eq(err, "u: missing");
	cr_assert_eq(em_json_bool(&j, em_json_get(r, "t"), "t", &b), 0);
	cr_assert(b);
	cr_assert_eq(em_json_bool(&j, em_json_get(r, "s"), "s", &b), -EINVAL);
	cr_assert_str_eq(err, "s: expected true or false");
	cr_assert_eq(em_json_object(&j, em_json_get(r, "o"), "o", true, &o), 0);
	cr_assert_not_null(o);
	cr_assert_eq(em_json_object(&j, em_json_get(r, "a"), "a", true, &o), -EINVAL);
	cr_assert_str_eq(err, "a: expected object");
	cr_assert_eq(em_json_array(&j, em_json_get(r, "a"), "a", 0, NULL, &n), 0);
	cr_assert_eq(n, 3);
	cr_assert_eq(em_json_array(&j, em_json_get(r, "a"), "a", 2, "ports", &n), -EINVAL);
	cr_assert_str_eq(err, "a: expected array of at most 2 ports");
	cr_assert_eq(em_json_array(&j, NULL, "z", 2, "ports", &n), 0);
	cr_assert_eq(n, 0);
	cJSON_Delete(r);
}

Test(json, pick)
{
	static const char *const names[] = {"TCP", "UDP"};
	cr_assert_eq(em_json_pick("UDP", names, 2), 1);
	cr_assert_eq(em_json_pick("udp", names, 2), -1);
	cr_assert_eq(em_json_pick(NULL, names, 2), -1);
}

struct sum {
	long long total;
	size_t calls;
};

static int add_item(struct em_json *j, const cJSON *it, size_t i, void *arg)
{
	struct sum *s = arg;
	long long n;
	int rc = em_json_int(j, it, NULL, true, 0, 100, &n);

	cr_assert_eq(i, s->calls, "items come in order with their index");
	s->calls++;
	if (!rc)
		s->total += n;
	return rc;
}

Test(json, each_walks_in_order_and_stops_at_the_first_error)
{
	char err[128];
	struct em_json j = {.err = err, .errlen = sizeof(err)};
	cJSON *r = parse("{\"ok\":[1,2,3],\"bad\":[1,\"x\",3]}");
	struct sum s = {0};
	size_t mark = em_json_push_key(&j, "spec");

	cr_assert_eq(em_json_each(&j, em_json_get(r, "ok"), "ok", add_item, &s), 0);
	cr_assert_eq(s.total, 6);
	cr_assert_str_eq(j.path, "spec", "the walk restores the path");
	s = (struct sum){0};
	cr_assert_eq(em_json_each(&j, em_json_get(r, "bad"), "bad", add_item, &s), -EINVAL);
	cr_assert_eq(s.calls, 2, "no call after the failing item");
	cr_assert_str_eq(err, "spec.bad[1]: expected integer 0..100");
	cr_assert_str_eq(j.path, "spec");
	cr_assert_eq(em_json_each(&j, NULL, "none", add_item, &s), 0);
	em_json_pop(&j, mark);
	cJSON_Delete(r);
}

Test(json, parse_reports_where_it_failed)
{
	size_t off;
	bool trailing;
	static const char nul[] = "{}\0{}";

	cr_assert_null(em_json_parse("{\"a\":", 5, &off, &trailing));
	cr_assert_eq(off, 5);
	cr_assert_not(trailing);
	cr_assert_null(em_json_parse("{} x", 4, &off, &trailing));
	cr_assert_eq(off, 3);
	cr_assert(trailing);
	cr_assert_null(em_json_parse(nul, sizeof(nul) - 1, &off, NULL));
	cr_assert_eq(off, 2, "a NUL inside is an error, not the end");
	/* Only <len> bytes are read: the rest of the buffer does not count. */
	cJSON *r = em_json_parse("{}garbage", 2, &off, NULL);
	cr_assert_not_null(r);
	cJSON_Delete(r);
	r = em_json_parse("[1]\n \t", 6, &off, NULL);
	cr_assert_not_null(r, "trailing white space is fine");
	cJSON_Delete(r);
}
