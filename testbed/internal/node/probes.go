package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeKind is one of the three container probes.
type probeKind string

const (
	startupProbe   probeKind = "Startup"
	readinessProbe probeKind = "Readiness"
	livenessProbe  probeKind = "Liveness"
)

// maxProbeOutput bounds what a probe's output contributes to events.
const maxProbeOutput = 10 * 1024

// probeTarget is what a probe or hook acts on: one run of one container.
type probeTarget struct {
	pod       *v1.Pod
	container *v1.Container
	podIP     string
	// pid is the workload's PID, the nsenter target for exec actions.
	pid int
	// env is the container's environment, given to exec actions.
	env []string
	// uid and gid are the container's credentials for exec actions.
	uid, gid *int64
}

// probeParams are a probe's timing parameters with the API defaults applied.
type probeParams struct {
	initialDelay, period, timeout time.Duration
	successThreshold              int
	failureThreshold              int
}

func paramsOf(p *v1.Probe) probeParams {
	or := func(v, def int32) int32 {
		if v <= 0 {
			return def
		}
		return v
	}
	return probeParams{
		initialDelay:     time.Duration(max(p.InitialDelaySeconds, 0)) * time.Second,
		period:           time.Duration(or(p.PeriodSeconds, 10)) * time.Second,
		timeout:          time.Duration(or(p.TimeoutSeconds, 1)) * time.Second,
		successThreshold: int(or(p.SuccessThreshold, 1)),
		failureThreshold: int(or(p.FailureThreshold, 3)),
	}
}

// runProbe performs one probe attempt.
func runProbe(ctx context.Context, p *v1.Probe, t probeTarget, timeout time.Duration) (ok bool, output string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h := p.ProbeHandler
	switch {
	case h.Exec != nil:
		out, err := execIn(ctx, t, h.Exec.Command)
		if ctx.Err() == context.DeadlineExceeded {
			return false, fmt.Sprintf("command %q timed out", strings.Join(h.Exec.Command, " "))
		}
		if err != nil {
			if out == "" {
				out = err.Error()
			}
			return false, out
		}
		return true, out
	case h.HTTPGet != nil:
		return httpAction(ctx, h.HTTPGet, t)
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, t.container)
		if err != nil {
			return false, err.Error()
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = t.podIP
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, fmt.Sprintf("dial tcp %s: %v", addr, errors.Unwrap(err))
		}
		conn.Close()
		return true, ""
	case h.GRPC != nil:
		return grpcProbe(ctx, h.GRPC, t)
	}
	return false, "probe has no handler"
}

// execIn runs a command inside the container's network, mount and UTS
// namespaces (nsenter on the workload), with the container's environment and
// credentials, and returns its combined output.
func execIn(ctx context.Context, t probeTarget, command []string) (string, error) {
	if len(command) == 0 {
		return "", errors.New("no command")
	}
	if t.pid <= 0 {
		return "", errors.New("container is not running")
	}
	args := []string{"-t", strconv.Itoa(t.pid), "-n", "-m", "-u"}
	if t.gid != nil {
		args = append(args, "--setgid", strconv.FormatInt(*t.gid, 10))
	}
	if t.uid != nil {
		if t.gid == nil {
			args = append(args, "--setgid", "0")
		}
		args = append(args, "--setuid", strconv.FormatInt(*t.uid, 10))
	}
	args = append(append(args, "--"), command...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = t.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.String(), ctx.Err()
	}
}

// httpAction performs an httpGet probe or hook from the node to the pod.
func httpAction(ctx context.Context, g *v1.HTTPGetAction, t probeTarget) (bool, string) {
	port, err := resolvePort(g.Port, t.container)
	if err != nil {
		return false, err.Error()
	}
	host := g.Host
	if host == "" {
		host = t.podIP
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if path == "" {
		path = "/"
	} else if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	full, err := url.Parse(u.String() + path)
	if err != nil {
		return false, err.Error()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, full.String(), nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", "kube-probe/1.34")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Sprintf("Get %q: %v", full.String(), errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeOutput))
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return true, ""
	}
	return false, fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode) + bodySuffix(body)
}

func bodySuffix(body []byte) string {
	if len(body) == 0 {
		return ""
	}
	return ": " + strings.TrimSpace(string(body))
}

// grpcProbe performs a gRPC health check against the pod.
func grpcProbe(ctx context.Context, g *v1.GRPCAction, t probeTarget) (bool, string) {
	addr := net.JoinHostPort(t.podIP, strconv.Itoa(int(g.Port)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent("kube-probe/1.34"))
	if err != nil {
		return false, err.Error()
	}
	defer conn.Close()
	svc := ""
	if g.Service != nil {
		svc = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		return false, fmt.Sprintf("failed to connect service %q within %v: %v", addr, time.Until(deadlineOr(ctx)), err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return false, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus())
	}
	return true, ""
}

func deadlineOr(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now()
}

// resolvePort turns a port number or a container port name into a number.
func resolvePort(p intstr.IntOrString, c *v1.Container) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal <= 0 || p.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port number: %d", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil && n > 0 && n <= 65535 {
		return n, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("couldn't find port: %v in %v", p.StrVal, c.Name)
}

// limitedBuffer keeps the first maxProbeOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxProbeOutput - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}

// probeLoop runs one probe for one container run until ctx ends. It waits
// for the initial delay (counted from the container's start), then probes
// every period, and calls report whenever the thresholded result is
// established or changes, and fail for every failed attempt.
func probeLoop(ctx context.Context, kind probeKind, p *v1.Probe, startedAt time.Time, target func() (probeTarget, bool), report func(ok bool), fail func(output string)) {
	params := paramsOf(p)
	if d := time.Until(startedAt.Add(params.initialDelay)); d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	ticker := time.NewTicker(params.period)
	defer ticker.Stop()
	successes, failures := 0, 0
	var last *bool
	for {
		t, ok := target()
		if ok {
			res, out := runProbe(ctx, p, t, params.timeout)
			if ctx.Err() != nil {
				return
			}
			if res {
				successes, failures = successes+1, 0
			} else {
				successes, failures = 0, failures+1
				fail(out)
			}
			var verdict *bool
			switch {
			case successes >= params.successThreshold:
				verdict = ptrTo(true)
			case failures >= params.failureThreshold:
				verdict = ptrTo(false)
			}
			// Liveness and startup failures are reported on every attempt past
			// the threshold (the worker acts once per run); others on change.
			if verdict != nil && (last == nil || *last != *verdict || (!*verdict && kind != readinessProbe)) {
				last = verdict
				report(*verdict)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
