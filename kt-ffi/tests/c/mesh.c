/* A mesh from C against the lab: a local HTTP server answers a token only it knows;
 * kt_session_mesh meshes the Service `echo` with the default rule (header `version`,
 * a random value); its names, rule, header, ports and events (listening, routed)
 * read back; from inside the cluster (the session's shadow pod, through a TCP
 * forward) a request to `echo` WITH the header gets the token and one WITHOUT it
 * (or with another value) gets the echo app; a second mesh with the same header
 * value is refused with KT_STATUS_CONFLICT; close puts the Service back (the header
 * no longer matters), twice is fine; events end with restored and closed; free
 * twice is an invalid handle.
 * Usage: mesh KUBECONFIG NAMESPACE. Prints SESSION_ID and MESH_ID for the caller,
 * which checks the echo app against a snapshot and that nothing is left. */
#include "check.h"
#include "inbound.h"

#define E err, sizeof err

/* The mesh's next event, as inbound.h's `events` reads them. */
static kt_status next_mesh_event(const void *mesh, uint64_t timeout_ms, kt_event **ev) {
	return kt_mesh_next_event(mesh, timeout_ms, ev, E);
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: mesh KUBECONFIG NAMESPACE\n");
		return 2;
	}
	snprintf(token, sizeof token, "kt-c-mesh-%ld-%d", (long)time(NULL), (int)getpid());
	uint16_t local = start_server();
	const char *echo_app = "\"path\":\"/from-c\"";

	kt_options *opts = NULL;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, argv[1], E));
	REQUIRE_OK(kt_options_set_namespace(opts, argv[2], E));
	kt_session *s = NULL;
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	REQUIRE_OK(kt_options_free(opts, E));
	const char *sid = NULL;
	REQUIRE_OK(kt_session_id(s, &sid, E));
	printf("SESSION_ID=%s\n", sid);
	fflush(stdout);

	kt_mesh_options *mo = NULL;
	REQUIRE_OK(kt_mesh_options_new(&mo, E));
	EXPECT(kt_mesh_options_set_restore_ttl_ms(mo, 20000, E), KT_STATUS_OK, "");
	char ports[32];
	snprintf(ports, sizeof ports, "%u:80", (unsigned)local);
	kt_mesh *mesh = NULL;
	REQUIRE_OK(kt_session_mesh(s, "svc/echo", NULL, ports, mo, &mesh, E));
	const char *mesh_id = NULL, *service = NULL, *rule = NULL, *name = NULL, *value = NULL,
		   *router = NULL, *pod = NULL;
	REQUIRE_OK(kt_mesh_id(mesh, &mesh_id, E));
	printf("MESH_ID=%s\n", mesh_id);
	fflush(stdout);
	EXPECT(kt_mesh_service(mesh, &service, E), KT_STATUS_OK, "");
	CHECK(service != NULL && strcmp(service, "echo") == 0);
	REQUIRE_OK(kt_mesh_header_name(mesh, &name, E));
	REQUIRE_OK(kt_mesh_header_value(mesh, &value, E));
	CHECK(strcmp(name, "version") == 0 && value[0] != '\0');
	EXPECT(kt_mesh_rule(mesh, &rule, E), KT_STATUS_OK, "");
	char want_rule[256];
	snprintf(want_rule, sizeof want_rule, "%s=%s", name, value);
	CHECK(rule != NULL && strcmp(rule, want_rule) == 0);
	EXPECT(kt_mesh_router(mesh, &router, E), KT_STATUS_OK, "");
	CHECK(router != NULL && router[0] != '\0');
	EXPECT(kt_mesh_pod_name(mesh, &pod, E), KT_STATUS_OK, "");
	CHECK(pod != NULL && pod[0] != '\0' && strcmp(pod, router) != 0);
	printf("rule %s, router %s, shadow %s\n", rule, router, pod);
	kt_list *list = NULL;
	size_t n = 0;
	EXPECT(kt_mesh_ports(mesh, &list, E), KT_STATUS_OK, "");
	kt_list_len(list, &n, E);
	CHECK(n == 1);
	if (n == 1) {
		const char *item = NULL;
		unsigned l = 0, r = 0;
		kt_list_get(list, 0, &item, E);
		printf("port %s\n", item);
		CHECK(sscanf(item, "%u:%u", &l, &r) == 2 && l == local && r == 8080);
	}
	kt_list_free(list, E);
	unsigned long seen = events(next_mesh_event, mesh, -1);
	CHECK(seen & (1UL << KT_EVENT_KIND_LISTENING));
	CHECK(seen & (1UL << KT_EVENT_KIND_ROUTED));

	/* Inside the cluster: with the header, the local server; without it, or with
	 * another value, the echo app. */
	char with_header[300], other_value[300];
	snprintf(with_header, sizeof with_header, "%s: %s\r\n", name, value);
	snprintf(other_value, sizeof other_value, "%s: not-%s\r\n", name, value);
	kt_addr fwd;
	REQUIRE_OK(kt_session_forward(s, "echo", 80, &fwd, E));
	char reply[8192];
	CHECK(get_until(fwd.port, with_header, token, reply, sizeof reply));
	printf("with the header: %s\n", reply);
	get(fwd.port, "", reply, sizeof reply);
	CHECK(strstr(reply, echo_app) != NULL && strstr(reply, token) == NULL);
	printf("without: %s\n", reply);
	get(fwd.port, other_value, reply, sizeof reply);
	CHECK(strstr(reply, echo_app) != NULL && strstr(reply, token) == NULL);
	get(fwd.port, with_header, reply, sizeof reply);
	CHECK(strstr(reply, token) != NULL);
	uint64_t count = 0;
	EXPECT(kt_mesh_connections(mesh, &count, E), KT_STATUS_OK, "");
	CHECK(count >= 2);
	seen = events(next_mesh_event, mesh, KT_EVENT_KIND_INBOUND);
	CHECK(seen & (1UL << KT_EVENT_KIND_INBOUND));

	/* A second mesh of the Service with the same header value is refused. */
	kt_mesh *clash = NULL;
	REQUIRE_OK(kt_mesh_options_set_check_local(mo, false, E));
	char same_rule[300];
	snprintf(same_rule, sizeof same_rule, "%s:%s", name, value);
	EXPECT(kt_session_mesh(s, "svc/echo", same_rule, "18081:80", mo, &clash, E),
	       KT_STATUS_CONFLICT, value);
	CHECK(clash == NULL);
	REQUIRE_OK(kt_mesh_options_free(mo, E));
	get(fwd.port, with_header, reply, sizeof reply);
	CHECK(strstr(reply, token) != NULL);

	/* Close: the Service is put back; the header no longer matters. */
	EXPECT(kt_mesh_close(mesh, E), KT_STATUS_OK, "");
	EXPECT(kt_mesh_close(mesh, E), KT_STATUS_OK, "");
	CHECK(get_until(fwd.port, with_header, echo_app, reply, sizeof reply));
	seen = events(next_mesh_event, mesh, KT_EVENT_KIND_CLOSED);
	CHECK(seen & (1UL << KT_EVENT_KIND_RESTORED));
	CHECK(seen & (1UL << KT_EVENT_KIND_CLOSED));
	kt_event *ev = NULL;
	EXPECT(kt_mesh_next_event(mesh, 0, &ev, E), KT_STATUS_CLOSED, "mesh's event stream");
	/* Read-only accessors still work after close, until free. */
	EXPECT(kt_mesh_header_value(mesh, &value, E), KT_STATUS_OK, "");
	EXPECT(kt_mesh_free(mesh, E), KT_STATUS_OK, "");
	EXPECT(kt_mesh_free(mesh, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_mesh_id(mesh, &mesh_id, E), KT_STATUS_INVALID_HANDLE, "kt_mesh");

	EXPECT(kt_session_close(s, E), KT_STATUS_OK, "");
	EXPECT(kt_session_mesh(s, "svc/echo", NULL, ports, NULL, &clash, E), KT_STATUS_CLOSED, "");
	EXPECT(kt_session_free(s, E), KT_STATUS_OK, "");
	shutdown(server_fd, SHUT_RDWR);
	close(server_fd);
	return finish("mesh");
}
