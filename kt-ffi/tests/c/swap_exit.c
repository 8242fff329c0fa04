/* A swap (or, with `mesh`, a mesh) the program leaves open: connect, swap deploy/echo
 * or mesh svc/echo (nothing listens locally: the check is off), then return from
 * main without closing or freeing either. libkt's exit handler must put the Service
 * back and remove the swap's or mesh's and the session's objects before the process
 * ends.
 * Usage: swap_exit KUBECONFIG NAMESPACE [mesh]. Prints SESSION_ID=<id> and
 * SWAP_ID=<id> (MESH_ID=<id>). */
#include "check.h"

#define E err, sizeof err

int main(int argc, char **argv) {
	if (argc != 3 && !(argc == 4 && strcmp(argv[3], "mesh") == 0)) {
		fprintf(stderr, "usage: swap_exit KUBECONFIG NAMESPACE [mesh]\n");
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
	if (argc == 4) {
		kt_mesh_options *mo = NULL;
		REQUIRE_OK(kt_mesh_options_new(&mo, E));
		REQUIRE_OK(kt_mesh_options_set_check_local(mo, false, E));
		kt_mesh *mesh = NULL;
		REQUIRE_OK(kt_session_mesh(s, "svc/echo", NULL, "18080:80", mo, &mesh, E));
		REQUIRE_OK(kt_mesh_options_free(mo, E));
		REQUIRE_OK(kt_mesh_id(mesh, &id, E));
		printf("MESH_ID=%s\n", id);
		fflush(stdout);
		return finish("swap_exit mesh");
	}
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
