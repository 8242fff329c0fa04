// Package netnsdial creates sockets inside another Linux network namespace.
//
// A socket belongs to the network namespace of the thread that created it and
// keeps it for its whole life, whatever thread later reads, writes or closes
// it. DialInNetNS and ListenInNetNS therefore switch one locked OS thread into
// the target namespace (setns(2)), create the socket there, and switch the
// thread back before releasing it. The returned net.Conn / net.Listener are
// ordinary Go objects that can be used from any goroutine.
//
// The caller needs CAP_SYS_ADMIN (the lab's node agent runs as root). Only
// numeric addresses are accepted: name resolution may run on other threads,
// which are not in the target namespace, so a host name would be resolved in
// the wrong place.
//
// The package depends on nothing but golang.org/x/sys so that both the
// kubelet-API server (port-forward) and the lab's port proxy can use it.
package netnsdial

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialInNetNS connects to addr (numeric "ip:port") over network ("tcp",
// "tcp4", "tcp6", "udp", ...) from inside the network namespace at nsPath
// (for example /run/netns/ktlab-p-0123abcd). 127.0.0.1 means the loopback of
// that namespace. ctx bounds the connection attempt only.
func DialInNetNS(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	if err := checkNumeric(addr, false); err != nil {
		return nil, err
	}
	c, err := inNetNS(nsPath, func() (io.Closer, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in netns %s: %w", network, addr, nsPath, err)
	}
	return c.(net.Conn), nil
}

// ListenInNetNS listens on addr (numeric "ip:port" or ":port") over network
// ("tcp", "tcp4", "tcp6", "unix") inside the network namespace at nsPath.
// Connections accepted by the listener come from that namespace.
func ListenInNetNS(nsPath, network, addr string) (net.Listener, error) {
	if err := checkNumeric(addr, true); err != nil && network != "unix" {
		return nil, err
	}
	c, err := inNetNS(nsPath, func() (io.Closer, error) {
		return net.Listen(network, addr)
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, addr, nsPath, err)
	}
	return c.(net.Listener), nil
}

// ListenPacketInNetNS is ListenInNetNS for packet sockets ("udp", "udp4", "udp6").
func ListenPacketInNetNS(nsPath, network, addr string) (net.PacketConn, error) {
	if err := checkNumeric(addr, true); err != nil {
		return nil, err
	}
	c, err := inNetNS(nsPath, func() (io.Closer, error) {
		return net.ListenPacket(network, addr)
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, addr, nsPath, err)
	}
	return c.(net.PacketConn), nil
}

// checkNumeric rejects host names (see the package comment).
func checkNumeric(addr string, allowEmptyHost bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("netnsdial: bad address %q: %w", addr, err)
	}
	if host == "" && allowEmptyHost {
		return nil
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("netnsdial: address %q must use a numeric IP (names would be resolved outside the namespace)", addr)
	}
	return nil
}

// inNetNS runs fn on a dedicated OS thread that is switched into the network
// namespace at nsPath for the duration of fn, and returns what fn made. It
// runs on a fresh goroutine so that, should switching back fail, the thread
// can be left locked and is then destroyed by the Go runtime when the
// goroutine exits, instead of returning to the pool in the wrong namespace.
func inNetNS(nsPath string, fn func() (io.Closer, error)) (io.Closer, error) {
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns: %w", err)
	}
	defer target.Close()

	type result struct {
		c   io.Closer
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Per-thread handle of the namespace this thread is in now.
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("open current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		c, fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Keep the thread locked: the runtime destroys it with this goroutine.
			if fnErr == nil {
				c.Close()
			}
			done <- result{err: fmt.Errorf("setns back to the original netns: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{c: c, err: fnErr}
	}()
	r := <-done
	return r.c, r.err
}
