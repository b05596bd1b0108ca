package masterapi

import (
	"strings"
	"testing"
)

func TestTLSAndAccessValidation(t *testing.T) {
	withTLS := TLS{CertFile: "c.pem", KeyFile: "k.pem"}
	withCA := TLS{CertFile: "c.pem", KeyFile: "k.pem", ClientCAFile: "ca.pem"}
	tests := map[string]struct {
		tls    TLS
		access Access
		errHas string
	}{
		"no TLS":                {},
		"TLS":                   {tls: withTLS},
		"cert without key":      {tls: TLS{CertFile: "c.pem"}, errHas: "certFile and keyFile go together"},
		"CA without TLS":        {tls: TLS{ClientCAFile: "ca.pem"}, errHas: "need TLS"},
		"plaintext without TLS": {tls: TLS{PlaintextReplicationListen: "127.0.0.1:9094"}, errHas: "need TLS"},
		"bad client auth":       {tls: TLS{CertFile: "c", KeyFile: "k", ClientCAFile: "ca", ClientAuth: "maybe"}, errHas: `tls.clientAuth "maybe"`},
		"client auth no CA":     {tls: TLS{CertFile: "c", KeyFile: "k", ClientAuth: "require"}, errHas: "needs tls.clientCAFile"},
		"plaintext on the TLS port": {
			tls: TLS{CertFile: "c", KeyFile: "k", PlaintextReplicationListen: DefaultReplicationListen}, errHas: "must differ",
		},
		"rule for an identity without CA": {
			tls: withTLS, access: Access{Rules: []AccessRule{{Identity: "worker-1", Streams: []string{"*"}}}}, errHas: "can never match",
		},
		"unauthenticated rule without CA": {access: Access{Rules: []AccessRule{{Identity: "unauthenticated", Streams: []string{"events"}}}}},
		"rule without identity":           {tls: withCA, access: Access{Rules: []AccessRule{{Streams: []string{"*"}}}}, errHas: "identity is required"},
		"unknown command": {
			tls: withCA, access: Access{Rules: []AccessRule{{Identity: "*", Commands: []string{"NAME"}}}}, errHas: `command "NAME"`,
		},
		"unknown stream": {
			tls: withCA, access: Access{Rules: []AccessRule{{Identity: "*", Streams: []string{"nope"}}}}, errHas: `stream "nope": no such stream`,
		},
		"good rules": {
			tls: withCA, access: Access{Rules: []AccessRule{{Identity: "*", Commands: []string{"USER_SYNC", "USER_IP"}, Streams: []string{"events", "caches"}}}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := Config{ServerName: "hs", TLS: tc.tls, Access: tc.access}.WithDefaults()
			err := c.Validate()
			if tc.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("error %v, want one containing %q", err, tc.errHas)
			}
		})
	}
}

func TestClientAuthRequired(t *testing.T) {
	for name, tc := range map[string]struct {
		tls  TLS
		want bool
	}{
		"no CA":                    {tls: TLS{CertFile: "c"}},
		"CA, default":              {tls: TLS{CertFile: "c", ClientCAFile: "ca"}, want: true},
		"CA, optional":             {tls: TLS{CertFile: "c", ClientCAFile: "ca", ClientAuth: ClientAuthOptional}},
		"CA, require":              {tls: TLS{CertFile: "c", ClientCAFile: "ca", ClientAuth: ClientAuthRequire}, want: true},
		"plaintext by default off": {tls: TLS{CertFile: "c"}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := tc.tls.ClientAuthRequired(); got != tc.want {
				t.Fatalf("ClientAuthRequired %v, want %v", got, tc.want)
			}
			if c := (Config{TLS: tc.tls}).WithDefaults(); c.TLS.PlaintextReplicationListen != "" {
				t.Fatal("defaults turned the plaintext listener on")
			}
		})
	}
}
