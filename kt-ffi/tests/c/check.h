/* Tiny assertion helpers shared by the C test programs: each failed check prints
 * what was expected and what kt said, and the program exits 1 at the end. */
#ifndef KT_TEST_CHECK_H
#define KT_TEST_CHECK_H

/* dladdr needs _GNU_SOURCE before the first system header: the tests pass
 * -D_GNU_SOURCE. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kt.h>

static int failures = 0;
static char err[1024];

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			failures++;                                                  \
		}                                                                    \
	} while (0)

/* Runs `call` (whose last arguments are err, sizeof err), expects `want`, and a
 * message containing `needle` (NULL: any message; "" for success). */
#define EXPECT(call, want, needle)                                                    \
	do {                                                                          \
		kt_status got_ = (call);                                              \
		if (got_ != (want)) {                                                 \
			fprintf(stderr, "FAIL %s:%d: %s\n  gave %s, want %s: %s\n",   \
				__FILE__, __LINE__, #call, kt_status_name(got_),      \
				kt_status_name(want), err);                           \
			failures++;                                                   \
		} else if ((needle) != NULL && strstr(err, (needle)) == NULL) {       \
			fprintf(stderr, "FAIL %s:%d: %s\n  message lacks \"%s\": %s\n", \
				__FILE__, __LINE__, #call, (const char *)(needle), err); \
			failures++;                                                   \
		} else {                                                              \
			printf("ok   %-22s %s%s%s\n", kt_status_name(got_), #call,      \
			       err[0] ? "\n       -> " : "", err);                     \
		}                                                                     \
	} while (0)

/* Stops at once when a step the rest depends on failed. */
#define REQUIRE_OK(call)                                                              \
	do {                                                                          \
		kt_status got_ = (call);                                              \
		if (got_ != KT_STATUS_OK) {                                           \
			fprintf(stderr, "FATAL %s:%d: %s gave %s: %s\n", __FILE__,    \
				__LINE__, #call, kt_status_name(got_), err);          \
			exit(2);                                                      \
		}                                                                     \
	} while (0)

/* Says which libkt was loaded, before main: the test checks it is the one it built. */
__attribute__((constructor)) static void report_libkt(void) {
	Dl_info info;
	if (dladdr((void *)kt_version, &info) && info.dli_fname)
		printf("LIBKT=%s\n", info.dli_fname);
	fflush(stdout);
}

static int finish(const char *name) {
	if (failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, failures);
		return 1;
	}
	printf("%s: all checks passed\n", name);
	return 0;
}

#endif
