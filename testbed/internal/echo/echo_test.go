package echo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// syncBuffer is a bytes.Buffer safe for the server's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a server on free loopback ports until the test ends.
func start(t *testing.T, grace time.Duration) (*Server, *syncBuffer, context.CancelFunc, <-chan error) {
	t.Helper()
	logs := &syncBuffer{}
	s, err := Listen(Config{ListenAddress: "127.0.0.1", Pod: "echo-0", Namespace: "ns1", Log: logs, Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- s.Serve(ctx)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return s, logs, cancel, done
}

func getJSON(t *testing.T, c *http.Client, req *http.Request, v any) *http.Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s %s: body %q: %v", req.Method, req.URL, body, err)
		}
	}
	return resp
}

func TestPatternDocumented(t *testing.T) {
	want := []byte{0x07, 0x26, 0x45, 0x64, 0x83, 0xa2, 0xc1, 0xe0, 0xff, 0x1e, 0x3d}
	for i, b := range want {
		if PatternByte(uint64(i)) != b {
			t.Fatalf("PatternByte(%d) = %#x, package doc says %#x", i, PatternByte(uint64(i)), b)
		}
	}
	if PatternByte(256) != PatternByte(0) || PatternByte(257) != PatternByte(1) {
		t.Fatal("pattern does not repeat every 256 bytes")
	}
	if len(patternBlock)%256 != 0 {
		t.Fatal("patternBlock is not a whole number of periods")
	}
}

func checkPattern(t *testing.T, r io.Reader, n int64) {
	t.Helper()
	br := bufio.NewReaderSize(r, 1<<16)
	var i uint64
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", i, err)
		}
		if b != PatternByte(i) {
			t.Fatalf("byte %d = %#x, want %#x", i, b, PatternByte(i))
		}
		i++
	}
	if int64(i) != n {
		t.Fatalf("got %d bytes, want %d", i, n)
	}
}

func TestHTTP1(t *testing.T) {
	s, logs, _, _ := start(t, 0)
	base := "http://" + s.HTTPAddr().String()
	c := &http.Client{}

	// Echo document, header, keep-alive.
	var reused []bool
	for i := range 3 {
		req, _ := http.NewRequest("POST", base+"/a/b?x=1&y=two", strings.NewReader("hello"))
		req.Header.Add("X-Test", "v1")
		req.Header.Add("X-Test", "v2")
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) },
		}))
		var e Echo
		resp := getJSON(t, c, req, &e)
		if resp.StatusCode != 200 || resp.Header.Get("X-Echo-Pod") != "echo-0" {
			t.Fatalf("status %d, X-Echo-Pod %q", resp.StatusCode, resp.Header.Get("X-Echo-Pod"))
		}
		want := Echo{Method: "POST", Path: "/a/b", Query: "x=1&y=two", Proto: "HTTP/1.1", Host: s.HTTPAddr().String(),
			Pod: "echo-0", Namespace: "ns1", BodyBytes: 5}
		got := e
		got.Headers, got.Remote = nil, ""
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("request %d: got %+v\nwant %+v", i, got, want)
		}
		if strings.Join(e.Headers["X-Test"], ",") != "v1,v2" || !strings.HasPrefix(e.Remote, "127.0.0.1:") {
			t.Errorf("headers %v remote %q", e.Headers, e.Remote)
		}
	}
	if len(reused) != 3 || reused[0] || !reused[1] || !reused[2] {
		t.Errorf("keep-alive: connection reuse %v, want [false true true]", reused)
	}

	// /healthz
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}

	// /bytes
	for _, n := range []int64{0, 1, 255, 256, 65536, 65537, 5<<20 + 13} {
		resp, err := c.Get(base + "/bytes/" + strconv.FormatInt(n, 10))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.ContentLength != n {
			t.Fatalf("/bytes/%d: status %d, length %d", n, resp.StatusCode, resp.ContentLength)
		}
		checkPattern(t, resp.Body, n)
		resp.Body.Close()
	}
	resp, err = c.Head(base + "/bytes/9000000000")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ContentLength != 9000000000 {
		t.Errorf("HEAD /bytes/9000000000: length %d", resp.ContentLength)
	}
	resp, _ = c.Get(base + "/bytes/-1")
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("/bytes/-1: status %d, want 400", resp.StatusCode)
	}

	// /upload
	payload := make([]byte, 3<<20+7)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	req, _ := http.NewRequest("POST", base+"/upload", bytes.NewReader(payload))
	var u Upload
	getJSON(t, c, req, &u)
	if u.Bytes != int64(len(payload)) || u.SHA256 != hex.EncodeToString(sum[:]) || u.Pod != "echo-0" {
		t.Errorf("/upload: %+v", u)
	}
	req, _ = http.NewRequest("GET", base+"/upload", nil)
	if resp := getJSON(t, c, req, nil); resp.StatusCode != 405 {
		t.Errorf("GET /upload: status %d, want 405", resp.StatusCode)
	}

	// /delay
	t0 := time.Now()
	req, _ = http.NewRequest("GET", base+"/delay/150?k=v", nil)
	var e Echo
	getJSON(t, c, req, &e)
	if d := time.Since(t0); d < 150*time.Millisecond || e.Path != "/delay/150" || e.Query != "k=v" {
		t.Errorf("/delay/150: took %v, echo %+v", d, e)
	}

	// /status
	for _, code := range []int{201, 404, 418, 503} {
		req, _ = http.NewRequest("GET", base+"/status/"+strconv.Itoa(code), nil)
		var e Echo
		resp := getJSON(t, c, req, &e)
		if resp.StatusCode != code || e.Path != "/status/"+strconv.Itoa(code) || resp.Header.Get("X-Echo-Pod") != "echo-0" {
			t.Errorf("/status/%d: got %d %+v", code, resp.StatusCode, e)
		}
	}
	req, _ = http.NewRequest("GET", base+"/status/204", nil)
	if resp := getJSON(t, c, req, nil); resp.StatusCode != 204 {
		t.Errorf("/status/204: got %d", resp.StatusCode)
	}

	if !strings.Contains(logs.String(), "http POST /a/b?x=1&y=two from 127.0.0.1:") ||
		!strings.Contains(logs.String(), "echo: pod=echo-0 namespace=ns1 listening http=127.0.0.1:") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

func TestH2C(t *testing.T) {
	s, _, _, _ := start(t, 0)
	base := "http://" + s.HTTPAddr().String()

	// Prior knowledge.
	var dials int
	var mu sync.Mutex
	c := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			mu.Lock()
			dials++
			mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("PUT", base+"/h2?q=1", strings.NewReader("abc"))
			var e Echo
			resp := getJSON(t, c, req, &e)
			if resp.ProtoMajor != 2 || e.Proto != "HTTP/2.0" || e.BodyBytes != 3 || e.Query != "q=1" ||
				resp.Header.Get("X-Echo-Pod") != "echo-0" {
				t.Errorf("h2c: proto %s, echo %+v", resp.Proto, e)
			}
		}()
	}
	wg.Wait()
	resp, err := c.Get(base + "/bytes/1000003")
	if err != nil {
		t.Fatal(err)
	}
	checkPattern(t, resp.Body, 1000003)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if dials != 1 {
		t.Errorf("h2c used %d connections, want 1 (multiplexed)", dials)
	}

	// Upgrade: h2c from HTTP/1.1.
	conn, err := net.Dial("tcp", s.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Errorf("h2c upgrade: %q %v", status, err)
	}
}

func TestTCPEcho(t *testing.T) {
	s, logs, _, _ := start(t, 0)
	c, err := net.Dial("tcp", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite() // half-close: the echo must still arrive in full
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, sent %d (or contents differ)", len(got), len(payload))
	}
	time.Sleep(20 * time.Millisecond)
	if !strings.Contains(logs.String(), "tcp connection from 127.0.0.1:") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

func TestUDPEcho(t *testing.T) {
	s, _, _, _ := start(t, 0)
	c, err := net.Dial("udp", s.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65535)
	for _, size := range []int{0, 1, 512, 1400, 9000, 60000} {
		msg := make([]byte, size)
		rand.Read(msg)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("datagram of %d bytes came back as %d bytes", size, n)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	s, _, cancel, done := start(t, 700*time.Millisecond)
	base := "http://" + s.HTTPAddr().String()

	idle, err := net.Dial("tcp", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	h2 := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	inflight := make(chan error, 2)
	for _, c := range []*http.Client{http.DefaultClient, h2} {
		go func() {
			resp, err := c.Get(base + "/delay/300")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				err = fmt.Errorf("%T: %w", c.Transport, err)
			}
			inflight <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	cancel()
	for range 2 {
		if err := <-inflight; err != nil {
			t.Errorf("in-flight request failed during shutdown: %v", err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadAll(idle); err != nil {
		t.Errorf("idle TCP connection not closed at shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", s.HTTPAddr().String()); err == nil {
		t.Error("HTTP still accepts after shutdown")
	}
}

func TestMainEnvAndSIGTERM(t *testing.T) {
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	httpPort := free()
	env := map[string]string{
		"HTTP_PORT":      strconv.Itoa(httpPort), // used: no flag
		"TCP_PORT":       "not-a-port",           // ignored: the flag wins
		"UDP_PORT":       "0",
		"LISTEN_ADDRESS": "127.0.0.1",
		"POD_NAME":       "echo-main",
		"POD_NAMESPACE":  "nsx",
	}
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	ready := make(chan *Server, 1)
	exit := make(chan int, 1)
	go func() {
		exit <- run([]string{"--tcp-port", "0"}, func(k string) string { return env[k] }, stdout, stderr,
			func(s *Server) { ready <- s })
	}()
	var s *Server
	select {
	case s = <-ready:
	case code := <-exit:
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := s.HTTPAddr().String(); got != fmt.Sprintf("127.0.0.1:%d", httpPort) {
		t.Errorf("HTTP on %s, want port %d from HTTP_PORT", got, httpPort)
	}
	resp, err := http.Get("http://" + s.HTTPAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Echo-Pod") != "echo-main" {
		t.Errorf("X-Echo-Pod %q", resp.Header.Get("X-Echo-Pod"))
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM: %s", code, stderr.String())
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no exit within 3s of SIGTERM")
	}
	if !strings.Contains(stdout.String(), "http GET / from 127.0.0.1:") {
		t.Errorf("stdout:\n%s", stdout.String())
	}

	// A bad environment value is reported when no flag overrides it.
	if code := run(nil, func(k string) string { return map[string]string{"UDP_PORT": "x"}[k] }, io.Discard, stderr, nil); code != 2 ||
		!strings.Contains(stderr.String(), `UDP_PORT="x" is not a port number`) {
		t.Errorf("bad UDP_PORT: exit %d, stderr %s", code, stderr.String())
	}
}
