// Command ktlab is the lab's multi-call binary: the upstream Kubernetes
// components, etcd and CoreDNS linked from pinned modules, plus the lab's own
// node agent and helpers.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"
)

type cobraCommand = cobra.Command

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := lookup(name); !ok {
		if len(args) == 0 {
			usage()
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	run, ok := lookup(name)
	if !ok {
		fmt.Fprintf(os.Stderr, "ktlab: unknown component %q\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(run(args))
}

func lookup(name string) (func([]string) int, bool) {
	if f, ok := upstream[name]; ok {
		return f, true
	}
	f, ok := ours[name]
	return f, ok
}

func usage() {
	var names []string
	for n := range upstream {
		names = append(names, n)
	}
	for n := range ours {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: ktlab <component> [args...]\ncomponents: %v\n", names)
}
