/* The imageless shadow from C: no shadow image, so kt ships its agent into the
 * namespace (ConfigMaps, uploaded once) and runs it on an image the node has.
 *
 * Usage:
 *   imageless missing-agent KUBECONFIG NAMESPACE DIR
 *       connects with kt_options_set_agent_dir(DIR), a directory without the agent:
 *       KT_STATUS_INVALID_ARGUMENT naming DIR/kt-shadow and build-static, no session.
 *   imageless connect KUBECONFIG NAMESPACE
 *       a default connect (no image, no agent directory); reads the events up to
 *       tunnel up, checks each KT_EVENT_KIND_UPLOADING's fields, resolves `echo`,
 *       closes. Prints SESSION_ID=<id> and UPLOADS=<uploading events seen>. */
#include "check.h"

#define E err, sizeof err

/* The field `name` of `ev` as a number (-1 when missing). */
static long number_field(kt_event *ev, const char *name) {
	const char *value = NULL;
	if (kt_event_get_field(ev, name, &value, E) != KT_STATUS_OK || value == NULL)
		return -1;
	return strtol(value, NULL, 10);
}

static int missing_agent(const char *kubeconfig, const char *ns, const char *dir) {
	kt_options *opts = NULL;
	kt_session *s = (kt_session *)&opts; /* must become NULL */
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, kubeconfig, E));
	REQUIRE_OK(kt_options_set_namespace(opts, ns, E));
	REQUIRE_OK(kt_options_set_agent_dir(opts, dir, E));
	char file[4096];
	snprintf(file, sizeof file, "%s/kt-shadow", dir);
	EXPECT(kt_session_connect(opts, &s, E), KT_STATUS_INVALID_ARGUMENT, file);
	CHECK(strstr(err, "build-static") != NULL);
	CHECK(s == NULL);
	REQUIRE_OK(kt_options_free(opts, E));
	return finish("imageless missing-agent");
}

static int connect_once(const char *kubeconfig, const char *ns) {
	kt_options *opts = NULL;
	kt_session *s = NULL;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, kubeconfig, E));
	REQUIRE_OK(kt_options_set_namespace(opts, ns, E));
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	REQUIRE_OK(kt_options_free(opts, E));
	const char *id = NULL;
	REQUIRE_OK(kt_session_id(s, &id, E));
	printf("SESSION_ID=%s\n", id);
	fflush(stdout);

	int uploads = 0, tunnel_up = 0;
	for (int i = 0; i < 100 && !tunnel_up; i++) {
		kt_event *ev = NULL;
		REQUIRE_OK(kt_session_next_event(s, 30000, &ev, E));
		kt_event_kind kind;
		REQUIRE_OK(kt_event_get_kind(ev, &kind, E));
		if (kind == KT_EVENT_KIND_UPLOADING) {
			uploads++;
			const char *where = NULL, *text = NULL;
			EXPECT(kt_event_get_field(ev, "namespace", &where, E), KT_STATUS_OK, "");
			CHECK(where != NULL && strcmp(where, ns) == 0);
			/* The loader and kt-shadow's parts, and their bytes. */
			CHECK(number_field(ev, "parts") >= 2);
			CHECK(number_field(ev, "bytes") > 0);
			REQUIRE_OK(kt_event_get_text(ev, &text, E));
			CHECK(strstr(text, "uploading kt's agent") != NULL);
			printf("uploading: %s\n", text);
		}
		tunnel_up = kind == KT_EVENT_KIND_TUNNEL_UP;
		REQUIRE_OK(kt_event_free(ev, E));
	}
	CHECK(tunnel_up);
	printf("UPLOADS=%d\n", uploads);

	kt_list *ips = NULL;
	EXPECT(kt_session_resolve(s, "echo", &ips, E), KT_STATUS_OK, "");
	size_t n = 0;
	if (ips != NULL) {
		REQUIRE_OK(kt_list_len(ips, &n, E));
		REQUIRE_OK(kt_list_free(ips, E));
	}
	CHECK(n > 0);
	EXPECT(kt_session_close(s, E), KT_STATUS_OK, "");
	REQUIRE_OK(kt_session_free(s, E));
	return finish("imageless connect");
}

int main(int argc, char **argv) {
	if (argc == 5 && strcmp(argv[1], "missing-agent") == 0)
		return missing_agent(argv[2], argv[3], argv[4]);
	if (argc == 4 && strcmp(argv[1], "connect") == 0)
		return connect_once(argv[2], argv[3]);
	fprintf(stderr, "usage: %s missing-agent KUBECONFIG NAMESPACE DIR | connect KUBECONFIG NAMESPACE\n",
		argv[0]);
	return 2;
}
