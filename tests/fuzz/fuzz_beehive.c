/* libFuzzer harness for control-stream messages (store/beehive.c): any
 * bytes decoded; a decoded message is encoded again and must decode to the
 * same content. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "store/beehive.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct em_bh_msg m, again;
	char err[256];
	if (em_bh_decode((const char *)data, size, &m, err, sizeof(err)) != 0)
		return 0;
	size_t len;
	char *text = em_bh_encode(&m, &len);
	if (text) {
		if (em_bh_decode(text, len, &again, err, sizeof(err)) != 0)
			abort();
		bool same = m.content && again.content
		                    ? cJSON_Compare(m.content, again.content, true)
		                    : m.content == again.content;
		if (m.op != again.op || m.timestamp_ms != again.timestamp_ms || !same)
			abort();
		em_bh_free(&again);
		free(text);
	}
	em_bh_free(&m);
	return 0;
}
