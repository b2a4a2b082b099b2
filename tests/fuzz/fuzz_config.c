/* libFuzzer harness for the configuration parser: any bytes as the text of a
 * config file, parsed and validated, then freed. A config that parses must
 * compare equal to itself (em_config_restart_key) and parse again from the
 * same text; errors must be one terminated line. */
#include <stdlib.h>
#include <string.h>

#include "store/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct em_config *cfg = NULL, *again = NULL;
	char err[512];

	memset(err, 'x', sizeof(err));
	if (em_config_parse("fuzz.json", (const char *)data, size, &cfg, err, sizeof(err))) {
		if (cfg || !memchr(err, 0, sizeof(err)) || strchr(err, '\n'))
			abort();
		return 0;
	}
	if (!cfg || em_config_restart_key(cfg, cfg))
		abort();
	if (em_config_parse("fuzz.json", (const char *)data, size, &again, err, sizeof(err)) ||
	    em_config_restart_key(cfg, again))
		abort();
	em_config_free(again);
	em_config_free(cfg);
	return 0;
}
