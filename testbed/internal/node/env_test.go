package node

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func testPod() *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-0", Namespace: "shop", UID: "1234abcd-0000-0000-0000-000000000000",
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"note": "hi"},
		},
		Spec: v1.PodSpec{NodeName: "ktlab-node", ServiceAccountName: "web-sa"},
	}
}

func envInputFor(pod *v1.Pod, c *v1.Container) envInput {
	cms := map[string]*v1.ConfigMap{
		"cfg": {Data: map[string]string{"MODE": "fast", "LEVEL": "3", "bad-key": "x"}},
	}
	secrets := map[string]*v1.Secret{
		"creds": {Data: map[string][]byte{"password": []byte("s3cret")}},
	}
	notFound := func(res, name string) error {
		return apierrors.NewNotFound(schema.GroupResource{Resource: res}, name)
	}
	return envInput{
		Pod: pod, Container: c, PodIP: "10.244.0.7", HostIP: "10.88.0.1",
		ImageEnv:        []string{"IMAGE_VAR=1", "PATH=/image/bin:/usr/bin"},
		NodeAllocatable: v1.ResourceList{v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("8Gi")},
		Services: []*v1.Service{
			{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"}, Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []v1.ServicePort{{Name: "https", Port: 443, Protocol: v1.ProtocolTCP}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "redis-main", Namespace: "shop"}, Spec: v1.ServiceSpec{ClusterIP: "10.96.3.4", Ports: []v1.ServicePort{{Port: 6379, Protocol: v1.ProtocolTCP}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "elsewhere"}, Spec: v1.ServiceSpec{ClusterIP: "10.96.9.9", Ports: []v1.ServicePort{{Port: 80}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "shop"}, Spec: v1.ServiceSpec{ClusterIP: "None", Ports: []v1.ServicePort{{Port: 80}}}},
		},
		GetConfigMap: func(name string) (*v1.ConfigMap, error) {
			if cm, ok := cms[name]; ok {
				return cm, nil
			}
			return nil, notFound("configmaps", name)
		},
		GetSecret: func(name string) (*v1.Secret, error) {
			if s, ok := secrets[name]; ok {
				return s, nil
			}
			return nil, notFound("secrets", name)
		},
	}
}

func fieldRef(path string) *v1.EnvVarSource {
	return &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}
}

func TestMakeEnvironment(t *testing.T) {
	pod := testPod()
	c := &v1.Container{
		Name: "app",
		EnvFrom: []v1.EnvFromSource{
			{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"},
			{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "missing"}, Optional: ptrTo(true)}},
		},
		Env: []v1.EnvVar{
			{Name: "POD_NAME", ValueFrom: fieldRef("metadata.name")},
			{Name: "POD_NS", ValueFrom: fieldRef("metadata.namespace")},
			{Name: "POD_UID", ValueFrom: fieldRef("metadata.uid")},
			{Name: "APP", ValueFrom: fieldRef("metadata.labels['app']")},
			{Name: "LABELS", ValueFrom: fieldRef("metadata.labels")},
			{Name: "NODE", ValueFrom: fieldRef("spec.nodeName")},
			{Name: "SA", ValueFrom: fieldRef("spec.serviceAccountName")},
			{Name: "POD_IP", ValueFrom: fieldRef("status.podIP")},
			{Name: "POD_IPS", ValueFrom: fieldRef("status.podIPs")},
			{Name: "HOST_IP", ValueFrom: fieldRef("status.hostIP")},
			{Name: "CPU_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "MEM_LIMIT_MI", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "PASSWORD", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
			{Name: "MODE", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "MODE"}}},
			{Name: "OPTIONAL_MISSING", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "nope", Optional: ptrTo(true)}}},
			{Name: "GREETING", Value: "hello $(POD_NAME) in $(POD_NS) via $(KUBERNETES_SERVICE_HOST), $(UNDEFINED) and $$(ESCAPED)"},
			{Name: "CFG_LEVEL", Value: "override-$(CFG_LEVEL)"},
		},
	}
	env, err := makeEnvironment(envInputFor(pod, c))
	if err != nil {
		t.Fatal(err)
	}
	got := envToMap(env)
	want := map[string]string{
		"PATH":                          "/image/bin:/usr/bin",
		"IMAGE_VAR":                     "1",
		"HOSTNAME":                      "web-0",
		"POD_NAME":                      "web-0",
		"POD_NS":                        "shop",
		"POD_UID":                       "1234abcd-0000-0000-0000-000000000000",
		"APP":                           "web",
		"LABELS":                        "app=\"web\"\ntier=\"front\"",
		"NODE":                          "ktlab-node",
		"SA":                            "web-sa",
		"POD_IP":                        "10.244.0.7",
		"POD_IPS":                       "10.244.0.7",
		"HOST_IP":                       "10.88.0.1",
		"CPU_LIMIT":                     "2",
		"MEM_LIMIT_MI":                  "8192",
		"PASSWORD":                      "s3cret",
		"MODE":                          "fast",
		"CFG_MODE":                      "fast",
		"CFG_LEVEL":                     "override-3",
		"GREETING":                      "hello web-0 in shop via 10.96.0.1, $(UNDEFINED) and $(ESCAPED)",
		"KUBERNETES_SERVICE_HOST":       "10.96.0.1",
		"KUBERNETES_SERVICE_PORT":       "443",
		"KUBERNETES_SERVICE_PORT_HTTPS": "443",
		"KUBERNETES_PORT":               "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP":       "tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_ADDR":  "10.96.0.1",
		"REDIS_MAIN_SERVICE_HOST":       "10.96.3.4",
		"REDIS_MAIN_SERVICE_PORT":       "6379",
		"REDIS_MAIN_PORT":               "tcp://10.96.3.4:6379",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if got["CFG_bad-key"] != "x" {
		t.Errorf("envFrom key with a dash: %q", got["CFG_bad-key"])
	}
	for _, absent := range []string{"OPTIONAL_MISSING", "OTHER_SERVICE_HOST", "HEADLESS_SERVICE_HOST"} {
		if _, ok := got[absent]; ok {
			t.Errorf("%s should not be set", absent)
		}
	}
	// The container's own variables come after the service links.
	idx := map[string]int{}
	for i, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		idx[k] = i
	}
	if idx["POD_NAME"] < idx["KUBERNETES_SERVICE_HOST"] || idx["PATH"] != 0 {
		t.Errorf("unexpected order: %v", env)
	}
}

func TestMakeEnvironmentServiceLinksDisabledAndDefaults(t *testing.T) {
	pod := testPod()
	pod.Spec.EnableServiceLinks = ptrTo(false)
	in := envInputFor(pod, &v1.Container{Name: "app"})
	in.Services = nil // the cache is empty: the kubernetes Service is still described
	in.ImageEnv = nil
	env, err := makeEnvironment(in)
	if err != nil {
		t.Fatal(err)
	}
	got := envToMap(env)
	if got["PATH"] != defaultPath || got["HOSTNAME"] != "web-0" || got["KUBERNETES_SERVICE_HOST"] != "10.96.0.1" || got["KUBERNETES_SERVICE_PORT"] != "443" {
		t.Fatalf("env = %v", env)
	}
	in = envInputFor(pod, &v1.Container{Name: "app"})
	env, _ = makeEnvironment(in)
	if _, ok := envToMap(env)["REDIS_MAIN_SERVICE_HOST"]; ok {
		t.Fatal("service links present although disabled")
	}
}

func TestMakeEnvironmentErrors(t *testing.T) {
	pod := testPod()
	for name, c := range map[string]*v1.Container{
		"missing configmap": {Name: "a", Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}, Key: "k"}}}}},
		"missing key":       {Name: "a", Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}, Key: "k"}}}}},
		"missing envFrom":   {Name: "a", EnvFrom: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "nope"}}}}},
	} {
		if _, err := makeEnvironment(envInputFor(pod, c)); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "missing configmap" && !apierrors.IsNotFound(errors.Unwrap(err)) && !apierrors.IsNotFound(err) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestExpandArgs(t *testing.T) {
	env := []string{"A=1", "B=two words"}
	got := expandArgs([]string{"echo", "$(A)", "$(B)", "$(C)", "$$(A)", "x$(A)y"}, env)
	want := []string{"echo", "1", "two words", "$(C)", "$(A)", "x1y"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if expandArgs(nil, env) != nil {
		t.Fatal("nil in, non-nil out")
	}
}

func TestPodFilesRendering(t *testing.T) {
	pod := testPod()
	rc := resolvConf(pod, "")
	want := "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if rc != want {
		t.Fatalf("resolv.conf:\n%s\nwant:\n%s", rc, want)
	}
	pod.Spec.DNSConfig = &v1.PodDNSConfig{Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: ptrTo("2")}, {Name: "edns0"}}}
	if rc := resolvConf(pod, ""); !strings.Contains(rc, "options ndots:2 edns0\n") {
		t.Fatalf("dnsConfig options not merged: %q", rc)
	}
	pod.Spec.DNSPolicy = v1.DNSDefault
	if rc := resolvConf(pod, "nameserver 1.2.3.4\n"); !strings.HasPrefix(rc, "nameserver 1.2.3.4\n") {
		t.Fatalf("dnsPolicy Default: %q", rc)
	}
	hosts := hostsFile(pod, "10.244.0.7")
	if !strings.Contains(hosts, "127.0.0.1\tlocalhost\n") || !strings.Contains(hosts, "10.244.0.7\tweb-0\n") {
		t.Fatalf("hosts:\n%s", hosts)
	}
	pod.Spec.Hostname, pod.Spec.Subdomain = "h", "sub"
	if hosts := hostsFile(pod, "10.244.0.7"); !strings.Contains(hosts, "10.244.0.7\th.sub.shop.svc.cluster.local\th\n") {
		t.Fatalf("hosts with subdomain:\n%s", hosts)
	}
}
