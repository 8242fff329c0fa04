package node

import (
	"fmt"

	"k8s.io/apimachinery/pkg/types"

	"kt.dev/testbed/internal/kubeletserver"
)

// This file implements kubeletserver.Runtime on the agent's state directory,
// so the kubelet API works for re-adopted pods too.

// lookupPod finds a pod's state by namespace/name (and UID when given): first
// through the informer cache, then on disk.
func (a *Agent) lookupPod(namespace, name, uid string) (podDir, *podMeta, error) {
	if uid != "" {
		pd := a.state.pod(types.UID(uid))
		m, err := pd.readMeta()
		if err != nil || m.Namespace != namespace || m.Name != name {
			return "", nil, fmt.Errorf("pod %s/%s (uid %s): %w", namespace, name, uid, kubeletserver.ErrNotFound)
		}
		return pd, m, nil
	}
	if a.podLister != nil {
		if p, err := a.podLister.Pods(namespace).Get(name); err == nil {
			pd := a.state.pod(p.UID)
			if m, err := pd.readMeta(); err == nil {
				return pd, m, nil
			}
		}
	}
	uids, _ := a.state.podUIDs()
	for _, u := range uids {
		pd := a.state.pod(u)
		if m, err := pd.readMeta(); err == nil && m.Namespace == namespace && m.Name == name {
			return pd, m, nil
		}
	}
	return "", nil, fmt.Errorf("pod %s/%s: %w", namespace, name, kubeletserver.ErrNotFound)
}

// lookupContainer resolves a container name ("" = the first regular one).
func (a *Agent) lookupContainer(namespace, pod, container string) (podDir, string, error) {
	pd, m, err := a.lookupPod(namespace, pod, "")
	if err != nil {
		return "", "", err
	}
	if container == "" {
		if len(m.Containers) == 0 {
			return "", "", fmt.Errorf("pod %s/%s has no containers: %w", namespace, pod, kubeletserver.ErrNotFound)
		}
		return pd, m.Containers[0], nil
	}
	for _, names := range [][]string{m.InitContainers, m.Containers} {
		for _, n := range names {
			if n == container {
				return pd, n, nil
			}
		}
	}
	return "", "", fmt.Errorf("container %q in pod %s/%s: %w", container, namespace, pod, kubeletserver.ErrNotFound)
}

// PodNetNSPath implements kubeletserver.Runtime.
func (a *Agent) PodNetNSPath(namespace, pod, uid string) (string, error) {
	_, m, err := a.lookupPod(namespace, pod, uid)
	if err != nil {
		return "", err
	}
	p := netnsPath(m.NetNS)
	if !isNSFS(p) {
		return "", fmt.Errorf("pod %s/%s has no network namespace (not running): %w", namespace, pod, kubeletserver.ErrNotFound)
	}
	return p, nil
}

// ContainerPID implements kubeletserver.Runtime: the workload's PID.
func (a *Agent) ContainerPID(namespace, pod, container string) (int, error) {
	pd, name, err := a.lookupContainer(namespace, pod, container)
	if err != nil {
		return 0, err
	}
	n := pd.latestRun(name)
	if n < 0 {
		return 0, fmt.Errorf("container %q in pod %s/%s has not started: %w", name, namespace, pod, errNotRunning)
	}
	r := loadRun(pd, name, n)
	if !r.running() {
		return 0, fmt.Errorf("container %q in pod %s/%s: %w", name, namespace, pod, errNotRunning)
	}
	return r.Workload.PID, nil
}

// ContainerEnv implements kubeletserver.Runtime: the environment of the
// container's current run.
func (a *Agent) ContainerEnv(namespace, pod, container string) ([]string, error) {
	pd, name, err := a.lookupContainer(namespace, pod, container)
	if err != nil {
		return nil, err
	}
	n := pd.latestRun(name)
	if n < 0 {
		return nil, fmt.Errorf("container %q in pod %s/%s has not started: %w", name, namespace, pod, errNotRunning)
	}
	spec, err := readRunSpec(runFiles(pd.runDir(name, n)).spec())
	if err != nil {
		return nil, err
	}
	return spec.Env, nil
}

// ContainerLogPath implements kubeletserver.Runtime.
func (a *Agent) ContainerLogPath(namespace, pod, container string, previous bool) (string, error) {
	pd, name, err := a.lookupContainer(namespace, pod, container)
	if err != nil {
		return "", err
	}
	n := pd.latestRun(name)
	if previous {
		n--
	}
	if n < 0 {
		what := "has not started"
		if previous {
			what = "has no previous terminated run"
		}
		return "", fmt.Errorf("container %q in pod %s/%s %s: %w", name, namespace, pod, what, kubeletserver.ErrNotFound)
	}
	return pd.logFile(name, n), nil
}
