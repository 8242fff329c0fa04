// Package kubeletserver serves the part of the kubelet API that the API server
// proxies to a node: port-forward (SPDY and WebSocket), exec, and container logs.
package kubeletserver

import "errors"

// ErrNotFound is returned by a Runtime when the pod or container is unknown
// (the server answers 404).
var ErrNotFound = errors.New("not found")

// Runtime is what the server needs from the node agent. Implementations must
// be safe for concurrent use.
type Runtime interface {
	// PodNetNSPath returns the path of the pod's network namespace
	// (for example /run/netns/ktlab-p-0123abcd). uid may be empty.
	PodNetNSPath(namespace, pod, uid string) (string, error)
	// ContainerPID returns the PID of a process running in the container's
	// namespaces (network, mount, UTS), used as the nsenter target for exec.
	// container may be empty: the pod's first container is meant.
	ContainerPID(namespace, pod, container string) (int, error)
	// ContainerEnv returns the container's environment (KEY=VALUE), given to
	// exec'd processes as a real runtime does.
	ContainerEnv(namespace, pod, container string) ([]string, error)
	// ContainerLogPath returns the log file of the container's current run, or of
	// its previous run when previous is true. container may be empty as above.
	ContainerLogPath(namespace, pod, container string, previous bool) (string, error)
}
