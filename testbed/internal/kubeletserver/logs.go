package kubeletserver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"time"
)

// followPollInterval is how often a followed log is checked for new bytes
// and for a new run of the container.
const followPollInterval = 200 * time.Millisecond

// logOptions are the containerLogs query parameters (v1.PodLogOptions as the
// API server encodes them for the kubelet).
type logOptions struct {
	follow, previous, timestamps bool
	tailLines                    int64 // <0: all
	limitBytes                   int64 // <=0: no limit
	since                        time.Time
}

func parseLogOptions(r *http.Request) (logOptions, error) {
	q := r.URL.Query()
	o := logOptions{tailLines: -1}
	boolean := func(name string, dst *bool) error {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("query parameter %s=%q is not a boolean", name, v)
		}
		*dst = b
		return nil
	}
	integer := func(name string) (int64, bool, error) {
		v := q.Get(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("query parameter %s=%q is not an integer", name, v)
		}
		return n, true, nil
	}
	for name, dst := range map[string]*bool{"follow": &o.follow, "previous": &o.previous, "timestamps": &o.timestamps} {
		if err := boolean(name, dst); err != nil {
			return o, err
		}
	}
	// "tail" is the kubelet's legacy spelling; "all" means no limit.
	tailName := "tailLines"
	if q.Get("tailLines") == "" && q.Get("tail") != "" {
		tailName = "tail"
	}
	if q.Get(tailName) != "all" {
		n, ok, err := integer(tailName)
		if err != nil {
			return o, err
		}
		if ok {
			if n < 0 {
				return o, errors.New("tailLines must be >= 0")
			}
			o.tailLines = n
		}
	}
	n, ok, err := integer("limitBytes")
	if err != nil {
		return o, err
	}
	if ok {
		if n < 1 {
			return o, errors.New("limitBytes must be >= 1")
		}
		o.limitBytes = n
	}
	secs, hasSecs, err := integer("sinceSeconds")
	if err != nil {
		return o, err
	}
	st := q.Get("sinceTime")
	if hasSecs && st != "" {
		return o, errors.New("at most one of sinceTime or sinceSeconds may be given")
	}
	if hasSecs {
		if secs < 1 {
			return o, errors.New("sinceSeconds must be >= 1")
		}
		o.since = time.Now().Add(-time.Duration(secs) * time.Second)
	}
	if st != "" {
		t, err := time.Parse(time.RFC3339, st)
		if err != nil {
			return o, fmt.Errorf("query parameter sinceTime=%q is not RFC 3339", st)
		}
		o.since = t
	}
	return o, nil
}

// handleContainerLogs serves /containerLogs/{ns}/{pod}/{container}.
//
// The log file (Runtime.ContainerLogPath) is treated as the raw, merged
// stdout+stderr of one run of the container, without per-line times. Hence:
//   - timestamps=true prefixes each line with an RFC 3339 (nano) UTC time:
//     for bytes already in the file when the request came, the file's
//     modification time (no line was written later than that); for bytes
//     that arrive while following, the time they were read.
//   - sinceSeconds/sinceTime: if the file was last modified before that
//     time, its existing content is skipped (and, when following, only new
//     bytes are sent); otherwise all of it is sent (subject to tailLines).
//   - stream (stdout/stderr separation) is not supported: all output is sent.
//
// tailLines and limitBytes behave as on a kubelet (limitBytes counts the
// bytes sent, timestamps included). follow=true keeps sending new bytes
// until the client goes away, the server stops, or the container's run ends
// (Runtime.ContainerLogPath names another file, or the container is gone);
// with previous=true there is nothing to follow.
func (s *server) handleContainerLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	opts, err := parseLogOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	what := fmt.Sprintf("container %q in pod %s/%s", container, ns, pod)
	if opts.previous {
		what = "previous run of " + what
	}
	path, err := s.rt.ContainerLogPath(ns, pod, container, opts.previous)
	if err != nil {
		writeLookupError(w, what, err)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.Error(w, fmt.Sprintf("log of %s not found", what), http.StatusNotFound)
			return
		}
		http.Error(w, fmt.Sprintf("opening log of %s: %v", what, err), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, fmt.Sprintf("stat log of %s: %v", what, err), http.StatusInternalServerError)
		return
	}

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	var out io.Writer = writerFunc(func(p []byte) (int, error) {
		n, err := w.Write(p)
		if err == nil {
			err = rc.Flush()
		}
		return n, err
	})
	if opts.limitBytes > 0 {
		out = &limitWriter{w: out, left: opts.limitBytes}
	}
	var ts *timestampWriter
	if opts.timestamps {
		ts = &timestampWriter{w: out, atLineStart: true}
		out = ts
	}
	stamp := func(t time.Time) {
		if ts != nil {
			ts.now = t
		}
	}

	// Existing content.
	size := st.Size()
	start := int64(0)
	switch {
	case !opts.since.IsZero() && st.ModTime().Before(opts.since):
		start = size
	case opts.tailLines >= 0:
		if start, err = tailOffset(f, size, opts.tailLines); err != nil {
			return
		}
	}
	stamp(st.ModTime())
	if _, err := io.Copy(out, io.NewSectionReader(f, start, size-start)); err != nil {
		return // client gone or limitBytes reached
	}
	if !opts.follow || opts.previous {
		return
	}

	// Follow.
	offset := size
	ctx := r.Context()
	tick := time.NewTicker(followPollInterval)
	defer tick.Stop()
	for {
		ended := s.runEnded(ns, pod, container, path)
		if err := copyNew(f, &offset, out, stamp); err != nil || ended {
			// After the run ended, the copy above picked up its last bytes.
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// runEnded reports whether path is no longer the log of the container's
// current run.
func (s *server) runEnded(ns, pod, container, path string) bool {
	cur, err := s.rt.ContainerLogPath(ns, pod, container, false)
	return err != nil || cur != path
}

// copyNew copies the bytes appended to f since *offset. A file that shrank
// (truncated) is read again from its start.
func copyNew(f *os.File, offset *int64, out io.Writer, stamp func(time.Time)) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < *offset {
		*offset = 0
	}
	if st.Size() == *offset {
		return nil
	}
	stamp(time.Now())
	n, err := io.Copy(out, io.NewSectionReader(f, *offset, st.Size()-*offset))
	*offset += n
	return err
}

// tailOffset returns where the last n lines of f (size bytes) begin. A final
// line without a trailing newline counts as a line.
func tailOffset(f *os.File, size, n int64) (int64, error) {
	if n == 0 || size == 0 {
		return size, nil
	}
	end := size
	// A trailing newline terminates the last line; it does not start a new one.
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		end--
	}
	buf := make([]byte, 32*1024)
	for end > 0 {
		chunk := int64(len(buf))
		if chunk > end {
			chunk = end
		}
		b := buf[:chunk]
		if _, err := f.ReadAt(b, end-chunk); err != nil {
			return 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '\n' {
				n--
				if n == 0 {
					return end - chunk + int64(i) + 1, nil
				}
			}
		}
		end -= chunk
	}
	return 0, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var errLimitReached = errors.New("limitBytes reached")

// limitWriter passes on at most left bytes, then fails.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errLimitReached
	}
	short := false
	if int64(len(p)) > l.left {
		p, short = p[:l.left], true
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	if err == nil && short {
		err = errLimitReached
	}
	return n, err
}

// timestampWriter prefixes every line with now in RFC 3339 (nano), UTC.
type timestampWriter struct {
	w           io.Writer
	now         time.Time
	atLineStart bool
	buf         bytes.Buffer
}

func (t *timestampWriter) Write(p []byte) (int, error) {
	t.buf.Reset()
	stamp := t.now.UTC().Format(time.RFC3339Nano) + " "
	for rest := p; len(rest) > 0; {
		if t.atLineStart {
			t.buf.WriteString(stamp)
		}
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		t.buf.Write(line)
		t.atLineStart = line[len(line)-1] == '\n'
		rest = rest[len(line):]
	}
	if _, err := t.w.Write(t.buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
