package portproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kt.dev/testbed/internal/netnsdial"
	"kt.dev/testbed/internal/testnetns"
)

func TestCheckListen(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:6443", "127.1.2.3:0", "[::ffff:127.0.0.1]:80"} {
		if err := CheckListen(ok); err != nil {
			t.Errorf("CheckListen(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:1", ":6443", "10.88.0.1:6443", "[::]:1", "[::1]:1", "localhost:6443", "127.0.0.1"} {
		if err := CheckListen(bad); err == nil {
			t.Errorf("CheckListen(%q) = nil, want an error", bad)
		}
	}
}

func TestRefusesNonLoopbackListen(t *testing.T) {
	var stderr bytes.Buffer
	code := run([]string{"--netns", "/run/netns/none", "--listen", "0.0.0.0:1", "--target", "10.88.0.1:6443"}, &stderr, nil)
	if code != 2 || !strings.Contains(stderr.String(), "refusing to listen outside 127.0.0.0/8") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	_, err := New(Config{NetNS: "/proc/self/ns/net", Forwards: []Forward{{Listen: "0.0.0.0:1", Target: "127.0.0.1:1"}}})
	if err == nil || !strings.Contains(err.Error(), "refusing to listen outside 127.0.0.0/8") {
		t.Fatalf("New: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--netns", "x", "--listen", "127.0.0.1:1"},
		{"--netns", "x", "--listen", "127.0.0.1:1", "--target", "kubernetes:443"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr, nil); code != 2 {
			t.Errorf("%v: exit %d, want 2; stderr:\n%s", args, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	code := run([]string{"--netns", "ktlab-does-not-exist", "--listen", "127.0.0.1:0", "--target", "10.88.0.1:6443"}, &stderr, nil)
	if code != 1 || !strings.Contains(stderr.String(), "/run/netns/ktlab-does-not-exist") {
		t.Errorf("missing netns: exit %d, stderr:\n%s", code, stderr.String())
	}
}

// markServer listens on the namespace's loopback; for each connection it reads
// everything until EOF, answers "netns:" + the data, and half-closes, so the
// reply proves both where the connection ended up and that half-close works.
func markServer(t *testing.T, ns string) net.Listener {
	t.Helper()
	l, err := netnsdial.ListenInNetNS(ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				data, err := io.ReadAll(c)
				if err != nil {
					return
				}
				c.Write([]byte("netns:"))
				c.Write(data)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return l
}

func roundTrip(t *testing.T, addr string, payload []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Error(err)
		return
	}
	want := append([]byte("netns:"), payload...)
	if !bytes.Equal(got, want) {
		t.Errorf("got %d bytes (prefix %q), want %d bytes", len(got), got[:min(len(got), 16)], len(want))
	}
}

func TestForwardIntoNetNS(t *testing.T) {
	ns := testnetns.New(t)
	l := markServer(t, ns)

	// The target is the namespace's own loopback: only a dial made inside the
	// namespace reaches it.
	p, err := New(Config{NetNS: ns, Forwards: []Forward{{Listen: "127.0.0.1:0", Target: l.Addr().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	addr := p.Addrs()[0].String()

	big := make([]byte, 4<<20)
	rand.Read(big)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 0 {
				roundTrip(t, addr, big)
			} else {
				roundTrip(t, addr, []byte("hello "+strings.Repeat("x", i)))
			}
		}()
	}
	roundTrip(t, addr, nil) // empty request: half-close right away
	wg.Wait()

	// An idle open connection must not hold up shutdown.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte("pending"))
	time.Sleep(50 * time.Millisecond)

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(idle); err != nil {
		t.Fatalf("idle connection was not closed on shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("listener still accepts after shutdown")
	}
}

func TestMainSIGTERM(t *testing.T) {
	ns := testnetns.New(t)
	l := markServer(t, ns)
	var stderr bytes.Buffer
	ready := make(chan *Proxy, 1)
	exit := make(chan int, 1)
	go func() {
		exit <- run([]string{"--netns", ns, "--listen", "127.0.0.1:0", "--target", l.Addr().String(), "--debug"}, &stderr,
			func(p *Proxy) { ready <- p })
	}()
	var p *Proxy
	select {
	case p = <-ready:
	case code := <-exit:
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	roundTrip(t, p.Addrs()[0].String(), []byte("via main"))
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM: %s", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "connection opened") {
		t.Errorf("--debug did not log the connection:\n%s", stderr.String())
	}
}
