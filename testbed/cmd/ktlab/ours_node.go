package main

import "kt.dev/testbed/internal/node"

// The lab's node agent, and the per-container process it starts.
func init() {
	ours["node"] = node.Main
	ours["run-container"] = node.RunContainer
}
