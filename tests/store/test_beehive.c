/* Control-stream messages (store/beehive.c): the beehive shape both ways,
 * optional members left out, strict decoding with paths, ids, resources. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "store/beehive.h"
#include "store/k8s.h"

static char err[256];

static void bad(const char *text, const char *want)
{
	struct em_bh_msg m;
	err[0] = 0;
	cr_assert_eq(em_bh_decode(text, strlen(text), &m, err, sizeof(err)), -EINVAL, "accepted %s",
	             text);
	cr_assert_str_eq(err, want, "for %s", text);
	cr_assert_null(m.content);
}

Test(beehive, round_trip)
{
	struct em_bh_msg m = {.timestamp_ms = 1733140000123, .sync = true, .op = EM_BH_UPDATE};
	cr_assert_eq(em_bh_new_id(m.msg_id), 0);
	strcpy(m.resource_version, "4711");
	strcpy(m.source, "edgecontroller");
	strcpy(m.group, "resource");
	strcpy(m.resource, "default/service/web");
	m.content = cJSON_Parse("{\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"}}");
	size_t len = 0;
	char *text = em_bh_encode(&m, &len);
	cr_assert_not_null(text);
	cr_assert_eq(strlen(text), len);
	cr_assert_null(strchr(text, '\n'), "one line");
	struct em_bh_msg d;
	cr_assert_eq(em_bh_decode(text, len, &d, err, sizeof(err)), 0, "%s: %s", text, err);
	cr_assert_str_eq(d.msg_id, m.msg_id);
	cr_assert_str_eq(d.parent_id, "");
	cr_assert_eq(d.timestamp_ms, 1733140000123);
	cr_assert_str_eq(d.resource_version, "4711");
	cr_assert(d.sync);
	cr_assert_str_eq(d.source, "edgecontroller");
	cr_assert_str_eq(d.group, "resource");
	cr_assert_eq(d.op, EM_BH_UPDATE);
	cr_assert_str_eq(d.resource, "default/service/web");
	cr_assert(cJSON_Compare(d.content, m.content, true));
	free(text);
	em_bh_free(&d);
	em_bh_free(&m);
}

Test(beehive, empty_members_are_left_out)
{
	struct em_bh_msg m = {.timestamp_ms = 5, .op = EM_BH_DELETE};
	strcpy(m.msg_id, "a");
	size_t len;
	char *text = em_bh_encode(&m, &len);
	cr_assert_str_eq(text,
	                 "{\"header\":{\"msg_id\":\"a\",\"timestamp\":5},\"route\":{\"operation\":"
	                 "\"delete\"},\"content\":null}");
	free(text);
}

Test(beehive, decodes_kubeedge_shaped_messages)
{
	static const char t[] =
	        "{\"header\":{\"msg_id\":\"0b1c\",\"parent_msg_id\":\"9f\",\"timestamp\":"
	        "1700000000000},"
	        "\"route\":{\"source\":\"edgecontroller\",\"group\":\"resource\",\"operation\":"
	        "\"insert\",\"resource\":\"ns1/endpoints/"
	        "api\"},\"content\":{\"kind\":\"Endpoints\"}"
	        ",\"extra\":1}";
	struct em_bh_msg d;
	cr_assert_eq(em_bh_decode(t, sizeof(t) - 1, &d, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(d.parent_id, "9f");
	cr_assert_eq(d.op, EM_BH_INSERT);
	cr_assert_not(d.sync);
	int kind;
	char ns[64], name[64];
	cr_assert_eq(em_bh_resource_split(d.resource, &kind, ns, name, sizeof(ns)), 0);
	cr_assert_eq(kind, EM_KIND_ENDPOINTS);
	cr_assert_str_eq(ns, "ns1");
	cr_assert_str_eq(name, "api");
	em_bh_free(&d);
}

Test(beehive, refusals_name_the_member)
{
	bad("[]", "message: expected object");
	bad("{\"route\":{\"operation\":\"insert\"}}", "header: missing");
	bad("{\"header\":{\"timestamp\":1},\"route\":{\"operation\":\"insert\"}}",
	    "header.msg_id: missing");
	bad("{\"header\":{\"msg_id\":\"a\",\"timestamp\":-1},\"route\":{\"operation\":\"insert\"}}",
	    "header.timestamp: expected integer 0..9007199254740992");
	bad("{\"header\":{\"msg_id\":\"a\",\"timestamp\":1},\"route\":{\"operation\":\"upsert\"}}",
	    "route.operation: expected insert, update, delete, query, response or error");
	bad("{\"header\":{\"msg_id\":\"a\",\"timestamp\":1,\"sync\":1},\"route\":{\"operation\":"
	    "\"insert\"}}",
	    "header.sync: expected true or false");
	bad("{\"header\":{\"msg_id\":"
	    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
	    "\"timestamp\":1},\"route\":{\"operation\":\"insert\"}}",
	    "header.msg_id: expected string of at most 63 bytes");
	bad("{\"header\":{\"msg_id\":\"a\",\"timestamp\":1}}", "route: missing");
	bad("{\"header\":", "message: invalid JSON at byte 10");
}

Test(beehive, ids_are_uuid_v4)
{
	char a[37], b[37];
	cr_assert_eq(em_bh_new_id(a), 0);
	cr_assert_eq(em_bh_new_id(b), 0);
	cr_assert_eq(strlen(a), 36);
	cr_assert_str_neq(a, b);
	cr_assert_eq(a[8], '-');
	cr_assert_eq(a[14], '4');
	cr_assert(strchr("89ab", a[19]));
}

Test(beehive, resources)
{
	int kind;
	char ns[16], name[16];
	cr_assert_eq(em_bh_resource_split("default/service/web", &kind, ns, name, sizeof(ns)), 0);
	cr_assert_eq(kind, EM_KIND_SERVICE);
	const char *no[] = {
	        "default/service",  "/service/web",       "default//web",
	        "default/service/", "a/service/b/c",      "default/services/web",
	        "default/svc/web",  "default/gadget/web", "a-namespace-too-long/service/web"};
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_assert_eq(em_bh_resource_split(no[i], &kind, ns, name, sizeof(ns)), -EINVAL,
		             "%s", no[i]);
}
