package node

import (
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestIPAMAllocatePersistRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	a, err := loadIPAM(path, "10.244.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	ip1, err := a.Allocate("pod-a")
	if err != nil {
		t.Fatal(err)
	}
	if ip1 != "10.244.0.2" {
		t.Fatalf("first address = %s, want 10.244.0.2 (skip network and .1)", ip1)
	}
	if again, _ := a.Allocate("pod-a"); again != ip1 {
		t.Fatalf("re-allocation for the same pod gave %s, want %s", again, ip1)
	}
	ip2, _ := a.Allocate("pod-b")
	if ip2 != "10.244.0.3" {
		t.Fatalf("second address = %s", ip2)
	}

	// A restart keeps the allocations.
	b, err := loadIPAM(path, "10.244.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Lookup("pod-a"); got != ip1 {
		t.Fatalf("after reload pod-a has %q, want %s", got, ip1)
	}
	if got := b.Lookup("pod-b"); got != ip2 {
		t.Fatalf("after reload pod-b has %q, want %s", got, ip2)
	}

	// Released addresses are not reused at once (next-fit).
	if err := b.Release("pod-a"); err != nil {
		t.Fatal(err)
	}
	ip3, _ := b.Allocate("pod-c")
	if ip3 != "10.244.0.4" {
		t.Fatalf("after release, next address = %s, want 10.244.0.4", ip3)
	}
	if err := b.Retain(func(uid types.UID) bool { return uid == "pod-c" }); err != nil {
		t.Fatal(err)
	}
	if b.Lookup("pod-b") != "" {
		t.Fatal("Retain kept pod-b")
	}

	// A different CIDR starts afresh.
	c, err := loadIPAM(path, "10.244.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if c.Lookup("pod-c") != "" {
		t.Fatal("allocation from another CIDR survived")
	}
}

func TestIPAMExhaustionAndWrap(t *testing.T) {
	a, err := loadIPAM(filepath.Join(t.TempDir(), "ipam.json"), "10.244.0.0/29")
	if err != nil {
		t.Fatal(err)
	}
	// /29: .0 network, .1 skipped, .7 broadcast: .2-.6 usable.
	var got []string
	for i := 0; i < 5; i++ {
		ip, err := a.Allocate(types.UID(rune('a' + i)))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		got = append(got, ip)
	}
	if got[0] != "10.244.0.2" || got[4] != "10.244.0.6" {
		t.Fatalf("allocations %v", got)
	}
	if _, err := a.Allocate("z"); err == nil {
		t.Fatal("allocation from a full range succeeded")
	}
	_ = a.Release("c") // 10.244.0.4
	ip, err := a.Allocate("y")
	if err != nil || ip != "10.244.0.4" {
		t.Fatalf("wrap-around allocation = %s, %v", ip, err)
	}
}
