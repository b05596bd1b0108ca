package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 (usable
// as CA, server and client) and its key, returning the two paths.
func writeSelfSigned(t *testing.T, cn string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLSClientFlags(t *testing.T) {
	certFile, keyFile := writeSelfSigned(t, "worker-1")
	notPEM := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(notPEM, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		flags  tlsClientFlags
		env    map[string]string
		off    bool
		errHas string
	}{
		"nothing asked":    {off: true},
		"system roots":     {flags: tlsClientFlags{enabled: true}},
		"ca from env":      {env: map[string]string{envTLSCAFile: certFile}},
		"client cert":      {flags: tlsClientFlags{caFile: certFile, certFile: certFile, keyFile: keyFile}},
		"cert without key": {flags: tlsClientFlags{certFile: certFile}, errHas: "go together"},
		"missing ca":       {flags: tlsClientFlags{caFile: "/nonexistent/ca.pem"}, errHas: "--tls-ca-file"},
		"ca not PEM":       {flags: tlsClientFlags{caFile: notPEM}, errHas: "no PEM certificate"},
		"key not PEM":      {flags: tlsClientFlags{certFile: certFile, keyFile: notPEM}, errHas: "--tls-cert-file/--tls-key-file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := tc.flags.config(func(k string) string { return tc.env[k] })
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one containing %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cfg == nil) != tc.off {
				t.Fatalf("config %v, want TLS off=%v", cfg, tc.off)
			}
		})
	}
}

// TestTLSDialPresentsClientCertificate: the dialer the worker and probe use
// verifies the server against --tls-ca-file and presents the client
// certificate to a server that requires one.
func TestTLSDialPresentsClientCertificate(t *testing.T) {
	certFile, keyFile := writeSelfSigned(t, "worker-1")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pair.Leaf)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	f := tlsClientFlags{caFile: certFile, certFile: certFile, keyFile: keyFile}
	cfg, err := f.config(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	c, err := tlsDial(cfg)(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if cn := <-got; cn != "worker-1" {
		t.Fatalf("server saw %q, want the client certificate worker-1", cn)
	}
}

// TestWorkerAndProbeOverTLS runs a real master process with TLS and client
// certificates required, and a worker and the probe that reach it with the
// --tls-* flags. The certificate is its own CA and serves both ends.
func TestWorkerAndProbeOverTLS(t *testing.T) {
	bin := buildBinary(t)
	certFile, keyFile := writeSelfSigned(t, "worker-1")
	m := startMasterProc(t, bin, "--server-name", "tls.example.org", "--ephemeral",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-client-ca-file", certFile)
	m.httpURL = strings.Replace(m.httpURL, "http://", "https://", 1)
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Post(m.httpURL+"/v1/streams/typing/rows", "application/json", strings.NewReader(`{"rows": [["!r:x", ["@a:x"]]]}`))
	if err != nil {
		t.Fatalf("publish over HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: %d", resp.StatusCode)
	}

	dir := t.TempDir()
	sink := filepath.Join(dir, "rows.jsonl")
	tlsArgs := []string{"--tls-ca-file", certFile, "--tls-cert-file", certFile, "--tls-key-file", keyFile}
	startWorkerProc(t, bin, append([]string{"--master", m.replAddr, "--server-name", "tls.example.org", "--streams", "typing",
		"--state-dir", filepath.Join(dir, "state"), "--sink", "file:" + sink, "--from", "0"}, tlsArgs...)...)
	poll(t, "the row delivered over TLS", func() bool { return countFileLines(sink) == 1 })

	out, errOut, code := runCLI(t, bin, append([]string{"probe", "--master", m.replAddr, "--server-name", "tls.example.org", "--http", m.httpURL, "-o", "json"}, tlsArgs...)...)
	if code != 0 || !strings.Contains(out, `"typing"`) {
		t.Fatalf("probe over TLS exit %d: %s\n%s", code, errOut, out)
	}
	// Without a client certificate the probe cannot get in.
	_, _, code = runCLI(t, bin, "probe", "--master", m.replAddr, "--server-name", "tls.example.org", "--tls-ca-file", certFile, "--wait", "2s")
	if code == 0 {
		t.Fatal("a probe without a client certificate was served")
	}
}
