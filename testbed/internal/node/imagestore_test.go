package node

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

// privateDir makes a directory only its owner can search (like /root), inside
// a directory every user can search.
func privateDir(t *testing.T) (open, private string) {
	t.Helper()
	open = t.TempDir()
	for _, d := range []string{open, filepath.Dir(open)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	private = filepath.Join(open, "home")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	return open, private
}

// copyExecutable copies the file src to dst with mode 0755, plus pad zero
// bytes at the end (an ELF executable runs the same with them): a rebuild
// that differs.
func copyExecutable(t *testing.T, src, dst string, pad int) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, make([]byte, pad)...)
	if err := os.WriteFile(dst+".new", data, 0o755); err != nil {
		t.Fatal(err)
	}
	// A rebuild replaces the file (a new inode), as `go build` and `install` do.
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// runAs runs path as uid/gid 65532 and returns the error of the run.
func runAs(path string) error {
	cmd := exec.Command(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	return cmd.Run()
}

func TestImageStoreInstallsWhereEveryUserCanRun(t *testing.T) {
	requireRoot(t)
	open, private := privateDir(t)
	store := newImageStore(filepath.Join(open, "state", "images"))
	// The lab's setup: a binary in root's (private) cache, named through a
	// symlink whose name the multi-call binary dispatches on.
	built := filepath.Join(private, "build-output")
	copyExecutable(t, "/bin/true", built, 0)
	named := filepath.Join(private, "ktlab")
	if err := os.Symlink(built, named); err != nil {
		t.Fatal(err)
	}
	if err := runAs(named); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("the private original must not run as uid 65532 (the test's premise): %v", err)
	}

	p, err := store.install(named)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != "ktlab" || !strings.HasPrefix(p, store.dir+"/") {
		t.Errorf("installed as %s: want <store>/<entry>/ktlab", p)
	}
	if err := runAs(p); err != nil {
		t.Errorf("the installed copy does not run as uid 65532: %v", err)
	}
	want, _ := os.ReadFile("/bin/true")
	if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
		t.Error("the installed copy differs from the original")
	}
	for _, q := range []string{p, filepath.Dir(p), store.dir} {
		st, err := os.Stat(q)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != 0o755 || sys.Uid != 0 {
			t.Errorf("%s: mode %04o owner %d, want 0755 root", q, st.Mode().Perm(), sys.Uid)
		}
	}
	if err := searchableByAll(p); err != nil {
		t.Errorf("installed copy: %v", err)
	}

	// The same version again: the same copy, not copied again.
	st1, _ := os.Stat(p)
	store2 := newImageStore(store.dir) // as after an agent restart
	for _, s := range []*imageStore{store, store2} {
		again, err := s.install(named)
		if err != nil || again != p {
			t.Fatalf("second install: %s, %v (want %s)", again, err, p)
		}
	}
	if st2, _ := os.Stat(p); !os.SameFile(st1, st2) {
		t.Error("an unchanged executable was copied again")
	}

	// A rebuild is a new version; the previous one stays (a container may be
	// starting from it), the one before is removed.
	var versions []string
	versions = append(versions, p)
	for i := 0; i < 2; i++ {
		copyExecutable(t, "/bin/true", built, i+1)
		q, err := store.install(named)
		if err != nil {
			t.Fatal(err)
		}
		if q == versions[len(versions)-1] {
			t.Fatalf("rebuild %d: same path %s", i+1, q)
		}
		versions = append(versions, q)
	}
	if fileExists(versions[0]) || fileExists(filepath.Dir(versions[0])) {
		t.Errorf("the oldest version %s was not removed", versions[0])
	}
	for _, q := range versions[1:] {
		if !fileExists(q) {
			t.Errorf("%s was removed", q)
		}
	}
	// Another source keeps its own versions.
	other := filepath.Join(private, "kt-shadow")
	copyExecutable(t, "/bin/true", other, 0)
	o, err := store.install(other)
	if err != nil || filepath.Base(o) != "kt-shadow" || !fileExists(versions[2]) || !fileExists(versions[1]) {
		t.Errorf("another source: %s %v; versions of the first kept: %v %v", o, err, fileExists(versions[1]), fileExists(versions[2]))
	}

	// After an agent restart nothing is being started: only the current
	// version stays.
	store3 := newImageStore(store.dir)
	if q, err := store3.install(named); err != nil || q != versions[2] || fileExists(versions[1]) {
		t.Errorf("after a restart: %s, %v; previous version still there: %v", q, err, fileExists(versions[1]))
	}

	// Half-written copies of a dead agent go at the next start.
	stale := filepath.Join(store.dir, storeTmpPrefix+"123")
	if err := os.Mkdir(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	store2.removeTemporaries()
	if fileExists(stale) || !fileExists(versions[2]) {
		t.Error("removeTemporaries: the temporary must go, the copies stay")
	}
}

func TestImageStoreRefusesWhatCannotRun(t *testing.T) {
	dir := t.TempDir()
	store := newImageStore(filepath.Join(dir, "images"))
	plain := filepath.Join(dir, "data")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]string{
		plain:                         "is not an executable file",
		dir:                           "is not an executable file",
		filepath.Join(dir, "missing"): "no such file",
	} {
		if _, err := store.install(src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("install(%s) = %v, want an error containing %q", src, err, want)
		}
	}
}

func TestSearchableByAll(t *testing.T) {
	open, private := privateDir(t)
	if err := searchableByAll(open); err != nil {
		t.Errorf("%s: %v", open, err)
	}
	inside := filepath.Join(private, "state")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	err := searchableByAll(inside)
	if err == nil || !strings.Contains(err.Error(), private+" is mode 0700") || !strings.Contains(err.Error(), "chmod o+x "+private) {
		t.Errorf("under a private directory: %v", err)
	}
	// Through a symlink in a searchable directory to a private place.
	link := filepath.Join(open, "link")
	if err := os.Symlink(inside, link); err != nil {
		t.Fatal(err)
	}
	if err := searchableByAll(link); err == nil || !strings.Contains(err.Error(), private+" is mode 0700") {
		t.Errorf("through a symlink: %v", err)
	}
}

func TestAgentRefusesAStateDirectoryUsersCannotReach(t *testing.T) {
	requireRoot(t)
	_, private := privateDir(t)
	cfg, err := Config{StateDir: filepath.Join(private, "state"), ImagesFile: filepath.Join(private, "images.yaml"), Ktlab: "/bin/true"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	err = newAgent(cfg, fake.NewSimpleClientset(), &netManager{}).run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "state directory "+cfg.StateDir) || !strings.Contains(err.Error(), private+" is mode 0700") {
		t.Errorf("agent with a state directory under a private one: %v", err)
	}
}

// A source named through a symlink that is pointed elsewhere and back: the
// store keeps what it handed out last, whichever version that is.
func TestImageStoreKeepsWhatItHandedOutLast(t *testing.T) {
	requireRoot(t)
	open, private := privateDir(t)
	store := newImageStore(filepath.Join(open, "images"))
	named := filepath.Join(private, "ktlab")
	point := func(to string, pad int) string {
		t.Helper()
		copyExecutable(t, "/bin/true", to, pad)
		_ = os.Remove(named)
		if err := os.Symlink(to, named); err != nil {
			t.Fatal(err)
		}
		p, err := store.install(named)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := point(filepath.Join(private, "a"), 1)
	b := point(filepath.Join(private, "b"), 2)
	_ = os.Remove(named)
	if err := os.Symlink(filepath.Join(private, "a"), named); err != nil {
		t.Fatal(err)
	}
	if again, err := store.install(named); err != nil || again != a {
		t.Fatalf("back to a: %s, %v (want %s)", again, err, a)
	}
	c := point(filepath.Join(private, "c"), 3)
	if !fileExists(a) || fileExists(b) || !fileExists(c) {
		t.Errorf("after a, b, a, c: a kept %v (want true), b kept %v (want false), c kept %v (want true)", fileExists(a), fileExists(b), fileExists(c))
	}
}
