package node

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"k8s.io/klog/v2"
)

// imageStore holds the node's copies of the lab-built executables that images
// run (the ktlab binary behind {ktlab}, and executables named by {env:NAME}).
//
// On a real node every user can execute an image's files: they are part of
// the image's root filesystem, unpacked by the runtime into directories only
// root can write but anyone can search. The lab's executables live wherever
// they were built, often under root's home (the lab binary is cached in
// ~/.cache/kt/lab, and /root is 0700), so a container running as, say, uid
// 65532 cannot even reach them. The agent therefore installs a copy of each
// into the store, a directory it owns (root, 0755 directories, 0755 files),
// and runs that copy, whatever the container's user.
//
// Layout: <dir>/<source id>-<version>/<name>, where the source id hashes the
// path the executable was named by, the version hashes the identity of the
// file behind it (device, inode, size, modification and change times: a
// rebuild or a re-pointed symlink makes a new version), and name is the base name of the
// path it was named by (a multi-call binary sees the name it expects). A copy
// is written under a temporary name and renamed into place, so a half-written
// copy is never run. The store keeps the current version of each source and
// the one it handed out before (a container being started from that one while
// a new one is installed still finds it), and removes older ones; after an
// agent restart nothing is being started, so only the current one is kept.
type imageStore struct {
	dir string

	mu        sync.Mutex
	installed map[string]string // entry directory → installed file
	current   map[string]string // source id → the entry handed out last
}

func newImageStore(dir string) *imageStore {
	return &imageStore{dir: dir, installed: map[string]string{}, current: map[string]string{}}
}

// storeTmpPrefix starts the names of copies being written.
const storeTmpPrefix = ".tmp-"

// install returns the store's copy of the executable file src, installing it
// first when the store has no copy of its current version.
func (s *imageStore) install(src string) (string, error) {
	src = filepath.Clean(src)
	st, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("image executable: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("image executable %s is not an executable file (mode %s)", src, st.Mode())
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("image executable %s: no file identity", src)
	}
	id := shortHash(src)
	version := shortHash(fmt.Sprintf("%d:%d:%d:%d:%d.%d", sys.Dev, sys.Ino, st.Size(), st.ModTime().UnixNano(), sys.Ctim.Sec, sys.Ctim.Nsec))
	entry := filepath.Join(s.dir, id+"-"+version)
	target := filepath.Join(entry, filepath.Base(src))

	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.installed[entry]; !ok || !sameSize(p, st.Size()) {
		if err := s.ensureDir(); err != nil {
			return "", err
		}
		if !sameSize(target, st.Size()) {
			if err := s.copyIn(src, entry, target); err != nil {
				return "", fmt.Errorf("installing image executable %s into %s: %w", src, s.dir, err)
			}
			klog.Infof("Installed image executable %s as %s", src, target)
		}
		s.installed[entry] = target
	}
	if prev := s.current[id]; prev != entry {
		s.prune(id, entry, prev)
		s.current[id] = entry
	}
	return target, nil
}

// ensureDir creates the store directory (0755, whatever the umask).
func (s *imageStore) ensureDir() error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	return os.Chmod(s.dir, 0o755)
}

// copyIn copies src to target inside the new entry directory: written in a
// temporary directory, then renamed to entry.
func (s *imageStore) copyIn(src, entry, target string) error {
	tmp, err := os.MkdirTemp(s.dir, storeTmpPrefix)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmpFile := filepath.Join(tmp, filepath.Base(target))
	out, err := os.OpenFile(tmpFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	_, cerr := io.Copy(out, in)
	if err := errors.Join(cerr, out.Chmod(0o755), out.Close()); err != nil {
		return err
	}
	// A stale entry (a copy cut short by a crash before its rename cannot
	// exist, but an entry whose file was removed by hand can) makes way.
	if err := os.RemoveAll(entry); err != nil {
		return err
	}
	return os.Rename(tmp, entry)
}

// prune removes the entries of source id other than keep and prev (the
// entry this store handed out before keep, if any).
func (s *imageStore) prune(id, keep, prev string) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(s.dir, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), id+"-") || p == keep || p == prev {
			continue
		}
		if err := os.RemoveAll(p); err == nil {
			delete(s.installed, p)
			klog.V(2).Infof("Removed old image executable %s", p)
		}
	}
}

// removeTemporaries removes copies left half-written by an agent that died
// while installing. Call it while holding the state directory's lock.
func (s *imageStore) removeTemporaries() {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), storeTmpPrefix) {
			_ = os.RemoveAll(filepath.Join(s.dir, e.Name()))
		}
	}
}

func sameSize(path string, size int64) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Size() == size
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

// searchableByAll fails unless every user can reach path: each directory on
// it (and on the path its symlinks lead to) must be searchable by others.
// Pods run as any user and reach their volumes and image executables under
// the state directory.
func searchableByAll(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
	}
	for _, p := range paths {
		for dir := p; ; dir = filepath.Dir(dir) {
			st, err := os.Stat(dir)
			if err != nil {
				return err
			}
			if st.IsDir() && st.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("%s is mode %04o: users other than its owner cannot reach %s (chmod o+x %s, or choose a state directory every user can reach)",
					dir, st.Mode().Perm(), path, dir)
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return nil
}
