package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"kt.dev/testbed/internal/labnet"
)

// Main is `ktlab node`: the node agent (or, with --cleanup-all, the cleanup
// of everything agents left behind). It returns the process exit status.
func Main(args []string) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	var cfg Config
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig of the node (client certificate for system:node:<name>)")
	fs.StringVar(&cfg.NodeName, "node-name", labnet.NodeName, "the Node's name")
	fs.StringVar(&cfg.NodeIP, "node-ip", labnet.NodeIP, "the node's InternalIP; the kubelet API listens on it")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "state directory (pods, logs, IP allocations), e.g. /run/ktlab/node")
	fs.StringVar(&cfg.ImagesFile, "images", "", "the image table (testbed/images.yaml)")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "kubelet API serving certificate (PEM)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-private-key-file", "", "kubelet API serving key (PEM)")
	fs.StringVar(&cfg.ClientCAFile, "client-ca-file", "", "CA bundle verifying kubelet API clients (the API server); empty: no client authentication")
	fs.StringVar(&cfg.Ktlab, "ktlab", "", "path of the ktlab binary (default: this executable)")
	fs.StringVar(&cfg.HostNetNS, "host-netns", labnet.HostNS, "network namespace the agent must run in")
	fs.StringVar(&cfg.HostMountNS, "host-mount-ns", "", "mount namespace file in which pod netns are mounted under /run/netns (default: the parent process's, when it differs from the agent's own)")
	fs.IntVar(&cfg.KubeletPort, "port", labnet.KubeletPort, "kubelet API port")
	fs.DurationVar(&cfg.StatusUpdateFrequency, "node-status-update-frequency", 0, "node status heartbeat interval (default 10s)")
	cleanup := fs.Bool("cleanup-all", false, "kill every pod process recorded in --state-dir, remove every pod netns, link, route and mount point, and exit")
	klog.InitFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: ktlab node --kubeconfig FILE --state-dir DIR --images FILE --tls-cert-file FILE --tls-private-key-file FILE [flags]\n       ktlab node --cleanup-all --state-dir DIR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ktlab node: unexpected arguments %q\n", fs.Args())
		return 2
	}
	defer klog.Flush()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if *cleanup {
		if err := CleanupAll(ctx, cfg.StateDir); err != nil {
			klog.Errorf("cleanup: %v", err)
			return 1
		}
		return 0
	}
	if cfg.Kubeconfig == "" || cfg.TLSCertFile == "" || cfg.TLSKeyFile == "" {
		fmt.Fprintln(os.Stderr, "ktlab node: --kubeconfig, --tls-cert-file and --tls-private-key-file are required")
		fs.Usage()
		return 2
	}
	if err := Run(ctx, cfg); err != nil {
		klog.Errorf("node agent: %v", err)
		return 1
	}
	return 0
}
