package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
)

// runHook runs a postStart or preStop handler: exec inside the container,
// httpGet from the node, or sleep. ctx bounds it.
func runHook(ctx context.Context, h *v1.LifecycleHandler, t probeTarget) error {
	switch {
	case h == nil:
		return nil
	case h.Exec != nil:
		out, err := execIn(ctx, t, h.Exec.Command)
		if err != nil {
			return fmt.Errorf("command '%s' exited with %v: %s", strings.Join(h.Exec.Command, " "), err, out)
		}
		return nil
	case h.HTTPGet != nil:
		if ok, msg := httpAction(ctx, h.HTTPGet, t); !ok {
			return errors.New(msg)
		}
		return nil
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return nil
		}
	case h.TCPSocket != nil:
		return errors.New("tcpSocket lifecycle handlers are not supported")
	}
	return errors.New("lifecycle handler has no action")
}
