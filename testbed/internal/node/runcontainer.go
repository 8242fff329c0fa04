package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// RunContainer is `ktlab run-container <spec.json>`: it runs one container
// run described by a RunSpec and returns the process exit status.
//
// It enters fresh mount and UTS namespaces and the pod's network namespace,
// bind-mounts the volumes and the pod's /etc files, sets the hostname, and
// starts the workload as its child (own process group, stdout/stderr appended
// to the log file, credentials from the spec). It forwards SIGTERM, SIGINT
// and SIGHUP to the workload, waits for it, kills whatever the workload left
// in the container's namespaces, records the exit status and exits. The
// agent starts it in a session of its own, so it survives agent restarts.
func RunContainer(args []string) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(os.Stderr, "usage: ktlab run-container <spec.json>")
		return 2
	}
	spec, err := readRunSpec(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "run-container: %v\n", err)
		return 1
	}
	// The run directory is opened before any mount: its files are written
	// through this descriptor, whatever the container mounts.
	runDir, err := os.Open(filepath.Dir(spec.ExitFile))
	if err != nil {
		fmt.Fprintf(os.Stderr, "run-container: %v\n", err)
		return 1
	}
	defer runDir.Close()
	// Namespace changes below apply to this OS thread only; the workload is
	// forked from it. The thread is never unlocked, so it is never reused.
	runtime.LockOSThread()
	started := time.Now()
	ex, err := runWorkload(spec, runDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "run-container %s/%s %s: %v\n", spec.Namespace, spec.PodName, spec.Container, err)
		ex = &exitInfo{ExitCode: 128, Reason: reasonStartError, Message: err.Error(), StartedAt: started, FinishedAt: time.Now()}
	}
	if err := writeJSONAt(runDir, filepath.Base(spec.ExitFile), ex); err != nil {
		fmt.Fprintf(os.Stderr, "run-container: writing %s: %v\n", spec.ExitFile, err)
		return 1
	}
	return 0
}

// writeJSONAt atomically writes v as JSON to name in the directory dir.
func writeJSONAt(dir *os.File, name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	dfd := int(dir.Fd())
	tmp := "." + name + ".tmp"
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write(append(data, '\n'))
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return err
	}
	return unix.Renameat(dfd, tmp, dfd, name)
}

// runWorkload sets up the namespaces, starts the workload and waits for it.
// An error means the workload could not be started.
func runWorkload(spec *RunSpec, runDir *os.File) (*exitInfo, error) {
	// Catch forwarded signals from the start, so none is lost between now and
	// the workload's start.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// Everything in the state directory is opened before the mounts: a volume
	// mounted over a parent of it (say /run) must not hide it.
	netns, err := os.Open(spec.NetNS)
	if err != nil {
		return nil, fmt.Errorf("opening the pod network namespace: %w", err)
	}
	defer netns.Close()
	if err := os.MkdirAll(filepath.Dir(spec.LogFile), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(spec.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening the log file: %w", err)
	}
	defer logFile.Close()
	rec, err := newDirRecorder(spec.MountDirsFile)
	if err != nil {
		return nil, err
	}
	defer rec.close()
	lock, err := openLock(spec.MountLock)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()
	netIno, _ := nsInode(spec.NetNS)

	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_NEWUTS); err != nil {
		return nil, fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("making / rprivate: %w", err)
	}
	if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("entering the pod network namespace: %w", err)
	}
	workDir := spec.WorkingDir
	if workDir == "" {
		workDir = "/"
	}
	if spec.EmptyRoot != "" {
		// Nothing is created on the host: the mount points are in the
		// container's own root.
		if err := enterEmptyRoot(spec, workDir); err != nil {
			return nil, err
		}
	} else if err := withLock(lock, func() error {
		if err := doMounts(spec.Mounts, rec, ""); err != nil {
			return err
		}
		return rec.mkdirAll(workDir)
	}); err != nil {
		return nil, err
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return nil, fmt.Errorf("sethostname: %w", err)
		}
	}
	if len(spec.Argv) == 0 {
		return nil, errors.New("no command specified")
	}
	// As runc does before it reports the container created: the command
	// must be an executable file in the container's filesystem.
	path, err := lookPath(spec.Argv[0], spec.Env)
	if err == nil {
		err = checkExecutableBy(spec.Argv[0], path, spec)
	}
	if err != nil {
		return nil, ociCreateError(err)
	}

	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if cred := credential(spec); cred != nil {
		attr.Credential = cred
	}
	if spec.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("no_new_privs: %w", err)
		}
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        spec.Argv,
		Env:         spec.Env,
		Dir:         workDir,
		Stdin:       devNull,
		Stdout:      logFile,
		Stderr:      logFile,
		SysProcAttr: attr,
	}
	if err := cmd.Start(); err != nil {
		if errno, ok := execErrno(err); ok {
			// runc has reported the container started by now; its init's
			// execve fails, and the container ends with what runc says.
			return execFailed(spec, path, errno, logFile), nil
		}
		return nil, fmt.Errorf("failed to start container process: %w", err)
	}
	startedAt := time.Now()
	pid := cmd.Process.Pid
	info := workloadInfo{procRef: procRef{PID: pid}, StartedAt: startedAt}
	if ref, err := procRefOf(pid); err == nil {
		info.procRef = ref
	}
	info.MntNS, _ = nsInode(fmt.Sprintf("/proc/self/task/%d/ns/mnt", unix.Gettid()))
	if err := writeJSONAt(runDir, filepath.Base(spec.WorkloadFile), &info); err != nil {
		fmt.Fprintf(os.Stderr, "run-container: writing %s: %v\n", spec.WorkloadFile, err)
	}

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
wait:
	for {
		select {
		case s := <-sigs:
			_ = syscall.Kill(pid, s.(syscall.Signal))
		case waitErr = <-done:
			break wait
		}
	}
	finishedAt := time.Now()
	// Like the end of a container's PID namespace: nothing the workload left
	// behind survives it.
	if info.MntNS != 0 && netIno != 0 {
		killProcessesIn(netIno, info.MntNS, syscall.SIGKILL)
	}
	ex := &exitInfo{StartedAt: startedAt, FinishedAt: finishedAt, Reason: "Completed"}
	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ex.Signal = int32(ws.Signal())
			ex.ExitCode = 128 + ex.Signal
		} else {
			ex.ExitCode = int32(ps.ExitCode())
		}
	} else if waitErr != nil {
		ex.ExitCode, ex.Message = 255, waitErr.Error()
	}
	if ex.ExitCode != 0 {
		ex.Reason = "Error"
	}
	return ex, nil
}

// credential returns the workload's credentials, or nil to stay root with
// the runner's groups.
func credential(spec *RunSpec) *syscall.Credential {
	if spec.UID == nil && spec.GID == nil && len(spec.Groups) == 0 {
		return nil
	}
	var uid, gid uint32
	if spec.UID != nil {
		uid = uint32(*spec.UID)
	}
	if spec.GID != nil {
		gid = uint32(*spec.GID)
	} else if spec.UID != nil {
		gid = primaryGID(uid)
	}
	groups := make([]uint32, 0, len(spec.Groups))
	for _, g := range spec.Groups {
		groups = append(groups, uint32(g))
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}
}

// primaryGID returns uid's group from /etc/passwd, or 0 as a runtime does
// when the image has no entry for the user.
func primaryGID(uid uint32) uint32 {
	for _, line := range readLines("/etc/passwd") {
		f := strings.Split(line, ":")
		if len(f) > 3 && f[2] == fmt.Sprint(uid) {
			var g uint32
			if _, err := fmt.Sscan(f[3], &g); err == nil {
				return g
			}
		}
	}
	return 0
}

// lookPath resolves argv[0] as runc does before it starts a container (Go's
// exec.LookPath, with the container's PATH): a name with a slash must be an
// executable file, another one is looked up in PATH. Errors read as runc's:
// exec: "/x": stat /x: no such file or directory, or exec: "x": executable
// file not found in $PATH.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return exec.LookPath(name)
	}
	path := envToMap(env)["PATH"]
	if path == "" {
		path = defaultPath
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		// Not filepath.Join: "." + name must keep its slash.
		if p, err := exec.LookPath(strings.TrimSuffix(dir, "/") + "/" + name); err == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// checkExecutableBy fails, as runc's lookup does (it runs as the
// container's user), unless the container's user may execute path: the
// runner itself is root, for whom any execute bit is enough.
func checkExecutableBy(name, path string, spec *RunSpec) error {
	cred := credential(spec)
	if cred == nil || cred.Uid == 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return &exec.Error{Name: name, Err: err}
	}
	var bit uint32
	switch {
	case st.Uid == cred.Uid:
		bit = unix.S_IXUSR
	case st.Gid == cred.Gid || slices.Contains(cred.Groups, st.Gid):
		bit = unix.S_IXGRP
	default:
		bit = unix.S_IXOTH
	}
	if st.Mode&bit == 0 {
		return &exec.Error{Name: name, Err: unix.EACCES}
	}
	return nil
}

// ociCreateError is err as the kubelet reports it from containerd 2 with
// runc 1.2 or later when a container's process cannot be started (a
// StartError, exit code 128), e.g. failed to create containerd task: ...:
// exec: "/x": stat /x: no such file or directory: unknown.
func ociCreateError(err error) error {
	return fmt.Errorf("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: %w: unknown", err)
}

// execErrno returns the errno of a failed execve of the workload, as
// exec.Cmd.Start reports it. Errors of the steps before the execve (chdir,
// credentials) come the same way; the errnos here are the ones execve
// itself gives for a file it cannot run.
func execErrno(err error) (syscall.Errno, bool) {
	var pe *fs.PathError
	var errno syscall.Errno
	if !errors.As(err, &pe) || pe.Op != "fork/exec" || !errors.As(pe.Err, &errno) {
		return 0, false
	}
	switch errno {
	case unix.ENOENT, unix.ENOEXEC, unix.EACCES, unix.ELIBBAD, unix.ETXTBSY, unix.ENOTDIR, unix.ELOOP, unix.EISDIR, unix.ENAMETOOLONG:
		return errno, true
	}
	return 0, false
}

// execFailed records a workload whose execve failed after the runtime had
// started the container, as runc 1.2 and later report it: its init writes
// "exec <path>: <error>" to the container's stderr and exits with 255 (the
// kubelet shows it terminated, reason Error). The line goes to the
// container's log; run-container's own log says why, if the lab can tell
// (rootfs.go).
func execFailed(spec *RunSpec, path string, errno syscall.Errno, logFile *os.File) *exitInfo {
	now := time.Now()
	fmt.Fprintf(logFile, "exec %s: %v\n", path, errno)
	why := ""
	if errno == unix.ENOENT {
		if w := missingInterpreter(path); w != "" {
			why = " (" + w
			if spec.EmptyRoot != "" {
				why += ": the image's filesystem is empty (rootfs: empty), so a program run from a volume must be statically linked"
			}
			why += ")"
		}
	}
	fmt.Fprintf(os.Stderr, "run-container %s/%s %s: exec %s: %v%s\n", spec.Namespace, spec.PodName, spec.Container, path, errno, why)
	return &exitInfo{ExitCode: 255, Reason: "Error", StartedAt: now, FinishedAt: now}
}

// withMountLock runs f holding an exclusive flock on path.
func withMountLock(path string, f func() error) error {
	if path == "" {
		return f()
	}
	lf, err := openLock(path)
	if err != nil {
		return err
	}
	defer lf.Close()
	return withLock(lf, f)
}

// openLock opens (creating) a lock file; nil for an empty path.
func openLock(path string) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

// withLock runs f holding an exclusive flock on lf (nil: no lock).
func withLock(lf *os.File, f func() error) error {
	if lf == nil {
		return f()
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	return f()
}

// dirRecorder creates mount points on the host and records each path it
// created (one real path per line), so that cleanup can remove them later.
// Paths created inside a volume it already mounted are not host paths and
// are not recorded.
type dirRecorder struct {
	file    *os.File
	mounted []string
}

func newDirRecorder(path string) (*dirRecorder, error) {
	if path == "" {
		return &dirRecorder{}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &dirRecorder{file: f}, nil
}

func (r *dirRecorder) close() {
	if r.file != nil {
		r.file.Close()
	}
}

func (r *dirRecorder) record(path string) {
	if r.file == nil {
		return
	}
	for _, m := range r.mounted {
		if path == m || strings.HasPrefix(path, m+"/") || m == "/" {
			return // inside a volume, not on the host
		}
	}
	fmt.Fprintln(r.file, realPath(path))
}

// mkdirAll creates dir and its missing parents, recording each one created.
func (r *dirRecorder) mkdirAll(dir string) error {
	dir = filepath.Clean(dir)
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := r.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	r.record(dir)
	return nil
}

// touch creates an empty file (and its parents) if missing, recording it.
func (r *dirRecorder) touch(path string) error {
	if st, err := os.Stat(path); err == nil {
		if st.IsDir() {
			return fmt.Errorf("%s is a directory, cannot mount a file onto it", path)
		}
		return nil
	}
	if err := r.mkdirAll(filepath.Dir(path)); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	f.Close()
	r.record(path)
	return nil
}

// doMounts bind-mounts each mount, parents before children. All sources are
// opened first, so that a mount cannot hide the source of a later one.
// Targets are paths under root (symbolic links resolved within it) unless
// root is empty.
func doMounts(mounts []Mount, rec *dirRecorder, root string) error {
	sorted := append([]Mount(nil), mounts...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return pathDepth(sorted[i].Target) < pathDepth(sorted[j].Target)
	})
	type source struct {
		fd    int
		isDir bool
	}
	sources := make([]source, len(sorted))
	defer func() {
		for _, s := range sources {
			if s.fd > 0 {
				unix.Close(s.fd)
			}
		}
	}()
	for i, m := range sorted {
		fd, err := unix.Open(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("mount source %s: %w", m.Source, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return fmt.Errorf("mount source %s: %w", m.Source, err)
		}
		sources[i] = source{fd: fd, isDir: st.Mode&unix.S_IFMT == unix.S_IFDIR}
	}
	for i, m := range sorted {
		target := m.Target
		if root != "" {
			var err error
			if target, err = securejoin.SecureJoin(root, m.Target); err != nil {
				return fmt.Errorf("mount point %s: %w", m.Target, err)
			}
		}
		var err error
		if sources[i].isDir {
			err = rec.mkdirAll(target)
		} else {
			err = rec.touch(target)
		}
		if err != nil {
			return fmt.Errorf("creating mount point %s: %w", m.Target, err)
		}
		src := fmt.Sprintf("/proc/self/fd/%d", sources[i].fd)
		if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s on %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("remounting %s read-only: %w", m.Target, err)
			}
		}
		rec.mounted = append(rec.mounted, filepath.Clean(target))
	}
	return nil
}

func pathDepth(p string) int {
	return strings.Count(filepath.Clean(p), "/")
}
