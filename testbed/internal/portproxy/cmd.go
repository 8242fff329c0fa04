package portproxy

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main is `ktlab portproxy`:
//
//	ktlab portproxy --netns /run/netns/ktlab-host \
//	    --listen 127.0.0.1:6443 --target 10.88.0.1:6443 [--listen ... --target ...] [--debug]
//
// --listen and --target are repeatable and paired in order. It runs until
// SIGTERM or SIGINT and then exits 0. Errors go to stderr with exit code 1
// (runtime) or 2 (usage).
func Main(args []string) int {
	return run(args, os.Stderr, nil)
}

// run is Main with its output and readiness hook injectable for tests; ready,
// if not nil, receives the proxy once it listens.
func run(args []string, stderr io.Writer, ready func(*Proxy)) int {
	fs := flag.NewFlagSet("portproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var listens, targets []string
	fs.Func("listen", "`IP:PORT` to listen on, in 127.0.0.0/8 only (repeatable, paired with --target in order)", func(s string) error {
		listens = append(listens, s)
		return nil
	})
	fs.Func("target", "`IP:PORT` to dial inside the namespace (repeatable)", func(s string) error {
		targets = append(targets, s)
		return nil
	})
	netns := fs.String("netns", "", "network namespace to dial targets in: `PATH` such as /run/netns/ktlab-host, or a bare name")
	debug := fs.Bool("debug", false, "log every connection")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ktlab portproxy --netns /run/netns/NAME --listen 127.0.0.1:PORT --target IP:PORT [--listen ... --target ...] [--debug]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portproxy: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if len(listens) != len(targets) {
		fmt.Fprintf(stderr, "portproxy: %d --listen but %d --target; give them in pairs\n", len(listens), len(targets))
		return 2
	}
	for i := range listens {
		err := CheckListen(listens[i])
		if err == nil {
			err = CheckTarget(targets[i])
		}
		if err != nil {
			fmt.Fprintf(stderr, "portproxy: %v\n", err)
			return 2
		}
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	cfg := Config{
		NetNS:  *netns,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "portproxy"),
	}
	for i := range listens {
		cfg.Forwards = append(cfg.Forwards, Forward{Listen: listens[i], Target: targets[i]})
	}
	p, err := New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if ready != nil {
		ready(p)
	}
	if err := p.Serve(ctx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
