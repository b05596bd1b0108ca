// Package cluster starts a real, local Kubernetes control plane from binaries
// built from the Go module proxy: etcd, kube-apiserver and
// kube-controller-manager, each a process on 127.0.0.1 with free ports, with
// certificates generated in process. It writes an admin kubeconfig and tears
// everything down on Stop.
//
// There is no scheduler and no kubelet: the test kubelet (test/kubelet) binds
// and runs pods. The EndpointSlice controllers are deliberately not started:
// the API server refuses loopback addresses in EndpointSlices, and every pod
// here has a loopback IP, so the controllers would only retry failing writes.
// The test kubelet resolves Services from their selectors itself.
package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tcprepl/tcprepl/test/internal/proc"
)

const (
	// ServiceClusterIPRange is the Service CIDR. ClusterIPs from it are
	// written to Services but routed by nothing; the test kubelet proxies
	// Services on loopback addresses instead.
	ServiceClusterIPRange = "10.96.0.0/16"
	serviceClusterFirstIP = "10.96.0.1"
)

// DefaultControllers are the kube-controller-manager controllers a cluster
// runs: the workload controllers, garbage collection, namespaces, service
// accounts and their root CA ConfigMap, PVC protection (so that PVCs of
// deleted StatefulSets can go away) and ClusterRole aggregation.
var DefaultControllers = []string{
	"deployment-controller", "replicaset-controller", "statefulset-controller",
	"garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
	"root-ca-certificate-publisher-controller", "persistentvolumeclaim-protection-controller",
	"clusterrole-aggregation-controller",
}

// Options configure Start.
type Options struct {
	// Binaries are the programs to run; see BinariesFromEnv.
	Binaries Binaries
	// Dir is where the cluster's directory is created; empty means the
	// system temp dir. The directory holds certificates, etcd data, the
	// kubeconfigs and one log file per component.
	Dir string
	// KeepDir leaves the directory in place on Stop, for debugging.
	KeepDir bool
	// Controllers overrides DefaultControllers.
	Controllers []string
	// StartTimeout bounds how long each component may take to become
	// healthy; default 90s (kube-apiserver's first start installs all its
	// built-in objects and takes 5-20s on a busy 2-core machine).
	StartTimeout time.Duration
}

// Cluster is a running control plane.
type Cluster struct {
	// Dir is the cluster's directory.
	Dir string
	// Server is the API server URL (https://127.0.0.1:<port>).
	Server string
	// Kubeconfig is the path of an admin (system:masters) kubeconfig.
	Kubeconfig string
	// KubeletKubeconfig is the path of the test kubelet's kubeconfig.
	KubeletKubeconfig string
	// CACert is the PEM CA that signed the serving and client certificates.
	CACert []byte
	// RESTConfig is an admin client configuration.
	RESTConfig *rest.Config

	keepDir bool
	mu      sync.Mutex
	procs   []*proc.Process
	logs    map[string]string
	stopped bool
}

// Start runs etcd, kube-apiserver and kube-controller-manager and waits for
// each to be healthy. On error everything already started is stopped.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	if len(opts.Controllers) == 0 {
		opts.Controllers = DefaultControllers
	}
	for name, p := range map[string]string{"etcd": opts.Binaries.Etcd, "kube-apiserver": opts.Binaries.APIServer, "kube-controller-manager": opts.Binaries.ControllerManager} {
		if !isExecutable(p) {
			return nil, fmt.Errorf("%w: %s at %q (run `make tools` or set the path in Options.Binaries)", ErrBinaryNotFound, name, p)
		}
	}
	dir, err := os.MkdirTemp(opts.Dir, "tcprepl-cluster-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &Cluster{Dir: dir, keepDir: opts.KeepDir, logs: map[string]string{}}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w%s", err, c.logTails(30))
			_ = c.Stop()
		}
	}()

	keys, err := generatePKI(dir)
	if err != nil {
		return nil, err
	}
	c.CACert = keys.caCertPEM
	// etcd
	var etcdURL string
	if _, err := c.startOnFreePorts(ctx, "etcd", opts.Binaries.Etcd, 2, func(ports []int) []string {
		etcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		return []string{
			"--name=test", "--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=test=" + peerURL,
			// A test cluster does not need fsync durability; unsafe-no-fsync
			// keeps etcd off the shared disk's critical path.
			"--unsafe-no-fsync=true", "--quota-backend-bytes=1073741824",
			"--log-level=warn",
		}
	}, func([]int) error {
		if err := waitHTTP(ctx, opts.StartTimeout, etcdURL+"/health", nil, c.exited("etcd")); err != nil {
			return fmt.Errorf("etcd did not become healthy: %w", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	// kube-apiserver
	tlsCfg, err := tlsConfig(keys.caCertPEM, keys.adminCertPEM, keys.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	if _, err := c.startOnFreePorts(ctx, "kube-apiserver", opts.Binaries.APIServer, 1, func(ports []int) []string {
		c.Server = "https://127.0.0.1:" + strconv.Itoa(ports[0])
		return []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
			// The "kubernetes" Service's endpoints would be a loopback address,
			// which the API server refuses in Endpoints.
			"--endpoint-reconciler-type=none",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
			"--tls-cert-file=" + keys.servingCert, "--tls-private-key-file=" + keys.servingKey,
			"--client-ca-file=" + keys.caCert,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + keys.saPub,
			"--service-account-signing-key-file=" + keys.saKey,
			"--service-cluster-ip-range=" + ServiceClusterIPRange,
			// RBAC, so that the chart's least-privilege roles are really
			// enforced when the operator runs with its ServiceAccount's token.
			"--authorization-mode=RBAC",
			"--allow-privileged=true",
			"--enable-priority-and-fairness=false",
			"--v=1",
		}
	}, func([]int) error {
		if err := waitHTTP(ctx, opts.StartTimeout, c.Server+"/readyz", tlsCfg, c.exited("kube-apiserver")); err != nil {
			return fmt.Errorf("kube-apiserver did not become ready: %w", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	admin := &rest.Config{
		Host: c.Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: keys.caCertPEM, CertData: keys.adminCertPEM, KeyData: keys.adminKeyPEM,
		},
		QPS: 50, Burst: 100,
	}
	c.RESTConfig = admin

	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.Server, keys.caCertPEM, "admin", keys.adminCertPEM, keys.adminKeyPEM); err != nil {
		return nil, err
	}
	c.KubeletKubeconfig = filepath.Join(dir, "kubelet.kubeconfig")
	if err := writeKubeconfig(c.KubeletKubeconfig, c.Server, keys.caCertPEM, "kubelet", keys.kubeletCertPM, keys.kubeletKeyPEM); err != nil {
		return nil, err
	}
	kcmKubeconfig := filepath.Join(dir, "kube-controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmKubeconfig, c.Server, keys.caCertPEM, "kube-controller-manager", keys.kcmCertPEM, keys.kcmKeyPEM); err != nil {
		return nil, err
	}

	// kube-controller-manager
	kcmTLS := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the controller manager's self-signed healthz certificate; loopback only
	if _, err := c.startOnFreePorts(ctx, "kube-controller-manager", opts.Binaries.ControllerManager, 1, func(ports []int) []string {
		return []string{
			"--kubeconfig=" + kcmKubeconfig,
			"--authentication-kubeconfig=" + kcmKubeconfig,
			"--authorization-kubeconfig=" + kcmKubeconfig,
			"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[0]),
			"--cert-dir=" + filepath.Join(dir, "kcm-certs"),
			"--controllers=" + strings.Join(opts.Controllers, ","),
			"--root-ca-file=" + keys.caCert,
			"--service-account-private-key-file=" + keys.saKey,
			"--use-service-account-credentials=false",
			"--leader-elect=false",
			"--service-cluster-ip-range=" + ServiceClusterIPRange,
			// Fast garbage collection and short sync periods keep the tests
			// quick; these are test clusters with a handful of objects.
			"--concurrent-gc-syncs=5",
			"--min-resync-period=30s",
			"--v=1",
		}
	}, func(ports []int) error {
		if err := waitHTTP(ctx, opts.StartTimeout, "https://127.0.0.1:"+strconv.Itoa(ports[0])+"/healthz", kcmTLS, c.exited("kube-controller-manager")); err != nil {
			return fmt.Errorf("kube-controller-manager did not become healthy: %w", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// start launches one component with its output in <dir>/<name>.log.
func (c *Cluster) start(name, bin string, args ...string) error {
	logPath := filepath.Join(c.Dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create log for %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.Dir
	p, err := proc.Start(name, cmd)
	// The child holds its own descriptor; ours is not needed any more.
	_ = f.Close()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.logs[name] = logPath
	c.mu.Unlock()
	return nil
}

// exited returns a channel closed when the named component exits, so that
// waiting for health fails fast when the process crashed at start.
func (c *Cluster) exited(name string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.Name == name {
			return p.Done()
		}
	}
	return nil
}

// LogPath is the log file of a component (etcd, kube-apiserver,
// kube-controller-manager).
func (c *Cluster) LogPath(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs[name]
}

// logTails renders the last n lines of every component's log, for error
// messages and failed tests.
func (c *Cluster) logTails(n int) string {
	c.mu.Lock()
	names := make([]string, 0, len(c.procs))
	for _, p := range c.procs {
		names = append(names, p.Name)
	}
	c.mu.Unlock()
	var b strings.Builder
	for _, name := range names {
		lines, err := TailFile(c.LogPath(name), n)
		if err != nil {
			fmt.Fprintf(&b, "\n--- %s log unreadable: %v", name, err)
			continue
		}
		fmt.Fprintf(&b, "\n--- last %d lines of %s log:\n%s", len(lines), name, strings.Join(lines, "\n"))
	}
	return b.String()
}

// LogTails returns the last n lines of each component's log.
func (c *Cluster) LogTails(n int) string { return c.logTails(n) }

// Stop stops the components in reverse order (controller manager, API
// server, etcd) and removes the cluster directory unless KeepDir was set.
// It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	procs := c.procs
	c.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if !c.keepDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove cluster directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// TailFile returns the last n lines of a file.
func TailFile(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Logs can be large; only the end matters.
	if st, err := f.Stat(); err == nil && st.Size() > 256<<10 {
		if _, err := f.Seek(-256<<10, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return lines, sc.Err()
}

func tlsConfig(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("parse generated CA certificate")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load generated admin certificate: %w", err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// waitHTTP polls url until it answers 200, the timeout passes, ctx ends, or
// exited is closed (the process died).
func waitHTTP(ctx context.Context, timeout time.Duration, url string, tlsCfg *tls.Config, exited <-chan struct{}) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer client.CloseIdleConnections()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("build request for %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answered %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-exited:
			return fmt.Errorf("the process exited (last: %w)", last)
		case <-deadline.C:
			return fmt.Errorf("timed out after %s (last: %w)", timeout, last)
		case <-tick.C:
		}
	}
}

func writeKubeconfig(path, server string, caPEM []byte, user string, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["tcprepl-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["tcprepl-test"] = &clientcmdapi.Context{Cluster: "tcprepl-test", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "tcprepl-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// WriteTokenKubeconfig writes a kubeconfig that authenticates with a bearer
// token (e.g. a ServiceAccount token from the TokenRequest API), so that a
// process can run with exactly that account's RBAC permissions.
func (c *Cluster) WriteTokenKubeconfig(path, namespace, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["tcprepl-test"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.CACert}
	cfg.AuthInfos["token"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["tcprepl-test"] = &clientcmdapi.Context{Cluster: "tcprepl-test", AuthInfo: "token", Namespace: namespace}
	cfg.CurrentContext = "tcprepl-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}
