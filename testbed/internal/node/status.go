package node

import (
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/apis/core/v1/helper/qos"
)

// Condition reasons, as the kubelet spells them.
const (
	reasonPodCompleted             = "PodCompleted"
	reasonPodFailed                = "PodFailed"
	reasonContainersNotReady       = "ContainersNotReady"
	reasonContainersNotInitialized = "ContainersNotInitialized"
	reasonReadinessGatesNotReady   = "ReadinessGatesNotReady"
)

// Container waiting reasons.
const (
	waitingContainerCreating = "ContainerCreating"
	waitingPodInitializing   = "PodInitializing"
	waitingCrashLoopBackOff  = "CrashLoopBackOff"
	waitingErrImagePull      = "ErrImagePull"
	waitingImagePullBackOff  = "ImagePullBackOff"
	waitingConfigError       = "CreateContainerConfigError"
	waitingCreateError       = "CreateContainerError"
)

// reasonStartError is the terminated reason of a container whose process
// the runtime could not start (exit code 128).
const reasonStartError = "StartError"

// runState is the agent's view of one run of a container, read from disk.
type runState struct {
	N        int
	Files    runFiles
	Runner   *procRef
	Workload *workloadInfo
	Exit     *exitInfo
	// Alive is true while run-container or the workload still runs and no
	// exit has been recorded.
	Alive bool
}

// started reports whether the workload of a live run has been started.
func (r *runState) running() bool { return r != nil && r.Alive && r.Workload != nil }

// containerObservation is what the pod worker knows about one container;
// containerStatus turns it into the API's ContainerStatus.
type containerObservation struct {
	// Latest is the most recent run (nil if the container never ran) and
	// Previous the one before it.
	Latest, Previous *runState
	// Waiting, when the container is not running, says why (image pull
	// failure, configuration error, crash-loop back-off).
	Waiting *v1.ContainerStateWaiting
	// Started is true once the startup probe (if any) has succeeded; Ready
	// once the readiness probe (if any) has.
	Started, Ready bool
}

// containerID is the runtime ID the lab reports for a run.
func containerID(podUID types.UID, name string, run int) string {
	return fmt.Sprintf("ktlab://%s-%s-%d", podUID, name, run)
}

func apiTime(t time.Time) metav1.Time {
	if t.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(t).Rfc3339Copy()
}

func terminatedState(podUID types.UID, name string, r *runState) *v1.ContainerStateTerminated {
	if r == nil || r.Exit == nil {
		return nil
	}
	e := r.Exit
	started := e.StartedAt
	if r.Workload != nil && !r.Workload.StartedAt.IsZero() {
		started = r.Workload.StartedAt
	}
	return &v1.ContainerStateTerminated{
		ExitCode:    e.ExitCode,
		Signal:      e.Signal,
		Reason:      e.Reason,
		Message:     e.Message,
		StartedAt:   apiTime(started),
		FinishedAt:  apiTime(e.FinishedAt),
		ContainerID: containerID(podUID, name, r.N),
	}
}

// containerStatus computes a container's status from what the worker observed.
func containerStatus(podUID types.UID, c *v1.Container, o containerObservation) v1.ContainerStatus {
	cs := v1.ContainerStatus{Name: c.Name, Image: c.Image, Started: ptrTo(false)}
	if o.Latest == nil {
		w := o.Waiting
		if w == nil {
			w = &v1.ContainerStateWaiting{Reason: waitingContainerCreating}
		}
		cs.State.Waiting = w.DeepCopy()
		return cs
	}
	r := o.Latest
	cs.RestartCount = int32(r.N)
	cs.ImageID = "ktlab://" + c.Image
	cs.ContainerID = containerID(podUID, c.Name, r.N)
	switch {
	case r.Alive && r.Exit == nil:
		if r.Workload == nil {
			cs.State.Waiting = &v1.ContainerStateWaiting{Reason: waitingContainerCreating}
		} else {
			cs.State.Running = &v1.ContainerStateRunning{StartedAt: apiTime(r.Workload.StartedAt)}
			cs.Started = ptrTo(o.Started)
			cs.Ready = o.Started && o.Ready
		}
		if t := terminatedState(podUID, c.Name, o.Previous); t != nil {
			cs.LastTerminationState.Terminated = t
		}
	case o.Waiting != nil:
		cs.State.Waiting = o.Waiting.DeepCopy()
		cs.LastTerminationState.Terminated = terminatedState(podUID, c.Name, r)
	default:
		cs.State.Terminated = terminatedState(podUID, c.Name, r)
		if cs.State.Terminated == nil {
			cs.State.Waiting = &v1.ContainerStateWaiting{Reason: waitingContainerCreating}
		}
		if t := terminatedState(podUID, c.Name, o.Previous); t != nil {
			cs.LastTerminationState.Terminated = t
		}
	}
	return cs
}

// isSidecar reports whether an init container is a restartable one.
func isSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}

func findStatus(statuses []v1.ContainerStatus, name string) (v1.ContainerStatus, bool) {
	for _, s := range statuses {
		if s.Name == name {
			return s, true
		}
	}
	return v1.ContainerStatus{}, false
}

// podPhase is the kubelet's getPhase (without the alpha ContainerRestartRules).
// statuses holds init and regular container statuses.
func podPhase(spec *v1.PodSpec, statuses []v1.ContainerStatus, podHasInitialized bool) v1.PodPhase {
	pendingSidecars, pendingInit, failedInit := 0, 0, 0
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		if isSidecar(c) {
			continue
		}
		s, ok := findStatus(statuses, c.Name)
		switch {
		case !ok:
			pendingInit++
		case s.State.Running != nil:
			pendingInit++
		case s.State.Terminated != nil:
			if s.State.Terminated.ExitCode != 0 {
				failedInit++
			}
		case s.State.Waiting != nil:
			if t := s.LastTerminationState.Terminated; t != nil {
				if t.ExitCode != 0 {
					failedInit++
				}
			} else {
				pendingInit++
			}
		default:
			pendingInit++
		}
	}
	unknown, running, waiting, stopped, succeeded := 0, 0, 0, 0, 0
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		if !isSidecar(c) {
			continue
		}
		s, ok := findStatus(statuses, c.Name)
		switch {
		case !ok:
			unknown++
		case s.State.Running != nil:
			if s.Started == nil || !*s.Started {
				pendingSidecars++
			}
			running++
		case s.State.Terminated != nil:
		case s.State.Waiting != nil:
			if s.LastTerminationState.Terminated == nil {
				pendingSidecars++
				waiting++
			}
		default:
			pendingSidecars++
			unknown++
		}
	}
	for i := range spec.Containers {
		s, ok := findStatus(statuses, spec.Containers[i].Name)
		switch {
		case !ok:
			unknown++
		case s.State.Running != nil:
			running++
		case s.State.Terminated != nil:
			stopped++
			if s.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case s.State.Waiting != nil:
			if s.LastTerminationState.Terminated != nil {
				stopped++
			} else {
				waiting++
			}
		default:
			unknown++
		}
	}
	if failedInit > 0 && spec.RestartPolicy == v1.RestartPolicyNever {
		return v1.PodFailed
	}
	switch {
	case pendingInit > 0 || (pendingSidecars > 0 && !podHasInitialized):
		return v1.PodPending
	case waiting > 0:
		return v1.PodPending
	case running > 0 && unknown == 0:
		return v1.PodRunning
	case running == 0 && stopped > 0 && unknown == 0:
		if spec.RestartPolicy == v1.RestartPolicyAlways {
			return v1.PodRunning
		}
		if stopped == succeeded {
			return v1.PodSucceeded
		}
		if spec.RestartPolicy == v1.RestartPolicyNever {
			return v1.PodFailed
		}
		return v1.PodRunning
	default:
		return v1.PodPending
	}
}

// hasRegularContainerStarted reports whether any regular container has run.
func hasRegularContainerStarted(spec *v1.PodSpec, statuses []v1.ContainerStatus) bool {
	for i := range spec.Containers {
		s, ok := findStatus(statuses, spec.Containers[i].Name)
		if !ok {
			continue
		}
		if s.State.Running != nil || s.State.Terminated != nil || s.LastTerminationState.Terminated != nil {
			return true
		}
	}
	return false
}

// initializedCondition is the kubelet's GeneratePodInitializedCondition.
func initializedCondition(spec *v1.PodSpec, initStatuses, statuses []v1.ContainerStatus, phase v1.PodPhase) v1.PodCondition {
	var unknown, incomplete []string
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		s, ok := findStatus(initStatuses, c.Name)
		if !ok {
			unknown = append(unknown, c.Name)
			continue
		}
		if isSidecar(c) {
			if s.Started == nil || !*s.Started {
				incomplete = append(incomplete, c.Name)
			}
		} else if !s.Ready {
			incomplete = append(incomplete, c.Name)
		}
	}
	cond := v1.PodCondition{Type: v1.PodInitialized, Status: v1.ConditionTrue}
	if phase == v1.PodSucceeded && len(unknown) == 0 {
		cond.Reason = reasonPodCompleted
		return cond
	}
	if hasRegularContainerStarted(spec, statuses) {
		return cond
	}
	var msgs []string
	if len(unknown) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with unknown status: %s", unknown))
	}
	if len(incomplete) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with incomplete status: %s", incomplete))
	}
	if len(msgs) > 0 {
		cond.Status, cond.Reason, cond.Message = v1.ConditionFalse, reasonContainersNotInitialized, strings.Join(msgs, ", ")
	}
	return cond
}

// containersReadyCondition is the kubelet's GenerateContainersReadyCondition.
func containersReadyCondition(spec *v1.PodSpec, initStatuses, statuses []v1.ContainerStatus, phase v1.PodPhase) v1.PodCondition {
	var unknown, unready []string
	check := func(name string, list []v1.ContainerStatus) {
		if s, ok := findStatus(list, name); !ok {
			unknown = append(unknown, name)
		} else if !s.Ready {
			unready = append(unready, name)
		}
	}
	for i := range spec.InitContainers {
		if isSidecar(&spec.InitContainers[i]) {
			check(spec.InitContainers[i].Name, initStatuses)
		}
	}
	for i := range spec.Containers {
		check(spec.Containers[i].Name, statuses)
	}
	cond := v1.PodCondition{Type: v1.ContainersReady, Status: v1.ConditionFalse}
	if phase == v1.PodSucceeded && len(unknown) == 0 {
		cond.Reason = reasonPodCompleted
		return cond
	}
	if phase == v1.PodFailed {
		cond.Reason = reasonPodFailed
		return cond
	}
	var msgs []string
	if len(unknown) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with unknown status: %s", unknown))
	}
	if len(unready) > 0 {
		msgs = append(msgs, fmt.Sprintf("containers with unready status: %s", unready))
	}
	if len(msgs) > 0 {
		cond.Reason, cond.Message = reasonContainersNotReady, strings.Join(msgs, ", ")
		return cond
	}
	cond.Status = v1.ConditionTrue
	return cond
}

// readyCondition is the kubelet's GeneratePodReadyCondition.
func readyCondition(spec *v1.PodSpec, containersReady v1.PodCondition, conditions []v1.PodCondition) v1.PodCondition {
	cond := v1.PodCondition{Type: v1.PodReady, Status: containersReady.Status, Reason: containersReady.Reason, Message: containersReady.Message}
	if containersReady.Status != v1.ConditionTrue {
		return cond
	}
	var msgs []string
	for _, rg := range spec.ReadinessGates {
		c := findCondition(conditions, rg.ConditionType)
		if c == nil {
			msgs = append(msgs, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", string(rg.ConditionType)))
		} else if c.Status != v1.ConditionTrue {
			msgs = append(msgs, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", string(rg.ConditionType), c.Status))
		}
	}
	if len(msgs) > 0 {
		cond.Status, cond.Reason, cond.Message = v1.ConditionFalse, reasonReadinessGatesNotReady, strings.Join(msgs, ", ")
	}
	return cond
}

func findCondition(conds []v1.PodCondition, t v1.PodConditionType) *v1.PodCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// statusInput is what computePodStatus works from.
type statusInput struct {
	Pod          *v1.Pod
	InitStatuses []v1.ContainerStatus
	Statuses     []v1.ContainerStatus
	// SandboxReady: the pod's network namespace exists and is configured.
	SandboxReady bool
	PodIP        string
	HostIP       string
	// FailedReason and FailedMessage, when set, fail the pod (the agent
	// cannot run it at all).
	FailedReason, FailedMessage string
	Now                         time.Time
}

// computePodStatus derives the pod's status from the container statuses and
// the pod's previous status (conditions keep their transition times; a
// terminal phase never changes back).
func computePodStatus(in statusInput) v1.PodStatus {
	pod := in.Pod
	old := pod.Status
	st := *old.DeepCopy()
	now := apiTime(in.Now)

	all := append(append([]v1.ContainerStatus{}, in.InitStatuses...), in.Statuses...)
	podHasInitialized := hasRegularContainerStarted(&pod.Spec, in.Statuses)
	if c := findCondition(old.Conditions, v1.PodInitialized); c != nil && c.Status == v1.ConditionTrue {
		podHasInitialized = true
	}
	phase := podPhase(&pod.Spec, all, podHasInitialized)
	if in.FailedReason != "" {
		phase = v1.PodFailed
		st.Reason, st.Message = in.FailedReason, in.FailedMessage
	}
	if old.Phase == v1.PodSucceeded || old.Phase == v1.PodFailed {
		phase = old.Phase
	}
	st.Phase = phase

	if in.HostIP != "" {
		st.HostIP = in.HostIP
		st.HostIPs = []v1.HostIP{{IP: in.HostIP}}
	}
	if in.PodIP != "" {
		st.PodIP = in.PodIP
		st.PodIPs = []v1.PodIP{{IP: in.PodIP}}
	}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	if st.QOSClass == "" {
		st.QOSClass = qos.GetPodQOS(pod)
	}
	st.InitContainerStatuses = in.InitStatuses
	st.ContainerStatuses = in.Statuses

	sandbox := v1.PodCondition{Type: v1.PodReadyToStartContainers, Status: v1.ConditionFalse}
	if in.SandboxReady {
		sandbox.Status = v1.ConditionTrue
	}
	initialized := initializedCondition(&pod.Spec, in.InitStatuses, in.Statuses, phase)
	containersReady := containersReadyCondition(&pod.Spec, in.InitStatuses, in.Statuses, phase)
	ready := readyCondition(&pod.Spec, containersReady, old.Conditions)
	ours := []v1.PodCondition{sandbox, initialized, ready, containersReady}
	if findCondition(old.Conditions, v1.PodScheduled) == nil {
		ours = append(ours, v1.PodCondition{Type: v1.PodScheduled, Status: v1.ConditionTrue})
	}
	st.Conditions = mergeConditions(old.Conditions, ours, now)
	return st
}

// mergeConditions replaces the conditions of the same types as ours in old
// (keeping order and others' conditions) and appends the new ones. A
// condition whose status did not change keeps its lastTransitionTime.
func mergeConditions(old, ours []v1.PodCondition, now metav1.Time) []v1.PodCondition {
	byType := map[v1.PodConditionType]v1.PodCondition{}
	for _, c := range ours {
		if prev := findCondition(old, c.Type); prev != nil && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
			c.LastProbeTime = prev.LastProbeTime
			c.ObservedGeneration = prev.ObservedGeneration
		} else {
			c.LastTransitionTime = now
		}
		byType[c.Type] = c
	}
	out := make([]v1.PodCondition, 0, len(old)+len(ours))
	for _, c := range old {
		if n, ok := byType[c.Type]; ok {
			out = append(out, n)
			delete(byType, c.Type)
		} else {
			out = append(out, c)
		}
	}
	for _, c := range ours {
		if n, ok := byType[c.Type]; ok {
			out = append(out, n)
		}
	}
	return out
}
