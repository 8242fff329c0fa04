// Package echo is the lab's echo test application (`ktlab echo`), the peer
// every end-to-end test talks to. It serves three protocols at once:
//
// # HTTP (default port 8080; HTTP/1.1 with keep-alive, and h2c)
//
// HTTP/2 over cleartext works both with prior knowledge (the client starts
// with the HTTP/2 preface) and with the HTTP/1.1 "Upgrade: h2c" dance. Every
// response carries the header "X-Echo-Pod: <pod name>".
//
//	GET  /healthz      200, body "ok" (text/plain).
//	ANY  /bytes/<n>    200, Content-Length n, application/octet-stream; the body is
//	                   the pattern below, streamed (n may be many GiB; nothing is
//	                   buffered). HEAD returns the headers only.
//	POST /upload       (or PUT) reads the whole body and answers
//	                   {"bytes": N, "sha256": "<lowercase hex>", "pod": ..., "namespace": ...}.
//	ANY  /delay/<ms>   waits ms milliseconds (at most 10 minutes), then echoes.
//	ANY  /status/<c>   echoes with status code c (200..599).
//	ANY  anything else 200 and the echo document:
//
//	{"method":"GET","path":"/a/b","query":"x=1&y=2","proto":"HTTP/1.1",
//	 "headers":{"Accept":["*/*"],...},"host":"svc:8080","pod":"echo-0",
//	 "namespace":"default","remote":"10.244.0.5:41234","body_bytes":0}
//
// "query" is the raw query string without "?"; "headers" uses Go's canonical
// header names (Host is in "host", not in "headers"); "body_bytes" counts the
// request body, which is read and discarded. "proto" is "HTTP/1.1" or "HTTP/2.0"
// (the request that carried "Upgrade: h2c" reports HTTP/1.1, as it was sent
// that way; its response and every later request on the connection use HTTP/2).
//
// # The /bytes pattern
//
// Byte i of the body (i counted from 0 at the first body byte) is
//
//	(i*31 + 7) mod 256
//
// so the body starts 07 26 45 64 83 a2 c1 e0 ff 1e 3d ... and repeats every 256
// bytes. Clients in any language can verify a download (or any slice of it, if
// they know its offset) without storing a reference copy.
//
// # TCP (default port 9000)
//
// Every byte received is sent back. When the client half-closes (FIN), the
// server finishes echoing what it has read and then closes its side.
//
// # UDP (default port 9001)
//
// Every datagram (up to 65535 bytes) is sent back unchanged to its sender.
//
// # Logs and shutdown
//
// Each HTTP request, TCP connection and UDP datagram logs one line to stdout
// (e.g. "http GET /path from 10.244.0.5:41234 -> 200 17B 1ms HTTP/1.1"), so
// `kubectl logs` shows the traffic. On SIGTERM the server stops accepting,
// lets in-flight requests and connections finish for up to two seconds, closes
// whatever is left and exits 0.
package echo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// PatternByte returns byte i of every /bytes/<n> response body.
func PatternByte(i uint64) byte { return byte(i*31 + 7) }

// patternBlock is a whole number of pattern periods (256 bytes), so writing
// it repeatedly continues the pattern seamlessly.
var patternBlock = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = PatternByte(uint64(i))
	}
	return b
}()

// Config configures a Server.
type Config struct {
	// ListenAddress is the IP to bind (default 0.0.0.0, which also covers the
	// pod's loopback). If it is a specific address that is not loopback, the
	// server binds 127.0.0.1 on the same ports as well.
	ListenAddress string
	// HTTPPort, TCPPort, UDPPort; 0 picks a free port (see the *Addr methods).
	HTTPPort, TCPPort, UDPPort int
	// Pod and Namespace are reported in responses.
	Pod, Namespace string
	// Log receives the access log; nil discards it.
	Log io.Writer
	// Grace bounds how long Serve, once its context ends, waits for in-flight
	// HTTP requests and TCP connections before closing them; 0 means 2s.
	Grace time.Duration
}

// Server runs the three echo services. Create with Listen, then Serve.
type Server struct {
	cfg  Config
	log  *log.Logger
	http *http.Server

	hosts         []string // bound IPs, as configured (for the startup line)
	httpLs, tcpLs []net.Listener
	udpCs         []net.PacketConn

	inflight atomic.Int64 // HTTP requests being handled

	mu       sync.Mutex
	tcpConns map[net.Conn]struct{}
	tcpWG    sync.WaitGroup
	closing  bool
}

// Listen binds every socket; nothing is served until Serve.
func Listen(cfg Config) (*Server, error) {
	if cfg.ListenAddress == "" {
		cfg.ListenAddress = "0.0.0.0"
	}
	if cfg.Grace == 0 {
		cfg.Grace = 2 * time.Second
	}
	ip := net.ParseIP(cfg.ListenAddress)
	if ip == nil {
		return nil, fmt.Errorf("echo: --listen-address %q is not an IP address; use e.g. 0.0.0.0", cfg.ListenAddress)
	}
	out := cfg.Log
	if out == nil {
		out = io.Discard
	}
	s := &Server{cfg: cfg, log: log.New(out, "", 0), tcpConns: map[net.Conn]struct{}{}}
	s.hosts = []string{cfg.ListenAddress}
	if !ip.IsUnspecified() && !ip.IsLoopback() {
		s.hosts = append(s.hosts, "127.0.0.1")
	}
	fail := func(err error) (*Server, error) {
		s.closeAll()
		return nil, fmt.Errorf("echo: %w (is the port in use? choose another with the flag or environment variable)", err)
	}
	// The first host decides the ports (they may be 0); the others reuse them.
	httpPort, tcpPort, udpPort := cfg.HTTPPort, cfg.TCPPort, cfg.UDPPort
	for _, h := range s.hosts {
		hl, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(httpPort)))
		if err != nil {
			return fail(err)
		}
		s.httpLs = append(s.httpLs, hl)
		httpPort = hl.Addr().(*net.TCPAddr).Port

		tl, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(tcpPort)))
		if err != nil {
			return fail(err)
		}
		s.tcpLs = append(s.tcpLs, tl)
		tcpPort = tl.Addr().(*net.TCPAddr).Port

		uc, err := net.ListenPacket("udp", net.JoinHostPort(h, strconv.Itoa(udpPort)))
		if err != nil {
			return fail(err)
		}
		s.udpCs = append(s.udpCs, uc)
		udpPort = uc.LocalAddr().(*net.UDPAddr).Port
	}

	h2s := &http2.Server{}
	s.http = &http.Server{
		Handler:           h2c.NewHandler(s.withCommon(http.HandlerFunc(s.route)), h2s),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          s.log,
	}
	// Lets Shutdown send GOAWAY on h2c connections too (they are hijacked
	// from net/http and would otherwise be invisible to it).
	if err := http2.ConfigureServer(s.http, h2s); err != nil {
		return fail(err)
	}
	return s, nil
}

// HTTPAddr returns the primary HTTP address.
func (s *Server) HTTPAddr() net.Addr { return s.httpLs[0].Addr() }

// TCPAddr returns the primary TCP echo address.
func (s *Server) TCPAddr() net.Addr { return s.tcpLs[0].Addr() }

// UDPAddr returns the primary UDP echo address.
func (s *Server) UDPAddr() net.Addr { return s.udpCs[0].LocalAddr() }

// Serve serves until ctx is done, then shuts down gracefully (see the package
// comment) and returns nil; it returns an error only if serving failed.
func (s *Server) Serve(ctx context.Context) error {
	s.log.Printf("echo: pod=%s namespace=%s listening http=%s tcp=%s udp=%s",
		s.cfg.Pod, s.cfg.Namespace, s.addrs(s.httpLs[0].Addr()), s.addrs(s.tcpLs[0].Addr()), s.addrs(s.udpCs[0].LocalAddr()))

	errc := make(chan error, len(s.httpLs)+len(s.tcpLs)+len(s.udpCs))
	var wg sync.WaitGroup
	for _, l := range s.httpLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("echo: http on %s: %w", l.Addr(), err)
			}
		}()
	}
	for _, l := range s.tcpLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveTCP(l)
		}()
	}
	for _, c := range s.udpCs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveUDP(c)
		}()
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.shutdown()
	wg.Wait()
	s.log.Printf("echo: stopped")
	return serveErr
}

// shutdown stops accepting, waits up to Grace for in-flight HTTP requests
// and TCP connections, then closes everything.
func (s *Server) shutdown() {
	deadline := time.Now().Add(s.cfg.Grace)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	for _, l := range s.tcpLs {
		l.Close()
	}
	for _, c := range s.udpCs {
		c.Close()
	}
	// Closes the HTTP listeners and idle connections, sends GOAWAY on h2c
	// connections, and waits for active HTTP/1 connections.
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	// h2c connections are hijacked: wait for their requests separately.
	for s.inflight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tcpDone := make(chan struct{})
	go func() {
		s.tcpWG.Wait()
		close(tcpDone)
	}()
	select {
	case <-tcpDone:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.tcpConns {
			c.Close()
		}
		s.mu.Unlock()
		<-tcpDone
	}
}

// closeAll releases every bound socket (used when Listen fails half way).
func (s *Server) closeAll() {
	for _, l := range s.httpLs {
		l.Close()
	}
	for _, l := range s.tcpLs {
		l.Close()
	}
	for _, c := range s.udpCs {
		c.Close()
	}
}

// addrs formats the bound hosts with a's port, e.g. "0.0.0.0:8080" (Go itself
// would print the dual-stack wildcard as "[::]:8080").
func (s *Server) addrs(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	var out []string
	for _, h := range s.hosts {
		out = append(out, net.JoinHostPort(h, port))
	}
	return strings.Join(out, ",")
}

// ---- TCP ----

func (s *Server) serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Printf("tcp accept on %s: %v", l.Addr(), err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.tcpConns[c] = struct{}{}
		s.tcpWG.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.tcpWG.Done()
			s.echoTCP(c)
			s.mu.Lock()
			delete(s.tcpConns, c)
			s.mu.Unlock()
		}()
	}
}

// echoTCP copies everything back; after the client's FIN it finishes and
// closes its own write side, then the connection.
func (s *Server) echoTCP(c net.Conn) {
	defer c.Close()
	from := c.RemoteAddr().String()
	s.log.Printf("tcp connection from %s", from)
	start := time.Now()
	n, err := io.Copy(c, c)
	if err == nil {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	if err != nil {
		s.log.Printf("tcp from %s closed after %dB %v: %v", from, n, time.Since(start).Round(time.Millisecond), err)
	} else {
		s.log.Printf("tcp from %s closed after %dB %v", from, n, time.Since(start).Round(time.Millisecond))
	}
}

// ---- UDP ----

func (s *Server) serveUDP(c net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Printf("udp read on %s: %v", c.LocalAddr(), err)
			continue
		}
		if _, err := c.WriteTo(buf[:n], from); err != nil {
			s.log.Printf("udp %dB from %s: reply failed: %v", n, from, err)
			continue
		}
		s.log.Printf("udp %dB from %s", n, from)
	}
}

// ---- HTTP ----

// statusRecorder captures the status code and body size for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and friends.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// withCommon sets X-Echo-Pod, counts in-flight requests and writes the access log.
func (s *Server) withCommon(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		start := time.Now()
		w.Header().Set("X-Echo-Pod", s.cfg.Pod)
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		s.log.Printf("http %s %s from %s -> %d %dB %v %s", r.Method, r.URL.RequestURI(), r.RemoteAddr,
			rec.status, rec.bytes, time.Since(start).Round(time.Millisecond), r.Proto)
	})
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	case strings.HasPrefix(p, "/bytes/"):
		s.bytes(w, r, strings.TrimPrefix(p, "/bytes/"))
	case p == "/upload":
		s.upload(w, r)
	case strings.HasPrefix(p, "/delay/"):
		ms, err := strconv.ParseInt(strings.TrimPrefix(p, "/delay/"), 10, 64)
		if err != nil || ms < 0 || ms > 600_000 {
			http.Error(w, "want /delay/<milliseconds>, 0..600000", http.StatusBadRequest)
			return
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		s.echo(w, r, http.StatusOK)
	case strings.HasPrefix(p, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(p, "/status/"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "want /status/<code>, 200..599", http.StatusBadRequest)
			return
		}
		s.echo(w, r, code)
	default:
		s.echo(w, r, http.StatusOK)
	}
}

// Echo is the JSON document the HTTP server answers with.
type Echo struct {
	Method    string              `json:"method"`
	Path      string              `json:"path"`
	Query     string              `json:"query"`
	Proto     string              `json:"proto"`
	Headers   map[string][]string `json:"headers"`
	Host      string              `json:"host"`
	Pod       string              `json:"pod"`
	Namespace string              `json:"namespace"`
	Remote    string              `json:"remote"`
	BodyBytes int64               `json:"body_bytes"`
}

func (s *Server) echo(w http.ResponseWriter, r *http.Request, code int) {
	n, _ := io.Copy(io.Discard, r.Body)
	doc := Echo{
		Method:    r.Method,
		Path:      r.URL.Path,
		Query:     r.URL.RawQuery,
		Proto:     r.Proto,
		Headers:   r.Header,
		Host:      r.Host,
		Pod:       s.cfg.Pod,
		Namespace: s.cfg.Namespace,
		Remote:    r.RemoteAddr,
		BodyBytes: n,
	}
	writeJSON(w, code, doc)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

// bytes streams n bytes of the pattern (see the package comment).
func (s *Server) bytes(w http.ResponseWriter, r *http.Request, arg string) {
	n, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want /bytes/<n> with n a non-negative integer", http.StatusBadRequest)
		return
	}
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	for n > 0 {
		chunk := patternBlock[:min(n, int64(len(patternBlock)))]
		k, err := w.Write(chunk)
		n -= int64(k)
		if err != nil {
			return // client went away
		}
	}
}

// Upload is the JSON document /upload answers with.
type Upload struct {
	Bytes     int64  `json:"bytes"`
	SHA256    string `json:"sha256"`
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "/upload takes POST or PUT with a body", http.StatusMethodNotAllowed)
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusOK, Upload{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil)), Pod: s.cfg.Pod, Namespace: s.cfg.Namespace})
}
