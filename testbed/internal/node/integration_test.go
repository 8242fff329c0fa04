package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// These tests need root. They only ever touch network namespaces they create
// (ktlabtest-*), never the namespace they run in.

// readSysctlInNetNS reads a network sysctl inside the named namespace.
func readSysctlInNetNS(ns, key string) (string, error) {
	type res struct {
		v   string
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(netnsPath(ns))
		if err != nil {
			c <- res{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			c <- res{err: err}
			return
		}
		data, err := os.ReadFile(filepath.Join("/proc/sys", key))
		c <- res{strings.TrimSpace(string(data)), err}
	}()
	r := <-c
	return r.v, r.err
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test needs root (CI must run it)")
		}
		t.Skip("needs root")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func ipOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetNS runs f on an OS thread inside the named namespace (the thread is
// discarded afterwards).
func inNetNS(t *testing.T, ns string, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := os.Open(netnsPath(ns))
		if err != nil {
			done <- err
			return
		}
		defer fd.Close()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// labNamespaces creates a throwaway host namespace (with a "node" address
// on lo) and returns the netManager for it
// plus a pod namespace name and link name.
func labNamespaces(t *testing.T) (n *netManager, podNS, link string) {
	suffix := randHex(t, 3)
	hostNS := "ktlabtest-h" + suffix
	podNS = "ktlabtest-p" + suffix
	link = "ktp" + suffix
	ipOut(t, "netns", "add", hostNS)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", podNS).Run()
		_ = exec.Command("ip", "netns", "del", hostNS).Run()
	})
	ipOut(t, "-n", hostNS, "link", "set", "lo", "up")
	ipOut(t, "-n", hostNS, "addr", "add", "10.88.77.1/32", "dev", "lo")
	return &netManager{hostNS: hostNS}, podNS, link
}

func TestPodNetwork(t *testing.T) {
	requireRoot(t)
	n, podNS, link := labNamespaces(t)
	ctx := context.Background()
	const podIP = "10.244.77.2"
	for i := 0; i < 2; i++ { // idempotent
		if err := n.setupPod(ctx, podNS, link, podIP); err != nil {
			t.Fatalf("setupPod (round %d): %v", i, err)
		}
	}
	if out := ipOut(t, "-n", podNS, "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, podIP+"/32") {
		t.Errorf("pod address: %s", out)
	}
	if out := ipOut(t, "-n", podNS, "route", "show"); !strings.Contains(out, "default via 169.254.1.1 dev eth0") || !strings.Contains(out, "169.254.1.1 dev eth0 scope link") {
		t.Errorf("pod routes: %s", out)
	}
	if out := ipOut(t, "-n", podNS, "-o", "link", "show", "dev", "eth0"); !strings.Contains(out, "mtu 1500") {
		t.Errorf("pod link: %s", out)
	}
	if out := ipOut(t, "-n", n.hostNS, "route", "show", podIP); !strings.Contains(out, "dev "+link) {
		t.Errorf("host route: %q", out)
	}
	if out := ipOut(t, "-n", n.hostNS, "-o", "addr", "show", "dev", link); strings.Contains(out, "inet ") {
		t.Errorf("host end has an IPv4 address: %s", out)
	}
	if v, err := readSysctlInNetNS(n.hostNS, "net/ipv4/conf/"+link+"/proxy_arp"); err != nil || v != "1" {
		t.Errorf("proxy_arp = %q, %v", v, err)
	}
	// As containerd's pods: any user binds ports below 1024 and pings.
	for key, want := range map[string]string{"net/ipv4/ip_unprivileged_port_start": "0", "net/ipv4/ping_group_range": "0\t2147483647"} {
		if v, err := readSysctlInNetNS(podNS, key); err != nil || v != want {
			t.Errorf("pod %s = %q, %v; want %q", key, v, err, want)
		}
	}

	// TCP from the node (host namespace) to the pod and back.
	var ln net.Listener
	inNetNS(t, podNS, func() {
		var err error
		if ln, err = net.Listen("tcp", podIP+":8080"); err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from %s\n", c.RemoteAddr())
			c.Close()
		}
	}()
	var got string
	inNetNS(t, n.hostNS, func() {
		c, err := net.DialTimeout("tcp", podIP+":8080", 3*time.Second)
		if err != nil {
			t.Errorf("dial from host namespace: %v", err)
			return
		}
		defer c.Close()
		buf := make([]byte, 100)
		k, _ := c.Read(buf)
		got = string(buf[:k])
	})
	if !strings.HasPrefix(got, "hello from 10.88.77.1:") {
		t.Errorf("reply %q", got)
	}
	// A tcpSocket probe from the host namespace, as the agent makes it.
	inNetNS(t, n.hostNS, func() {
		p := &v1.Probe{ProbeHandler: v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromString("http")}}}
		c := &v1.Container{Name: "c", Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080}}}
		if ok, out := runProbe(ctx, p, probeTarget{container: c, podIP: podIP}, time.Second); !ok {
			t.Errorf("tcp probe failed: %s", out)
		}
		p.TCPSocket.Port = intstr.FromInt32(8081)
		if ok, _ := runProbe(ctx, p, probeTarget{container: c, podIP: podIP}, time.Second); ok {
			t.Error("tcp probe to a closed port succeeded")
		}
	})

	if err := n.teardownPod(ctx, podNS, link, podIP); err != nil {
		t.Fatal(err)
	}
	if fileExists(netnsPath(podNS)) {
		t.Error("pod netns still exists")
	}
	if n.linkExists(ctx, n.hostNS, link) {
		t.Error("host link still exists")
	}
	if err := n.teardownPod(ctx, podNS, link, podIP); err != nil {
		t.Errorf("second teardown: %v", err)
	}
}

func TestRunContainer(t *testing.T) {
	requireRoot(t)
	n, podNS, link := labNamespaces(t)
	ctx := context.Background()
	if err := n.setupPod(ctx, podNS, link, "10.244.77.3"); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	_ = os.Chmod(tmp, 0o755)
	_ = os.Chmod(filepath.Dir(tmp), 0o755) // workloads run as nobody
	state := stateDir(filepath.Join(tmp, "state"))
	if err := state.ensure(); err != nil {
		t.Fatal(err)
	}
	pd := state.pod("test-uid")
	mustWrite := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(filepath.Join(pd.volume("data"), "greeting"), "hi there")
	mustWrite(filepath.Join(pd.volume("cfg"), "key"), "value")
	mustWrite(pd.resolvConf(), "nameserver 10.96.0.10\n")
	mnt := filepath.Join(tmp, "mnt") // does not exist: run-container creates and records it
	if err := pd.writeMeta(&podMeta{Namespace: "ns", Name: "testpod", UID: "test-uid", MountPaths: []string{mnt + "/data", mnt + "/ro"}}); err != nil {
		t.Fatal(err)
	}

	start := func(name string, n int, argv []string, uid *int64) runFiles {
		t.Helper()
		files := runFiles(pd.runDir(name, n))
		if err := os.MkdirAll(string(files), 0o755); err != nil {
			t.Fatal(err)
		}
		spec := &RunSpec{
			PodUID: "test-uid", Namespace: "ns", PodName: "testpod", Container: name, Run: n,
			NetNS: netnsPath(podNS), Hostname: "testpod",
			Argv: argv,
			Env:  []string{"PATH=" + defaultPath, "FOO=bar", "MNT=" + mnt},
			UID:  uid,
			Mounts: []Mount{
				{Source: pd.volume("data"), Target: mnt + "/data"},
				{Source: pd.volume("cfg"), Target: mnt + "/ro", ReadOnly: true},
				{Source: pd.resolvConf(), Target: "/etc/resolv.conf"},
			},
			LogFile: pd.logFile(name, n), WorkloadFile: files.workload(), ExitFile: files.exit(),
			MountDirsFile: pd.mountDirsFile(), MountLock: state.mountLock(),
		}
		if err := writeJSON(files.spec(), spec); err != nil {
			t.Fatal(err)
		}
		if _, err := spawnRunner(self, files); err != nil {
			t.Fatal(err)
		}
		return files
	}

	script := `echo "host=$(hostname)"; echo "resolv=$(cat /etc/resolv.conf)"; echo "data=$(cat $MNT/data/greeting)"
touch $MNT/ro/x 2>/dev/null && echo ro=writable || echo ro=readonly
echo "uid=$(id -u) foo=$FOO"; sleep 60 & exec sleep 61`
	nobody := int64(65534)
	start("app", 0, []string{"sh", "-c", script}, &nobody)
	r := waitStarted(pd, "app", 0, 5*time.Second)
	if !r.running() {
		runnerLog, _ := os.ReadFile(r.Files.runnerLog())
		t.Fatalf("not running: %+v exit=%+v runner log: %s", r, r.Exit, runnerLog)
	}
	podIno, _ := nsInode(netnsPath(podNS))
	if ino, _ := procNSInode(r.Workload.PID, "net"); ino != podIno {
		t.Error("workload is not in the pod network namespace")
	}
	if ino, _ := procNSInode(os.Getpid(), "mnt"); ino == r.Workload.MntNS || r.Workload.MntNS == 0 {
		t.Error("workload shares the test's mount namespace")
	}
	var log string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !strings.Contains(log, "uid="); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(pd.logFile("app", 0))
		log = string(b)
	}
	for _, want := range []string{"host=testpod", "resolv=nameserver 10.96.0.10", "data=hi there", "ro=readonly", "uid=65534 foo=bar"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if st, err := os.Stat(mnt + "/data"); err != nil || !st.IsDir() {
		t.Errorf("mount point not created on the host: %v", err)
	}
	if b, _ := os.ReadFile("/etc/resolv.conf"); strings.Contains(string(b), "10.96.0.10") && !strings.Contains(string(b), "nameserver") {
		t.Error("the host's resolv.conf changed")
	}

	// exec inside the container's namespaces, with its credentials.
	tgt := probeTarget{pid: r.Workload.PID, env: []string{"PATH=" + defaultPath, "X=y"}, uid: &nobody}
	if out, err := execIn(ctx, tgt, []string{"sh", "-c", "echo $(hostname) $(id -u) $X; ls " + mnt + "/ro"}); err != nil || strings.TrimSpace(out) != "testpod 65534 y\nkey" {
		t.Errorf("execIn = %q, %v", out, err)
	}
	if _, err := execIn(ctx, tgt, []string{"sh", "-c", "exit 3"}); err == nil {
		t.Error("failing exec reported success")
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = execIn(tctx, tgt, []string{"sleep", "10"})
	cancel()
	if err == nil {
		t.Error("exec timeout not reported")
	}
	p := &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"test", "-f", mnt + "/data/greeting"}}}}
	if ok, out := runProbe(ctx, p, tgt, time.Second); !ok {
		t.Errorf("exec probe failed: %s", out)
	}

	// Stop: SIGTERM to the workload's group, and nothing is left behind.
	stopRun(pd, "app", 0, podIno, func() time.Time { return time.Now().Add(3 * time.Second) })
	r = loadRun(pd, "app", 0)
	if r.Alive || r.Exit == nil || r.Exit.Signal != 15 || r.Exit.ExitCode != 143 || r.Exit.Reason != "Error" {
		t.Fatalf("after stop: alive=%v exit=%+v", r.Alive, r.Exit)
	}
	time.Sleep(100 * time.Millisecond)
	if left := processesIn(podIno, 0); len(left) != 0 {
		t.Errorf("processes left in the pod namespace: %v", left)
	}

	// A workload that exits by itself: its exit code, and its orphans are killed.
	start("app", 1, []string{"/bin/sh", "-c", "sleep 60 & exit 3"}, nil)
	r = waitStarted(pd, "app", 1, 5*time.Second)
	for deadline := time.Now().Add(5 * time.Second); r.Alive && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r = loadRun(pd, "app", 1)
	}
	if r.Alive || r.Exit == nil || r.Exit.ExitCode != 3 || r.Exit.Signal != 0 {
		t.Fatalf("exit 3: %+v", r.Exit)
	}
	time.Sleep(100 * time.Millisecond)
	if left := processesIn(podIno, 0); len(left) != 0 {
		t.Errorf("orphans survived the workload: %v", left)
	}

	// A command that cannot be started.
	start("bad", 0, []string{"no-such-command-xyz"}, nil)
	r = waitStarted(pd, "bad", 0, 5*time.Second)
	for deadline := time.Now().Add(5 * time.Second); r.Alive && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		r = loadRun(pd, "bad", 0)
	}
	if r.Exit == nil || r.Exit.Reason != "StartError" || r.Exit.ExitCode != 128 || !strings.Contains(r.Exit.Message, "executable file not found") {
		t.Fatalf("start error: %+v", r.Exit)
	}

	// A volume mounted over the state directory's parent hides nothing from
	// run-container itself; mount points behind a symlink are recorded by
	// their real path.
	realDir := filepath.Join(tmp, "real")
	_ = os.MkdirAll(realDir, 0o755)
	if err := os.Symlink(realDir, filepath.Join(tmp, "link")); err != nil {
		t.Fatal(err)
	}
	runOnce := func(name string, argv []string, mounts []Mount) (*runState, string) {
		t.Helper()
		files := runFiles(pd.runDir(name, 0))
		_ = os.MkdirAll(string(files), 0o755)
		spec := &RunSpec{
			NetNS: netnsPath(podNS), Argv: argv, Env: []string{"PATH=" + defaultPath}, Mounts: mounts,
			LogFile: pd.logFile(name, 0), WorkloadFile: files.workload(), ExitFile: files.exit(),
			MountDirsFile: pd.mountDirsFile(), MountLock: state.mountLock(),
		}
		if err := writeJSON(files.spec(), spec); err != nil {
			t.Fatal(err)
		}
		if _, err := spawnRunner(self, files); err != nil {
			t.Fatal(err)
		}
		r := waitStarted(pd, name, 0, 5*time.Second)
		for deadline := time.Now().Add(5 * time.Second); r.Alive && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			r = loadRun(pd, name, 0)
		}
		b, _ := os.ReadFile(pd.logFile(name, 0))
		return r, string(b)
	}
	r, out := runOnce("hider", []string{"sh", "-c", "ls " + tmp + "; echo hidden"}, []Mount{{Source: pd.volume("data"), Target: tmp}})
	if r.Exit == nil || r.Exit.ExitCode != 0 || r.Workload == nil || out != "greeting\nhidden\n" {
		t.Errorf("hider: exit %+v, log %q", r.Exit, out)
	}
	r, out = runOnce("linker", []string{"cat", filepath.Join(tmp, "link", "sub", "dir", "key")}, []Mount{{Source: pd.volume("cfg"), Target: filepath.Join(tmp, "link", "sub", "dir")}})
	if r.Exit == nil || r.Exit.ExitCode != 0 || out != "value" {
		t.Errorf("linker: exit %+v, log %q", r.Exit, out)
	}
	if recorded := strings.Join(readLines(pd.mountDirsFile()), "\n"); !strings.Contains(recorded, realDir+"/sub/dir") || strings.Contains(recorded, tmp+"/link") {
		t.Errorf("mountdirs should hold real paths: %s", recorded)
	}

	// Created mount points are recorded and removed.
	created := readLines(pd.mountDirsFile())
	if len(created) == 0 || !strings.Contains(strings.Join(created, "\n"), mnt+"/data") {
		t.Fatalf("mountdirs = %q", created)
	}
	removeMountDirs(state, pd, "test-uid")
	if fileExists(mnt) || fileExists(realDir+"/sub") {
		t.Errorf("%s or %s/sub still exist", mnt, realDir)
	}
}

func TestRemoveStrayNetworks(t *testing.T) {
	requireRoot(t)
	n, podNS, link := labNamespaces(t)
	ctx := context.Background()
	if err := n.setupPod(ctx, podNS, link, "10.244.77.4"); err != nil {
		t.Fatal(err)
	}
	// A process in the pod namespace, recorded nowhere.
	cmd := exec.Command("ip", "netns", "exec", podNS, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	time.Sleep(200 * time.Millisecond)
	podIno, _ := nsInode(netnsPath(podNS))
	if len(processesIn(podIno, 0)) == 0 {
		t.Fatal("no process in the pod namespace")
	}
	// Kept: nothing happens.
	removeStrayNetworks(ctx, n, "ktlabtest-p", map[string]bool{podNS: true})
	if !fileExists(netnsPath(podNS)) || !n.linkExists(ctx, n.hostNS, link) {
		t.Fatal("a kept pod network was removed")
	}
	// Not kept: processes killed, netns and link removed.
	removeStrayNetworks(ctx, n, "ktlabtest-p", nil)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("process in the pod namespace was not killed")
	}
	if fileExists(netnsPath(podNS)) || n.linkExists(ctx, n.hostNS, link) {
		t.Fatal("stray pod network not removed")
	}
}

// An agent started with `ip netns exec` lives in a private mount namespace;
// the pod netns it creates must still be mounted where its parent (and the
// next agent) sees them.
func TestNetNSMountsOutliveTheAgentsMountNamespace(t *testing.T) {
	requireRoot(t)
	n, podNS, _ := labNamespaces(t)
	self, _ := os.Executable()
	out, err := exec.Command("ip", "netns", "exec", n.hostNS, self, "netns-helper", "add", podNS).CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "host-mount-ns") {
		t.Errorf("helper did not use its parent's mount namespace: %s", out)
	}
	if !isNSFS(netnsPath(podNS)) {
		t.Fatal("the netns made inside `ip netns exec` is not mounted in the parent's mount namespace")
	}
	// And a later agent (another `ip netns exec`) sees it and can delete it.
	out, err = exec.Command("ip", "netns", "exec", n.hostNS, self, "netns-helper", "delete", podNS).CombinedOutput()
	if err != nil {
		t.Fatalf("helper delete: %v: %s", err, out)
	}
	if fileExists(netnsPath(podNS)) {
		t.Error("netns still there after delete")
	}
}

func TestAdoptNetNS(t *testing.T) {
	requireRoot(t)
	n, podNS, link := labNamespaces(t)
	ctx := context.Background()
	if err := n.setupPod(ctx, podNS, link, "10.244.77.5"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", podNS, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(200 * time.Millisecond)
	before, _ := nsInode(netnsPath(podNS))
	// Lose the mount (as when it lived in a dead agent's mount namespace).
	if err := unix.Unmount(netnsPath(podNS), unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if isNSFS(netnsPath(podNS)) {
		t.Fatal("still mounted")
	}
	if err := n.adoptNetNS(ctx, podNS, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if after, _ := nsInode(netnsPath(podNS)); after != before {
		t.Fatalf("adopted a different namespace (%d, was %d)", after, before)
	}
	if !n.linkExists(ctx, podNS, "eth0") {
		t.Fatal("eth0 missing in the re-adopted namespace")
	}
}

func TestCleanupAll(t *testing.T) {
	requireRoot(t)
	n, podNS, link := labNamespaces(t)
	ctx := context.Background()
	const ip = "10.244.77.6"
	if err := n.setupPod(ctx, podNS, link, ip); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	tmp := t.TempDir()
	state := stateDir(filepath.Join(tmp, "state"))
	if err := state.ensure(); err != nil {
		t.Fatal(err)
	}
	pd := state.pod("cleanup-uid")
	mnt := filepath.Join(tmp, "mnt", "x")
	_ = os.MkdirAll(pd.volume("v"), 0o755)
	if err := pd.writeMeta(&podMeta{Namespace: "ns", Name: "p", UID: "cleanup-uid", NetNS: podNS, Link: link, IP: ip, MountPaths: []string{mnt}}); err != nil {
		t.Fatal(err)
	}
	files := runFiles(pd.runDir("c", 0))
	_ = os.MkdirAll(string(files), 0o755)
	spec := &RunSpec{
		NetNS: netnsPath(podNS), Argv: []string{"sleep", "60"}, Env: []string{"PATH=" + defaultPath},
		Mounts:  []Mount{{Source: pd.volume("v"), Target: mnt}},
		LogFile: pd.logFile("c", 0), WorkloadFile: files.workload(), ExitFile: files.exit(),
		MountDirsFile: pd.mountDirsFile(), MountLock: state.mountLock(),
	}
	if err := writeJSON(files.spec(), spec); err != nil {
		t.Fatal(err)
	}
	if _, err := spawnRunner(self, files); err != nil {
		t.Fatal(err)
	}
	r := waitStarted(pd, "c", 0, 5*time.Second)
	if !r.running() {
		t.Fatalf("not running: %+v", r.Exit)
	}
	if _, err := newImageStore(state.imagesDir()).install("/bin/true"); err != nil {
		t.Fatal(err)
	}

	// Not while an agent holds the state directory.
	lock, err := lockStateDir(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := cleanupAll(ctx, string(state), n.hostNS); err == nil || !strings.Contains(err.Error(), "agent is running") {
		t.Fatalf("cleanup with a running agent: %v", err)
	}
	lock.Close()

	if err := cleanupAll(ctx, string(state), n.hostNS); err != nil {
		t.Fatal(err)
	}
	if r.Workload.alive() || r.Runner.alive() {
		t.Error("pod processes survived")
	}
	if fileExists(netnsPath(podNS)) || n.linkExists(ctx, n.hostNS, link) {
		t.Error("pod network survived")
	}
	if fileExists(filepath.Join(tmp, "mnt")) {
		t.Error("mount points survived")
	}
	if fileExists(state.podsDir()) {
		t.Error("pod state survived")
	}
	if fileExists(state.imagesDir()) {
		t.Error("the image store survived")
	}
}
