/* Manifest files (store/manifest.c): JSON and YAML, Lists, several
 * documents, the core schema's scalars, and every refusal with its line. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "store/manifest.h"

static char err[256];

static cJSON *ok(enum em_manifest_format f, const char *text)
{
	cJSON *out = NULL;
	err[0] = 0;
	int rc = em_manifest_parse("m.yaml", text, strlen(text), f, &out, err, sizeof(err));
	cr_assert_eq(rc, 0, "rc %d: %s", rc, err);
	cr_assert(cJSON_IsArray(out));
	return out;
}

static void bad(enum em_manifest_format f, const char *text, const char *want)
{
	cJSON *out = (cJSON *)1;
	err[0] = 0;
	int rc = em_manifest_parse("m.yaml", text, strlen(text), f, &out, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL, "accepted: %s", text);
	cr_assert_null(out);
	cr_assert(strstr(err, want), "message \"%s\" lacks \"%s\"", err, want);
}

static const char *str_at(const cJSON *arr, int i, const char *key)
{
	const cJSON *o = cJSON_GetArrayItem(arr, i);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

Test(manifest, format_by_extension)
{
	cr_assert_eq(em_manifest_format_of("a/b.json"), EM_MANIFEST_JSON);
	cr_assert_eq(em_manifest_format_of("b.yaml"), EM_MANIFEST_YAML);
	cr_assert_eq(em_manifest_format_of("b.yml"), EM_MANIFEST_YAML);
	cr_assert_eq(em_manifest_format_of("b.yaml.swp"), EM_MANIFEST_NONE);
	cr_assert_eq(em_manifest_format_of("dir.yaml/b"), EM_MANIFEST_NONE);
	cr_assert_eq(em_manifest_format_of("README"), EM_MANIFEST_NONE);
}

Test(manifest, json_object_and_list)
{
	cJSON *a = ok(EM_MANIFEST_JSON, "{\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"}}");
	cr_assert_eq(cJSON_GetArraySize(a), 1);
	cr_assert_str_eq(str_at(a, 0, "kind"), "Service");
	cJSON_Delete(a);
	a = ok(EM_MANIFEST_JSON, "{\"kind\":\"List\",\"items\":[{\"kind\":\"Service\"},"
	                         "{\"kind\":\"Endpoints\"}]}");
	cr_assert_eq(cJSON_GetArraySize(a), 2);
	cr_assert_str_eq(str_at(a, 1, "kind"), "Endpoints");
	cJSON_Delete(a);
	/* Typed lists, as kubectl get -o json prints them. */
	a = ok(EM_MANIFEST_JSON, "{\"kind\":\"ServiceList\",\"items\":[{\"kind\":\"Service\"}]}");
	cr_assert_eq(cJSON_GetArraySize(a), 1);
	cJSON_Delete(a);
}

Test(manifest, json_errors_name_the_line)
{
	bad(EM_MANIFEST_JSON, "{\n\"kind\": \"Service\",\n\"x\": }\n", "m.yaml:3: invalid JSON");
	bad(EM_MANIFEST_JSON, "{}\n{}\n", "m.yaml:2: more than one JSON value");
	bad(EM_MANIFEST_JSON, "[1,2]",
	    "m.yaml:1: expected a Kubernetes object (a mapping), not a sequence");
	bad(EM_MANIFEST_JSON, "{\"kind\":\"List\",\"items\":[3]}",
	    "items[0] of the List is not an object");
}

Test(manifest, yaml_documents_lists_and_empties)
{
	cJSON *a = ok(EM_MANIFEST_YAML, "---\n"
	                                "apiVersion: v1\n"
	                                "kind: Service\n"
	                                "metadata:\n"
	                                "  name: web\n"
	                                "  namespace: default\n"
	                                "spec:\n"
	                                "  ports:\n"
	                                "  - port: 80\n"
	                                "    targetPort: 8080\n"
	                                "---\n"
	                                "# only a comment\n"
	                                "---\n"
	                                "kind: List\n"
	                                "items:\n"
	                                "- {kind: Endpoints, metadata: {name: web}}\n"
	                                "- kind: Pod\n"
	                                "...\n");
	cr_assert_eq(cJSON_GetArraySize(a), 3);
	cr_assert_str_eq(str_at(a, 0, "kind"), "Service");
	cr_assert_str_eq(str_at(a, 1, "kind"), "Endpoints");
	cr_assert_str_eq(str_at(a, 2, "kind"), "Pod");
	const cJSON *port = cJSON_GetArrayItem(
	        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "spec"), "ports"),
	        0);
	cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(port, "port")));
	cr_assert_eq(cJSON_GetObjectItem(port, "targetPort")->valuedouble, 8080);
	cJSON_Delete(a);
	a = ok(EM_MANIFEST_YAML, "");
	cr_assert_eq(cJSON_GetArraySize(a), 0);
	cJSON_Delete(a);
}

Test(manifest, yaml_core_schema_scalars)
{
	cJSON *a = ok(EM_MANIFEST_YAML, "kind: T\n"
	                                "n: null\nt: ~\ne:\nb1: true\nb2: False\n"
	                                "i: -42\no: 0o17\nx: 0x1f\nf: 2.5e3\ns1: yes\ns2: \"80\"\n"
	                                "s3: '0x10'\ns4: 1.2.3\ns5: !!str 12\ni2: !!int \"7\"\n");
	const cJSON *o = cJSON_GetArrayItem(a, 0);
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "n")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "t")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "e")));
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(o, "b1")));
	cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(o, "b2")));
	cr_assert_eq(cJSON_GetObjectItem(o, "i")->valuedouble, -42);
	cr_assert_eq(cJSON_GetObjectItem(o, "o")->valuedouble, 15);
	cr_assert_eq(cJSON_GetObjectItem(o, "x")->valuedouble, 31);
	cr_assert_eq(cJSON_GetObjectItem(o, "f")->valuedouble, 2500);
	cr_assert_str_eq(cJSON_GetObjectItem(o, "s1")->valuestring,
	                 "yes"); /* not YAML 1.1's bool */
	cr_assert_str_eq(cJSON_GetObjectItem(o, "s2")->valuestring, "80");
	cr_assert_str_eq(cJSON_GetObjectItem(o, "s3")->valuestring, "0x10");
	cr_assert_str_eq(cJSON_GetObjectItem(o, "s4")->valuestring, "1.2.3");
	cr_assert_str_eq(cJSON_GetObjectItem(o, "s5")->valuestring, "12");
	cr_assert_eq(cJSON_GetObjectItem(o, "i2")->valuedouble, 7);
	cJSON_Delete(a);
}

Test(manifest, yaml_refusals_name_the_line)
{
	bad(EM_MANIFEST_YAML, "kind: A\nx: &a [1]\ny: *a\n",
	    "m.yaml:3: aliases (*a) are not supported");
	bad(EM_MANIFEST_YAML, "kind: A\nkind: B\n", "m.yaml:2: duplicate key \"kind\"");
	bad(EM_MANIFEST_YAML, "kind: A\n? [a]\n: 1\n", "m.yaml:2: a key must be a plain string");
	bad(EM_MANIFEST_YAML, "kind: A\nx: !!binary aGk=\n", "m.yaml:2: unsupported tag");
	bad(EM_MANIFEST_YAML, "kind: A\nx: !!int abc\n", "m.yaml:2: \"abc\" is not a number");
	bad(EM_MANIFEST_YAML, "kind: A\nx: [1, 2\n", "m.yaml:");
	bad(EM_MANIFEST_YAML, "- a\n- b\n",
	    "m.yaml:1: expected a Kubernetes object (a mapping), not a sequence");
	bad(EM_MANIFEST_YAML, "just text\n", "not a scalar");
	bad(EM_MANIFEST_YAML, "kind: List\nitems: [1]\n", "items[0] of the List is not an object");
	bad(EM_MANIFEST_NONE, "kind: A\n", "not a .json, .yaml or .yml file");
}

Test(manifest, depth_is_bounded)
{
	char buf[4096];
	size_t n = 0;
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "kind: A\nx: ");
	for (int i = 0; i < (int)EM_MANIFEST_MAX_DEPTH + 1; i++)
		buf[n++] = '[';
	for (int i = 0; i < (int)EM_MANIFEST_MAX_DEPTH + 1; i++)
		buf[n++] = ']';
	buf[n++] = '\n';
	buf[n] = 0;
	bad(EM_MANIFEST_YAML, buf, "nested deeper than 64 levels");
	/* One level less fits (the document's mapping counts as one). */
	n = (size_t)snprintf(buf, sizeof(buf), "kind: A\nx: ");
	for (int i = 0; i < (int)EM_MANIFEST_MAX_DEPTH - 1; i++)
		buf[n++] = '[';
	for (int i = 0; i < (int)EM_MANIFEST_MAX_DEPTH - 1; i++)
		buf[n++] = ']';
	buf[n] = 0;
	cJSON_Delete(ok(EM_MANIFEST_YAML, buf));
}

Test(manifest, nul_bytes_are_refused)
{
	cJSON *out = NULL;
	static const char t[] = "kind: A\nx: a\0b\n";
	cr_assert_eq(em_manifest_parse("m.yaml", t, sizeof(t) - 1, EM_MANIFEST_YAML, &out, err,
	                               sizeof(err)),
	             -EINVAL);
	cr_assert(strstr(err, "m.yaml:2: NUL byte"), "%s", err);
}
