package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"kt.dev/testbed/internal/labnet"
)

// CleanupAll undoes everything a node agent recorded in the state directory
// dir: it kills every pod process recorded there (and every process in those
// pods' network namespaces), deletes those pods' network namespaces and host
// links (their routes go with them), removes the mount points run-container
// created for them, and empties the state directory. Nothing that is not
// recorded in dir is touched (the agent itself removes unrecorded lab pod
// networks when it starts). It refuses to run while an agent uses dir. It
// works from any network namespace: it only ever names the lab's.
func CleanupAll(ctx context.Context, dir string) error {
	return cleanupAll(ctx, dir, labnet.HostNS)
}

// cleanupAll is CleanupAll with the host namespace as a parameter (tests).
func cleanupAll(ctx context.Context, dir, hostNS string) error {
	if dir == "" {
		return errors.New("a state directory is required")
	}
	state := stateDir(dir)
	if !fileExists(dir) {
		klog.Infof("State directory %s does not exist; nothing to clean up", dir)
		return nil
	}
	lock, err := lockStateDir(state)
	if err != nil {
		return err
	}
	defer lock.Close()
	uids, err := state.podUIDs()
	if err != nil {
		return err
	}
	metas := map[string]*podMeta{}
	for _, uid := range uids {
		if m, err := state.pod(uid).readMeta(); err == nil {
			metas[string(uid)] = m
		}
	}
	// 1. Kill: runners and workloads as recorded, then whatever is in the
	// pods' network namespaces.
	for _, uid := range uids {
		killRecorded(state.pod(uid))
		if m := metas[string(uid)]; m != nil && m.NetNS != "" {
			if ns := netnsPath(m.NetNS); isNSFS(ns) {
				if ino, err := nsInode(ns); err == nil {
					killProcessesIn(ino, 0, syscall.SIGKILL)
				}
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // let the kernel reap them
	// 2. The pods' networks.
	hostMnt, _ := openHostMountNS("")
	if hostMnt != nil {
		defer hostMnt.Close()
	}
	n := &netManager{hostNS: hostNS, hostMountNS: hostMnt}
	var errs []error
	for _, m := range metas {
		if m.NetNS == "" {
			continue
		}
		if err := n.teardownPod(ctx, m.NetNS, m.Link, m.IP); err != nil {
			errs = append(errs, err)
		}
	}
	// 3. Mount points, deepest first across all pods.
	var created []string
	for _, uid := range uids {
		created = append(created, readLines(state.pod(uid).mountDirsFile())...)
	}
	sort.SliceStable(created, func(i, j int) bool { return pathDepth(created[i]) > pathDepth(created[j]) })
	_ = withMountLock(state.mountLock(), func() error {
		for _, p := range created {
			p = filepath.Clean(p)
			st, err := os.Lstat(p)
			if p == "/" || err != nil {
				continue
			}
			if st.IsDir() || (st.Mode().IsRegular() && st.Size() == 0) {
				if os.Remove(p) == nil {
					klog.V(2).Infof("Removed mount point %s", p)
				}
			}
		}
		return nil
	})
	// 4. State.
	for _, p := range []string{state.podsDir(), state.ipamFile(), state.mountLock(), state.imagesDir()} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	klog.Infof("Cleaned up %d pods recorded in %s", len(uids), dir)
	return errors.Join(errs...)
}

// lockStateDir takes the state directory's agent lock (non-blocking): one
// agent per state directory, and no cleanup while an agent runs. The lock is
// held until the returned file is closed (or the process exits).
func lockStateDir(state stateDir) (*os.File, error) {
	f, err := os.OpenFile(state.agentLock(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("a node agent is running with state directory %s; stop it first", state)
		}
		return nil, err
	}
	return f, nil
}

// killRecorded SIGKILLs the runners and workloads recorded for a pod.
func killRecorded(pd podDir) {
	entries, err := os.ReadDir(filepath.Join(pd.path(), "containers"))
	if err != nil {
		return
	}
	for _, e := range entries {
		for _, n := range pd.runs(e.Name()) {
			files := runFiles(pd.runDir(e.Name(), n))
			var wl workloadInfo
			if readJSON(files.workload(), &wl) == nil && wl.alive() {
				_ = wl.signalGroup(syscall.SIGKILL)
			}
			var runner procRef
			if readJSON(files.runner(), &runner) == nil {
				_ = runner.signal(syscall.SIGKILL)
			}
		}
	}
}
