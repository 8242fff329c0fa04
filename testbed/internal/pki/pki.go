// Package pki creates the lab's certificates, keys and kubeconfigs.
//
// Generate is idempotent: a file that already exists is kept as it is and only
// missing files are created. Existing files are checked, though: a certificate
// that no longer matches what the flags ask for (a missing SAN, another node
// name, another CA) or a kubeconfig that points at another server is an error
// that names the file to delete, never a silent mismatch.
//
// Everything is real TLS: ECDSA P-256 keys for the CA, serving and client
// certificates, an RSA 2048 key pair for ServiceAccount tokens, ten years of
// validity (this is a throwaway lab, not a production cluster).
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"kt.dev/testbed/internal/labnet"
)

// Validity is how long every certificate the lab makes stays valid.
const Validity = 10 * 365 * 24 * time.Hour

// ClusterName is the cluster, user and context name used in every kubeconfig.
const ClusterName = "ktlab"

// Options says where to write and what the certificates must contain.
type Options struct {
	// Dir receives every file; it is created (0700) if missing.
	Dir string
	// NodeName is the node's name: the node client certificate's CN is
	// system:node:<NodeName> and the kubelet serving certificate carries it as a DNS SAN.
	NodeName string
	// NodeIP is the node's InternalIP: a SAN of both the API server and the kubelet
	// serving certificates.
	NodeIP net.IP
	// APIHosts are extra SANs for the API server certificate (IP literals or DNS
	// names), on top of the fixed ones (see APIServerSANs).
	APIHosts []string
	// Server is the API server URL written into the components' kubeconfigs
	// (they run inside the lab's host namespace).
	Server string
	// AdminServer is the API server URL written into admin.kubeconfig (used from
	// the machine's root namespace through the port proxy).
	AdminServer string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultOptions returns the lab's standard options writing into dir.
func DefaultOptions(dir string) Options {
	return Options{
		Dir:         dir,
		NodeName:    labnet.NodeName,
		NodeIP:      net.ParseIP(labnet.NodeIP),
		APIHosts:    []string{"127.0.0.1"},
		Server:      fmt.Sprintf("https://%s:%d", labnet.NodeIP, labnet.APIPort),
		AdminServer: fmt.Sprintf("https://127.0.0.1:%d", labnet.APIPort),
	}
}

// Subject is a certificate subject: a common name and organizations (groups).
type Subject struct {
	CommonName   string
	Organization []string
}

// ClientCert describes one client certificate and, optionally, its kubeconfig.
type ClientCert struct {
	// Name is the file stem: <Name>.crt, <Name>.key and, if Kubeconfig, <Name>.kubeconfig.
	Name    string
	Subject Subject
	// Kubeconfig says whether <Name>.kubeconfig is written too.
	Kubeconfig bool
}

// KubeletClientCN is the CN of the certificate the API server presents to the
// node agent (kube-apiserver --kubelet-client-certificate). Bind RBAC to it (or
// to the group KubeletClientGroup) so that the node agent's authorizer lets the
// API server use the kubelet API.
const (
	KubeletClientCN    = "kube-apiserver-kubelet-client"
	KubeletClientGroup = "kubeadm:cluster-admins"
)

// ClientCerts lists the client certificates Generate writes for these options.
func (o Options) ClientCerts() []ClientCert {
	return []ClientCert{
		{Name: "admin", Subject: Subject{"kubernetes-admin", []string{"system:masters"}}, Kubeconfig: true},
		{Name: "controller-manager", Subject: Subject{"system:kube-controller-manager", nil}, Kubeconfig: true},
		{Name: "scheduler", Subject: Subject{"system:kube-scheduler", nil}, Kubeconfig: true},
		{Name: "kube-proxy", Subject: Subject{"system:kube-proxy", nil}, Kubeconfig: true},
		{Name: "node", Subject: Subject{"system:node:" + o.NodeName, []string{"system:nodes"}}, Kubeconfig: true},
		{Name: "apiserver-kubelet-client", Subject: Subject{KubeletClientCN, []string{KubeletClientGroup}}},
	}
}

// APIServerSANs returns the IP and DNS SANs of apiserver.crt: 127.0.0.1, the
// `kubernetes` Service IP, the node IP, the laptop link's host IP, the
// kubernetes.default names, localhost, and Options.APIHosts.
func (o Options) APIServerSANs() (ips []net.IP, dns []string) {
	ips = []net.IP{
		net.ParseIP("127.0.0.1"),
		net.ParseIP(labnet.APIServiceIP),
		o.NodeIP,
		net.ParseIP(labnet.LaptopHostIP),
	}
	dns = []string{
		"kubernetes",
		"kubernetes.default",
		"kubernetes.default.svc",
		"kubernetes.default.svc." + labnet.ClusterDomain,
		"localhost",
	}
	for _, h := range o.APIHosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	return ips, dns
}

// Result lists what Generate did, as file names relative to Options.Dir.
type Result struct {
	Created []string
	Kept    []string
}

func (o Options) validate() error {
	switch {
	case o.Dir == "":
		return errors.New("pki: no directory given (--dir DIR)")
	case o.NodeName == "":
		return errors.New("pki: empty node name (--node-name)")
	case o.NodeIP == nil:
		return errors.New("pki: missing or invalid node IP (--node-ip must be an IP literal)")
	case o.Server == "" || o.AdminServer == "":
		return errors.New("pki: empty API server URL (--server / --admin-server)")
	}
	return nil
}

// Generate writes every missing file into o.Dir and checks the existing ones.
func Generate(o Options) (Result, error) {
	var res Result
	if err := o.validate(); err != nil {
		return res, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return res, fmt.Errorf("pki: create %s: %w", o.Dir, err)
	}
	g := &generator{o: o, res: &res}

	ca, err := g.ensureCA()
	if err != nil {
		return res, err
	}
	ips, dns := o.APIServerSANs()
	if err := g.ensureLeaf(ca, leafSpec{
		name:    "apiserver",
		subject: Subject{CommonName: "kube-apiserver"},
		usage:   x509.ExtKeyUsageServerAuth,
		ips:     ips,
		dns:     dns,
	}); err != nil {
		return res, err
	}
	if err := g.ensureLeaf(ca, leafSpec{
		name:    "kubelet",
		subject: Subject{CommonName: o.NodeName},
		usage:   x509.ExtKeyUsageServerAuth,
		ips:     []net.IP{o.NodeIP},
		dns:     []string{o.NodeName},
	}); err != nil {
		return res, err
	}
	for _, c := range o.ClientCerts() {
		if err := g.ensureLeaf(ca, leafSpec{name: c.Name, subject: c.Subject, usage: x509.ExtKeyUsageClientAuth}); err != nil {
			return res, err
		}
		if c.Kubeconfig {
			server := o.Server
			if c.Name == "admin" {
				server = o.AdminServer
			}
			if err := g.ensureKubeconfig(ca, c.Name, server); err != nil {
				return res, err
			}
		}
	}
	if err := g.ensureServiceAccountKeys(); err != nil {
		return res, err
	}
	return res, nil
}

type generator struct {
	o   Options
	res *Result
}

type authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

type leafSpec struct {
	name    string
	subject Subject
	usage   x509.ExtKeyUsage
	ips     []net.IP
	dns     []string
}

func (g *generator) path(name string) string { return filepath.Join(g.o.Dir, name) }

// pairState reports whether a file pair exists completely, not at all, or
// (an error) only half.
func (g *generator) pairState(a, b string) (bool, error) {
	ea, err := exists(g.path(a))
	if err != nil {
		return false, err
	}
	eb, err := exists(g.path(b))
	if err != nil {
		return false, err
	}
	if ea != eb {
		have, missing := a, b
		if eb {
			have, missing = b, a
		}
		return false, fmt.Errorf("pki: %s exists but %s does not; delete %s to have both made again",
			g.path(have), g.path(missing), g.path(have))
	}
	return ea, nil
}

func (g *generator) ensureCA() (*authority, error) {
	have, err := g.pairState("ca.crt", "ca.key")
	if err != nil {
		return nil, err
	}
	if have {
		certPEM, cert, err := readCert(g.path("ca.crt"))
		if err != nil {
			return nil, err
		}
		key, err := readKey(g.path("ca.key"))
		if err != nil {
			return nil, err
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("pki: %s is not a CA certificate; delete the directory %s and run again", g.path("ca.crt"), g.o.Dir)
		}
		if !publicKeysEqual(cert.PublicKey, key.Public()) {
			return nil, fmt.Errorf("pki: %s does not belong to %s; delete the directory %s and run again", g.path("ca.key"), g.path("ca.crt"), g.o.Dir)
		}
		g.res.Kept = append(g.res.Kept, "ca.crt", "ca.key")
		return &authority{cert: cert, certPEM: certPEM, key: key}, nil
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	now := g.o.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ktlab-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := g.writeKey("ca.key", key); err != nil {
		return nil, err
	}
	if err := g.write("ca.crt", certPEM, 0o644); err != nil {
		return nil, err
	}
	return &authority{cert: cert, certPEM: certPEM, key: key}, nil
}

func (g *generator) ensureLeaf(ca *authority, s leafSpec) error {
	crtName, keyName := s.name+".crt", s.name+".key"
	have, err := g.pairState(crtName, keyName)
	if err != nil {
		return err
	}
	if have {
		if err := g.checkLeaf(ca, s); err != nil {
			return err
		}
		g.res.Kept = append(g.res.Kept, crtName, keyName)
		return nil
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generate key for %s: %w", s.name, err)
	}
	now := g.o.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.subject.CommonName, Organization: s.subject.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{s.usage},
		IPAddresses:  s.ips,
		DNSNames:     s.dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return fmt.Errorf("pki: create certificate %s: %w", crtName, err)
	}
	if err := g.writeKey(keyName, key); err != nil {
		return err
	}
	return g.write(crtName, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// checkLeaf verifies that an existing certificate still fits: signed by the CA,
// same subject, every wanted SAN present, key matching.
func (g *generator) checkLeaf(ca *authority, s leafSpec) error {
	crtPath := g.path(s.name + ".crt")
	redo := fmt.Sprintf("delete %s and %s and run again to have them made anew", crtPath, g.path(s.name+".key"))
	_, cert, err := readCert(crtPath)
	if err != nil {
		return err
	}
	key, err := readKey(g.path(s.name + ".key"))
	if err != nil {
		return err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return fmt.Errorf("pki: %s does not match its key; %s", crtPath, redo)
	}
	if err := cert.CheckSignatureFrom(ca.cert); err != nil {
		return fmt.Errorf("pki: %s is not signed by %s (%v); %s", crtPath, g.path("ca.crt"), err, redo)
	}
	if cert.Subject.CommonName != s.subject.CommonName || !slices.Equal(cert.Subject.Organization, s.subject.Organization) {
		return fmt.Errorf("pki: %s has subject CN=%q O=%q, want CN=%q O=%q; %s", crtPath,
			cert.Subject.CommonName, cert.Subject.Organization, s.subject.CommonName, s.subject.Organization, redo)
	}
	for _, ip := range s.ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return fmt.Errorf("pki: %s lacks the IP SAN %s; %s", crtPath, ip, redo)
		}
	}
	for _, d := range s.dns {
		if !slices.Contains(cert.DNSNames, d) {
			return fmt.Errorf("pki: %s lacks the DNS SAN %s; %s", crtPath, d, redo)
		}
	}
	return nil
}

func (g *generator) ensureKubeconfig(ca *authority, name, server string) error {
	file := name + ".kubeconfig"
	p := g.path(file)
	have, err := exists(p)
	if err != nil {
		return err
	}
	if have {
		cfg, err := clientcmd.LoadFromFile(p)
		if err != nil {
			return fmt.Errorf("pki: %s does not load (%v); delete it and run again", p, err)
		}
		cl := cfg.Clusters[ClusterName]
		if cl == nil {
			return fmt.Errorf("pki: %s has no cluster %q; delete it and run again", p, ClusterName)
		}
		if cl.Server != server {
			return fmt.Errorf("pki: %s points at %s, want %s; delete it and run again", p, cl.Server, server)
		}
		if !bytes.Equal(cl.CertificateAuthorityData, ca.certPEM) {
			return fmt.Errorf("pki: %s trusts another CA than %s; delete it and run again", p, g.path("ca.crt"))
		}
		g.res.Kept = append(g.res.Kept, file)
		return nil
	}

	certPEM, err := os.ReadFile(g.path(name + ".crt"))
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := os.ReadFile(g.path(name + ".key"))
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ClusterName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca.certPEM}
	cfg.AuthInfos[ClusterName] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[ClusterName] = &clientcmdapi.Context{Cluster: ClusterName, AuthInfo: ClusterName}
	cfg.CurrentContext = ClusterName
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("pki: encode %s: %w", file, err)
	}
	return g.write(file, data, 0o600)
}

func (g *generator) ensureServiceAccountKeys() error {
	have, err := g.pairState("sa.key", "sa.pub")
	if err != nil {
		return err
	}
	if have {
		key, err := readKey(g.path("sa.key"))
		if err != nil {
			return err
		}
		data, err := os.ReadFile(g.path("sa.pub"))
		if err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			return fmt.Errorf("pki: %s holds no PEM block; delete sa.key and sa.pub and run again", g.path("sa.pub"))
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil || !publicKeysEqual(pub, key.Public()) {
			return fmt.Errorf("pki: %s does not match %s; delete both and run again", g.path("sa.pub"), g.path("sa.key"))
		}
		g.res.Kept = append(g.res.Kept, "sa.key", "sa.pub")
		return nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("pki: generate ServiceAccount key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := g.writeKey("sa.key", key); err != nil {
		return err
	}
	return g.write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}

// writeKey writes an ECDSA key as "EC PRIVATE KEY" or an RSA key as
// "RSA PRIVATE KEY" PEM, mode 0600.
func (g *generator) writeKey(name string, key crypto.Signer) error {
	var block *pem.Block
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return err
		}
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case *rsa.PrivateKey:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	default:
		return fmt.Errorf("pki: unsupported key type %T", key)
	}
	return g.write(name, pem.EncodeToMemory(block), 0o600)
}

// write creates name atomically (temporary file, then rename) with the given mode.
func (g *generator) write(name string, data []byte, mode os.FileMode) error {
	p := g.path(name)
	tmp, err := os.CreateTemp(g.o.Dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: write %s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	g.res.Created = append(g.res.Created, name)
	return nil
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("pki: %w", err)
}

func readCert(p string) ([]byte, *x509.Certificate, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("pki: %s holds no PEM certificate; delete it (and its key) and run again", p)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse %s: %w; delete it (and its key) and run again", p, err)
	}
	return data, cert, nil
}

func readKey(p string) (crypto.Signer, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("pki: %s holds no PEM block; delete it (and its certificate) and run again", p)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", p, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s: unsupported key type %T", p, key)
	}
	return signer, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}
