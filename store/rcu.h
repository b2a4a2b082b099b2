/* The RCU calls of every thread that reads published snapshots (service
 * table, config). They wrap liburcu's QSBR flavour and, in TSan builds, tell
 * ThreadSanitizer about the grace period: a reader's quiescent state is a
 * release and the end of a grace period an acquire, which is the ordering
 * liburcu provides with barriers TSan cannot see. */
#ifndef EM_STORE_RCU_H
#define EM_STORE_RCU_H

#if defined(__SANITIZE_THREAD__)
#define EM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EM_TSAN 1
#endif
#endif

/* The inline (LGPL) fast path everywhere but under TSan: there the calls go
 * to the uninstrumented library, whose deliberate benign races on its own
 * counters TSan would otherwise report. */
#ifndef EM_TSAN
#define _LGPL_SOURCE
#endif
#include <urcu-qsbr.h>

#ifdef EM_TSAN
#include <sanitizer/tsan_interface.h>
extern char em_rcu_tsan_token;
#define EM_RCU_TSAN_RELEASE() __tsan_release(&em_rcu_tsan_token)
#define EM_RCU_TSAN_ACQUIRE() __tsan_acquire(&em_rcu_tsan_token)
#else
#define EM_RCU_TSAN_RELEASE() ((void)0)
#define EM_RCU_TSAN_ACQUIRE() ((void)0)
#endif

/* Reader thread registration; a registered thread starts online. */
static inline void em_rcu_register(void)
{
	rcu_register_thread();
}

static inline void em_rcu_unregister(void)
{
	EM_RCU_TSAN_RELEASE();
	rcu_unregister_thread();
}

/* Once per event-loop turn: nothing read from a snapshot before this call
 * is used after it. */
static inline void em_rcu_quiescent(void)
{
	EM_RCU_TSAN_RELEASE();
	rcu_quiescent_state();
}

/* Around blocking waits (io_uring_submit_and_wait, poll, sleep). */
static inline void em_rcu_offline(void)
{
	EM_RCU_TSAN_RELEASE();
	rcu_thread_offline();
}

static inline void em_rcu_online(void)
{
	rcu_thread_online();
}

/* Writer side: waits until every reader passed a quiescent state. Must not
 * be called by an online reader. */
static inline void em_rcu_synchronize(void)
{
	synchronize_rcu();
	EM_RCU_TSAN_ACQUIRE();
}

#endif
