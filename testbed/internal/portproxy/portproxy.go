// Package portproxy forwards TCP ports of the machine's loopback into a network
// namespace.
//
// The lab's API server exists only inside the lab's host namespace (DESIGN.md,
// Network safety). A Proxy listens on 127.0.0.0/8 in the namespace it was
// started in (the machine's root namespace) and, for each accepted connection,
// dials the target from inside the lab's namespace and copies bytes both ways
// with half-close: when one side finishes sending, the other side's write half
// is shut down and the remaining direction keeps flowing until it finishes
// too. No address, route or link is added anywhere: the proxy only owns
// sockets.
package portproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"kt.dev/testbed/internal/netnsdial"
)

// Forward is one listen → target pair.
type Forward struct {
	// Listen is a numeric address in 127.0.0.0/8, e.g. 127.0.0.1:6443. Port 0
	// picks a free port (see Proxy.Addrs).
	Listen string
	// Target is a numeric address as seen from inside the namespace, e.g. 10.88.0.1:6443.
	Target string
}

// Config describes a Proxy.
type Config struct {
	// NetNS is the path of the target network namespace (/run/netns/NAME);
	// a bare name is taken as /run/netns/NAME.
	NetNS    string
	Forwards []Forward
	// Logger receives a startup line per forward (info), one line per
	// connection (debug) and dial failures (warn). Nil discards everything.
	Logger *slog.Logger
	// DialTimeout bounds each connection attempt to a target; 0 means 10s.
	DialTimeout time.Duration
}

// NetNSPath turns a namespace name into its /run/netns path; paths are kept.
func NetNSPath(ns string) string {
	if ns == "" || strings.Contains(ns, "/") {
		return ns
	}
	return "/run/netns/" + ns
}

// CheckListen refuses a listen address outside 127.0.0.0/8: the proxy must
// never make the lab reachable from other machines.
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: want IP:PORT, e.g. 127.0.0.1:6443 (%v)", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("--listen %q: the host must be a numeric IPv4 address in 127.0.0.0/8, e.g. 127.0.0.1:%s", addr, port)
	}
	if !netip.MustParsePrefix("127.0.0.0/8").Contains(ip.Unmap()) {
		return fmt.Errorf("--listen %q: refusing to listen outside 127.0.0.0/8 (network safety: the lab must not be reachable from other machines); use 127.0.0.1:%s", addr, port)
	}
	return nil
}

// CheckTarget requires a numeric target address: the name would otherwise be
// resolved outside the namespace.
func CheckTarget(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--target %q: want IP:PORT, e.g. 10.88.0.1:6443 (%v)", addr, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("--target %q: the host must be a numeric IP address (names would be resolved outside the namespace)", addr)
	}
	return nil
}

// Proxy is a running set of forwards. Create it with New, run it with Serve.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	listeners []net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New validates cfg and binds every listen address; nothing is accepted
// until Serve.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Forwards) == 0 {
		return nil, errors.New("portproxy: nothing to forward; give at least one --listen ADDR --target ADDR pair")
	}
	if cfg.NetNS == "" {
		return nil, errors.New("portproxy: no network namespace; give --netns /run/netns/NAME")
	}
	cfg.NetNS = NetNSPath(cfg.NetNS)
	if _, err := os.Stat(cfg.NetNS); err != nil {
		return nil, fmt.Errorf("portproxy: network namespace %s: %w (is the lab up? `ip netns list` shows the existing namespaces)", cfg.NetNS, err)
	}
	for _, f := range cfg.Forwards {
		if err := CheckListen(f.Listen); err != nil {
			return nil, fmt.Errorf("portproxy: %w", err)
		}
		if err := CheckTarget(f.Target); err != nil {
			return nil, fmt.Errorf("portproxy: %w", err)
		}
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, conns: map[net.Conn]struct{}{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for _, f := range cfg.Forwards {
		l, err := net.Listen("tcp", f.Listen)
		if err != nil {
			p.closeListeners()
			return nil, fmt.Errorf("portproxy: %w (is another proxy or lab already running?)", err)
		}
		p.listeners = append(p.listeners, l)
	}
	return p, nil
}

// Addrs returns the bound listen addresses, in the order of Config.Forwards.
func (p *Proxy) Addrs() []net.Addr {
	out := make([]net.Addr, len(p.listeners))
	for i, l := range p.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Serve accepts and forwards connections until ctx is done, then closes the
// listeners and every open connection and returns nil once all have ended.
func (p *Proxy) Serve(ctx context.Context) error {
	for i, l := range p.listeners {
		target := p.cfg.Forwards[i].Target
		p.log.Info("forwarding", "listen", l.Addr().String(), "target", target, "netns", p.cfg.NetNS)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.acceptLoop(ctx, l, target)
		}()
	}
	<-ctx.Done()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.closeListeners()
	p.wg.Wait()
	return nil
}

func (p *Proxy) closeListeners() {
	for _, l := range p.listeners {
		l.Close()
	}
}

func (p *Proxy) acceptLoop(ctx context.Context, l net.Listener, target string) {
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure such as EMFILE: back off and keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "listen", l.Addr().String(), "err", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.handle(ctx, c, target)
		}()
	}
}

// track registers a connection so that shutdown can close it; false once
// shutdown has begun.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) handle(ctx context.Context, client net.Conn, target string) {
	from := client.RemoteAddr().String()
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	upstream, err := netnsdial.DialInNetNS(dctx, p.cfg.NetNS, "tcp", target)
	cancel()
	if err != nil {
		p.log.Warn("dial target failed; closing client connection", "from", from, "target", target, "err", err)
		return
	}
	if !p.track(upstream) {
		upstream.Close()
		return
	}
	defer p.untrack(upstream)

	p.log.Debug("connection opened", "from", from, "target", target)
	start := time.Now()
	up, down := Pipe(client, upstream)
	p.log.Debug("connection closed", "from", from, "target", target,
		"bytes_up", up, "bytes_down", down, "duration", time.Since(start).Round(time.Millisecond))
}

// Pipe copies a→b and b→a concurrently with half-close: when one direction
// reaches EOF, the write half of its destination is shut down and the other
// direction continues. If a direction fails (reset, closed), both connections
// are closed so that the other direction ends too. Pipe returns when both
// directions are done, with the byte counts a→b and b→a; it closes neither
// connection on the success path beyond the write-half shutdowns.
func Pipe(a, b net.Conn) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		aToB = copyHalf(b, a)
	}()
	bToA = copyHalf(a, b)
	wg.Wait()
	return aToB, bToA
}

type closeWriter interface{ CloseWrite() error }

func copyHalf(dst, src net.Conn) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		dst.Close()
		src.Close()
		return n
	}
	if cw, ok := dst.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			return n
		}
	}
	dst.Close()
	return n
}
