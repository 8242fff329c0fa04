/* Bad input without the lab: every mistake a C caller can make with pointers,
 * strings, enum values, CIDRs, handles and error buffers gives its documented
 * status and a readable message, and never crashes. Usage: bad_input */
#include <stdint.h>
#include <unistd.h>

#include "check.h"

#define E err, sizeof err

static const char BAD_UTF8[] = {'d', 'e', (char)0xff, 'v', 0};

static void write_file(const char *path, const char *text) {
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

int main(void) {
	kt_options *opts = NULL;
	kt_vpn_options *vpn = NULL;
	kt_session *session = (kt_session *)&opts; /* must become NULL on failure */
	kt_list *list = (kt_list *)&opts;

	/* Static strings. */
	CHECK(kt_version() != NULL && kt_version()[0] != '\0');
	CHECK(strcmp(kt_status_name(KT_STATUS_OK), "KT_STATUS_OK") == 0);
	CHECK(strcmp(kt_status_name(KT_STATUS_NEEDS_CAPABILITY), "KT_STATUS_NEEDS_CAPABILITY") == 0);
	CHECK(strcmp(kt_status_name(KT_STATUS_CONNECT), "KT_STATUS_CONNECT") == 0);
	CHECK(KT_STATUS_CONNECT == 23 && KT_STATUS_INTERNAL == 22 && KT_STATUS_TUNNEL == 14);
	CHECK(strcmp(kt_status_name(KT_STATUS_CONFLICT), "KT_STATUS_CONFLICT") == 0);
	CHECK(KT_STATUS_CONFLICT == 24);
	CHECK(strcmp(kt_status_name(25), "KT_STATUS_UNKNOWN") == 0);
	CHECK(strcmp(kt_status_name(9999), "KT_STATUS_UNKNOWN") == 0);

	/* NULL pointers. */
	EXPECT(kt_options_new(NULL, E), KT_STATUS_NULL_POINTER, "`options` is NULL");
	REQUIRE_OK(kt_options_new(&opts, E));
	CHECK(err[0] == '\0');
	EXPECT(kt_options_set_namespace(opts, NULL, E), KT_STATUS_NULL_POINTER, "`namespace` is NULL");
	EXPECT(kt_options_set_namespace(NULL, "dev", E), KT_STATUS_NULL_POINTER, "`options` is NULL");
	EXPECT(kt_options_add_label(opts, "a", NULL, E), KT_STATUS_NULL_POINTER, "`value` is NULL");
	EXPECT(kt_options_set_vpn(opts, NULL, E), KT_STATUS_NULL_POINTER, "`vpn` is NULL");
	EXPECT(kt_session_connect(NULL, &session, E), KT_STATUS_NULL_POINTER, "`options` is NULL");
	CHECK(session == NULL);
	EXPECT(kt_session_connect(opts, NULL, E), KT_STATUS_NULL_POINTER, "`session` is NULL");
	EXPECT(kt_session_id(NULL, NULL, E), KT_STATUS_NULL_POINTER, "is NULL");
	EXPECT(kt_session_next_event(NULL, 0, NULL, E), KT_STATUS_NULL_POINTER, "`event` is NULL");
	EXPECT(kt_list_len(NULL, NULL, E), KT_STATUS_NULL_POINTER, "`len` is NULL");
	EXPECT(kt_recover_system_dns(NULL, E), KT_STATUS_NULL_POINTER, "`restored` is NULL");
	EXPECT(kt_session_resolve(NULL, "echo", &list, E), KT_STATUS_NULL_POINTER, "`session` is NULL");
	CHECK(list == NULL);

	/* Invalid UTF-8, empty strings, bad values. */
	EXPECT(kt_options_set_namespace(opts, BAD_UTF8, E), KT_STATUS_INVALID_UTF8,
	       "`namespace` is not valid UTF-8 (invalid byte 0xff at offset 2)");
	EXPECT(kt_options_add_annotation(opts, "note", BAD_UTF8, E), KT_STATUS_INVALID_UTF8, "`value`");
	EXPECT(kt_options_set_namespace(opts, "", E), KT_STATUS_INVALID_ARGUMENT, "`namespace` is empty");
	EXPECT(kt_options_add_label(opts, "", "x", E), KT_STATUS_INVALID_ARGUMENT, "`key` is empty");
	EXPECT(kt_options_set_dns_server(opts, "ten.ten", E), KT_STATUS_INVALID_ARGUMENT, "not an IP address");
	EXPECT(kt_options_set_ssh_port(opts, 0, E), KT_STATUS_INVALID_ARGUMENT, "must not be 0");

	/* The imageless shadow's settings: the base image and the agent directory. */
	EXPECT(kt_options_set_base_image(opts, NULL, E), KT_STATUS_NULL_POINTER, "`image` is NULL");
	EXPECT(kt_options_set_base_image(NULL, "busybox:1.37", E), KT_STATUS_NULL_POINTER, "`options` is NULL");
	EXPECT(kt_options_set_base_image(opts, BAD_UTF8, E), KT_STATUS_INVALID_UTF8,
	       "`image` is not valid UTF-8 (invalid byte 0xff at offset 2)");
	EXPECT(kt_options_set_base_image(opts, " ", E), KT_STATUS_INVALID_ARGUMENT, "`image` is empty");
	EXPECT(kt_options_set_base_image(opts, "busybox:1.37", E), KT_STATUS_OK, "");
	EXPECT(kt_options_set_agent_dir(opts, NULL, E), KT_STATUS_NULL_POINTER, "`path` is NULL");
	EXPECT(kt_options_set_agent_dir(NULL, "/opt/kt/agent", E), KT_STATUS_NULL_POINTER, "`options` is NULL");
	EXPECT(kt_options_set_agent_dir(opts, BAD_UTF8, E), KT_STATUS_INVALID_UTF8,
	       "`path` is not valid UTF-8 (invalid byte 0xff at offset 2); kt takes UTF-8 strings only");
	EXPECT(kt_options_set_agent_dir(opts, "", E), KT_STATUS_INVALID_ARGUMENT, "`path` is empty");
	EXPECT(kt_options_set_agent_dir(opts, "/opt/kt/agent", E), KT_STATUS_OK, "");
	CHECK(KT_EVENT_KIND_UPLOADING == 24);

	/* Enum values out of range. */
	EXPECT(kt_options_set_flavour(opts, 7, E), KT_STATUS_INVALID_ARGUMENT, "7 is not a kt_flavour");
	EXPECT(kt_options_set_flavour(opts, UINT32_MAX, E), KT_STATUS_INVALID_ARGUMENT, "not a kt_flavour");
	EXPECT(kt_options_set_flavour(opts, KT_FLAVOUR_OPENSSH, E), KT_STATUS_OK, "");
	EXPECT(kt_options_set_flavour(opts, KT_FLAVOUR_KT_SHADOW, E), KT_STATUS_OK, "");
	EXPECT(kt_options_set_timeout(opts, 8, 1000, E), KT_STATUS_INVALID_ARGUMENT, "8 is not a kt_timeout");
	EXPECT(kt_options_set_timeout(opts, KT_TIMEOUT_POD_READY, 0, E), KT_STATUS_INVALID_ARGUMENT, "0 ms");
	EXPECT(kt_options_set_timeout(opts, KT_TIMEOUT_CONNECT, UINT64_MAX, E), KT_STATUS_INVALID_ARGUMENT,
	       "more than 30 days");
	EXPECT(kt_options_set_timeout(opts, KT_TIMEOUT_SHADOW_HEARTBEAT, 0, E), KT_STATUS_OK, "");
	EXPECT(kt_options_set_timeout(opts, KT_TIMEOUT_CLOSE, 30000, E), KT_STATUS_OK, "");

	/* VPN options: CIDRs, names, MTU, DNS mode. */
	EXPECT(kt_vpn_options_new(NULL, E), KT_STATUS_NULL_POINTER, "`vpn` is NULL");
	REQUIRE_OK(kt_vpn_options_new(&vpn, E));
	/* Read by kt-core's parse_net, as every kt front end reads them. */
	EXPECT(kt_vpn_options_add_include(vpn, "10.0.0.0/33", E), KT_STATUS_INVALID_ARGUMENT,
	       "invalid CIDR `10.0.0.0/33`; expected address/prefix");
	EXPECT(kt_vpn_options_add_include(vpn, "banana", E), KT_STATUS_INVALID_ARGUMENT, "invalid CIDR `banana`");
	EXPECT(kt_vpn_options_add_exclude(vpn, "300.1.2.3/8", E), KT_STATUS_INVALID_ARGUMENT, "invalid CIDR");
	EXPECT(kt_vpn_options_add_include(vpn, "10.96.0.10", E), KT_STATUS_OK, ""); /* a bare IP: /32 */
	EXPECT(kt_vpn_options_add_exclude(vpn, "fd00::1", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_add_include(vpn, BAD_UTF8, E), KT_STATUS_INVALID_UTF8, "`cidr`");
	EXPECT(kt_vpn_options_add_include(vpn, "10.96.0.0/12", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_add_exclude(vpn, "fd00::/64", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_set_tun_name(vpn, "a-name-much-too-long", E), KT_STATUS_INVALID_ARGUMENT,
	       "not a network device name");
	EXPECT(kt_vpn_options_set_mtu(vpn, 100, E), KT_STATUS_INVALID_ARGUMENT, "MTU 100 is too small");
	EXPECT(kt_vpn_options_set_dns(vpn, 42, NULL, E), KT_STATUS_INVALID_ARGUMENT, "42 is not a kt_dns_mode");
	EXPECT(kt_vpn_options_set_dns(vpn, KT_DNS_MODE_OFF, "dev", E), KT_STATUS_INVALID_ARGUMENT,
	       "only for KT_DNS_MODE_HOSTS");
	EXPECT(kt_vpn_options_set_dns(vpn, KT_DNS_MODE_HOSTS, ",", E), KT_STATUS_INVALID_ARGUMENT,
	       "invalid DNS mode `hosts:,`");
	EXPECT(kt_vpn_options_set_dns(vpn, KT_DNS_MODE_HOSTS, " ", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_set_dns(vpn, KT_DNS_MODE_HOSTS, "dev, prod", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_set_address(vpn, "fd00::1", E), KT_STATUS_INVALID_ARGUMENT, "not an IPv4 address");
	EXPECT(kt_vpn_options_set_dns_listen(vpn, "127.0.0.1", E), KT_STATUS_INVALID_ARGUMENT, "ip:port");
	EXPECT(kt_options_set_vpn(opts, vpn, E), KT_STATUS_OK, "");

	/* Handles: made up, of the wrong type, used after free, freed twice. */
	kt_session *bogus = (kt_session *)(uintptr_t)0x5eed0;
	const char *text = NULL;
	EXPECT(kt_session_id(bogus, &text, E), KT_STATUS_INVALID_HANDLE, "not a kt_session handle kt made");
	EXPECT(kt_session_id((kt_session *)opts, &text, E), KT_STATUS_INVALID_HANDLE,
	       "it looks like a kt_options handle");
	EXPECT(kt_list_free((kt_list *)vpn, E), KT_STATUS_INVALID_HANDLE, "kt_vpn_options");
	EXPECT(kt_event_free((kt_event *)(uintptr_t)1, E), KT_STATUS_INVALID_HANDLE, "kt_event");
	EXPECT(kt_vpn_options_free(vpn, E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_free(vpn, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_options_set_vpn(opts, vpn, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_vpn_options_set_mtu(vpn, 1500, E), KT_STATUS_INVALID_HANDLE, "freed already");

	/* Connect failures that need no cluster: a missing and a broken kubeconfig, an
	 * API server that does not answer. A shadow image, so that the test needs no
	 * agent to ship (without one, a connect is refused before the API server is
	 * asked anything). */
	kt_options *o2 = NULL;
	REQUIRE_OK(kt_options_new(&o2, E));
	REQUIRE_OK(kt_options_set_shadow_image(o2, "kt.invalid/kt-shadow:0.1.0", E));
	REQUIRE_OK(kt_options_set_kubeconfig(o2, "/nonexistent/kt-test.kubeconfig", E));
	EXPECT(kt_session_connect(o2, &session, E), KT_STATUS_CONFIG, "/nonexistent/kt-test.kubeconfig");
	CHECK(session == NULL);
	char path[] = "/tmp/kt-bad-input-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	close(fd);
	write_file(path, "this: is: not: a kubeconfig\n");
	REQUIRE_OK(kt_options_set_kubeconfig(o2, path, E));
	EXPECT(kt_session_connect(o2, &session, E), KT_STATUS_CONFIG, "kubeconfig");
	write_file(path,
		   "apiVersion: v1\nkind: Config\n"
		   "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
		   "users: [{name: u, user: {token: t}}]\n"
		   "contexts: [{name: x, context: {cluster: c, user: u, namespace: dev}}]\n"
		   "current-context: x\n");
	EXPECT(kt_session_connect(o2, &session, E), KT_STATUS_UNREACHABLE, "https://127.0.0.1:1");
	CHECK(session == NULL);
	REQUIRE_OK(kt_options_set_context(o2, "no-such-context", E));
	EXPECT(kt_session_connect(o2, &session, E), KT_STATUS_CONFIG, "no-such-context");
	unlink(path);
	EXPECT(kt_options_free(o2, E), KT_STATUS_OK, "");

	/* Error buffers: too small, one byte, none at all. The message is cut, always
	 * NUL-terminated, and nothing is written past the given length. */
	char small[16];
	memset(small, 'X', sizeof small);
	CHECK(kt_options_set_flavour(opts, 9, small, 8) == KT_STATUS_INVALID_ARGUMENT);
	CHECK(strlen(small) == 7 && strncmp(small, "9 is no", 7) == 0);
	CHECK(small[8] == 'X' && small[15] == 'X');
	memset(small, 'X', sizeof small);
	CHECK(kt_options_set_flavour(opts, 9, small, 1) == KT_STATUS_INVALID_ARGUMENT);
	CHECK(small[0] == '\0' && small[1] == 'X');
	memset(small, 'X', sizeof small);
	CHECK(kt_options_set_flavour(opts, 9, small, 0) == KT_STATUS_INVALID_ARGUMENT);
	CHECK(small[0] == 'X');
	CHECK(kt_options_set_flavour(opts, 9, NULL, 0) == KT_STATUS_INVALID_ARGUMENT);
	CHECK(kt_options_set_flavour(opts, 9, NULL, 100) == KT_STATUS_INVALID_ARGUMENT);
	/* A cut never splits a UTF-8 character: "`dé" cut after the 'd' (é is 2 bytes). */
	memset(small, 'X', sizeof small);
	CHECK(kt_options_set_dns_server(opts, "d\xc3\xa9", small, 4) == KT_STATUS_INVALID_ARGUMENT);
	CHECK(strcmp(small, "`d") == 0);

	/* Swap and expose: bad handles, enum values and ports, before anything is made. */
	kt_swap *swap = NULL;
	EXPECT(kt_session_swap(bogus, "deploy/web", "8080", NULL, &swap, E), KT_STATUS_INVALID_HANDLE,
	       "not a kt_session handle kt made");
	EXPECT(kt_session_swap(bogus, "deploy/web", "8080:", NULL, &swap, E),
	       KT_STATUS_INVALID_ARGUMENT, "`local:remote`");
	EXPECT(kt_session_swap(bogus, NULL, "8080", NULL, &swap, E), KT_STATUS_NULL_POINTER, "`target`");
	EXPECT(kt_session_swap(bogus, "deploy/web", "8080", NULL, NULL, E), KT_STATUS_NULL_POINTER,
	       "`swap`");
	CHECK(swap == NULL);
	kt_swap_options *swap_opts = NULL;
	REQUIRE_OK(kt_swap_options_new(&swap_opts, E));
	EXPECT(kt_swap_options_set_mode(swap_opts, 2, E), KT_STATUS_INVALID_ARGUMENT, "KT_SWAP_MODE_SCALE");
	EXPECT(kt_swap_options_set_restore_ttl_ms(swap_opts, 0, E), KT_STATUS_INVALID_ARGUMENT, "3000");
	EXPECT(kt_swap_free((kt_swap *)swap_opts, E), KT_STATUS_INVALID_HANDLE,
	       "it looks like a kt_swap_options handle");
	EXPECT(kt_swap_options_free(swap_opts, E), KT_STATUS_OK, "");
	EXPECT(kt_swap_options_free(swap_opts, E), KT_STATUS_INVALID_HANDLE, "freed already");
	kt_expose_options *expose_opts = NULL;
	REQUIRE_OK(kt_expose_options_new(&expose_opts, E));
	EXPECT(kt_expose_options_set_service_type(expose_opts, 3, E), KT_STATUS_INVALID_ARGUMENT,
	       "KT_SERVICE_TYPE_LOAD_BALANCER");
	EXPECT(kt_expose_options_set_service_type(expose_opts, KT_SERVICE_TYPE_NODE_PORT, E), KT_STATUS_OK,
	       "");
	EXPECT(kt_expose_options_free(expose_opts, E), KT_STATUS_OK, "");

	/* Mesh: a bad rule or ports, before the session is looked at; bad options. */
	kt_mesh *mesh = NULL;
	EXPECT(kt_session_mesh(bogus, "svc/web", "version=a && /api || x=1", "8080", NULL, &mesh, E),
	       KT_STATUS_INVALID_ARGUMENT, "mixes `&&` and `||`");
	EXPECT(kt_session_mesh(bogus, "svc/web", "no value", "8080", NULL, &mesh, E),
	       KT_STATUS_INVALID_ARGUMENT, "path prefix");
	EXPECT(kt_session_mesh(bogus, "svc/web", NULL, "8080:", NULL, &mesh, E),
	       KT_STATUS_INVALID_ARGUMENT, "`local:remote`");
	EXPECT(kt_session_mesh(bogus, "svc/web", NULL, "8080", NULL, &mesh, E),
	       KT_STATUS_INVALID_HANDLE, "not a kt_session handle kt made");
	EXPECT(kt_session_mesh(bogus, NULL, NULL, "8080", NULL, &mesh, E), KT_STATUS_NULL_POINTER,
	       "`target`");
	EXPECT(kt_session_mesh(bogus, "svc/web", NULL, "8080", NULL, NULL, E),
	       KT_STATUS_NULL_POINTER, "`mesh`");
	CHECK(mesh == NULL);
	const char *header = "untouched";
	EXPECT(kt_mesh_header_name((kt_mesh *)bogus, &header, E), KT_STATUS_INVALID_HANDLE,
	       "kt_mesh");
	CHECK(header == NULL);
	kt_mesh_options *mesh_opts = NULL;
	REQUIRE_OK(kt_mesh_options_new(&mesh_opts, E));
	EXPECT(kt_mesh_options_set_restore_ttl_ms(mesh_opts, 0, E), KT_STATUS_INVALID_ARGUMENT, "3000");
	EXPECT(kt_mesh_options_set_check_local(mesh_opts, false, E), KT_STATUS_OK, "");
	EXPECT(kt_mesh_free((kt_mesh *)mesh_opts, E), KT_STATUS_INVALID_HANDLE,
	       "it looks like a kt_mesh_options handle");
	EXPECT(kt_mesh_options_free(mesh_opts, E), KT_STATUS_OK, "");
	EXPECT(kt_mesh_options_free(mesh_opts, E), KT_STATUS_INVALID_HANDLE, "freed already");
	kt_list *report = NULL;
	EXPECT(kt_clean(NULL, true, &report, E), KT_STATUS_NULL_POINTER, "`options`");
	EXPECT(kt_recover(opts, NULL, true, &report, E), KT_STATUS_NULL_POINTER, "`target`");
	CHECK(report == NULL);

	/* Options freed: use after free and double free are reported. */
	EXPECT(kt_options_free(opts, E), KT_STATUS_OK, "");
	EXPECT(kt_options_free(opts, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_options_set_namespace(opts, "dev", E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_session_connect(opts, &session, E), KT_STATUS_INVALID_HANDLE, "freed already");
	CHECK(session == NULL);

	return finish("bad_input");
}
