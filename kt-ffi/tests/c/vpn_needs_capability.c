/* VPN mode without CAP_NET_ADMIN (run it under `setpriv --inh-caps=-all
 * --bounding-set=-net_admin`): connect fails with KT_STATUS_NEEDS_CAPABILITY and a
 * message naming the capability, after every VPN option was accepted, and before
 * anything is created (the caller checks the namespace).
 * Usage: vpn_needs_capability KUBECONFIG NAMESPACE */
#include "check.h"

#define E err, sizeof err

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE\n", argv[0]);
		return 2;
	}
	kt_options *opts = NULL;
	kt_vpn_options *vpn = NULL;
	kt_session *s = (kt_session *)&opts;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, argv[1], E));
	REQUIRE_OK(kt_options_set_namespace(opts, argv[2], E));
	REQUIRE_OK(kt_vpn_options_new(&vpn, E));
	EXPECT(kt_vpn_options_add_include(vpn, "10.96.0.0/12", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_add_include(vpn, "10.244.0.0/16", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_add_exclude(vpn, "10.96.0.1/32", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_set_tun_name(vpn, "ktc0", E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_set_mtu(vpn, 9000, E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_set_dns(vpn, KT_DNS_MODE_OFF, NULL, E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_disable_discovery(vpn, E), KT_STATUS_OK, "");
	EXPECT(kt_options_set_vpn(opts, vpn, E), KT_STATUS_OK, "");
	EXPECT(kt_vpn_options_free(vpn, E), KT_STATUS_OK, "");

	EXPECT(kt_session_connect(opts, &s, E), KT_STATUS_NEEDS_CAPABILITY, "CAP_NET_ADMIN");
	CHECK(s == NULL);
	CHECK(strstr(err, "proxy mode") != NULL);
	EXPECT(kt_options_free(opts, E), KT_STATUS_OK, "");
	return finish("vpn_needs_capability");
}
