package node

import (
	"os"
	"path/filepath"
	"time"
)

// RunSpec is one run of one container, as `ktlab run-container` executes it.
// The agent writes it to <run dir>/spec.json.
type RunSpec struct {
	PodUID    string `json:"podUID"`
	Namespace string `json:"namespace"`
	PodName   string `json:"podName"`
	Container string `json:"container"`
	Run       int    `json:"run"`

	// NetNS is the pod's network namespace file (/run/netns/<name>).
	NetNS string `json:"netns"`
	// Hostname is set in the container's UTS namespace.
	Hostname string `json:"hostname"`

	// Argv is the workload's command line; Argv[0] without a slash is looked
	// up in the PATH of Env.
	Argv []string `json:"argv"`
	// Env is the workload's entire environment (KEY=VALUE).
	Env []string `json:"env"`
	// WorkingDir is created if missing ("/" if empty).
	WorkingDir string `json:"workingDir,omitempty"`
	// UID and GID are the workload's credentials (root if nil); Groups its
	// supplementary groups.
	UID    *int64  `json:"uid,omitempty"`
	GID    *int64  `json:"gid,omitempty"`
	Groups []int64 `json:"groups,omitempty"`
	// NoNewPrivs sets PR_SET_NO_NEW_PRIVS (allowPrivilegeEscalation: false).
	NoNewPrivs bool `json:"noNewPrivs,omitempty"`

	// Mounts are bind mounts made in the container's mount namespace, in order.
	Mounts []Mount `json:"mounts,omitempty"`
	// EmptyRoot, if set, is a directory on which run-container mounts the
	// container's own root filesystem, empty but for the mounts above and
	// what every runtime provides (/proc, /dev, /sys), and makes it the
	// container's root (the image has rootfs: empty; see rootfs.go). Unset,
	// the container sees the node's filesystem with its mounts on top.
	EmptyRoot string `json:"emptyRoot,omitempty"`
	// ReadOnlyRoot makes the EmptyRoot read-only once its mount points exist
	// (readOnlyRootFilesystem).
	ReadOnlyRoot bool `json:"readOnlyRoot,omitempty"`

	// LogFile receives the workload's stdout and stderr (appended).
	LogFile string `json:"logFile"`
	// WorkloadFile and ExitFile are written by run-container (workload.json,
	// exit.json); both must be in the directory of ExitFile (the run directory).
	WorkloadFile string `json:"workloadFile"`
	ExitFile     string `json:"exitFile"`
	// MountDirsFile records, one per line, the host paths run-container
	// created as mount points; MountLock serialises that with their removal.
	MountDirsFile string `json:"mountDirsFile"`
	MountLock     string `json:"mountLock"`
}

// Mount is a bind mount of Source (a directory or file on the host) onto
// Target inside the container's mount namespace.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// workloadInfo is written by run-container once the workload has started.
type workloadInfo struct {
	procRef
	StartedAt time.Time `json:"startedAt"`
	// MntNS is the inode of the container's mount namespace.
	MntNS uint64 `json:"mntNS"`
}

// exitInfo is written by run-container when the workload has ended (or could
// not be started).
type exitInfo struct {
	ExitCode   int32     `json:"exitCode"`
	Signal     int32     `json:"signal,omitempty"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message,omitempty"`
	StartedAt  time.Time `json:"startedAt,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// Files of a run directory.
const (
	specFileName     = "spec.json"
	runnerFileName   = "runner.json"
	workloadFileName = "workload.json"
	exitFileName     = "exit.json"
	runnerLogName    = "runner.log"
	rootDirName      = "rootfs"
)

// runFiles names the files of a run directory.
type runFiles string

func (r runFiles) spec() string      { return filepath.Join(string(r), specFileName) }
func (r runFiles) runner() string    { return filepath.Join(string(r), runnerFileName) }
func (r runFiles) workload() string  { return filepath.Join(string(r), workloadFileName) }
func (r runFiles) exit() string      { return filepath.Join(string(r), exitFileName) }
func (r runFiles) runnerLog() string { return filepath.Join(string(r), runnerLogName) }
func (r runFiles) rootDir() string   { return filepath.Join(string(r), rootDirName) }

// readRunSpec reads a spec file.
func readRunSpec(path string) (*RunSpec, error) {
	var s RunSpec
	if err := readJSON(path, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
