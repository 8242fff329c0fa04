package node

import (
	"context"
	"fmt"
	"os"
	"testing"

	"kt.dev/testbed/internal/echo"
)

// netnsHelper is "<test binary> netns-helper add|delete <name>": it creates or
// deletes a netns the way the agent does, from wherever it was started.
func netnsHelper(args []string) int {
	hostMnt, err := openHostMountNS("")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n := &netManager{hostMountNS: hostMnt}
	switch args[0] {
	case "add":
		err = n.ensureNetNS(context.Background(), args[1])
	case "delete":
		err = n.netnsCmd(context.Background(), "delete", args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if hostMnt != nil {
		fmt.Println("host-mount-ns")
	}
	return 0
}

// TestMain lets the test binary play `ktlab run-container` for the
// integration tests (spawnRunner runs "<binary> run-container <spec>"), and
// `ktlab echo` for image kt.invalid/echo ("{ktlab} echo").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "echo" {
		os.Exit(echo.Main(os.Args[2:]))
	}
	if len(os.Args) > 2 && os.Args[1] == "run-container" {
		os.Exit(RunContainer(os.Args[2:]))
	}
	if len(os.Args) > 2 && os.Args[1] == "netns-helper" {
		os.Exit(netnsHelper(os.Args[2:]))
	}
	os.Exit(m.Run())
}
