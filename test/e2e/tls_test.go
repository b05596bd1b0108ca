package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/testenv/testcerts"
	"github.com/tcprepl/tcprepl/test/harness"
)

// The names of the TLS test's objects. The certificate is issued for
// tlsServerName, which spec.tls.serverName tells the workers and the probe
// to check: the test kubelet rewrites Service DNS names in a pod's
// environment to its proxy's IP address, which a certificate cannot name
// in advance.
const (
	tlsMaster     = "tls-master"
	tlsWorker     = "tls-worker"
	tlsServerName = "tls-master.tcprepl.test"
)

// tlsSecretManifest is a kubernetes.io/tls Secret; ca may be empty.
func tlsSecretManifest(name string, p testcerts.Pair, ca []byte) string {
	data := map[string]string{"tls.crt": string(p.Cert), "tls.key": string(p.Key)}
	if len(ca) > 0 {
		data["ca.crt"] = string(ca)
	}
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
		"metadata": map[string]any{"name": name}, "stringData": data,
	})
	return string(b)
}

// A master with spec.tls and clientAuth Require, certificates made by the
// test: the operator's probe connects with its certificate (the master is
// Ready), a worker with its certificate connects and receives every row
// published (over HTTPS), and a client without a certificate, or without
// TLS, gets nothing: no SERVER line.
func TestTLSMasterRequiresClientCertificates(t *testing.T) {
	env, ctx := setup(t)
	if err := env.InstallChart(ctx, release, operatorNS); err != nil {
		t.Fatal(err)
	}
	if err := env.StartOperator(ctx, operatorNS, release,
		"--status-interval=1s", "--probe-heartbeat-interval=1s", "--probe-poll-interval=250ms"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Kubectl(ctx, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "default ServiceAccount in "+ns, func() error {
		_, err := env.Kubectl(ctx, "get", "serviceaccount", "default", "--namespace", ns)
		return err
	})

	ca, err := testcerts.NewCA("tcprepl e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server(tlsServerName)
	if err != nil {
		t.Fatal(err)
	}
	probeCert, err := ca.Client("tcprepl-probe")
	if err != nil {
		t.Fatal(err)
	}
	workerCert, err := ca.Client(tlsWorker)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, content := range map[string]string{
		"master-cert": tlsSecretManifest("tls-master-cert", srv, ca.PEM),
		"probe-cert":  tlsSecretManifest("tls-probe-cert", probeCert, nil),
		"worker-cert": tlsSecretManifest("tls-worker-cert", workerCert, nil),
	} {
		if err := env.Apply(ctx, ns, write(name+".json", content)); err != nil {
			t.Fatal(err)
		}
	}
	master, ports, err := env.ApplyMaster(ctx, ns, write("master.yaml", fmt.Sprintf(`apiVersion: replication.tcprepl.io/v1alpha1
kind: ReplicationMaster
metadata:
  name: %s
spec:
  serverName: tls.example.org
  storage:
    ephemeral: true
  streams:
    custom:
    - name: %s
  tls:
    secretName: tls-master-cert
    probeSecretName: tls-probe-cert
    serverName: %s
    clientAuth: Require
    # Only the worker may read the stream; the operator adds the probe's
    # rule itself.
    accessRules:
    - identity: %s
      streams: [%s]
`, tlsMaster, stream, tlsServerName, tlsWorker, stream)))
	if err != nil {
		t.Fatal(err)
	}
	ip, err := env.Kubelet.ServiceIP(ns, master)
	if err != nil {
		t.Fatal(err)
	}
	// The operator runs outside the pods' network and reads the master's
	// HTTP API through the Service's proxy, which now speaks HTTPS.
	httpURL := "https://" + net.JoinHostPort(ip, strconv.Itoa(ports.HTTP))
	if _, err := env.Kubectl(ctx, "annotate", "replicationmaster", master, "--namespace", ns, "--overwrite",
		harness.AnnotationProbeHTTPURL+"="+httpURL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "master Ready and TLSReady (the probe connected with its certificate)", func() error {
		var st masterStatus
		if err := getStatus(ctx, env, "rmaster", master, &st); err != nil {
			return err
		}
		return errors.Join(condTrue(st.Conditions, "TLSReady"), condTrue(st.Conditions, "Ready"))
	})

	if err := env.Apply(ctx, ns, write("worker.yaml", fmt.Sprintf(`apiVersion: replication.tcprepl.io/v1alpha1
kind: ReplicationWorker
metadata:
  name: %s
spec:
  masterRef:
    name: %s
  replicas: 1
  streams: [%s]
  state:
    ephemeral: true
  tls:
    clientSecretName: tls-worker-cert
`, tlsWorker, master, stream))); err != nil {
		t.Fatal(err)
	}
	var pod string
	eventually(t, 3*time.Minute, "worker pod connected over TLS", func() error {
		var st workerStatus
		if err := getStatus(ctx, env, "rworker", tlsWorker, &st); err != nil {
			return err
		}
		if len(st.Pods) != 1 || !st.Pods[0].Connected {
			return fmt.Errorf("pods %+v, want one connected", st.Pods)
		}
		pod = st.Pods[0].Name
		return nil
	})

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: tlsServerName}
	token := publishTokenOf(ctx, t, env, master)
	var published []batch
	for i := range 5 {
		rows := []any{[]any{"tls", i, "a"}, []any{"tls", i, "b"}}
		tok, err := publishTLS(ctx, httpURL, clientTLS, token, rows)
		if err != nil {
			t.Fatalf("publish batch %d over HTTPS: %v", i, err)
		}
		published = append(published, batch{token: tok, rows: rows})
	}
	eventually(t, 2*time.Minute, "the worker's sink holds every row", func() error {
		got, err := sinkLines(env, pod, "worker", stream)
		if err != nil {
			return err
		}
		if len(got) < 2*len(published) {
			return fmt.Errorf("%d rows in the sink, want %d", len(got), 2*len(published))
		}
		return nil
	})
	checkSinks(t, env, []string{pod}, published, "over TLS")

	// Straight to the replication port: only a client with a certificate
	// of the CA gets the SERVER line.
	replAddr := net.JoinHostPort(ip, strconv.Itoa(ports.Replication))
	withCert := clientTLS.Clone()
	pair, err := tls.X509KeyPair(workerCert.Cert, workerCert.Key)
	if err != nil {
		t.Fatal(err)
	}
	withCert.Certificates = []tls.Certificate{pair}
	if line, err := firstLine(ctx, replAddr, withCert); err != nil || !strings.HasPrefix(line, "SERVER tls.example.org") {
		t.Fatalf("a client with a certificate got %q, %v; want the SERVER line", line, err)
	}
	// A certificate of the CA for an identity no rule grants the stream:
	// connected, but its REPLICATE is refused.
	outsider, err := ca.Client("outsider")
	if err != nil {
		t.Fatal(err)
	}
	outsiderPair, err := tls.X509KeyPair(outsider.Cert, outsider.Key)
	if err != nil {
		t.Fatal(err)
	}
	withOutsiderCert := clientTLS.Clone()
	withOutsiderCert.Certificates = []tls.Certificate{outsiderPair}
	if line, err := replicateReply(ctx, replAddr, withOutsiderCert, "REPLICATE "+stream+" 0"); err != nil || !strings.Contains(line, "refused") || !strings.Contains(line, "outsider") {
		t.Fatalf("REPLICATE from an identity no rule allows got %q, %v; want an ERROR naming it", line, err)
	} else {
		t.Logf("outsider: %s", line)
	}

	other, err := testcerts.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Client(tlsWorker)
	if err != nil {
		t.Fatal(err)
	}
	strangerPair, err := tls.X509KeyPair(stranger.Cert, stranger.Key)
	if err != nil {
		t.Fatal(err)
	}
	withForeignCert := clientTLS.Clone()
	// Sent whatever CAs the server names (Go's client would otherwise
	// withhold a certificate the server's CA list does not cover).
	withForeignCert.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &strangerPair, nil }
	for name, cfg := range map[string]*tls.Config{
		"TLS without a client certificate":      clientTLS,
		"TLS with a certificate of another CA":  withForeignCert,
		"plaintext on the TLS replication port": nil,
	} {
		line, err := firstLine(ctx, replAddr, cfg)
		if strings.HasPrefix(line, "SERVER") {
			t.Errorf("%s: got %q; want no SERVER line", name, line)
		}
		t.Logf("%s: refused (%q, %v)", name, line, err)
	}
}

// publishTokenOf reads the master's publish token from its Secret.
func publishTokenOf(ctx context.Context, t *testing.T, env *harness.Env, master string) string {
	t.Helper()
	out, err := env.Kubectl(ctx, "get", "secret", master+"-publish-token", "--namespace", ns, "-o", "go-template={{.data.token | base64decode}}")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// publishTLS publishes one batch to the master's HTTPS API.
func publishTLS(ctx context.Context, baseURL string, cfg *tls.Config, token string, rows []any) (int64, error) {
	body, err := json.Marshal(map[string]any{"rows": rows})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/streams/"+stream+"/rows", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(rb)))
	}
	var out struct {
		Token int64 `json:"token"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return 0, fmt.Errorf("%w: %s", err, rb)
	}
	return out.Token, nil
}

// firstLine connects (over TLS when cfg is set) and returns the first line
// the server sends within 5 seconds.
func firstLine(ctx context.Context, addr string, cfg *tls.Config) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var (
		c   net.Conn
		err error
	)
	if cfg != nil {
		c, err = (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// replicateReply connects over TLS, sends cmd after the SERVER line, and
// returns the first ERROR or RDATA/POSITION line the server answers with
// within 5 seconds.
func replicateReply(ctx context.Context, addr string, cfg *tls.Config, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if _, err := io.WriteString(c, "NAME e2e-outsider\n"+cmd+"\n"); err != nil {
		return "", err
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return strings.TrimSpace(line), err
		}
		line = strings.TrimSpace(line)
		for _, p := range []string{"ERROR", "RDATA", "POSITION"} {
			if strings.HasPrefix(line, p) {
				return line, nil
			}
		}
	}
}
