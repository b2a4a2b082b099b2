/* Process-wide logging to stderr. Lives in proto/ because every module logs;
 * it uses libc only. Not for the per-request hot path. */
#ifndef EM_LOG_H
#define EM_LOG_H

enum em_log_level { EM_LOG_ERROR = 0, EM_LOG_WARN, EM_LOG_INFO, EM_LOG_DEBUG };

/* Current threshold; messages above it are dropped. Default EM_LOG_INFO. */
extern int em_log_level;

/* Parses "error", "warn", "info", "debug". Returns the level or -1. */
int em_log_level_parse(const char *s);

/* Writes one line "<time> <level> <module>: <message>\n" with a single
 * write(2), so lines of different threads never interleave. */
void em_log(int level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define EM_ERR(mod, ...) em_log(EM_LOG_ERROR, mod, __VA_ARGS__)
#define EM_WARN(mod, ...) em_log(EM_LOG_WARN, mod, __VA_ARGS__)
#define EM_INFO(mod, ...) em_log(EM_LOG_INFO, mod, __VA_ARGS__)
#define EM_DEBUG(mod, ...)                                     \
	do {                                                   \
		if (em_log_level >= EM_LOG_DEBUG)              \
			em_log(EM_LOG_DEBUG, mod, __VA_ARGS__); \
	} while (0)

#endif
