/* VPN mode from C, run inside the lab's laptop network namespace (ip netns exec
 * ktlab-laptop): connect with VPN options (tun name, MTU, an extra excluded range,
 * system DNS left alone), read the device, routes and DNS details, then reach the
 * echo Service's ClusterIP with a plain socket and no proxy, close, and check the
 * device is gone. Usage: vpn_session KUBECONFIG NAMESPACE. Prints SESSION_ID=<id>. */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#define E err, sizeof err
#define TUN "ktffi0"

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE\n", argv[0]);
		return 2;
	}
	kt_options *opts = NULL;
	kt_vpn_options *vpn = NULL;
	kt_session *s = NULL;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, argv[1], E));
	REQUIRE_OK(kt_options_set_namespace(opts, argv[2], E));
	REQUIRE_OK(kt_options_set_timeout(opts, KT_TIMEOUT_POD_READY, 120000, E));
	REQUIRE_OK(kt_vpn_options_new(&vpn, E));
	REQUIRE_OK(kt_vpn_options_set_tun_name(vpn, TUN, E));
	REQUIRE_OK(kt_vpn_options_set_mtu(vpn, 9000, E));
	REQUIRE_OK(kt_vpn_options_add_exclude(vpn, "192.0.2.0/24", E));
	REQUIRE_OK(kt_vpn_options_set_dns(vpn, KT_DNS_MODE_OFF, NULL, E));
	REQUIRE_OK(kt_options_set_vpn(opts, vpn, E));
	REQUIRE_OK(kt_vpn_options_free(vpn, E));
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	REQUIRE_OK(kt_options_free(opts, E));
	const char *id = NULL;
	REQUIRE_OK(kt_session_id(s, &id, E));
	printf("SESSION_ID=%s\n", id);
	fflush(stdout);

	/* The VPN's details. */
	const char *device = NULL, *detail = NULL;
	kt_dns_mode mode = KT_DNS_MODE_AUTO;
	kt_list *routes = NULL;
	kt_addr dns;
	size_t n = 0;
	EXPECT(kt_session_vpn_device(s, &device, E), KT_STATUS_OK, "");
	CHECK(device && strcmp(device, TUN) == 0);
	CHECK(if_nametoindex(TUN) != 0);
	EXPECT(kt_session_vpn_dns(s, &mode, &detail, E), KT_STATUS_OK, "");
	CHECK(mode == KT_DNS_MODE_OFF);
	EXPECT(kt_session_dns_addr(s, &dns, E), KT_STATUS_OK, "");
	CHECK(dns.port != 0);
	EXPECT(kt_session_vpn_routes(s, &routes, E), KT_STATUS_OK, "");
	EXPECT(kt_list_len(routes, &n, E), KT_STATUS_OK, "");
	CHECK(n >= 1);
	for (size_t i = 0; i < n; i++) {
		const char *r = NULL;
		EXPECT(kt_list_get(routes, i, &r, E), KT_STATUS_OK, "");
		printf("route %s\n", r);
		CHECK(r && strchr(r, '/') != NULL && strncmp(r, "192.0.2.", 8) != 0);
	}
	EXPECT(kt_list_free(routes, E), KT_STATUS_OK, "");

	/* The echo Service's ClusterIP, reached with a plain socket: no proxy. */
	kt_list *ips = NULL;
	const char *ip = NULL;
	REQUIRE_OK(kt_session_resolve(s, "echo", &ips, E));
	REQUIRE_OK(kt_list_get(ips, 0, &ip, E));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(80)};
	CHECK(inet_pton(AF_INET, ip, &sa.sin_addr) == 1);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
	const char *req = "GET /through-the-vpn HTTP/1.0\r\nHost: echo\r\n\r\n";
	CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
	static char reply[65536];
	size_t got = 0;
	ssize_t r;
	while (got < sizeof reply - 1 && (r = read(fd, reply + got, sizeof reply - 1 - got)) > 0)
		got += (size_t)r;
	reply[got] = '\0';
	close(fd);
	printf("through the VPN to %s: %s\n", ip, reply);
	CHECK(strstr(reply, " 200 ") != NULL && strstr(reply, "/through-the-vpn") != NULL);
	EXPECT(kt_list_free(ips, E), KT_STATUS_OK, "");

	/* The VPN-up event names the device. */
	int saw_vpn_up = 0;
	kt_event *ev = NULL;
	while (kt_session_next_event(s, 0, &ev, E) == KT_STATUS_OK) {
		kt_event_kind kind;
		const char *field = NULL;
		REQUIRE_OK(kt_event_get_kind(ev, &kind, E));
		if (kind == KT_EVENT_KIND_VPN_UP) {
			saw_vpn_up = 1;
			EXPECT(kt_event_get_field(ev, "device", &field, E), KT_STATUS_OK, "");
			CHECK(field && strcmp(field, TUN) == 0);
		}
		REQUIRE_OK(kt_event_free(ev, E));
	}
	CHECK(saw_vpn_up);

	EXPECT(kt_session_close(s, E), KT_STATUS_OK, "");
	CHECK(if_nametoindex(TUN) == 0);
	EXPECT(kt_session_vpn_device(s, &device, E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_session_free(s, E), KT_STATUS_OK, "");
	return finish("vpn_session");
}
