package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	kubeletevents "k8s.io/kubernetes/pkg/kubelet/events"
	"k8s.io/kubernetes/pkg/securitycontext"
)

const (
	// Crash-loop and image-pull back-off, as the kubelet's.
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	// A run that lasted this long resets the crash-loop back-off.
	backoffResetAfter = 10 * time.Minute
	// configRetry delays a retry after a container configuration error.
	configRetry = 5 * time.Second
)

// crashBackoff is the delay before restarting after k consecutive short runs:
// the first restart is immediate, then 10s, 20s, 40s ... up to 5 minutes.
func crashBackoff(k int) time.Duration {
	if k <= 1 {
		return 0
	}
	d := backoffInitial
	for i := 2; i < k && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// shortRuns counts the consecutive short runs ending with latest.
func (w *podWorker) shortRuns(name string, latest *runState) int {
	k := 0
	for n := latest.N; n >= 0 && k < 8; n-- {
		r := latest
		if n != latest.N {
			r = loadRun(w.pd, name, n)
		}
		if r.Exit == nil {
			break
		}
		started := r.Exit.StartedAt
		if r.Workload != nil {
			started = r.Workload.StartedAt
		}
		if !started.IsZero() && r.Exit.FinishedAt.Sub(started) >= backoffResetAfter {
			break
		}
		k++
	}
	return k
}

// shouldRestart applies the pod's restart policy to an exited container.
func shouldRestart(policy v1.RestartPolicy, exitCode int32) bool {
	switch policy {
	case v1.RestartPolicyNever:
		return false
	case v1.RestartPolicyOnFailure:
		return exitCode != 0
	default:
		return true
	}
}

// syncContainers starts, restarts and stops containers: init containers in
// order (each must succeed; sidecars must have started), then all regular
// containers.
func (w *podWorker) syncContainers(ctx context.Context, pod *v1.Pod) {
	w.handleProbeKills(pod)
	obs := map[string]containerObservation{}
	for _, cs := range [][]v1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			obs[cs[i].Name] = w.observe(&cs[i])
		}
	}
	w.syncProbes(pod, obs)
	if !w.adoptionLogged {
		w.adoptionLogged = true
		for name, o := range obs {
			if o.Latest.running() {
				klog.Infof("Pod %s/%s: re-adopted running container %s (run %d, pid %d)", pod.Namespace, pod.Name, name, o.Latest.N, o.Latest.Workload.PID)
			}
		}
	}

	// Once every regular container has ended for good, sidecars stop too.
	regularDone := len(pod.Spec.Containers) > 0
	for i := range pod.Spec.Containers {
		o := obs[pod.Spec.Containers[i].Name]
		if o.Latest == nil || o.Latest.Alive || shouldRestart(pod.Spec.RestartPolicy, o.Latest.Exit.ExitCode) {
			regularDone = false
		}
	}

	// Once a regular container has run, the pod is initialized: init
	// containers do not run again, and sidecars restart on their own.
	initialized := false
	for i := range pod.Spec.Containers {
		initialized = initialized || obs[pod.Spec.Containers[i].Name].Latest != nil
	}

	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		o := obs[c.Name]
		if isSidecar(c) {
			switch {
			case regularDone:
				if o.Latest != nil && o.Latest.Alive {
					w.stopAsync(pod, c, o.Latest.N, w.gracePeriod(), "")
				}
				continue
			case (o.Latest == nil || !o.Latest.Alive) && !w.isStopping(c.Name):
				w.startContainer(ctx, pod, c, o)
				o = w.observe(c)
			}
			if !initialized && (!o.Latest.running() || !o.Started) {
				return // the next init container waits for this one to start
			}
			continue
		}
		if initialized {
			continue
		}
		switch {
		case o.Latest == nil:
			w.startContainer(ctx, pod, c, o)
			return
		case o.Latest.Alive:
			return
		case o.Latest.Exit.ExitCode == 0:
			continue
		case pod.Spec.RestartPolicy == v1.RestartPolicyNever:
			return // the pod fails
		default:
			w.startContainer(ctx, pod, c, o)
			return
		}
	}

	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		o := obs[c.Name]
		switch {
		case o.Latest == nil:
			w.startContainer(ctx, pod, c, o)
		case o.Latest.Alive || w.isStopping(c.Name):
		case shouldRestart(pod.Spec.RestartPolicy, o.Latest.Exit.ExitCode):
			w.startContainer(ctx, pod, c, o)
		default:
			w.ctr(c.Name).waiting = nil
		}
	}
}

// startContainer starts the next run of a container unless a back-off or an
// error holds it.
func (w *podWorker) startContainer(ctx context.Context, pod *v1.Pod, c *v1.Container, o containerObservation) {
	st := w.ctr(c.Name)
	now := time.Now()
	n := 0
	if o.Latest != nil {
		n = o.Latest.N + 1
		delay := crashBackoff(w.shortRuns(c.Name, o.Latest))
		if readyAt := o.Latest.Exit.FinishedAt.Add(delay); now.Before(readyAt) {
			st.waiting = &v1.ContainerStateWaiting{
				Reason:  waitingCrashLoopBackOff,
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", delay, c.Name, podRef(pod)),
			}
			if st.backoffEventRun != o.Latest.N {
				st.backoffEventRun = o.Latest.N
				w.event(pod, c, v1.EventTypeWarning, kubeletevents.BackOffStartContainer, "Back-off restarting failed container %s in pod %s", c.Name, podRef(pod))
				klog.Infof("Pod %s/%s container %s: back-off %s before restart %d", pod.Namespace, pod.Name, c.Name, delay, n)
			}
			return
		}
	}
	if now.Before(st.nextAttempt) {
		if st.waiting != nil && (st.waiting.Reason == waitingErrImagePull || st.waiting.Reason == waitingImagePullBackOff) {
			if st.waiting.Reason == waitingErrImagePull {
				st.waiting = &v1.ContainerStateWaiting{
					Reason:  waitingImagePullBackOff,
					Message: fmt.Sprintf("Back-off pulling image %q: %s: %s", c.Image, waitingErrImagePull, st.waiting.Message),
				}
			}
			if time.Since(st.pullBackoffEvent) > st.pullBackoff/2 {
				st.pullBackoffEvent = now
				w.event(pod, c, v1.EventTypeNormal, kubeletevents.BackOffPullImage, "Back-off pulling image %q", c.Image)
			}
		}
		return
	}

	img, err := w.a.images.Resolve(c.Image)
	if err != nil {
		if st.pullBackoff == 0 {
			st.pullBackoff = backoffInitial
		} else {
			st.pullBackoff = min(2*st.pullBackoff, backoffMax)
		}
		st.nextAttempt = now.Add(st.pullBackoff)
		st.waiting = &v1.ContainerStateWaiting{Reason: waitingErrImagePull, Message: err.Error()}
		klog.Warningf("Pod %s/%s container %s: %v (retry in %s)", pod.Namespace, pod.Name, c.Name, err, st.pullBackoff)
		msg := err.Error()
		var pe *imagePullError
		if errors.As(err, &pe) {
			msg = fmt.Sprintf("Failed to pull image %q: %v", c.Image, pe.Err)
		}
		w.event(pod, c, v1.EventTypeWarning, kubeletevents.FailedToPullImage, "%s", msg)
		w.event(pod, c, v1.EventTypeWarning, kubeletevents.FailedToPullImage, "Error: %s", waitingErrImagePull)
		return
	}
	st.pullBackoff, st.nextAttempt = 0, time.Time{}
	w.event(pod, c, v1.EventTypeNormal, kubeletevents.PulledImage, "Container image %q already present on machine", c.Image)

	spec, err := w.buildRunSpec(ctx, pod, c, img, n)
	if err != nil {
		st.nextAttempt = now.Add(configRetry)
		if st.waiting == nil || st.waiting.Message != err.Error() {
			klog.Warningf("Pod %s/%s container %s: %v", pod.Namespace, pod.Name, c.Name, err)
			w.event(pod, c, v1.EventTypeWarning, kubeletevents.FailedToCreateContainer, "Error: %v", err)
		}
		st.waiting = &v1.ContainerStateWaiting{Reason: waitingConfigError, Message: err.Error()}
		return
	}
	files := runFiles(w.pd.runDir(c.Name, n))
	if err := os.MkdirAll(string(files), 0o755); err != nil {
		w.startFailed(pod, c, st, err)
		return
	}
	if err := os.MkdirAll(w.pd.logDir(c.Name), 0o755); err != nil {
		w.startFailed(pod, c, st, err)
		return
	}
	if err := writeJSON(files.spec(), spec); err != nil {
		w.startFailed(pod, c, st, err)
		return
	}
	if lf, err := os.OpenFile(spec.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err == nil {
		lf.Close() // exists from the start, for `kubectl logs`
	}
	if _, err := spawnRunner(w.a.cfg.Ktlab, files); err != nil {
		_ = writeJSON(files.exit(), &exitInfo{ExitCode: 128, Reason: reasonStartError, Message: err.Error(), FinishedAt: time.Now()})
		w.startFailed(pod, c, st, err)
		return
	}
	st.waiting = nil
	if o.Latest != nil && o.Latest.Exit != nil {
		klog.Infof("Pod %s/%s container %s: run %d had ended (%s, exit %d); started run %d", pod.Namespace, pod.Name, c.Name, o.Latest.N, o.Latest.Exit.Reason, o.Latest.Exit.ExitCode, n)
	}
	w.event(pod, c, v1.EventTypeNormal, kubeletevents.CreatedContainer, "Created container: %s", c.Name)
	r := waitStarted(w.pd, c.Name, n, 5*time.Second)
	if r.Workload == nil && r.Exit != nil && r.Exit.Reason == reasonStartError {
		klog.Warningf("Pod %s/%s container %s run %d failed to start: %s", pod.Namespace, pod.Name, c.Name, n, r.Exit.Message)
		w.event(pod, c, v1.EventTypeWarning, kubeletevents.FailedToStartContainer, "Error: %s", r.Exit.Message)
		return
	}
	w.event(pod, c, v1.EventTypeNormal, kubeletevents.StartedContainer, "Started container %s", c.Name)
	pid := 0
	if r.Workload != nil {
		pid = r.Workload.PID
	}
	klog.Infof("Pod %s/%s: started container %s (run %d, pid %d): %q", pod.Namespace, pod.Name, c.Name, n, pid, spec.Argv)

	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil && r.running() {
		hookCtx, cancel := context.WithTimeout(ctx, w.gracePeriod()+time.Second)
		err := runHook(hookCtx, c.Lifecycle.PostStart, w.probeTarget(pod, c, r))
		cancel()
		if err != nil {
			klog.Warningf("Pod %s/%s container %s: postStart hook failed: %v", pod.Namespace, pod.Name, c.Name, err)
			w.event(pod, c, v1.EventTypeWarning, kubeletevents.FailedPostStartHook, "PostStartHook failed: %v", err)
			w.stopAsync(pod, c, n, w.gracePeriod(), "FailedPostStartHook")
		}
	}
}

func (w *podWorker) startFailed(pod *v1.Pod, c *v1.Container, st *ctrState, err error) {
	klog.Errorf("Pod %s/%s container %s: %v", pod.Namespace, pod.Name, c.Name, err)
	w.event(pod, c, v1.EventTypeWarning, kubeletevents.FailedToStartContainer, "Error: %v", err)
	st.waiting = &v1.ContainerStateWaiting{Reason: waitingCreateError, Message: err.Error()}
	st.nextAttempt = time.Now().Add(configRetry)
}

// stopAsync stops a container run in the background (liveness failure,
// postStart failure, sidecars at the end); the normal sync then restarts it
// per the restart policy.
func (w *podWorker) stopAsync(pod *v1.Pod, c *v1.Container, n int, grace time.Duration, why string) {
	w.mu.Lock()
	if w.stopping[c.Name] {
		w.mu.Unlock()
		return
	}
	w.stopping[c.Name] = true
	w.mu.Unlock()
	if why == "" {
		w.event(pod, c, v1.EventTypeNormal, kubeletevents.KillingContainer, "Stopping container %s", c.Name)
	}
	deadline := time.Now().Add(grace)
	netIno := w.netIno
	go func() {
		stopRun(w.pd, c.Name, n, netIno, func() time.Time { return deadline })
		w.mu.Lock()
		delete(w.stopping, c.Name)
		w.mu.Unlock()
		w.poke()
	}()
}

// effectiveIDs returns the container's uid/gid: security context (container,
// then pod), then the image's user.
func effectiveIDs(pod *v1.Pod, c *v1.Container, img *resolvedImage) (uid, gid *int64) {
	sc := securitycontext.DetermineEffectiveSecurityContext(pod, c)
	if sc != nil {
		uid, gid = sc.RunAsUser, sc.RunAsGroup
	}
	if uid == nil && img != nil {
		uid = img.UID
		if gid == nil {
			gid = img.GID
		}
	}
	return uid, gid
}

// buildRunSpec computes everything run-container needs for one run.
func (w *podWorker) buildRunSpec(ctx context.Context, pod *v1.Pod, c *v1.Container, img *resolvedImage, n int) (*RunSpec, error) {
	env, err := makeEnvironment(envInput{
		Pod:             pod,
		Container:       c,
		PodIP:           w.meta.IP,
		HostIP:          w.a.cfg.NodeIP,
		ImageEnv:        img.Env,
		Services:        w.a.services(),
		NodeAllocatable: nodeAllocatable(),
		GetConfigMap:    w.a.configMapGetter(ctx, pod.Namespace),
		GetSecret:       w.a.secretGetter(ctx, pod.Namespace),
	})
	if err != nil {
		return nil, err
	}
	argv := img.Argv(expandArgs(c.Command, env), expandArgs(c.Args, env))
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command specified")
	}

	uid, gid := effectiveIDs(pod, c, img)
	sc := securitycontext.DetermineEffectiveSecurityContext(pod, c)
	if sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot {
		switch {
		case uid == nil:
			return nil, fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", podRef(pod), c.Name)
		case *uid == 0:
			return nil, fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", podRef(pod), c.Name)
		}
	}
	var groups []int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		groups = append(groups, psc.SupplementalGroups...)
		if psc.FSGroup != nil {
			groups = append(groups, *psc.FSGroup)
		}
	}
	noNewPrivs := sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation

	mounts, err := w.containerMounts(pod, c, env)
	if err != nil {
		return nil, err
	}
	workDir := c.WorkingDir
	if workDir == "" {
		workDir = img.WorkingDir
	}
	files := runFiles(w.pd.runDir(c.Name, n))
	// An image whose filesystem holds nothing but its own program: a
	// container running something else gets that empty root (rootfs.go).
	emptyRoot := ""
	if img.RootFS == rootFSEmpty && !img.RunsOwnProgram(c.Command, c.Args) {
		emptyRoot = files.rootDir()
	}
	return &RunSpec{
		PodUID:        string(pod.UID),
		Namespace:     pod.Namespace,
		PodName:       pod.Name,
		Container:     c.Name,
		Run:           n,
		NetNS:         netnsPath(w.meta.NetNS),
		Hostname:      podHostname(pod),
		Argv:          argv,
		Env:           env,
		WorkingDir:    workDir,
		UID:           uid,
		GID:           gid,
		Groups:        groups,
		NoNewPrivs:    noNewPrivs,
		Mounts:        mounts,
		EmptyRoot:     emptyRoot,
		ReadOnlyRoot:  emptyRoot != "" && sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
		LogFile:       w.pd.logFile(c.Name, n),
		WorkloadFile:  files.workload(),
		ExitFile:      files.exit(),
		MountDirsFile: w.pd.mountDirsFile(),
		MountLock:     w.a.state.mountLock(),
	}, nil
}

// containerMounts maps the container's volumeMounts (with subPath and
// subPathExpr) to bind mounts, plus the pod's /etc files. ConfigMap, Secret,
// downward API and projected volumes are always read-only, as with a kubelet.
func (w *podWorker) containerMounts(pod *v1.Pod, c *v1.Container, env []string) ([]Mount, error) {
	vols := map[string]*v1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	var mounts []Mount
	taken := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("cannot find volume %q to mount into container %q", vm.Name, c.Name)
		}
		if vm.MountPath == "" || !filepath.IsAbs(vm.MountPath) {
			return nil, fmt.Errorf("volume mount %q: mountPath must be absolute", vm.Name)
		}
		src := w.pd.volume(vm.Name)
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expandArgs([]string{vm.SubPathExpr}, env)[0]
		}
		if sub != "" {
			clean := path.Clean(sub)
			if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
				return nil, fmt.Errorf("volume mount %q: invalid subPath %q", vm.Name, sub)
			}
			src = filepath.Join(src, clean)
			if _, err := os.Stat(src); os.IsNotExist(err) {
				if err := os.MkdirAll(src, 0o777); err != nil {
					return nil, fmt.Errorf("creating subPath %s: %w", sub, err)
				}
			}
		}
		ro := vm.ReadOnly || v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil
		mounts = append(mounts, Mount{Source: src, Target: filepath.Clean(vm.MountPath), ReadOnly: ro})
		taken[filepath.Clean(vm.MountPath)] = true
	}
	for _, m := range etcMounts(w.pd) {
		if !taken[m.Target] {
			mounts = append(mounts, m)
		}
	}
	return mounts, nil
}

// probeTarget builds the target of probes and hooks for a run.
func (w *podWorker) probeTarget(pod *v1.Pod, c *v1.Container, r *runState) probeTarget {
	t := probeTarget{pod: pod, container: c}
	if w.meta != nil {
		t.podIP = w.meta.IP
	}
	if r != nil && r.Workload != nil {
		t.pid = r.Workload.PID
	}
	if r != nil {
		if spec, err := readRunSpec(r.Files.spec()); err == nil {
			t.env, t.uid, t.gid = spec.Env, spec.UID, spec.GID
		}
	}
	return t
}

// services lists the Services known to the agent's cache.
func (a *Agent) services() []*v1.Service {
	if a.svcLister == nil {
		return nil
	}
	list, err := a.svcLister.List(labels.Everything())
	if err != nil {
		return nil
	}
	return list
}
