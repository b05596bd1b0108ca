package synapse

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/tcprepl/tcprepl/internal/synapse/redistest"
)

func TestWatcherTLS(t *testing.T) {
	srv := redistest.StartTLS(t, "--requirepass", "s3cret")
	pem, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file holds no certificate")
	}

	t.Run("with the CA", func(t *testing.T) {
		w := startWatcher(t, Config{Addr: srv.Addr, Password: "s3cret", TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
		s := waitFor(t, w, "the subscription over TLS", func(s Snapshot) bool { return s.Subscribed && s.Redis.Subscribers == 1 })
		if s.Error != nil {
			t.Fatalf("Error = %v", s.Error)
		}
	})
	failures := map[string]struct {
		cfg     Config
		mention string
	}{
		"unknown CA":        {Config{Addr: srv.Addr, Password: "s3cret", TLS: &tls.Config{MinVersion: tls.VersionTLS12}}, "certificate"},
		"plain TCP to TLS":  {Config{Addr: srv.Addr, Password: "s3cret"}, srv.Addr},
		"TLS, wrong secret": {Config{Addr: srv.Addr, Password: "nope", TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}, "WRONGPASS"},
	}
	for name, tc := range failures {
		t.Run(name, func(t *testing.T) {
			w := startWatcher(t, tc.cfg)
			s := waitFor(t, w, "the error", func(s Snapshot) bool {
				return s.Error != nil && strings.Contains(s.ErrorMessage, tc.mention) && !strings.Contains(s.ErrorMessage, "not connected yet")
			})
			if named := errors.Is(s.Error, ErrRedisUnreachable) || errors.Is(s.Error, ErrRedisAuth); s.Subscribed || !named {
				t.Fatalf("Subscribed=%v Error=%v", s.Subscribed, s.Error)
			}
		})
	}
}
