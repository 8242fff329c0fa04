package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// loadRun reads run n of a container from disk and works out whether it is
// still alive. A run whose processes are gone without an exit record gets
// one (exit code 137, ContainerStatusUnknown), so the result is stable.
func loadRun(pd podDir, name string, n int) *runState {
	files := runFiles(pd.runDir(name, n))
	r := &runState{N: n, Files: files}
	var ref procRef
	if readJSON(files.runner(), &ref) == nil {
		r.Runner = &ref
	}
	var wl workloadInfo
	if readJSON(files.workload(), &wl) == nil {
		r.Workload = &wl
	}
	// Liveness first, then the exit record: run-container writes exit.json
	// before it exits, so a dead runner without one really lost it.
	alive := (r.Runner != nil && r.Runner.alive()) || (r.Workload != nil && r.Workload.alive())
	var ex exitInfo
	if readJSON(files.exit(), &ex) == nil {
		r.Exit = &ex
	}
	if r.Exit == nil && !alive {
		if r.Runner == nil && r.Workload == nil && time.Since(modTime(files.spec())) < 10*time.Second {
			// Being spawned right now.
			r.Alive = true
			return r
		}
		r.Exit = &exitInfo{
			ExitCode:   137,
			Reason:     "ContainerStatusUnknown",
			Message:    "The container could not be located: run-container ended without recording an exit status",
			FinishedAt: time.Now(),
		}
		if r.Workload != nil {
			r.Exit.StartedAt = r.Workload.StartedAt
		}
		if err := writeJSON(files.exit(), r.Exit); err != nil {
			klog.Warningf("Recording the lost exit of %s: %v", files, err)
		}
	}
	r.Alive = alive && r.Exit == nil
	return r
}

func modTime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// spawnRunner starts `ktlab run-container <spec>` in a new session, records
// its pid in runner.json and reaps it in the background.
func spawnRunner(ktlab string, files runFiles) (procRef, error) {
	logf, err := os.OpenFile(files.runnerLog(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return procRef{}, err
	}
	defer logf.Close()
	cmd := exec.Command(ktlab, "run-container", files.spec())
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + defaultPath}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return procRef{}, fmt.Errorf("starting run-container: %w", err)
	}
	ref, err := procRefOf(cmd.Process.Pid)
	if err != nil {
		ref = procRef{PID: cmd.Process.Pid}
	}
	go func() { _ = cmd.Wait() }() // reap; state is read from disk
	if err := writeJSON(files.runner(), &ref); err != nil {
		return ref, err
	}
	return ref, nil
}

// waitStarted waits (up to timeout) until a freshly spawned run has started
// its workload or ended.
func waitStarted(pd podDir, name string, n int, timeout time.Duration) *runState {
	deadline := time.Now().Add(timeout)
	for {
		r := loadRun(pd, name, n)
		if r.Workload != nil || r.Exit != nil || time.Now().After(deadline) {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopRun stops a run: SIGTERM to the workload's process group (or to
// run-container, which forwards it, if the workload is not known yet), then,
// once deadline() has passed, SIGKILL to the group and to every process left
// in the container's mount namespace within the pod's network namespace
// (netIno). It returns when the run has ended.
func stopRun(pd podDir, name string, n int, netIno uint64, deadline func() time.Time) {
	r := loadRun(pd, name, n)
	if !r.Alive {
		return
	}
	term := func(sig syscall.Signal) {
		if r.Workload != nil {
			_ = r.Workload.signalGroup(sig)
		} else if r.Runner != nil {
			_ = r.Runner.signal(sig)
		}
	}
	term(syscall.SIGTERM)
	for r.Alive && time.Now().Before(deadline()) {
		time.Sleep(100 * time.Millisecond)
		r = loadRun(pd, name, n)
	}
	if !r.Alive {
		return
	}
	klog.Infof("Container %s run %d of %s did not stop in time, killing it", name, n, pd.path())
	if r.Workload != nil {
		_ = r.Workload.signalGroup(syscall.SIGKILL)
		if r.Workload.MntNS != 0 {
			killProcessesIn(netIno, r.Workload.MntNS, syscall.SIGKILL)
		}
	} else if r.Runner != nil {
		_ = r.Runner.signal(syscall.SIGKILL)
	}
	// run-container now records the exit; give it a moment, then make sure.
	for i := 0; i < 30 && r.Alive; i++ {
		time.Sleep(100 * time.Millisecond)
		r = loadRun(pd, name, n)
	}
	if r.Alive && r.Runner != nil {
		_ = r.Runner.signal(syscall.SIGKILL)
		time.Sleep(100 * time.Millisecond)
		loadRun(pd, name, n)
	}
}

// errNotRunning is returned when a container has no live run.
var errNotRunning = errors.New("container is not running")
