/* A program that forgets to clean up: one session is freed without a close, the
 * other is neither closed nor freed, and main returns. libkt's exit handler must
 * close the open one and wait for the freed one's removal, so that nothing of either
 * is left in the cluster once the process has ended (the caller checks).
 * Usage: exit_without_close KUBECONFIG NAMESPACE. Prints FREED_ID=<id> and
 * OPEN_ID=<id>. */
#include "check.h"

#define E err, sizeof err

static kt_session *connect_one(kt_options *opts, const char *key) {
	kt_session *s = NULL;
	const char *id = NULL;
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	REQUIRE_OK(kt_session_id(s, &id, E));
	printf("%s=%s\n", key, id);
	fflush(stdout);
	return s;
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE\n", argv[0]);
		return 2;
	}
	kt_options *opts = NULL;
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, argv[1], E));
	REQUIRE_OK(kt_options_set_namespace(opts, argv[2], E));
	kt_session *freed = connect_one(opts, "FREED_ID");
	kt_session *left_open = connect_one(opts, "OPEN_ID");
	(void)left_open;
	EXPECT(kt_options_free(opts, E), KT_STATUS_OK, "");
	/* Freed without a close: the removal starts in the background. */
	EXPECT(kt_session_free(freed, E), KT_STATUS_OK, "");
	return finish("exit_without_close");
}
