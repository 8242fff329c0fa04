package kubeletserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

const (
	// streamIdleTimeout and streamCreationTimeout are the kubelet's defaults.
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
	// shutdownGrace bounds how long Serve waits for plain requests to finish
	// once its context is done; upgraded connections are closed right away.
	shutdownGrace = 5 * time.Second
)

// Config says where and how the kubelet API is served.
type Config struct {
	// Addr is the TCP listen address, for example 10.88.0.1:10250.
	Addr string
	// CertFile and KeyFile hold the serving certificate and its key (PEM).
	CertFile, KeyFile string
	// ClientCAFile, when set, makes client certificates mandatory: each must
	// verify against a CA in this PEM bundle (the API server presents its
	// kubelet-client certificate). Empty means no client authentication.
	ClientCAFile string
}

// Serve serves the kubelet API over HTTPS on cfg.Addr until ctx is done, then
// shuts down: request contexts are cancelled (ending log streams and killing
// exec'd processes), upgraded port-forward/exec connections are closed, and
// Serve returns nil. Any other failure (bad certificate, listen error) is
// returned as an error.
//
// Routes, as the API server proxies them to a kubelet:
//
//	GET|POST /portForward/{namespace}/{pod}[/{uid}]          SPDY or WebSocket port-forward
//	GET|POST /exec/{namespace}/{pod}[/{uid}]/{container}     exec (SPDY or WebSocket)
//	GET|POST /attach/...                                     501: not supported
//	GET      /containerLogs/{namespace}/{pod}/{container}    logs (see handleContainerLogs)
//	GET      /healthz                                        "ok"
//
// Everything else is 404.
func Serve(ctx context.Context, cfg Config, rt Runtime) error {
	if rt == nil {
		return errors.New("kubeletserver: nil Runtime")
	}
	tlsConfig, err := serverTLSConfig(cfg)
	if err != nil {
		return err
	}
	raw, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("kubeletserver: listen on %s: %w", cfg.Addr, err)
	}
	tracked := &trackingListener{Listener: raw, conns: map[net.Conn]struct{}{}}

	srv := &http.Server{
		Handler:           newHandler(rt),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		// HTTP/1.1 only: SPDY and WebSocket upgrades need it, and the API
		// server's kubelet client speaks it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     klogErrorLogger(),
	}

	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(tls.NewListener(tracked, tlsConfig)) }()
	klog.InfoS("kubelet API listening", "addr", raw.Addr().String(), "clientAuth", cfg.ClientCAFile != "")

	select {
	case err := <-errCh:
		tracked.closeAll()
		return fmt.Errorf("kubeletserver: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	// Hijacked (upgraded) connections are not tracked by http.Server.
	tracked.closeAll()
	<-errCh
	klog.InfoS("kubelet API stopped", "addr", raw.Addr().String())
	return nil
}

func serverTLSConfig(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("kubeletserver: load serving certificate %s / %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	c := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("kubeletserver: read client CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kubeletserver: no PEM certificate in client CA bundle %s", cfg.ClientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// newHandler builds the route table. It is separate from Serve so tests and
// other hosts can mount it.
func newHandler(rt Runtime) http.Handler {
	s := &server{rt: rt}
	mux := http.NewServeMux()
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		mux.HandleFunc(m+" /portForward/{ns}/{pod}", s.handlePortForward)
		mux.HandleFunc(m+" /portForward/{ns}/{pod}/{uid}", s.handlePortForward)
		mux.HandleFunc(m+" /exec/{ns}/{pod}/{container}", s.handleExec)
		mux.HandleFunc(m+" /exec/{ns}/{pod}/{uid}/{container}", s.handleExec)
		mux.HandleFunc(m+" /attach/{ns}/{pod}/{container}", s.handleAttach)
		mux.HandleFunc(m+" /attach/{ns}/{pod}/{uid}/{container}", s.handleAttach)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", s.handleContainerLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("%s is not served by the ktlab node agent's kubelet API", r.URL.Path), http.StatusNotFound)
	})
	return logRequests(mux)
}

type server struct {
	rt Runtime
}

func (s *server) handleAttach(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "attach is not implemented by the ktlab node agent (containers have no attachable console); use exec", http.StatusNotImplemented)
}

// writeLookupError answers a failed Runtime lookup: 404 for ErrNotFound,
// 500 otherwise.
func writeLookupError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, ErrNotFound) {
		http.Error(w, fmt.Sprintf("%s not found: %v", what, err), http.StatusNotFound)
		return
	}
	http.Error(w, fmt.Sprintf("looking up %s: %v", what, err), http.StatusInternalServerError)
}

// --- request logging ---

// statusRecorder remembers the response status for the request log. It
// passes through Flush and Hijack, and Unwrap lets http.ResponseController
// and k8s responsewriter.GetOriginal reach the real writer.
type statusRecorder struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer does not support hijacking")
	}
	s.hijacked = true
	return h.Hijack()
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 && isUpgrade(r) {
			// The WebSocket library writes its 101 on the hijacked connection.
			status = http.StatusSwitchingProtocols
		} else if status == 0 {
			status = http.StatusOK
		}
		klog.InfoS("kubelet API request", "method", r.Method, "path", r.URL.Path, "status", status,
			"duration", time.Since(start).Round(time.Millisecond), "remote", r.RemoteAddr)
	})
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return true
			}
		}
	}
	return false
}

// klogErrorLogger routes net/http's own messages (TLS handshake failures and
// the like) to klog.
func klogErrorLogger() *log.Logger { return log.New(klogWriter{}, "", 0) }

type klogWriter struct{}

func (klogWriter) Write(p []byte) (int, error) {
	klog.InfoS("kubelet API http server", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

// --- connection tracking ---

// trackingListener remembers every accepted connection so that Serve can
// close upgraded (hijacked) ones, which http.Server forgets, on shutdown.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	l.Listener.Close()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
