// Package labnet holds the lab's fixed network plan. Every address here exists
// only inside network namespaces the lab creates (DESIGN.md, Network safety);
// nothing is ever configured in the machine's root namespace.
package labnet

const (
	// HostNS is the namespace that plays the node: control plane, node agent,
	// kube-proxy and the host ends of every pod link live here.
	HostNS = "ktlab-host"
	// LaptopNS plays a developer laptop: it reaches the API server and nothing else.
	LaptopNS = "ktlab-laptop"
	// PodNSPrefix prefixes each pod's network namespace name.
	PodNSPrefix = "ktlab-p-"
	// PodLinkPrefix prefixes the host end of each pod's veth pair (max 15 chars total).
	PodLinkPrefix = "ktp"

	// NodeName is the single node's name.
	NodeName = "ktlab-node"
	// NodeIP is the node's InternalIP (on the loopback of HostNS); the API
	// server advertises it and the kubelet API listens on it.
	NodeIP = "10.88.0.1"
	// LaptopHostIP is the host end of the laptop link; LaptopIP the laptop's own.
	LaptopHostIP = "10.88.255.1"
	LaptopIP     = "10.88.255.2"
	// LaptopPrefixLen is the prefix length of the laptop link.
	LaptopPrefixLen = 30

	// ClusterCIDR is the pod range; the controller-manager allocates the node's podCIDR from it.
	ClusterCIDR = "10.244.0.0/16"
	// ServiceCIDR is the Service ClusterIP range.
	ServiceCIDR = "10.96.0.0/16"
	// APIServiceIP is the ClusterIP of the `kubernetes` Service.
	APIServiceIP = "10.96.0.1"
	// DNSServiceIP is the ClusterIP of the `kube-dns` Service.
	DNSServiceIP = "10.96.0.10"
	// ClusterDomain is the cluster DNS domain.
	ClusterDomain = "cluster.local"
	// PodGateway is the link-local next hop every pod routes through (Calico style:
	// /32 pod address, proxy ARP on the host end, one /32 route per pod in HostNS).
	PodGateway = "169.254.1.1"

	// APIPort is the API server's secure port in HostNS.
	APIPort = 6443
	// KubeletPort is the node agent's kubelet API port on NodeIP.
	KubeletPort = 10250
)
