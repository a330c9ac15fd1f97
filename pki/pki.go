// Package pki is the small private certificate authority behind ftwin-migrate's mutual TLS.
//
// The migration agent (ftwin-migrate receive) and the migrator (ftwin-migrate migrate) talk
// HTTPS and authenticate each other with certificates issued by one CA. Everything lives in
// one directory:
//
//	ca.crt             the CA certificate (self-signed, ECDSA P-256); every host needs it
//	ca.key             the CA key; needed only where certificates are issued (Init)
//	HOST.crt, HOST.key one pair per host, signed by the CA and valid for both server and
//	                   client auth, with HOST as CommonName and DNS SAN plus the host's IPs
//
// Init creates the CA and the host certificates on one machine; copy ca.crt and each host's
// own HOST.crt and HOST.key to that host. ServerConfig and ClientConfig then build the
// tls.Config of the agent and of the migrator, and PeerName tells who is on the other end.
//
// Trust model: the CA is the lab. Any certificate it issued is a lab member, and the agent
// accepts a migration from any member. The migrator can additionally pin the agent's host
// name (see ClientConfig). Both sides require TLS 1.3.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Host is a machine that gets a certificate: Name becomes its CommonName, its DNS SAN and the
// base of its file names (Name.crt, Name.key); IPs become IP SANs.
type Host struct {
	Name string
	IPs  []net.IP
}

const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"

	// clockSkew backdates NotBefore, so that a certificate issued on one host is already valid
	// on a host whose clock is a little behind.
	clockSkew    = time.Hour
	caValidity   = 10 * 365 * 24 * time.Hour
	hostValidity = 5 * 365 * 24 * time.Hour
)

// Init creates a CA (ca.crt, ca.key) in dir if absent, then for each host a key and a
// certificate signed by the CA (HOST.crt, HOST.key), valid for both server and client auth,
// with the host name as CommonName and DNS SAN plus the host's IP SANs. dir is created (0700)
// if needed; keys are written 0600, certificates 0644.
//
// Init is idempotent: files that exist are kept byte for byte, and only what is missing is
// issued. An existing host certificate is checked instead: it must be signed by the CA, match
// its key and carry every IP asked for; if not, Init returns an error naming the files to
// remove so that the host is issued again. A host key without its certificate gets a new
// certificate for that key. Init is not meant to run concurrently on the same dir.
func Init(dir string, hosts []Host) error {
	for _, h := range hosts {
		if err := checkName(h.Name); err != nil {
			return err
		}
		for _, ip := range h.IPs {
			if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
				return fmt.Errorf("pki: host %s: invalid IP address %v", h.Name, ip)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: create certificate directory: %w", err)
	}
	ca, err := loadOrCreateCA(dir)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if err := ensureHost(dir, ca, h); err != nil {
			return err
		}
	}
	return nil
}

// authority is a loaded CA.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
}

func loadOrCreateCA(dir string) (*authority, error) {
	crtPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	haveCrt, err := exists(crtPath)
	if err != nil {
		return nil, err
	}
	haveKey, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case haveCrt && haveKey:
		cert, err := readCert(crtPath)
		if err != nil {
			return nil, err
		}
		key, err := readKey(keyPath)
		if err != nil {
			return nil, err
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("pki: %s is not a CA certificate: remove %s and %s to create a new CA (and reissue every host)", crtPath, crtPath, keyPath)
		}
		if err := matchKey(cert, key); err != nil {
			return nil, fmt.Errorf("pki: %s does not belong to %s: %w", keyPath, crtPath, err)
		}
		return newAuthority(cert, key), nil
	case haveCrt:
		return nil, fmt.Errorf("pki: %s exists but %s is missing: restore the CA key, or remove %s and every HOST.crt/HOST.key in %s to start a new CA", crtPath, keyPath, crtPath, dir)
	case haveKey:
		return nil, fmt.Errorf("pki: %s exists but %s is missing: restore the CA certificate, or remove %s and every HOST.crt/HOST.key in %s to start a new CA", keyPath, crtPath, keyPath, dir)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	id := make([]byte, 4)
	rand.Read(id) // distinguishes the CAs of different labs in error messages
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "ftwin-migrate CA " + hex.EncodeToString(id)},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new CA certificate: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	if err := writeCert(crtPath, der); err != nil {
		return nil, err
	}
	return newAuthority(cert, key), nil
}

func newAuthority(cert *x509.Certificate, key crypto.Signer) *authority {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &authority{cert: cert, key: key, pool: pool}
}

// ensureHost issues h's key and certificate if missing, or checks the existing ones.
func ensureHost(dir string, ca *authority, h Host) error {
	crtPath, keyPath := hostFiles(dir, h.Name)
	haveCrt, err := exists(crtPath)
	if err != nil {
		return err
	}
	haveKey, err := exists(keyPath)
	if err != nil {
		return err
	}
	reissue := fmt.Sprintf("remove %s and %s and run init again to reissue host %s", crtPath, keyPath, h.Name)

	if haveCrt {
		if !haveKey {
			return fmt.Errorf("pki: %s exists but its key %s is missing: %s", crtPath, keyPath, reissue)
		}
		cert, err := readCert(crtPath)
		if err != nil {
			return err
		}
		key, err := readKey(keyPath)
		if err != nil {
			return err
		}
		if err := matchKey(cert, key); err != nil {
			return fmt.Errorf("pki: %s does not belong to %s (%w): %s", keyPath, crtPath, err, reissue)
		}
		if err := checkHostCert(cert, ca.pool); err != nil {
			return fmt.Errorf("pki: %s is not a valid host certificate of %s (%w): %s", crtPath, filepath.Join(dir, caCertFile), err, reissue)
		}
		if err := cert.VerifyHostname(h.Name); err != nil {
			return fmt.Errorf("pki: %s is not for host %s (%w): %s", crtPath, h.Name, err, reissue)
		}
		for _, ip := range h.IPs {
			if !containsIP(cert.IPAddresses, ip) {
				return fmt.Errorf("pki: %s lacks IP %s (it has %v): %s", crtPath, ip, cert.IPAddresses, reissue)
			}
		}
		return nil
	}

	var key crypto.Signer
	if haveKey { // a key without its certificate: certify that key
		if key, err = readKey(keyPath); err != nil {
			return err
		}
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("pki: generate key for host %s: %w", h.Name, err)
		}
		if err := writeKey(keyPath, k); err != nil {
			return err
		}
		key = k
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: h.Name},
		DNSNames:              []string{h.Name},
		IPAddresses:           h.IPs,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              earliest(now.Add(hostValidity), ca.cert.NotAfter),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return fmt.Errorf("pki: sign certificate for host %s: %w", h.Name, err)
	}
	return writeCert(crtPath, der)
}

// checkHostCert reports whether cert is a leaf issued by the CA in roots, currently valid for
// both server and client auth.
func checkHostCert(cert *x509.Certificate, roots *x509.CertPool) error {
	if cert.IsCA {
		return errors.New("it is a CA certificate, not a host certificate")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
	}
	return nil
}

// checkName accepts a DNS name that is usable as a file name and is not reserved.
func checkName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("pki: invalid host name %q: %s", name, why)
	}
	switch {
	case name == "":
		return bad("it is empty")
	case strings.EqualFold(name, "ca"):
		return bad(`"ca" is reserved for the CA's own files`)
	case net.ParseIP(name) != nil:
		return bad("it is an IP address: name the host and list the address among its IPs")
	case len(name) > 253:
		return bad("longer than 253 characters")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad("use a DNS name: dot-separated labels of letters, digits and inner '-'")
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return bad("use a DNS name: dot-separated labels of letters, digits and inner '-'")
			}
		}
	}
	return nil
}

func hostFiles(dir, name string) (crtPath, keyPath string) {
	return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("pki: %w", err)
	}
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s holds no PEM CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", path, err)
	}
	return cert, nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("pki: %s holds no PEM PRIVATE KEY (PKCS #8) block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %s: %w", path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s: unsupported key type %T", path, k)
	}
	return signer, nil
}

// matchKey reports whether key is the private key of cert.
func matchKey(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("the key does not match the certificate's public key")
	}
	return nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: encode key %s: %w", path, err)
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeCert(path string, der []byte) error {
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile writes data to path atomically (temporary file, then rename) with mode perm, so a
// crash never leaves a truncated key or certificate behind. The temporary file is created
// 0600, so key material is never readable by others, not even briefly.
func writeFile(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("pki: write %s: %w", path, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, have := range ips {
		if have.Equal(ip) {
			return true
		}
	}
	return false
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
