/* The same failures as the other kt front ends, with the same kinds: a missing
 * namespace is KT_STATUS_NOT_FOUND (kind not_found) and an RBAC refusal is
 * KT_STATUS_FORBIDDEN (kind forbidden), each with a message that says what to do;
 * nothing is created and the out-pointer stays NULL.
 * Usage: same_failure ADMIN_KUBECONFIG MISSING_NAMESPACE SCOPED_KUBECONFIG OTHER_NAMESPACE
 * (the scoped kubeconfig has kt's Role in its own namespace only; OTHER_NAMESPACE
 * exists and is not its own). */
#include "check.h"

#define E err, sizeof err

static kt_status connect_as(const char *kubeconfig, const char *ns, kt_session **s) {
	kt_options *opts = NULL;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, kubeconfig, E));
	REQUIRE_OK(kt_options_set_namespace(opts, ns, E));
	REQUIRE_OK(kt_options_set_timeout(opts, KT_TIMEOUT_POD_READY, 60000, E));
	kt_status st = kt_session_connect(opts, s, E);
	char keep[sizeof err];
	memcpy(keep, err, sizeof err);
	REQUIRE_OK(kt_options_free(opts, E));
	memcpy(err, keep, sizeof err);
	return st;
}

int main(int argc, char **argv) {
	if (argc != 5) {
		fprintf(stderr, "usage: %s ADMIN_KUBECONFIG MISSING_NAMESPACE SCOPED_KUBECONFIG OTHER_NAMESPACE\n",
			argv[0]);
		return 2;
	}
	kt_session *s = (kt_session *)&argv;

	/* A namespace that does not exist, as a user allowed to see that. */
	EXPECT(connect_as(argv[1], argv[2], &s), KT_STATUS_NOT_FOUND, "does not exist");
	CHECK(s == NULL);
	CHECK(strstr(err, argv[2]) != NULL);
	CHECK(strstr(err, "kubectl create namespace") != NULL);
	CHECK(strcmp(kt_status_name(KT_STATUS_NOT_FOUND), "KT_STATUS_NOT_FOUND") == 0);

	/* A namespace the user's RBAC does not cover. */
	s = (kt_session *)&argv;
	EXPECT(connect_as(argv[3], argv[4], &s), KT_STATUS_FORBIDDEN, "forbidden");
	CHECK(s == NULL);
	CHECK(strstr(err, "kt-core/rbac/connect.yaml") != NULL);
	CHECK(strstr(err, argv[4]) != NULL);
	return finish("same_failure");
}
