package kubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tcprepl/tcprepl/test/internal/proc"
)

// container is the kubelet's view of one container of one pod.
type container struct {
	spec corev1.Container
	init bool

	// Guarded by podWorker.mu.
	proc      *proc.Process
	restarts  int32
	state     corev1.ContainerState
	lastState corev1.ContainerState
	ready     bool
	started   bool
	launch    *launch // image mode: how the running process was started
	imageID   string  // image mode: repository@digest of the image it ran
}

// podWorker runs one pod: it prepares its directory and volumes, runs init
// containers in order, then every container with restarts per the pod's
// restartPolicy, probes them, and writes the pod's status.
type podWorker struct {
	k      *Kubelet
	key    string
	ip     string
	dir    string
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	dirty  chan struct{}
	// volMu serialises writes to the pod's volume dirs (container starts,
	// exec probes and the refresh loop).
	volMu sync.Mutex

	mu          sync.Mutex
	pod         *corev1.Pod
	initCs      []*container
	cs          []*container
	initDone    bool
	startTime   metav1.Time
	transitions map[corev1.PodConditionType]metav1.Time
	lastStatus  *corev1.PodStatus
	grace       time.Duration
	terminating bool
}

func newPodWorker(k *Kubelet, pod *corev1.Pod, ip string) *podWorker {
	ctx, cancel := context.WithCancel(context.Background())
	w := &podWorker{
		k: k, key: pod.Namespace + "/" + pod.Name, ip: ip,
		dir:    k.podDir(pod.Namespace, pod.Name),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		dirty:  make(chan struct{}, 1),
		pod:    pod.DeepCopy(),
		// The moment the kubelet accepted the pod, as in a real kubelet.
		startTime:   metav1.Now(),
		transitions: map[corev1.PodConditionType]metav1.Time{},
	}
	for _, c := range pod.Spec.InitContainers {
		w.initCs = append(w.initCs, &container{spec: c, init: true, state: waiting("PodInitializing", "")})
	}
	for _, c := range pod.Spec.Containers {
		w.cs = append(w.cs, &container{spec: c, state: waiting("ContainerCreating", "")})
	}
	return w
}

func waiting(reason, msg string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
}

func (w *podWorker) markDirty() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod.DeepCopy()
	w.mu.Unlock()
}

// run is the pod's lifetime. It returns after every process of the pod has
// exited (the pod was deleted, or the kubelet is stopping).
func (w *podWorker) run() {
	defer close(w.done)
	finished := make(chan struct{})
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		w.statusLoop(finished)
	}()
	defer func() {
		close(finished)
		<-statusDone
	}()
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		w.k.logf("pod %s: create pod dir: %v", w.key, err)
		return
	}
	w.markDirty()
	refreshCtx, stopRefresh := context.WithCancel(w.ctx)
	refreshDone := make(chan struct{})
	go func() {
		defer close(refreshDone)
		w.refreshVolumes(refreshCtx)
	}()
	// The pod dir is removed once run returns: no refresh may write after.
	defer func() {
		stopRefresh()
		<-refreshDone
	}()
	for _, c := range w.initCs {
		if !w.runInit(c) {
			return
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.mu.Unlock()
	w.markDirty()
	var wg sync.WaitGroup
	for _, c := range w.cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runContainer(c)
		}()
	}
	wg.Wait()
}

// restartPolicy says whether a container that exited with code should run
// again.
func (w *podWorker) shouldRestart(code int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return restartsAfter(w.pod.Spec.RestartPolicy, code)
}

// restartsAfter says whether policy runs a container that exited with code
// again.
func restartsAfter(policy corev1.RestartPolicy, code int) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return true
	}
}

// runInit runs an init container until it succeeds (or, with
// restartPolicy Never, once). It reports whether the pod may continue.
func (w *podWorker) runInit(c *container) bool {
	for attempt := 0; ; attempt++ {
		code, ok := w.runOnce(c)
		if !ok {
			return false
		}
		if code == 0 {
			return true
		}
		w.mu.Lock()
		never := w.pod.Spec.RestartPolicy == corev1.RestartPolicyNever
		w.mu.Unlock()
		if never {
			return false
		}
		if !w.backoff(c, attempt, 0) {
			return false
		}
	}
}

func (w *podWorker) runContainer(c *container) {
	for attempt := 0; ; attempt++ {
		startedAt := time.Now()
		code, ok := w.runOnce(c)
		if !ok || !w.shouldRestart(code) {
			return
		}
		// A container that ran for a while before crashing starts over with
		// a short backoff, as the kubelet resets its backoff after 10 min.
		if time.Since(startedAt) > 30*time.Second {
			attempt = 0
		}
		if !w.backoff(c, attempt, code) {
			return
		}
	}
}

// backoff records a restart and sleeps before it. It returns false when the
// pod is stopping.
func (w *podWorker) backoff(c *container, attempt, code int) bool {
	d := w.k.opts.RestartBackoff << min(attempt, 6)
	if d > w.k.opts.MaxRestartBackoff {
		d = w.k.opts.MaxRestartBackoff
	}
	w.mu.Lock()
	c.restarts++
	if c.state.Terminated != nil {
		c.lastState = c.state
	}
	c.state = waiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s (exit code %d)", d, c.spec.Name, code))
	w.mu.Unlock()
	w.markDirty()
	select {
	case <-w.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// runOnce starts the container's process and waits for it to exit. ok is
// false when the pod is stopping.
func (w *podWorker) runOnce(c *container) (code int, ok bool) {
	var p *proc.Process
	firstTry := time.Now()
	for attempt := 0; ; attempt++ {
		var err error
		// Names that stay unresolvable (a Service that is never created)
		// are eventually passed through unchanged, so the process runs and
		// reports its own resolution errors as it would in a cluster.
		lenient := time.Since(firstTry) > w.k.opts.UnresolvedGrace
		p, err = w.startProcess(c, lenient)
		if err == nil {
			break
		}
		reason := "RunContainerError"
		switch {
		case errors.Is(err, errConfig):
			reason = "CreateContainerConfigError"
		case errors.Is(err, errUnresolved):
			// The process would not find its server's name yet.
			reason = "ServiceNotResolvable"
		case errors.Is(err, errImagePull):
			reason = "ErrImagePull"
			if attempt > 0 {
				reason = "ImagePullBackOff"
			}
		}
		w.mu.Lock()
		c.state = waiting(reason, err.Error())
		w.mu.Unlock()
		w.markDirty()
		if attempt%20 == 0 {
			w.k.logf("pod %s container %s: %s: %v (retrying)", w.key, c.spec.Name, reason, err)
		}
		select {
		case <-w.ctx.Done():
			return 0, false
		case <-time.After(500 * time.Millisecond):
		}
	}
	now := metav1.Now()
	w.mu.Lock()
	c.proc = p
	c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
	c.ready = false
	c.started = c.spec.StartupProbe == nil
	w.mu.Unlock()
	w.markDirty()

	probeCtx, stopProbes := context.WithCancel(w.ctx)
	var probes sync.WaitGroup
	if !c.init {
		probes.Add(1)
		go func() {
			defer probes.Done()
			w.probeLoop(probeCtx, c, p)
		}()
	}
	select {
	case <-p.Done():
	case <-w.ctx.Done():
		w.mu.Lock()
		grace := w.grace
		w.mu.Unlock()
		if err := p.Stop(grace); err != nil {
			w.k.logf("pod %s container %s: %v", w.key, c.spec.Name, err)
		}
	}
	stopProbes()
	probes.Wait()
	code = p.ExitCode()
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	w.mu.Lock()
	startedAt := c.state.Running.StartedAt
	c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: int32(code), Reason: reason, StartedAt: startedAt, FinishedAt: metav1.Now(),
		ContainerID: containerID(p),
	}}
	c.ready = false
	w.mu.Unlock()
	w.markDirty()
	w.k.logf("pod %s container %s: exited with code %d", w.key, c.spec.Name, code)
	return code, w.ctx.Err() == nil
}

func containerID(p *proc.Process) string { return "testkubelet://" + strconv.Itoa(p.Pid()) }

func (w *podWorker) startProcess(c *container, lenient bool) (*proc.Process, error) {
	if w.k.images != nil {
		return w.startFromImage(c, lenient)
	}
	w.mu.Lock()
	pod := w.pod.DeepCopy()
	w.mu.Unlock()
	b := w.k.builder(pod, w.ip, w.dir)
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	dirs, err := w.volumeDirs(ctx, b)
	if err != nil {
		return nil, err
	}
	mounts, err := containerMounts(&c.spec, dirs)
	if err != nil {
		return nil, err
	}
	env, vars, err := b.env(ctx, &c.spec, b.hostEnv())
	if err != nil {
		return nil, err
	}
	argv, err := b.commandLine(&c.spec, vars)
	if err != nil {
		return nil, err
	}
	rw := newRewriter(w.ip, pod.Namespace, mounts, w.k.proxy.resolve)
	rw.lenient = lenient
	for i := 1; i < len(argv); i++ {
		if argv[i], err = rw.rewrite(argv[i]); err != nil {
			return nil, fmt.Errorf("container %q arg %d: %w", c.spec.Name, i, err)
		}
	}
	environ := make([]string, 0, len(env)+1)
	if kc, err := w.inClusterKubeconfig(pod.Namespace, mounts, vars); err != nil {
		return nil, err
	} else if kc != "" {
		environ = append(environ, "KUBECONFIG="+kc)
	}
	for _, e := range env {
		v := e.value
		if !e.fromKubelet {
			if v, err = rw.rewrite(v); err != nil {
				return nil, fmt.Errorf("container %q env %s: %w", c.spec.Name, e.name, err)
			}
		}
		environ = append(environ, e.name+"="+v)
	}
	workDir := w.dir
	if c.spec.WorkingDir != "" {
		workDir = rw.rewriteMounts(c.spec.WorkingDir)
		if _, err := os.Stat(workDir); err != nil {
			workDir = w.dir
		}
	}
	logPath := w.k.LogPath(pod.Namespace, pod.Name, c.spec.Name)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s testkubelet: starting %q\n", time.Now().Format(time.RFC3339Nano), argv)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = environ
	cmd.Dir = workDir
	cmd.Stdout, cmd.Stderr = f, f
	p, err := proc.Start(pod.Namespace+"/"+pod.Name+"/"+c.spec.Name, cmd)
	if err != nil {
		return nil, err
	}
	w.k.logf("pod %s container %s: started pid %d: %q", w.key, c.spec.Name, p.Pid(), argv)
	return p, nil
}

// serviceAccountDir is where Kubernetes mounts a pod's ServiceAccount token.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// inClusterKubeconfig stands in for in-cluster API access. A process finds
// the API server in a pod through a token file at a fixed path, which a
// local process cannot have; so when the container mounts its ServiceAccount
// token (the kube-api-access volume the ServiceAccount admission plugin
// adds), the kubelet writes a kubeconfig that reads that token file and
// points KUBECONFIG at it. The process then talks to the API server as its
// ServiceAccount, with that account's RBAC, as in a cluster. A container
// that sets KUBECONFIG itself is left alone.
func (w *podWorker) inClusterKubeconfig(ns string, mounts []mount, vars map[string]string) (string, error) {
	if _, set := vars["KUBECONFIG"]; set || w.k.opts.RESTConfig == nil {
		return "", nil
	}
	var tokenDir string
	for _, m := range mounts {
		if strings.TrimSuffix(m.containerPath, "/") == serviceAccountDir {
			tokenDir = m.hostPath
		}
	}
	if tokenDir == "" {
		return "", nil
	}
	cfg := w.k.opts.RESTConfig
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return "", fmt.Errorf("read the API server CA for the in-cluster kubeconfig: %w", err)
		}
		ca = b
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["in-cluster"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: ca}
	kc.AuthInfos["serviceaccount"] = &clientcmdapi.AuthInfo{TokenFile: filepath.Join(tokenDir, "token")}
	kc.Contexts["in-cluster"] = &clientcmdapi.Context{Cluster: "in-cluster", AuthInfo: "serviceaccount", Namespace: ns}
	kc.CurrentContext = "in-cluster"
	path := filepath.Join(w.dir, "in-cluster.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", fmt.Errorf("write the in-cluster kubeconfig: %w", err)
	}
	return path, nil
}

// probeLoop runs the startup, readiness and liveness probes of one run of
// a container. Periods are capped at Options.MaxProbePeriod so tests do not
// wait out production-sized intervals.
func (w *podWorker) probeLoop(ctx context.Context, c *container, p *proc.Process) {
	capd := func(sec int32, def time.Duration) time.Duration {
		d := time.Duration(sec) * time.Second
		if sec <= 0 {
			d = def
		}
		return min(d, w.k.opts.MaxProbePeriod)
	}
	type prober struct {
		probe            *corev1.Probe
		next             time.Time
		period           time.Duration
		successes, fails int32
	}
	now := time.Now()
	mk := func(pr *corev1.Probe) *prober {
		if pr == nil {
			return nil
		}
		return &prober{probe: pr, period: capd(pr.PeriodSeconds, 10*time.Second), next: now.Add(capd(pr.InitialDelaySeconds, 0))}
	}
	startup, readiness, liveness := mk(c.spec.StartupProbe), mk(c.spec.ReadinessProbe), mk(c.spec.LivenessProbe)
	setReady := func(v bool) {
		w.mu.Lock()
		changed := c.ready != v
		c.ready = v
		w.mu.Unlock()
		if changed {
			w.markDirty()
		}
	}
	w.mu.Lock()
	started := c.started
	w.mu.Unlock()
	if started && readiness == nil {
		setReady(true)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		if !started {
			if now.Before(startup.next) {
				continue
			}
			startup.next = now.Add(startup.period)
			if w.probe(ctx, c, startup.probe) {
				started = true
				w.mu.Lock()
				c.started = true
				w.mu.Unlock()
				w.markDirty()
				if readiness == nil {
					setReady(true)
				}
			} else if startup.fails++; startup.fails >= orDefault(startup.probe.FailureThreshold, 3) {
				w.k.logf("pod %s container %s: startup probe failed %d times; killing it", w.key, c.spec.Name, startup.fails)
				_ = p.Signal(syscall.SIGKILL)
				return
			}
			continue
		}
		if readiness != nil && !now.Before(readiness.next) {
			readiness.next = now.Add(readiness.period)
			if w.probe(ctx, c, readiness.probe) {
				readiness.fails = 0
				if readiness.successes++; readiness.successes >= orDefault(readiness.probe.SuccessThreshold, 1) {
					setReady(true)
				}
			} else {
				readiness.successes = 0
				if readiness.fails++; readiness.fails >= orDefault(readiness.probe.FailureThreshold, 3) {
					setReady(false)
				}
			}
		}
		if liveness != nil && !now.Before(liveness.next) {
			liveness.next = now.Add(liveness.period)
			if w.probe(ctx, c, liveness.probe) {
				liveness.fails = 0
			} else if liveness.fails++; liveness.fails >= orDefault(liveness.probe.FailureThreshold, 3) {
				w.k.logf("pod %s container %s: liveness probe failed %d times; restarting it", w.key, c.spec.Name, liveness.fails)
				_ = p.Stop(w.k.opts.MaxGracePeriod)
				return
			}
		}
	}
}

// orDefault is a probe threshold, or Kubernetes' default when unset (the
// API server defaults them too, but pods can come from anywhere).
func orDefault(v, def int32) int32 {
	if v > 0 {
		return v
	}
	return def
}

// resolvePort turns a probe's port (number or container port name) into a
// number.
func resolvePort(c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %q has no port named %q", c.Name, port.StrVal)
}

// probe runs one probe once against the pod's IP.
func (w *podWorker) probe(ctx context.Context, c *container, pr *corev1.Probe) bool {
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case pr.HTTPGet != nil:
		port, err := resolvePort(&c.spec, pr.HTTPGet.Port)
		if err != nil {
			return false
		}
		host := w.ip
		if pr.HTTPGet.Host != "" {
			host = pr.HTTPGet.Host
		}
		scheme := "http"
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := pr.HTTPGet.Path
		if path == "" || path[0] != '/' {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return false
		}
		for _, h := range pr.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := w.k.probeClient.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case pr.TCPSocket != nil:
		port, err := resolvePort(&c.spec, pr.TCPSocket.Port)
		if err != nil {
			return false
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(w.ip, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		_ = conn.Close()
		return true
	case pr.Exec != nil:
		return w.execProbe(ctx, c, pr.Exec.Command)
	default:
		// gRPC probes are not supported: failing them makes that visible.
		return false
	}
}

func (w *podWorker) execProbe(ctx context.Context, c *container, command []string) bool {
	if len(command) == 0 {
		return false
	}
	if w.k.images != nil {
		return w.execProbeInImage(ctx, c, command)
	}
	w.mu.Lock()
	pod := w.pod.DeepCopy()
	w.mu.Unlock()
	b := w.k.builder(pod, w.ip, w.dir)
	dirs, err := w.volumeDirs(ctx, b)
	if err != nil {
		return false
	}
	mounts, err := containerMounts(&c.spec, dirs)
	if err != nil {
		return false
	}
	env, vars, err := b.env(ctx, &c.spec, b.hostEnv())
	if err != nil {
		return false
	}
	spec := corev1.Container{Name: c.spec.Name, Command: command}
	argv, err := b.commandLine(&spec, vars)
	if err != nil {
		return false
	}
	rw := newRewriter(w.ip, pod.Namespace, mounts, w.k.proxy.resolve)
	for i := 1; i < len(argv); i++ {
		if argv[i], err = rw.rewrite(argv[i]); err != nil {
			return false
		}
	}
	var environ []string
	for _, e := range env {
		v := e.value
		if !e.fromKubelet {
			if v, err = rw.rewrite(v); err != nil {
				return false
			}
		}
		environ = append(environ, e.name+"="+v)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = environ
	cmd.Dir = w.dir
	return cmd.Run() == nil
}

// stop ends the pod's processes: SIGTERM, then SIGKILL after grace.
func (w *podWorker) stop(grace time.Duration) {
	w.mu.Lock()
	w.grace = grace
	w.terminating = true
	w.mu.Unlock()
	w.cancel()
}

// status computes the pod status from the containers' states.
func (w *podWorker) status() corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := corev1.PodStatus{
		HostIP:    w.k.hostIP,
		HostIPs:   []corev1.HostIP{{IP: w.k.hostIP}},
		PodIP:     w.ip,
		PodIPs:    []corev1.PodIP{{IP: w.ip}},
		StartTime: &w.startTime,
		QOSClass:  w.pod.Status.QOSClass,
	}
	cstatus := func(c *container) corev1.ContainerStatus {
		imageID := "testkubelet://" + c.spec.Image
		if c.imageID != "" {
			imageID = c.imageID
		}
		cs := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: imageID,
			State: c.state, LastTerminationState: c.lastState,
			Ready: c.ready, RestartCount: c.restarts,
		}
		if c.proc != nil {
			cs.ContainerID = containerID(c.proc)
		}
		if !c.init {
			started := c.started && c.state.Running != nil
			cs.Started = &started
		}
		return cs
	}
	allReady, running, anyRestarting := true, false, false
	allDone, anyFailed := true, false
	for _, c := range w.initCs {
		st.InitContainerStatuses = append(st.InitContainerStatuses, cstatus(c))
	}
	for _, c := range w.cs {
		st.ContainerStatuses = append(st.ContainerStatuses, cstatus(c))
		if !c.ready {
			allReady = false
		}
		switch {
		case c.state.Running != nil:
			running = true
			allDone = false
		case c.state.Terminated != nil && restartsAfter(w.pod.Spec.RestartPolicy, int(c.state.Terminated.ExitCode)):
			// Exited and about to run again: the pod is not done, as
			// a kubelet reports it (a Failed phase would make a
			// StatefulSet delete and recreate the pod).
			allDone = false
			anyRestarting = true
		case c.state.Terminated != nil:
			if c.state.Terminated.ExitCode != 0 {
				anyFailed = true
			}
		default:
			allDone = false
			if c.restarts > 0 {
				anyRestarting = true
			}
		}
	}
	switch {
	case !w.initDone:
		st.Phase = corev1.PodPending
	case allDone && len(w.cs) > 0 && !w.terminating:
		st.Phase = corev1.PodSucceeded
		if anyFailed {
			st.Phase = corev1.PodFailed
		}
	case running || anyRestarting:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	cond := func(t corev1.PodConditionType, ok bool, reason string) {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		key := t + corev1.PodConditionType("="+string(s))
		if _, seen := w.transitions[key]; !seen {
			w.transitions[key] = metav1.Now()
		}
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: w.transitions[key]})
	}
	ready := allReady && running && w.initDone && !w.terminating
	cond(corev1.PodScheduled, true, "")
	cond(corev1.PodInitialized, w.initDone, "ContainersNotInitialized")
	cond(corev1.ContainersReady, ready, "ContainersNotReady")
	cond(corev1.PodReady, ready, "ContainersNotReady")
	return st
}

// statusLoop writes the pod's status whenever it changed, until the pod's
// processes are gone.
func (w *podWorker) statusLoop(finished <-chan struct{}) {
	for {
		select {
		case <-w.dirty:
		case <-finished:
			w.writeStatus()
			return
		}
		w.writeStatus()
	}
}

func (w *podWorker) writeStatus() {
	st := w.status()
	w.mu.Lock()
	same := w.lastStatus != nil && reflect.DeepEqual(*w.lastStatus, st)
	ns, name := w.pod.Namespace, w.pod.Name
	uid := w.pod.UID
	w.mu.Unlock()
	if same {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := w.k.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && cur.UID != uid) {
			return
		}
		if err != nil {
			w.k.logf("pod %s: read for status update: %v", w.key, err)
			return
		}
		cur.Status.HostIP, cur.Status.HostIPs = st.HostIP, st.HostIPs
		cur.Status.PodIP, cur.Status.PodIPs = st.PodIP, st.PodIPs
		cur.Status.StartTime = st.StartTime
		cur.Status.Phase = st.Phase
		cur.Status.Conditions = mergeConditions(cur.Status.Conditions, st.Conditions)
		cur.Status.ContainerStatuses = st.ContainerStatuses
		cur.Status.InitContainerStatuses = st.InitContainerStatuses
		_, err = w.k.client.CoreV1().Pods(ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if err == nil {
			w.mu.Lock()
			w.lastStatus = &st
			w.mu.Unlock()
			return
		}
		if !apierrors.IsConflict(err) {
			if !apierrors.IsNotFound(err) {
				w.k.logf("pod %s: update status: %v", w.key, err)
			}
			return
		}
	}
}

// mergeConditions keeps conditions others own (e.g. readiness gates) and
// replaces the kubelet's.
func mergeConditions(cur, ours []corev1.PodCondition) []corev1.PodCondition {
	out := append([]corev1.PodCondition(nil), ours...)
	for _, c := range cur {
		mine := false
		for _, o := range ours {
			if o.Type == c.Type {
				mine = true
			}
		}
		if !mine {
			out = append(out, c)
		}
	}
	return out
}

var insecureProbeTLS = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the kubelet does not verify probe certificates either
