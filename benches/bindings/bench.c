/* The C side of the bindings benchmark: for each run, connect a kt session, resolve
 * `echo` once, close. Prints one line per measurement on stdout, timed around the
 * kt_* call only:
 *     connect <seconds>
 *     resolve <seconds>
 * Everything else (errors) goes to stderr; exits 1 on the first failure.
 *
 * Usage: bench --kubeconfig FILE --namespace NS --runs N
 * Build: cc -std=gnu11 -O2 bench.c -o bench $(pkg-config --cflags --libs kt)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kt.h>

static char err[1024];

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(kt_status status, const char *what) {
	if (status != KT_STATUS_OK) {
		fprintf(stderr, "bench: %s: %s: %s\n", what, kt_status_name(status), err);
		exit(1);
	}
}

int main(int argc, char **argv) {
	const char *kubeconfig = NULL, *ns = NULL;
	long runs = 0;
	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--kubeconfig") == 0)
			kubeconfig = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--namespace") == 0)
			ns = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--runs") == 0)
			runs = strtol(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "bench: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (!kubeconfig || !ns || runs <= 0) {
		fprintf(stderr, "usage: bench --kubeconfig FILE --namespace NS --runs N\n");
		return 2;
	}

	kt_options *opts = NULL;
	check(kt_options_new(&opts, err, sizeof err), "options");
	check(kt_options_set_kubeconfig(opts, kubeconfig, err, sizeof err), "kubeconfig");
	check(kt_options_set_namespace(opts, ns, err, sizeof err), "namespace");

	for (long run = 0; run < runs; run++) {
		kt_session *session = NULL;
		double t0 = now();
		kt_status st = kt_session_connect(opts, &session, err, sizeof err);
		double t1 = now();
		check(st, "connect");
		printf("connect %.6f\n", t1 - t0);

		kt_list *ips = NULL;
		t0 = now();
		st = kt_session_resolve(session, "echo", &ips, err, sizeof err);
		t1 = now();
		check(st, "resolve echo");
		printf("resolve %.6f\n", t1 - t0);
		fflush(stdout);

		kt_list_free(ips, NULL, 0);
		check(kt_session_close(session, err, sizeof err), "close");
		kt_session_free(session, NULL, 0);
	}
	kt_options_free(opts, NULL, 0);
	return 0;
}
