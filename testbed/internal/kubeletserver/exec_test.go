package kubeletserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	proxyutil "k8s.io/apimachinery/pkg/util/proxy"
	apiproxy "k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"kt.dev/testbed/internal/testnetns"
)

// newExecServer serves a pod whose container process is this test process:
// nsenter into our own namespaces is harmless.
func newExecServer(t *testing.T) *testServer {
	return startServer(t, &fakeRuntime{pid: os.Getpid(), env: []string{"FOO=bar from the container env"}})
}

type execResult struct {
	stdout, stderr string
	err            error
}

// execQuery builds the query an API server sends to a kubelet (the kubelet
// spells the stream flags input/output/error/tty).
func execQuery(cmd []string, stdin, tty bool) string {
	q := url.Values{}
	for _, c := range cmd {
		q.Add("command", c)
	}
	q.Set(v1.ExecStdoutParam, "1")
	if !tty {
		q.Set(v1.ExecStderrParam, "1")
	}
	if stdin {
		q.Set(v1.ExecStdinParam, "1")
	}
	if tty {
		q.Set(v1.ExecTTYParam, "1")
	}
	return q.Encode()
}

// execSPDY runs a command the way kubectl exec does against a kubelet (the
// API server speaks SPDY to the kubelet).
func execSPDY(t *testing.T, s *testServer, path string, cmd []string, stdin string, tty bool, size *remotecommand.TerminalSize) execResult {
	t.Helper()
	u, _ := url.Parse(s.base + path + "?" + execQuery(cmd, stdin != "", tty))
	ex, err := remotecommand.NewSPDYExecutor(s.restConfig(), http.MethodPost, u)
	if err != nil {
		t.Fatal(err)
	}
	return stream(t, ex, stdin, tty, size)
}

func stream(t *testing.T, ex remotecommand.Executor, stdin string, tty bool, size *remotecommand.TerminalSize) execResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	opts := remotecommand.StreamOptions{Stdout: &stdout, Tty: tty}
	if !tty {
		opts.Stderr = &stderr
	}
	if stdin != "" {
		opts.Stdin = strings.NewReader(stdin)
	}
	if size != nil {
		opts.TerminalSizeQueue = &oneSize{size: size, ctx: ctx}
	}
	err := ex.StreamWithContext(ctx, opts)
	return execResult{stdout.String(), stderr.String(), err}
}

// oneSize reports one terminal size, then nothing until the end.
type oneSize struct {
	size *remotecommand.TerminalSize
	sent bool
	ctx  context.Context
}

func (q *oneSize) Next() *remotecommand.TerminalSize {
	if !q.sent {
		q.sent = true
		return q.size
	}
	<-q.ctx.Done()
	return nil
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	// client-go reports a k8s.io/client-go/util/exec.CodeExitError.
	var ee interface {
		error
		Exited() bool
		ExitStatus() int
	}
	if !errors.As(err, &ee) || !ee.Exited() {
		t.Fatalf("error %v (%T) carries no exit code", err, err)
	}
	return ee.ExitStatus()
}

func TestExecEchoReturnsStdout(t *testing.T) {
	s := newExecServer(t)
	r := execSPDY(t, s, "/exec/default/pod1/app", []string{"echo", "hi"}, "", false, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stdout != "hi\n" {
		t.Fatalf("stdout %q, want %q", r.stdout, "hi\n")
	}
}

func TestExecExitCodeReachesClient(t *testing.T) {
	s := newExecServer(t)
	r := execSPDY(t, s, "/exec/default/pod1/uid1/app", []string{"sh", "-c", "exit 3"}, "", false, nil)
	if code := exitCode(t, r.err); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
}

func TestExecMissingCommandReportsExitCode127(t *testing.T) {
	s := newExecServer(t)
	r := execSPDY(t, s, "/exec/default/pod1/app", []string{"/nonexistent/binary"}, "", false, nil)
	if code := exitCode(t, r.err); code != 127 {
		t.Fatalf("exit code %d, want 127 (stderr %q)", code, r.stderr)
	}
}

func TestExecStdinStderrAndContainerEnv(t *testing.T) {
	s := newExecServer(t)
	r := execSPDY(t, s, "/exec/default/pod1/app", []string{"sh", "-c", `cat; echo "$FOO" >&2`}, "line one\nline two\n", false, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stdout != "line one\nline two\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	if r.stderr != "bar from the container env\n" {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestExecTTYAppliesTerminalSize(t *testing.T) {
	s := newExecServer(t)
	r := execSPDY(t, s, "/exec/default/pod1/app", []string{"sh", "-c", `stty size; echo "$TERM"; exit 5`}, "", true,
		&remotecommand.TerminalSize{Width: 123, Height: 45})
	if code := exitCode(t, r.err); code != 5 {
		t.Fatalf("exit code %d, want 5", code)
	}
	if r.stdout != "45 123\r\nxterm\r\n" {
		t.Fatalf("terminal output %q", r.stdout)
	}
}

func TestExecUnknownContainerIs404(t *testing.T) {
	s := newExecServer(t)
	resp, err := s.httpClient(t).Post(s.base+"/exec/default/pod1/nosuch?"+execQuery([]string{"true"}, false, false), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
}

func TestAttachIs501(t *testing.T) {
	s := newExecServer(t)
	resp, err := s.httpClient(t).Post(s.base+"/attach/default/pod1/app?output=1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("status %d, want 501", resp.StatusCode)
	}
}

// TestExecWebSocketV5ThroughAPIServerTranslator runs kubectl's default exec
// path: v5 WebSocket to the API server, whose stream translator (the same
// k8s.io/apiserver code, mounted here) speaks SPDY to our server.
func TestExecWebSocketV5ThroughAPIServerTranslator(t *testing.T) {
	s := newExecServer(t)
	cmd := []string{"sh", "-c", "echo out; echo err >&2; exit 7"}
	location, _ := url.Parse(s.base + "/exec/default/pod1/app?" + execQuery(cmd, false, false))
	transport := &http.Transport{TLSClientConfig: s.pki.clientTLS(t)}
	upgrade := proxyutil.NewUpgradeAwareHandler(location, transport, false, true, testResponder{t})
	translator := apiproxy.NewStreamTranslatorHandler(location, transport, 0, apiproxy.Options{Stdout: true, Stderr: true})
	apiserver := httptest.NewServer(apiproxy.NewTranslatingHandler(upgrade, translator, wsstream.IsWebSocketRequestWithStreamCloseProtocol))
	defer apiserver.Close()

	ex, err := remotecommand.NewWebSocketExecutor(&rest.Config{Host: apiserver.URL}, http.MethodGet,
		apiserver.URL+"/api/v1/namespaces/default/pods/pod1/exec?"+execQuery(cmd, false, false))
	if err != nil {
		t.Fatal(err)
	}
	r := stream(t, ex, "", false, nil)
	if code := exitCode(t, r.err); code != 7 {
		t.Fatalf("exit code %d, want 7", code)
	}
	if r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
}

func TestExecRunsInTheContainersNetworkNamespaceAndDirectory(t *testing.T) {
	ns := testnetns.New(t)
	// The "container": a process inside the throwaway namespace.
	// nsenter execs sleep in place (no fork), so the pid is sleep's.
	sleeper := exec.Command("nsenter", "--net="+ns, "--", "sleep", "60")
	sleeper.Dir = t.TempDir()
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	// Wait until the switch has happened.
	want, _ := os.Readlink("/proc/self/ns/net")
	self := want
	for deadline := time.Now().Add(5 * time.Second); want == self; {
		if time.Now().After(deadline) {
			t.Fatal("the sleeper never entered its namespace")
		}
		time.Sleep(10 * time.Millisecond)
		want, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid))
	}
	s := startServer(t, &fakeRuntime{pid: sleeper.Process.Pid})
	r := execSPDY(t, s, "/exec/default/pod1/app", []string{"sh", "-c", "readlink /proc/self/ns/net; pwd"}, "", false, nil)
	if r.err != nil {
		t.Fatal(r.err, r.stderr)
	}
	if r.stdout != want+"\n"+sleeper.Dir+"\n" {
		t.Fatalf("exec printed %q, want the container's namespace %s and working directory %s", r.stdout, want, sleeper.Dir)
	}
}
