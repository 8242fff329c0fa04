package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// tokenManager obtains bound service account tokens through the TokenRequest
// API and caches them until 80% of their lifetime has passed (or 24 hours),
// as the kubelet's token manager does.
type tokenManager struct {
	client kubernetes.Interface
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]cachedToken
}

type cachedToken struct {
	token    string
	issued   time.Time
	expires  time.Time
	podUID   types.UID
	saName   string
	audience string
}

func newTokenManager(client kubernetes.Interface) *tokenManager {
	return &tokenManager{client: client, now: time.Now, cache: map[string]cachedToken{}}
}

// needsRefresh reports whether a cached token should be replaced.
func (c cachedToken) needsRefresh(now time.Time) bool {
	life := c.expires.Sub(c.issued)
	if now.After(c.issued.Add(life * 8 / 10)) {
		return true
	}
	return now.Sub(c.issued) > 24*time.Hour
}

// token returns a token for the pod's service account as projected by tp.
func (m *tokenManager) token(ctx context.Context, pod *v1.Pod, tp *v1.ServiceAccountTokenProjection) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var exp int64 = 3600
	if tp.ExpirationSeconds != nil {
		exp = *tp.ExpirationSeconds
	}
	key := strings.Join([]string{string(pod.UID), sa, tp.Audience, fmt.Sprint(exp)}, "/")
	now := m.now()
	m.mu.Lock()
	c, ok := m.cache[key]
	m.mu.Unlock()
	if ok && !c.needsRefresh(now) {
		return c.token, nil
	}
	var auds []string
	if tp.Audience != "" {
		auds = []string{tp.Audience}
	}
	tr, err := m.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         auds,
			ExpirationSeconds: &exp,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				APIVersion: "v1",
				Kind:       "Pod",
				Name:       pod.Name,
				UID:        pod.UID,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		if ok && now.Before(c.expires) {
			klog.Warningf("Refreshing token for pod %s/%s failed, keeping the current one: %v", pod.Namespace, pod.Name, err)
			return c.token, nil
		}
		return "", fmt.Errorf("failed to fetch token: %w", err)
	}
	expires := tr.Status.ExpirationTimestamp.Time
	if expires.IsZero() {
		expires = now.Add(time.Duration(exp) * time.Second)
	}
	m.mu.Lock()
	m.cache[key] = cachedToken{token: tr.Status.Token, issued: now, expires: expires, podUID: pod.UID, saName: sa, audience: tp.Audience}
	m.mu.Unlock()
	klog.V(2).Infof("Issued token for pod %s/%s service account %s (expires %s)", pod.Namespace, pod.Name, sa, expires.Format(time.RFC3339))
	return tr.Status.Token, nil
}

// forget drops the tokens of a pod.
func (m *tokenManager) forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.cache {
		if c.podUID == uid {
			delete(m.cache, k)
		}
	}
}
