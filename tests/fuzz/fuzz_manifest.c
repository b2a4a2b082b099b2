/* libFuzzer harness for manifest files (store/manifest.c): any bytes, as
 * YAML when the first byte is even and as JSON when odd. A result is freed
 * so that leaks on success paths show too. */
#include <stdint.h>

#include <cjson/cJSON.h>

#include "store/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	enum em_manifest_format f = (data[0] & 1) ? EM_MANIFEST_JSON : EM_MANIFEST_YAML;
	cJSON *out = NULL;
	char err[256];
	if (em_manifest_parse("fuzz", (const char *)data + 1, size - 1, f, &out, err,
	                      sizeof(err)) == 0)
		cJSON_Delete(out);
	return 0;
}
