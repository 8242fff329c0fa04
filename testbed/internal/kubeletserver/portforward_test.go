package kubeletserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	proxyutil "k8s.io/apimachinery/pkg/util/proxy"
	apiproxy "k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"kt.dev/testbed/internal/netnsdial"
	"kt.dev/testbed/internal/testnetns"
)

const forwardSize = 4 << 20

func newPortForwardServer(t *testing.T) (*testServer, int) {
	ns := testnetns.New(t)
	port := startEcho(t, ns)
	return startServer(t, &fakeRuntime{netns: ns}), port
}

// forwardWithClientGo runs client-go's port-forwarder (what kubectl
// port-forward runs) over dialer and returns the local port.
func forwardWithClientGo(t *testing.T, dialer httpstream.Dialer, podPort int) (local int, errc <-chan error) {
	t.Helper()
	stop := make(chan struct{})
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", podPort)}, stop, ready, io.Discard, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	ec := make(chan error, 1)
	go func() { ec <- pf.ForwardPorts() }()
	t.Cleanup(func() { close(stop) })
	select {
	case <-ready:
	case err := <-ec:
		t.Fatalf("port-forward failed: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("port-forward not ready")
	}
	ports, err := pf.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	return int(ports[0].Local), ec
}

// echoThrough sends data over a fresh connection to the local forwarded
// port, half-closes, and checks that exactly the same bytes come back.
func echoThrough(t *testing.T, localPort int, data []byte) {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", localPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the echo: %v (after %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo through the port-forward differs: %s", describeMismatch(got, data))
	}
}

func spdyDialer(t *testing.T, s *testServer, path string) httpstream.Dialer {
	transport, upgrader, err := spdy.RoundTripperFor(s.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(s.base + path)
	return spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
}

func TestPortForwardSPDYRelaysMiBsToPodLoopbackWithHalfClose(t *testing.T) {
	s, podPort := newPortForwardServer(t)
	local, _ := forwardWithClientGo(t, spdyDialer(t, s, "/portForward/default/pod1"), podPort)
	data := randomBytes(t, forwardSize)
	echoThrough(t, local, data)
	// Several connections over the same SPDY session, some concurrently.
	errs := make(chan string, 3)
	for i := 0; i < 3; i++ {
		go func() {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			msg := bytes.Repeat([]byte{byte('a' + i)}, 100000)
			go func() { c.Write(msg); c.(*net.TCPConn).CloseWrite() }()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Sprintf("concurrent connection %d: %v, %s", i, err, describeMismatch(got, msg))
				return
			}
			errs <- ""
		}()
	}
	for i := 0; i < 3; i++ {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}

func TestPortForwardSPDYWithPodUIDInPath(t *testing.T) {
	s, podPort := newPortForwardServer(t)
	local, _ := forwardWithClientGo(t, spdyDialer(t, s, "/portForward/default/pod1/uid1"), podPort)
	echoThrough(t, local, []byte("hello via uid path"))
}

func TestPortForwardToClosedPodPortClosesClientConnection(t *testing.T) {
	s, podPort := newPortForwardServer(t)
	// A port on the pod loopback where nothing listens (the echo port is the
	// only open one in the throwaway namespace).
	local, _ := forwardWithClientGo(t, spdyDialer(t, s, "/portForward/default/pod1"), podPort+1)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("the local connection was not closed: %v", err)
	}
	if len(b) != 0 {
		t.Fatalf("got %q from a closed port", b)
	}
}

// TestPortForwardToClosedPodPortReportsErrorOnErrorStream checks the
// protocol itself: the failure is written to the stream pair's error stream
// (client-go reports it and ends the session, when it is not racing the
// stream reset that follows).
func TestPortForwardToClosedPodPortReportsErrorOnErrorStream(t *testing.T) {
	s, podPort := newPortForwardServer(t)
	conn, proto, err := spdyDialer(t, s, "/portForward/default/pod1").Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if proto != portforward.PortForwardProtocolV1Name {
		t.Fatalf("negotiated %q", proto)
	}
	closedPort := strconv.Itoa(podPort + 1)
	h := http.Header{}
	h.Set(v1.StreamType, v1.StreamTypeError)
	h.Set(v1.PortHeader, closedPort)
	h.Set(v1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	errStream.Close()
	h.Set(v1.StreamType, v1.StreamTypeData)
	conn.CreateStream(h) // may already be reset when this returns
	msg := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(errStream)
		msg <- b
	}()
	select {
	case b := <-msg:
		if !strings.Contains(string(b), "nothing listening on localhost:"+closedPort) {
			t.Fatalf("error stream says %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing on the error stream")
	}
}

// TestPortForwardEndsPromptlyWhenPodClosesFirst: a pod server that sends a
// reply and closes must look closed to the client right away (client-go only
// closes its local connection once the forward returns).
func TestPortForwardEndsPromptlyWhenPodClosesFirst(t *testing.T) {
	ns := testnetns.New(t)
	ln, err := netnsdial.ListenInNetNS(ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-banner\r\n"))
			c.Close()
		}
	}()
	s := startServer(t, &fakeRuntime{netns: ns})
	local, _ := forwardWithClientGo(t, spdyDialer(t, s, "/portForward/default/pod1"), ln.Addr().(*net.TCPAddr).Port)
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		b, err := io.ReadAll(c) // never half-closes its own side
		c.Close()
		if err != nil || string(b) != "SSH-2.0-banner\r\n" {
			t.Fatalf("got %q, %v", b, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("EOF took %v", d)
		}
	}
}

// TestServeShutdownClosesUpgradedConnections: when Serve's context ends, live
// port-forward sessions are closed and Serve returns.
func TestServeShutdownClosesUpgradedConnections(t *testing.T) {
	s, podPort := newPortForwardServer(t)
	local, errc := forwardWithClientGo(t, spdyDialer(t, s, "/portForward/default/pod1"), podPort)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", local))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		t.Fatal(err)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("ForwardPorts ended without reporting the lost connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the port-forward session survived the server's shutdown")
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("forwarded connection not closed: %v", err)
	}
}

func TestPortForwardUnknownPodIs404(t *testing.T) {
	s, _ := newPortForwardServer(t)
	resp, err := s.httpClient(t).Post(s.base+"/portForward/default/nosuchpod", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
}

// wsPortForward speaks the v4 WebSocket port-forward protocol as kube-rs does
// (through an API server, which turns its "ports" parameter into the
// kubelet's "port").
func wsPortForward(t *testing.T, s *testServer, podPort int, data []byte) {
	t.Helper()
	// The kubelet's WebSocket code (golang.org/x/net/websocket) reads each
	// frame as a whole message, so messages must not be fragmented: the write
	// buffer is larger than any message sent here. (A real kubelet has the
	// same limit; kube-rs sends every message as one frame.)
	d := websocket.Dialer{
		TLSClientConfig:  s.pki.clientTLS(t),
		Subprotocols:     []string{"v4.channel.k8s.io"},
		HandshakeTimeout: 10 * time.Second,
		WriteBufferSize:  128 * 1024,
	}
	u := fmt.Sprintf("wss://%s/portForward/default/pod1?port=%d", s.addr, podPort)
	ws, resp, err := d.Dial(u, nil)
	if err != nil {
		t.Fatalf("websocket dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	if ws.Subprotocol() != "v4.channel.k8s.io" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}

	type result struct {
		data   []byte
		errMsg string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		first := map[byte]bool{}
		for len(r.data) < len(data) && r.errMsg == "" {
			ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				r.err = fmt.Errorf("after %d echoed bytes (channels seen %v): %w", len(r.data), first, err)
				break
			}
			if typ != websocket.BinaryMessage || len(msg) == 0 {
				continue
			}
			ch, payload := msg[0], msg[1:]
			if !first[ch] {
				// The first frame on each channel is the 2-byte little-endian port.
				first[ch] = true
				if len(payload) < 2 || binary.LittleEndian.Uint16(payload) != uint16(podPort) {
					r.err = fmt.Errorf("channel %d did not start with the port: %v", ch, payload)
					break
				}
				payload = payload[2:]
			}
			switch ch {
			case 0:
				r.data = append(r.data, payload...)
			case 1:
				if len(payload) > 0 {
					r.errMsg = string(payload)
				}
			}
		}
		res <- r
	}()
	const chunk = 32 * 1024
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		msg := append([]byte{0}, data[off:end]...)
		if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.errMsg != "" {
		t.Fatalf("error channel: %s", r.errMsg)
	}
	if !bytes.Equal(r.data, data) {
		t.Fatalf("echo through the WebSocket port-forward differs: %s", describeMismatch(r.data, data))
	}
}

func TestPortForwardWebSocketV4RelaysMiBs(t *testing.T) {
	s, podPort := newPortForwardServer(t)
	wsPortForward(t, s, podPort, randomBytes(t, forwardSize))
}

func TestPortForwardWebSocketWithoutPortsIs400(t *testing.T) {
	s, _ := newPortForwardServer(t)
	d := websocket.Dialer{TLSClientConfig: s.pki.clientTLS(t), Subprotocols: []string{"v4.channel.k8s.io"}}
	_, resp, err := d.Dial("wss://"+s.addr+"/portForward/default/pod1", nil)
	if err == nil {
		t.Fatal("websocket upgrade without ports succeeded")
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("response %v, want 400", resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "port") {
		t.Fatalf("400 body %q does not name the missing parameter", body)
	}
}

// TestPortForwardWebSocketTunnelThroughAPIServerProxy runs kubectl's default
// path since v1.31: client-go's SPDY-over-WebSocket dialer talks to the API
// server's tunneling handler (the same k8s.io/apiserver code, mounted here),
// which speaks SPDY to our server.
func TestPortForwardWebSocketTunnelThroughAPIServerProxy(t *testing.T) {
	s, podPort := newPortForwardServer(t)
	location, _ := url.Parse(s.base + "/portForward/default/pod1")
	transport := &http.Transport{TLSClientConfig: s.pki.clientTLS(t)}
	upgrade := proxyutil.NewUpgradeAwareHandler(location, transport, false, true, testResponder{t})
	apiserver := httptest.NewServer(apiproxy.NewTranslatingHandler(upgrade, apiproxy.NewTunnelingHandler(upgrade), wsstream.IsWebSocketRequestWithTunnelingProtocol))
	defer apiserver.Close()

	u, _ := url.Parse(apiserver.URL + "/api/v1/namespaces/default/pods/pod1/portforward")
	dialer, err := portforward.NewSPDYOverWebsocketDialer(u, &rest.Config{Host: apiserver.URL})
	if err != nil {
		t.Fatal(err)
	}
	local, _ := forwardWithClientGo(t, dialer, podPort)
	echoThrough(t, local, randomBytes(t, forwardSize))
}

type testResponder struct{ t *testing.T }

func (r testResponder) Error(w http.ResponseWriter, req *http.Request, err error) {
	r.t.Logf("proxy error: %v", err)
	http.Error(w, err.Error(), http.StatusBadGateway)
}
