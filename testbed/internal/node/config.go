package node

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"kt.dev/testbed/internal/labnet"
)

// Config configures the node agent (`ktlab node`).
type Config struct {
	// Kubeconfig is the path of the node's kubeconfig (client certificate for
	// system:node:<NodeName>).
	Kubeconfig string
	// NodeName is the Node object's name.
	NodeName string
	// NodeIP is the node's InternalIP; the kubelet API listens on it.
	NodeIP string
	// StateDir holds everything the agent keeps on disk (see the package doc).
	StateDir string
	// ImagesFile is the image table (testbed/images.yaml).
	ImagesFile string
	// TLSCertFile and TLSKeyFile are the kubelet API's serving certificate.
	TLSCertFile, TLSKeyFile string
	// ClientCAFile verifies the API server's client certificate on the kubelet API.
	ClientCAFile string
	// Ktlab is the path of the ktlab binary itself: it runs containers with
	// `ktlab run-container` and is what `{ktlab}` means in the image table.
	Ktlab string
	// HostNetNS is the network namespace the agent must be running in.
	HostNetNS string
	// HostMountNS is the mount namespace in which pod network namespaces are
	// bind-mounted under /run/netns, so that they outlive the agent and are seen
	// by every later `ip netns exec`. Empty: the mount namespace of the agent's
	// parent process when it differs from the agent's own (the shell that ran
	// `ip netns exec`, which gives its child a private mount namespace), else the
	// agent's own.
	HostMountNS string
	// KubeletPort is the kubelet API port.
	KubeletPort int
	// StatusUpdateFrequency is how often the node status heartbeat is sent.
	StatusUpdateFrequency time.Duration
	// LeaseRenewInterval is how often the node Lease is renewed.
	LeaseRenewInterval time.Duration

	// podNSPrefix prefixes pod network namespace names (labnet.PodNSPrefix;
	// tests use their own so that they never touch a running lab).
	podNSPrefix string
}

// withDefaults fills unset fields and validates the rest.
func (c Config) withDefaults() (Config, error) {
	if c.NodeName == "" {
		c.NodeName = labnet.NodeName
	}
	if c.NodeIP == "" {
		c.NodeIP = labnet.NodeIP
	}
	if net.ParseIP(c.NodeIP) == nil {
		return c, fmt.Errorf("invalid node IP %q", c.NodeIP)
	}
	if c.StateDir == "" {
		return c, fmt.Errorf("a state directory is required")
	}
	if c.podNSPrefix == "" {
		c.podNSPrefix = labnet.PodNSPrefix
	}
	if c.HostNetNS == "" {
		c.HostNetNS = labnet.HostNS
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = labnet.KubeletPort
	}
	if c.StatusUpdateFrequency == 0 {
		c.StatusUpdateFrequency = 10 * time.Second
	}
	if c.LeaseRenewInterval == 0 {
		c.LeaseRenewInterval = 10 * time.Second
	}
	if c.Ktlab == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("finding the ktlab binary: %w", err)
		}
		c.Ktlab = exe
	}
	var err error
	for _, p := range []*string{&c.StateDir, &c.ImagesFile, &c.Ktlab} {
		if *p == "" {
			continue
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return c, err
		}
	}
	if c.ImagesFile == "" {
		return c, fmt.Errorf("an image table (--images) is required")
	}
	return c, nil
}
