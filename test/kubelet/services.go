package kubelet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// serviceProxy plays kube-proxy for ClusterIP Services: each Service gets a
// loopback address of its own (sticky for the kubelet's lifetime) with a
// listener per TCP port, and every accepted connection is forwarded to a
// ready pod selected by the Service's selector, chosen at connect time.
// Because the address stays put while pods come and go, a client that
// reconnects after its server pod was replaced reaches the new pod, as
// through a real ClusterIP.
//
// The API server refuses loopback addresses in EndpointSlices, so endpoints
// are computed here from the selector and the pods' Ready condition rather
// than read from EndpointSlices.
type serviceProxy struct {
	ips      *ipAllocator
	services corelisters.ServiceLister
	pods     corelisters.PodLister
	logf     func(string, ...any)

	mu        sync.Mutex
	listeners map[string]map[int32]net.Listener // "ns/name" -> service port -> listener
	next      map[string]int                    // round-robin cursor per Service
	closed    bool
	wg        sync.WaitGroup
}

func newServiceProxy(ips *ipAllocator, services corelisters.ServiceLister, pods corelisters.PodLister, logf func(string, ...any)) *serviceProxy {
	return &serviceProxy{
		ips: ips, services: services, pods: pods, logf: logf,
		listeners: map[string]map[int32]net.Listener{},
		next:      map[string]int{},
	}
}

func isHeadless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == corev1.ClusterIPNone
}

// resolve implements hostResolver.
func (p *serviceProxy) resolve(ns string, parts []string, fqdn bool) (string, bool, error) {
	var podName, svcName, svcNS string
	switch len(parts) {
	case 1:
		svcName, svcNS = parts[0], ns
	case 2:
		svcName, svcNS = parts[0], parts[1]
	case 3:
		podName, svcName, svcNS = parts[0], parts[1], parts[2]
	default:
		return "", false, fmt.Errorf("%w: %v", errUnresolved, parts)
	}
	svc, err := p.services.Services(svcNS).Get(svcName)
	if apierrors.IsNotFound(err) {
		if fqdn {
			return "", false, fmt.Errorf("%w: Service %s/%s does not exist (yet)", errUnresolved, svcNS, svcName)
		}
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look up Service %s/%s: %w", svcNS, svcName, err)
	}
	if podName != "" || isHeadless(svc) {
		pods, err := p.readyPods(svc)
		if err != nil {
			return "", false, err
		}
		for _, pod := range pods {
			hostname := pod.Spec.Hostname
			if hostname == "" {
				hostname = pod.Name
			}
			if podName == "" || (hostname == podName && pod.Spec.Subdomain == svcName) {
				return pod.Status.PodIP, true, nil
			}
		}
		if podName != "" {
			// Like cluster DNS, a StatefulSet pod's own name resolves as
			// soon as it has an IP, even before it is ready (the headless
			// Services of StatefulSets usually publish not-ready addresses).
			if pod, err := p.pods.Pods(svcNS).Get(podName); err == nil && pod.Status.PodIP != "" && pod.Spec.Subdomain == svcName {
				return pod.Status.PodIP, true, nil
			}
			return "", false, fmt.Errorf("%w: pod %s of headless Service %s/%s has no IP yet", errUnresolved, podName, svcNS, svcName)
		}
		return "", false, fmt.Errorf("%w: headless Service %s/%s has no ready pod", errUnresolved, svcNS, svcName)
	}
	ip, err := p.ensure(svc)
	if err != nil {
		return "", false, err
	}
	return ip, true, nil
}

// ensure opens the Service's listeners (idempotently) and returns its
// proxy address.
func (p *serviceProxy) ensure(svc *corev1.Service) (string, error) {
	key := svc.Namespace + "/" + svc.Name
	ip, err := p.ips.serviceIP(key)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return "", errors.New("service proxy stopped")
	}
	ls := p.listeners[key]
	if ls == nil {
		ls = map[int32]net.Listener{}
		p.listeners[key] = ls
	}
	want := map[int32]bool{}
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		want[sp.Port] = true
		if ls[sp.Port] != nil {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(int(sp.Port))))
		if err != nil {
			return "", fmt.Errorf("proxy Service %s port %d on %s: %w", key, sp.Port, ip, err)
		}
		ls[sp.Port] = l
		p.wg.Add(1)
		go p.serve(l, svc.Namespace, svc.Name, sp.Port)
	}
	for port, l := range ls {
		if !want[port] {
			_ = l.Close()
			delete(ls, port)
		}
	}
	return ip, nil
}

// sync reconciles the listeners of one Service after an informer event:
// every selector-based ClusterIP Service is proxied as soon as it exists
// (so an address handed out by ServiceIP starts answering then), and
// deleted ones are closed.
func (p *serviceProxy) sync(ns, name string) {
	key := ns + "/" + name
	svc, err := p.services.Services(ns).Get(name)
	if err != nil || isHeadless(svc) || len(svc.Spec.Selector) == 0 {
		p.mu.Lock()
		for _, l := range p.listeners[key] {
			_ = l.Close()
		}
		delete(p.listeners, key)
		p.mu.Unlock()
		return
	}
	if _, err := p.ensure(svc); err != nil {
		p.logf("service proxy: %v", err)
	}
}

func (p *serviceProxy) close() {
	p.mu.Lock()
	p.closed = true
	for _, ls := range p.listeners {
		for _, l := range ls {
			_ = l.Close()
		}
	}
	p.listeners = map[string]map[int32]net.Listener{}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *serviceProxy) serve(l net.Listener, ns, name string, port int32) {
	defer p.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			p.forward(c, ns, name, port)
		}()
	}
}

// readyPods lists the ready, not terminating pods a Service selects, sorted
// by name so that choices are deterministic.
func (p *serviceProxy) readyPods(svc *corev1.Service) ([]*corev1.Pod, error) {
	if len(svc.Spec.Selector) == 0 {
		return nil, fmt.Errorf("%w: Service %s/%s has no selector; the test kubelet only proxies selector-based Services", errUnresolved, svc.Namespace, svc.Name)
	}
	all, err := p.pods.Pods(svc.Namespace).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return nil, fmt.Errorf("list pods of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	var out []*corev1.Pod
	for _, pod := range all {
		if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" {
			continue
		}
		if svc.Spec.PublishNotReadyAddresses || podReady(pod) {
			out = append(out, pod)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// targetPort resolves a Service port to the port on one pod: a number, or
// a container port name.
func targetPort(sp corev1.ServicePort, pod *corev1.Pod) (int, bool) {
	tp := sp.TargetPort
	if tp.StrVal == "" {
		if tp.IntVal == 0 {
			return int(sp.Port), true
		}
		return int(tp.IntVal), true
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal {
				return int(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

func (p *serviceProxy) forward(client net.Conn, ns, name string, port int32) {
	defer client.Close()
	svc, err := p.services.Services(ns).Get(name)
	if err != nil {
		return
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return
	}
	pods, err := p.readyPods(svc)
	if err != nil || len(pods) == 0 {
		// No endpoints: the client sees its connection closed at once, as
		// with a real Service that has no ready endpoints.
		return
	}
	key := ns + "/" + name
	p.mu.Lock()
	start := p.next[key]
	p.next[key] = start + 1
	p.mu.Unlock()
	var upstream net.Conn
	for i := range pods {
		pod := pods[(start+i)%len(pods)]
		tp, ok := targetPort(*sp, pod)
		if !ok {
			continue
		}
		upstream, err = net.DialTimeout("tcp", net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(tp)), 3*time.Second)
		if err == nil {
			break
		}
	}
	if upstream == nil {
		return
	}
	defer upstream.Close()
	// Client to pod: when the client half-closes, pass the half-close on
	// and keep reading the answer. Pod to client: when the pod closes (or
	// dies), the conversation is over, so both ends are closed, which is
	// what a client behind a real Service sees when its server pod goes away.
	up := make(chan struct{})
	go func() {
		defer close(up)
		_, _ = io.Copy(upstream, client)
		if tc, ok := upstream.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(client, upstream)
	_ = client.Close()
	_ = upstream.Close()
	<-up
}
