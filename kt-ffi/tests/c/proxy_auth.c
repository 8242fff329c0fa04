/* A session whose proxies require per-session credentials (kt_options_set_proxy_auth),
 * against the lab: the proxy URLs and the env carry `user:password@`; a plain HTTP
 * request through the proxy without Proxy-Authorization gets 407 with a Basic
 * challenge, with a wrong password 407 too, with the URL's credentials (Basic) the
 * echo's reply. The SOCKS5 proxy answers a client offering only "no authentication"
 * with "no acceptable methods". Usage: proxy_auth KUBECONFIG NAMESPACE. Prints
 * SESSION_ID=<id> for the caller. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#define E err, sizeof err

static int dial(uint16_t port) {
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("connect");
		exit(2);
	}
	return fd;
}

static void write_all(int fd, const void *data, size_t n) {
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(fd, (const char *)data + off, n - off);
		if (w <= 0) {
			perror("write");
			exit(2);
		}
		off += (size_t)w;
	}
}

/* Sends `request` to 127.0.0.1:port and reads the whole reply into `buf`. */
static void http(uint16_t port, const char *request, char *buf, size_t len) {
	int fd = dial(port);
	write_all(fd, request, strlen(request));
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, buf + got, len - 1 - got);
		if (r <= 0 || (got += (size_t)r) == len - 1)
			break;
	}
	buf[got] = '\0';
	close(fd);
}

/* Standard base64 of `in` (RFC 4648, padded) into `out`. */
static void base64(const char *in, char *out) {
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(in), o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)(unsigned char)in[i + 1] << 8;
		if (i + 2 < n)
			v |= (uint32_t)(unsigned char)in[i + 2];
		out[o++] = abc[(v >> 18) & 63];
		out[o++] = abc[(v >> 12) & 63];
		out[o++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? abc[v & 63] : '=';
	}
	out[o] = '\0';
}

/* A plain GET of http://echo.<ns>/<path> through the HTTP proxy, with `auth` (a
 * Proxy-Authorization value) unless NULL. */
static void get(uint16_t port, const char *ns, const char *path, const char *auth, char *buf, size_t len) {
	char request[1024], header[512] = "";
	if (auth)
		snprintf(header, sizeof header, "Proxy-Authorization: %s\r\n", auth);
	snprintf(request, sizeof request,
		 "GET http://echo.%s/%s HTTP/1.1\r\nHost: echo.%s\r\n%sConnection: close\r\n\r\n", ns, path,
		 ns, header);
	http(port, request, buf, len);
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE\n", argv[0]);
		return 2;
	}
	const char *kubeconfig = argv[1], *ns = argv[2];
	kt_options *opts = NULL;
	kt_session *s = NULL;

	EXPECT(kt_options_set_proxy_auth(NULL, true, E), KT_STATUS_NULL_POINTER, "options");
	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, kubeconfig, E));
	REQUIRE_OK(kt_options_set_namespace(opts, ns, E));
	REQUIRE_OK(kt_options_set_timeout(opts, KT_TIMEOUT_POD_READY, 120000, E));
	REQUIRE_OK(kt_options_set_proxy_auth(opts, true, E));
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	EXPECT(kt_options_free(opts, E), KT_STATUS_OK, "");
	const char *id = NULL;
	REQUIRE_OK(kt_session_id(s, &id, E));
	printf("SESSION_ID=%s\n", id);
	fflush(stdout);

	/* The URLs carry the credentials: http://user:password@127.0.0.1:port. */
	kt_addr proxy, socks5;
	const char *http_url = NULL, *socks5_url = NULL;
	EXPECT(kt_session_http_proxy_addr(s, &proxy, E), KT_STATUS_OK, "");
	EXPECT(kt_session_socks5_addr(s, &socks5, E), KT_STATUS_OK, "");
	EXPECT(kt_session_http_proxy_url(s, &http_url, E), KT_STATUS_OK, "");
	EXPECT(kt_session_socks5_url(s, &socks5_url, E), KT_STATUS_OK, "");
	if (!http_url || !socks5_url) {
		fprintf(stderr, "FATAL: no proxy URLs\n");
		return 2;
	}
	char userinfo[256] = "";
	const char *at = strchr(http_url, '@');
	CHECK(strncmp(http_url, "http://", 7) == 0 && at != NULL);
	if (at && at - http_url - 7 < (long)sizeof userinfo)
		memcpy(userinfo, http_url + 7, (size_t)(at - http_url - 7));
	CHECK(strchr(userinfo, ':') != NULL);
	CHECK(strcmp(at ? at + 1 : "", proxy.text) == 0);
	char want[512];
	snprintf(want, sizeof want, "socks5h://%s@%s", userinfo, socks5.text);
	CHECK(strcmp(socks5_url, want) == 0);

	/* The env has the same URLs. */
	kt_list *env = NULL;
	const char *value = NULL;
	EXPECT(kt_session_env(s, &env, E), KT_STATUS_OK, "");
	EXPECT(kt_list_find(env, "HTTP_PROXY", &value, E), KT_STATUS_OK, "");
	CHECK(value && strcmp(value, http_url) == 0);
	EXPECT(kt_list_find(env, "ALL_PROXY", &value, E), KT_STATUS_OK, "");
	CHECK(value && strcmp(value, socks5_url) == 0);
	EXPECT(kt_list_free(env, E), KT_STATUS_OK, "");

	/* Without credentials, and with a wrong password: 407 and the Basic challenge. */
	static char reply[65536];
	get(proxy.port, ns, "no-credentials", NULL, reply, sizeof reply);
	printf("without credentials: %.200s\n", reply);
	CHECK(strncmp(reply, "HTTP/1.1 407", 12) == 0);
	CHECK(strstr(reply, "proxy-authenticate: Basic realm=\"kt\"") != NULL ||
	      strstr(reply, "Proxy-Authenticate: Basic realm=\"kt\"") != NULL);
	char wrong[300], token[512], auth[600];
	snprintf(wrong, sizeof wrong, "%s-wrong", userinfo);
	base64(wrong, token);
	snprintf(auth, sizeof auth, "Basic %s", token);
	get(proxy.port, ns, "wrong-password", auth, reply, sizeof reply);
	CHECK(strncmp(reply, "HTTP/1.1 407", 12) == 0);

	/* With the URL's credentials: the echo's reply. */
	base64(userinfo, token);
	snprintf(auth, sizeof auth, "Basic %s", token);
	get(proxy.port, ns, "with-credentials", auth, reply, sizeof reply);
	printf("with credentials: %.300s\n", reply);
	CHECK(strstr(reply, " 200 ") != NULL && strstr(reply, "/with-credentials") != NULL);
	CHECK(strstr(reply, ns) != NULL);

	/* SOCKS5 offered only "no authentication": no acceptable methods (0xff). */
	int fd = dial(socks5.port);
	unsigned char hello[] = {5, 1, 0}, answer[2] = {0, 0};
	write_all(fd, hello, sizeof hello);
	CHECK(read(fd, answer, 2) == 2 && answer[0] == 5 && answer[1] == 0xff);
	close(fd);

	EXPECT(kt_session_close(s, E), KT_STATUS_OK, "");
	EXPECT(kt_session_http_proxy_url(s, &http_url, E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_session_free(s, E), KT_STATUS_OK, "");
	return finish("proxy_auth");
}
