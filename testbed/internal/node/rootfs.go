package node

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// An image with rootfs: empty in the image table (registry.k8s.io/pause, a
// FROM scratch image holding one static binary) has a filesystem with
// nothing but its own program: no libc, no dynamic loader, no shell. The lab
// cannot run the image's own program inside such a root (its stand-in for
// it is a program of the node, linked against the node's libc), so a
// container that runs it sees the node's filesystem as with any other image.
// But a container whose command replaces it, say with a file on one of its
// volumes, gets a root filesystem of its own, as containerd and runc would
// give it: an empty tmpfs holding only the container's mounts and what every
// runtime adds (/proc, /dev with the usual devices, /sys), made its root with
// pivot_root. The kernel then decides what runs, as on a real node:
//
//   - a command that is not in that filesystem fails to start (StartError:
//     exec: "/x": stat /x: no such file or directory);
//   - a dynamically linked ELF fails in its execve, as its interpreter
//     (/lib64/ld-linux-x86-64.so.2, say) is missing, and so does a #! script
//     whose interpreter is missing: runc 1.2 writes
//     "exec /x: no such file or directory" to the container's log and the
//     container exits with 255;
//   - a static ELF runs, with the container's user, environment and mounts;
//   - exec probes and hooks enter the container's mount namespace, hence its
//     root: they too run only what is in that filesystem.

// enterEmptyRoot builds the container's root filesystem on spec.EmptyRoot
// and makes it the calling thread's root. The thread must be in a mount
// namespace of its own.
func enterEmptyRoot(spec *RunSpec, workDir string) error {
	root := filepath.Clean(spec.EmptyRoot)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("container root: %w", err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mounting the container's root on %s: %w", root, err)
	}
	if err := runtimeMounts(root); err != nil {
		return err
	}
	// The container's mount points are inside its own root: nothing to
	// record on the host.
	if err := doMounts(spec.Mounts, &dirRecorder{}, root); err != nil {
		return err
	}
	wd, err := securejoin.SecureJoin(root, workDir)
	if err != nil {
		return fmt.Errorf("working directory %s: %w", workDir, err)
	}
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return fmt.Errorf("creating the working directory %s: %w", workDir, err)
	}
	if spec.ReadOnlyRoot {
		if err := unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("remounting the container's root read-only: %w", err)
		}
	}
	return pivotRoot(root)
}

// runtimeMounts adds what runc gives every container: /proc, a /dev tmpfs
// with the standard devices, pseudo-terminals and /dev/shm, and /sys
// read-only.
func runtimeMounts(root string) error {
	const nsx = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	mkdir := func(p string) (string, error) {
		full := filepath.Join(root, p)
		return full, os.MkdirAll(full, 0o755)
	}
	// mountOrBind mounts a fresh filesystem, or binds the node's own where
	// the kernel refuses a fresh one.
	mountOrBind := func(p, fstype string, flags uintptr, data string) error {
		full, err := mkdir(p)
		if err != nil {
			return err
		}
		if err := unix.Mount(fstype, full, fstype, flags, data); err == nil {
			return nil
		}
		if err := unix.Mount(p, full, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mounting %s in the container's root: %w", p, err)
		}
		if flags&unix.MS_RDONLY != 0 {
			return unix.Mount("", full, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|nsx, "")
		}
		return nil
	}
	if err := mountOrBind("/proc", "proc", nsx, ""); err != nil {
		return err
	}
	dev, err := mkdir("/dev")
	if err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=0755,size=65536k"); err != nil {
		return fmt.Errorf("mounting /dev in the container's root: %w", err)
	}
	for _, name := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := filepath.Join(dev, name)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount("/dev/"+name, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding /dev/%s in the container's root: %w", name, err)
		}
	}
	if err := mountOrBind("/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return err
	}
	if err := mountOrBind("/dev/shm", "tmpfs", nsx, "mode=1777,size=65536k"); err != nil {
		return err
	}
	for name, target := range map[string]string{"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return mountOrBind("/sys", "sysfs", nsx|unix.MS_RDONLY, "")
}

// pivotRoot makes root (a mount point) the calling thread's root and
// detaches the old one, as runc does.
func pivotRoot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into the container's root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the node's root: %w", err)
	}
	return unix.Chdir("/")
}

// maxInterpreterLine bounds the #! line read, as the kernel's
// BINPRM_BUF_SIZE does.
const maxInterpreterLine = 256

// missingInterpreter explains why an execve of path, an existing file,
// failed with ENOENT: its ELF interpreter (PT_INTERP) or its #! interpreter
// is missing from the filesystem the caller sees. It returns "" when it
// cannot tell. The lab writes it to its own log only: the container's log
// gets what a real node writes there.
func missingInterpreter(path string) string {
	what, interp := interpreterOf(path)
	if what == "" {
		return ""
	}
	if _, err := os.Stat(interp); !errors.Is(err, os.ErrNotExist) {
		return ""
	}
	return fmt.Sprintf("%s is %s whose interpreter %s is not in the container's filesystem", path, what, interp)
}

// interpreterOf returns what path is ("a script", "a dynamically linked
// ELF executable") and the interpreter the kernel loads for it, or "" for a
// static executable, a file the kernel runs by itself or one it cannot read.
func interpreterOf(path string) (what, interp string) {
	f, err := os.Open(path)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	head := make([]byte, maxInterpreterLine)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if bytes.HasPrefix(head, []byte("#!")) {
		line, _, _ := bufio.NewReader(bytes.NewReader(head[2:])).ReadLine()
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return "", ""
		}
		return "a script", fields[0]
	}
	if interp := elfInterpreter(f); interp != "" {
		return "a dynamically linked ELF executable", interp
	}
	return "", ""
}

// elfInterpreter returns the PT_INTERP path of an ELF file ("" for a static
// executable or a file that is not ELF).
func elfInterpreter(r io.ReaderAt) string {
	ef, err := elf.NewFile(r)
	if err != nil {
		return ""
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
		if err != nil {
			return ""
		}
		return string(bytes.TrimRight(b, "\x00"))
	}
	return ""
}
