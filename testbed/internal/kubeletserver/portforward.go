package kubeletserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	"k8s.io/klog/v2"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"

	"kt.dev/testbed/internal/netnsdial"
)

// dialTimeout bounds a connection attempt to a pod port. The target is the
// pod's own loopback, so anything slower means something is wrong.
const dialTimeout = 10 * time.Second

// handlePortForward serves /portForward/{ns}/{pod}[/{uid}] with the kubelet's
// own streaming code: SPDY (portforward.k8s.io) or WebSocket
// (v4.channel.k8s.io / v4.base64.channel.k8s.io, ports in the "port" query).
func (s *server) handlePortForward(w http.ResponseWriter, r *http.Request) {
	ns, pod, uid := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("uid")
	// NewV4Options parses the "port" query parameters the WebSocket protocol
	// needs (for SPDY the ports arrive per stream in headers). Passing empty
	// options would silently break WebSocket port-forward.
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	nsPath, err := s.rt.PodNetNSPath(ns, pod, uid)
	if err != nil {
		writeLookupError(w, fmt.Sprintf("pod %s/%s", ns, pod), err)
		return
	}
	f := &podForwarder{
		nsPath:    nsPath,
		pod:       ns + "/" + pod,
		reqCtx:    r.Context(),
		websocket: wsstream.IsWebSocketRequest(r),
	}
	portforward.ServePortForward(w, r, f, pod, types.UID(uid), opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

// podForwarder connects port-forward streams to ports on the pod's loopback,
// inside the pod's network namespace, as a CRI runtime does.
type podForwarder struct {
	nsPath string
	pod    string
	// reqCtx ends when the port-forward request ends (connection gone, server
	// shutting down); the streaming package passes context.Background() to
	// PortForward, so this is what stops a forward whose client vanished.
	reqCtx context.Context
	// websocket streams have no half-close: EOF on one means the WebSocket
	// connection is gone.
	websocket bool
}

// PortForward implements portforward.PortForwarder. A returned error is
// written to the stream pair's error stream; client-go then tears down the
// whole port-forward session, so only a failed connection attempt is reported
// as an error. Copy failures after that just end this one stream pair.
//
// Half-close: when the client finishes sending (SPDY stream EOF), the pod
// side gets CloseWrite and the pod's reply is still relayed until the pod
// closes. When the pod finishes sending, the forward ends at once (closing
// both ends): client-go only reports EOF to its local connection after
// PortForward returns, so waiting for the client here would stall it.
func (f *podForwarder) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	conn, err := f.dial(ctx, port)
	if err != nil {
		return err
	}
	defer conn.Close()

	up := make(chan error, 1)   // client stream -> pod
	down := make(chan error, 1) // pod -> client stream
	go func() {
		_, err := io.Copy(conn, stream)
		up <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		down <- err
	}()

	for {
		select {
		case err := <-up:
			if err == nil && !f.websocket {
				// The client half-closed: pass it on and keep relaying the reply.
				if cw, ok := conn.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				up = nil
				continue
			}
			if err != nil {
				klog.V(2).InfoS("port-forward: client stream ended", "pod", f.pod, "port", port, "err", err)
			}
			return nil
		case err := <-down:
			if err != nil && !errors.Is(err, net.ErrClosed) {
				klog.V(2).InfoS("port-forward: pod connection ended", "pod", f.pod, "port", port, "err", err)
			}
			return nil
		case <-f.reqCtx.Done():
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// dial connects to the port on the pod's loopback: 127.0.0.1 first, then
// ::1 (a server may listen on IPv6 loopback only), as containerd does.
func (f *podForwarder) dial(ctx context.Context, port int32) (net.Conn, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("invalid port %d", port)
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	p := strconv.Itoa(int(port))
	conn, err4 := netnsdial.DialInNetNS(ctx, f.nsPath, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err4 == nil {
		return conn, nil
	}
	conn, err6 := netnsdial.DialInNetNS(ctx, f.nsPath, "tcp6", net.JoinHostPort("::1", p))
	if err6 == nil {
		return conn, nil
	}
	klog.InfoS("port-forward: cannot connect to pod port", "pod", f.pod, "port", port, "err", err4)
	return nil, fmt.Errorf("pod %s has nothing listening on localhost:%d (127.0.0.1: %v; ::1: %v)", f.pod, port, err4, err6)
}
