package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
)

// ServerConfig returns the tls.Config of the migration agent running as host: it presents
// HOST.crt from dir, requires every client to present a certificate issued by the CA in dir
// (tls.RequireAndVerifyClientCert) and accepts TLS 1.3 only. Use PeerName on a request's TLS
// state to learn which host the client is.
func ServerConfig(dir, host string) (*tls.Config, error) {
	id, err := loadIdentity(dir, host)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.roots,
		// On top of the chain: the CA certificate itself (whose key signs every host) is never a
		// client, and a client certificate must say it is one.
		VerifyConnection: verifyClient,
	}, nil
}

// verifyClient refuses a client that presents a CA certificate, or one without the clientAuth
// usage (Go accepts a certificate that names no usage at all).
func verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("pki: client presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if leaf.IsCA {
		return fmt.Errorf("pki: client presented the CA certificate %q: a CA is never a client; use a host certificate", leaf.Subject.CommonName)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return fmt.Errorf("pki: client certificate %q is not for client authentication (no clientAuth usage)", leaf.Subject.CommonName)
	}
	return nil
}

// ClientConfig returns the tls.Config of the migrator acting as host: it presents HOST.crt
// from dir as its client certificate and accepts TLS 1.3 only.
//
// The server's certificate must chain to the CA in dir and be a host certificate valid for
// server auth. Its name is checked against expectPeer, not against the dialled address: the
// agent is addressed by IP:port, and its certificate need not list that IP. If expectPeer is
// set, the server certificate must be issued for that host name; if expectPeer is empty, any
// host certificate issued by this CA is accepted, i.e. any member of the lab may answer.
//
// To do this the config sets InsecureSkipVerify and does the whole verification itself in
// VerifyConnection; do not replace or clear VerifyConnection.
func ClientConfig(dir, host, expectPeer string) (*tls.Config, error) {
	if expectPeer != "" {
		if err := checkName(expectPeer); err != nil {
			return nil, fmt.Errorf("pki: expected peer: %w", err)
		}
	}
	id, err := loadIdentity(dir, host)
	if err != nil {
		return nil, err
	}
	roots := id.roots
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		RootCAs:      roots,
		ServerName:   expectPeer,
		// The standard check would match the certificate against the dialled IP;
		// VerifyConnection below verifies the chain and the expected name instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, roots, id.caFile, expectPeer)
		},
	}, nil
}

// PeerName returns the CommonName (the host name) of the peer's verified certificate, for
// logs and reports. On the agent's side that is the client, for a request r: PeerName(r.TLS).
// It returns "" if cs is nil or holds no verified chain, for instance on a connection made
// with ClientConfig, which verifies the server itself (the migrator knows whom it dialled).
func PeerName(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	return cs.VerifiedChains[0][0].Subject.CommonName
}

// identity is a host's certificate and key plus the CA it trusts.
type identity struct {
	cert   tls.Certificate
	roots  *x509.CertPool
	caFile string
}

// loadIdentity loads ca.crt and HOST.crt/HOST.key from dir and checks that they fit together,
// so that a wrong directory or a stale certificate shows at start-up, not at the first
// handshake.
func loadIdentity(dir, host string) (*identity, error) {
	if err := checkName(host); err != nil {
		return nil, err
	}
	initCmd := fmt.Sprintf("ftwin-migrate certs init --dir %s --host %s", dir, host)
	caFile := filepath.Join(dir, caCertFile)
	crtPath, keyPath := hostFiles(dir, host)

	if ok, err := exists(caFile); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("pki: no CA certificate %s: run `%s`, or copy ca.crt from the host where it was run", caFile, initCmd)
	}
	if ok, err := exists(crtPath); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("pki: no certificate for host %s in %s (%s is missing): run `%s`, or copy %s.crt and %s.key from the host where it was run", host, dir, crtPath, initCmd, host, host)
	}
	if ok, err := exists(keyPath); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("pki: no key for host %s in %s (%s is missing): copy it along with %s.crt, or remove %s and run `%s`", host, dir, keyPath, host, crtPath, initCmd)
	}

	ca, err := readCert(caFile)
	if err != nil {
		return nil, err
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", caFile)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	leaf, err := readCert(crtPath)
	if err != nil {
		return nil, err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	if err := matchKey(leaf, key); err != nil {
		return nil, fmt.Errorf("pki: %s does not belong to %s (%w): remove both and run `%s`", keyPath, crtPath, err, initCmd)
	}
	if err := checkHostCert(leaf, roots); err != nil {
		return nil, fmt.Errorf("pki: %s is not a valid host certificate of %s (%w): remove %s and %s and run `%s` with this CA", crtPath, caFile, err, crtPath, keyPath, initCmd)
	}
	return &identity{
		cert:   tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf},
		roots:  roots,
		caFile: caFile,
	}, nil
}

// verifyServer is the client's check of the server certificate: issued by the CA in roots,
// for server auth, not a CA itself and, if expectPeer is set, for host expectPeer.
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, caFile, expectPeer string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("pki: server presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("pki: server certificate %q was not issued by the CA in %s: %w", leaf.Subject.CommonName, caFile, err)
	}
	if leaf.IsCA {
		return fmt.Errorf("pki: server presented the CA certificate %q instead of a host certificate", leaf.Subject.CommonName)
	}
	if expectPeer != "" {
		if err := leaf.VerifyHostname(expectPeer); err != nil {
			return fmt.Errorf("pki: server is host %q, expected %q: %w", leaf.Subject.CommonName, expectPeer, err)
		}
	}
	return nil
}
