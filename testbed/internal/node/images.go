package node

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// imageEntry is one row of the image table (testbed/images.yaml): how the lab
// runs an image. Strings may use the placeholders {ktlab} (the ktlab binary),
// {root} (the directory holding the table) and {env:NAME} (the agent's
// environment variable NAME, which must be set). With an image store, {ktlab}
// means the store's copy of the ktlab binary, and an entrypoint or cmd word
// that is a whole {env:NAME} naming an executable file means the store's copy
// of that file: lab-built executables run as image files do, for any user.
type imageEntry struct {
	// Entrypoint and Cmd follow the Docker image config: a container's command
	// replaces Entrypoint, its args replace Cmd.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	// Env is the image's environment (KEY=VALUE), below the pod's own.
	Env []string `json:"env,omitempty"`
	// WorkingDir is the default working directory ("/" if empty).
	WorkingDir string `json:"workingDir,omitempty"`
	// User is the image's default user, "uid" or "uid:gid" (root if empty).
	User string `json:"user,omitempty"`
	// Aliases are further repositories that mean the same image.
	Aliases []string `json:"aliases,omitempty"`
	// RootFS says what the image's filesystem holds: "" (a whole
	// distribution, modelled by the node's own filesystem) or "empty"
	// (nothing but the image's own program, like registry.k8s.io/pause or a
	// FROM scratch image). See rootfs.go.
	RootFS string `json:"rootfs,omitempty"`
}

// rootFSEmpty is the image table's rootfs value for an image whose
// filesystem holds nothing but its own program.
const rootFSEmpty = "empty"

// resolvedImage is an image entry with its placeholders expanded.
type resolvedImage struct {
	Repository string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	UID, GID   *int64
	// RootFS is the entry's rootfs ("" or rootFSEmpty).
	RootFS string
}

// Argv applies Docker/Kubernetes semantics: command replaces the entrypoint
// (and drops the image's cmd), args replace cmd.
func (r *resolvedImage) Argv(command, args []string) []string {
	var argv []string
	switch {
	case len(command) > 0:
		argv = append(append(argv, command...), args...)
	case len(args) > 0:
		argv = append(append(argv, r.Entrypoint...), args...)
	default:
		argv = append(append(argv, r.Entrypoint...), r.Cmd...)
	}
	return argv
}

// RunsOwnProgram reports whether a container with this command and args
// runs the image's own program: the first word of its command line comes
// from the image (its entrypoint, or its cmd when it has no entrypoint and
// the container gives no args), not from the container.
func (r *resolvedImage) RunsOwnProgram(command, args []string) bool {
	return len(command) == 0 && (len(r.Entrypoint) > 0 || len(args) == 0)
}

// imageTable loads the image table, re-reading it whenever the file changes.
type imageTable struct {
	path   string
	ktlab  string
	getenv func(string) (string, bool)
	// store, if set, installs the executables placeholders name (see
	// imageEntry); nil runs them where they are.
	store *imageStore

	mu      sync.Mutex
	modTime time.Time
	size    int64
	entries map[string]*imageEntry
	loadErr error
}

func newImageTable(path, ktlab string) *imageTable {
	return &imageTable{path: path, ktlab: ktlab, getenv: os.LookupEnv}
}

// imagePullError reports that an image cannot be "pulled": it is not in the
// table, or its entry cannot be resolved.
type imagePullError struct {
	Image string
	Err   error
}

func (e *imagePullError) Error() string {
	return fmt.Sprintf("failed to pull image %q: %v", e.Image, e.Err)
}

func (e *imagePullError) Unwrap() error { return e.Err }

// Resolve finds an image reference in the table.
func (t *imageTable) Resolve(image string) (*resolvedImage, error) {
	entries, err := t.load()
	if err != nil {
		return nil, &imagePullError{Image: image, Err: fmt.Errorf("the lab's image table is unreadable: %w", err)}
	}
	for _, repo := range repositoryCandidates(image) {
		if e, ok := entries[repo]; ok {
			r, err := t.expand(repo, e)
			if err != nil {
				return nil, &imagePullError{Image: image, Err: err}
			}
			return r, nil
		}
	}
	return nil, &imagePullError{Image: image, Err: fmt.Errorf("image %q is not in the lab's image table (%s)", image, t.displayPath())}
}

func (t *imageTable) displayPath() string {
	dir := filepath.Base(filepath.Dir(t.path))
	return filepath.Join(dir, filepath.Base(t.path))
}

func (t *imageTable) load() (map[string]*imageEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := os.Stat(t.path)
	if err != nil {
		return nil, err
	}
	if t.entries != nil || t.loadErr != nil {
		if st.ModTime().Equal(t.modTime) && st.Size() == t.size {
			return t.entries, t.loadErr
		}
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return nil, err
	}
	t.modTime, t.size = st.ModTime(), st.Size()
	t.entries, t.loadErr = parseImageTable(data)
	return t.entries, t.loadErr
}

// parseImageTable parses the YAML table (repository → entry) and indexes
// aliases.
func parseImageTable(data []byte) (map[string]*imageEntry, error) {
	var raw map[string]*imageEntry
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return nil, err
	}
	entries := make(map[string]*imageEntry, len(raw))
	repos := make([]string, 0, len(raw))
	for repo := range raw {
		repos = append(repos, repo)
	}
	sort.Strings(repos)
	for _, repo := range repos {
		e := raw[repo]
		if e == nil {
			return nil, fmt.Errorf("image %q: empty entry", repo)
		}
		if len(e.Entrypoint) == 0 && len(e.Cmd) == 0 {
			return nil, fmt.Errorf("image %q: neither entrypoint nor cmd", repo)
		}
		if e.RootFS != "" && e.RootFS != rootFSEmpty {
			return nil, fmt.Errorf("image %q: rootfs %q: the only value is %q (leave it out for an image that holds a whole distribution)", repo, e.RootFS, rootFSEmpty)
		}
		entries[repository(repo)] = e
	}
	for _, repo := range repos {
		for _, alias := range raw[repo].Aliases {
			a := repository(alias)
			if _, dup := entries[a]; dup {
				return nil, fmt.Errorf("image alias %q of %q is already in the table", alias, repo)
			}
			entries[a] = raw[repo]
		}
	}
	return entries, nil
}

func (t *imageTable) expand(repo string, e *imageEntry) (*resolvedImage, error) {
	var firstErr error
	x := func(s string) string {
		out, err := t.expandString(s)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return out
	}
	xs := func(in []string) []string {
		if in == nil {
			return nil
		}
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = x(s)
		}
		return out
	}
	// xexec is xs for entrypoint and cmd: a word that is a whole {env:NAME}
	// naming an executable file runs from the store.
	xexec := func(in []string) []string {
		out := xs(in)
		for i, raw := range in {
			if t.store == nil || firstErr != nil || !isEnvPlaceholder(raw) || !isExecutableFile(out[i]) {
				continue
			}
			p, err := t.store.install(out[i])
			if err != nil {
				firstErr = err
				continue
			}
			out[i] = p
		}
		return out
	}
	r := &resolvedImage{
		Repository: repo,
		Entrypoint: xexec(e.Entrypoint),
		Cmd:        xexec(e.Cmd),
		Env:        xs(e.Env),
		WorkingDir: x(e.WorkingDir),
		RootFS:     e.RootFS,
	}
	if firstErr != nil {
		return nil, fmt.Errorf("image %q: %w", repo, firstErr)
	}
	if e.User != "" {
		uid, gid, err := parseUser(e.User)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", repo, err)
		}
		r.UID, r.GID = uid, gid
	}
	return r, nil
}

// expandString replaces {ktlab}, {root} and {env:NAME}.
func (t *imageTable) expandString(s string) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		key := s[i+1 : i+j]
		switch {
		case key == "ktlab":
			p := t.ktlab
			if t.store != nil {
				var err error
				if p, err = t.store.install(t.ktlab); err != nil {
					return "", err
				}
			}
			b.WriteString(p)
		case key == "root":
			b.WriteString(filepath.Dir(t.path))
		case strings.HasPrefix(key, "env:"):
			name := strings.TrimPrefix(key, "env:")
			v, ok := t.getenv(name)
			if !ok || v == "" {
				return "", fmt.Errorf("the node agent's environment variable %s is not set", name)
			}
			b.WriteString(v)
		default:
			b.WriteString(s[i : i+j+1])
		}
		s = s[i+j+1:]
	}
}

// isEnvPlaceholder reports whether s is exactly one {env:NAME} placeholder.
func isEnvPlaceholder(s string) bool {
	return strings.HasPrefix(s, "{env:") && strings.IndexByte(s, '}') == len(s)-1
}

// isExecutableFile reports whether path is a regular file with an execute bit.
func isExecutableFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// parseUser parses "uid" or "uid:gid" (numeric only).
func parseUser(s string) (uid, gid *int64, err error) {
	u, g, hasGID := strings.Cut(s, ":")
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n < 0 {
		return nil, nil, fmt.Errorf("user %q: only numeric uid[:gid] is supported", s)
	}
	uid = &n
	if hasGID {
		m, err := strconv.ParseInt(g, 10, 64)
		if err != nil || m < 0 {
			return nil, nil, fmt.Errorf("user %q: only numeric uid[:gid] is supported", s)
		}
		gid = &m
	}
	return uid, gid, nil
}

// repository strips the @digest and :tag from an image reference.
func repository(ref string) string {
	ref = strings.TrimSpace(ref)
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i >= 0 && !strings.Contains(ref[i:], "/") {
		ref = ref[:i]
	}
	return ref
}

// repositoryCandidates lists the table keys an image reference may match: the
// repository itself and, for Docker Hub references, their short forms
// (docker.io/library/busybox → busybox).
func repositoryCandidates(ref string) []string {
	repo := repository(ref)
	out := []string{repo}
	for _, prefix := range []string{"docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"} {
		if strings.HasPrefix(repo, prefix) {
			out = append(out, strings.TrimPrefix(repo, prefix))
			break
		}
	}
	if strings.HasPrefix(repo, "library/") {
		out = append(out, strings.TrimPrefix(repo, "library/"))
	}
	return out
}
