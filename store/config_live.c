/* The live config pointer, published like the service table. */
#include "store/rcu.h"

#include "store/config.h"

static struct em_config *live_config;

const struct em_config *em_config_current(void)
{
	return __atomic_load_n(&live_config, __ATOMIC_ACQUIRE); /* see store/table.c */
}

void em_config_publish(struct em_config *cfg)
{
	struct em_config *old = __atomic_exchange_n(&live_config, cfg, __ATOMIC_ACQ_REL);
	if (old) {
		em_rcu_synchronize();
		em_config_free(old);
	}
}
