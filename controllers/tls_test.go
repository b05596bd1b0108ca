package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
	"github.com/tcprepl/tcprepl/internal/testenv/testcerts"
)

// A TLS listener that requires client certificates of ca, as a master
// with clientAuth Require does. It completes handshakes and reports the
// client's CN.
func requireClientCertListener(t *testing.T, ca *testcerts.CA, srv testcerts.Pair) (string, <-chan string) {
	t.Helper()
	pair, err := tls.X509KeyPair(srv.Cert, srv.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ids := make(chan string, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err == nil {
				ids <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String(), ids
}

func TestProbeTargetConfigureTLS(t *testing.T) {
	ca, err := testcerts.NewCA("probe test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("m.ns.svc")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client(specs.ProbeIdentity)
	if err != nil {
		t.Fatal(err)
	}
	other, err := testcerts.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	addr, ids := requireClientCertListener(t, ca, srv)

	good := ProbeTLS{Enabled: true, ServerName: "m.ns.svc", CA: string(ca.PEM), Cert: string(cli.Cert), Key: string(cli.Key)}
	cases := map[string]struct {
		tls        ProbeTLS
		configErr  string
		dialErr    bool
		wantClient string
	}{
		"client certificate":    {tls: good, wantClient: specs.ProbeIdentity},
		"no client certificate": {tls: ProbeTLS{Enabled: true, ServerName: "m.ns.svc", CA: string(ca.PEM)}, dialErr: true},
		"wrong server name":     {tls: ProbeTLS{Enabled: true, ServerName: "other.ns.svc", CA: string(ca.PEM), Cert: good.Cert, Key: good.Key}, dialErr: true},
		"another CA":            {tls: ProbeTLS{Enabled: true, ServerName: "m.ns.svc", CA: string(other.PEM), Cert: good.Cert, Key: good.Key}, dialErr: true},
		"CA not PEM":            {tls: ProbeTLS{Enabled: true, CA: "nonsense"}, configErr: "holds no PEM certificate"},
		"key of another cert":   {tls: ProbeTLS{Enabled: true, CA: string(ca.PEM), Cert: good.Cert, Key: string(srv.Key)}, configErr: "client certificate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var cfg probe.Config
			err := ProbeTarget{TLS: tc.tls}.ConfigureTLS(&cfg)
			if tc.configErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.configErr) {
					t.Fatalf("err = %v, want %q", err, tc.configErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Dial == nil || cfg.HTTPClient == nil {
				t.Fatal("TLS asked for but no dialer or HTTP client set")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := cfg.Dial(ctx, "tcp", addr)
			if err == nil {
				// TLS 1.3 reports a refused client certificate on the first read.
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err = c.Read(make([]byte, 1))
				_ = c.Close()
				if err != nil && !tc.dialErr && isEOF(err) {
					err = nil
				}
			}
			if tc.dialErr {
				if err == nil || isEOF(err) {
					t.Fatalf("the handshake succeeded; want it refused (err %v)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			select {
			case id := <-ids:
				if id != tc.wantClient {
					t.Errorf("server saw client %q, want %q", id, tc.wantClient)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the server saw no handshake")
			}
		})
	}

	var cfg probe.Config
	if err := (ProbeTarget{}).ConfigureTLS(&cfg); err != nil || cfg.Dial != nil || cfg.HTTPClient != nil {
		t.Errorf("a plaintext target set TLS: err %v, dial %v", err, cfg.Dial != nil)
	}
}

// isEOF: the server closed after a handshake it accepted.
func isEOF(err error) bool { return errors.Is(err, io.EOF) }

func TestCheckTLSSecret(t *testing.T) {
	ca, err := testcerts.NewCA("check CA")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.Server("a.example")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Client("b")
	if err != nil {
		t.Fatal(err)
	}
	data := func(cert, key, caPEM []byte) *corev1.Secret {
		return &corev1.Secret{Data: map[string][]byte{specs.TLSCertKey: cert, specs.TLSKeyKey: key, specs.TLSCAKey: caPEM}}
	}
	cases := map[string]struct {
		s      *corev1.Secret
		needCA bool
		want   string
	}{
		"complete":          {s: data(a.Cert, a.Key, ca.PEM), needCA: true},
		"no CA, not needed": {s: data(a.Cert, a.Key, nil)},
		"no CA":             {s: data(a.Cert, a.Key, nil), needCA: true, want: "has no [ca.crt]"},
		"no key":            {s: data(a.Cert, nil, ca.PEM), want: "has no [tls.key]"},
		"mismatched pair":   {s: data(a.Cert, b.Key, ca.PEM), want: "do not load as a pair"},
		"CA not PEM":        {s: data(a.Cert, a.Key, []byte("x")), needCA: true, want: "ca.crt holds no PEM certificate"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := checkTLSSecret(tc.s, tc.needCA)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// A TLS check is reused until its state's requeue interval has passed or
// the resource's generation changed; a problem is looked at again sooner
// than a healthy state.
func TestTLSChecksSpaceOutReads(t *testing.T) {
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	missing := tlsState{enabled: true, reason: "TLSSecretMissing", retry: true}
	ready := tlsState{enabled: true, ready: true, reason: "CertificatesReady"}
	cases := map[string]struct {
		state   tlsState
		version string
		at      time.Duration
		reused  bool
	}{
		"problem, just checked":        {state: missing, version: "1", at: time.Second, reused: true},
		"problem, after tlsRetry":      {state: missing, version: "1", at: tlsRetry},
		"ready, after tlsRetry":        {state: ready, version: "1", at: tlsRetry, reused: true},
		"ready, after tlsResync":       {state: ready, version: "1", at: tlsResync},
		"new generation":               {state: ready, version: "2", at: time.Second},
		"clock went back (not reused)": {state: ready, version: "1", at: -time.Second},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var c tlsChecks
			c.record(key, "1", t0, tc.state)
			got, ok := c.recent(key, tc.version, t0.Add(tc.at))
			if ok != tc.reused || (ok && got != tc.state) {
				t.Fatalf("recent = %+v, %v; want reused %v", got, ok, tc.reused)
			}
			c.forget(key)
			if _, ok := c.recent(key, "1", t0); ok {
				t.Fatal("a forgotten check is still reused")
			}
		})
	}
}

func TestClientCertNeeded(t *testing.T) {
	unauth := []replv1.TLSAccessRule{{Identity: "unauthenticated", Streams: []string{"events"}}}
	cases := map[string]struct {
		tls  replv1.MasterTLSSpec
		want bool
	}{
		"Require by default":                   {tls: replv1.MasterTLSSpec{}, want: true},
		"Require, even with an unauth rule":    {tls: replv1.MasterTLSSpec{ClientAuth: replv1.ClientAuthRequire, AccessRules: unauth}, want: true},
		"VerifyIfGiven, no rules":              {tls: replv1.MasterTLSSpec{ClientAuth: replv1.ClientAuthVerifyIfGiven}, want: true},
		"VerifyIfGiven, a rule for the unauth": {tls: replv1.MasterTLSSpec{ClientAuth: replv1.ClientAuthVerifyIfGiven, AccessRules: unauth}},
		"None":                                 {tls: replv1.MasterTLSSpec{ClientAuth: replv1.ClientAuthNone}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := clientCertNeeded(&tc.tls); got != tc.want {
				t.Errorf("clientCertNeeded = %v, want %v", got, tc.want)
			}
		})
	}
}
