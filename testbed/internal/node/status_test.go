package node

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)

func running(n int) *runState {
	return &runState{N: n, Alive: true, Workload: &workloadInfo{procRef: procRef{PID: 42}, StartedAt: t0}}
}

func exited(n int, code int32) *runState {
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	return &runState{N: n, Workload: &workloadInfo{StartedAt: t0}, Exit: &exitInfo{ExitCode: code, Reason: reason, StartedAt: t0, FinishedAt: t0.Add(time.Second)}}
}

func podWith(policy v1.RestartPolicy, inits []string, ctrs ...string) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1"},
		Spec:       v1.PodSpec{RestartPolicy: policy},
	}
	for _, n := range inits {
		p.Spec.InitContainers = append(p.Spec.InitContainers, v1.Container{Name: n, Image: "kt.invalid/shell"})
	}
	for _, n := range ctrs {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: n, Image: "kt.invalid/echo:1"})
	}
	p.Status.Conditions = []v1.PodCondition{{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: metav1.NewTime(t0.Add(-time.Hour).Truncate(time.Second))}}
	return p
}

// status builds the pod status from observations keyed by container name.
func status(pod *v1.Pod, obs map[string]containerObservation, now time.Time) v1.PodStatus {
	var inits, ctrs []v1.ContainerStatus
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := containerStatus(pod.UID, c, obs[c.Name])
		cs.Ready = cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
		inits = append(inits, cs)
	}
	for i := range pod.Spec.Containers {
		ctrs = append(ctrs, containerStatus(pod.UID, &pod.Spec.Containers[i], obs[pod.Spec.Containers[i].Name]))
	}
	return computePodStatus(statusInput{Pod: pod, InitStatuses: inits, Statuses: ctrs, SandboxReady: true, PodIP: "10.244.0.9", HostIP: "10.88.0.1", Now: now})
}

func cond(st v1.PodStatus, t v1.PodConditionType) v1.PodCondition {
	if c := findCondition(st.Conditions, t); c != nil {
		return *c
	}
	return v1.PodCondition{}
}

func TestStatusRunning(t *testing.T) {
	pod := podWith(v1.RestartPolicyAlways, nil, "app")
	st := status(pod, map[string]containerObservation{"app": {Latest: running(0), Started: true, Ready: true}}, t0)
	if st.Phase != v1.PodRunning {
		t.Fatalf("phase %s", st.Phase)
	}
	for _, ct := range []v1.PodConditionType{v1.PodReadyToStartContainers, v1.PodInitialized, v1.ContainersReady, v1.PodReady, v1.PodScheduled} {
		if c := cond(st, ct); c.Status != v1.ConditionTrue {
			t.Errorf("condition %s = %+v", ct, c)
		}
	}
	// Order: the scheduler's condition first, then ours as the kubelet orders them.
	if st.Conditions[0].Type != v1.PodScheduled || st.Conditions[1].Type != v1.PodReadyToStartContainers || st.Conditions[3].Type != v1.PodReady {
		t.Errorf("condition order %v", st.Conditions)
	}
	cs := st.ContainerStatuses[0]
	if cs.State.Running == nil || !cs.Ready || cs.Started == nil || !*cs.Started || cs.RestartCount != 0 {
		t.Fatalf("container status %+v", cs)
	}
	if cs.ContainerID != "ktlab://uid-1-app-0" || cs.ImageID != "ktlab://kt.invalid/echo:1" || cs.Image != "kt.invalid/echo:1" {
		t.Errorf("ids %q %q %q", cs.ContainerID, cs.ImageID, cs.Image)
	}
	if !cs.State.Running.StartedAt.Time.Equal(t0.Truncate(time.Second)) {
		t.Errorf("startedAt %v not truncated to seconds", cs.State.Running.StartedAt)
	}
	if st.PodIP != "10.244.0.9" || st.PodIPs[0].IP != "10.244.0.9" || st.HostIP != "10.88.0.1" || st.HostIPs[0].IP != "10.88.0.1" {
		t.Errorf("IPs %+v", st)
	}
	if st.QOSClass != v1.PodQOSBestEffort || st.StartTime == nil {
		t.Errorf("qos %q start %v", st.QOSClass, st.StartTime)
	}
	// PodScheduled kept its time; ours got "now".
	if !cond(st, v1.PodScheduled).LastTransitionTime.Time.Equal(t0.Add(-time.Hour).Truncate(time.Second)) {
		t.Error("PodScheduled transition time changed")
	}

	// Unchanged statuses keep their transition times; changed ones move.
	pod.Status = st
	later := t0.Add(time.Minute)
	st2 := status(pod, map[string]containerObservation{"app": {Latest: running(0), Started: true, Ready: true}}, later)
	if !cond(st2, v1.PodReady).LastTransitionTime.Time.Equal(cond(st, v1.PodReady).LastTransitionTime.Time) {
		t.Error("Ready transition time moved without a change")
	}
	st3 := status(pod, map[string]containerObservation{"app": {Latest: running(0), Started: true, Ready: false}}, later)
	if c := cond(st3, v1.PodReady); c.Status != v1.ConditionFalse || !c.LastTransitionTime.Time.Equal(later.Truncate(time.Second)) || c.Message != "containers with unready status: [app]" || c.Reason != reasonContainersNotReady {
		t.Errorf("Ready after readiness failure: %+v", c)
	}
	if !*st3.ContainerStatuses[0].Started || st3.ContainerStatuses[0].Ready {
		t.Error("unready container reported ready")
	}
}

func TestStatusCrashLoop(t *testing.T) {
	pod := podWith(v1.RestartPolicyAlways, nil, "app")
	w := &v1.ContainerStateWaiting{Reason: waitingCrashLoopBackOff, Message: "back-off 10s restarting failed container=app pod=p_ns(uid-1)"}
	st := status(pod, map[string]containerObservation{"app": {Latest: exited(2, 1), Previous: exited(1, 1), Waiting: w}}, t0)
	cs := st.ContainerStatuses[0]
	if st.Phase != v1.PodRunning {
		t.Errorf("phase %s, want Running (restarting)", st.Phase)
	}
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != waitingCrashLoopBackOff || cs.RestartCount != 2 {
		t.Fatalf("state %+v restarts %d", cs.State, cs.RestartCount)
	}
	lt := cs.LastTerminationState.Terminated
	if lt == nil || lt.ExitCode != 1 || lt.Reason != "Error" || lt.ContainerID != "ktlab://uid-1-app-2" {
		t.Fatalf("lastState %+v", lt)
	}
	if cond(st, v1.PodReady).Status != v1.ConditionFalse {
		t.Error("crash-looping pod is ready")
	}
}

func TestStatusRestartedKeepsLastState(t *testing.T) {
	pod := podWith(v1.RestartPolicyAlways, nil, "app")
	st := status(pod, map[string]containerObservation{"app": {Latest: running(3), Previous: exited(2, 137), Started: true, Ready: true}}, t0)
	cs := st.ContainerStatuses[0]
	if cs.State.Running == nil || cs.RestartCount != 3 || cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 137 {
		t.Fatalf("status %+v", cs)
	}
}

func TestStatusTerminalPhases(t *testing.T) {
	cases := []struct {
		policy v1.RestartPolicy
		codes  []int32
		want   v1.PodPhase
		reason string
	}{
		{v1.RestartPolicyNever, []int32{0, 0}, v1.PodSucceeded, reasonPodCompleted},
		{v1.RestartPolicyNever, []int32{0, 2}, v1.PodFailed, reasonPodFailed},
		{v1.RestartPolicyOnFailure, []int32{0, 0}, v1.PodSucceeded, reasonPodCompleted},
		{v1.RestartPolicyOnFailure, []int32{0, 1}, v1.PodRunning, reasonContainersNotReady},
		{v1.RestartPolicyAlways, []int32{0, 0}, v1.PodRunning, reasonContainersNotReady},
	}
	for _, c := range cases {
		pod := podWith(c.policy, nil, "a", "b")
		obs := map[string]containerObservation{"a": {Latest: exited(0, c.codes[0])}, "b": {Latest: exited(0, c.codes[1])}}
		st := status(pod, obs, t0)
		if st.Phase != c.want {
			t.Errorf("%s %v: phase %s, want %s", c.policy, c.codes, st.Phase, c.want)
		}
		if r := cond(st, v1.ContainersReady).Reason; r != c.reason {
			t.Errorf("%s %v: ContainersReady reason %q, want %q", c.policy, c.codes, r, c.reason)
		}
		if ts := st.ContainerStatuses[0].State.Terminated; ts == nil || ts.Reason != "Completed" || !ts.FinishedAt.Time.Equal(t0.Add(time.Second).Truncate(time.Second)) {
			t.Errorf("terminated state %+v", ts)
		}
	}
}

func TestStatusTerminalPhaseIsFinal(t *testing.T) {
	pod := podWith(v1.RestartPolicyNever, nil, "app")
	pod.Status.Phase = v1.PodSucceeded
	st := status(pod, map[string]containerObservation{"app": {}}, t0)
	if st.Phase != v1.PodSucceeded {
		t.Fatalf("terminal phase regressed to %s", st.Phase)
	}
}

func TestStatusInitContainers(t *testing.T) {
	pod := podWith(v1.RestartPolicyAlways, []string{"init1", "init2"}, "app")
	st := status(pod, map[string]containerObservation{
		"init1": {Latest: exited(0, 0)},
		"init2": {Latest: running(0)},
		"app":   {Waiting: &v1.ContainerStateWaiting{Reason: waitingPodInitializing}},
	}, t0)
	if st.Phase != v1.PodPending {
		t.Fatalf("phase %s", st.Phase)
	}
	if c := cond(st, v1.PodInitialized); c.Status != v1.ConditionFalse || c.Message != "containers with incomplete status: [init2]" || c.Reason != reasonContainersNotInitialized {
		t.Errorf("Initialized %+v", c)
	}
	if !st.InitContainerStatuses[0].Ready || st.InitContainerStatuses[1].Ready {
		t.Errorf("init readiness %+v", st.InitContainerStatuses)
	}
	if w := st.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != waitingPodInitializing {
		t.Errorf("app state %+v", st.ContainerStatuses[0].State)
	}

	st = status(pod, map[string]containerObservation{
		"init1": {Latest: exited(0, 0)},
		"init2": {Latest: exited(0, 0)},
		"app":   {Latest: running(0), Started: true, Ready: true},
	}, t0)
	if st.Phase != v1.PodRunning || cond(st, v1.PodInitialized).Status != v1.ConditionTrue || cond(st, v1.PodReady).Status != v1.ConditionTrue {
		t.Fatalf("after init: phase %s conditions %+v", st.Phase, st.Conditions)
	}

	never := podWith(v1.RestartPolicyNever, []string{"init1"}, "app")
	st = status(never, map[string]containerObservation{"init1": {Latest: exited(0, 3)}}, t0)
	if st.Phase != v1.PodFailed {
		t.Fatalf("failed init with Never: phase %s", st.Phase)
	}
}

func TestStatusWaitingAndFailed(t *testing.T) {
	pod := podWith(v1.RestartPolicyAlways, nil, "app")
	msg := `failed to pull image "kt.invalid/nope": image "kt.invalid/nope" is not in the lab's image table (testbed/images.yaml)`
	st := status(pod, map[string]containerObservation{"app": {Waiting: &v1.ContainerStateWaiting{Reason: waitingErrImagePull, Message: msg}}}, t0)
	cs := st.ContainerStatuses[0]
	if st.Phase != v1.PodPending || cs.State.Waiting.Reason != waitingErrImagePull || cs.State.Waiting.Message != msg || cs.RestartCount != 0 || cs.ContainerID != "" {
		t.Fatalf("phase %s status %+v", st.Phase, cs)
	}
	if c := containerStatus(pod.UID, &pod.Spec.Containers[0], containerObservation{}); c.State.Waiting.Reason != waitingContainerCreating {
		t.Fatalf("never started: %+v", c.State)
	}

	failed := computePodStatus(statusInput{Pod: pod, Statuses: []v1.ContainerStatus{cs}, FailedReason: "UnsupportedVolume", FailedMessage: "volume \"x\": hostPath volumes are not supported", Now: t0})
	if failed.Phase != v1.PodFailed || failed.Reason != "UnsupportedVolume" || cond(failed, v1.PodReadyToStartContainers).Status != v1.ConditionFalse {
		t.Fatalf("failed pod: %+v", failed)
	}
}

func TestStatusReadinessGates(t *testing.T) {
	pod := podWith(v1.RestartPolicyAlways, nil, "app")
	pod.Spec.ReadinessGates = []v1.PodReadinessGate{{ConditionType: "example.com/ready"}}
	obs := map[string]containerObservation{"app": {Latest: running(0), Started: true, Ready: true}}
	st := status(pod, obs, t0)
	if c := cond(st, v1.PodReady); c.Status != v1.ConditionFalse || c.Reason != reasonReadinessGatesNotReady {
		t.Fatalf("Ready with a missing gate: %+v", c)
	}
	pod.Status.Conditions = append(pod.Status.Conditions, v1.PodCondition{Type: "example.com/ready", Status: v1.ConditionTrue})
	st = status(pod, obs, t0)
	if cond(st, v1.PodReady).Status != v1.ConditionTrue || cond(st, "example.com/ready").Status != v1.ConditionTrue {
		t.Fatalf("gate condition lost or Ready false: %+v", st.Conditions)
	}
}

func TestCrashBackoff(t *testing.T) {
	want := []time.Duration{0, 0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for k, w := range want {
		if got := crashBackoff(k); got != w {
			t.Errorf("crashBackoff(%d) = %s, want %s", k, got, w)
		}
	}
}
