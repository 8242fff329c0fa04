/* kt from C: send a workload's traffic in the cluster to a process on this machine
 * (kt-connect's `exchange`) until Ctrl-C, printing what happens, then put the
 * cluster back exactly as it was.
 *
 * Build (after kt-ffi/install, or with PKG_CONFIG_PATH at a kt.pc):
 *     cc swap.c -o swap $(pkg-config --cflags --libs kt)
 * Run (with something listening on 127.0.0.1:8080):
 *     ./swap deploy/web 8080:80 [--scale] [--kubeconfig FILE] [--namespace NS]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kt.h>

static char err[1024];
static volatile sig_atomic_t stop = 0;

static void on_signal(int sig) {
	(void)sig;
	stop = 1;
}

/* Prints what failed and exits. */
static void check(kt_status status, const char *what) {
	if (status != KT_STATUS_OK) {
		fprintf(stderr, "%s: %s: %s\n", what, kt_status_name(status), err);
		exit(1);
	}
}

int main(int argc, char **argv) {
	const char *target = NULL, *ports = NULL, *kubeconfig = NULL, *namespace = NULL;
	int scale = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--kubeconfig") == 0 && i + 1 < argc)
			kubeconfig = argv[++i];
		else if (strcmp(argv[i], "--namespace") == 0 && i + 1 < argc)
			namespace = argv[++i];
		else if (strcmp(argv[i], "--scale") == 0)
			scale = 1;
		else if (target == NULL)
			target = argv[i];
		else if (ports == NULL)
			ports = argv[i];
		else {
			fprintf(stderr, "unexpected argument %s\n", argv[i]);
			return 2;
		}
	}
	if (target == NULL || ports == NULL) {
		fprintf(stderr, "usage: swap TARGET LOCAL[:REMOTE][,...] [--scale] "
				"[--kubeconfig FILE] [--namespace NS]\n");
		return 2;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	kt_options *opts = NULL;
	check(kt_options_new(&opts, err, sizeof err), "options");
	if (kubeconfig)
		check(kt_options_set_kubeconfig(opts, kubeconfig, err, sizeof err), "kubeconfig");
	if (namespace)
		check(kt_options_set_namespace(opts, namespace, err, sizeof err), "namespace");
	kt_session *session = NULL;
	check(kt_session_connect(opts, &session, err, sizeof err), "connect");
	kt_options_free(opts, NULL, 0);

	kt_swap_options *swap_opts = NULL;
	check(kt_swap_options_new(&swap_opts, err, sizeof err), "swap options");
	if (scale)
		check(kt_swap_options_set_mode(swap_opts, KT_SWAP_MODE_SCALE, err, sizeof err), "mode");
	kt_swap *swap = NULL;
	kt_status st = kt_session_swap(session, target, ports, swap_opts, &swap, err, sizeof err);
	kt_swap_options_free(swap_opts, NULL, 0);
	if (st != KT_STATUS_OK) {
		/* KT_STATUS_CONFLICT: someone else holds the target (the message says who). */
		fprintf(stderr, "swap: %s: %s\n", kt_status_name(st), err);
		kt_session_close(session, NULL, 0);
		kt_session_free(session, NULL, 0);
		return 1;
	}

	kt_list *list = NULL;
	check(kt_swap_ports(swap, &list, err, sizeof err), "ports");
	size_t n = 0;
	kt_list_len(list, &n, NULL, 0);
	for (size_t i = 0; i < n; i++) {
		const char *pair = NULL;
		kt_list_get(list, i, &pair, NULL, 0); /* "local:remote" */
		printf("port %s\n", pair);
	}
	kt_list_free(list, NULL, 0);
	printf("press Ctrl-C to put %s back\n", target);
	fflush(stdout);

	/* Print the swap's events (the shadow, the switch, every inbound connection)
	 * until a signal comes. */
	while (!stop) {
		kt_event *ev = NULL;
		if (kt_swap_next_event(swap, 500, &ev, NULL, 0) != KT_STATUS_OK)
			continue;
		const char *text = NULL;
		kt_event_get_text(ev, &text, NULL, 0);
		fprintf(stderr, "event: %s\n", text);
		kt_event_free(ev, NULL, 0);
	}

	check(kt_swap_close(swap, err, sizeof err), "restore"); /* waits for the originals */
	uint64_t count = 0;
	kt_swap_connections(swap, &count, NULL, 0);
	printf("restored %s after %llu connection(s)\n", target, (unsigned long long)count);
	kt_swap_free(swap, NULL, 0);
	check(kt_session_close(session, err, sizeof err), "close");
	kt_session_free(session, NULL, 0);
	return 0;
}
