/* A swap the program leaves open: connect, swap deploy/echo (nothing listens
 * locally: the check is off), then return from main without closing or freeing
 * either. libkt's exit handler must put the Service back and remove the swap's and
 * the session's objects before the process ends.
 * Usage: swap_exit KUBECONFIG NAMESPACE. Prints SESSION_ID=<id> and SWAP_ID=<id>. */
#include "check.h"

#define E err, sizeof err

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: swap_exit KUBECONFIG NAMESPACE\n");
		return 2;
	}
	kt_options *opts = NULL;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, argv[1], E));
	REQUIRE_OK(kt_options_set_namespace(opts, argv[2], E));
	kt_session *s = NULL;
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	REQUIRE_OK(kt_options_free(opts, E));
	const char *id = NULL;
	REQUIRE_OK(kt_session_id(s, &id, E));
	printf("SESSION_ID=%s\n", id);
	kt_swap_options *so = NULL;
	REQUIRE_OK(kt_swap_options_new(&so, E));
	REQUIRE_OK(kt_swap_options_set_check_local(so, false, E));
	kt_swap *swap = NULL;
	REQUIRE_OK(kt_session_swap(s, "deploy/echo", "18080:80", so, &swap, E));
	REQUIRE_OK(kt_swap_options_free(so, E));
	REQUIRE_OK(kt_swap_id(swap, &id, E));
	printf("SWAP_ID=%s\n", id);
	fflush(stdout);
	return finish("swap_exit");
}
