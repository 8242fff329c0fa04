package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	kubeletevents "k8s.io/kubernetes/pkg/kubelet/events"

	"kt.dev/testbed/internal/labnet"
)

// podHostname is the pod's hostname: spec.hostname, else its name (at most
// 63 characters, as the kubelet truncates it).
func podHostname(pod *v1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// resolvConf renders the pod's resolv.conf for its dnsPolicy and dnsConfig.
// hostResolv is the node's own resolv.conf (for dnsPolicy Default).
func resolvConf(pod *v1.Pod, hostResolv string) string {
	var servers, searches, options []string
	switch pod.Spec.DNSPolicy {
	case v1.DNSNone:
	case v1.DNSDefault:
		for _, line := range strings.Split(hostResolv, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "nameserver":
				servers = append(servers, f[1])
			case "search":
				searches = append(searches, f[1:]...)
			case "options":
				options = append(options, f[1:]...)
			}
		}
	default: // ClusterFirst, ClusterFirstWithHostNet
		servers = []string{labnet.DNSServiceIP}
		searches = []string{
			pod.Namespace + ".svc." + labnet.ClusterDomain,
			"svc." + labnet.ClusterDomain,
			labnet.ClusterDomain,
		}
		options = []string{"ndots:5"}
	}
	if c := pod.Spec.DNSConfig; c != nil {
		servers = append(servers, c.Nameservers...)
		searches = append(searches, c.Searches...)
		for _, o := range c.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			// A dnsConfig option replaces one of the same name.
			kept := options[:0]
			for _, existing := range options {
				if name, _, _ := strings.Cut(existing, ":"); name != o.Name {
					kept = append(kept, existing)
				}
			}
			options = append(kept, opt)
		}
	}
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.String()
}

// hostsFile renders the pod's /etc/hosts as the kubelet does.
func hostsFile(pod *v1.Pod, podIP string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	host := podHostname(pod)
	if podIP != "" {
		if sub := pod.Spec.Subdomain; sub != "" {
			fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", podIP, host, sub, pod.Namespace, labnet.ClusterDomain, host)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", podIP, host)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, ha := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
		}
	}
	return b.String()
}

// writePodFiles writes resolv.conf, hosts and hostname into the pod's state
// directory.
func writePodFiles(pd podDir, pod *v1.Pod, podIP string) error {
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	return errors.Join(
		writeFileAtomic(pd.resolvConf(), []byte(resolvConf(pod, string(hostResolv))), 0o644),
		writeFileAtomic(pd.hostsFile(), []byte(hostsFile(pod, podIP)), 0o644),
		writeFileAtomic(pd.hostnameFile(), []byte(podHostname(pod)+"\n"), 0o644),
	)
}

// etcMounts are the pod-level files bind-mounted into every container, unless
// the container mounts something on the same path itself.
func etcMounts(pd podDir) []Mount {
	return []Mount{
		{Source: pd.resolvConf(), Target: "/etc/resolv.conf"},
		{Source: pd.hostsFile(), Target: "/etc/hosts"},
		{Source: pd.hostnameFile(), Target: "/etc/hostname"},
	}
}

// allMountPaths lists every path a pod's containers mount onto (real paths).
func allMountPaths(pod *v1.Pod) []string {
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		p = realPath(p)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, m := range []string{"/etc/resolv.conf", "/etc/hosts", "/etc/hostname"} {
		add(m)
	}
	for _, cs := range [][]v1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, vm := range c.VolumeMounts {
				add(vm.MountPath)
			}
			if c.WorkingDir != "" {
				add(c.WorkingDir)
			}
		}
	}
	return out
}

// realPath resolves the symlinks of the longest existing prefix of p.
func realPath(p string) string {
	p = filepath.Clean(p)
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// removeMountDirs removes the host paths run-container created as mount
// points for this pod (deepest first), unless another pod on disk mounts onto
// or below them; directories only when empty, files only when empty.
func removeMountDirs(state stateDir, pd podDir, self string) {
	created := readLines(pd.mountDirsFile())
	if len(created) == 0 {
		return
	}
	err := withMountLock(state.mountLock(), func() error {
		var others []string
		uids, _ := state.podUIDs()
		for _, uid := range uids {
			if string(uid) == self {
				continue
			}
			if m, err := state.pod(uid).readMeta(); err == nil {
				others = append(others, m.MountPaths...)
			}
		}
		for i := len(created) - 1; i >= 0; i-- {
			p := filepath.Clean(created[i])
			if p == "/" || usedBy(p, others) {
				continue
			}
			st, err := os.Lstat(p)
			if err != nil {
				continue
			}
			if st.IsDir() || (st.Mode().IsRegular() && st.Size() == 0) {
				if err := os.Remove(p); err == nil {
					klog.V(2).Infof("Removed mount point %s", p)
				}
			}
		}
		return nil
	})
	if err != nil {
		klog.Warningf("Removing mount points of %s: %v", pd.path(), err)
	}
}

// usedBy reports whether any of paths is p or lies below p.
func usedBy(p string, paths []string) bool {
	for _, q := range paths {
		if q == p || strings.HasPrefix(q, p+"/") {
			return true
		}
	}
	return false
}

// ensureSandbox sets up the pod's network namespace, IP and files.
func (w *podWorker) ensureSandbox(ctx context.Context, pod *v1.Pod) error {
	a := w.a
	if w.meta == nil {
		w.meta = &podMeta{
			Namespace: pod.Namespace,
			Name:      pod.Name,
			UID:       pod.UID,
			NetNS:     a.netnsName(pod.UID),
			Link:      podLinkName(pod.UID),
		}
	}
	m := w.meta
	m.MountPaths = allMountPaths(pod)
	m.InitContainers, m.Containers = nil, nil
	for _, c := range pod.Spec.InitContainers {
		m.InitContainers = append(m.InitContainers, c.Name)
	}
	for _, c := range pod.Spec.Containers {
		m.Containers = append(m.Containers, c.Name)
	}
	if err := os.MkdirAll(w.pd.path(), 0o755); err != nil {
		return err
	}
	if m.IP == "" {
		if err := w.pd.writeMeta(m); err != nil { // before anything exists to clean up
			return err
		}
		ip, err := a.ipam.Allocate(pod.UID)
		if err != nil {
			return err
		}
		m.IP = ip
	}
	if err := w.pd.writeMeta(m); err != nil {
		return err
	}
	if w.sandboxReady && isNSFS(netnsPath(m.NetNS)) {
		return nil
	}
	if !isNSFS(netnsPath(m.NetNS)) {
		// Running containers hold the pod's namespace even if its mount is
		// gone: mount that one again rather than making a new one.
		pid := w.liveWorkloadPID()
		if pid > 0 {
			if err := a.net.adoptNetNS(ctx, m.NetNS, pid); err != nil {
				klog.Warningf("Pod %s/%s: re-mounting its network namespace: %v", pod.Namespace, pod.Name, err)
			}
		}
		if w.sandboxReady && !isNSFS(netnsPath(m.NetNS)) {
			klog.Warningf("Pod %s/%s: network namespace %s disappeared; re-creating it", pod.Namespace, pod.Name, m.NetNS)
			w.event(pod, nil, v1.EventTypeNormal, kubeletevents.SandboxChanged, "Pod sandbox changed, it will be killed and re-created.")
		}
	}
	if err := a.net.setupPod(ctx, m.NetNS, m.Link, m.IP); err != nil {
		return err
	}
	if err := writePodFiles(w.pd, pod, m.IP); err != nil {
		return err
	}
	ino, err := nsInode(netnsPath(m.NetNS))
	if err != nil {
		return err
	}
	if !w.sandboxReady {
		klog.Infof("Pod %s/%s: network ready (netns %s, %s via %s)", pod.Namespace, pod.Name, m.NetNS, m.IP, m.Link)
	}
	w.netIno, w.sandboxReady = ino, true
	return nil
}

// teardownSandbox removes the pod's network and releases its IP.
func (w *podWorker) teardownSandbox(ctx context.Context) {
	m := w.meta
	if m == nil {
		return
	}
	if ino, err := nsInode(netnsPath(m.NetNS)); err == nil && isNSFS(netnsPath(m.NetNS)) {
		if n := killProcessesIn(ino, 0, 9); n > 0 {
			klog.Infof("Pod %s/%s: killed %d leftover processes in its network namespace", m.Namespace, m.Name, n)
		}
	}
	if err := w.a.net.teardownPod(ctx, m.NetNS, m.Link, m.IP); err != nil {
		klog.Warningf("Pod %s/%s: network teardown: %v", m.Namespace, m.Name, err)
	}
	if err := w.a.ipam.Release(m.UID); err != nil {
		klog.Warningf("Pod %s/%s: releasing %s: %v", m.Namespace, m.Name, m.IP, err)
	}
	if w.sandboxReady {
		klog.Infof("Pod %s/%s: network torn down", m.Namespace, m.Name)
	}
	w.sandboxReady = false
}

// liveWorkloadPID returns the PID of any running workload of the pod, or 0.
func (w *podWorker) liveWorkloadPID() int {
	for _, name := range w.containerNamesOnDisk() {
		if n := w.pd.latestRun(name); n >= 0 {
			if r := loadRun(w.pd, name, n); r.running() {
				return r.Workload.PID
			}
		}
	}
	return 0
}
