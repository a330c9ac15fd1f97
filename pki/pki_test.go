package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var loopback = []net.IP{net.ParseIP("127.0.0.1")}

// lab creates a CA in a fresh directory with host fog (127.0.0.1) and host cloud (no IPs).
func lab(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if err := Init(dir, []Host{{Name: "fog", IPs: loopback}, {Name: "cloud"}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func serverConfig(t *testing.T, dir, host string) *tls.Config {
	t.Helper()
	cfg, err := ServerConfig(dir, host)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func clientConfig(t *testing.T, dir, host, expectPeer string) *tls.Config {
	t.Helper()
	cfg, err := ClientConfig(dir, host, expectPeer)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// handshake runs one TLS connection over loopback and returns each side's error. On
// success the server sends its peer's name, which the client reads.
func handshake(t *testing.T, server, client *tls.Config) (peerSeenByServer string, serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	type result struct {
		peer string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		conn := c.(*tls.Conn)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := conn.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		cs := conn.ConnectionState()
		peer := PeerName(&cs)
		_, err = io.WriteString(conn, peer+"\n")
		done <- result{peer: peer, err: err}
	}()

	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), client)
	if err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		// In TLS 1.3 the server checks the client certificate after the client's handshake
		// has returned: a refusal shows on the first read.
		var got []byte
		got, err = io.ReadAll(conn)
		if err == nil && string(got) == "" {
			err = errors.New("server closed the connection without a word")
		}
		conn.Close()
	}
	r := <-done
	return r.peer, r.err, err
}

func wantErr(t *testing.T, side string, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: handshake succeeded, want an error containing %q", side, substr)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("%s: error %q, want it to contain %q", side, err, substr)
	}
}

func TestHTTPSMutualTLS(t *testing.T) {
	dir := lab(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, PeerName(r.TLS))
	}))
	srv.TLS = serverConfig(t, dir, "fog")
	srv.StartTLS()
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: clientConfig(t, dir, "cloud", "fog")}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(srv.URL) // https://127.0.0.1:PORT
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "cloud" {
		t.Errorf("server saw client %q, want %q", body, "cloud")
	}
	if resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("TLS version %#x, want TLS 1.3", resp.TLS.Version)
	}
}

func TestHandshakeOK(t *testing.T) {
	dir := lab(t)
	for _, tc := range []struct{ name, server, client, expectPeer string }{
		{"expected peer", "fog", "cloud", "fog"},
		{"any peer of the CA", "fog", "cloud", ""},
		// cloud's certificate lists no IP, yet it is reached at 127.0.0.1.
		{"server cert without the dialled IP", "cloud", "fog", "cloud"},
		{"same host both ends", "fog", "fog", "fog"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, serr, cerr := handshake(t, serverConfig(t, dir, tc.server), clientConfig(t, dir, tc.client, tc.expectPeer))
			if serr != nil || cerr != nil {
				t.Fatalf("server error: %v; client error: %v", serr, cerr)
			}
			if peer != tc.client {
				t.Errorf("server saw client %q, want %q", peer, tc.client)
			}
		})
	}
}

func TestClientWithoutCertificateRefused(t *testing.T) {
	dir := lab(t)
	client := clientConfig(t, dir, "cloud", "fog")
	client.Certificates = nil
	_, serr, cerr := handshake(t, serverConfig(t, dir, "fog"), client)
	wantErr(t, "server", serr, "client didn't provide a certificate")
	wantErr(t, "client", cerr, "certificate required")
}

func TestClientFromAnotherCARefused(t *testing.T) {
	dir, other := lab(t), lab(t)
	// The client trusts the server (dir's CA) but holds a certificate of another CA.
	client := clientConfig(t, dir, "cloud", "fog")
	foreign := clientConfig(t, other, "cloud", "").Certificates
	client.Certificates = foreign

	// A Go client does not even send it: the server's certificate request names the CAs it
	// accepts, and the foreign CA is not one of them.
	_, serr, cerr := handshake(t, serverConfig(t, dir, "fog"), client)
	wantErr(t, "server", serr, "client didn't provide a certificate")
	wantErr(t, "client", cerr, "certificate required")

	// A client that sends it anyway is refused by the server's chain check.
	client.Certificates = nil
	client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &foreign[0], nil
	}
	_, serr, cerr = handshake(t, serverConfig(t, dir, "fog"), client)
	wantErr(t, "server", serr, "certificate signed by unknown authority")
	wantErr(t, "client", cerr, "remote error: tls: unknown certificate authority")
}

func TestServerFromAnotherCARefused(t *testing.T) {
	dir, other := lab(t), lab(t)
	_, serr, cerr := handshake(t, serverConfig(t, other, "fog"), clientConfig(t, dir, "cloud", "fog"))
	wantErr(t, "client", cerr, "was not issued by the CA in "+filepath.Join(dir, "ca.crt"))
	wantErr(t, "server", serr, "remote error: tls: bad certificate")
	if !errors.As(cerr, new(x509.UnknownAuthorityError)) {
		t.Errorf("client error %v does not wrap x509.UnknownAuthorityError", cerr)
	}
}

func TestExpectPeerMismatchRefused(t *testing.T) {
	dir := lab(t)
	_, serr, cerr := handshake(t, serverConfig(t, dir, "fog"), clientConfig(t, dir, "cloud", "cloud"))
	wantErr(t, "client", cerr, `server is host "fog", expected "cloud"`)
	wantErr(t, "server", serr, "remote error: tls: bad certificate")
}

// snapshot reads every file of dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = data
	}
	return files
}

func sameFiles(t *testing.T, before, after map[string][]byte, names ...string) {
	t.Helper()
	for _, name := range names {
		if !bytes.Equal(before[name], after[name]) {
			t.Errorf("%s changed", name)
		}
	}
}

func TestInitIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	hosts := []Host{{Name: "fog", IPs: loopback}}
	if err := Init(dir, hosts); err != nil {
		t.Fatal(err)
	}
	first := snapshot(t, dir)
	if len(first) != 4 {
		t.Fatalf("files after init: %v, want ca.crt ca.key fog.crt fog.key", keys(first))
	}

	if err := Init(dir, hosts); err != nil {
		t.Fatal(err)
	}
	second := snapshot(t, dir)
	if len(second) != len(first) {
		t.Fatalf("files after second init: %v, want %v", keys(second), keys(first))
	}
	sameFiles(t, first, second, "ca.crt", "ca.key", "fog.crt", "fog.key")

	// A new host is added; the others stay as they are.
	if err := Init(dir, append(hosts, Host{Name: "cloud"})); err != nil {
		t.Fatal(err)
	}
	third := snapshot(t, dir)
	sameFiles(t, first, third, "ca.crt", "ca.key", "fog.crt", "fog.key")
	if third["cloud.crt"] == nil || third["cloud.key"] == nil {
		t.Fatalf("files after adding cloud: %v", keys(third))
	}
	if _, err := ServerConfig(dir, "cloud"); err != nil {
		t.Fatal(err)
	}

	// A missing host is reissued.
	os.Remove(filepath.Join(dir, "fog.crt"))
	os.Remove(filepath.Join(dir, "fog.key"))
	if err := Init(dir, hosts); err != nil {
		t.Fatal(err)
	}
	fourth := snapshot(t, dir)
	sameFiles(t, first, fourth, "ca.crt", "ca.key")
	if bytes.Equal(first["fog.key"], fourth["fog.key"]) {
		t.Error("fog.key was not reissued")
	}

	// A key without its certificate gets a certificate for that key.
	os.Remove(filepath.Join(dir, "fog.crt"))
	if err := Init(dir, hosts); err != nil {
		t.Fatal(err)
	}
	fifth := snapshot(t, dir)
	sameFiles(t, fourth, fifth, "ca.crt", "ca.key", "fog.key")
	if _, err := ServerConfig(dir, "fog"); err != nil {
		t.Fatal(err)
	}
}

func TestInitRefusesInconsistentFiles(t *testing.T) {
	dir := lab(t)
	before := snapshot(t, dir)

	// An existing certificate without a newly asked-for IP is not silently kept.
	err := Init(dir, []Host{{Name: "cloud", IPs: loopback}})
	wantErr(t, "init", err, "cloud.crt lacks IP 127.0.0.1")
	wantErr(t, "init", err, "remove "+filepath.Join(dir, "cloud.crt"))

	// Host files from another CA.
	other := lab(t)
	os.WriteFile(filepath.Join(dir, "rain.crt"), snapshot(t, other)["fog.crt"], 0o644)
	os.WriteFile(filepath.Join(dir, "rain.key"), snapshot(t, other)["fog.key"], 0o600)
	wantErr(t, "init", Init(dir, []Host{{Name: "rain"}}), "rain.crt is not a valid host certificate")
	os.Remove(filepath.Join(dir, "rain.crt"))
	os.Remove(filepath.Join(dir, "rain.key"))

	// A CA certificate without its key.
	os.Rename(filepath.Join(dir, "ca.key"), filepath.Join(dir, "ca.key.bak"))
	wantErr(t, "init", Init(dir, nil), "ca.key is missing")
	os.Rename(filepath.Join(dir, "ca.key.bak"), filepath.Join(dir, "ca.key"))

	for _, name := range []string{"", "ca", "../fog", "a/b", "10.0.0.1", "-fog", "fog.", "f_g"} {
		if err := Init(dir, []Host{{Name: name}}); err == nil || !strings.Contains(err.Error(), "invalid host name") {
			t.Errorf("Init with host %q: error %v, want invalid host name", name, err)
		}
	}
	sameFiles(t, before, snapshot(t, dir), keys(before)...)
	if n := len(snapshot(t, dir)); n != len(before) {
		t.Errorf("%d files after refused inits, want %d", n, len(before))
	}
}

func TestMissingFilesSayWhatToDo(t *testing.T) {
	dir := lab(t)
	_, err := ServerConfig(dir, "rain")
	wantErr(t, "ServerConfig", err, "pki: no certificate for host rain in "+dir)
	wantErr(t, "ServerConfig", err, filepath.Join(dir, "rain.crt"))
	wantErr(t, "ServerConfig", err, "run `ftwin-migrate certs init --dir "+dir+" --host rain`")

	os.Remove(filepath.Join(dir, "fog.key"))
	_, err = ClientConfig(dir, "fog", "")
	wantErr(t, "ClientConfig", err, filepath.Join(dir, "fog.key")+" is missing")

	empty := t.TempDir()
	_, err = ClientConfig(empty, "cloud", "fog")
	wantErr(t, "ClientConfig", err, "no CA certificate "+filepath.Join(empty, "ca.crt"))

	_, err = ClientConfig(dir, "cloud", "not a name")
	wantErr(t, "ClientConfig", err, "invalid host name")

	// A host certificate that does not belong to the directory's CA is caught at load time.
	other := lab(t)
	os.WriteFile(filepath.Join(dir, "ca.crt"), snapshot(t, other)["ca.crt"], 0o644)
	_, err = ServerConfig(dir, "cloud")
	wantErr(t, "ServerConfig", err, "cloud.crt is not a valid host certificate")
}

func TestPeerNameWithoutVerifiedChain(t *testing.T) {
	if got := PeerName(nil); got != "" {
		t.Errorf("PeerName(nil) = %q", got)
	}
	if got := PeerName(&tls.ConnectionState{}); got != "" {
		t.Errorf("PeerName(no chain) = %q", got)
	}
}

func keys(m map[string][]byte) []string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	return names
}

// TestCACertificateIsNeverAClient: the CA certificate chains to itself, so the chain check
// alone would take it for a client.
func TestCACertificateIsNeverAClient(t *testing.T) {
	dir := lab(t)
	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	client := clientConfig(t, dir, "cloud", "fog")
	client.Certificates = nil
	client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &ca, nil }
	_, serr, _ := handshake(t, serverConfig(t, dir, "fog"), client)
	wantErr(t, "server", serr, "a CA is never a client")
}

// TestServerOnlyCertificateIsNoClient: a certificate of the CA made for server auth only is
// refused as a client.
func TestServerOnlyCertificateIsNoClient(t *testing.T) {
	dir := lab(t)
	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	host := clientConfig(t, dir, "cloud", "fog").Certificates[0]
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "edge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, host.Leaf.PublicKey, ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	serverOnly := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: host.PrivateKey}
	client := clientConfig(t, dir, "cloud", "fog")
	client.Certificates = nil
	client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &serverOnly, nil }
	_, serr, _ := handshake(t, serverConfig(t, dir, "fog"), client)
	if serr == nil {
		t.Fatal("a server-only certificate was accepted as a client")
	}
}
