package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// buildStatic builds testdata/static as a statically linked executable and
// returns its path.
func buildStatic(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "static")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./testdata/static")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/static: %v\n%s", err, b)
	}
	if what, interp := interpreterOf(out); what != "" {
		t.Fatalf("testdata/static is %s (interpreter %s), want a static executable", what, interp)
	}
	return out
}

// dynamicELF returns a dynamically linked executable of the node (true).
func dynamicELF(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		t.Fatal(err)
	}
	if what, _ := interpreterOf(p); what != "a dynamically linked ELF executable" {
		t.Fatalf("%s is not dynamically linked", p)
	}
	return p
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
}

func TestInterpreterOf(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#! /no/such/sh -e\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if what, interp := interpreterOf(script); what != "a script" || interp != "/no/such/sh" {
		t.Errorf("script: %q %q", what, interp)
	}
	if got := missingInterpreter(script); !strings.Contains(got, "interpreter /no/such/sh is not in the container's filesystem") {
		t.Errorf("missingInterpreter(script) = %q", got)
	}
	dyn := dynamicELF(t)
	if _, interp := interpreterOf(dyn); !strings.HasPrefix(interp, "/") {
		t.Errorf("interpreter of %s: %q", dyn, interp)
	}
	// Here its interpreter exists: that is not why an exec would fail.
	if got := missingInterpreter(dyn); got != "" {
		t.Errorf("missingInterpreter(%s) = %q", dyn, got)
	}
	text := filepath.Join(dir, "text")
	if err := os.WriteFile(text, []byte("hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if what, _ := interpreterOf(text); what != "" {
		t.Errorf("text file: %q", what)
	}
}

// TestEmptyRootRunsOnlyWhatItHolds runs containers of an image with
// rootfs: empty (spec.EmptyRoot): only static executables on their volumes
// run; everything else fails as containerd and runc report it.
func TestEmptyRootRunsOnlyWhatItHolds(t *testing.T) {
	requireRoot(t)
	n, podNS, link := labNamespaces(t)
	ctx := context.Background()
	if err := n.setupPod(ctx, podNS, link, "10.244.77.7"); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	_ = os.Chmod(tmp, 0o755)
	_ = os.Chmod(filepath.Dir(tmp), 0o755) // workloads run as 65532
	state := stateDir(filepath.Join(tmp, "state"))
	if err := state.ensure(); err != nil {
		t.Fatal(err)
	}
	pd := state.pod("emptyroot-uid")
	t.Cleanup(func() { removeMountDirs(state, pd, "emptyroot-uid") })
	bin, run := pd.volume("bin"), pd.volume("run")
	for _, d := range []string{bin, run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Chmod(run, 0o777) // an emptyDir
	copyFile(t, buildStatic(t), filepath.Join(bin, "static"), 0o555)
	dyn := dynamicELF(t)
	copyFile(t, dyn, filepath.Join(bin, "dynamic"), 0o555)
	if err := os.WriteFile(filepath.Join(bin, "script"), []byte("#!/bin/sh\necho hi\n"), 0o555); err != nil {
		t.Fatal(err)
	}
	// Executable by root only, and by nobody.
	copyFile(t, filepath.Join(bin, "static"), filepath.Join(bin, "root-only"), 0o500)
	copyFile(t, filepath.Join(bin, "static"), filepath.Join(bin, "not-executable"), 0o444)
	if err := os.WriteFile(pd.resolvConf(), []byte("nameserver 10.96.0.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	uid := int64(65532)
	start := func(name string, argv []string, emptyRoot bool) runFiles {
		t.Helper()
		files := runFiles(pd.runDir(name, 0))
		if err := os.MkdirAll(string(files), 0o755); err != nil {
			t.Fatal(err)
		}
		spec := &RunSpec{
			PodUID: "emptyroot-uid", Namespace: "ns", PodName: "imageless", Container: name,
			NetNS: netnsPath(podNS), Hostname: "imageless",
			Argv: argv, Env: []string{"PATH=" + defaultPath}, UID: &uid, GID: &uid, NoNewPrivs: true,
			Mounts: []Mount{
				{Source: bin, Target: "/kt/agent", ReadOnly: true},
				{Source: run, Target: "/kt/run"},
				{Source: pd.resolvConf(), Target: "/etc/resolv.conf"},
			},
			LogFile: pd.logFile(name, 0), WorkloadFile: files.workload(), ExitFile: files.exit(),
			MountDirsFile: pd.mountDirsFile(), MountLock: state.mountLock(),
		}
		if emptyRoot {
			spec.EmptyRoot, spec.ReadOnlyRoot = files.rootDir(), true
		}
		if err := writeJSON(files.spec(), spec); err != nil {
			t.Fatal(err)
		}
		if _, err := spawnRunner(self, files); err != nil {
			t.Fatal(err)
		}
		return files
	}
	ended := func(name string) (*runState, string) {
		t.Helper()
		r := waitStarted(pd, name, 0, 5*time.Second)
		for deadline := time.Now().Add(5 * time.Second); r.Alive && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			r = loadRun(pd, name, 0)
		}
		if r.Alive || r.Exit == nil {
			t.Fatalf("%s did not end: %+v", name, r)
		}
		log, _ := os.ReadFile(pd.logFile(name, 0))
		return r, string(log)
	}
	runnerLog := func(name string) string {
		b, _ := os.ReadFile(runFiles(pd.runDir(name, 0)).runnerLog())
		return string(b)
	}

	// A static executable on a volume runs, as the container's user, in a
	// read-only root holding only its mounts and what runc adds.
	start("static", []string{"/kt/agent/static", "serve", "/kt/run/static"}, true)
	r := waitStarted(pd, "static", 0, 5*time.Second)
	if !r.running() {
		t.Fatalf("static executable not running: exit %+v\nrunner log: %s", r.Exit, runnerLog("static"))
	}
	var log string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !strings.Contains(log, "serving"); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(pd.logFile("static", 0))
		log = string(b)
	}
	for _, want := range []string{"uid=65532 gid=65532", "root=dev,etc,kt,proc,sys\n", "write /: open /written: read-only file system", "serving"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if st := procStatus(t, r.Workload.PID, "NoNewPrivs"); st["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs %q", st["NoNewPrivs"])
	}
	// Exec probes see the same root: the copy on the emptyDir runs, the
	// node's programs do not exist there.
	tgt := probeTarget{pid: r.Workload.PID, env: []string{"PATH=" + defaultPath}, uid: &uid, gid: &uid}
	p := execProbe("/kt/run/static", "probe", "/kt/run/static")
	if ok, out := runProbe(ctx, p, tgt, 5*time.Second); !ok {
		t.Errorf("exec probe of a file on the emptyDir failed: %s", out)
	}
	if ok, _ := runProbe(ctx, execProbe("/kt/run/static", "probe", "/kt/run/nothing"), tgt, 5*time.Second); ok {
		t.Error("the probe's own verdict was lost")
	}
	for _, argv := range [][]string{{dyn}, {"sh", "-c", "true"}, {"/kt/agent/dynamic"}} {
		if ok, out := runProbe(ctx, execProbe(argv...), tgt, 5*time.Second); ok {
			t.Errorf("exec probe %q succeeded in the empty root: %s", argv, out)
		}
	}
	// kubectl exec (internal/kubeletserver) enters the container the same
	// way, with its root and working directory.
	out, err := exec.Command("nsenter", "-t", fmt.Sprint(r.Workload.PID), "-n", "-m", "-u", "-r", "-w", "--", "/kt/run/static", "probe", "/etc/resolv.conf").CombinedOutput()
	if err != nil {
		t.Errorf("nsenter -r -w into the empty root: %v: %s", err, out)
	}
	if out, err := exec.Command("nsenter", "-t", fmt.Sprint(r.Workload.PID), "-n", "-m", "-u", "-r", "-w", "--", "sh", "-c", "true").CombinedOutput(); err == nil {
		t.Errorf("sh ran in the empty root: %s", out)
	}
	podIno, _ := nsInode(netnsPath(podNS))
	stopRun(pd, "static", 0, podIno, func() time.Time { return time.Now().Add(3 * time.Second) })
	if r = loadRun(pd, "static", 0); r.Alive || r.Exit == nil || r.Exit.Reason != "Completed" {
		t.Errorf("after SIGTERM: %+v", r.Exit)
	}
	// Nothing of the container's root is left on the node.
	if recorded := readLines(pd.mountDirsFile()); len(recorded) != 0 {
		t.Errorf("mount points recorded on the host: %q", recorded)
	}
	if entries, err := os.ReadDir(runFiles(pd.runDir("static", 0)).rootDir()); err != nil || len(entries) != 0 {
		t.Errorf("the container's root on the host: %v %v", entries, err)
	}

	// A dynamically linked executable and a #! script need an interpreter
	// the image does not have: the execve fails once the container has
	// started, as runc 1.2 reports it.
	for name, path := range map[string]string{"dynamic": "/kt/agent/dynamic", "script": "/kt/agent/script"} {
		start(name, []string{path, "arg"}, true)
		r, log := ended(name)
		if r.Exit.ExitCode != 255 || r.Exit.Reason != "Error" || r.Exit.Message != "" || r.Exit.StartedAt.IsZero() {
			t.Errorf("%s: exit %+v", name, r.Exit)
		}
		if want := "exec " + path + ": no such file or directory\n"; log != want {
			t.Errorf("%s: log %q, want %q", name, log, want)
		}
		if rl := runnerLog(name); !strings.Contains(rl, "interpreter") || !strings.Contains(rl, "rootfs: empty") {
			t.Errorf("%s: run-container's log does not say why: %s", name, rl)
		}
	}

	// A command that is not in the container's filesystem does not start.
	const ociPrefix = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: "
	for name, c := range map[string]struct{ argv0, want string }{
		"outside": {dyn, `exec: "` + dyn + `": stat ` + dyn + `: no such file or directory`},
		"bare":    {"true", `exec: "true": executable file not found in $PATH`},
		// runc looks the command up as the container's user.
		"root-only":      {"/kt/agent/root-only", `exec: "/kt/agent/root-only": permission denied`},
		"not-executable": {"/kt/agent/not-executable", `exec: "/kt/agent/not-executable": permission denied`},
	} {
		start(name, []string{c.argv0}, true)
		r, log := ended(name)
		if r.Exit.ExitCode != 128 || r.Exit.Reason != "StartError" || r.Exit.Message != ociPrefix+c.want+": unknown" || r.Workload != nil {
			t.Errorf("%s: exit %+v\nwant message %q", name, r.Exit, ociPrefix+c.want+": unknown")
		}
		if log != "" {
			t.Errorf("%s: log %q", name, log)
		}
	}

	// Without an empty root (an image holding a whole distribution), the
	// same dynamically linked executable runs.
	start("distro", []string{"/kt/agent/dynamic"}, false)
	if r, log := ended("distro"); r.Exit.ExitCode != 0 || r.Exit.Reason != "Completed" || log != "" {
		t.Errorf("dynamic executable on the node's filesystem: exit %+v, log %q\nrunner log: %s", r.Exit, log, runnerLog("distro"))
	}
}

func execProbe(argv ...string) *v1.Probe {
	return &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: argv}}}
}

// TestAgentRunsImagelessPods runs pods the way kt's imageless shadow is run:
// a borrowed image with rootfs: empty (pause), a command that is a static
// executable delivered in a ConfigMap (mode 0555 through a projected
// volume's defaultMode or a configMap item's mode), a copy of it the
// container writes to an emptyDir for its exec readiness probe, as uid 65532
// with no_new_privs and a read-only root, in a pod the restricted Pod
// Security Standard admits, with imagePullPolicy IfNotPresent and a pull
// secret that does not exist (the lab ignores pull secrets: a present image
// needs none). A dynamically linked executable and a command that is not on
// a volume fail as on a real node.
func TestAgentRunsImagelessPods(t *testing.T) {
	static, err := os.ReadFile(buildStatic(t))
	if err != nil {
		t.Fatal(err)
	}
	dynamic, err := os.ReadFile(dynamicELF(t))
	if err != nil {
		t.Fatal(err)
	}
	restricted := func(name, uid string, policy v1.RestartPolicy, command []string, agent v1.VolumeSource) *v1.Pod {
		pod := testPodSpec(name, uid, policy, v1.Container{
			Name:    "shadow",
			Image:   "registry.k8s.io/pause:3.10",
			Command: command,
			VolumeMounts: []v1.VolumeMount{
				{Name: "agent", MountPath: "/kt/agent", ReadOnly: true},
				{Name: "run", MountPath: "/kt/run"},
			},
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
		pod.Spec.Volumes = []v1.Volume{
			{Name: "agent", VolumeSource: agent},
			{Name: "run", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
		}
		return pod
	}
	projected := v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{
		DefaultMode: ptrTo[int32](0o555),
		Sources: []v1.VolumeProjection{{ConfigMap: &v1.ConfigMapProjection{
			LocalObjectReference: v1.LocalObjectReference{Name: "kt-part-static"},
			Items:                []v1.KeyToPath{{Key: "part", Path: "static"}},
		}}},
	}}
	configMap := func(name, key string) v1.VolumeSource {
		return v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: name},
			Items:                []v1.KeyToPath{{Key: "part", Path: key, Mode: ptrTo[int32](0o555)}},
		}}
	}
	shadow := restricted("imageless", "e11b2c3d-0000-4000-8000-000000000011", v1.RestartPolicyAlways,
		[]string{"/kt/agent/static", "serve", "/kt/run/static"}, projected)
	// The image is present: IfNotPresent pulls nothing, so the pull secret
	// (absent here) is never needed.
	shadow.Spec.Containers[0].ImagePullPolicy = v1.PullIfNotPresent
	shadow.Spec.ImagePullSecrets = []v1.LocalObjectReference{{Name: "absent-pull-secret"}}
	shadow.Spec.Containers[0].ReadinessProbe = &v1.Probe{
		ProbeHandler:  v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"/kt/run/static", "probe", "/kt/run/static"}}},
		PeriodSeconds: 1,
	}
	fromConfigMap := restricted("from-configmap", "e12b2c3d-0000-4000-8000-000000000012", v1.RestartPolicyAlways,
		[]string{"/kt/agent/static", "serve", "/kt/run/static"}, configMap("kt-part-static", "static"))
	dyn := restricted("dynamic", "e13b2c3d-0000-4000-8000-000000000013", v1.RestartPolicyNever,
		[]string{"/kt/agent/true"}, configMap("kt-part-dynamic", "true"))
	outside := restricted("outside", "e14b2c3d-0000-4000-8000-000000000014", v1.RestartPolicyNever,
		[]string{"/bin/sleep", "infinity"}, projected)
	// The image's own program (no command) runs as with any other image.
	own := testPodSpec("own", "e15b2c3d-0000-4000-8000-000000000015", v1.RestartPolicyAlways, v1.Container{Name: "pause", Image: "registry.k8s.io/pause:3.10"})
	assertRestricted(t, "the imageless pod", &shadow.ObjectMeta, &shadow.Spec)

	ta := newTestAgentWith(t, func(cfg *Config, tmp string) {
		table := "registry.k8s.io/pause:\n  entrypoint: [/bin/sleep, infinity]\n  rootfs: empty\n"
		if err := os.WriteFile(cfg.ImagesFile, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	},
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kt-part-static"}, BinaryData: map[string][]byte{"part": static}},
		&v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kt-part-dynamic"}, BinaryData: map[string][]byte{"part": dynamic}},
		shadow, fromConfigMap, dyn, outside, own)

	podLog := func(name string) string {
		path, err := ta.a.ContainerLogPath("default", name, "", false)
		if err != nil {
			return err.Error()
		}
		b, _ := os.ReadFile(path)
		return string(b)
	}
	for _, name := range []string{"imageless", "from-configmap"} {
		want := "Running"
		if name == "imageless" {
			want = "Running and Ready (its exec probe runs the copy on the emptyDir)"
		}
		p := ta.waitPod(name, 20*time.Second, want, func(p *v1.Pod) bool {
			return p != nil && p.Status.Phase == v1.PodRunning && (name != "imageless" || podReady(p))
		})
		log := podLog(name)
		for _, w := range []string{"uid=65532 gid=65532", "root=dev,etc,kt,proc,sys\n", "write /: open /written: read-only file system", "serving"} {
			if !strings.Contains(log, w) {
				t.Errorf("%s: log lacks %q:\n%s\nstatus: %s\nevents:\n%s", name, w, log, describeStatus(p), ta.events(name))
			}
		}
		pid, err := ta.a.ContainerPID("default", name, "shadow")
		if err != nil {
			t.Fatal(err)
		}
		st := procStatus(t, pid, "Uid", "NoNewPrivs", "CapEff")
		if st["Uid"] != "65532 65532 65532 65532" || st["NoNewPrivs"] != "1" || st["CapEff"] != "0000000000000000" {
			t.Errorf("%s: workload %v", name, st)
		}
	}

	p := ta.waitPod("dynamic", 20*time.Second, "Failed", func(p *v1.Pod) bool { return p != nil && p.Status.Phase == v1.PodFailed })
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 255 || term.Reason != "Error" {
		t.Errorf("dynamically linked command: %s", describeStatus(p))
	}
	if log := podLog("dynamic"); log != "exec /kt/agent/true: no such file or directory\n" {
		t.Errorf("dynamically linked command: log %q", log)
	}

	p = ta.waitPod("outside", 20*time.Second, "Failed", func(p *v1.Pod) bool { return p != nil && p.Status.Phase == v1.PodFailed })
	const want = `failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: "/bin/sleep": stat /bin/sleep: no such file or directory: unknown`
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 128 || term.Reason != "StartError" || term.Message != want {
		t.Errorf("command outside the volumes: %s\nwant message %q", describeStatus(p), want)
	}
	if ev := ta.events("outside"); !strings.Contains(ev, "Warning Failed spec.containers{shadow}: Error: "+want) {
		t.Errorf("command outside the volumes: events\n%s", ev)
	}

	ta.waitPod("own", 20*time.Second, "Running", func(p *v1.Pod) bool { return p != nil && p.Status.Phase == v1.PodRunning })
}
