/* libFuzzer harness for control-stream messages (store/beehive.c): any
 * bytes decoded; a decoded message is encoded again and must decode to a
 * message that encodes to the same text. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
		/* Compared as text: cJSON_Compare finds a member by name, so
		 * content with a key given twice (as JSON allows) never equals
		 * itself. */
		size_t len2;
		char *text2 = em_bh_encode(&again, &len2);
		bool same = !text2 || (len2 == len && memcmp(text, text2, len) == 0);
		if (m.op != again.op || m.timestamp_ms != again.timestamp_ms || !same)
			abort();
		em_bh_free(&again);
		free(text2);
		free(text);
	}
	em_bh_free(&m);
	return 0;
}
