package pki

import (
	"bytes"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

var wantFiles = []string{
	"ca.crt", "ca.key",
	"apiserver.crt", "apiserver.key",
	"kubelet.crt", "kubelet.key",
	"admin.crt", "admin.key", "admin.kubeconfig",
	"controller-manager.crt", "controller-manager.key", "controller-manager.kubeconfig",
	"scheduler.crt", "scheduler.key", "scheduler.kubeconfig",
	"kube-proxy.crt", "kube-proxy.key", "kube-proxy.kubeconfig",
	"node.crt", "node.key", "node.kubeconfig",
	"apiserver-kubelet-client.crt", "apiserver-kubelet-client.key",
	"sa.key", "sa.pub",
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = info.Mode().String() + info.ModTime().String() + string(data)
	}
	return out
}

func TestGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	o := DefaultOptions(dir)
	o.APIHosts = append(o.APIHosts, "api.ktlab.test", "10.88.0.99")

	res, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Created)
	want := slices.Clone(wantFiles)
	slices.Sort(want)
	if !slices.Equal(res.Created, want) {
		t.Fatalf("created %v\nwant %v", res.Created, want)
	}
	first := snapshot(t, dir)
	if len(first) != len(wantFiles) {
		t.Errorf("directory holds %d files, want %d (leftover temporary files?)", len(first), len(wantFiles))
	}

	// Second run: nothing changes.
	time.Sleep(10 * time.Millisecond)
	res2, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res2.Created) != 0 || len(res2.Kept) != len(wantFiles) {
		t.Fatalf("second run created %v, kept %d files", res2.Created, len(res2.Kept))
	}
	second := snapshot(t, dir)
	for name, v := range first {
		if second[name] != v {
			t.Errorf("second run changed %s", name)
		}
	}

	// Modes: keys and kubeconfigs 0600.
	for _, name := range wantFiles {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		secret := strings.HasSuffix(name, ".key") || strings.HasSuffix(name, ".kubeconfig")
		if secret && info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, info.Mode().Perm())
		}
	}

	roots := x509.NewCertPool()
	ca := parseCert(t, filepath.Join(dir, "ca.crt"))
	if !ca.IsCA {
		t.Fatal("ca.crt is not a CA")
	}
	roots.AddCert(ca)
	if d := time.Until(ca.NotAfter); d < 9*365*24*time.Hour {
		t.Errorf("CA valid for only %v", d)
	}

	// API server serving certificate.
	api := parseCert(t, filepath.Join(dir, "apiserver.crt"))
	for _, host := range []string{"127.0.0.1", "10.96.0.1", "10.88.0.1", "10.88.255.1", "10.88.0.99",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
		"localhost", "api.ktlab.test"} {
		if _, err := api.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("apiserver.crt for %s: %v", host, err)
		}
	}
	if _, err := api.Verify(x509.VerifyOptions{DNSName: "10.1.2.3", Roots: roots}); err == nil {
		t.Error("apiserver.crt verifies for an unrelated IP")
	}

	// Kubelet serving certificate.
	kubelet := parseCert(t, filepath.Join(dir, "kubelet.crt"))
	for _, host := range []string{"10.88.0.1", "ktlab-node"} {
		if _, err := kubelet.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("kubelet.crt for %s: %v", host, err)
		}
	}

	// Client certificates.
	wantSubjects := map[string]Subject{
		"admin":                    {"kubernetes-admin", []string{"system:masters"}},
		"controller-manager":       {"system:kube-controller-manager", nil},
		"scheduler":                {"system:kube-scheduler", nil},
		"kube-proxy":               {"system:kube-proxy", nil},
		"node":                     {"system:node:ktlab-node", []string{"system:nodes"}},
		"apiserver-kubelet-client": {"kube-apiserver-kubelet-client", []string{"kubeadm:cluster-admins"}},
	}
	for name, s := range wantSubjects {
		c := parseCert(t, filepath.Join(dir, name+".crt"))
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s.crt: %v", name, err)
		}
		if c.Subject.CommonName != s.CommonName || !slices.Equal(c.Subject.Organization, s.Organization) {
			t.Errorf("%s.crt subject CN=%q O=%q, want %+v", name, c.Subject.CommonName, c.Subject.Organization, s)
		}
	}

	// ServiceAccount key pair.
	saKey, err := readKey(filepath.Join(dir, "sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	rk, ok := saKey.(*rsa.PrivateKey)
	if !ok || rk.N.BitLen() != 2048 {
		t.Fatalf("sa.key is %T, want RSA 2048", saKey)
	}
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "sa.pub"))
	block, _ := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatal("sa.pub is not a PEM PUBLIC KEY")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil || !rk.PublicKey.Equal(pub) {
		t.Fatalf("sa.pub does not match sa.key: %v", err)
	}

	// The files load the way the Kubernetes components load them.
	if _, err := keyutil.PrivateKeyFromFile(filepath.Join(dir, "sa.key")); err != nil {
		t.Errorf("keyutil sa.key: %v", err)
	}
	if pubs, err := keyutil.PublicKeysFromFile(filepath.Join(dir, "sa.pub")); err != nil || len(pubs) != 1 {
		t.Errorf("keyutil sa.pub: %v", err)
	}
	for _, name := range []string{"apiserver", "kubelet", "admin", "node", "apiserver-kubelet-client"} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")); err != nil {
			t.Errorf("tls key pair %s: %v", name, err)
		}
	}
	if _, err := certutil.NewPool(filepath.Join(dir, "ca.crt")); err != nil {
		t.Errorf("client-ca pool: %v", err)
	}

	// Kubeconfigs load with client-go and carry the right server and CA.
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	for name, server := range map[string]string{
		"admin":              "https://127.0.0.1:6443",
		"controller-manager": "https://10.88.0.1:6443",
		"scheduler":          "https://10.88.0.1:6443",
		"kube-proxy":         "https://10.88.0.1:6443",
		"node":               "https://10.88.0.1:6443",
	} {
		p := filepath.Join(dir, name+".kubeconfig")
		rc, err := clientcmd.BuildConfigFromFlags("", p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if rc.Host != server {
			t.Errorf("%s: server %s, want %s", name, rc.Host, server)
		}
		if !bytes.Equal(rc.CAData, caPEM) {
			t.Errorf("%s: CA data differs from ca.crt", name)
		}
		crtPEM, _ := os.ReadFile(filepath.Join(dir, name+".crt"))
		if !bytes.Equal(rc.CertData, crtPEM) || len(rc.KeyData) == 0 {
			t.Errorf("%s: client certificate/key not embedded", name)
		}
		raw, err := clientcmd.LoadFromFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if raw.CurrentContext != "ktlab" || raw.Contexts["ktlab"] == nil || raw.Contexts["ktlab"].Cluster != "ktlab" {
			t.Errorf("%s: want cluster and context named ktlab, got %+v", name, raw.Contexts)
		}
	}
}

func TestGenerateRepairsOnlyMissing(t *testing.T) {
	dir := t.TempDir()
	o := DefaultOptions(dir)
	if _, err := Generate(o); err != nil {
		t.Fatal(err)
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	for _, f := range []string{"scheduler.crt", "scheduler.key", "scheduler.kubeconfig"} {
		os.Remove(filepath.Join(dir, f))
	}
	res, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Created)
	if !slices.Equal(res.Created, []string{"scheduler.crt", "scheduler.key", "scheduler.kubeconfig"}) {
		t.Errorf("created %v", res.Created)
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if !bytes.Equal(caBefore, caAfter) {
		t.Error("CA changed")
	}
}

func TestGenerateRejectsMismatch(t *testing.T) {
	dir := t.TempDir()
	o := DefaultOptions(dir)
	if _, err := Generate(o); err != nil {
		t.Fatal(err)
	}
	o2 := o
	o2.APIHosts = []string{"10.1.2.3"}
	if _, err := Generate(o2); err == nil || !strings.Contains(err.Error(), "apiserver.crt lacks the IP SAN 10.1.2.3") {
		t.Errorf("new SAN: got %v", err)
	}
	o3 := o
	o3.NodeIP = net.ParseIP("10.88.0.2")
	if _, err := Generate(o3); err == nil || !strings.Contains(err.Error(), "delete") {
		t.Errorf("new node IP: got %v", err)
	}
	o4 := o
	o4.Server = "https://10.88.0.1:7443"
	if _, err := Generate(o4); err == nil || !strings.Contains(err.Error(), "controller-manager.kubeconfig points at") {
		t.Errorf("new server: got %v", err)
	}
	os.Remove(filepath.Join(dir, "kubelet.key"))
	if _, err := Generate(o); err == nil || !strings.Contains(err.Error(), "kubelet.crt exists but") {
		t.Errorf("half pair: got %v", err)
	}
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	_, c, err := readCert(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var out, errb bytes.Buffer
	if code := run([]string{"--dir", dir, "--api-host", "api.example.test", "--api-host", "10.88.0.50"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "pki: wrote ca.crt") || !strings.Contains(out.String(), "25 files written, 0 kept") {
		t.Errorf("stdout:\n%s", out.String())
	}
	api := parseCert(t, filepath.Join(dir, "apiserver.crt"))
	if !slices.Contains(api.DNSNames, "api.example.test") || !slices.ContainsFunc(api.IPAddresses, net.ParseIP("10.88.0.50").Equal) {
		t.Errorf("--api-host SANs missing: %v %v", api.DNSNames, api.IPAddresses)
	}
	out.Reset()
	if code := run([]string{"--dir", dir, "--api-host", "api.example.test", "--api-host", "10.88.0.50"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "0 files written, 25 kept") {
		t.Errorf("second run: exit %d, stdout %s", code, out.String())
	}
	if code := run([]string{"--node-ip", "x"}, &out, &errb); code != 2 {
		t.Errorf("no --dir: exit %d", code)
	}
}

// TestMutualTLS serves with apiserver.crt, requires client certificates from
// ca.crt, and connects with client-go from admin.kubeconfig.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(DefaultOptions(dir)); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := certutil.NewPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.TLS.PeerCertificates[0]
		fmt.Fprintf(w, "%s/%s", c.Subject.CommonName, strings.Join(c.Subject.Organization, ","))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	rc.Host = srv.URL // same 127.0.0.1 SAN, the test server's port
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "kubernetes-admin/system:masters" {
		t.Fatalf("server saw client %q", body)
	}
}
