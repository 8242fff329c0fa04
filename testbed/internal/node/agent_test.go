package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// testAgent runs a whole agent against a fake API server, with real
// processes in throwaway network namespaces (prefix ktlabtest-q).
type testAgent struct {
	t      *testing.T
	client *fake.Clientset
	cfg    Config
	net    *netManager
	cancel context.CancelFunc
	done   chan error
	a      *Agent
}

func newTestAgent(t *testing.T, objects ...runtime.Object) *testAgent {
	return newTestAgentWith(t, nil, objects...)
}

// newTestAgentWith is newTestAgent with the configuration changed by tweak
// (given the test's temporary directory, which every user can search) before
// the agent starts.
func newTestAgentWith(t *testing.T, tweak func(cfg *Config, tmp string), objects ...runtime.Object) *testAgent {
	requireRoot(t)
	n, _, _ := labNamespaces(t)
	tmp := t.TempDir()
	_ = os.Chmod(tmp, 0o755)
	_ = os.Chmod(filepath.Dir(tmp), 0o755)
	images := filepath.Join(tmp, "images.yaml")
	if err := os.WriteFile(images, []byte("kt.invalid/shell:\n  cmd: [/bin/sh]\n  aliases: [busybox]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	objects = append(objects,
		&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "testnode"}, Spec: v1.NodeSpec{PodCIDR: "10.244.78.0/24"}},
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": "CERT"}},
		&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes"}, Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []v1.ServicePort{{Name: "https", Port: 443}}}},
	)
	client := fake.NewSimpleClientset(objects...)
	client.PrependReactor("create", "serviceaccounts", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		tr.Status.Token = "token-for-" + tr.Spec.BoundObjectRef.Name
		tr.Status.ExpirationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
		return true, tr, nil
	})
	cfg := Config{
		NodeName: "testnode", NodeIP: "10.88.77.1", StateDir: filepath.Join(tmp, "state"),
		ImagesFile: images, Ktlab: self, HostNetNS: n.hostNS, podNSPrefix: "ktlabtest-q",
	}
	if tweak != nil {
		tweak(&cfg, tmp)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	ta := &testAgent{t: t, client: client, cfg: cfg, net: n}
	ta.start()
	t.Cleanup(func() {
		ta.stop()
		// Leave nothing behind: kill what is recorded, remove the test's netns.
		uids, _ := stateDir(cfg.StateDir).podUIDs()
		for _, uid := range uids {
			pd := stateDir(cfg.StateDir).pod(uid)
			killRecorded(pd)
			if m, err := pd.readMeta(); err == nil {
				_ = n.teardownPod(context.Background(), m.NetNS, m.Link, m.IP)
			}
			removeMountDirs(stateDir(cfg.StateDir), pd, string(uid))
		}
		removeStrayNetworks(context.Background(), n, "ktlabtest-q", nil)
	})
	return ta
}

func (ta *testAgent) start() {
	ctx, cancel := context.WithCancel(context.Background())
	ta.cancel, ta.done = cancel, make(chan error, 1)
	ta.a = newAgent(ta.cfg, ta.client, ta.net)
	go func() { ta.done <- ta.a.run(ctx) }()
}

func (ta *testAgent) stop() {
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	select {
	case err := <-ta.done:
		if err != nil {
			ta.t.Errorf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		ta.t.Error("agent did not stop")
	}
	ta.cancel = nil
}

// waitPod polls the pod until cond holds.
func (ta *testAgent) waitPod(name string, timeout time.Duration, what string, cond func(*v1.Pod) bool) *v1.Pod {
	ta.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *v1.Pod
	for time.Now().Before(deadline) {
		p, err := ta.client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		} else if apierrors.IsNotFound(err) && cond(nil) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	ta.t.Fatalf("pod %s: timed out waiting for %s; last status: %s", name, what, describeStatus(last))
	return nil
}

func describeStatus(p *v1.Pod) string {
	if p == nil {
		return "(none)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s reason=%s msg=%q", p.Status.Phase, p.Status.Reason, p.Status.Message)
	for _, c := range p.Status.Conditions {
		fmt.Fprintf(&b, " %s=%s", c.Type, c.Status)
	}
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, " [%s restarts=%d ready=%v state=%+v last=%+v]", cs.Name, cs.RestartCount, cs.Ready, cs.State, cs.LastTerminationState)
	}
	return b.String()
}

func (ta *testAgent) events(name string) string {
	list, _ := ta.client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	var b strings.Builder
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			fmt.Fprintf(&b, "%s %s %s: %s\n", e.Type, e.Reason, e.InvolvedObject.FieldPath, e.Message)
		}
	}
	return b.String()
}

func testPodSpec(name, uid string, policy v1.RestartPolicy, ctrs ...v1.Container) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(uid)},
		Spec:       v1.PodSpec{NodeName: "testnode", RestartPolicy: policy, Containers: ctrs, TerminationGracePeriodSeconds: ptrTo[int64](5)},
		Status:     v1.PodStatus{Phase: v1.PodPending},
	}
}

func TestAgentLifecycle(t *testing.T) {
	mnt := t.TempDir()
	_ = os.Chmod(mnt, 0o755)
	web := testPodSpec("web", "a1b2c3d4-0000-4000-8000-000000000001", v1.RestartPolicyAlways, v1.Container{
		Name:    "app",
		Image:   "kt.invalid/shell:latest",
		Command: []string{"sh", "-c"},
		Args: []string{`echo "hello $(POD_NAME) $GREETING"; echo "ns=$(cat $MNT/sa/namespace) token=$(cat $MNT/sa/token) ca=$(cat $MNT/sa/ca.crt)"
echo "cfg=$(cat $MNT/config/greeting)"; touch $MNT/scratch/ready; exec sleep 300`},
		Env: []v1.EnvVar{
			{Name: "POD_NAME", ValueFrom: fieldRef("metadata.name")},
			{Name: "GREETING", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "greeting"}}},
			{Name: "MNT", Value: mnt},
		},
		VolumeMounts: []v1.VolumeMount{
			{Name: "cfg", MountPath: mnt + "/config"},
			{Name: "sa", MountPath: mnt + "/sa"},
			{Name: "scratch", MountPath: mnt + "/scratch"},
		},
		ReadinessProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"test", "-f", mnt + "/scratch/ready"}}}, PeriodSeconds: 1},
	})
	web.Spec.Volumes = []v1.Volume{
		{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
		{Name: "sa", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
			{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptrTo[int64](3607)}},
			{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &v1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		}}}},
	}
	shell := func(script string) v1.Container {
		return v1.Container{Name: "main", Image: "kt.invalid/shell", Args: []string{"sh", "-c", script}}
	}
	job := testPodSpec("job", "b1b2c3d4-0000-4000-8000-000000000002", v1.RestartPolicyNever, shell("echo done; exit 3"))
	crash := testPodSpec("crash", "c1b2c3d4-0000-4000-8000-000000000003", v1.RestartPolicyAlways, shell("exit 1"))
	badImage := testPodSpec("bad-image", "d1b2c3d4-0000-4000-8000-000000000004", v1.RestartPolicyAlways, v1.Container{Name: "main", Image: "kt.invalid/nope:v1"})
	hostPath := testPodSpec("hostpath", "e1b2c3d4-0000-4000-8000-000000000005", v1.RestartPolicyAlways, shell("sleep 1"))
	hostPath.Spec.Volumes = []v1.Volume{{Name: "h", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/"}}}}
	withInit := testPodSpec("init", "f1b2c3d4-0000-4000-8000-000000000006", v1.RestartPolicyOnFailure, shell("echo main"))
	withInit.Spec.InitContainers = []v1.Container{{Name: "first", Image: "busybox", Command: []string{"sh", "-c", "echo init"}}}
	sidecar := testPodSpec("sidecar", "11b2c3d4-0000-4000-8000-000000000008", v1.RestartPolicyNever, shell("sleep 1; echo main done"))
	sidecar.Spec.InitContainers = []v1.Container{{Name: "helper", Image: "busybox", Command: []string{"sleep", "300"}, RestartPolicy: ptrTo(v1.ContainerRestartPolicyAlways)}}
	otherNode := testPodSpec("elsewhere", "01b2c3d4-0000-4000-8000-000000000007", v1.RestartPolicyAlways, shell("sleep 1"))
	otherNode.Spec.NodeName = "another-node"

	ta := newTestAgent(t,
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cfg"}, Data: map[string]string{"greeting": "hi"}},
		web, job, crash, badImage, hostPath, withInit, sidecar, otherNode)

	p := ta.waitPod("web", 20*time.Second, "Running and Ready", func(p *v1.Pod) bool {
		return p != nil && p.Status.Phase == v1.PodRunning && podReady(p)
	})
	if p.Status.PodIP == "" || !strings.HasPrefix(p.Status.PodIP, "10.244.78.") || p.Status.HostIP != "10.88.77.1" {
		t.Errorf("IPs: pod %q host %q", p.Status.PodIP, p.Status.HostIP)
	}
	cs := p.Status.ContainerStatuses[0]
	if cs.ContainerID != "ktlab://a1b2c3d4-0000-4000-8000-000000000001-app-0" || cs.RestartCount != 0 || cs.State.Running == nil {
		t.Errorf("container status %+v", cs)
	}
	logPath, err := ta.a.ContainerLogPath("default", "web", "", false)
	if err != nil {
		t.Fatal(err)
	}
	logData, _ := os.ReadFile(logPath)
	for _, want := range []string{"hello web hi", "ns=default token=token-for-web ca=CERT", "cfg=hi"} {
		if !strings.Contains(string(logData), want) {
			t.Errorf("log lacks %q:\n%s", want, logData)
		}
	}
	if _, err := ta.a.ContainerLogPath("default", "web", "app", true); err == nil {
		t.Error("previous log of a first run")
	}
	env, err := ta.a.ContainerEnv("default", "web", "app")
	if err != nil || !strings.Contains(strings.Join(env, "\n"), "KUBERNETES_SERVICE_HOST=10.96.0.1") {
		t.Errorf("ContainerEnv: %v %v", env, err)
	}
	pid, err := ta.a.ContainerPID("default", "web", "app")
	if err != nil || pid <= 0 {
		t.Fatalf("ContainerPID: %d %v", pid, err)
	}
	nsPath, err := ta.a.PodNetNSPath("default", "web", "")
	if err != nil || !strings.HasPrefix(filepath.Base(nsPath), "ktlabtest-qa1b2c3d4") {
		t.Errorf("PodNetNSPath: %q %v", nsPath, err)
	}
	if _, err := ta.a.ContainerPID("default", "nope", ""); err == nil {
		t.Error("ContainerPID of an unknown pod")
	}

	ta.waitPod("job", 20*time.Second, "Failed", func(p *v1.Pod) bool {
		return p != nil && p.Status.Phase == v1.PodFailed
	})
	ta.waitPod("init", 20*time.Second, "Succeeded", func(p *v1.Pod) bool {
		return p != nil && p.Status.Phase == v1.PodSucceeded && len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Terminated != nil
	})
	ta.waitPod("sidecar", 20*time.Second, "Succeeded once the main container ended (sidecar stopped)", func(p *v1.Pod) bool {
		return p != nil && p.Status.Phase == v1.PodSucceeded && len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Terminated != nil
	})
	ta.waitPod("crash", 20*time.Second, "CrashLoopBackOff", func(p *v1.Pod) bool {
		if p == nil || len(p.Status.ContainerStatuses) == 0 {
			return false
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount >= 1 && cs.State.Waiting != nil && cs.State.Waiting.Reason == waitingCrashLoopBackOff && cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.ExitCode == 1
	})
	p = ta.waitPod("bad-image", 20*time.Second, "image pull failure", func(p *v1.Pod) bool {
		if p == nil || len(p.Status.ContainerStatuses) == 0 {
			return false
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w != nil && (w.Reason == waitingErrImagePull || w.Reason == waitingImagePullBackOff)
	})
	if p.Status.Phase != v1.PodPending || !strings.Contains(p.Status.ContainerStatuses[0].State.Waiting.Message, `image "kt.invalid/nope:v1" is not in the lab's image table`) {
		t.Errorf("bad image: %s", describeStatus(p))
	}
	ta.waitPod("hostpath", 20*time.Second, "Failed (unsupported volume)", func(p *v1.Pod) bool {
		return p != nil && p.Status.Phase == v1.PodFailed && p.Status.Reason == "UnsupportedVolume"
	})
	if ev := ta.events("bad-image"); !strings.Contains(ev, `Warning Failed spec.containers{main}: Failed to pull image "kt.invalid/nope:v1"`) {
		t.Errorf("bad-image events:\n%s", ev)
	}
	if ev := ta.events("web"); !strings.Contains(ev, "Normal Started spec.containers{app}: Started container app") {
		t.Errorf("web events:\n%s", ev)
	}
	if p, _ := ta.client.CoreV1().Pods("default").Get(context.Background(), "elsewhere", metav1.GetOptions{}); p.Status.Phase != v1.PodPending || len(p.Status.ContainerStatuses) != 0 {
		t.Errorf("a pod of another node was touched: %s", describeStatus(p))
	}
	// The job's network is gone, its logs are not.
	if m, err := stateDir(ta.cfg.StateDir).pod("b1b2c3d4-0000-4000-8000-000000000002").readMeta(); err != nil || isNSFS(netnsPath(m.NetNS)) {
		t.Errorf("terminal pod: meta %v, err %v (netns must be gone)", m, err)
	}
	if lp, err := ta.a.ContainerLogPath("default", "job", "main", false); err != nil {
		t.Error(err)
	} else if b, _ := os.ReadFile(lp); string(b) != "done\n" {
		t.Errorf("job log %q", b)
	}

	// An agent restart keeps the pod running, untouched.
	ta.stop()
	if !(procRef{PID: pid}).alive() {
		t.Fatal("stopping the agent killed a pod")
	}
	ta.start()
	time.Sleep(3 * time.Second)
	p = ta.waitPod("web", 20*time.Second, "still Running and Ready after an agent restart", func(p *v1.Pod) bool {
		return p != nil && p.Status.Phase == v1.PodRunning && podReady(p)
	})
	if p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("container restarted across the agent restart: %s", describeStatus(p))
	}
	if pid2, _ := ta.a.ContainerPID("default", "web", "app"); pid2 != pid {
		t.Errorf("pid %d after restart, was %d", pid2, pid)
	}

	// Graceful deletion: the agent stops the container, cleans up and deletes the pod.
	now := metav1.Now()
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, ptrTo[int64](5)
	if _, err := ta.client.CoreV1().Pods("default").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ta.waitPod("web", 20*time.Second, "deleted", func(p *v1.Pod) bool { return p == nil })
	if (procRef{PID: pid}).alive() {
		t.Error("the container survived the pod's deletion")
	}
	if fileExists(stateDir(ta.cfg.StateDir).pod("a1b2c3d4-0000-4000-8000-000000000001").path()) {
		t.Error("pod state not removed")
	}
	if fileExists(netnsPath("ktlabtest-qa1b2c3d4")) {
		t.Error("pod netns not removed")
	}
	if fileExists(mnt + "/config") {
		t.Error("mount point created for the pod not removed")
	}

	// A pod removed from the API while the agent is down is cleaned up at start.
	ta.stop()
	if err := ta.client.CoreV1().Pods("default").Delete(context.Background(), "crash", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ta.start()
	deadline := time.Now().Add(20 * time.Second)
	for fileExists(stateDir(ta.cfg.StateDir).pod("c1b2c3d4-0000-4000-8000-000000000003").path()) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if fileExists(stateDir(ta.cfg.StateDir).pod("c1b2c3d4-0000-4000-8000-000000000003").path()) {
		t.Error("orphaned pod state not cleaned up at start")
	}
}

func podReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}
