package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"kt.dev/testbed/internal/kubeletserver"
	"kt.dev/testbed/internal/labnet"
)

// Agent is the running node agent. It implements kubeletserver.Runtime.
type Agent struct {
	cfg      Config
	client   kubernetes.Interface
	recorder record.EventRecorder
	state    stateDir
	ipam     *ipam
	images   *imageTable
	net      *netManager
	volumes  *volumeManager
	tokens   *tokenManager

	podLister corelisters.PodLister
	svcLister corelisters.ServiceLister

	mu       sync.Mutex
	workers  map[types.UID]*podWorker
	finished map[types.UID]bool // workers that completed a deletion
	ctx      context.Context
	wg       sync.WaitGroup
}

var _ kubeletserver.Runtime = (*Agent)(nil)

// Run runs the node agent until ctx ends. Stopping the agent leaves every pod
// running; a new agent re-adopts them from the state directory.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	// Network safety: everything below happens in the lab's host namespace.
	if err := verifyNetNS(cfg.HostNetNS); err != nil {
		return err
	}
	hostMnt, err := openHostMountNS(cfg.HostMountNS)
	if err != nil {
		return err
	}
	if hostMnt != nil {
		defer hostMnt.Close()
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	restCfg.UserAgent = "ktlab-node/" + kubeletVersion
	restCfg.QPS, restCfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	a := newAgent(cfg, client, &netManager{hostNS: cfg.HostNetNS, hostMountNS: hostMnt})
	return a.run(ctx)
}

// newAgent wires an agent; cfg must have its defaults applied.
func newAgent(cfg Config, client kubernetes.Interface, netm *netManager) *Agent {
	tokens := newTokenManager(client)
	images := newImageTable(cfg.ImagesFile, cfg.Ktlab)
	images.store = newImageStore(stateDir(cfg.StateDir).imagesDir())
	return &Agent{
		cfg:      cfg,
		client:   client,
		state:    stateDir(cfg.StateDir),
		images:   images,
		net:      netm,
		tokens:   tokens,
		volumes:  &volumeManager{client: client, tokens: tokens, nodeAllocatable: nodeAllocatable()},
		workers:  map[types.UID]*podWorker{},
		finished: map[types.UID]bool{},
	}
}

// run runs the agent until ctx ends.
func (a *Agent) run(ctx context.Context) error {
	cfg := a.cfg
	a.ctx = ctx
	if err := a.state.ensure(); err != nil {
		return err
	}
	lock, err := lockStateDir(a.state)
	if err != nil {
		return err
	}
	defer lock.Close()
	if cfg.TLSCertFile != "" {
		// Another agent serving this node's kubelet port would also own its pods.
		addr := net.JoinHostPort(cfg.NodeIP, strconv.Itoa(cfg.KubeletPort))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("kubelet port %s is not available (is another node agent running?): %w", addr, err)
		}
		l.Close()
	}
	for _, d := range []string{cfg.StateDir, a.state.podsDir()} {
		_ = os.Chmod(d, 0o755) // volume files must be reachable by non-root workloads
	}
	// Pods run as any user: their volumes and image executables live here.
	if err := searchableByAll(cfg.StateDir); err != nil {
		return fmt.Errorf("state directory %s: %w", cfg.StateDir, err)
	}
	a.images.store.removeTemporaries()
	if err := a.net.hostSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("enabling forwarding in %s: %w", cfg.HostNetNS, err)
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	a.recorder = broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: cfg.NodeName})

	if _, err := a.images.load(); err != nil {
		klog.Warningf("Image table %s: %v (pods will report image pull failures until it is fixed)", cfg.ImagesFile, err)
	}

	nm := newNodeManager(a.client, cfg)
	if err := retry(ctx, "registering the node", func() error { return nm.register(ctx) }); err != nil {
		return err
	}
	go nm.run(ctx, cfg.LeaseRenewInterval, cfg.StatusUpdateFrequency)

	cidr, err := nm.waitPodCIDR(ctx)
	if err != nil {
		return err
	}
	if a.ipam, err = loadIPAM(a.state.ipamFile(), cidr); err != nil {
		return err
	}
	klog.Infof("Node %s: podCIDR %s, state in %s", cfg.NodeName, cidr, cfg.StateDir)

	serveErr := make(chan error, 1)
	if cfg.TLSCertFile != "" {
		go func() {
			addr := net.JoinHostPort(cfg.NodeIP, strconv.Itoa(cfg.KubeletPort))
			serveErr <- kubeletserver.Serve(ctx, kubeletserver.Config{
				Addr: addr, CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, ClientCAFile: cfg.ClientCAFile,
			}, a)
		}()
	} else {
		klog.Warning("No serving certificate: the kubelet API is not served")
	}

	podInformers := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	svcInformers := informers.NewSharedInformerFactory(a.client, 0)
	podInformer := podInformers.Core().V1().Pods()
	a.podLister = podInformer.Lister()
	a.svcLister = svcInformers.Core().V1().Services().Lister()
	svcSynced := svcInformers.Core().V1().Services().Informer().HasSynced
	podsSynced := podInformer.Informer().HasSynced
	podInformers.Start(ctx.Done())
	svcInformers.Start(ctx.Done())
	defer podInformers.Shutdown()
	defer svcInformers.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podsSynced, svcSynced) {
		return ctx.Err()
	}
	a.sweepOrphans(ctx)

	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(obj) },
		UpdateFunc: func(_, obj any) { a.podChanged(obj) },
		DeleteFunc: a.podDeleted,
	}); err != nil {
		return err
	}
	klog.Infof("Node agent ready: node %s, kubelet API on %s:%d", cfg.NodeName, cfg.NodeIP, cfg.KubeletPort)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil && ctx.Err() == nil {
			klog.Errorf("Kubelet API server: %v", err)
			runErr = err
		}
	}
	klog.Info("Node agent stopping; pods keep running")
	a.wg.Wait()
	return runErr
}

// retry runs f until it succeeds or ctx ends, with a small back-off.
func retry(ctx context.Context, what string, f func() error) error {
	delay := time.Second
	for {
		err := f()
		if err == nil {
			return nil
		}
		klog.Warningf("%s: %v (retrying in %s)", what, err, delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, errors.Join(err, ctx.Err()))
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// podChanged hands an added or updated pod to its worker.
func (a *Agent) podChanged(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName != a.cfg.NodeName {
		return
	}
	if w := a.worker(pod.UID, true); w != nil {
		w.setPod(pod)
	}
}

// podDeleted tells a pod's worker that the API object is gone.
func (a *Agent) podDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	delete(a.finished, pod.UID)
	a.mu.Unlock()
	if w != nil {
		w.setRemoved()
		return
	}
	if fileExists(a.state.pod(pod.UID).path()) {
		if w := a.worker(pod.UID, true); w != nil {
			w.setRemoved()
		}
	}
}

// worker returns the worker of a pod, starting one if create is set (and
// the pod's deletion is not already finished).
func (a *Agent) worker(uid types.UID, create bool) *podWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	if w := a.workers[uid]; w != nil || !create {
		return w
	}
	if a.finished[uid] || a.ctx.Err() != nil {
		return nil
	}
	w := newPodWorker(a, uid)
	a.workers[uid] = w
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.run(a.ctx)
		a.mu.Lock()
		delete(a.workers, uid)
		if a.ctx.Err() == nil {
			a.finished[uid] = true
		}
		a.mu.Unlock()
	}()
	return w
}

// sweepOrphans, at start, cleans up what belongs to no pod the API still
// has: pod state directories (their processes are killed), pod network
// namespaces and links without state, and stale IP allocations.
func (a *Agent) sweepOrphans(ctx context.Context) {
	live := map[types.UID]bool{}
	if pods, err := a.podLister.List(labels.Everything()); err == nil {
		for _, p := range pods {
			live[p.UID] = true
		}
	}
	uids, err := a.state.podUIDs()
	if err != nil {
		klog.Warningf("Listing pod state: %v", err)
	}
	onDisk := map[types.UID]bool{}
	keepNS := map[string]bool{}
	for _, uid := range uids {
		onDisk[uid] = true
		keepNS[a.netnsName(uid)] = true
		if live[uid] {
			continue
		}
		klog.Infof("Pod %s is on disk but gone from the API; cleaning it up", uid)
		if w := a.worker(uid, true); w != nil {
			w.setRemoved() // its worker tears it down
		}
	}
	if err := a.ipam.Retain(func(uid types.UID) bool { return onDisk[uid] }); err != nil {
		klog.Warningf("Pruning IP allocations: %v", err)
	}
	removeStrayNetworks(ctx, a.net, a.cfg.podNSPrefix, keepNS)
}

// removeStrayNetworks deletes the pod network namespaces named nsPrefix*
// (and their processes) and the pod links (labnet.PodLinkPrefix*) of the host
// namespace that are not in keep.
func removeStrayNetworks(ctx context.Context, n *netManager, nsPrefix string, keep map[string]bool) {
	entries, _ := os.ReadDir("/run/netns")
	keepLinks := map[string]bool{}
	for ns := range keep {
		keepLinks[labnet.PodLinkPrefix+strings.TrimPrefix(ns, nsPrefix)] = true
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, nsPrefix) || keep[name] {
			continue
		}
		if ino, err := nsInode(netnsPath(name)); err == nil && isNSFS(netnsPath(name)) {
			killProcessesIn(ino, 0, 9)
		}
		link := labnet.PodLinkPrefix + strings.TrimPrefix(name, nsPrefix)
		if err := n.teardownPod(ctx, name, link, ""); err != nil {
			klog.Warningf("Removing stray pod network %s: %v", name, err)
		} else {
			klog.Infof("Removed stray pod network namespace %s", name)
		}
	}
	if !n.hostNSExists() {
		return
	}
	links, err := n.hostLinks(ctx)
	if err != nil {
		klog.Warningf("Listing pod links: %v", err)
		return
	}
	for _, l := range links {
		if keepLinks[l] {
			continue
		}
		if _, err := n.ip(ctx, "-n", n.hostNS, "link", "del", "dev", l); err == nil {
			klog.Infof("Removed stray pod link %s", l)
		}
	}
}

// netnsName is the network namespace name of a pod.
func (a *Agent) netnsName(uid types.UID) string { return a.cfg.podNSPrefix + podKey(uid) }

// configMapGetter and secretGetter fetch objects for env resolution.
func (a *Agent) configMapGetter(ctx context.Context, ns string) func(string) (*v1.ConfigMap, error) {
	return func(name string) (*v1.ConfigMap, error) {
		return a.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	}
}

func (a *Agent) secretGetter(ctx context.Context, ns string) func(string) (*v1.Secret, error) {
	return func(name string) (*v1.Secret, error) {
		return a.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	}
}
