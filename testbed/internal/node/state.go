package node

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"kt.dev/testbed/internal/labnet"
)

// stateDir knows where things live under the agent's state directory.
type stateDir string

func (s stateDir) podsDir() string               { return filepath.Join(string(s), "pods") }
func (s stateDir) ipamFile() string              { return filepath.Join(string(s), "ipam.json") }
func (s stateDir) mountLock() string             { return filepath.Join(string(s), "mounts.lock") }
func (s stateDir) agentLock() string             { return filepath.Join(string(s), "agent.lock") }
func (s stateDir) imagesDir() string             { return filepath.Join(string(s), "images") }
func (s stateDir) pod(uid types.UID) podDir      { return podDir(filepath.Join(s.podsDir(), string(uid))) }
func (s stateDir) ensure() error                 { return os.MkdirAll(s.podsDir(), 0o755) }
func (s stateDir) podUIDs() ([]types.UID, error) { return listPodUIDs(s.podsDir()) }

func listPodUIDs(dir string) ([]types.UID, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var uids []types.UID
	for _, e := range entries {
		if e.IsDir() {
			uids = append(uids, types.UID(e.Name()))
		}
	}
	return uids, nil
}

// podDir is one pod's state directory.
type podDir string

func (p podDir) path() string                    { return string(p) }
func (p podDir) metaFile() string                { return filepath.Join(string(p), "pod.json") }
func (p podDir) resolvConf() string              { return filepath.Join(string(p), "resolv.conf") }
func (p podDir) hostsFile() string               { return filepath.Join(string(p), "hosts") }
func (p podDir) hostnameFile() string            { return filepath.Join(string(p), "hostname") }
func (p podDir) mountDirsFile() string           { return filepath.Join(string(p), "mountdirs") }
func (p podDir) volumesDir() string              { return filepath.Join(string(p), "volumes") }
func (p podDir) volume(name string) string       { return filepath.Join(string(p), "volumes", name) }
func (p podDir) containerDir(name string) string { return filepath.Join(string(p), "containers", name) }
func (p podDir) logDir(name string) string       { return filepath.Join(string(p), "logs", name) }
func (p podDir) runDir(name string, n int) string {
	return filepath.Join(p.containerDir(name), strconv.Itoa(n))
}
func (p podDir) logFile(name string, n int) string {
	return filepath.Join(p.logDir(name), strconv.Itoa(n)+".log")
}

// runs lists the run numbers recorded for a container, ascending.
func (p podDir) runs(name string) []int {
	entries, err := os.ReadDir(p.containerDir(name))
	if err != nil {
		return nil
	}
	var ns []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() && n >= 0 {
			ns = append(ns, n)
		}
	}
	sort.Ints(ns)
	return ns
}

// latestRun is the highest run number of a container, or -1.
func (p podDir) latestRun(name string) int {
	ns := p.runs(name)
	if len(ns) == 0 {
		return -1
	}
	return ns[len(ns)-1]
}

// podMeta is what the agent needs to know about a pod without the API
// (pod.json): enough to find, kill and clean up everything it made.
type podMeta struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
	NetNS     string    `json:"netns"`
	Link      string    `json:"link"`
	IP        string    `json:"ip,omitempty"`
	// MountPaths are every container mountPath of the pod (absolute host
	// paths); a directory created for one pod is only removed when no other
	// pod on disk mounts onto it or below it.
	MountPaths []string `json:"mountPaths,omitempty"`
	// InitContainers and Containers are the pod's container names, for
	// ContainerPID and ContainerLogPath lookups without the API.
	InitContainers []string `json:"initContainers,omitempty"`
	Containers     []string `json:"containers,omitempty"`
	// Failed records a reason/message when the agent failed the pod itself
	// (unsupported volume, bad spec), so a restart keeps reporting it.
	FailedReason  string `json:"failedReason,omitempty"`
	FailedMessage string `json:"failedMessage,omitempty"`
}

func (p podDir) readMeta() (*podMeta, error) {
	var m podMeta
	if err := readJSON(p.metaFile(), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (p podDir) writeMeta(m *podMeta) error { return writeJSON(p.metaFile(), m) }

// podKey is the short per-pod identifier used in netns and link names: the
// first 8 hex digits of the pod UID without dashes.
func podKey(uid types.UID) string {
	s := strings.ReplaceAll(string(uid), "-", "")
	if len(s) > 8 {
		s = s[:8]
	}
	return strings.ToLower(s)
}

// podLinkName is the host end of the pod's veth pair.
func podLinkName(uid types.UID) string { return labnet.PodLinkPrefix + podKey(uid) }

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

// readLines returns the non-empty lines of a file (nil if it does not exist).
func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}
