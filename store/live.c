/* The live config pointer, published like the service table. */
#define _LGPL_SOURCE
#include <urcu-qsbr.h>

#include "store/config.h"

static struct em_config *live_config;

const struct em_config *em_config_current(void)
{
	return rcu_dereference(live_config);
}

void em_config_publish(struct em_config *cfg)
{
	struct em_config *old = rcu_xchg_pointer(&live_config, cfg);
	if (old) {
		synchronize_rcu();
		em_config_free(old);
	}
}
