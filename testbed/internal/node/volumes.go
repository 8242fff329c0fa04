package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	podresource "k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/pkg/volume/configmap"
	"k8s.io/kubernetes/pkg/volume/secret"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
)

// Default file modes of the kubelet's volume plugins.
const (
	defaultConfigMapMode int32 = 0o644
	defaultSecretMode    int32 = 0o644
	defaultDownwardMode  int32 = 0o644
	defaultProjectedMode int32 = 0o644
)

// unsupportedVolumeError names a volume type the lab node cannot provide.
// It fails the pod.
type unsupportedVolumeError struct {
	Volume, Type string
}

func (e *unsupportedVolumeError) Error() string {
	return fmt.Sprintf("volume %q: %s volumes are not supported by the lab node (only emptyDir, configMap, secret, downwardAPI and projected)", e.Volume, e.Type)
}

// checkVolumes returns an *unsupportedVolumeError for the first volume the
// lab cannot provide.
func checkVolumes(pod *v1.Pod) error {
	for _, v := range pod.Spec.Volumes {
		s := v.VolumeSource
		switch {
		case s.EmptyDir != nil, s.ConfigMap != nil, s.Secret != nil, s.DownwardAPI != nil:
		case s.Projected != nil:
			for _, src := range s.Projected.Sources {
				switch {
				case src.ServiceAccountToken != nil, src.ConfigMap != nil, src.Secret != nil, src.DownwardAPI != nil:
				case src.ClusterTrustBundle != nil:
					return &unsupportedVolumeError{Volume: v.Name, Type: "projected clusterTrustBundle"}
				case src.PodCertificate != nil:
					return &unsupportedVolumeError{Volume: v.Name, Type: "projected podCertificate"}
				default:
					return &unsupportedVolumeError{Volume: v.Name, Type: "this projected source's"}
				}
			}
		default:
			return &unsupportedVolumeError{Volume: v.Name, Type: volumeTypeName(s)}
		}
	}
	return nil
}

// volumeTypeName names the (first) type set in a volume source.
func volumeTypeName(s v1.VolumeSource) string {
	switch {
	case s.HostPath != nil:
		return "hostPath"
	case s.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case s.Ephemeral != nil:
		return "ephemeral"
	case s.NFS != nil:
		return "nfs"
	case s.CSI != nil:
		return "csi"
	case s.Image != nil:
		return "image"
	case s.ISCSI != nil:
		return "iscsi"
	case s.GitRepo != nil:
		return "gitRepo"
	}
	return "this type of"
}

// volumeManager materialises a pod's volumes under its state directory.
type volumeManager struct {
	client          kubernetes.Interface
	tokens          *tokenManager
	nodeAllocatable v1.ResourceList
}

// setup writes (or refreshes) every volume of the pod. Volume directories
// are bind-mounted into containers by run-container, so refreshed contents
// show up in running containers as with a real kubelet.
func (vm *volumeManager) setup(ctx context.Context, pod *v1.Pod, pd podDir) error {
	if err := checkVolumes(pod); err != nil {
		return err
	}
	if err := os.MkdirAll(pd.volumesDir(), 0o755); err != nil {
		return err
	}
	fsUser := volumeutil.FsUserFrom(pod)
	var fsGroup *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		fsGroup = sc.FSGroup
	}
	var errs []error
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if err := vm.setupVolume(ctx, pod, pd, v, fsUser, fsGroup); err != nil {
			errs = append(errs, fmt.Errorf("MountVolume.SetUp failed for volume %q : %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (vm *volumeManager) setupVolume(ctx context.Context, pod *v1.Pod, pd podDir, v *v1.Volume, fsUser, fsGroup *int64) error {
	dir := pd.volume(v.Name)
	s := v.VolumeSource
	if s.EmptyDir != nil {
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			return err
		}
		if fsGroup != nil {
			return setVolumeOwnership(dir, fsGroup, false)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var payload map[string]volumeutil.FileProjection
	var err error
	switch {
	case s.ConfigMap != nil:
		payload, err = vm.configMapPayload(ctx, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, modeOr(s.ConfigMap.DefaultMode, defaultConfigMapMode))
	case s.Secret != nil:
		payload, err = vm.secretPayload(ctx, pod.Namespace, s.Secret.SecretName, s.Secret.Items, s.Secret.Optional, modeOr(s.Secret.DefaultMode, defaultSecretMode))
	case s.DownwardAPI != nil:
		payload, err = vm.downwardPayload(pod, s.DownwardAPI.Items, modeOr(s.DownwardAPI.DefaultMode, defaultDownwardMode))
	case s.Projected != nil:
		payload, err = vm.projectedPayload(ctx, pod, s.Projected, fsUser, fsGroup)
	default:
		return checkVolumes(pod)
	}
	if err != nil {
		return err
	}
	if fsUser != nil {
		for k, p := range payload {
			p.FsUser = fsUser
			payload[k] = p
		}
	}
	w, err := volumeutil.NewAtomicWriter(dir, fmt.Sprintf("pod %s/%s volume %s", pod.Namespace, pod.Name, v.Name))
	if err != nil {
		return err
	}
	var setPerms func(string) error
	if fsGroup != nil {
		setPerms = func(string) error { return setVolumeOwnership(dir, fsGroup, true) }
	}
	return w.Write(payload, setPerms)
}

func modeOr(m *int32, def int32) int32 {
	if m != nil {
		return *m
	}
	return def
}

func optionalSet(p *bool) bool { return p != nil && *p }

func (vm *volumeManager) configMapPayload(ctx context.Context, ns, name string, items []v1.KeyToPath, optional *bool, mode int32) (map[string]volumeutil.FileProjection, error) {
	cm, err := vm.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if !apierrors.IsNotFound(err) || !optionalSet(optional) {
			return nil, err
		}
		cm = &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	return configmap.MakePayload(items, cm, &mode, optionalSet(optional))
}

func (vm *volumeManager) secretPayload(ctx context.Context, ns, name string, items []v1.KeyToPath, optional *bool, mode int32) (map[string]volumeutil.FileProjection, error) {
	s, err := vm.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if !apierrors.IsNotFound(err) || !optionalSet(optional) {
			return nil, err
		}
		s = &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	return secret.MakePayload(items, s, &mode, optionalSet(optional))
}

// downwardPayload mirrors the kubelet's downwardapi.CollectData.
func (vm *volumeManager) downwardPayload(pod *v1.Pod, items []v1.DownwardAPIVolumeFile, mode int32) (map[string]volumeutil.FileProjection, error) {
	data := make(map[string]volumeutil.FileProjection, len(items))
	var errs []error
	for _, item := range items {
		p := volumeutil.FileProjection{Mode: modeOr(item.Mode, mode)}
		switch {
		case item.FieldRef != nil:
			v, err := fieldpath.ExtractFieldPathAsString(pod, item.FieldRef.FieldPath)
			if err != nil {
				errs = append(errs, err)
			}
			p.Data = []byte(v)
		case item.ResourceFieldRef != nil:
			v, err := podresource.ExtractResourceValueByContainerNameAndNodeAllocatable(item.ResourceFieldRef, pod, item.ResourceFieldRef.ContainerName, vm.nodeAllocatable)
			if err != nil {
				errs = append(errs, err)
			}
			p.Data = []byte(v)
		}
		data[filepath.Clean(item.Path)] = p
	}
	return data, errors.Join(errs...)
}

// projectedPayload mirrors the kubelet's projected volume plugin.
func (vm *volumeManager) projectedPayload(ctx context.Context, pod *v1.Pod, src *v1.ProjectedVolumeSource, fsUser, fsGroup *int64) (map[string]volumeutil.FileProjection, error) {
	mode := modeOr(src.DefaultMode, defaultProjectedMode)
	payload := map[string]volumeutil.FileProjection{}
	var errs []error
	merge := func(p map[string]volumeutil.FileProjection, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		for k, v := range p {
			payload[k] = v
		}
	}
	for _, s := range src.Sources {
		switch {
		case s.ConfigMap != nil:
			merge(vm.configMapPayload(ctx, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, mode))
		case s.Secret != nil:
			merge(vm.secretPayload(ctx, pod.Namespace, s.Secret.Name, s.Secret.Items, s.Secret.Optional, mode))
		case s.DownwardAPI != nil:
			merge(vm.downwardPayload(pod, s.DownwardAPI.Items, mode))
		case s.ServiceAccountToken != nil:
			tokMode := mode
			if fsUser != nil || fsGroup != nil {
				tokMode = 0o600 // SetVolumeOwnership opens it to the group
			}
			tok, err := vm.tokens.token(ctx, pod, s.ServiceAccountToken)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			payload[s.ServiceAccountToken.Path] = volumeutil.FileProjection{Data: []byte(tok), Mode: tokMode}
		}
	}
	return payload, errors.Join(errs...)
}

// setVolumeOwnership gives fsGroup group ownership of a volume's contents
// and group read (and, unless readOnly, write) access, directories setgid:
// the kubelet's SetVolumeOwnership.
func setVolumeOwnership(dir string, fsGroup *int64, readOnly bool) error {
	mask := os.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(path, -1, int(*fsGroup)); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		m := info.Mode() | mask
		if d.IsDir() {
			m |= os.ModeSetgid | 0o110
		}
		return os.Chmod(path, m)
	})
}
