/* The data plane: one io_uring worker thread per configured core. */
#ifndef EM_ENGINE_ENGINE_H
#define EM_ENGINE_ENGINE_H

#include "store/api.h"
#include "store/config.h"

struct em_engine;

/* Opens the listeners of <cfg> (capture port, explicit listeners, tunnel
 * listener) on every worker with SO_REUSEPORT and starts cfg->workers worker
 * threads. Each worker registers as an RCU reader and reads the live service
 * table and config (em_table_current, em_config_current): a config must be
 * published before this call and stay published (reloads replace it) until
 * em_engine_stop returns; -EINVAL without one. <cfg> is borrowed for the
 * duration of the call. Returns 0 or -errno (logged). */
int em_engine_start(const struct em_config *cfg, struct em_engine **out);

/* Data-plane counters for the stats reply (an em_api_counters_fn; <eng> is a
 * struct em_engine): connection, request and tunnel counts summed over the
 * workers, as each published them at its last tick (at most 50 ms ago). */
size_t em_engine_counters(void *eng, struct em_api_counter *out, size_t cap);

/* Stops accepting, lets live connections finish for up to <drain_ms>, closes
 * the rest, joins the workers and frees everything. */
void em_engine_stop(struct em_engine *eng, uint32_t drain_ms);

#endif
