package node

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"golang.org/x/sys/unix"
)

// Versions the node reports.
const (
	kubeletVersion          = "v1.34.4"
	containerRuntimeVersion = "ktlab://0.1"
	nodeLeaseNamespace      = "kube-node-lease"
	nodeLeaseDuration       = 40
)

// nodeAllocatable is the node's capacity (and allocatable): the lab's
// fixed, modest numbers.
func nodeAllocatable() v1.ResourceList {
	return v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("2"),
		v1.ResourceMemory:           resource.MustParse("8Gi"),
		v1.ResourcePods:             resource.MustParse("110"),
		v1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
	}
}

// nodeManager registers the Node and keeps its Lease and status fresh.
type nodeManager struct {
	client kubernetes.Interface
	name   string
	ip     string
	port   int
	info   v1.NodeSystemInfo
}

func newNodeManager(client kubernetes.Interface, cfg Config) *nodeManager {
	return &nodeManager{client: client, name: cfg.NodeName, ip: cfg.NodeIP, port: cfg.KubeletPort, info: systemInfo()}
}

// systemInfo describes this machine as nodeInfo.
func systemInfo() v1.NodeSystemInfo {
	var uts unix.Utsname
	kernel := ""
	if unix.Uname(&uts) == nil {
		kernel = unix.ByteSliceToString(uts.Release[:])
	}
	osImage := "Linux"
	for _, line := range readLines("/etc/os-release") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			osImage = strings.Trim(v, `"`)
		}
	}
	machineID := firstLine("/etc/machine-id")
	systemUUID := firstLine("/sys/class/dmi/id/product_uuid")
	if systemUUID == "" {
		systemUUID = machineID
	}
	return v1.NodeSystemInfo{
		MachineID:               machineID,
		SystemUUID:              systemUUID,
		BootID:                  firstLine("/proc/sys/kernel/random/boot_id"),
		KernelVersion:           kernel,
		OSImage:                 osImage,
		ContainerRuntimeVersion: containerRuntimeVersion,
		KubeletVersion:          kubeletVersion,
		KubeProxyVersion:        kubeletVersion,
		OperatingSystem:         "linux",
		Architecture:            runtime.GOARCH,
	}
}

func firstLine(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(line)
}

func (m *nodeManager) labels() map[string]string {
	return map[string]string{
		v1.LabelHostname:   m.name,
		v1.LabelOSStable:   "linux",
		v1.LabelArchStable: runtime.GOARCH,
	}
}

// setStatus fills the node status the agent owns; conditions keep their
// transition times and get a fresh heartbeat.
func (m *nodeManager) setStatus(node *v1.Node, now metav1.Time) {
	alloc := nodeAllocatable()
	node.Status.Capacity = alloc.DeepCopy()
	node.Status.Allocatable = alloc.DeepCopy()
	node.Status.Addresses = []v1.NodeAddress{
		{Type: v1.NodeInternalIP, Address: m.ip},
		{Type: v1.NodeHostName, Address: m.name},
	}
	node.Status.DaemonEndpoints = v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(m.port)}}
	node.Status.NodeInfo = m.info
	want := []v1.NodeCondition{
		{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: v1.NodeDiskPressure, Status: v1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: v1.NodePIDPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
		{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
	}
	var conds []v1.NodeCondition
	for _, c := range want {
		c.LastHeartbeatTime = now
		c.LastTransitionTime = now
		for _, old := range node.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		conds = append(conds, c)
	}
	for _, old := range node.Status.Conditions {
		known := false
		for _, c := range want {
			known = known || c.Type == old.Type
		}
		if !known {
			conds = append(conds, old)
		}
	}
	node.Status.Conditions = conds
}

// register creates the Node, or brings an existing one up to date.
func (m *nodeManager) register(ctx context.Context) error {
	now := metav1.Now()
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        m.name,
			Labels:      m.labels(),
			Annotations: map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
		},
	}
	m.setStatus(node, now)
	created, err := m.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err == nil {
		klog.Infof("Registered node %s (%s)", m.name, m.ip)
		_, err = m.client.CoreV1().Nodes().UpdateStatus(ctx, withStatus(created, m, now), metav1.UpdateOptions{})
		return err
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("registering node %s: %w", m.name, err)
	}
	existing, err := m.client.CoreV1().Nodes().Get(ctx, m.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	changed := false
	if existing.Labels == nil {
		existing.Labels = map[string]string{}
	}
	for k, v := range m.labels() {
		if existing.Labels[k] != v {
			existing.Labels[k], changed = v, true
		}
	}
	if changed {
		if existing, err = m.client.CoreV1().Nodes().Update(ctx, existing, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	if _, err := m.client.CoreV1().Nodes().UpdateStatus(ctx, withStatus(existing, m, now), metav1.UpdateOptions{}); err != nil {
		return err
	}
	klog.Infof("Node %s was already registered; status updated", m.name)
	return nil
}

func withStatus(node *v1.Node, m *nodeManager, now metav1.Time) *v1.Node {
	n := node.DeepCopy()
	m.setStatus(n, now)
	return n
}

// heartbeat refreshes the node status (and re-registers a deleted node).
func (m *nodeManager) heartbeat(ctx context.Context) error {
	for attempt := 0; attempt < 3; attempt++ {
		node, err := m.client.CoreV1().Nodes().Get(ctx, m.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			klog.Warningf("Node %s disappeared; registering it again", m.name)
			return m.register(ctx)
		}
		if err != nil {
			return err
		}
		_, err = m.client.CoreV1().Nodes().UpdateStatus(ctx, withStatus(node, m, metav1.Now()), metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("node status update kept conflicting")
}

// renewLease creates or renews the node's Lease.
func (m *nodeManager) renewLease(ctx context.Context) error {
	leases := m.client.CoordinationV1().Leases(nodeLeaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, m.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		holder, dur := m.name, int32(nodeLeaseDuration)
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: m.name, Namespace: nodeLeaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       &holder,
				LeaseDurationSeconds: &dur,
				RenewTime:            &now,
			},
		}
		if node, err := m.client.CoreV1().Nodes().Get(ctx, m.name, metav1.GetOptions{}); err == nil {
			lease.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: m.name, UID: node.UID}}
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	holder, dur := m.name, int32(nodeLeaseDuration)
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds, lease.Spec.RenewTime = &holder, &dur, &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

// run keeps the Lease and the status fresh until ctx ends.
func (m *nodeManager) run(ctx context.Context, leaseEvery, statusEvery time.Duration) {
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := m.renewLease(ctx); err != nil && ctx.Err() == nil {
			klog.Warningf("Renewing node lease: %v", err)
		}
	}, leaseEvery)
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := m.heartbeat(ctx); err != nil && ctx.Err() == nil {
			klog.Warningf("Updating node status: %v", err)
		}
	}, statusEvery)
}

// waitPodCIDR waits until the controller-manager has given the node a podCIDR.
func (m *nodeManager) waitPodCIDR(ctx context.Context) (string, error) {
	logged := false
	for {
		node, err := m.client.CoreV1().Nodes().Get(ctx, m.name, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			return node.Spec.PodCIDR, nil
		}
		if !logged {
			klog.Infof("Waiting for node %s to get a podCIDR from the controller-manager", m.name)
			logged = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
