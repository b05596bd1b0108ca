// Package harness assembles what the end-to-end test and `make demo` share:
// a local control plane (test/cluster), the test kubelet (test/kubelet), the
// chart installed with helm, the operator running as a local process with
// exactly its ServiceAccount's permissions, and helpers to apply topologies
// and publish rows, all with the real kubectl and helm binaries.
package harness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/internal/proc"
	"github.com/tcprepl/tcprepl/test/kubelet"
)

// HelmVersion is the helm the Makefile builds into bin/helm-v<HelmVersion>.
const HelmVersion = "3.22.0"

// Annotations the operator reads to reach a master from outside the
// cluster network (specs.AnnotationProbeAddress/HTTPURL).
const (
	AnnotationProbeAddress = "tcprepl.io/probe-address"
	AnnotationProbeHTTPURL = "tcprepl.io/probe-http-url"
)

// Tools are the programs the harness runs.
type Tools struct {
	Cluster cluster.Binaries
	Helm    string
	Tcprepl string
	// ImageLayout is the OCI layout `make image` writes (bin/image/oci):
	// every pod runs from it.
	ImageLayout string
	// Image is the reference of the image in ImageLayout, which the chart
	// is installed with (image.repository, image.tag).
	Image string
	// ImageDigest is its manifest digest.
	ImageDigest string
}

// FindTools finds every program: the cluster's (see
// cluster.BinariesFromEnv), helm ($TCPREPL_HELM, bin/helm-v<HelmVersion>)
// and tcprepl ($TCPREPL_BINARY, bin/tcprepl). The error wraps
// cluster.ErrBinaryNotFound when one is missing.
func FindTools(repoRoot string) (Tools, error) {
	var t Tools
	var errs []error
	bins, err := cluster.BinariesFromEnv(repoRoot)
	t.Cluster = bins
	errs = append(errs, err)
	if bins.Kubectl == "" {
		errs = append(errs, fmt.Errorf("%w: kubectl ($TCPREPL_KUBECTL, $KUBEBUILDER_ASSETS or bin/k8s/%s; run `make tools`)", cluster.ErrBinaryNotFound, cluster.KubeVersion))
	}
	t.Helm, err = cluster.LookBinary("TCPREPL_HELM", filepath.Join(repoRoot, "bin", "helm-v"+HelmVersion))
	errs = append(errs, err)
	t.Tcprepl, err = cluster.LookBinary("TCPREPL_BINARY", filepath.Join(repoRoot, "bin", "tcprepl"))
	errs = append(errs, err)
	t.ImageLayout, t.Image, t.ImageDigest, err = findImage(repoRoot)
	errs = append(errs, err)
	return t, errors.Join(errs...)
}

// findImage finds the OCI layout of `make image` ($TCPREPL_IMAGE_LAYOUT,
// else bin/image/oci) and the one image in it.
func findImage(repoRoot string) (layout, ref, digest string, err error) {
	layout = os.Getenv("TCPREPL_IMAGE_LAYOUT")
	if layout == "" {
		layout = filepath.Join(repoRoot, "bin", "image", "oci")
	}
	if _, err := os.Stat(filepath.Join(layout, "index.json")); err != nil {
		return "", "", "", fmt.Errorf("%w: the image's OCI layout at %s ($TCPREPL_IMAGE_LAYOUT; run `make image`)", cluster.ErrBinaryNotFound, layout)
	}
	imgs, err := kubelet.LayoutImages(layout)
	if err != nil {
		return "", "", "", err
	}
	if len(imgs) != 1 {
		return "", "", "", fmt.Errorf("image layout %s holds %d named images %v; want exactly one (`make image` writes one)", layout, len(imgs), imgs)
	}
	return layout, imgs[0].Ref, imgs[0].Digest, nil
}

// imageValues are the chart values that select the built image, as a user
// sets them: --set image.repository=... --set image.tag=...
func imageValues(ref string) ([]string, error) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || i < strings.LastIndex(ref, "/") || strings.Contains(ref, "@") {
		return nil, fmt.Errorf("image %q has no tag; the chart needs repository and tag", ref)
	}
	return []string{"image.repository=" + ref[:i], "image.tag=" + ref[i+1:]}, nil
}

// Options configure Start.
type Options struct {
	// RepoRoot is the repository (for the chart and the samples).
	RepoRoot string
	Tools    Tools
	// Logf receives progress and the kubelet's log lines.
	Logf func(format string, args ...any)
	// KeepDir keeps the cluster's and kubelet's directories.
	KeepDir bool
	// MaxProbePeriod caps the pods' probe periods (kubelet.Options; default
	// 1s, far shorter than the defaults of a real kubelet).
	MaxProbePeriod time.Duration
}

// Env is a running cluster with a kubelet.
type Env struct {
	RepoRoot string
	Tools    Tools
	Cluster  *cluster.Cluster
	Kubelet  *kubelet.Kubelet
	Client   kubernetes.Interface
	// Dir holds the kubelet's pods and the operator's files.
	Dir  string
	logf func(string, ...any)

	stopKubelet context.CancelFunc
	kubeletDone chan error
	operator    *proc.Process
	operatorLog string
	// OperatorMetricsURL is the running operator's /metrics.
	OperatorMetricsURL string
	// OperatorPods is how many operator pods UseChartOperator found.
	OperatorPods int
	// chartArgs are the operator arguments of the installed chart.
	chartArgs []string
	keepDir   bool
}

// Start starts the control plane and the kubelet. Stop undoes it; on error
// everything started is stopped already.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp("", "tcprepl-e2e-")
	if err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	e := &Env{RepoRoot: opts.RepoRoot, Tools: opts.Tools, Dir: dir, logf: logf, keepDir: opts.KeepDir}
	defer func() {
		if err != nil {
			_ = e.Stop()
		}
	}()
	start := time.Now()
	e.Cluster, err = cluster.Start(ctx, cluster.Options{Binaries: opts.Tools.Cluster, KeepDir: opts.KeepDir})
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	logf("control plane up in %s: %s (kubeconfig %s)", time.Since(start).Round(time.Millisecond), e.Cluster.Server, e.Cluster.Kubeconfig)
	e.Client, err = kubernetes.NewForConfig(e.Cluster.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("build client: %w", err)
	}
	// Every pod runs from the image `make image` built, as on a node: the
	// image's binary, user and files, not bin/tcprepl.
	e.Kubelet, err = kubelet.New(kubelet.Options{
		RESTConfig:     e.Cluster.RESTConfig,
		Dir:            filepath.Join(dir, "kubelet"),
		ImageLayouts:   []string{opts.Tools.ImageLayout},
		MaxProbePeriod: opts.MaxProbePeriod,
		Logf:           func(f string, a ...any) { logf("kubelet: "+f, a...) },
	})
	if err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(context.Background())
	e.stopKubelet = cancel
	e.kubeletDone = make(chan error, 1)
	go func() { e.kubeletDone <- e.Kubelet.Run(kctx) }()
	logf("test kubelet: pods on 127.%d.0.0/16 from image %s (%s), work dir %s", e.Kubelet.Subnet(), opts.Tools.Image, opts.Tools.ImageLayout, e.Kubelet.Dir())
	return e, nil
}

// Stop stops the operator, the kubelet (and so every pod process) and the
// control plane, and removes the work dir unless KeepDir was set.
func (e *Env) Stop() error {
	var errs []error
	if err := e.StopOperator(); err != nil {
		errs = append(errs, err)
	}
	if e.stopKubelet != nil {
		e.stopKubelet()
		select {
		case err := <-e.kubeletDone:
			if err != nil {
				errs = append(errs, fmt.Errorf("test kubelet: %w", err))
			}
		case <-time.After(60 * time.Second):
			errs = append(errs, errors.New("test kubelet did not stop within 60s"))
		}
		e.stopKubelet = nil
	}
	if e.Cluster != nil {
		if err := e.Cluster.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if !e.keepDir {
		if err := os.RemoveAll(e.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run runs a program against the cluster (KUBECONFIG set) with a timeout,
// returning its stdout; the error carries stderr.
func (e *Env) Run(ctx context.Context, timeout time.Duration, bin string, args ...string) (string, error) {
	return e.RunStdin(ctx, timeout, nil, bin, args...)
}

// RunStdin is Run with stdin.
func (e *Env) RunStdin(ctx context.Context, timeout time.Duration, stdin io.Reader, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Cluster.Kubeconfig, "HELM_CACHE_HOME="+filepath.Join(e.Dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(e.Dir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(e.Dir, "helm", "data"))
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// Kubectl runs kubectl with a 60s timeout.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	return e.Run(ctx, 60*time.Second, e.Tools.Cluster.Kubectl, args...)
}

// Helm runs helm with a 2 minute timeout.
func (e *Env) Helm(ctx context.Context, args ...string) (string, error) {
	return e.Run(ctx, 2*time.Minute, e.Tools.Helm, args...)
}

// ChartDir is the chart in the repository.
func (e *Env) ChartDir() string { return filepath.Join(e.RepoRoot, "charts", "tcprepl") }

// InstallChart installs the chart as release name into namespace ns. By
// default the operator Deployment is scaled to zero: CRDs, ServiceAccount,
// RBAC and the metrics Service are installed as for a user, and the
// operator runs as a local process with the ServiceAccount's token and the
// Deployment's arguments (StartOperator), where a test can kill and inspect
// it. With set "operator.replicas=1" the chart's own pod runs through the
// test kubelet instead (UseChartOperator).
func (e *Env) InstallChart(ctx context.Context, release, ns string, set ...string) error {
	// No --wait: with operator.replicas set, the operator pod's readiness is
	// UseChartOperator's to wait for.
	args := []string{"upgrade", "--install", release, e.ChartDir(), "--namespace", ns, "--create-namespace",
		"--set", "operator.replicas=0"}
	// The built image, as the README tells a user to install it; the
	// operator passes it on to the masters and workers it creates.
	imageSet, err := imageValues(e.Tools.Image)
	if err != nil {
		return err
	}
	for _, s := range append(imageSet, set...) {
		args = append(args, "--set", s)
	}
	if _, err := e.Helm(ctx, args...); err != nil {
		return err
	}
	// The operator process gets the arguments of the chart's own
	// Deployment, so the chart's flags (scope, leader election, labels)
	// are what is tested.
	manifest, err := e.Helm(ctx, "get", "manifest", release, "--namespace", ns)
	if err != nil {
		return err
	}
	e.chartArgs, err = deploymentArgs(manifest)
	return err
}

// deploymentArgs returns the first container's args of the Deployment in a
// rendered manifest.
func deploymentArgs(manifest string) ([]string, error) {
	for _, doc := range strings.Split(manifest, "\n---") {
		var obj struct {
			Kind string `json:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `json:"args"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("parse the chart's manifest: %w", err)
		}
		if obj.Kind == "Deployment" && len(obj.Spec.Template.Spec.Containers) > 0 {
			return obj.Spec.Template.Spec.Containers[0].Args, nil
		}
	}
	return nil, errors.New("the chart's manifest has no Deployment")
}

// StartOperator runs `tcprepl operator` as a local process authenticated as
// ServiceAccount ns/sa (a token from the TokenRequest API), so that the
// chart's RBAC is what it runs with, and with the arguments of the chart's
// Deployment when InstallChart ran. extraArgs are appended to the flags.
func (e *Env) StartOperator(ctx context.Context, ns, sa string, extraArgs ...string) error {
	if e.operator != nil {
		return errors.New("operator already running; StopOperator first")
	}
	token, err := e.Kubectl(ctx, "create", "token", sa, "--namespace", ns, "--duration", "2h")
	if err != nil {
		return fmt.Errorf("get a token for ServiceAccount %s/%s: %w", ns, sa, err)
	}
	kc := filepath.Join(e.Dir, "operator.kubeconfig")
	if err := e.Cluster.WriteTokenKubeconfig(kc, ns, strings.TrimSpace(token)); err != nil {
		return err
	}
	// The chart's arguments, with the listen addresses moved to free
	// loopback ports (the process shares the host's network).
	base := []string{"operator"}
	if len(e.chartArgs) > 0 {
		base = nil
		for _, a := range e.chartArgs {
			if strings.HasPrefix(a, "--health-probe-bind-address=") || strings.HasPrefix(a, "--metrics-bind-address=") {
				continue
			}
			base = append(base, a)
		}
	} else {
		base = append(base, "--leader-elect", "--leader-election-namespace="+ns)
	}
	base = append(base, "--kubeconfig="+kc, "--operator-namespace="+ns)
	e.operatorLog = filepath.Join(e.Dir, "operator.log")
	// The operator must be told its ports; another process may take one
	// between freePorts and the operator's bind, and then the operator
	// exits saying so and is started again on new ports.
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		health, metrics := ports[0], ports[1]
		args := append(slices.Clone(base),
			"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(health),
			"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(metrics),
		)
		args = append(args, extraArgs...)
		logStart, p, err := e.startOperatorProcess(args, ns)
		if err != nil {
			return err
		}
		e.logf("operator: pid %d as ServiceAccount %s/%s, log %s", p.Pid(), ns, sa, e.operatorLog)
		err = waitOK(ctx, 60*time.Second, "http://127.0.0.1:"+strconv.Itoa(health)+"/readyz", p.Done())
		if err == nil {
			e.operator = p
			e.OperatorMetricsURL = "http://127.0.0.1:" + strconv.Itoa(metrics) + "/metrics"
			return nil
		}
		if attempt < bindAttempts && exitedOnBusyPort(p, e.operatorLog, logStart) {
			e.logf("operator: a port was taken before it could bind (attempt %d); starting it again on new ports", attempt)
			continue
		}
		e.operator = p // StopOperator and the log tail still see it
		return fmt.Errorf("operator did not become ready: %w\n%s", err, e.OperatorLogTail(30))
	}
}

// bindAttempts bounds how often a process given a port that another
// process took first is started again.
const bindAttempts = 5

// startOperatorProcess starts the operator with its output appended to
// the operator log, returning the log's size before it started.
func (e *Env) startOperatorProcess(args []string, ns string) (int64, *proc.Process, error) {
	f, err := os.OpenFile(e.operatorLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, fmt.Errorf("open operator log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, nil, fmt.Errorf("stat operator log: %w", err)
	}
	cmd := exec.Command(e.Tools.Tcprepl, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+ns)
	p, err := proc.Start("operator", cmd)
	if err != nil {
		return 0, nil, err
	}
	return st.Size(), p, nil
}

// exitedOnBusyPort reports whether p has exited and what it logged after
// offset says a port was already in use.
func exitedOnBusyPort(p *proc.Process, logPath string, offset int64) bool {
	select {
	case <-p.Done():
	default:
		return false
	}
	b, err := os.ReadFile(logPath)
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return bytes.Contains(b[offset:], []byte("address already in use"))
}

// UseChartOperator waits for the chart's own operator Deployment (installed
// with operator.replicas >= 1) to be rolled out by the test kubelet, and
// points OperatorMetricsURL and OperatorLogTail at its pod. The pod reaches
// the API server as the chart's ServiceAccount (see test/kubelet).
func (e *Env) UseChartOperator(ctx context.Context, release, ns string) error {
	deploy := release
	if !strings.Contains(release, "tcprepl") {
		deploy = release + "-tcprepl"
	}
	if _, err := e.Run(ctx, 3*time.Minute, e.Tools.Cluster.Kubectl, "rollout", "status", "deployment/"+deploy, "--namespace", ns, "--timeout=150s"); err != nil {
		return fmt.Errorf("the chart's operator Deployment did not roll out: %w", err)
	}
	out, err := e.Kubectl(ctx, "get", "pods", "--namespace", ns, "-l", "app.kubernetes.io/instance="+release+",app.kubernetes.io/component=operator",
		"-o", `jsonpath={range .items[?(@.status.phase=="Running")]}{.metadata.name}={.status.podIP}{"\n"}{end}`)
	if err != nil {
		return err
	}
	ips := map[string]string{}
	for _, f := range strings.Fields(out) {
		name, ip, _ := strings.Cut(f, "=")
		ips[name] = ip
	}
	// With several replicas only the leader reconciles and exports the
	// resources' metrics: follow the one that says it acquired the Lease.
	// (The Lease's holder identity does not help: it starts with the host
	// name, which every process here shares.)
	var leader string
	deadline := time.Now().Add(60 * time.Second)
	for leader == "" {
		for name := range ips {
			b, err := os.ReadFile(e.Kubelet.LogPath(ns, name, "operator"))
			if err == nil && bytes.Contains(bytes.ToLower(b), []byte("successfully acquired lease")) {
				leader = name
			}
		}
		if leader != "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("none of the operator pods %v logged acquiring the leader Lease within 60s", ips)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	e.OperatorMetricsURL = "http://" + net.JoinHostPort(ips[leader], "8080") + "/metrics"
	e.operatorLog = e.Kubelet.LogPath(ns, leader, "operator")
	e.OperatorPods = len(ips)
	e.logf("operator: the chart's pod %s/%s at %s leads (%d running)", ns, leader, ips[leader], len(ips))
	return nil
}

// StopOperator stops the operator process, if one runs.
func (e *Env) StopOperator() error {
	if e.operator == nil {
		return nil
	}
	err := e.operator.Stop(10 * time.Second)
	e.operator = nil
	return err
}

// OperatorLogTail returns the operator log's last n lines.
func (e *Env) OperatorLogTail(n int) string {
	if e.operatorLog == "" {
		return ""
	}
	lines, err := cluster.TailFile(e.operatorLog, n)
	if err != nil {
		return "operator log unreadable: " + err.Error()
	}
	return strings.Join(lines, "\n")
}

// MasterPorts are a master's replication and HTTP ports.
type MasterPorts struct{ Replication, HTTP int }

// ApplyMaster applies a ReplicationMaster manifest into ns, annotated so
// that the operator (a local process, outside the pods' network) probes it
// through the kubelet's proxy address of the master's Service. It returns
// the master's name and ports.
func (e *Env) ApplyMaster(ctx context.Context, ns, manifest string) (string, MasterPorts, error) {
	obj, err := readManifest(manifest)
	if err != nil {
		return "", MasterPorts{}, err
	}
	name, _ := nested(obj, "metadata", "name").(string)
	if name == "" {
		return "", MasterPorts{}, fmt.Errorf("%s: no metadata.name", manifest)
	}
	ports := MasterPorts{Replication: 9092, HTTP: 9093} // the CRD's defaults
	if v, ok := nested(obj, "spec", "replicationPort").(float64); ok {
		ports.Replication = int(v)
	}
	if v, ok := nested(obj, "spec", "httpPort").(float64); ok {
		ports.HTTP = int(v)
	}
	// The master's Service is named like the master (controllers/specs/names.go).
	ip, err := e.Kubelet.ServiceIP(ns, name)
	if err != nil {
		return "", MasterPorts{}, err
	}
	meta := obj["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
	}
	ann[AnnotationProbeAddress] = net.JoinHostPort(ip, strconv.Itoa(ports.Replication))
	ann[AnnotationProbeHTTPURL] = "http://" + net.JoinHostPort(ip, strconv.Itoa(ports.HTTP))
	meta["annotations"] = ann
	if err := e.apply(ctx, ns, obj); err != nil {
		return "", MasterPorts{}, err
	}
	return name, ports, nil
}

// Apply applies a manifest file into ns with kubectl.
func (e *Env) Apply(ctx context.Context, ns, manifest string) error {
	obj, err := readManifest(manifest)
	if err != nil {
		return err
	}
	return e.apply(ctx, ns, obj)
}

func (e *Env) apply(ctx context.Context, ns string, obj map[string]any) error {
	b, err := yaml.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	_, err = e.RunStdin(ctx, 60*time.Second, bytes.NewReader(b), e.Tools.Cluster.Kubectl, "apply", "--namespace", ns, "-f", "-")
	return err
}

func readManifest(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("parse manifest %s: %w", path, err)
	}
	if _, ok := obj["metadata"].(map[string]any); !ok {
		return nil, fmt.Errorf("manifest %s: no metadata (one object per file is expected)", path)
	}
	return obj, nil
}

func nested(obj map[string]any, keys ...string) any {
	var cur any = obj
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// Publish appends rows as one batch to a stream of master name in ns through
// the master's Service (the kubelet's proxy), with the publish token from
// the master's Secret, and returns the token the master assigned.
func (e *Env) Publish(ctx context.Context, ns, name string, ports MasterPorts, stream string, rows []any) (int64, error) {
	secret, err := e.Kubectl(ctx, "get", "secret", name+"-publish-token", "--namespace", ns, "-o", "jsonpath={.data.token}")
	if err != nil {
		return 0, err
	}
	tok, err := decodeBase64(strings.TrimSpace(secret))
	if err != nil {
		return 0, fmt.Errorf("decode publish token: %w", err)
	}
	ip, err := e.Kubelet.ServiceIP(ns, name)
	if err != nil {
		return 0, err
	}
	body, err := json.Marshal(map[string]any{"rows": rows})
	if err != nil {
		return 0, err
	}
	url := "http://" + net.JoinHostPort(ip, strconv.Itoa(ports.HTTP)) + "/v1/streams/" + stream + "/rows"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("publish to %s: %w", url, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("publish to %s: %s: %s", url, resp.Status, strings.TrimSpace(string(rb)))
	}
	var out struct {
		Token int64 `json:"token"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return 0, fmt.Errorf("publish to %s: %w: %s", url, err, rb)
	}
	return out.Token, nil
}

// freePorts returns n distinct ports free on 127.0.0.1 when called (the
// listeners are held until all are chosen).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitOK(ctx context.Context, timeout time.Duration, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	c := http.Client{Timeout: 2 * time.Second}
	var last error
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("process exited (last: %w)", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out after %s (last: %w)", timeout, last)
}

func decodeBase64(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err
}
