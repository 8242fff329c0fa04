package node

import (
	"context"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	kubeletevents "k8s.io/kubernetes/pkg/kubelet/events"
)

// probeState is the probe results of one container run. Probe goroutines
// write it under podWorker.probeMu.
type probeState struct {
	run     int
	cancel  context.CancelFunc
	started bool
	ready   bool
	// kill, when set, asks the worker to restart the run (failed liveness or
	// startup probe); killKind names the probe.
	kill     string
	killKind probeKind
	killed   bool
}

// probeResults returns (started, ready) for a run of a container: without
// probes a running container is started and ready.
func (w *podWorker) probeResults(c *v1.Container, run int) (started, ready bool) {
	w.probeMu.Lock()
	defer w.probeMu.Unlock()
	if ps := w.probes[c.Name]; ps != nil && ps.run == run {
		return ps.started, ps.ready
	}
	return c.StartupProbe == nil, c.StartupProbe == nil && c.ReadinessProbe == nil
}

// syncProbes starts probes for newly running container runs and stops those
// of runs that ended.
func (w *podWorker) syncProbes(pod *v1.Pod, obs map[string]containerObservation) {
	w.probeMu.Lock()
	defer w.probeMu.Unlock()
	wanted := map[string]bool{}
	probe := func(c *v1.Container) {
		o := obs[c.Name]
		if !o.Latest.running() {
			return
		}
		wanted[c.Name] = true
		if ps := w.probes[c.Name]; ps != nil && ps.run == o.Latest.N {
			return
		}
		if ps := w.probes[c.Name]; ps != nil {
			ps.cancel()
		}
		w.probes[c.Name] = w.startProbes(pod, c, o.Latest)
	}
	for i := range pod.Spec.InitContainers {
		if isSidecar(&pod.Spec.InitContainers[i]) {
			probe(&pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		probe(&pod.Spec.Containers[i])
	}
	for name, ps := range w.probes {
		if !wanted[name] {
			ps.cancel()
			delete(w.probes, name)
		}
	}
}

// stopAllProbes stops every probe of the pod.
func (w *podWorker) stopAllProbes() {
	w.probeMu.Lock()
	defer w.probeMu.Unlock()
	for name, ps := range w.probes {
		ps.cancel()
		delete(w.probes, name)
	}
}

// startProbes starts the probe goroutines of a run (caller holds probeMu).
func (w *podWorker) startProbes(pod *v1.Pod, c *v1.Container, r *runState) *probeState {
	parent := w.ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	ps := &probeState{run: r.N, cancel: cancel, started: c.StartupProbe == nil, ready: c.ReadinessProbe == nil}
	if c.StartupProbe == nil && c.ReadinessProbe == nil && c.LivenessProbe == nil {
		return ps
	}
	base := w.probeTarget(pod, c, r)
	target := func() (probeTarget, bool) {
		cur := loadRun(w.pd, c.Name, r.N)
		if !cur.running() {
			return probeTarget{}, false
		}
		t := base
		t.pid = cur.Workload.PID
		return t, true
	}
	startedAt := r.Workload.StartedAt
	set := func(f func()) {
		w.probeMu.Lock()
		f()
		w.probeMu.Unlock()
		w.poke()
	}
	isStarted := func() bool {
		w.probeMu.Lock()
		defer w.probeMu.Unlock()
		return ps.started
	}
	unhealthy := func(kind probeKind) func(string) {
		return func(out string) {
			if ctx.Err() != nil {
				return
			}
			w.event(pod, c, v1.EventTypeWarning, kubeletevents.ContainerUnhealthy, "%s probe failed: %s", kind, out)
			klog.V(2).Infof("Pod %s/%s container %s: %s probe failed: %s", pod.Namespace, pod.Name, c.Name, kind, out)
		}
	}
	var lastFailure string
	recordFailure := func(kind probeKind) func(string) {
		ev := unhealthy(kind)
		return func(out string) {
			set(func() { lastFailure = out })
			ev(out)
		}
	}
	requestKill := func(kind probeKind) func(bool) {
		return func(ok bool) {
			if ok {
				return
			}
			set(func() {
				if ps.kill == "" {
					ps.kill, ps.killKind = lastFailure, kind
				}
			})
		}
	}
	// waitStarted blocks until the startup probe has succeeded.
	waitForStart := func() bool {
		for !isStarted() {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(200 * time.Millisecond):
			}
		}
		return true
	}

	if p := c.StartupProbe; p != nil {
		sctx, scancel := context.WithCancel(ctx)
		go probeLoop(sctx, startupProbe, p, startedAt, target, func(ok bool) {
			if ok {
				set(func() { ps.started = true })
				klog.Infof("Pod %s/%s container %s: startup probe succeeded", pod.Namespace, pod.Name, c.Name)
				scancel()
				return
			}
			requestKill(startupProbe)(false)
		}, recordFailure(startupProbe))
	}
	if p := c.ReadinessProbe; p != nil {
		go func() {
			if !waitForStart() {
				return
			}
			probeLoop(ctx, readinessProbe, p, startedAt, target, func(ok bool) {
				set(func() { ps.ready = ok })
				klog.Infof("Pod %s/%s container %s: readiness probe says ready=%v", pod.Namespace, pod.Name, c.Name, ok)
			}, unhealthy(readinessProbe))
		}()
	}
	if p := c.LivenessProbe; p != nil {
		go func() {
			if !waitForStart() {
				return
			}
			probeLoop(ctx, livenessProbe, p, startedAt, target, requestKill(livenessProbe), recordFailure(livenessProbe))
		}()
	}
	return ps
}

// handleProbeKills restarts runs whose liveness or startup probe failed.
func (w *podWorker) handleProbeKills(pod *v1.Pod) {
	type kill struct {
		c    *v1.Container
		run  int
		kind probeKind
	}
	var kills []kill
	w.probeMu.Lock()
	for name, ps := range w.probes {
		if ps.kill == "" || ps.killed {
			continue
		}
		ps.killed = true
		if c := findContainer(pod, name); c != nil {
			kills = append(kills, kill{c: c, run: ps.run, kind: ps.killKind})
		}
	}
	w.probeMu.Unlock()
	for _, k := range kills {
		probe := k.c.LivenessProbe
		if k.kind == startupProbe {
			probe = k.c.StartupProbe
		}
		grace := w.gracePeriod()
		if probe != nil && probe.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*probe.TerminationGracePeriodSeconds) * time.Second
		}
		klog.Infof("Pod %s/%s container %s failed its %s probe; restarting it", pod.Namespace, pod.Name, k.c.Name, k.kind)
		w.event(pod, k.c, v1.EventTypeNormal, kubeletevents.KillingContainer, "Container %s failed %s probe, will be restarted", k.c.Name, lower(string(k.kind)))
		w.stopAsync(pod, k.c, k.run, grace, "probe")
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if 'A' <= ch && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}
