// Package testnetns gives tests a throwaway network namespace. Nothing is added
// to the test's own namespace; the namespace is deleted when the test ends.
package testnetns

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"testing"
)

// New creates a network namespace named ktlabtest-<random> with only its
// loopback up and returns its path (/run/netns/<name>). It fails the test,
// saying so, when not run as root.
func New(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test creates a network namespace with `ip netns add` and needs root; run it as root, e.g. sudo -E go test ./internal/...")
	}
	var b [4]byte
	rand.Read(b[:])
	name := "ktlabtest-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, out)
	}
	return "/run/netns/" + name
}
