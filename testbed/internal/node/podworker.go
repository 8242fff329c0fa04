package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	kubeletevents "k8s.io/kubernetes/pkg/kubelet/events"
)

const (
	// syncPeriod is how often a worker re-examines its pod without news.
	syncPeriod = time.Second
	// volumeResyncPeriod is how often volumes are re-projected (ConfigMap and
	// Secret changes, token refresh).
	volumeResyncPeriod = time.Minute
	// defaultGracePeriod applies when a pod sets no termination grace period.
	defaultGracePeriod = 30 * time.Second
	// eventRepeatInterval rate-limits repeated error events.
	eventRepeatInterval = 30 * time.Second
)

// podWorker owns one pod (by UID): it reconciles the pod's sandbox, volumes,
// containers and probes with its spec, reports its status, and finishes its
// deletion. Reconciliation runs on the worker's goroutine only; probes run
// on goroutines of their own and report through probeState.
type podWorker struct {
	a      *Agent
	uid    types.UID
	pd     podDir
	notify chan struct{}
	ctx    context.Context

	mu       sync.Mutex
	pod      *v1.Pod // latest from the API, nil until seen
	removed  bool    // the API object is gone
	stopping map[string]bool

	// Owned by the worker goroutine.
	meta            *podMeta
	sandboxReady    bool
	netIno          uint64
	volumesReady    bool
	volumesSyncedAt time.Time
	setupBackoff    time.Duration
	setupRetryAt    time.Time
	ctrs            map[string]*ctrState
	lastSent        *v1.PodStatus
	terminalDone    bool
	tornDown        bool
	adoptionLogged  bool
	failReason      string
	failMessage     string
	lastEvents      map[string]eventMemo

	probeMu sync.Mutex
	probes  map[string]*probeState
}

// ctrState is the worker's memory about a container between syncs.
type ctrState struct {
	// waiting says why the container is not running (reported while it is not).
	waiting *v1.ContainerStateWaiting
	// nextAttempt delays the next start attempt (image pull back-off,
	// configuration errors).
	nextAttempt time.Time
	pullBackoff time.Duration
	// backoffEventRun is the run whose crash-loop BackOff event was emitted.
	backoffEventRun  int
	pullBackoffEvent time.Time
}

type eventMemo struct {
	msg string
	at  time.Time
}

func newPodWorker(a *Agent, uid types.UID) *podWorker {
	w := &podWorker{
		a:          a,
		uid:        uid,
		pd:         a.state.pod(uid),
		notify:     make(chan struct{}, 1),
		stopping:   map[string]bool{},
		ctrs:       map[string]*ctrState{},
		lastEvents: map[string]eventMemo{},
		probes:     map[string]*probeState{},
	}
	if m, err := w.pd.readMeta(); err == nil {
		w.meta = m
		w.failReason, w.failMessage = m.FailedReason, m.FailedMessage
	}
	return w
}

// poke wakes the worker.
func (w *podWorker) poke() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// setPod records the latest API object (ignoring older resource versions).
func (w *podWorker) setPod(pod *v1.Pod) {
	w.mu.Lock()
	if w.pod == nil || !olderVersion(pod.ResourceVersion, w.pod.ResourceVersion) {
		w.pod = pod
	}
	w.mu.Unlock()
	w.poke()
}

// setRemoved records that the API object is gone.
func (w *podWorker) setRemoved() {
	w.mu.Lock()
	w.removed = true
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) snapshot() (*v1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.removed
}

func (w *podWorker) isStopping(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopping[name]
}

// olderVersion reports whether resource version a is older than b (they are
// etcd revisions; anything unparsable counts as newer).
func olderVersion(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return err1 == nil && err2 == nil && x < y
}

func (w *podWorker) ctr(name string) *ctrState {
	s := w.ctrs[name]
	if s == nil {
		s = &ctrState{backoffEventRun: -1}
		w.ctrs[name] = s
	}
	return s
}

// run is the worker's loop; it returns when the pod is gone or ctx ends
// (leaving the pod's processes running).
func (w *podWorker) run(ctx context.Context) {
	w.ctx = ctx
	ticker := time.NewTicker(syncPeriod)
	defer ticker.Stop()
	defer w.stopAllProbes()
	for {
		if w.syncSafely(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.notify:
		case <-ticker.C:
		}
	}
}

// syncSafely runs one sync, turning a panic into a log line.
func (w *podWorker) syncSafely(ctx context.Context) (done bool) {
	defer func() {
		if r := recover(); r != nil {
			klog.Errorf("Pod %s: sync panicked: %v", w.uid, r)
			done = false
		}
	}()
	return w.sync(ctx)
}

// sync reconciles the pod once. It returns true when the worker is finished.
func (w *podWorker) sync(ctx context.Context) bool {
	pod, removed := w.snapshot()
	if removed || (pod != nil && pod.DeletionTimestamp != nil) {
		return w.syncDeletion(ctx)
	}
	if pod == nil || ctx.Err() != nil {
		return false
	}
	apiTerminal := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	if w.failReason == "" && !apiTerminal {
		if pod.Spec.HostNetwork {
			w.fail(pod, "HostNetworkUnsupported", "hostNetwork pods are not supported by the lab node")
		} else if err := checkVolumes(pod); err != nil {
			w.fail(pod, "UnsupportedVolume", err.Error())
		}
	}
	if apiTerminal || w.failReason != "" {
		w.finishTerminal(ctx, pod)
		if w.meta != nil || w.failReason != "" {
			w.updateStatus(ctx, pod, w.computeStatus(pod))
		}
		return false
	}

	if time.Now().Before(w.setupRetryAt) {
		w.updateStatus(ctx, pod, w.computeStatus(pod))
		return false
	}
	if err := w.ensureSandbox(ctx, pod); err != nil {
		klog.Errorf("Pod %s/%s: sandbox: %v", pod.Namespace, pod.Name, err)
		w.eventOnce(pod, nil, v1.EventTypeWarning, kubeletevents.FailedCreatePodSandBox, "Failed to create pod sandbox: %v", err)
		w.setupFailed()
		w.updateStatus(ctx, pod, w.computeStatus(pod))
		return false
	}
	if !w.volumesReady || time.Since(w.volumesSyncedAt) > volumeResyncPeriod {
		err := w.a.volumes.setup(ctx, pod, w.pd)
		var uv *unsupportedVolumeError
		switch {
		case errors.As(err, &uv):
			w.fail(pod, "UnsupportedVolume", err.Error())
			return false
		case err != nil:
			klog.Warningf("Pod %s/%s: volumes: %v", pod.Namespace, pod.Name, err)
			w.eventOnce(pod, nil, v1.EventTypeWarning, kubeletevents.FailedMountVolume, "%v", err)
			if !w.volumesReady {
				w.setupFailed()
				w.updateStatus(ctx, pod, w.computeStatus(pod))
				return false
			}
			// Running containers keep the previous contents; retry soon.
			w.volumesSyncedAt = time.Now().Add(10*time.Second - volumeResyncPeriod)
		default:
			if !w.volumesReady {
				klog.Infof("Pod %s/%s: volumes ready", pod.Namespace, pod.Name)
			}
			w.volumesReady, w.volumesSyncedAt = true, time.Now()
		}
	}
	w.setupBackoff = 0

	w.syncContainers(ctx, pod)
	st := w.computeStatus(pod)
	if st.Phase == v1.PodSucceeded || st.Phase == v1.PodFailed {
		w.finishTerminal(ctx, pod)
		st = w.computeStatus(pod)
	}
	w.updateStatus(ctx, pod, st)
	return false
}

// setupFailed delays the next sandbox/volume attempt (1s doubling to 30s).
func (w *podWorker) setupFailed() {
	w.setupBackoff = min(max(2*w.setupBackoff, time.Second), 30*time.Second)
	w.setupRetryAt = time.Now().Add(w.setupBackoff)
}

// fail makes the pod Failed for a reason the agent cannot get past.
func (w *podWorker) fail(pod *v1.Pod, reason, message string) {
	if w.failReason != "" {
		return
	}
	klog.Errorf("Pod %s/%s: failing it: %s", pod.Namespace, pod.Name, message)
	w.failReason, w.failMessage = reason, message
	evReason := kubeletevents.FailedToCreateContainer
	if reason == "UnsupportedVolume" {
		evReason = kubeletevents.FailedMountVolume
	}
	w.event(pod, nil, v1.EventTypeWarning, evReason, "%s", message)
	if w.meta == nil {
		w.meta = &podMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, NetNS: w.a.netnsName(pod.UID), Link: podLinkName(pod.UID)}
	}
	w.meta.FailedReason, w.meta.FailedMessage = reason, message
	if err := os.MkdirAll(w.pd.path(), 0o755); err == nil {
		_ = w.pd.writeMeta(w.meta)
	}
}

// finishTerminal stops whatever still runs of a pod that reached a terminal
// phase and tears down its network; its state (logs) stays until deletion.
func (w *podWorker) finishTerminal(ctx context.Context, pod *v1.Pod) {
	if w.terminalDone {
		return
	}
	w.stopAllProbes()
	if w.meta != nil {
		w.killAll(ctx, pod, false)
		w.teardownSandbox(ctx)
	}
	w.terminalDone = true
	klog.Infof("Pod %s/%s is terminal; its containers are stopped and its network is torn down", pod.Namespace, pod.Name)
}

// syncDeletion finishes a pod being deleted: preStop hooks, graceful stop,
// teardown, and the final API delete (grace 0, UID precondition).
func (w *podWorker) syncDeletion(ctx context.Context) bool {
	pod, removed := w.snapshot()
	if !w.tornDown {
		name := w.name()
		klog.Infof("Pod %s: terminating", name)
		w.stopAllProbes()
		w.killAll(ctx, pod, true)
		if ctx.Err() != nil {
			return false // agent shutting down; finish after restart
		}
		w.teardownSandbox(ctx)
		removeMountDirs(w.a.state, w.pd, string(w.uid))
		if err := os.RemoveAll(w.pd.path()); err != nil {
			klog.Warningf("Pod %s: removing %s: %v", name, w.pd.path(), err)
		}
		w.a.tokens.forget(w.uid)
		w.tornDown = true
		klog.Infof("Pod %s: containers stopped, state removed", name)
	}
	if removed || pod == nil {
		return true
	}
	uid := pod.UID
	err := w.a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptrTo[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	switch {
	case err == nil:
		klog.Infof("Pod %s/%s: deleted", pod.Namespace, pod.Name)
		return true
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return true
	default:
		klog.Warningf("Pod %s/%s: final delete failed (will retry): %v", pod.Namespace, pod.Name, err)
		return false
	}
}

// gracePeriod is the pod's current termination grace period.
func (w *podWorker) gracePeriod() time.Duration {
	pod, removed := w.snapshot()
	g := defaultGracePeriod
	switch {
	case pod == nil:
		g = 2 * time.Second
	case pod.DeletionGracePeriodSeconds != nil:
		g = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		g = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if removed && g > 2*time.Second {
		g = 2 * time.Second // force-deleted
	}
	return g
}

// killAll stops every live container run of the pod (in parallel), running
// preStop hooks first when asked, then kills whatever is left in the pod's
// network namespace.
func (w *podWorker) killAll(ctx context.Context, pod *v1.Pod, preStop bool) {
	start := time.Now()
	deadline := func() time.Time { return start.Add(w.gracePeriod()) }
	names := w.containerNamesOnDisk()
	var wg sync.WaitGroup
	for _, name := range names {
		n := w.pd.latestRun(name)
		if n < 0 {
			continue
		}
		r := loadRun(w.pd, name, n)
		if !r.Alive {
			continue
		}
		var c *v1.Container
		if pod != nil {
			c = findContainer(pod, name)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if preStop && c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil && r.running() {
				hookCtx, cancel := context.WithDeadline(ctx, deadline())
				if err := runHook(hookCtx, c.Lifecycle.PreStop, w.probeTarget(pod, c, r)); err != nil {
					w.event(pod, c, v1.EventTypeWarning, kubeletevents.FailedPreStopHook, "PreStopHook failed: %v", err)
				}
				cancel()
			}
			if pod != nil && c != nil {
				w.event(pod, c, v1.EventTypeNormal, kubeletevents.KillingContainer, "Stopping container %s", name)
			}
			klog.Infof("Pod %s: stopping container %s (run %d)", w.name(), name, n)
			stopRun(w.pd, name, n, w.netIno, deadline)
		}()
	}
	wg.Wait()
	ns := netnsPath(w.a.netnsName(w.uid))
	if w.meta != nil {
		ns = netnsPath(w.meta.NetNS)
	}
	if ino, err := nsInode(ns); err == nil && isNSFS(ns) {
		killProcessesIn(ino, 0, 9)
	}
}

// name is the pod's namespace/name for logs (its UID if unknown).
func (w *podWorker) name() string {
	if pod, _ := w.snapshot(); pod != nil {
		return pod.Namespace + "/" + pod.Name
	}
	if w.meta != nil {
		return w.meta.Namespace + "/" + w.meta.Name
	}
	return string(w.uid)
}

// containerNamesOnDisk lists the containers that have runs on disk.
func (w *podWorker) containerNamesOnDisk() []string {
	entries, err := os.ReadDir(w.pd.path() + "/containers")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

func findContainer(pod *v1.Pod, name string) *v1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// observe reads what is known about a container.
func (w *podWorker) observe(c *v1.Container) containerObservation {
	var o containerObservation
	if n := w.pd.latestRun(c.Name); n >= 0 {
		o.Latest = loadRun(w.pd, c.Name, n)
		if n > 0 {
			o.Previous = loadRun(w.pd, c.Name, n-1)
		}
	}
	if !o.Latest.running() {
		if s := w.ctrs[c.Name]; s != nil && s.waiting != nil {
			o.Waiting = s.waiting
		}
	}
	if o.Latest != nil {
		o.Started, o.Ready = w.probeResults(c, o.Latest.N)
	}
	if c.TerminationMessagePolicy == v1.TerminationMessageFallbackToLogsOnError {
		w.fallbackMessage(c.Name, o.Latest)
		w.fallbackMessage(c.Name, o.Previous)
	}
	return o
}

// fallbackMessage fills a failed run's termination message with the tail
// of its log (terminationMessagePolicy FallbackToLogsOnError), once.
func (w *podWorker) fallbackMessage(name string, r *runState) {
	if r == nil || r.Exit == nil || r.Exit.ExitCode == 0 || r.Exit.Message != "" {
		return
	}
	if msg := logTail(w.pd.logFile(name, r.N), 80, 2048); msg != "" {
		r.Exit.Message = msg
		_ = writeJSON(r.Files.exit(), r.Exit)
	}
}

// logTail returns at most the last maxLines lines and maxBytes bytes of a file.
func logTail(path string, maxLines, maxBytes int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-int64(maxBytes), 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && len(buf) == 0 {
		return ""
	}
	lines := strings.SplitAfter(string(buf), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "")
}

// computeStatus builds the pod's status from disk and worker state.
func (w *podWorker) computeStatus(pod *v1.Pod) v1.PodStatus {
	initDone := true
	var initStatuses, statuses []v1.ContainerStatus
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := containerStatus(pod.UID, c, w.observe(c))
		if !isSidecar(c) {
			done := cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
			cs.Ready = done
			initDone = initDone && done
		}
		initStatuses = append(initStatuses, cs)
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		o := w.observe(c)
		if o.Latest == nil && o.Waiting == nil && !initDone {
			o.Waiting = &v1.ContainerStateWaiting{Reason: waitingPodInitializing}
		}
		statuses = append(statuses, containerStatus(pod.UID, c, o))
	}
	in := statusInput{
		Pod:           pod,
		InitStatuses:  initStatuses,
		Statuses:      statuses,
		SandboxReady:  w.sandboxReady,
		HostIP:        w.a.cfg.NodeIP,
		FailedReason:  w.failReason,
		FailedMessage: w.failMessage,
		Now:           time.Now(),
	}
	if w.meta != nil {
		in.PodIP = w.meta.IP
	}
	return computePodStatus(in)
}

// updateStatus writes the pod's status through pods/status when it changed.
func (w *podWorker) updateStatus(ctx context.Context, pod *v1.Pod, st v1.PodStatus) {
	if w.lastSent != nil && apiequality.Semantic.DeepEqual(*w.lastSent, st) {
		return
	}
	if apiequality.Semantic.DeepEqual(pod.Status, st) {
		w.lastSent = &st
		return
	}
	np := pod.DeepCopy()
	np.Status = st
	updated, err := w.a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, np, metav1.UpdateOptions{})
	if err != nil {
		if apierrors.IsConflict(err) {
			if fresh, gerr := w.a.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); gerr == nil && fresh.UID == pod.UID {
				w.setPod(fresh)
			}
			return
		}
		if !apierrors.IsNotFound(err) {
			klog.Warningf("Pod %s/%s: status update failed: %v", pod.Namespace, pod.Name, err)
		}
		return
	}
	if pod.Status.Phase != st.Phase {
		klog.Infof("Pod %s/%s: phase %s -> %s", pod.Namespace, pod.Name, orNone(string(pod.Status.Phase)), st.Phase)
	}
	logContainerChanges(pod, st)
	w.lastSent = &st
	w.setPod(updated)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// logContainerChanges logs container state transitions between two statuses.
func logContainerChanges(pod *v1.Pod, st v1.PodStatus) {
	describe := func(cs v1.ContainerStatus) string {
		switch {
		case cs.State.Running != nil:
			return fmt.Sprintf("running (ready=%v, restarts=%d)", cs.Ready, cs.RestartCount)
		case cs.State.Terminated != nil:
			return fmt.Sprintf("terminated (%s, exit %d, restarts=%d)", cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.RestartCount)
		case cs.State.Waiting != nil:
			return fmt.Sprintf("waiting (%s)", cs.State.Waiting.Reason)
		}
		return "unknown"
	}
	for _, lists := range [][2][]v1.ContainerStatus{{pod.Status.InitContainerStatuses, st.InitContainerStatuses}, {pod.Status.ContainerStatuses, st.ContainerStatuses}} {
		for _, cs := range lists[1] {
			now := describe(cs)
			before := ""
			if old, ok := findStatus(lists[0], cs.Name); ok {
				before = describe(old)
			}
			if before != now {
				klog.Infof("Pod %s/%s container %s: %s", pod.Namespace, pod.Name, cs.Name, now)
			}
		}
	}
}

// containerRef is the event target for a container of a pod.
func containerRef(pod *v1.Pod, c *v1.Container) *v1.ObjectReference {
	ref := &v1.ObjectReference{
		Kind:            "Pod",
		APIVersion:      "v1",
		Namespace:       pod.Namespace,
		Name:            pod.Name,
		UID:             pod.UID,
		ResourceVersion: pod.ResourceVersion,
	}
	if c != nil {
		ref.FieldPath = fmt.Sprintf("spec.containers{%s}", c.Name)
		for i := range pod.Spec.InitContainers {
			if pod.Spec.InitContainers[i].Name == c.Name {
				ref.FieldPath = fmt.Sprintf("spec.initContainers{%s}", c.Name)
			}
		}
	}
	return ref
}

// event records an event on the pod (or one of its containers).
func (w *podWorker) event(pod *v1.Pod, c *v1.Container, typ, reason, format string, args ...any) {
	if pod == nil {
		return
	}
	w.a.recorder.Eventf(containerRef(pod, c), typ, reason, format, args...)
}

// eventOnce records an event unless the same one was recorded recently.
func (w *podWorker) eventOnce(pod *v1.Pod, c *v1.Container, typ, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	key := reason
	if c != nil {
		key += "/" + c.Name
	}
	if m, ok := w.lastEvents[key]; ok && m.msg == msg && time.Since(m.at) < eventRepeatInterval {
		return
	}
	w.lastEvents[key] = eventMemo{msg: msg, at: time.Now()}
	w.event(pod, c, typ, reason, "%s", msg)
}

// podRef formats a pod as the kubelet does in messages: name_namespace(uid).
func podRef(pod *v1.Pod) string {
	return fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
}
