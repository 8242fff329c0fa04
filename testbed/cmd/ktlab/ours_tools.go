package main

import (
	"kt.dev/testbed/internal/echo"
	"kt.dev/testbed/internal/pki"
	"kt.dev/testbed/internal/portproxy"
)

// The lab's small tools: certificates, the loopback port proxy into the lab's
// namespace, and the echo test application.
func init() {
	ours["pki"] = pki.Main
	ours["portproxy"] = portproxy.Main
	ours["echo"] = echo.Main
}
