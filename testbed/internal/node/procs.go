package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procRef identifies a process robustly against PID reuse: its PID and its
// start time in clock ticks since boot (field 22 of /proc/<pid>/stat).
type procRef struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"startTicks"`
}

// selfRef returns the procRef of pid as it is now.
func procRefOf(pid int) (procRef, error) {
	ticks, _, err := procStat(pid)
	if err != nil {
		return procRef{}, err
	}
	return procRef{PID: pid, StartTicks: ticks}, nil
}

// procStat reads a process's start time and state letter.
func procStat(pid int) (startTicks uint64, state byte, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after it start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+2:]))
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, err
	}
	return ticks, fields[0][0], nil
}

// alive reports whether the process still runs (it exists, is not a zombie,
// and is the same process that was recorded).
func (p procRef) alive() bool {
	if p.PID <= 0 {
		return false
	}
	ticks, state, err := procStat(p.PID)
	if err != nil {
		return false
	}
	if state == 'Z' || state == 'X' || state == 'x' {
		return false
	}
	return p.StartTicks == 0 || ticks == p.StartTicks
}

// signal sends sig to the process if it is still the recorded one.
func (p procRef) signal(sig syscall.Signal) error {
	if !p.alive() {
		return os.ErrProcessDone
	}
	return syscall.Kill(p.PID, sig)
}

// signalGroup sends sig to the process group led by the process, if the
// process is still the recorded one. (Once the leader is gone its PID may be
// reused; leftovers are found by namespace instead, see killProcessesIn.)
func (p procRef) signalGroup(sig syscall.Signal) error {
	if !p.alive() {
		return os.ErrProcessDone
	}
	if err := syscall.Kill(-p.PID, sig); err != nil {
		return syscall.Kill(p.PID, sig)
	}
	return nil
}

// nsInode returns the inode of a namespace file (/proc/<pid>/ns/<kind> or a
// bind-mounted namespace such as /run/netns/<name>).
func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// procNSInode returns the inode of a process's namespace of the given kind
// ("net", "mnt", "uts").
func procNSInode(pid int, kind string) (uint64, error) {
	return nsInode(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
}

// processesIn lists the processes whose network namespace is netIno and, when
// mntIno is not 0, whose mount namespace is mntIno. The caller is never listed.
func processesIn(netIno, mntIno uint64) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ino, err := procNSInode(pid, "net"); err != nil || ino != netIno {
			continue
		}
		if mntIno != 0 {
			if ino, err := procNSInode(pid, "mnt"); err != nil || ino != mntIno {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// killProcessesIn sends sig to every process processesIn lists and returns
// how many there were.
func killProcessesIn(netIno, mntIno uint64, sig syscall.Signal) int {
	if netIno == 0 {
		return 0
	}
	pids := processesIn(netIno, mntIno)
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	return len(pids)
}

// isNSFS reports whether path is a bind-mounted namespace file.
func isNSFS(path string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false
	}
	const nsfsMagic = 0x6e736673
	return uint64(st.Type) == nsfsMagic
}

// netnsPath is where a named network namespace is bind-mounted.
func netnsPath(name string) string { return filepath.Join("/run/netns", name) }
