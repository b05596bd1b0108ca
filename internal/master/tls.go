package master

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// handshakeTimeout bounds a TLS handshake on the replication port, so that
// a peer that connects and says nothing holds no goroutine for long.
const handshakeTimeout = 10 * time.Second

// fileStamp is what tells a changed file: its modification time and size
// (a Kubernetes Secret update swaps a symlink, which Stat follows).
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// certReloader serves the certificate, key and client CAs from files and
// re-reads them when they change, checked at each handshake (a Stat of
// each file, microseconds against a handshake's milliseconds). A change
// that does not load (a half-written file) keeps the previous certificate
// and is logged; the next handshake tries again.
type certReloader struct {
	certFile, keyFile, caFile string
	logger                    logr.Logger

	mu     sync.Mutex
	stamps [3]fileStamp
	cert   *tls.Certificate
	pool   *x509.CertPool
}

func newCertReloader(t masterapi.TLS, logger logr.Logger) (*certReloader, error) {
	r := &certReloader{certFile: t.CertFile, keyFile: t.KeyFile, caFile: t.ClientCAFile, logger: logger}
	stamps, err := r.stat()
	if err != nil {
		return nil, err
	}
	if err := r.load(stamps); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) stat() ([3]fileStamp, error) {
	var s [3]fileStamp
	for i, f := range []string{r.certFile, r.keyFile, r.caFile} {
		if f == "" {
			continue
		}
		st, err := stampOf(f)
		if err != nil {
			return s, fmt.Errorf("tls: %w", err)
		}
		s[i] = st
	}
	return s, nil
}

// load reads the files; r.mu is held, or r is not shared yet.
func (r *certReloader) load(stamps [3]fileStamp) error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	var pool *x509.CertPool
	if r.caFile != "" {
		pem, err := os.ReadFile(r.caFile)
		if err != nil {
			return fmt.Errorf("tls: read clientCAFile: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls: clientCAFile %s holds no PEM certificate", r.caFile)
		}
	}
	r.cert, r.pool, r.stamps = &cert, pool, stamps
	return nil
}

// current returns the certificate and client CAs, reloaded if the files
// changed since they were read.
func (r *certReloader) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamps, err := r.stat()
	if err == nil && stamps != r.stamps {
		err = r.load(stamps)
		if err == nil {
			r.logger.Info("TLS certificate files changed; reloaded", "certFile", r.certFile)
		}
	}
	if err != nil {
		r.logger.Error(err, "TLS certificate files changed but do not load; serving the previous certificate")
	}
	return r.cert, r.pool
}

// serverConfig is the TLS config of one listener. withClientAuth asks for
// client certificates (the replication port); the HTTP port never does, so
// that kubelet probes and Prometheus need no certificate.
func (r *certReloader) serverConfig(t masterapi.TLS, withClientAuth bool) *tls.Config {
	mode := tls.NoClientCert
	if withClientAuth && t.ClientCAFile != "" {
		mode = tls.VerifyClientCertIfGiven
		if t.ClientAuthRequired() {
			mode = tls.RequireAndVerifyClientCert
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := r.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   mode,
				ClientCAs:    pool,
			}, nil
		},
	}
}

// identifyPeer runs the TLS handshake of a replication connection and
// names the client after its verified certificate (see certIdentity). A
// plaintext connection is an unauthenticated peer.
func identifyPeer(ctx context.Context, nc net.Conn) (replication.Peer, error) {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return replication.Peer{Transport: "plaintext"}, nil
	}
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return replication.Peer{}, fmt.Errorf("TLS handshake with %s: %w", nc.RemoteAddr(), err)
	}
	st := tc.ConnectionState()
	// Certificates are only kept once verified against the client CAs
	// (VerifyClientCertIfGiven or RequireAndVerifyClientCert).
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return replication.Peer{Transport: "tls"}, nil
	}
	id := certIdentity(st.PeerCertificates[0])
	if id == "" {
		return replication.Peer{}, errors.New("the client certificate names nobody: give it a subject CN, a DNS SAN or a URI SAN")
	}
	return replication.Peer{Identity: id, Authenticated: true, Transport: "tls"}, nil
}

// certIdentity is the subject CN when set, else the first DNS SAN, else the
// first URI SAN: cert-manager and most CAs set the CN of a client
// certificate, SPIFFE-style certificates only a URI.
func certIdentity(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	}
	return ""
}
