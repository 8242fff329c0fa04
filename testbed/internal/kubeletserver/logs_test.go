package kubeletserver

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newLogServer(t *testing.T, content string) (*testServer, string) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app-0.log")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	prev := filepath.Join(dir, "app-prev.log")
	if err := os.WriteFile(prev, []byte("from the previous run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return startServer(t, &fakeRuntime{logPath: path, prevLog: prev}), path
}

func getLogs(t *testing.T, s *testServer, pathAndQuery string) (int, string) {
	t.Helper()
	resp, err := s.httpClient(t).Get(s.base + pathAndQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestLogsWholeTailLimitAndPrevious(t *testing.T) {
	s, _ := newLogServer(t, "one\ntwo\nthree\nfour")
	for _, c := range []struct{ query, want string }{
		{"", "one\ntwo\nthree\nfour"},
		{"?tailLines=2", "three\nfour"},
		{"?tailLines=1", "four"},
		{"?tailLines=0", ""},
		{"?tailLines=100", "one\ntwo\nthree\nfour"},
		{"?tail=2", "three\nfour"},
		{"?tail=all", "one\ntwo\nthree\nfour"},
		{"?limitBytes=6", "one\ntw"},
		{"?tailLines=2&limitBytes=3", "thr"},
		{"?previous=true", "from the previous run\n"},
		{"?sinceSeconds=3600", "one\ntwo\nthree\nfour"},
		{"?sinceTime=2999-01-01T00:00:00Z", ""},
	} {
		code, body := getLogs(t, s, "/containerLogs/default/pod1/app"+c.query)
		if code != http.StatusOK || body != c.want {
			t.Errorf("query %q: %d %q, want 200 %q", c.query, code, body, c.want)
		}
	}
}

func TestLogsTailWithTrailingNewlineAndBigFile(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 20000; i++ {
		b.WriteString(strings.Repeat("x", 10) + "\n")
	}
	b.WriteString("last-but-one\nlast\n")
	s, _ := newLogServer(t, b.String())
	code, body := getLogs(t, s, "/containerLogs/default/pod1/app?tailLines=2")
	if code != http.StatusOK || body != "last-but-one\nlast\n" {
		t.Fatalf("%d %q", code, body)
	}
}

func TestLogsTimestampsPrefixEveryLine(t *testing.T) {
	s, path := newLogServer(t, "a\nb\n")
	mtime := time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)
	os.Chtimes(path, mtime, mtime)
	code, body := getLogs(t, s, "/containerLogs/default/pod1/app?timestamps=true")
	want := "2025-03-04T05:06:07.00000089Z a\n2025-03-04T05:06:07.00000089Z b\n"
	if code != http.StatusOK || body != want {
		t.Fatalf("%d %q, want %q", code, body, want)
	}
}

func TestLogsUnknownContainerOrRunIs404(t *testing.T) {
	s, path := newLogServer(t, "x\n")
	for _, p := range []string{
		"/containerLogs/default/pod1/nosuch",
		"/containerLogs/default/nosuchpod/app",
	} {
		if code, body := getLogs(t, s, p); code != http.StatusNotFound || !strings.Contains(body, "not found") {
			t.Errorf("%s: %d %q, want 404", p, code, body)
		}
	}
	os.Remove(path)
	if code, _ := getLogs(t, s, "/containerLogs/default/pod1/app"); code != http.StatusNotFound {
		t.Errorf("missing log file: %d, want 404", code)
	}
	if code, _ := getLogs(t, s, "/containerLogs/default/pod1/app?tailLines=x"); code != http.StatusBadRequest {
		t.Errorf("bad tailLines: %d, want 400", code)
	}
}

func TestLogsFollowStreamsAppendsAndEndsWithTheRun(t *testing.T) {
	s, path := newLogServer(t, "old1\nold2\n")
	resp, err := s.httpClient(t).Get(s.base + "/containerLogs/default/pod1/app?follow=true&tailLines=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 10)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no log line within 10s")
			return ""
		}
	}
	if l := next(); l != "old2" {
		t.Fatalf("first line %q, want old2", l)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("new1\n")
	if l := next(); l != "new1" {
		t.Fatalf("line %q, want new1", l)
	}
	f.WriteString("new2\n")
	if l := next(); l != "new2" {
		t.Fatalf("line %q, want new2", l)
	}

	// A new run starts: the last bytes of the old run are still sent, then
	// the stream ends.
	f.WriteString("final\n")
	newRun := filepath.Join(filepath.Dir(path), "app-1.log")
	os.WriteFile(newRun, []byte("second run\n"), 0o644)
	s.rt.setLogPath(newRun)
	if l := next(); l != "final" {
		t.Fatalf("line %q, want final", l)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end when the container's run ended")
	}
	if len(lines) != 0 {
		t.Fatalf("unexpected extra line %q", <-lines)
	}
}

func TestHealthzAndUnknownPaths(t *testing.T) {
	s, _ := newLogServer(t, "")
	if code, body := getLogs(t, s, "/healthz"); code != http.StatusOK || body != "ok" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	for _, p := range []string{"/", "/pods", "/stats/summary", "/containerLogs/default/pod1"} {
		if code, _ := getLogs(t, s, p); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
}

func TestClientWithoutCertificateIsRejected(t *testing.T) {
	s, _ := newLogServer(t, "")
	cfg := s.pki.clientTLS(t)
	cfg.Certificates = nil
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := c.Get(s.base + "/healthz")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("request without a client certificate got %d", resp.StatusCode)
	}
}
