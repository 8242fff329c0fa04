package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"kt.dev/testbed/internal/labnet"
)

// podMTU is the MTU of both ends of every pod link.
const podMTU = "1500"

// netManager builds and removes pods' network plumbing by running `ip`.
// Every command names its namespace (`ip -n <ns>`), so nothing ever lands in
// the machine's root network namespace, whatever namespace the caller is in.
type netManager struct {
	// hostNS is the lab's host network namespace (the node).
	hostNS string
	// hostMountNS, if set, is the mount namespace in which `ip netns add` and
	// `ip netns delete` run (through nsenter), so that /run/netns mounts
	// persist beyond the agent's own private mount namespace.
	hostMountNS *os.File
}

// ip runs `ip args...` and returns its stdout.
func (n *netManager) ip(ctx context.Context, args ...string) ([]byte, error) {
	return runCmd(ctx, nil, "ip", args...)
}

// netnsCmd runs `ip netns <args>` in the host mount namespace.
func (n *netManager) netnsCmd(ctx context.Context, args ...string) error {
	if n.hostMountNS == nil {
		_, err := runCmd(ctx, nil, "ip", append([]string{"netns"}, args...)...)
		return err
	}
	argv := append([]string{"--mount=/proc/self/fd/3", "--", "ip", "netns"}, args...)
	_, err := runCmd(ctx, []*os.File{n.hostMountNS}, "nsenter", argv...)
	return err
}

// runCmd runs a command with a timeout and folds its stderr into the error.
func runCmd(ctx context.Context, extra []*os.File, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.ExtraFiles = extra
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return stdout.Bytes(), nil
}

// linkExists reports whether a link exists in a namespace.
func (n *netManager) linkExists(ctx context.Context, ns, link string) bool {
	_, err := n.ip(ctx, "-n", ns, "link", "show", "dev", link)
	return err == nil
}

// linkMAC returns a link's hardware address.
func (n *netManager) linkMAC(ctx context.Context, ns, link string) (string, error) {
	out, err := n.ip(ctx, "-j", "-n", ns, "link", "show", "dev", link)
	if err != nil {
		return "", err
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) == 0 || links[0].Address == "" {
		return "", fmt.Errorf("no hardware address for %s in %s", link, ns)
	}
	return links[0].Address, nil
}

// ensureNetNS creates the named network namespace unless it exists.
func (n *netManager) ensureNetNS(ctx context.Context, name string) error {
	path := netnsPath(name)
	if isNSFS(path) {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		// A stale file (its mount is gone): remove it before adding anew.
		_ = n.netnsCmd(ctx, "delete", name)
		_ = os.Remove(path)
	}
	if err := n.netnsCmd(ctx, "add", name); err != nil {
		return err
	}
	if !isNSFS(path) {
		return fmt.Errorf("network namespace %s was created but %s is not visible to the agent (mount propagation)", name, path)
	}
	return nil
}

// adoptNetNS mounts the network namespace of a live process (a pod's
// workload) at /run/netns/<name>, when that file lost its mount (the previous
// agent's mount namespace is gone). It never creates a new namespace.
func (n *netManager) adoptNetNS(ctx context.Context, name string, pid int) error {
	path := netnsPath(name)
	if isNSFS(path) {
		return nil
	}
	src := fmt.Sprintf("/proc/%d/ns/net", pid)
	if n.hostMountNS != nil {
		if _, err := runCmd(ctx, []*os.File{n.hostMountNS}, "nsenter", "--mount=/proc/self/fd/3", "--", "mount", "--bind", src, path); err != nil {
			return err
		}
	} else if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s on %s: %w", src, path, err)
	}
	if !isNSFS(path) {
		return fmt.Errorf("re-mounting network namespace %s did not take effect", name)
	}
	klog.Infof("Re-mounted network namespace %s from process %d", name, pid)
	return nil
}

// podSysctls are the network sysctls of every pod namespace.
var podSysctls = []struct{ key, value string }{
	{"net/ipv4/ip_unprivileged_port_start", "0"},
	{"net/ipv4/ping_group_range", "0 2147483647"},
}

// setupPod creates (idempotently) the pod's network: netns with podSysctls
// and lo up, a veth pair (host end `link` in the host namespace with proxy ARP
// and no address, pod end eth0 with ip/32), routes via the link-local gateway,
// and the host route to the pod.
func (n *netManager) setupPod(ctx context.Context, netns, link, ip string) error {
	if err := n.ensureNetNS(ctx, netns); err != nil {
		return err
	}
	// As containerd (2.x, CRI) sets up every pod that does not use the host's
	// network: any user may bind ports below 1024 (a non-root pod serves on
	// port 80) and open ICMP echo sockets (ping without privileges).
	for _, s := range podSysctls {
		if err := sysctlInNetNS(netns, s.key, s.value); err != nil {
			return fmt.Errorf("pod network namespace %s: %w", netns, err)
		}
	}
	steps := [][]string{{"-n", netns, "link", "set", "lo", "up"}}
	if !n.linkExists(ctx, n.hostNS, link) {
		_, _ = n.ip(ctx, "-n", netns, "link", "del", "eth0") // a leftover of a half-made pair
		steps = append(steps, []string{"-n", n.hostNS, "link", "add", link, "mtu", podMTU, "type", "veth", "peer", "name", "eth0", "mtu", podMTU, "netns", netns})
	}
	for _, s := range steps {
		if _, err := n.ip(ctx, s...); err != nil {
			return err
		}
	}
	if err := n.hostSysctl(fmt.Sprintf("net/ipv4/conf/%s/proxy_arp", link), "1"); err != nil {
		return err
	}
	if _, err := n.ip(ctx, "-n", n.hostNS, "link", "set", "dev", link, "mtu", podMTU, "up"); err != nil {
		return err
	}
	mac, err := n.linkMAC(ctx, n.hostNS, link)
	if err != nil {
		return err
	}
	gw := labnet.PodGateway
	for _, s := range [][]string{
		{"-n", netns, "addr", "replace", ip + "/32", "dev", "eth0"},
		{"-n", netns, "link", "set", "dev", "eth0", "mtu", podMTU, "up"},
		{"-n", netns, "route", "replace", gw, "dev", "eth0", "scope", "link"},
		{"-n", netns, "route", "replace", "default", "via", gw, "dev", "eth0"},
		// Proxy ARP on the host end answers for the gateway only if the host
		// namespace has a route to it; a permanent neighbour entry makes the
		// pod independent of that.
		{"-n", netns, "neigh", "replace", gw, "lladdr", mac, "dev", "eth0", "nud", "permanent"},
		{"-n", n.hostNS, "route", "replace", ip + "/32", "dev", link},
	} {
		if _, err := n.ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// teardownPod removes the host route, the veth pair and the netns. Missing
// pieces are not errors.
func (n *netManager) teardownPod(ctx context.Context, netns, link, ip string) error {
	var errs []error
	if ip != "" {
		_, _ = n.ip(ctx, "-n", n.hostNS, "route", "del", ip+"/32", "dev", link)
	}
	if n.hostNSExists() && n.linkExists(ctx, n.hostNS, link) {
		if _, err := n.ip(ctx, "-n", n.hostNS, "link", "del", "dev", link); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Lstat(netnsPath(netns)); err == nil {
		if err := n.netnsCmd(ctx, "delete", netns); err != nil {
			errs = append(errs, err)
		}
		if _, err := os.Lstat(netnsPath(netns)); err == nil && !isNSFS(netnsPath(netns)) {
			_ = os.Remove(netnsPath(netns))
		}
	}
	return errors.Join(errs...)
}

func (n *netManager) hostNSExists() bool { return isNSFS(netnsPath(n.hostNS)) }

// hostLinks lists the pod links (labnet.PodLinkPrefix) in the host namespace.
func (n *netManager) hostLinks(ctx context.Context) ([]string, error) {
	out, err := n.ip(ctx, "-j", "-n", n.hostNS, "link", "show")
	if err != nil {
		return nil, err
	}
	var links []struct {
		IfName string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, err
	}
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.IfName, labnet.PodLinkPrefix) {
			names = append(names, l.IfName)
		}
	}
	return names, nil
}

// hostSysctl writes a sysctl (e.g. "net/ipv4/ip_forward") of the host
// namespace.
func (n *netManager) hostSysctl(key, value string) error {
	return sysctlInNetNS(n.hostNS, key, value)
}

// sysctlInNetNS writes a network sysctl inside the named network namespace,
// whatever namespace the caller is in: /proc/sys/net belongs to the writing
// thread's namespace, so the write happens on a throwaway OS thread that
// first enters the namespace.
func sysctlInNetNS(ns, key, value string) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it exits with the goroutine and never
		// runs anything else in the wrong namespace.
		runtime.LockOSThread()
		f, err := os.Open(netnsPath(ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			return
		}
		errc <- os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
	}()
	return <-errc
}

// verifyNetNS fails unless the calling process is inside the named network
// namespace: the agent's safety net against touching the root namespace.
func verifyNetNS(name string) error {
	want, err := nsInode(netnsPath(name))
	if err != nil {
		return fmt.Errorf("network namespace %s: %w (run the agent with `ip netns exec %s ...`)", name, err, name)
	}
	have, err := nsInode("/proc/self/ns/net")
	if err != nil {
		return err
	}
	if have != want {
		return fmt.Errorf("the node agent must run inside network namespace %s (ip netns exec %s ...); refusing to touch this one", name, name)
	}
	return nil
}

// openHostMountNS returns the mount namespace to create pod netns mounts in,
// or nil when that is the caller's own. spec is a namespace file path; empty
// means the parent process's mount namespace (see Config.HostMountNS).
func openHostMountNS(spec string) (*os.File, error) {
	self, err := nsInode("/proc/self/ns/mnt")
	if err != nil {
		return nil, err
	}
	path := spec
	if path == "" {
		path = fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid())
	}
	f, err := os.Open(path)
	if err != nil {
		if spec == "" {
			klog.Warningf("Cannot open the parent's mount namespace (%v); pod netns mounts will live in the agent's own mount namespace", err)
			return nil, nil
		}
		return nil, fmt.Errorf("host mount namespace %s: %w", spec, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino == self {
		f.Close()
		return nil, err
	}
	klog.Infof("Pod network namespaces are mounted in mount namespace %s (the agent's own differs)", path)
	return f, nil
}
