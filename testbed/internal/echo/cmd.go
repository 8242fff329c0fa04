package echo

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// Main is `ktlab echo`:
//
//	ktlab echo [--http-port 8080] [--tcp-port 9000] [--udp-port 9001] [--listen-address 0.0.0.0]
//
// A flag given on the command line wins; otherwise the environment variables
// HTTP_PORT, TCP_PORT, UDP_PORT and LISTEN_ADDRESS apply; otherwise the
// defaults. The pod name comes from POD_NAME (else the host name), the
// namespace from POD_NAMESPACE. Logs go to stdout; it exits 0 after SIGTERM
// or SIGINT, 1 if serving fails, 2 on bad usage.
func Main(args []string) int {
	return run(args, os.Getenv, os.Stdout, os.Stderr, nil)
}

// run is Main with its environment and outputs injectable for tests; ready,
// if not nil, receives the server once it listens.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(*Server)) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpPort := fs.Int("http-port", 8080, "HTTP port (env HTTP_PORT)")
	tcpPort := fs.Int("tcp-port", 9000, "TCP echo port (env TCP_PORT)")
	udpPort := fs.Int("udp-port", 9001, "UDP echo port (env UDP_PORT)")
	listen := fs.String("listen-address", "0.0.0.0", "IP address to bind (env LISTEN_ADDRESS); 0.0.0.0 also covers the loopback, any other non-loopback address gets 127.0.0.1 added")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "echo: unexpected arguments %q\n", fs.Args())
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, e := range []struct {
		flag, env string
		dst       *int
	}{{"http-port", "HTTP_PORT", httpPort}, {"tcp-port", "TCP_PORT", tcpPort}, {"udp-port", "UDP_PORT", udpPort}} {
		v := getenv(e.env)
		if set[e.flag] || v == "" {
			continue
		}
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			fmt.Fprintf(stderr, "echo: %s=%q is not a port number (0..65535)\n", e.env, v)
			return 2
		}
		*e.dst = p
	}
	if v := getenv("LISTEN_ADDRESS"); v != "" && !set["listen-address"] {
		*listen = v
	}
	for name, p := range map[string]int{"--http-port": *httpPort, "--tcp-port": *tcpPort, "--udp-port": *udpPort} {
		if p < 0 || p > 65535 {
			fmt.Fprintf(stderr, "echo: %s %d is not a port number (0..65535)\n", name, p)
			return 2
		}
	}
	pod := getenv("POD_NAME")
	if pod == "" {
		pod, _ = os.Hostname()
	}

	s, err := Listen(Config{
		ListenAddress: *listen,
		HTTPPort:      *httpPort,
		TCPPort:       *tcpPort,
		UDPPort:       *udpPort,
		Pod:           pod,
		Namespace:     getenv("POD_NAMESPACE"),
		Log:           stdout,
	})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if ready != nil {
		ready(s)
	}
	if err := s.Serve(ctx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
