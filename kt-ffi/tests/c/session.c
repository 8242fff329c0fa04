/* A whole session from C against the lab: connect with a scoped kubeconfig, read
 * the session's names and proxy addresses, HTTP GET through a TCP forward and
 * through the HTTP proxy with plain sockets, a UDP echo through a UDP forward and
 * through a UDP channel (datagrams without a local socket),
 * resolve, env, events until closed (read by a second thread while the first
 * closes), close (twice), use after close, free (twice).
 * Usage: session KUBECONFIG NAMESPACE. Prints SESSION_ID=<id> for the caller, which
 * checks that nothing labelled with it is left. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#define E err, sizeof err

/* Connects a TCP socket to 127.0.0.1:port. */
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

/* Sends `request` to 127.0.0.1:port and reads the whole reply into `buf`. */
static size_t http(uint16_t port, const char *request, char *buf, size_t len) {
	int fd = dial(port);
	size_t n = strlen(request), off = 0;
	while (off < n) {
		ssize_t w = write(fd, request + off, n - off);
		if (w <= 0) {
			perror("write");
			exit(2);
		}
		off += (size_t)w;
	}
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, buf + got, len - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == len - 1)
			break;
	}
	buf[got] = '\0';
	close(fd);
	return got;
}

/* One datagram to 127.0.0.1:port and its echo (a few tries: UDP may drop one). */
static int udp_echo(uint16_t port, const char *msg, char *reply, size_t len) {
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	for (int attempt = 0; attempt < 5; attempt++) {
		sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa, sizeof sa);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 5000) == 1) {
			ssize_t r = recv(fd, reply, len - 1, 0);
			if (r > 0) {
				reply[r] = '\0';
				close(fd);
				return 0;
			}
		}
	}
	close(fd);
	return -1;
}

/* Another thread reads the events while the main thread closes the session. */
struct watch {
	kt_session *s;
	int saw_closing, saw_closed, ended, other_status;
	char err[1024];
};

static void *watch_events(void *arg) {
	struct watch *w = arg;
	for (int i = 0; i < 100; i++) {
		kt_event *ev = NULL;
		kt_status st = kt_session_next_event(w->s, 30000, &ev, w->err, sizeof w->err);
		if (st == KT_STATUS_CLOSED) {
			w->ended = 1;
			break;
		}
		if (st != KT_STATUS_OK) {
			w->other_status = (int)st;
			break;
		}
		kt_event_kind kind;
		if (kt_event_get_kind(ev, &kind, NULL, 0) == KT_STATUS_OK) {
			w->saw_closing |= kind == KT_EVENT_KIND_CLOSING;
			w->saw_closed |= kind == KT_EVENT_KIND_CLOSED;
		}
		kt_event_free(ev, NULL, 0);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s KUBECONFIG NAMESPACE\n", argv[0]);
		return 2;
	}
	const char *kubeconfig = argv[1], *ns = argv[2];
	kt_options *opts = NULL;
	kt_session *s = NULL;

	REQUIRE_OK(kt_options_new(&opts, E));
	REQUIRE_OK(kt_options_set_kubeconfig(opts, kubeconfig, E));
	REQUIRE_OK(kt_options_set_namespace(opts, ns, E));
	REQUIRE_OK(kt_options_add_label(opts, "kt.dev/test", "c-session", E));
	REQUIRE_OK(kt_options_add_annotation(opts, "kt.dev/note", "from C", E));
	REQUIRE_OK(kt_options_set_timeout(opts, KT_TIMEOUT_POD_READY, 120000, E));
	REQUIRE_OK(kt_session_connect(opts, &s, E));
	/* The session no longer needs the options. */
	EXPECT(kt_options_free(opts, E), KT_STATUS_OK, "");

	/* Names. */
	const char *id = NULL, *got_ns = NULL, *pod = NULL, *dns = NULL;
	REQUIRE_OK(kt_session_id(s, &id, E));
	printf("SESSION_ID=%s\n", id);
	fflush(stdout);
	CHECK(strlen(id) == 8);
	EXPECT(kt_session_namespace(s, &got_ns, E), KT_STATUS_OK, "");
	CHECK(got_ns && strcmp(got_ns, ns) == 0);
	EXPECT(kt_session_pod_name(s, &pod, E), KT_STATUS_OK, "");
	CHECK(pod && strncmp(pod, "kt-shadow-", 10) == 0 && strcmp(pod + 10, id) == 0);
	EXPECT(kt_session_dns_server(s, &dns, E), KT_STATUS_OK, "");
	CHECK(dns && dns[0] != '\0');

	/* Proxy addresses; no VPN details in proxy mode. */
	kt_addr socks5, proxy, dns_addr;
	EXPECT(kt_session_socks5_addr(s, &socks5, E), KT_STATUS_OK, "");
	EXPECT(kt_session_http_proxy_addr(s, &proxy, E), KT_STATUS_OK, "");
	CHECK(strcmp(socks5.ip, "127.0.0.1") == 0 && socks5.port != 0);
	CHECK(strcmp(proxy.ip, "127.0.0.1") == 0 && proxy.port != 0 && proxy.port != socks5.port);
	char expect_text[KT_ADDR_TEXT_LEN];
	snprintf(expect_text, sizeof expect_text, "127.0.0.1:%u", (unsigned)proxy.port);
	CHECK(strcmp(proxy.text, expect_text) == 0);
	const char *device = NULL;
	EXPECT(kt_session_vpn_device(s, &device, E), KT_STATUS_NOT_FOUND, "proxy mode");
	EXPECT(kt_session_dns_addr(s, &dns_addr, E), KT_STATUS_NOT_FOUND, "proxy mode");

	/* A TCP forward to svc/echo:80 and a real HTTP GET through it. */
	kt_addr fwd;
	EXPECT(kt_session_forward(s, "svc/echo", 80, &fwd, E), KT_STATUS_OK, "");
	CHECK(strcmp(fwd.ip, "127.0.0.1") == 0 && fwd.port != 0);
	static char reply[65536];
	http(fwd.port, "GET /hello-from-c HTTP/1.0\r\nHost: echo\r\n\r\n", reply, sizeof reply);
	printf("through the forward: %s\n", reply);
	CHECK(strncmp(reply, "HTTP/1.", 7) == 0 && strstr(reply, " 200 ") != NULL);
	CHECK(strstr(reply, "/hello-from-c") != NULL);
	CHECK(strstr(reply, ns) != NULL);

	/* The same through the HTTP proxy, by the Service's cluster name. */
	char request[512];
	snprintf(request, sizeof request,
		 "GET http://echo.%s/via-proxy HTTP/1.1\r\nHost: echo.%s\r\nConnection: close\r\n\r\n", ns, ns);
	http(proxy.port, request, reply, sizeof reply);
	printf("through the HTTP proxy: %s\n", reply);
	CHECK(strstr(reply, " 200 ") != NULL && strstr(reply, "/via-proxy") != NULL);

	/* A UDP forward to the echo's UDP port. */
	kt_addr ufwd;
	EXPECT(kt_session_forward_udp(s, "echo", 9001, &ufwd, E), KT_STATUS_OK, "");
	char dgram[256];
	CHECK(udp_echo(ufwd.port, "datagram from C", dgram, sizeof dgram) == 0);
	CHECK(strstr(dgram, "datagram from C") != NULL);

	/* A UDP channel: datagrams straight from the program, no local socket. */
	kt_udp_channel *chan = NULL, *late = NULL;
	EXPECT(kt_session_udp_channel(s, "echo", 9001, &chan, E), KT_STATUS_OK, "");
	kt_addr peer;
	EXPECT(kt_udp_channel_peer_addr(chan, &peer, E), KT_STATUS_OK, "");
	CHECK(peer.port == 9001);
	const char *msg = "channel datagram from C";
	uint8_t got[256];
	size_t got_len = 0;
	int echoed = 0;
	for (int attempt = 0; attempt < 5 && !echoed; attempt++) {
		EXPECT(kt_udp_channel_send(chan, (const uint8_t *)msg, strlen(msg), E), KT_STATUS_OK, "");
		kt_status st = kt_udp_channel_recv(chan, got, sizeof got - 1, &got_len, 5000, E);
		if (st == KT_STATUS_OK) {
			got[got_len < sizeof got - 1 ? got_len : sizeof got - 1] = '\0';
			echoed = strstr((const char *)got, msg) != NULL;
		}
	}
	CHECK(echoed);
	/* A buffer too small: the first bytes, and the datagram's whole length. */
	EXPECT(kt_udp_channel_send(chan, (const uint8_t *)msg, strlen(msg), E), KT_STATUS_OK, "");
	uint8_t small[4];
	if (kt_udp_channel_recv(chan, small, sizeof small, &got_len, 5000, E) == KT_STATUS_OK)
		CHECK(got_len >= strlen(msg) && memcmp(small, got, sizeof small) == 0);
	EXPECT(kt_udp_channel_recv(chan, got, sizeof got, &got_len, 0, E), KT_STATUS_TIMEOUT, "no datagram");
	CHECK(got_len == 0);
	EXPECT(kt_udp_channel_send(chan, NULL, 3, E), KT_STATUS_NULL_POINTER, "data");
	EXPECT(kt_udp_channel_recv(chan, NULL, 8, &got_len, 0, E), KT_STATUS_NULL_POINTER, "buf");
	EXPECT(kt_udp_channel_send((kt_udp_channel *)s, (const uint8_t *)msg, 1, E), KT_STATUS_INVALID_HANDLE, "kt_session");
	EXPECT(kt_session_udp_channel(s, "echo", 0, &late, E), KT_STATUS_INVALID_ARGUMENT, "port 0");
	CHECK(late == NULL);
	/* Connect refused in the pod (kind `connect`, the same in every kt front end): the
	 * shadow's kernel refuses a UDP socket to the broadcast address (no SO_BROADCAST),
	 * and the open fails at once. */
	late = (kt_udp_channel *)&s;
	EXPECT(kt_session_udp_channel(s, "255.255.255.255", 9, &late, E), KT_STATUS_CONNECT,
	       "cannot connect to 255.255.255.255:9 from the shadow pod");
	CHECK(late == NULL);
	CHECK(strcmp(kt_status_name(KT_STATUS_CONNECT), "KT_STATUS_CONNECT") == 0);
	EXPECT(kt_udp_channel_free(chan, E), KT_STATUS_OK, "");
	EXPECT(kt_udp_channel_free(chan, E), KT_STATUS_INVALID_HANDLE, "freed already");
	/* One left open across the close below. */
	EXPECT(kt_session_udp_channel(s, "echo", 9001, &late, E), KT_STATUS_OK, "");

	/* Forward errors. */
	EXPECT(kt_session_forward(s, "svc/no-such-service", 80, &fwd, E), KT_STATUS_NOT_FOUND, "no-such-service");
	EXPECT(kt_session_forward(s, "pod/", 80, &fwd, E), KT_STATUS_INVALID_ARGUMENT, "invalid target");
	EXPECT(kt_session_forward(s, "echo", 0, &fwd, E), KT_STATUS_INVALID_ARGUMENT, "port 0");

	/* Resolve: IP addresses as strings in an owned list. */
	kt_list *ips = NULL;
	size_t n = 0;
	EXPECT(kt_session_resolve(s, "echo", &ips, E), KT_STATUS_OK, "");
	EXPECT(kt_list_len(ips, &n, E), KT_STATUS_OK, "");
	CHECK(n >= 1);
	for (size_t i = 0; i < n; i++) {
		const char *ip = NULL;
		unsigned char bin[16];
		EXPECT(kt_list_get(ips, i, &ip, E), KT_STATUS_OK, "");
		printf("echo resolves to %s\n", ip);
		CHECK(inet_pton(AF_INET, ip, bin) == 1 || inet_pton(AF_INET6, ip, bin) == 1);
	}
	const char *none = NULL;
	EXPECT(kt_list_get(ips, n, &none, E), KT_STATUS_INVALID_ARGUMENT, "out of range");
	EXPECT(kt_list_key(ips, 0, &none, E), KT_STATUS_NOT_FOUND, "no keys");
	EXPECT(kt_list_free(ips, E), KT_STATUS_OK, "");
	EXPECT(kt_list_free(ips, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_session_resolve(s, "no-such-name", &ips, E), KT_STATUS_NOT_FOUND, "does not resolve");
	CHECK(ips == NULL);

	/* Environment for a child process. */
	kt_list *env = NULL;
	EXPECT(kt_session_env(s, &env, E), KT_STATUS_OK, "");
	const char *http_proxy = NULL;
	EXPECT(kt_list_find(env, "HTTP_PROXY", &http_proxy, E), KT_STATUS_OK, "");
	char want[KT_ADDR_TEXT_LEN + 16];
	snprintf(want, sizeof want, "http://%s", proxy.text);
	CHECK(http_proxy && strcmp(http_proxy, want) == 0);
	EXPECT(kt_list_find(env, "NOT_THERE", &none, E), KT_STATUS_NOT_FOUND, "NOT_THERE");
	EXPECT(kt_list_len(env, &n, E), KT_STATUS_OK, "");
	int saw_all_proxy = 0;
	for (size_t i = 0; i < n; i++) {
		const char *k = NULL, *v = NULL;
		EXPECT(kt_list_key(env, i, &k, E), KT_STATUS_OK, "");
		EXPECT(kt_list_get(env, i, &v, E), KT_STATUS_OK, "");
		if (strcmp(k, "ALL_PROXY") == 0)
			saw_all_proxy = strncmp(v, "socks5h://", 10) == 0;
	}
	CHECK(saw_all_proxy);
	EXPECT(kt_list_free(env, E), KT_STATUS_OK, "");

	/* Events so far: connect progress up to the tunnel. */
	int saw_creating = 0, saw_tunnel_up = 0;
	for (;;) {
		kt_event *ev = NULL;
		kt_status st = kt_session_next_event(s, 0, &ev, E);
		if (st == KT_STATUS_TIMEOUT) {
			CHECK(ev == NULL);
			break;
		}
		CHECK(st == KT_STATUS_OK);
		if (st != KT_STATUS_OK)
			break;
		kt_event_kind kind;
		const char *text = NULL, *field = NULL;
		EXPECT(kt_event_get_kind(ev, &kind, E), KT_STATUS_OK, "");
		EXPECT(kt_event_get_text(ev, &text, E), KT_STATUS_OK, "");
		printf("event %d: %s\n", (int)kind, text);
		if (kind == KT_EVENT_KIND_CREATING) {
			saw_creating = 1;
			EXPECT(kt_event_get_field(ev, "pod", &field, E), KT_STATUS_OK, "");
			CHECK(field && strcmp(field, pod) == 0);
			EXPECT(kt_event_get_field(ev, "namespace", &field, E), KT_STATUS_OK, "");
			CHECK(field && strcmp(field, ns) == 0);
		}
		if (kind == KT_EVENT_KIND_TUNNEL_UP) {
			saw_tunnel_up = 1;
			EXPECT(kt_event_get_field(ev, "http_proxy", &field, E), KT_STATUS_OK, "");
			CHECK(field && strcmp(field, proxy.text) == 0);
			EXPECT(kt_event_get_field(ev, "node", &field, E), KT_STATUS_NOT_FOUND, "socks5, http_proxy");
		}
		EXPECT(kt_event_free(ev, E), KT_STATUS_OK, "");
		EXPECT(kt_event_free(ev, E), KT_STATUS_INVALID_HANDLE, "freed already");
	}
	CHECK(saw_creating && saw_tunnel_up);
	kt_event *ev = NULL;
	EXPECT(kt_session_next_event(s, 100, &ev, E), KT_STATUS_TIMEOUT, "no event within 100 ms");

	/* Close, twice, while another thread waits for events; then everything that
	 * needs the tunnel says closed. */
	struct watch w = {.s = s};
	pthread_t watcher;
	CHECK(pthread_create(&watcher, NULL, watch_events, &w) == 0);
	EXPECT(kt_session_close(s, E), KT_STATUS_OK, "");
	EXPECT(kt_session_close(s, E), KT_STATUS_OK, "");
	CHECK(pthread_join(watcher, NULL) == 0);
	if (w.other_status)
		fprintf(stderr, "event watcher: %s: %s\n", kt_status_name((uint32_t)w.other_status), w.err);
	CHECK(w.saw_closing && w.saw_closed && w.ended && !w.other_status);
	EXPECT(kt_session_forward(s, "svc/echo", 80, &fwd, E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_session_resolve(s, "echo", &ips, E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_session_socks5_addr(s, &socks5, E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_session_env(s, &env, E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_session_dns_server(s, &dns, E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_session_id(s, &id, E), KT_STATUS_OK, "");
	EXPECT(kt_udp_channel_send(late, (const uint8_t *)msg, strlen(msg), E), KT_STATUS_CLOSED, "closed");
	EXPECT(kt_udp_channel_free(late, E), KT_STATUS_OK, "");
	/* The event stream has ended. */
	EXPECT(kt_session_next_event(s, 100, &ev, E), KT_STATUS_CLOSED, "ended");
	EXPECT(kt_session_next_event(s, 0, &ev, E), KT_STATUS_CLOSED, "ended");
	CHECK(ev == NULL);

	/* Free, twice; then the handle is gone. */
	EXPECT(kt_session_free(s, E), KT_STATUS_OK, "");
	EXPECT(kt_session_free(s, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_session_id(s, &id, E), KT_STATUS_INVALID_HANDLE, "freed already");
	EXPECT(kt_session_close(s, E), KT_STATUS_INVALID_HANDLE, "freed already");

	return finish("session");
}
