package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/pflag"
)

// Environment the operator may inject for the worker's and probe's TLS.
const (
	envTLSCAFile     = "TCPREPL_TLS_CA_FILE"
	envTLSCertFile   = "TCPREPL_TLS_CERT_FILE"
	envTLSKeyFile    = "TCPREPL_TLS_KEY_FILE"
	envTLSServerName = "TCPREPL_TLS_SERVER_NAME"
)

// tlsClientFlags are the TLS settings of a replication client (worker,
// probe). TLS is used when --tls is given or a CA or client certificate is.
type tlsClientFlags struct {
	enabled    bool
	caFile     string
	certFile   string
	keyFile    string
	serverName string
}

func (f *tlsClientFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&f.enabled, "tls", false, "connect to the master over TLS, trusting the system CAs unless --tls-ca-file is given (implied by the other --tls-* flags)")
	fl.StringVar(&f.caFile, "tls-ca-file", "", "PEM CA bundle the master's certificate must chain to (default $"+envTLSCAFile+")")
	fl.StringVar(&f.certFile, "tls-cert-file", "", "PEM client certificate presented to the master, re-read at each connection (default $"+envTLSCertFile+")")
	fl.StringVar(&f.keyFile, "tls-key-file", "", "PEM key of --tls-cert-file (default $"+envTLSKeyFile+")")
	fl.StringVar(&f.serverName, "tls-server-name", "", "name the master's certificate must carry (default $"+envTLSServerName+", else the host of the master address)")
}

// config returns the client TLS config, or nil when TLS is not asked for.
func (f *tlsClientFlags) config(getenv func(string) string) (*tls.Config, error) {
	ca := flagOrEnv(f.caFile, envTLSCAFile, getenv)
	certFile := flagOrEnv(f.certFile, envTLSCertFile, getenv)
	keyFile := flagOrEnv(f.keyFile, envTLSKeyFile, getenv)
	serverName := flagOrEnv(f.serverName, envTLSServerName, getenv)
	if !f.enabled && ca == "" && certFile == "" && keyFile == "" && serverName == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca-file %s holds no PEM certificate", ca)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--tls-cert-file and --tls-key-file go together: give both or neither")
	}
	if certFile != "" {
		// Loaded once now so that a mistake stops the start, then at each
		// handshake so that a renewed certificate is used without a restart.
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("load the client certificate: %w", err)
			}
			return &pair, nil
		}
	}
	return cfg, nil
}

// tlsDial dials the master over TLS with the replication client's timeouts.
func tlsDial(cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, Config: cfg}
	return d.DialContext
}
