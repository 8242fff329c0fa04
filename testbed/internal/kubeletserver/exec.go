package kubeletserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"
	criremotecommand "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	// defaultPath is given to exec'd commands whose container environment has
	// no PATH, as container runtimes do.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// outputIdleGrace: once the command has exited, its output is still
	// relayed while it keeps flowing; after this long without new output (a
	// background child holding stdout open, say) the output is cut off.
	outputIdleGrace = time.Second
)

// handleExec serves /exec/{ns}/{pod}[/{uid}]/{container}?command=...&stdin=1&stdout=1&stderr=1&tty=1
// with the kubelet's streaming code (SPDY v1-v4 and WebSocket channel protocols).
func (s *server) handleExec(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid"), r.PathValue("container")
	opts, err := criremotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 || cmd[0] == "" {
		http.Error(w, `query parameter "command" is required`, http.StatusBadRequest)
		return
	}
	what := fmt.Sprintf("container %q in pod %s/%s", container, ns, pod)
	pid, err := s.rt.ContainerPID(ns, pod, container)
	if err != nil {
		writeLookupError(w, what, err)
		return
	}
	env, err := s.rt.ContainerEnv(ns, pod, container)
	if err != nil {
		writeLookupError(w, what, err)
		return
	}
	ex := &nsenterExecutor{pid: pid, env: env}
	criremotecommand.ServeExec(w, r, ex, pod, types.UID(uid), container, cmd, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

// nsenterExecutor runs a command in the network, mount and UTS namespaces,
// root and working directory of a container process with
// `nsenter -t <pid> -n -m -u -r -w --`. The command gets
// the container's environment (plus PATH and, with a TTY, TERM if missing)
// and its own process group (or session, with a TTY), which is killed when
// the request ends early (server shutdown) or when output can no longer be
// delivered (the client went away; the equivalent of SIGPIPE). A client that
// disconnects while the command runs silently (no output) is not noticed
// until the command writes or exits, as with a real kubelet.
type nsenterExecutor struct {
	pid int
	env []string
}

// ExecInContainer implements criremotecommand.Executor. A command that exits
// non-zero yields a utilexec.CodeExitError, which ServeExec reports to the
// client as that exit code (death by signal N is reported as 128+N, as
// shells do).
func (e *nsenterExecutor) ExecInContainer(ctx context.Context, _ string, _ types.UID, _ string, cmd []string,
	in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// -r and -w without a value take the target's root and working
	// directory, as a runtime starts exec'd processes in the container's.
	args := append([]string{"-t", strconv.Itoa(e.pid), "-n", "-m", "-u", "-r", "-w", "--"}, cmd...)
	c := exec.Command("nsenter", args...)
	c.Env = execEnv(e.env, tty)
	if tty {
		return runWithTTY(ctx, c, in, out, resize)
	}
	return runWithPipes(ctx, c, in, out, errOut)
}

func execEnv(env []string, tty bool) []string {
	out := append([]string(nil), env...)
	has := func(key string) bool {
		for _, kv := range env {
			if strings.HasPrefix(kv, key+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		out = append(out, "PATH="+defaultPath)
	}
	if tty && !has("TERM") {
		out = append(out, "TERM=xterm")
	}
	return out
}

func runWithPipes(ctx context.Context, c *exec.Cmd, in io.Reader, out, errOut io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var (
		toClose  []*os.File // child's ends, closed after Start
		outputs  []*relay
		stdinW   *os.File
		closeAll = func() {
			for _, f := range toClose {
				f.Close()
			}
		}
	)
	if in != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		c.Stdin, stdinW = r, w
		toClose = append(toClose, r)
	}
	mkOut := func(w io.Writer) (*os.File, error) {
		if w == nil {
			return nil, nil // /dev/null
		}
		r, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		toClose = append(toClose, pw)
		outputs = append(outputs, &relay{src: r, dst: w, broken: cancel})
		return pw, nil
	}
	var err error
	var so, se *os.File
	if so, err = mkOut(out); err == nil {
		se, err = mkOut(errOut)
	}
	if err != nil {
		closeAll()
		closeRelays(outputs)
		if stdinW != nil {
			stdinW.Close()
		}
		return err
	}
	if so != nil {
		c.Stdout = so
	}
	if se != nil {
		c.Stderr = se
	}
	if err := c.Start(); err != nil {
		closeAll()
		closeRelays(outputs)
		if stdinW != nil {
			stdinW.Close()
		}
		return fmt.Errorf("start nsenter: %w", err)
	}
	closeAll()
	for _, o := range outputs {
		o.start()
	}
	if stdinW != nil {
		go func() {
			io.Copy(stdinW, in)
			stdinW.Close() // EOF for the command
		}()
	}
	waitErr := waitKillingGroup(ctx, c, -c.Process.Pid)
	if stdinW != nil {
		// The copier may be blocked reading the client; it ends when the
		// stream closes. Closing here makes its next write fail.
		stdinW.Close()
	}
	finishRelays(outputs)
	return exitError(waitErr)
}

// waitKillingGroup waits for the command; if ctx ends first, it kills the
// process group (pgid < 0: the group; the session leader's group for a TTY).
func waitKillingGroup(ctx context.Context, c *exec.Cmd, pgid int) error {
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		syscall.Kill(pgid, syscall.SIGKILL)
		c.Process.Kill()
		<-done
		return ctx.Err()
	}
}

// exitError converts a Wait error into what ServeExec understands.
func exitError(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Exited():
				return utilexec.CodeExitError{Err: err, Code: ws.ExitStatus()}
			case ws.Signaled():
				return utilexec.CodeExitError{Err: err, Code: 128 + int(ws.Signal())}
			}
		}
	}
	return err
}

// relay copies a command's output pipe (or PTY master) to a client stream.
type relay struct {
	src    *os.File
	dst    io.Writer
	broken func() // called once if writing to dst fails
	n      atomic.Int64
	done   chan struct{}
	close  sync.Once
}

func (r *relay) start() {
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		buf := make([]byte, 32*1024)
		for {
			n, err := r.src.Read(buf)
			if n > 0 {
				if r.dst != nil {
					if _, werr := r.dst.Write(buf[:n]); werr != nil {
						// The client is gone. Keep draining so the command never
						// blocks, and tell the owner (who kills the command, as
						// SIGPIPE would).
						r.dst = nil
						if r.broken != nil {
							r.broken()
						}
					}
				}
				r.n.Add(int64(n))
			}
			if err != nil {
				// EOF, or EIO from a PTY master once the terminal is closed.
				return
			}
		}
	}()
}

func closeRelays(rs []*relay) {
	for _, r := range rs {
		r.close.Do(func() { r.src.Close() })
	}
}

// finishRelays waits, after the command exited, for its output to be
// relayed: as long as output keeps flowing, and at most outputIdleGrace
// after it stops, then closes the sources.
func finishRelays(rs []*relay) {
	for _, r := range rs {
		last := r.n.Load()
		for waiting := true; waiting; {
			select {
			case <-r.done:
				waiting = false
			case <-time.After(outputIdleGrace):
				if now := r.n.Load(); now != last {
					last = now
					continue
				}
				klog.V(2).InfoS("exec: output still open after the command exited; cutting it off")
				r.close.Do(func() { r.src.Close() })
				<-r.done
				waiting = false
			}
		}
	}
	closeRelays(rs)
}
