/* A swap from C against the lab: a local HTTP server answers a token only it knows;
 * kt_session_swap takes deploy/echo's traffic (selector mode) to it; a connection
 * to the Service `echo` by name from inside the cluster (the session's shadow pod,
 * through a TCP forward) gets the token; the swap's names, ports, connection count
 * and events (listening, selector switched, inbound) read back; exposing over the
 * existing Service is refused with KT_STATUS_CONFLICT; close puts the echo app back
 * (its JSON answers again), twice is fine; events end with restored and closed;
 * free twice is an invalid handle. Then an expose (a new Service reaching the local
 * server), kt_clean and kt_recover in dry runs, bad input to kt_session_swap, and
 * the session closed.
 * Usage: swap KUBECONFIG NAMESPACE. Prints SESSION_ID, SWAP_ID and EXPOSE_ID for the
 * caller, which checks the echo app against a snapshot and that nothing is left. */
#include "check.h"
#include "inbound.h"

#define E err, sizeof err

/* The swap's next event, as inbound.h's `events` reads them. */
static kt_status next_swap_event(const void *swap, uint64_t timeout_ms, kt_event **ev) {
	return kt_swap_next_event(swap, timeout_ms, ev, E);
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: swap KUBECONFIG NAMESPACE\n");
		return 2;
	}
	snprintf(token, sizeof token, "kt-c-token-%ld-%d", (long)time(NULL), (int)getpid());
	uint16_t local = start_server();

	kt_options *opts = NULL;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, argv[1], E));
	REQUIRE_OK(kt_options_set_namespace(opts, argv[2], E));
	kt_session *s = NULL;
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	const char *sid = NULL;
	REQUIRE_OK(kt_session_id(s, &sid, E));
	printf("SESSION_ID=%s\n", sid);
	fflush(stdout);

	/* Bad input: nothing changes. */
	kt_swap *bad = NULL;
	EXPECT(kt_session_swap(s, "deploy/echo", "8080:", NULL, &bad, E),
	       KT_STATUS_INVALID_ARGUMENT, "`local:remote`");
	CHECK(bad == NULL);
	EXPECT(kt_session_swap(s, "deploy/echo", NULL, NULL, &bad, E), KT_STATUS_NULL_POINTER,
	       "`ports`");
	EXPECT(kt_session_swap(s, "deploy/no-such-app", "8080", NULL, &bad, E),
	       KT_STATUS_NOT_FOUND, "no-such-app");
	kt_swap_options *so = NULL;
	REQUIRE_OK(kt_swap_options_new(&so, E));
	EXPECT(kt_swap_options_set_mode(so, 9, E), KT_STATUS_INVALID_ARGUMENT,
	       "KT_SWAP_MODE_SELECTOR");
	EXPECT(kt_swap_options_set_mode(so, KT_SWAP_MODE_SELECTOR, E), KT_STATUS_OK, "");
	EXPECT(kt_swap_options_set_restore_ttl_ms(so, 20000, E), KT_STATUS_OK, "");

	char ports[32];
	snprintf(ports, sizeof ports, "%u:80", (unsigned)local);
	kt_swap *swap = NULL;
	REQUIRE_OK(kt_session_swap(s, "deploy/echo", ports, so, &swap, E));
	REQUIRE_OK(kt_swap_options_free(so, E));
	const char *swap_id = NULL, *target = NULL, *pod = NULL;
	REQUIRE_OK(kt_swap_id(swap, &swap_id, E));
	printf("SWAP_ID=%s\n", swap_id);
	fflush(stdout);
	EXPECT(kt_swap_target(swap, &target, E), KT_STATUS_OK, "");
	CHECK(target != NULL && strcmp(target, "deploy/echo") == 0);
	EXPECT(kt_swap_pod_name(swap, &pod, E), KT_STATUS_OK, "");
	CHECK(pod != NULL && pod[0] != '\0');
	kt_swap_mode mode = KT_SWAP_MODE_SCALE;
	EXPECT(kt_swap_get_mode(swap, &mode, E), KT_STATUS_OK, "");
	CHECK(mode == KT_SWAP_MODE_SELECTOR);
	kt_list *list = NULL;
	size_t n = 0;
	const char *item = NULL;
	EXPECT(kt_swap_services(swap, &list, E), KT_STATUS_OK, "");
	kt_list_len(list, &n, E);
	CHECK(n == 1);
	if (n == 1) {
		kt_list_get(list, 0, &item, E);
		CHECK(strcmp(item, "echo") == 0);
	}
	kt_list_free(list, E);
	EXPECT(kt_swap_ports(swap, &list, E), KT_STATUS_OK, "");
	kt_list_len(list, &n, E);
	CHECK(n == 1);
	if (n == 1) {
		unsigned l = 0, r = 0;
		kt_list_get(list, 0, &item, E);
		printf("port %s\n", item);
		CHECK(sscanf(item, "%u:%u", &l, &r) == 2 && l == local && r == 8080);
	}
	kt_list_free(list, E);
	unsigned long seen = events(next_swap_event, swap, -1);
	CHECK(seen & (1UL << KT_EVENT_KIND_LISTENING));
	CHECK(seen & (1UL << KT_EVENT_KIND_SELECTOR_SWITCHED));

	/* Inside the cluster, the Service `echo` by name now answers with the token. */
	kt_addr fwd;
	REQUIRE_OK(kt_session_forward(s, "echo", 80, &fwd, E));
	char reply[8192];
	CHECK(get_until(fwd.port, "", token, reply, sizeof reply));
	printf("through the swap: %s\n", reply);
	uint64_t count = 0;
	EXPECT(kt_swap_connections(swap, &count, E), KT_STATUS_OK, "");
	CHECK(count >= 1);
	seen = events(next_swap_event, swap, KT_EVENT_KIND_INBOUND);
	CHECK(seen & (1UL << KT_EVENT_KIND_INBOUND));

	/* Exposing over the existing Service `echo` is refused as a conflict. */
	kt_expose *clash = NULL;
	EXPECT(kt_session_expose(s, "echo", ports, NULL, &clash, E), KT_STATUS_CONFLICT, "echo");
	CHECK(clash == NULL);
	kt_list *report = NULL;

	/* Close: the echo app answers again. */
	EXPECT(kt_swap_close(swap, E), KT_STATUS_OK, "");
	EXPECT(kt_swap_close(swap, E), KT_STATUS_OK, "");
	CHECK(get_until(fwd.port, "", "\"path\":\"/from-c\"", reply, sizeof reply));
	seen = events(next_swap_event, swap, KT_EVENT_KIND_CLOSED);
	CHECK(seen & (1UL << KT_EVENT_KIND_RESTORED));
	CHECK(seen & (1UL << KT_EVENT_KIND_CLOSED));
	kt_event *ev = NULL;
	EXPECT(kt_swap_next_event(swap, 0, &ev, E), KT_STATUS_CLOSED, "swap's event stream");
	/* Read-only accessors still work after close, until free. */
	EXPECT(kt_swap_id(swap, &swap_id, E), KT_STATUS_OK, "");
	char id_copy[128];
	snprintf(id_copy, sizeof id_copy, "%s", swap_id);
	EXPECT(kt_swap_free(swap, E), KT_STATUS_OK, "");
	EXPECT(kt_swap_free(swap, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_swap_id(swap, &swap_id, E), KT_STATUS_INVALID_HANDLE, "kt_swap");

	/* Expose: a new Service `c-preview` whose port 8081 reaches the local server. */
	char expose_ports[32];
	snprintf(expose_ports, sizeof expose_ports, "%u:8081", (unsigned)local);
	kt_expose_options *eo = NULL;
	REQUIRE_OK(kt_expose_options_new(&eo, E));
	REQUIRE_OK(kt_expose_options_set_service_type(eo, KT_SERVICE_TYPE_CLUSTER_IP, E));
	kt_expose *expose = NULL;
	REQUIRE_OK(kt_session_expose(s, "c-preview", expose_ports, eo, &expose, E));
	REQUIRE_OK(kt_expose_options_free(eo, E));
	const char *service = NULL, *expose_id = NULL;
	EXPECT(kt_expose_service(expose, &service, E), KT_STATUS_OK, "");
	CHECK(service != NULL && strcmp(service, "c-preview") == 0);
	REQUIRE_OK(kt_expose_id(expose, &expose_id, E));
	printf("EXPOSE_ID=%s\n", expose_id);
	fflush(stdout);
	EXPECT(kt_expose_ports(expose, &list, E), KT_STATUS_OK, "");
	kt_list_len(list, &n, E);
	CHECK(n == 1);
	kt_list_free(list, E);
	kt_addr preview;
	REQUIRE_OK(kt_session_forward(s, "c-preview", 8081, &preview, E));
	CHECK(get_until(preview.port, "", token, reply, sizeof reply));
	EXPECT(kt_expose_connections(expose, &count, E), KT_STATUS_OK, "");
	CHECK(count >= 1);
	EXPECT(kt_expose_next_event(expose, 0, &ev, E), KT_STATUS_OK, "");
	if (ev != NULL)
		kt_event_free(ev, E);
	EXPECT(kt_expose_close(expose, E), KT_STATUS_OK, "");
	EXPECT(kt_expose_free(expose, E), KT_STATUS_OK, "");
	EXPECT(kt_expose_free(expose, E), KT_STATUS_INVALID_HANDLE, "kt_expose");

	/* Nothing is left to clean or recover. */
	EXPECT(kt_clean(opts, true, &report, E), KT_STATUS_OK, "");
	n = 99;
	kt_list_len(report, &n, E);
	for (size_t i = 0; i < n; i++) {
		const char *k = NULL, *v = NULL;
		kt_list_key(report, i, &k, E);
		kt_list_get(report, i, &v, E);
		printf("clean: %s: %s\n", k, v);
		CHECK(strstr(v, id_copy) == NULL);
	}
	kt_list_free(report, E);
	EXPECT(kt_recover(opts, "deploy/echo", true, &report, E), KT_STATUS_OK, "");
	kt_list_free(report, E);
	kt_options_free(opts, E);

	EXPECT(kt_session_close(s, E), KT_STATUS_OK, "");
	EXPECT(kt_session_swap(s, "deploy/echo", ports, NULL, &bad, E), KT_STATUS_CLOSED, "");
	EXPECT(kt_session_free(s, E), KT_STATUS_OK, "");
	shutdown(server_fd, SHUT_RDWR);
	close(server_fd);
	return finish("swap");
}
