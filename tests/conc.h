/* Minimal harness for concurrency tests, which run as plain programs so
 * that they also run under TSan (Criterion's runner does not). A program
 * lists its cases in main with CONC_RUN and ends with CONC_SUMMARY. */
#ifndef EM_TESTS_CONC_H
#define EM_TESTS_CONC_H

#include <stdio.h>
#include <stdlib.h>

static int conc_passed, conc_failed, conc_case_failed;

#define CONC_CHECK(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			conc_case_failed = 1;                                                      \
		}                                                                                  \
	} while (0)

#define CONC_RUN(fn)                                                                               \
	do {                                                                                       \
		conc_case_failed = 0;                                                              \
		fn();                                                                              \
		if (conc_case_failed)                                                              \
			conc_failed++;                                                             \
		else                                                                               \
			conc_passed++;                                                             \
		printf("[%s] %s\n", conc_case_failed ? "FAIL" : "PASS", #fn);                      \
	} while (0)

#define CONC_SUMMARY()                                                                             \
	do {                                                                                       \
		printf("%d passed, %d failed\n", conc_passed, conc_failed);                        \
		return conc_failed ? 1 : 0;                                                        \
	} while (0)

#endif
