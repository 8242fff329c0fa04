package pki

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// Main is `ktlab pki`:
//
//	ktlab pki --dir DIR [--node-name ktlab-node] [--node-ip 10.88.0.1]
//	    [--api-host HOST ...] [--server https://10.88.0.1:6443] [--admin-server https://127.0.0.1:6443]
//
// It prints one line per file it creates and exits 0; 1 on failure (the
// message names the file to delete when an existing one does not fit), 2 on
// bad usage.
func Main(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	def := DefaultOptions("")
	fs := flag.NewFlagSet("pki", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "`DIR`ectory for certificates, keys and kubeconfigs (required; created 0700)")
	nodeName := fs.String("node-name", def.NodeName, "node name (node client certificate CN system:node:NAME; kubelet serving certificate DNS SAN)")
	nodeIP := fs.String("node-ip", def.NodeIP.String(), "node IP (SAN of the API server and kubelet serving certificates)")
	var apiHosts []string
	fs.Func("api-host", "extra API server certificate SAN, IP or DNS name (repeatable; 127.0.0.1, 10.96.0.1, the node IP, 10.88.255.1, kubernetes.default... and localhost are always in)",
		func(s string) error {
			if s == "" || (net.ParseIP(s) == nil && strings.ContainsAny(s, " /:")) {
				return fmt.Errorf("%q is neither an IP address nor a DNS name", s)
			}
			apiHosts = append(apiHosts, s)
			return nil
		})
	server := fs.String("server", def.Server, "API server URL in the components' kubeconfigs")
	adminServer := fs.String("admin-server", def.AdminServer, "API server URL in admin.kubeconfig")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pki: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "pki: --dir is required, e.g. ktlab pki --dir /var/lib/ktlab/pki")
		return 2
	}
	ip := net.ParseIP(*nodeIP)
	if ip == nil {
		fmt.Fprintf(stderr, "pki: --node-ip %q is not an IP address\n", *nodeIP)
		return 2
	}
	o := Options{
		Dir:         *dir,
		NodeName:    *nodeName,
		NodeIP:      ip,
		APIHosts:    append([]string{"127.0.0.1"}, apiHosts...),
		Server:      *server,
		AdminServer: *adminServer,
	}
	res, err := Generate(o)
	for _, f := range res.Created {
		fmt.Fprintf(stdout, "pki: wrote %s\n", f)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "pki: %s: %d files written, %d kept\n", *dir, len(res.Created), len(res.Kept))
	return 0
}
