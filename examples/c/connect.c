/* kt from C: open a session into a cluster, GET http://echo.<namespace>/hello
 * through the session's HTTP proxy with a plain socket, print the reply, close.
 *
 * Build (after kt-ffi/install, or with PKG_CONFIG_PATH at a kt.pc):
 *     cc connect.c -o connect $(pkg-config --cflags --libs kt)
 * Run:
 *     ./connect [--kubeconfig FILE] [--namespace NS]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kt.h>

static char err[1024];

/* Prints what failed and exits. */
static void check(kt_status status, const char *what) {
	if (status != KT_STATUS_OK) {
		fprintf(stderr, "%s: %s: %s\n", what, kt_status_name(status), err);
		exit(1);
	}
}

/* Sends `request` to 127.0.0.1:port and prints the body of the reply. */
static int fetch(uint16_t port, const char *request) {
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in proxy = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &proxy.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&proxy, sizeof proxy) != 0) {
		perror("connecting to the HTTP proxy");
		return -1;
	}
	if (write(fd, request, strlen(request)) != (ssize_t)strlen(request)) {
		perror("sending the request");
		close(fd);
		return -1;
	}
	static char reply[65536];
	size_t got = 0;
	ssize_t n;
	while (got < sizeof reply - 1 && (n = read(fd, reply + got, sizeof reply - 1 - got)) > 0)
		got += (size_t)n;
	reply[got] = '\0';
	close(fd);
	const char *body = strstr(reply, "\r\n\r\n");
	printf("%s\n", body ? body + 4 : reply);
	return strstr(reply, " 200 ") ? 0 : -1;
}

int main(int argc, char **argv) {
	const char *kubeconfig = NULL, *ns = "default";
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--kubeconfig") == 0)
			kubeconfig = argv[i + 1];
		else if (strcmp(argv[i], "--namespace") == 0)
			ns = argv[i + 1];
	}

	kt_options *opts = NULL;
	check(kt_options_new(&opts, err, sizeof err), "options");
	if (kubeconfig)
		check(kt_options_set_kubeconfig(opts, kubeconfig, err, sizeof err), "kubeconfig");
	check(kt_options_set_namespace(opts, ns, err, sizeof err), "namespace");

	kt_session *session = NULL;
	check(kt_session_connect(opts, &session, err, sizeof err), "connect");
	kt_options_free(opts, NULL, 0);

	/* What connect did, as events (they are kept from the start). */
	kt_event *event = NULL;
	while (kt_session_next_event(session, 0, &event, NULL, 0) == KT_STATUS_OK) {
		const char *text = NULL;
		kt_event_get_text(event, &text, NULL, 0);
		fprintf(stderr, "kt: %s\n", text);
		kt_event_free(event, NULL, 0);
	}

	kt_addr proxy;
	check(kt_session_http_proxy_addr(session, &proxy, err, sizeof err), "http proxy");
	fprintf(stderr, "HTTP proxy: http://%s\n", proxy.text);
	char request[512];
	snprintf(request, sizeof request,
		 "GET http://echo.%s/hello HTTP/1.1\r\nHost: echo.%s\r\nConnection: close\r\n\r\n", ns, ns);
	int fetched = fetch(proxy.port, request);

	check(kt_session_close(session, err, sizeof err), "close");
	kt_session_free(session, NULL, 0);
	return fetched == 0 ? 0 : 1;
}
