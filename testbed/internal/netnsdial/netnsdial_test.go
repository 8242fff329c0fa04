package netnsdial

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"kt.dev/testbed/internal/testnetns"
)

func TestListenerInNetNSIsReachableOnlyFromThatNamespace(t *testing.T) {
	ns := testnetns.New(t)

	ln, err := ListenInNetNS(ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	// From the test's own namespace the port is either closed or served by
	// something else; it must not be our echo listener.
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if n, _ := io.ReadFull(c, buf); n == 4 && string(buf) == "ping" {
			t.Fatalf("dialing %s from the test's namespace reached the listener inside %s", addr, ns)
		}
		c.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialInNetNS(ctx, ns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "hello" {
		t.Fatalf("echo returned %q", buf)
	}
}

func TestDialInNetNSReportsRefusedConnection(t *testing.T) {
	ns := testnetns.New(t)
	// Find a port that is free inside the namespace, then close it.
	ln, err := ListenInNetNS(ns, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if c, err := DialInNetNS(context.Background(), ns, "tcp", addr); err == nil {
		c.Close()
		t.Fatal("dial to a closed port succeeded")
	}
}

func TestHostNamesAreRejected(t *testing.T) {
	if _, err := DialInNetNS(context.Background(), "/proc/self/ns/net", "tcp", "localhost:80"); err == nil {
		t.Fatal("a host name was accepted")
	}
}

func TestEveryThreadIsBackInTheOriginalNamespace(t *testing.T) {
	ns := testnetns.New(t)
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		ln, err := ListenInNetNS(ns, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // the thread exited meanwhile
		}
		if got != self {
			t.Fatalf("thread %s is in %s, want %s", task.Name(), got, self)
		}
	}
}
