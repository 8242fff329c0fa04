package node

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// assertRestricted fails the test unless the pod passes the restricted Pod
// Security Standard, checked by the admission plugin's own code.
func assertRestricted(t *testing.T, what string, meta *metav1.ObjectMeta, spec *v1.PodSpec) {
	t.Helper()
	eval, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		t.Fatal(err)
	}
	res := policy.AggregateCheckResults(eval.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}, meta, spec))
	if !res.Allowed {
		t.Errorf("%s violates the restricted Pod Security Standard: %s", what, res.ForbiddenDetail())
	}
}

// restrictedEchoPod is the echo app as a restricted namespace admits it,
// serving HTTP on port 80 as uid 65532.
func restrictedEchoPod(name, uid string) *v1.Pod {
	pod := testPodSpec(name, uid, v1.RestartPolicyAlways, v1.Container{
		Name:  "echo",
		Image: "kt.invalid/echo:latest",
		Env: []v1.EnvVar{
			{Name: "HTTP_PORT", Value: "80"},
			{Name: "POD_NAME", ValueFrom: fieldRef("metadata.name")},
		},
		Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 80}},
		SecurityContext: &v1.SecurityContext{
			AllowPrivilegeEscalation: ptrTo(false),
			Capabilities:             &v1.Capabilities{Drop: []v1.Capability{"ALL"}},
			ReadOnlyRootFilesystem:   ptrTo(true),
		},
	})
	pod.Spec.SecurityContext = &v1.PodSecurityContext{
		RunAsNonRoot:   ptrTo(true),
		RunAsUser:      ptrTo[int64](65532),
		RunAsGroup:     ptrTo[int64](65532),
		SeccompProfile: &v1.SeccompProfile{Type: v1.SeccompProfileTypeRuntimeDefault},
	}
	return pod
}

func TestShippedEchoExampleIsRestricted(t *testing.T) {
	data, err := os.ReadFile("../../examples/echo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, doc := range strings.Split(string(data), "\n---") {
		var d appsv1.Deployment
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatal(err)
		}
		if d.Kind != "Deployment" {
			continue
		}
		found = true
		tpl := d.Spec.Template
		assertRestricted(t, "Deployment "+d.Name, &tpl.ObjectMeta, &tpl.Spec)
		if sc := tpl.Spec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("Deployment %s must name its non-root user (runAsUser), as the image's is root", d.Name)
		}
	}
	if !found {
		t.Fatal("examples/echo.yaml has no Deployment")
	}
	assertRestricted(t, "the agent test's pod", &restrictedEchoPod("p", "u").ObjectMeta, &restrictedEchoPod("p", "u").Spec)
}

// procStatus reads the named fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int, fields ...string) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		for _, want := range fields {
			if k == want {
				out[k] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return out
}

// TestAgentRunsARestrictedPodAsItsUser runs the echo image the way the lab
// does — {ktlab}, with the ktlab binary reached through a directory only root
// can search, as ~/.cache/kt/lab is under /root — in a pod a restricted
// namespace admits: uid 65532, no capabilities, serving on port 80.
func TestAgentRunsARestrictedPodAsItsUser(t *testing.T) {
	pod := restrictedEchoPod("web80", "a9b2c3d4-0000-4000-8000-000000000009")
	ta := newTestAgentWith(t, func(cfg *Config, tmp string) {
		private := filepath.Join(tmp, "root-home")
		if err := os.Mkdir(private, 0o700); err != nil {
			t.Fatal(err)
		}
		ktlab := filepath.Join(private, "ktlab")
		if err := os.Symlink(cfg.Ktlab, ktlab); err != nil {
			t.Fatal(err)
		}
		cfg.Ktlab = ktlab
		if err := os.WriteFile(cfg.ImagesFile, []byte("kt.invalid/echo:\n  entrypoint: [\"{ktlab}\", \"echo\"]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}, pod)

	p := ta.waitPod("web80", 20*time.Second, "Running", func(p *v1.Pod) bool {
		return p != nil && p.Status.Phase == v1.PodRunning && p.Status.PodIP != ""
	})
	// The echo app answers on port 80, reached from the node.
	url := "http://" + net.JoinHostPort(p.Status.PodIP, "80") + "/hello"
	var reply struct {
		Pod  string `json:"pod"`
		Path string `json:"path"`
	}
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for reply.Pod == "" && time.Now().Before(deadline) {
		inNetNS(t, ta.net.hostNS, func() {
			body, err := httpGetHere(url)
			if err != nil {
				last = err.Error()
				return
			}
			if err := json.Unmarshal(body, &reply); err != nil {
				last = fmt.Sprintf("%v: %q", err, body)
			}
		})
		if reply.Pod == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if reply.Pod != "web80" || reply.Path != "/hello" {
		logPath, _ := ta.a.ContainerLogPath("default", "web80", "echo", false)
		log, _ := os.ReadFile(logPath)
		p, _ := ta.client.CoreV1().Pods("default").Get(t.Context(), "web80", metav1.GetOptions{})
		t.Fatalf("GET %s: %+v (last error: %s)\nstatus: %s\nevents:\n%s\nlog:\n%s", url, reply, last, describeStatus(p), ta.events("web80"), log)
	}

	// The workload runs as the pod's user, with no capabilities and no way to
	// gain privileges, from the agent's image store.
	pid, err := ta.a.ContainerPID("default", "web80", "echo")
	if err != nil {
		t.Fatal(err)
	}
	st := procStatus(t, pid, "Uid", "Gid", "Groups", "CapEff", "CapPrm", "NoNewPrivs")
	for k, want := range map[string]string{
		"Uid": "65532 65532 65532 65532", "Gid": "65532 65532 65532 65532", "Groups": "",
		"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "NoNewPrivs": "1",
	} {
		if st[k] != want {
			t.Errorf("workload %s: %q, want %q", k, st[k], want)
		}
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	if store := stateDir(ta.cfg.StateDir).imagesDir(); !strings.HasPrefix(exe, store+"/") || filepath.Base(exe) != "ktlab" {
		t.Errorf("workload runs %s, want the store's copy in %s", exe, store)
	}
}

// httpGetHere sends GET url from the calling OS thread's network namespace
// (net/http would dial from another goroutine, on another thread).
func httpGetHere(url string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("tcp", req.URL.Host, 3*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req.Close = true
	if err := req.Write(c); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, b.String())
	}
	return []byte(b.String()), nil
}
