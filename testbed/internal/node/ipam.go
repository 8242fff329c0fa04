package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ipam hands out pod IPs from the node's podCIDR and persists the
// allocations, so that an agent restart keeps every running pod's address.
// It skips the network address, the first host address (.1) and the
// broadcast address, and allocates next-fit so a released address is not
// reused at once.
type ipam struct {
	mu    sync.Mutex
	path  string
	cidr  *net.IPNet
	state ipamState
}

type ipamState struct {
	CIDR string `json:"cidr"`
	// Allocations maps an IP to the UID of the pod holding it.
	Allocations map[string]types.UID `json:"allocations"`
	// Last is the most recently allocated address (next-fit start).
	Last string `json:"last,omitempty"`
}

// loadIPAM opens (or creates) the allocation file for cidr. Allocations made
// for a different CIDR are dropped.
func loadIPAM(path, cidr string) (*ipam, error) {
	_, ipnet, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR %q: %w", cidr, err)
	}
	if ipnet.IP.To4() == nil {
		return nil, fmt.Errorf("pod CIDR %q: only IPv4 is supported", cidr)
	}
	if ones, bits := ipnet.Mask.Size(); bits-ones < 2 {
		return nil, fmt.Errorf("pod CIDR %q is too small", cidr)
	}
	a := &ipam{path: path, cidr: ipnet}
	err = readJSON(path, &a.state)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if a.state.CIDR != ipnet.String() {
		a.state = ipamState{CIDR: ipnet.String()}
	}
	if a.state.Allocations == nil {
		a.state.Allocations = map[string]types.UID{}
	}
	return a, a.save()
}

func (a *ipam) save() error { return writeJSON(a.path, &a.state) }

// Lookup returns the IP allocated to uid, or "".
func (a *ipam) Lookup(uid types.UID) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lookup(uid)
}

func (a *ipam) lookup(uid types.UID) string {
	for ip, owner := range a.state.Allocations {
		if owner == uid {
			return ip
		}
	}
	return ""
}

// Allocate returns uid's address, allocating one if it has none.
func (a *ipam) Allocate(uid types.UID) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip := a.lookup(uid); ip != "" {
		return ip, nil
	}
	base := binary.BigEndian.Uint32(a.cidr.IP.To4())
	ones, bits := a.cidr.Mask.Size()
	size := uint32(1) << uint(bits-ones)
	first, last := base+2, base+size-2 // skip network, .1 and broadcast
	if first > last {
		return "", fmt.Errorf("pod CIDR %s has no usable addresses", a.cidr)
	}
	start := first
	if prev := net.ParseIP(a.state.Last).To4(); prev != nil && a.cidr.Contains(prev) {
		if p := binary.BigEndian.Uint32(prev); p >= first && p < last {
			start = p + 1
		}
	}
	n := last - first + 1
	for i := uint32(0); i < n; i++ {
		cand := first + (start-first+i)%n
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, cand)
		s := ip.String()
		if _, taken := a.state.Allocations[s]; taken {
			continue
		}
		a.state.Allocations[s] = uid
		a.state.Last = s
		if err := a.save(); err != nil {
			delete(a.state.Allocations, s)
			return "", err
		}
		return s, nil
	}
	return "", fmt.Errorf("pod CIDR %s is exhausted", a.cidr)
}

// Release frees uid's address, if any.
func (a *ipam) Release(uid types.UID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	for ip, owner := range a.state.Allocations {
		if owner == uid {
			delete(a.state.Allocations, ip)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return a.save()
}

// Retain frees every allocation whose owner keep rejects.
func (a *ipam) Retain(keep func(types.UID) bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	for ip, owner := range a.state.Allocations {
		if !keep(owner) {
			delete(a.state.Allocations, ip)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return a.save()
}
