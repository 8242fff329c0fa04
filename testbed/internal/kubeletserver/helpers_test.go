package kubeletserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"kt.dev/testbed/internal/netnsdial"
)

// startEcho runs a TCP echo server on 127.0.0.1 inside the namespace. When
// the peer half-closes, the echo half-closes too after sending everything.
func startEcho(t *testing.T, nsPath string) int {
	t.Helper()
	ln, err := netnsdial.ListenInNetNS(nsPath, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// fakeRuntime knows one pod, default/pod1, with one container, "app".
type fakeRuntime struct {
	netns string
	pid   int
	env   []string

	mu      sync.Mutex
	logPath string
	prevLog string
}

func (f *fakeRuntime) PodNetNSPath(ns, pod, uid string) (string, error) {
	if ns != "default" || pod != "pod1" || (uid != "" && uid != "uid1") {
		return "", ErrNotFound
	}
	return f.netns, nil
}

func (f *fakeRuntime) known(ns, pod, container string) bool {
	return ns == "default" && pod == "pod1" && (container == "" || container == "app")
}

func (f *fakeRuntime) ContainerPID(ns, pod, container string) (int, error) {
	if !f.known(ns, pod, container) {
		return 0, ErrNotFound
	}
	return f.pid, nil
}

func (f *fakeRuntime) ContainerEnv(ns, pod, container string) ([]string, error) {
	if !f.known(ns, pod, container) {
		return nil, ErrNotFound
	}
	return f.env, nil
}

func (f *fakeRuntime) ContainerLogPath(ns, pod, container string, previous bool) (string, error) {
	if !f.known(ns, pod, container) {
		return "", ErrNotFound
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.logPath
	if previous {
		p = f.prevLog
	}
	if p == "" {
		return "", ErrNotFound
	}
	return p, nil
}

func (f *fakeRuntime) setLogPath(p string) {
	f.mu.Lock()
	f.logPath = p
	f.mu.Unlock()
}

// testPKI is a CA with a serving certificate for 127.0.0.1 and a client
// certificate, like the API server's kubelet-client one.
type testPKI struct {
	dir                           string
	caPEM, clientCert, clientKey  []byte
	serverCertFile, serverKeyFile string
	caFile                        string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ktlab-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	p := &testPKI{dir: dir, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	sc, sk := issue(2, "ktlab-node", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.clientCert, p.clientKey = issue(3, "kube-apiserver-kubelet-client", x509.ExtKeyUsageClientAuth, nil)
	p.serverCertFile = filepath.Join(dir, "kubelet.crt")
	p.serverKeyFile = filepath.Join(dir, "kubelet.key")
	p.caFile = filepath.Join(dir, "ca.crt")
	for f, b := range map[string][]byte{p.serverCertFile: sc, p.serverKeyFile: sk, p.caFile: p.caPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// clientTLS is the TLS configuration of an API server talking to the kubelet.
func (p *testPKI) clientTLS(t *testing.T) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	cert, err := tls.X509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}
}

// testServer is a running Serve with its runtime and credentials.
type testServer struct {
	base string // https://127.0.0.1:port
	addr string
	pki  *testPKI
	rt   *fakeRuntime
	// stop ends Serve's context and waits for Serve to return.
	stop func() error
}

func (s *testServer) restConfig() *rest.Config {
	return &rest.Config{
		Host: s.base,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   s.pki.caPEM,
			CertData: s.pki.clientCert,
			KeyData:  s.pki.clientKey,
		},
	}
}

func (s *testServer) httpClient(t *testing.T) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: s.pki.clientTLS(t)}}
}

// startServer runs Serve on a free 127.0.0.1 port with client-certificate
// authentication, and stops it (checking that it returns) when the test ends.
func startServer(t *testing.T, rt *fakeRuntime) *testServer {
	t.Helper()
	pki := newTestPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Addr: addr, CertFile: pki.serverCertFile, KeyFile: pki.serverKeyFile, ClientCAFile: pki.caFile}, rt)
	}()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("Serve returned %v after its context ended", err)
			}
			return nil
		case <-time.After(15 * time.Second):
			return fmt.Errorf("Serve did not return within 15s after its context ended")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	s := &testServer{base: "https://" + addr, addr: addr, pki: pki, rt: rt, stop: stop}
	c := s.httpClient(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(s.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Serve failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server on %s not ready: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func describeMismatch(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d", i)
		}
	}
	return "equal"
}
