package node

import (
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podresource "k8s.io/kubernetes/pkg/api/v1/resource"
	podshelper "k8s.io/kubernetes/pkg/apis/core/pods"
	v1helper "k8s.io/kubernetes/pkg/apis/core/v1/helper"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/pkg/kubelet/envvars"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"

	"kt.dev/testbed/internal/labnet"
)

// defaultPath is the PATH a container gets when neither its image entry nor
// its spec sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// envInput is everything a container's environment is computed from.
type envInput struct {
	Pod       *v1.Pod
	Container *v1.Container
	PodIP     string
	HostIP    string
	// ImageEnv is the image entry's environment (KEY=VALUE).
	ImageEnv []string
	// Services are the cluster's Services (all namespaces; filtered here).
	Services []*v1.Service
	// NodeAllocatable backs resourceFieldRef for unset limits.
	NodeAllocatable v1.ResourceList
	// GetConfigMap and GetSecret fetch objects in the pod's namespace.
	GetConfigMap func(name string) (*v1.ConfigMap, error)
	GetSecret    func(name string) (*v1.Secret, error)
}

// envList is an ordered KEY=VALUE list in which a later assignment replaces
// the value but keeps the first position.
type envList struct {
	keys []string
	vals map[string]string
}

func (l *envList) set(k, v string) {
	if l.vals == nil {
		l.vals = map[string]string{}
	}
	if _, ok := l.vals[k]; !ok {
		l.keys = append(l.keys, k)
	}
	l.vals[k] = v
}

func (l *envList) strings() []string {
	out := make([]string, 0, len(l.keys))
	for _, k := range l.keys {
		out = append(out, k+"="+l.vals[k])
	}
	return out
}

// envToMap turns KEY=VALUE strings into a map (later entries win).
func envToMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// makeEnvironment computes a container's environment as the kubelet and a
// container runtime together do: image env (with a default PATH), HOSTNAME,
// service link variables, then envFrom and env with $(VAR) expansion. As in
// Kubernetes 1.34 (relaxed environment variable validation), envFrom keys are
// taken as they are.
func makeEnvironment(in envInput) ([]string, error) {
	pod, ctr := in.Pod, in.Container
	var out envList
	out.set("PATH", defaultPath)
	for _, kv := range in.ImageEnv {
		k, v, _ := strings.Cut(kv, "=")
		out.set(k, v)
	}
	out.set("HOSTNAME", podHostname(pod))

	enableLinks := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	svcEnv := serviceEnv(pod.Namespace, enableLinks, in.Services)

	tmpEnv := map[string]string{}
	var order []string
	setTmp := func(k, v string) {
		if _, ok := tmpEnv[k]; !ok {
			order = append(order, k)
		}
		tmpEnv[k] = v
	}
	mapping := expansion.MappingFuncFor(tmpEnv, svcEnv)

	cms := map[string]*v1.ConfigMap{}
	secrets := map[string]*v1.Secret{}
	getCM := func(name string) (*v1.ConfigMap, error) {
		if cm, ok := cms[name]; ok {
			return cm, nil
		}
		if in.GetConfigMap == nil {
			return nil, fmt.Errorf("configmap %q: no API access", name)
		}
		cm, err := in.GetConfigMap(name)
		if err == nil {
			cms[name] = cm
		}
		return cm, err
	}
	getSecret := func(name string) (*v1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		if in.GetSecret == nil {
			return nil, fmt.Errorf("secret %q: no API access", name)
		}
		s, err := in.GetSecret(name)
		if err == nil {
			secrets[name] = s
		}
		return s, err
	}

	for _, src := range ctr.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			ref := src.ConfigMapRef
			optional := ref.Optional != nil && *ref.Optional
			cm, err := getCM(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, err
			}
			for _, k := range sortedKeys(cm.Data) {
				setTmp(src.Prefix+k, cm.Data[k])
			}
		case src.SecretRef != nil:
			ref := src.SecretRef
			optional := ref.Optional != nil && *ref.Optional
			s, err := getSecret(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional {
					continue
				}
				return nil, err
			}
			for _, k := range sortedKeys(s.Data) {
				setTmp(src.Prefix+k, string(s.Data[k]))
			}
		}
	}

	for _, e := range ctr.Env {
		value := e.Value
		switch {
		case value != "":
			value = expansion.Expand(value, mapping)
		case e.ValueFrom != nil:
			v, ok, err := envValueFrom(in, e.ValueFrom, getCM, getSecret)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue // optional reference that does not resolve
			}
			value = v
		}
		setTmp(e.Name, value)
	}

	for _, k := range sortedKeys(svcEnv) {
		if _, overridden := tmpEnv[k]; !overridden {
			out.set(k, svcEnv[k])
		}
	}
	for _, k := range order {
		out.set(k, tmpEnv[k])
	}
	return out.strings(), nil
}

// envValueFrom resolves one valueFrom. ok is false when an optional source
// is missing (the variable is then not set at all, as in the kubelet).
func envValueFrom(in envInput, from *v1.EnvVarSource, getCM func(string) (*v1.ConfigMap, error), getSecret func(string) (*v1.Secret, error)) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := podFieldValue(from.FieldRef, in.Pod, in.PodIP, in.HostIP)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		name := from.ResourceFieldRef.ContainerName
		if name == "" {
			name = in.Container.Name
		}
		if name == in.Container.Name {
			c := in.Container.DeepCopy()
			podresource.MergeContainerResourceLimits(c, in.NodeAllocatable)
			v, err := podresource.ExtractContainerResourceValue(from.ResourceFieldRef, c)
			return v, err == nil, err
		}
		v, err := podresource.ExtractResourceValueByContainerNameAndNodeAllocatable(from.ResourceFieldRef, in.Pod, name, in.NodeAllocatable)
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := getCM(ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", false, nil
			}
			return "", false, err
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %v in ConfigMap %v/%v", ref.Key, in.Pod.Namespace, ref.Name)
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := getSecret(ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) && optional {
				return "", false, nil
			}
			return "", false, err
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %v in Secret %v/%v", ref.Key, in.Pod.Namespace, ref.Name)
	}
	return "", false, fmt.Errorf("unsupported valueFrom source")
}

// podFieldValue resolves a downward API fieldRef as the kubelet does for env.
func podFieldValue(fs *v1.ObjectFieldSelector, pod *v1.Pod, podIP, hostIP string) (string, error) {
	path, _, err := podshelper.ConvertDownwardAPIFieldLabel(fs.APIVersion, fs.FieldPath, "")
	if err != nil {
		return "", err
	}
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	}
	return fieldpath.ExtractFieldPathAsString(pod, path)
}

// serviceEnv returns the service link variables for a pod in namespace ns:
// always those of the default/kubernetes Service, plus the namespace's
// Services when links are enabled.
func serviceEnv(ns string, enableLinks bool, services []*v1.Service) map[string]string {
	byName := map[string]*v1.Service{}
	for _, svc := range services {
		if !v1helper.IsServiceIPSet(svc) || len(svc.Spec.Ports) == 0 {
			continue
		}
		if svc.Namespace == metav1.NamespaceDefault && svc.Name == "kubernetes" {
			if _, ok := byName[svc.Name]; !ok {
				byName[svc.Name] = svc
			}
		} else if svc.Namespace == ns && enableLinks {
			byName[svc.Name] = svc
		}
	}
	if _, ok := byName["kubernetes"]; !ok {
		// The service cache may not have it yet; its address is fixed in the lab.
		byName["kubernetes"] = &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault},
			Spec: v1.ServiceSpec{
				ClusterIP: labnet.APIServiceIP,
				Ports:     []v1.ServicePort{{Name: "https", Port: 443, Protocol: v1.ProtocolTCP}},
			},
		}
	}
	names := sortedKeys(byName)
	list := make([]*v1.Service, 0, len(names))
	for _, n := range names {
		list = append(list, byName[n])
	}
	m := map[string]string{}
	for _, e := range envvars.FromServices(list) {
		m[e.Name] = e.Value
	}
	return m
}

// expandArgs applies $(VAR) expansion to a command or args list against the
// container's final environment, as the kubelet does.
func expandArgs(in []string, env []string) []string {
	if in == nil {
		return nil
	}
	mapping := expansion.MappingFuncFor(envToMap(env))
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expansion.Expand(s, mapping)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
