package node

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"kt.invalid/echo":                       "kt.invalid/echo",
		"kt.invalid/echo:v1":                    "kt.invalid/echo",
		"kt.invalid/echo@sha256:abcd":           "kt.invalid/echo",
		"kt.invalid/echo:v1@sha256:abcd":        "kt.invalid/echo",
		"localhost:5000/kt.invalid/echo":        "localhost:5000/kt.invalid/echo",
		"localhost:5000/kt.invalid/echo:latest": "localhost:5000/kt.invalid/echo",
		"busybox:1.36":                          "busybox",
	} {
		if got := repository(in); got != want {
			t.Errorf("repository(%q) = %q, want %q", in, got, want)
		}
	}
	got := repositoryCandidates("docker.io/library/busybox:latest")
	if !reflect.DeepEqual(got, []string{"docker.io/library/busybox", "busybox"}) {
		t.Errorf("candidates = %v", got)
	}
}

func writeTable(t *testing.T, dir, content string) *imageTable {
	t.Helper()
	path := filepath.Join(dir, "images.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tab := newImageTable(path, "/opt/ktlab")
	tab.getenv = func(name string) (string, bool) {
		if name == "KT_SHADOW_BIN" {
			return "/build/kt-shadow", true
		}
		return "", false
	}
	return tab
}

func TestShippedImageTable(t *testing.T) {
	data, err := os.ReadFile("../../images.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tab := writeTable(t, dir, string(data))
	cases := []struct {
		image         string
		command, args []string
		want          []string
	}{
		{image: "kt.invalid/echo:latest", want: []string{"/opt/ktlab", "echo"}},
		{image: "kt.invalid/echo", args: []string{"--port", "8080"}, want: []string{"/opt/ktlab", "echo", "--port", "8080"}},
		{image: "kt.invalid/kubectl", args: []string{"get", "pods"}, want: []string{"/opt/ktlab", "kubectl", "get", "pods"}},
		{image: "kt.invalid/coredns:1.13", args: []string{"-conf", "/etc/coredns/Corefile"}, want: []string{"/opt/ktlab", "coredns", "-conf", "/etc/coredns/Corefile"}},
		{image: "busybox", want: []string{"/bin/sh"}},
		{image: "docker.io/library/busybox:1.36", args: []string{"sleep", "3600"}, want: []string{"sleep", "3600"}},
		{image: "debian:12", command: []string{"sh", "-c"}, args: []string{"sleep 1"}, want: []string{"sh", "-c", "sleep 1"}},
		{image: "kt.invalid/shell", command: []string{"/bin/true"}, want: []string{"/bin/true"}},
		{image: "kt.invalid/openssh", want: []string{"/usr/sbin/sshd", "-D", "-e"}},
		{image: "kt.invalid/kt-shadow:dev", args: []string{"--listen", "127.0.0.1:2222"}, want: []string{"/build/kt-shadow", "--listen", "127.0.0.1:2222"}},
	}
	for _, c := range cases {
		r, err := tab.Resolve(c.image)
		if err != nil {
			t.Errorf("%s: %v", c.image, err)
			continue
		}
		if got := r.Argv(c.command, c.args); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %v %v: argv %q, want %q", c.image, c.command, c.args, got, c.want)
		}
		if r.RootFS != "" {
			t.Errorf("%s: rootfs %q, want a whole distribution", c.image, r.RootFS)
		}
	}
	// The pause image, with any tag or digest, holds nothing but its program.
	for _, image := range []string{"registry.k8s.io/pause", "registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.9@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097"} {
		r, err := tab.Resolve(image)
		if err != nil {
			t.Errorf("%s: %v", image, err)
			continue
		}
		if r.RootFS != rootFSEmpty {
			t.Errorf("%s: rootfs %q, want %q", image, r.RootFS, rootFSEmpty)
		}
	}
}

func TestRunsOwnProgram(t *testing.T) {
	withEntrypoint := &resolvedImage{Entrypoint: []string{"/pause"}}
	withCmd := &resolvedImage{Cmd: []string{"/bin/sh"}}
	for _, c := range []struct {
		img           *resolvedImage
		command, args []string
		want          bool
	}{
		{img: withEntrypoint, want: true},
		{img: withEntrypoint, args: []string{"-v"}, want: true},
		{img: withEntrypoint, command: []string{"/kt/agent/kt-loader"}, want: false},
		{img: withCmd, want: true},
		{img: withCmd, args: []string{"/kt/agent/kt-loader"}, want: false},
		{img: withCmd, command: []string{"/bin/sh"}, want: false},
	} {
		if got := c.img.RunsOwnProgram(c.command, c.args); got != c.want {
			t.Errorf("%+v command %q args %q: %v, want %v", c.img, c.command, c.args, got, c.want)
		}
	}
}

func TestImageTableErrorsAndReload(t *testing.T) {
	dir := t.TempDir()
	tab := writeTable(t, dir, `
kt.invalid/app:
  entrypoint: ["{root}/bin/app", "{env:UNSET_VAR}"]
kt.invalid/user:
  entrypoint: [/bin/app]
  user: "65532:65533"
  env: ["A={ktlab}"]
`)
	_, err := tab.Resolve("kt.invalid/missing:v1")
	var pe *imagePullError
	if !errors.As(err, &pe) {
		t.Fatalf("unknown image: err = %v", err)
	}
	want := `failed to pull image "kt.invalid/missing:v1": image "kt.invalid/missing:v1" is not in the lab's image table (` + filepath.Base(dir) + `/images.yaml)`
	if err.Error() != want {
		t.Fatalf("message %q\nwant    %q", err.Error(), want)
	}
	if _, err := tab.Resolve("kt.invalid/app"); err == nil || !strings.Contains(err.Error(), "UNSET_VAR is not set") {
		t.Fatalf("unset env placeholder: err = %v", err)
	}
	r, err := tab.Resolve("kt.invalid/user")
	if err != nil {
		t.Fatal(err)
	}
	if *r.UID != 65532 || *r.GID != 65533 || r.Env[0] != "A=/opt/ktlab" || r.RootFS != "" {
		t.Fatalf("resolved %+v", r)
	}

	// The table is reloaded when it changes.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dir, "images.yaml"), []byte("kt.invalid/missing:\n  entrypoint: [\"{root}/x\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	_ = os.Chtimes(filepath.Join(dir, "images.yaml"), future, future)
	r, err = tab.Resolve("kt.invalid/missing:v1")
	if err != nil {
		t.Fatalf("after reload: %v", err)
	}
	if r.Entrypoint[0] != filepath.Join(dir, "x") {
		t.Fatalf("{root} = %q", r.Entrypoint[0])
	}
}

func TestImageTableRejectsBadEntries(t *testing.T) {
	for _, bad := range []string{
		"kt.invalid/a:\n  entrypnt: [x]\n",
		"kt.invalid/a:\n  env: [A=b]\n",
		"kt.invalid/a:\n  cmd: [x]\n  aliases: [kt.invalid/b]\nkt.invalid/b:\n  cmd: [y]\n",
		"kt.invalid/a:\n  cmd: [x]\n  rootfs: scratch\n",
	} {
		if _, err := parseImageTable([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestImageTableRunsLabExecutablesFromTheStore(t *testing.T) {
	requireRoot(t)
	open, private := privateDir(t)
	ktlab := filepath.Join(private, "ktlab")
	shadow := filepath.Join(private, "kt-shadow")
	copyExecutable(t, "/bin/true", ktlab, 0)
	copyExecutable(t, "/bin/true", shadow, 1)
	path := filepath.Join(open, "images.yaml")
	if err := os.WriteFile(path, []byte(`
kt.invalid/echo:
  entrypoint: ["{ktlab}", "echo"]
  env: ["SELF={ktlab}"]
kt.invalid/kt-shadow:
  entrypoint: ["{env:KT_SHADOW_BIN}"]
kt.invalid/unbuilt:
  cmd: ["{env:NOT_BUILT}", "--flag={env:KT_SHADOW_BIN}"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tab := newImageTable(path, ktlab)
	tab.store = newImageStore(filepath.Join(open, "state", "images"))
	tab.getenv = func(name string) (string, bool) {
		return map[string]string{"KT_SHADOW_BIN": shadow, "NOT_BUILT": "/build/kt-shadow"}[name], true
	}
	inStore := func(p, name string) bool {
		return strings.HasPrefix(p, tab.store.dir+"/") && filepath.Base(p) == name && searchableByAll(p) == nil
	}

	echo, err := tab.Resolve("kt.invalid/echo")
	if err != nil {
		t.Fatal(err)
	}
	if !inStore(echo.Entrypoint[0], "ktlab") || echo.Entrypoint[1] != "echo" || echo.Env[0] != "SELF="+echo.Entrypoint[0] {
		t.Errorf("{ktlab} must mean the store's copy: entrypoint %q env %q", echo.Entrypoint, echo.Env)
	}
	if err := runAs(echo.Entrypoint[0]); err != nil {
		t.Errorf("uid 65532 cannot run %s: %v", echo.Entrypoint[0], err)
	}
	ks, err := tab.Resolve("kt.invalid/kt-shadow:0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if !inStore(ks.Entrypoint[0], "kt-shadow") {
		t.Errorf("{env:KT_SHADOW_BIN} naming an executable must run from the store: %q", ks.Entrypoint)
	}
	// Not an existing executable, or not a whole word: left as it is.
	unbuilt, err := tab.Resolve("kt.invalid/unbuilt")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(unbuilt.Cmd, []string{"/build/kt-shadow", "--flag=" + shadow}) {
		t.Errorf("cmd %q", unbuilt.Cmd)
	}

	// A ktlab binary that is gone fails like a pull, saying why.
	if err := os.Remove(ktlab); err != nil {
		t.Fatal(err)
	}
	tab.store = newImageStore(tab.store.dir)
	_, err = tab.Resolve("kt.invalid/echo")
	var pe *imagePullError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "image executable") || !strings.Contains(err.Error(), ktlab) {
		t.Errorf("missing ktlab binary: %v", err)
	}
}
