package replication

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// benchTLS is a self-signed server certificate for 127.0.0.1 and the client
// config that trusts it.
func benchTLS(b *testing.B) (server, client *tls.Config) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// tlsBenchServer serves src over plaintext or TLS (with the IdentifyPeer
// hook running the handshake, as the master does) and returns the
// client's dialer.
func tlsBenchServer(b *testing.B, src Source, useTLS bool) (srv *Server, addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	b.Helper()
	cfg := ServerConfig{ServerName: "bench", Logger: discardLogger}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	dial = d.DialContext
	if useTLS {
		serverCfg, clientCfg := benchTLS(b)
		ln = tls.NewListener(ln, serverCfg)
		cfg.IdentifyPeer = func(ctx context.Context, nc net.Conn) (Peer, error) {
			return Peer{Transport: "tls"}, nc.(*tls.Conn).HandshakeContext(ctx)
		}
		dial = (&tls.Dialer{NetDialer: d, Config: clientCfg}).DialContext
	}
	srv, err = NewServer(cfg, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	b.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			b.Errorf("Serve: %v", err)
		}
	})
	return srv, ln.Addr().String(), dial
}

// chanHandler hands every received token to a channel and says when the
// client has caught up.
type chanHandler struct {
	rows     chan int64
	caughtUp chan struct{}
	once     sync.Once
}

func (h *chanHandler) HandleRows(_ context.Context, _ string, token int64, rows []json.RawMessage) error {
	h.rows <- token
	return nil
}
func (h *chanHandler) HandlePosition(string, int64) {}
func (h *chanHandler) HandleConnectionState(st ClientState, _ error) {
	if st == ClientCaughtUp {
		h.once.Do(func() { close(h.caughtUp) })
	}
}

// BenchmarkTLS compares the plaintext and TLS transports: publish-to-deliver
// is the round trip of one row from Publish to the client's handler (one
// row in flight at a time); catch-up streams 100,000 rows of 100 bytes to a
// new subscriber from token 0, connection and handshake included.
func BenchmarkTLS(b *testing.B) {
	for _, transport := range []string{"plaintext", "tls"} {
		useTLS := transport == "tls"
		b.Run("publish-to-deliver/transport="+transport, func(b *testing.B) {
			src := &syntheticSource{stream: "caches"}
			srv, addr, dial := tlsBenchServer(b, src, useTLS)
			h := &chanHandler{rows: make(chan int64, 16), caughtUp: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			c, err := NewClient(ClientConfig{Address: addr, ServerName: "bench", Handler: h, Dial: dial,
				Streams: []StreamRequest{{Stream: "caches", Now: true}}})
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); _ = c.Run(ctx) }()
			defer func() { cancel(); <-done }()
			<-h.caughtUp
			row := []json.RawMessage{benchRow(1)}
			b.SetBytes(int64(len(row[0])))
			b.ResetTimer()
			for range b.N {
				u := src.nextToken()
				u.Rows = row
				srv.Publish(u)
				if got := <-h.rows; got != u.Token {
					b.Fatalf("received token %d, want %d", got, u.Token)
				}
			}
		})
		b.Run("catch-up/transport="+transport, func(b *testing.B) {
			const rows = 100000
			src := &syntheticSource{stream: "caches"}
			src.current.Store(rows)
			_, addr, dial := tlsBenchServer(b, src, useTLS)
			b.SetBytes(rows * int64(len(cacheRow(1))))
			b.ResetTimer()
			for range b.N {
				h := &chanHandler{rows: make(chan int64, 1024), caughtUp: make(chan struct{})}
				ctx, cancel := context.WithCancel(context.Background())
				c, err := NewClient(ClientConfig{Address: addr, ServerName: "bench", Handler: h, Dial: dial,
					Streams: []StreamRequest{{Stream: "caches", Token: 0}}})
				if err != nil {
					b.Fatal(err)
				}
				done := make(chan struct{})
				go func() { defer close(done); _ = c.Run(ctx) }()
				for got := int64(0); got < rows; {
					got = <-h.rows
				}
				cancel()
				<-done
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
