// Package kubelet is a small kubelet for test clusters without a container
// runtime. It registers a Node, binds unscheduled pods to it (acting as a
// trivial scheduler), and runs each pod's containers as local processes from
// the pod's own spec:
//
//   - in image mode (Options.ImageLayouts), from the pod's image: its
//     layers unpacked into a root of its own, with the pod's volumes
//     mounted in it, as the image's or securityContext's user (see
//     image.go); otherwise command and args from the host (the image is
//     ignored; a table maps program names such as "tcprepl" to built
//     binaries, and image names to entrypoints for containers without a
//     command); env including fieldRef,
//     configMapKeyRef, secretKeyRef and envFrom, $(VAR) expansion;
//   - volumes as directories under a per-pod dir: ConfigMap, Secret,
//     downwardAPI and projected (with ServiceAccount tokens from the
//     TokenRequest API) as files, kept up to date while the pod runs and
//     swapped atomically as the kubelet does (volume_refresh.go), emptyDir
//     per pod, PersistentVolumeClaims per namespace/claim, kept across pod
//     restarts and re-creations;
//   - its own loopback address 127.S.x.y as pod IP, with listen addresses
//     rewritten to it (see rewrite.go for the exact rules);
//   - Services by name: ClusterIP Services are proxied on a loopback address
//     per Service (a userspace kube-proxy) and headless Services resolve to
//     ready pods' addresses, by rewriting names before the process starts;
//   - API access as the pod's ServiceAccount: a container that mounts its
//     ServiceAccount token gets KUBECONFIG pointing at a kubeconfig that
//     reads that token (in-cluster configuration needs files at a fixed
//     path, which local processes cannot share), so it runs with exactly
//     its ServiceAccount's RBAC; tokens are requested at container start
//     and not refreshed;
//   - startup, readiness and liveness probes (HTTP GET, TCP, exec) against
//     the pod IP, with periods capped (default 1s) so tests run fast;
//   - restarts per restartPolicy with a short capped backoff, pod status
//     (phase, conditions, container states, restart counts), graceful
//     deletion (SIGTERM, then SIGKILL after the grace period, capped), and
//     the final delete of the pod object, as the kubelet does.
//
// Limits, by design: no network or PID isolation, and outside image mode
// no file system isolation either (a host-mode process runs as the test's
// user with the host's file system); a process that ignores the rewritten
// addresses and binds a wildcard address can collide with another pod;
// names are only resolved where they appear in the pod spec or its
// ConfigMap/Secret files, at container start and when those files are
// refreshed (a container whose cluster-DNS names do not resolve yet waits
// with reason ServiceNotResolvable, up to Options.UnresolvedGrace, then
// starts with the names left as written; a refresh waits for them with no
// limit); connections through a Service proxy come from
// 127.0.0.1, not from the client pod's address; no resource
// limits, no image pulls, no hostPath/CSI volumes, no Service environment
// variables, UDP Services are not proxied; HOSTNAME is the pod name but the
// kernel's host name (os.Hostname) is the machine's, shared by every pod.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Options configure a Kubelet.
type Options struct {
	// RESTConfig is how the kubelet reaches the API server. It needs to
	// bind pods, write pod and node status, read (get, list and watch)
	// ConfigMaps, Secrets and Services, and create ServiceAccount tokens
	// (an admin config is fine).
	RESTConfig *rest.Config
	// NodeName is the Node to register; default "testkubelet".
	NodeName string
	// Dir holds pod directories, container logs and claim data; default a
	// new temp dir, removed when Run returns.
	Dir string
	// Subnet selects 127.<Subnet>.0.0/16 for pod and Service addresses;
	// 0 picks a free one (claimed with a lock file, see ipalloc.go).
	Subnet int
	// Commands maps program names or paths in pod specs to executables,
	// e.g. {"tcprepl": "/repo/bin/tcprepl", "/tcprepl": "/repo/bin/tcprepl"}.
	// Names not in the table are looked up in PATH.
	Commands map[string]string
	// Entrypoints maps image names (without tag or digest; "*" for any) to
	// the command a container without one runs, standing in for the image's
	// ENTRYPOINT.
	Entrypoints map[string][]string
	// ImageLayouts are OCI image layouts (such as `make image`'s
	// bin/image/oci). With any, the kubelet is in image mode (see image.go):
	// every container runs from its image, found by reference in these
	// layouts, chrooted and as the image's or securityContext's user;
	// Commands and Entrypoints are not used. Image mode needs root.
	ImageLayouts []string
	// Schedule makes the kubelet bind pods that have no node to itself.
	// Default true (set DisableScheduling to turn it off).
	DisableScheduling bool
	// MaxProbePeriod caps probes' initialDelaySeconds and periodSeconds;
	// default 1s.
	MaxProbePeriod time.Duration
	// RestartBackoff is the first restart delay, doubled per crash up to
	// MaxRestartBackoff; defaults 500ms and 5s (a real kubelet uses 10s and
	// 5m, far too slow for tests).
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	// UnresolvedGrace is how long a container waits for the cluster-DNS
	// names in its spec to resolve (the Service to exist, a headless
	// Service to have a ready pod) before it starts with those names left
	// as they are; default 20s.
	UnresolvedGrace time.Duration
	// MaxGracePeriod caps terminationGracePeriodSeconds; default 10s.
	MaxGracePeriod time.Duration
	// VolumeResync is how often a running pod's ConfigMap, Secret,
	// downward-API and projected volume files are brought up to date with
	// their sources (see volume_refresh.go); default 1s (a real kubelet
	// takes up to a minute or so).
	VolumeResync time.Duration
	// Logf receives the kubelet's own log lines; default log.Printf.
	Logf func(format string, args ...any)
}

// Kubelet runs pods as local processes. Create it with New, then Run it.
type Kubelet struct {
	factory     informers.SharedInformerFactory
	opts        Options
	client      kubernetes.Interface
	hostIP      string
	ips         *ipAllocator
	proxy       *serviceProxy
	pods        corelisters.PodLister
	cms         corelisters.ConfigMapLister // cms and secrets feed the volume refresh
	secrets     corelisters.SecretLister
	probeClient *http.Client
	removeDir   bool
	logf        func(string, ...any)
	// images is nil unless Options.ImageLayouts were given.
	images *imageStore
	// apiHost and apiPort are the API server's address, which image-mode
	// containers get as KUBERNETES_SERVICE_HOST/PORT for in-cluster config.
	apiHost, apiPort string

	mu      sync.Mutex
	workers map[string]*podWorker // "ns/name"
	queue   []string
	wake    chan struct{}
	pending map[string]bool
	// bg tracks goroutines that finish pod deletions, so Run returns only
	// after the last of them.
	bg sync.WaitGroup
}

// New validates opts and claims an address range, which Run releases when
// it returns.
func New(opts Options) (*Kubelet, error) {
	if opts.RESTConfig == nil {
		return nil, errors.New("kubelet: Options.RESTConfig is required")
	}
	if opts.NodeName == "" {
		opts.NodeName = "testkubelet"
	}
	if opts.MaxProbePeriod <= 0 {
		opts.MaxProbePeriod = time.Second
	}
	if opts.RestartBackoff <= 0 {
		opts.RestartBackoff = 500 * time.Millisecond
	}
	if opts.MaxRestartBackoff <= 0 {
		opts.MaxRestartBackoff = 5 * time.Second
	}
	if opts.UnresolvedGrace <= 0 {
		opts.UnresolvedGrace = 20 * time.Second
	}
	if opts.MaxGracePeriod <= 0 {
		opts.MaxGracePeriod = 10 * time.Second
	}
	if opts.VolumeResync <= 0 {
		opts.VolumeResync = time.Second
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	// Programs run with the pod's directory as working directory, so
	// relative paths in the table would not be found.
	cmds := make(map[string]string, len(opts.Commands))
	for name, p := range opts.Commands {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("kubelet: command %s=%s: %w", name, p, err)
		}
		cmds[name] = abs
	}
	opts.Commands = cmds
	removeDir := false
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "tcprepl-testkubelet-")
		if err != nil {
			return nil, fmt.Errorf("kubelet: create work dir: %w", err)
		}
		opts.Dir, removeDir = d, true
	}
	var images *imageStore
	var apiHost, apiPort string
	if len(opts.ImageLayouts) > 0 {
		var err error
		if images, err = newImageStore(filepath.Join(opts.Dir, "images"), opts.ImageLayouts); err != nil {
			return nil, fmt.Errorf("kubelet: %w", err)
		}
		u, err := url.Parse(opts.RESTConfig.Host)
		if err != nil {
			return nil, fmt.Errorf("kubelet: API server address %q: %w", opts.RESTConfig.Host, err)
		}
		if u.Hostname() == "" {
			return nil, fmt.Errorf("kubelet: API server address %q: want https://host:port", opts.RESTConfig.Host)
		}
		apiHost, apiPort = u.Hostname(), u.Port()
		if apiPort == "" {
			apiPort = "443"
		}
	}
	cfg := rest.CopyConfig(opts.RESTConfig)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubelet: build client: %w", err)
	}
	ips, err := newIPAllocator(opts.Subnet)
	if err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	// The listers exist from the start so that ServiceAddress and PodIP
	// may be called concurrently with Run.
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods().Lister()
	logf := opts.Logf
	return &Kubelet{
		factory: factory,
		pods:    pods,
		cms:     factory.Core().V1().ConfigMaps().Lister(),
		secrets: factory.Core().V1().Secrets().Lister(),
		proxy:   newServiceProxy(ips, factory.Core().V1().Services().Lister(), pods, logf),
		opts:    opts,
		client:  client,
		hostIP:  "127.0.0.1",
		ips:     ips,
		probeClient: &http.Client{
			Transport: &http.Transport{TLSClientConfig: insecureProbeTLS, DisableKeepAlives: true},
			// Redirects are followed like the kubelet does, within limits.
			CheckRedirect: func(_ *http.Request, via []*http.Request) error {
				if len(via) >= 10 {
					return http.ErrUseLastResponse
				}
				return nil
			},
		},
		removeDir: removeDir,
		logf:      opts.Logf,
		images:    images,
		apiHost:   apiHost,
		apiPort:   apiPort,
		workers:   map[string]*podWorker{},
		wake:      make(chan struct{}, 1),
		pending:   map[string]bool{},
	}, nil
}

// Subnet is the 127.<Subnet>.0.0/16 range the kubelet's pods live in.
func (k *Kubelet) Subnet() int { return k.ips.subnet }

// Dir is the kubelet's work dir (pods/<ns>_<name>/..., claims/...).
func (k *Kubelet) Dir() string { return k.opts.Dir }

func (k *Kubelet) podDir(ns, name string) string {
	return filepath.Join(k.opts.Dir, "pods", ns+"_"+name)
}

// LogPath is the file a container's stdout and stderr go to (appended to
// across restarts, with a header line per start).
func (k *Kubelet) LogPath(ns, pod, container string) string {
	return filepath.Join(k.podDir(ns, pod), container+".log")
}

// ContainerPID returns the process id of a running container, for fault
// injection (e.g. kill it to simulate a crash).
func (k *Kubelet) ContainerPID(ns, pod, container string) (int, bool) {
	k.mu.Lock()
	w := k.workers[ns+"/"+pod]
	k.mu.Unlock()
	if w == nil {
		return 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.cs {
		if c.spec.Name == container && c.proc != nil && c.state.Running != nil {
			return c.proc.Pid(), true
		}
	}
	return 0, false
}

// ServiceAddress returns the loopback address the kubelet proxies a
// ClusterIP Service on (opening the proxy if nobody used it yet), or a
// ready pod's IP for a headless Service. Processes outside the cluster (an
// operator run with a kubeconfig) use it to reach Services.
func (k *Kubelet) ServiceAddress(ns, name string) (string, error) {
	addr, _, err := k.proxy.resolve(ns, []string{name, ns}, true)
	return addr, err
}

// ServiceIP returns the loopback address the kubelet proxies a ClusterIP
// Service on, whether or not the Service exists yet: addresses are sticky
// per namespace and name, and the proxy starts listening when the Service
// appears. Use it to point a process outside the cluster at a Service
// before it is created.
func (k *Kubelet) ServiceIP(ns, name string) (string, error) {
	return k.ips.serviceIP(ns + "/" + name)
}

// PodIP returns the address the kubelet gave (or will give) a pod; it is
// sticky per namespace and name.
func (k *Kubelet) PodIP(ns, name string) (string, error) {
	return k.ips.podIP(ns + "/" + name)
}

func (k *Kubelet) builder(pod *corev1.Pod, ip, dir string) *specBuilder {
	return &specBuilder{
		client: k.client, pod: pod, podIP: ip, hostIP: k.hostIP, podDir: dir,
		pvcDir:  filepath.Join(k.opts.Dir, "claims"),
		resolve: k.proxy.resolve, commands: k.opts.Commands, entrypoints: k.opts.Entrypoints,
		imageMode: k.images != nil,
	}
}

// Run registers the node and runs pods until ctx ends; then it stops every
// pod process (they are not deleted from the API) and releases its address
// range and, if it created it, its work dir.
func (k *Kubelet) Run(ctx context.Context) error {
	defer k.ips.release()
	if k.removeDir {
		defer os.RemoveAll(k.opts.Dir)
	}
	if err := k.registerNode(ctx); err != nil {
		return err
	}
	factory := k.factory
	podInf := factory.Core().V1().Pods()
	svcInf := factory.Core().V1().Services()
	enqueue := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err == nil {
			k.enqueue(key)
		}
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("kubelet: watch pods: %w", err)
	}
	svcSync := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			return
		}
		ns, name, err := cache.SplitMetaNamespaceKey(key)
		if err == nil {
			k.proxy.sync(ns, name)
		}
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: svcSync, UpdateFunc: func(_, n any) { svcSync(n) }, DeleteFunc: svcSync,
	}); err != nil {
		return fmt.Errorf("kubelet: watch services: %w", err)
	}
	infCtx, stopInformers := context.WithCancel(context.Background())
	factory.Start(infCtx.Done())
	defer func() {
		stopInformers()
		factory.Shutdown()
	}()
	syncCtx, cancelSync := context.WithTimeout(ctx, time.Minute)
	synced := factory.WaitForCacheSync(syncCtx.Done())
	cancelSync()
	for typ, ok := range synced {
		if !ok {
			return fmt.Errorf("kubelet: informer for %v did not sync within a minute: %w", typ, ctx.Err())
		}
	}
	k.logf("testkubelet: node %s running pods on 127.%d.0.0/16 in %s", k.opts.NodeName, k.ips.subnet, k.opts.Dir)

	heartbeat := time.NewTicker(20 * time.Second)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			k.shutdown()
			return nil
		case <-heartbeat.C:
			k.heartbeat(ctx)
		case <-k.wake:
			for _, key := range k.dequeue() {
				k.syncPod(ctx, key)
			}
		}
	}
}

// enqueue schedules a pod key for syncPod. Keys are deduplicated and the
// queue is unbounded, so informer handlers never block.
func (k *Kubelet) enqueue(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pending[key] {
		return
	}
	k.pending[key] = true
	k.queue = append(k.queue, key)
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// dequeue takes every queued key.
func (k *Kubelet) dequeue() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := k.queue
	k.queue = nil
	for _, key := range keys {
		delete(k.pending, key)
	}
	return keys
}

// shutdown stops every pod's processes and the Service proxy.
func (k *Kubelet) shutdown() {
	k.mu.Lock()
	ws := make([]*podWorker, 0, len(k.workers))
	for _, w := range k.workers {
		ws = append(ws, w)
	}
	k.mu.Unlock()
	for _, w := range ws {
		w.stop(2 * time.Second)
	}
	for _, w := range ws {
		<-w.done
	}
	k.bg.Wait()
	k.proxy.close()
}

func (k *Kubelet) syncPod(ctx context.Context, key string) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return
	}
	pod, err := k.pods.Pods(ns).Get(name)
	k.mu.Lock()
	w := k.workers[key]
	k.mu.Unlock()
	if apierrors.IsNotFound(err) {
		// Deleted without grace (or by us): make sure nothing still runs.
		if w != nil {
			k.retire(key, w, 0, nil)
		}
		return
	}
	if err != nil {
		k.logf("testkubelet: get pod %s: %v", key, err)
		return
	}
	if pod.Spec.NodeName == "" {
		if !k.opts.DisableScheduling && pod.DeletionTimestamp == nil {
			k.bind(ctx, pod)
		}
		return
	}
	if pod.Spec.NodeName != k.opts.NodeName {
		return
	}
	if w != nil {
		w.mu.Lock()
		uid, terminating := w.pod.UID, w.terminating
		w.mu.Unlock()
		if terminating {
			return // looked at again once its processes are gone
		}
		if uid != pod.UID {
			// The same name was reused by a new pod (a StatefulSet
			// replica): the old one's processes must be gone before the
			// new one starts with the same address.
			k.retire(key, w, 0, nil)
			return
		}
	}
	if pod.DeletionTimestamp != nil {
		grace := k.opts.MaxGracePeriod
		if pod.DeletionGracePeriodSeconds != nil {
			grace = min(grace, time.Duration(*pod.DeletionGracePeriodSeconds)*time.Second)
		}
		if w == nil {
			k.finalDelete(pod)
			return
		}
		k.retire(key, w, grace, pod)
		return
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		if w == nil {
			return // finished before (e.g. before a kubelet restart)
		}
	}
	if w != nil {
		w.update(pod)
		return
	}
	ip, err := k.ips.podIP(key)
	if err != nil {
		k.logf("testkubelet: pod %s: %v", key, err)
		return
	}
	w = newPodWorker(k, pod, ip)
	k.mu.Lock()
	k.workers[key] = w
	k.mu.Unlock()
	k.logf("testkubelet: starting pod %s with IP %s", key, ip)
	go w.run()
}

// retire stops a pod's processes in the background, then (when deleted is
// set, i.e. the pod is being deleted gracefully) removes the pod object and
// its directory. The worker stays in the table until its processes are gone
// so that a re-created pod with the same name waits for them.
func (k *Kubelet) retire(key string, w *podWorker, grace time.Duration, deleted *corev1.Pod) {
	w.mu.Lock()
	already := w.terminating
	w.mu.Unlock()
	if already {
		return
	}
	w.stop(grace)
	k.bg.Add(1)
	go func() {
		defer k.bg.Done()
		<-w.done
		if err := os.RemoveAll(w.dir); err != nil {
			k.logf("testkubelet: remove pod dir %s: %v", w.dir, err)
		}
		k.mu.Lock()
		if k.workers[key] == w {
			delete(k.workers, key)
		}
		k.mu.Unlock()
		if deleted != nil {
			k.finalDelete(deleted)
		}
		// Whatever happened meanwhile (a new pod under the same name) is
		// looked at again now that the old processes are gone.
		k.enqueue(key)
	}()
}

// finalDelete removes a gracefully deleted pod whose processes are gone,
// which is the kubelet's job in Kubernetes.
func (k *Kubelet) finalDelete(pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	zero := int64(0)
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.logf("testkubelet: delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (k *Kubelet) bind(ctx context.Context, pod *corev1.Pod) {
	if pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := k.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.opts.NodeName},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		k.logf("testkubelet: bind pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (k *Kubelet) nodeStatus() corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourcePods:             resource.MustParse("1000"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	}
	now := metav1.Now()
	return corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Phase: corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "testkubelet runs pods as local processes", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.hostIP}, {Type: corev1.NodeHostName, Address: k.opts.NodeName}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "v1.37.2-testkubelet", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "testkubelet://local-processes",
		},
	}
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.opts.NodeName, Labels: map[string]string{
			"kubernetes.io/hostname": k.opts.NodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		}},
	}
	created, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = k.client.CoreV1().Nodes().Get(ctx, k.opts.NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("kubelet: register node %s: %w", k.opts.NodeName, err)
	}
	created.Status = k.nodeStatus()
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("kubelet: write node %s status: %w", k.opts.NodeName, err)
	}
	return nil
}

func (k *Kubelet) heartbeat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := k.client.CoreV1().Nodes().Get(ctx, k.opts.NodeName, metav1.GetOptions{})
	if err != nil {
		k.logf("testkubelet: node heartbeat: %v", err)
		return
	}
	st := k.nodeStatus()
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			st.Conditions[0].LastTransitionTime = c.LastTransitionTime
		}
	}
	n.Status = st
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		k.logf("testkubelet: node heartbeat: %v", err)
	}
}
