/* What the inbound tests (swap.c, mesh.c) share: the local process, a local HTTP
 * server that answers every request with a token only it knows; GETs through a
 * local forward into the cluster; reading a handle's events. Include after check.h. */
#ifndef KT_TEST_INBOUND_H
#define KT_TEST_INBOUND_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char token[64];
static int server_fd = -1;

/* The local process: answers every request with the token, until the socket closes. */
static void *serve(void *arg) {
	(void)arg;
	for (;;) {
		int c = accept(server_fd, NULL, NULL);
		if (c < 0)
			return NULL;
		char buf[4096];
		ssize_t r = read(c, buf, sizeof buf);
		(void)r;
		char reply[256];
		int n = snprintf(reply, sizeof reply,
				 "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
				 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
				 strlen(token), token);
		ssize_t w = write(c, reply, (size_t)n);
		(void)w;
		close(c);
	}
}

/* Listens on 127.0.0.1 (a free port) and returns the port. */
static uint16_t start_server(void) {
	server_fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	socklen_t len = sizeof sa;
	if (server_fd < 0 || bind(server_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    listen(server_fd, 64) != 0 ||
	    getsockname(server_fd, (struct sockaddr *)&sa, &len) != 0) {
		perror("local server");
		exit(2);
	}
	pthread_t t;
	pthread_create(&t, NULL, serve, NULL);
	pthread_detach(t);
	return ntohs(sa.sin_port);
}

/* GET /from-c through 127.0.0.1:port with the extra header lines `headers` (each
 * ending in "\r\n", or ""); the whole reply in `buf` ("" when it failed). */
static void get(uint16_t port, const char *headers, char *buf, size_t len) {
	buf[0] = '\0';
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	struct timeval tv = {.tv_sec = 20};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		if (fd >= 0)
			close(fd);
		return;
	}
	char req[1024];
	int n = snprintf(req, sizeof req, "GET /from-c HTTP/1.0\r\nHost: echo\r\n%s\r\n", headers);
	ssize_t w = write(fd, req, (size_t)n);
	(void)w;
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
}

/* GETs (as `get`) through `port` until the reply contains `want` (a bounded number
 * of tries: kube-proxy programs a Service's new endpoints asynchronously). */
static int get_until(uint16_t port, const char *headers, const char *want, char *buf,
		     size_t len) {
	for (int i = 0; i < 120; i++) {
		get(port, headers, buf, len);
		if (strstr(buf, want) != NULL)
			return 1;
		sleep(1);
	}
	return 0;
}

/* A `kt_*_next_event` of one kind of handle. */
typedef kt_status (*next_event_fn)(const void *handle, uint64_t timeout_ms, kt_event **ev);

/* Reads every event `handle` has now (timeout 0) or, with `until`, until that kind;
 * returns a bit per kind seen. */
static unsigned long events(next_event_fn next, const void *handle, int until) {
	unsigned long seen = 0;
	for (;;) {
		kt_event *ev = NULL;
		kt_status st = next(handle, until >= 0 ? 120000 : 0, &ev);
		if (st != KT_STATUS_OK)
			return seen;
		kt_event_kind kind;
		const char *text = NULL;
		kt_event_get_kind(ev, &kind, err, sizeof err);
		kt_event_get_text(ev, &text, err, sizeof err);
		printf("event %d: %s\n", (int)kind, text);
		seen |= 1UL << kind;
		kt_event_free(ev, err, sizeof err);
		if ((int)kind == until)
			return seen;
	}
}

#endif
