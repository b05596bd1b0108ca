package master

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// testPKI is a throwaway CA with helpers to issue server and client
// certificates and write them as PEM files.
type testPKI struct {
	t    testing.TB
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	next int64
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tcprepl test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca, key: key, pool: x509.NewCertPool(), next: 2}
	p.pool.AddCert(ca)
	p.write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return p
}

func (p *testPKI) write(name string, data []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue makes a certificate for cn (a server for 127.0.0.1 when server),
// returning it and its PEM certificate and key.
func (p *testPKI) issue(cn string, server bool) (tls.Certificate, []byte, []byte) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	p.next++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.next),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		p.t.Fatal(err)
	}
	return pair, certPEM, keyPEM
}

// serverFiles issues a server certificate and writes it as server.pem and
// server-key.pem, returning the tls config section.
func (p *testPKI) serverFiles(cn string) masterapi.TLS {
	_, c, k := p.issue(cn, true)
	return masterapi.TLS{CertFile: p.write("server.pem", c), KeyFile: p.write("server-key.pem", k)}
}

// clientConfig trusts the CA and presents a certificate for cn ("" for none).
func (p *testPKI) clientConfig(cn string) *tls.Config {
	cfg := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cn != "" {
		pair, _, _ := p.issue(cn, false)
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// lineConn is a raw replication client: send lines, read lines.
type lineConn struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dialLines(t testing.TB, addr string, cfg *tls.Config) (*lineConn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	var nc net.Conn
	var err error
	if cfg == nil {
		nc, err = d.Dial("tcp", addr)
	} else {
		nc, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	}
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &lineConn{t: t, nc: nc, r: bufio.NewReader(nc)}, nil
}

func (c *lineConn) send(line string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(line + "\n")); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// until reads lines until one starts with prefix, returning it; an error
// (the server closed, or 30s of silence) is returned instead.
func (c *lineConn) until(prefix string) (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line = strings.TrimRight(line, "\n"); strings.HasPrefix(line, prefix) {
			return line, nil
		}
	}
}

func (c *lineConn) mustUntil(prefix string) string {
	c.t.Helper()
	line, err := c.until(prefix)
	if err != nil {
		c.t.Fatalf("waiting for a line starting %q: %v", prefix, err)
	}
	return line
}

// startTLSMaster runs a master with TLS (and a client CA) on 127.0.0.1.
func startTLSMaster(t *testing.T, pki *testPKI, cfg masterapi.Config) *liveMaster {
	t.Helper()
	srvTLS := pki.serverFiles("master")
	cfg.TLS.CertFile, cfg.TLS.KeyFile = srvTLS.CertFile, srvTLS.KeyFile
	if cfg.ServerName == "" {
		cfg.ServerName = "hs.test"
	}
	m, err := New(cfg, Options{Logger: logr.Discard()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	replLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lm := &liveMaster{Master: m, replAddr: replLn.Addr().String(), httpURL: "https://" + httpLn.Addr().String(), served: make(chan error, 1)}
	go func() { lm.served <- m.Serve(replLn, httpLn) }()
	t.Cleanup(func() { lm.stop(t) })
	return lm
}

func TestTLSReplicationIdentifiesClients(t *testing.T) {
	pki := newTestPKI(t)
	lm := startTLSMaster(t, pki, masterapi.Config{TLS: masterapi.TLS{ClientCAFile: filepath.Join(pki.dir, "ca.pem")}})

	c, err := dialLines(t, lm.replAddr, pki.clientConfig("worker-1"))
	if err != nil {
		t.Fatalf("TLS dial with a client certificate: %v", err)
	}
	c.mustUntil("SERVER hs.test")
	c.send("NAME w1")
	c.send("REPLICATE caches NOW")
	c.mustUntil("POSITION caches")
	conns := lm.srv.Connections()
	if len(conns) != 1 || conns[0].Identity != "worker-1" || conns[0].Transport != "tls" {
		t.Fatalf("connection table %+v, want identity worker-1 over tls", conns)
	}

	// A client without a certificate fails the handshake: the master
	// requires one once tls.clientCAFile is set.
	noCert, err := dialLines(t, lm.replAddr, pki.clientConfig(""))
	if err == nil {
		// TLS 1.3 reports the refusal on the first read.
		_, err = noCert.until("SERVER")
	}
	if err == nil {
		t.Fatal("a client without a certificate was served")
	}

	// A certificate from another CA is refused too.
	other := newTestPKI(t)
	cfg := other.clientConfig("intruder")
	cfg.RootCAs = pki.pool
	bad, err := dialLines(t, lm.replAddr, cfg)
	if err == nil {
		_, err = bad.until("SERVER")
	}
	if err == nil {
		t.Fatal("a client certificate of an unknown CA was served")
	}

	// The plaintext listener is off by default: the replication port only
	// speaks TLS, so a 2020 client never gets SERVER.
	plain, err := dialLines(t, lm.replAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain.send("NAME old-synapse")
	if line, err := plain.until("SERVER"); err == nil {
		t.Fatalf("plaintext client served on the TLS port: %q", line)
	}
}

func TestAccessRules(t *testing.T) {
	pki := newTestPKI(t)
	lm := startTLSMaster(t, pki, masterapi.Config{
		Federation: true,
		TLS:        masterapi.TLS{ClientCAFile: filepath.Join(pki.dir, "ca.pem"), ClientAuth: masterapi.ClientAuthOptional},
		Access: masterapi.Access{Rules: []masterapi.AccessRule{
			{Identity: "federation-sender", Commands: []string{"FEDERATION_ACK"}, Streams: []string{"*"}},
			{Identity: "*", Commands: []string{"USER_SYNC"}, Streams: []string{"events", "caches"}},
		}},
	})
	ctx := context.Background()
	for range 3 {
		if _, err := lm.Publish(ctx, "federation", []json.RawMessage{json.RawMessage(`["dest", {}]`)}); err != nil {
			t.Fatal(err)
		}
	}
	oldest := func() int64 {
		st, err := lm.store.Stats("federation")
		if err != nil {
			t.Fatal(err)
		}
		return st.OldestToken
	}
	before := oldest()

	tests := map[string]struct {
		cn      string // client certificate; "" connects without one
		send    string
		errHas  string // "" expects no ERROR but the reply in ok
		ok      string
		trimmed bool
	}{
		"ack by an identity not allowed": {cn: "worker-1", send: "FEDERATION_ACK 2", errHas: "FEDERATION_ACK refused: client worker-1 may not send it"},
		"ack without a certificate":      {send: "FEDERATION_ACK 2", errHas: "FEDERATION_ACK refused: client unauthenticated"},
		"stream not allowed":             {cn: "worker-1", send: "REPLICATE to_device 0", errHas: "REPLICATE refused for stream to_device: client worker-1 may not read it"},
		"unauthenticated reads nothing":  {send: "REPLICATE caches NOW", errHas: "REPLICATE refused for stream caches: client unauthenticated"},
		"stream allowed":                 {cn: "worker-1", send: "REPLICATE caches NOW", ok: "POSITION caches"},
		"ack by the federation sender":   {cn: "federation-sender", send: "FEDERATION_ACK 2", trimmed: true},
	}
	// The trimming case runs last, in its own step, so that the refusals
	// are checked against an untrimmed stream.
	for _, name := range []string{"ack by an identity not allowed", "ack without a certificate", "stream not allowed", "unauthenticated reads nothing", "stream allowed", "ack by the federation sender"} {
		tc := tests[name]
		t.Run(name, func(t *testing.T) {
			c, err := dialLines(t, lm.replAddr, pki.clientConfig(tc.cn))
			if err != nil {
				t.Fatal(err)
			}
			c.mustUntil("SERVER")
			c.send(tc.send)
			switch {
			case tc.errHas != "":
				line := c.mustUntil("ERROR")
				if !strings.Contains(line, tc.errHas) {
					t.Fatalf("got %q, want an ERROR containing %q", line, tc.errHas)
				}
				// The ERROR is sent instead of the command's effect.
				if got := oldest(); got != before {
					t.Fatalf("federation oldest token %d after a refused command, want %d", got, before)
				}
			case tc.trimmed:
				waitFor(t, "federation trimmed by the allowed ack", func() bool { return oldest() > before })
			default:
				c.mustUntil(tc.ok)
			}
		})
	}
}

func TestPlaintextReplicationListenerOptIn(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.serverFiles("master")
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := masterapi.Config{ServerName: "hs.test", TLS: masterapi.TLS{
		CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: filepath.Join(pki.dir, "ca.pem"),
		PlaintextReplicationListen: plainLn.Addr().String(),
	}}
	m, err := New(cfg, Options{Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	replLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lm := &liveMaster{Master: m, replAddr: replLn.Addr().String(), served: make(chan error, 1)}
	go func() {
		lm.served <- m.ServeListeners(Listeners{Replication: replLn, HTTP: httpLn, PlaintextReplication: plainLn})
	}()
	t.Cleanup(func() { lm.stop(t) })

	// A 2020 peer connects in plaintext but, with client certificates
	// configured and no rule for it, may read nothing.
	c, err := dialLines(t, plainLn.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.mustUntil("SERVER hs.test")
	c.send("REPLICATE events NOW")
	if line := c.mustUntil("ERROR"); !strings.Contains(line, "client unauthenticated may not read it") {
		t.Fatalf("got %q", line)
	}
	c.send(`USER_IP @a:x ["tok", "1.2.3.4", "ua", "DEV", 5]`)
	if line := c.mustUntil("ERROR"); !strings.Contains(line, "USER_IP refused") {
		t.Fatalf("got %q", line)
	}
}

func TestTLSCertificateReloaded(t *testing.T) {
	pki := newTestPKI(t)
	lm := startTLSMaster(t, pki, masterapi.Config{})
	served := func() string {
		c, err := tls.Dial("tcp", lm.replAddr, pki.clientConfig(""))
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer func() { _ = c.Close() }()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "master" {
		t.Fatalf("served certificate %q, want master", got)
	}
	// Replace the files as a Secret update does: write aside, rename over.
	_, certPEM, keyPEM := pki.issue("master-renewed", true)
	for name, data := range map[string][]byte{"server.pem": certPEM, "server-key.pem": keyPEM} {
		tmp := pki.write(name+".new", data)
		if err := os.Rename(tmp, filepath.Join(pki.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the renewed certificate served", func() bool { return served() == "master-renewed" })

	// A broken file keeps the last good certificate.
	pki.write("server.pem", []byte("not a certificate"))
	if got := served(); got != "master-renewed" {
		t.Fatalf("after a broken certificate file: served %q, want the previous master-renewed", got)
	}
}

func TestUserIPsNeedAToken(t *testing.T) {
	pki := newTestPKI(t)
	readFile := writeTokenFile(t, "r34d")
	lm := startTLSMaster(t, pki, masterapi.Config{Access: masterapi.Access{ReadTokenFile: readFile}})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: pki.clientConfig("")}}
	tests := map[string]struct {
		auth string
		code int
	}{
		"no token":    {code: 401},
		"wrong token": {auth: "Bearer nope", code: 401},
		"not bearer":  {auth: "Basic r34d", code: 401},
		"read token":  {auth: "Bearer r34d", code: 200},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest("GET", lm.httpURL+"/v1/userips", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET over TLS: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
}

func TestUserIPsClosedWithoutAnyToken(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{})
	code, body, hdr := do(t, m.Handler(), "GET", "/v1/userips", "")
	if code != 401 || !strings.Contains(body["error"].(string), "access.readTokenFile") || hdr.Get("WWW-Authenticate") == "" {
		t.Fatalf("code %d body %v", code, body)
	}
}

func writeTokenFile(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
