package kubelet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// ipAllocator hands out loopback addresses from 127.<subnet>.0.0/16: pods
// from the bottom (127.S.0.2, 127.S.0.3, ...), Service proxies from the top
// (127.S.255.1, ...). Every address on 127.0.0.0/8 is local on Linux, so a
// process can bind any of them without configuration.
//
// Addresses are sticky by key (namespace/name): a StatefulSet pod that is
// deleted and recreated under the same name gets its old address back, the
// way cluster DNS keeps naming it, so clients that resolved it before keep
// reaching it.
//
// The subnet is claimed with an flock on a file in the system temp dir, so
// that kubelets of tests running in parallel (go test runs packages in
// parallel) never share addresses.
type ipAllocator struct {
	subnet int
	lock   *os.File

	mu       sync.Mutex
	pods     map[string]string
	services map[string]string
}

const (
	minSubnet = 16
	maxSubnet = 250
)

func newIPAllocator(subnet int) (*ipAllocator, error) {
	if subnet != 0 {
		f, err := claimSubnet(subnet)
		if err != nil {
			return nil, err
		}
		return &ipAllocator{subnet: subnet, lock: f, pods: map[string]string{}, services: map[string]string{}}, nil
	}
	start := minSubnet + rand.IntN(maxSubnet-minSubnet)
	for i := range maxSubnet - minSubnet {
		s := minSubnet + (start-minSubnet+i)%(maxSubnet-minSubnet)
		f, err := claimSubnet(s)
		if errors.Is(err, errSubnetTaken) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &ipAllocator{subnet: s, lock: f, pods: map[string]string{}, services: map[string]string{}}, nil
	}
	return nil, fmt.Errorf("every loopback subnet 127.%d-%d.0.0/16 is claimed by another test kubelet; stop some", minSubnet, maxSubnet-1)
}

var errSubnetTaken = errors.New("subnet claimed by another kubelet")

func claimSubnet(s int) (*os.File, error) {
	if s < 1 || s > 254 {
		return nil, fmt.Errorf("loopback subnet %d is out of range 1-254", s)
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("tcprepl-testkubelet-127.%d.lock", s))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open subnet lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: 127.%d.0.0/16 (%s)", errSubnetTaken, s, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

func (a *ipAllocator) release() {
	if a.lock != nil {
		_ = a.lock.Close()
	}
}

func (a *ipAllocator) podIP(key string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.pods[key]; ok {
		return ip, nil
	}
	n := len(a.pods)
	// 250 per /24, skipping .0, .1 and .255; the top /24s are for Services.
	if n >= 250*200 {
		return "", fmt.Errorf("out of pod addresses in 127.%d.0.0/16", a.subnet)
	}
	ip := fmt.Sprintf("127.%d.%d.%d", a.subnet, n/250, 2+n%250)
	a.pods[key] = ip
	return ip, nil
}

func (a *ipAllocator) serviceIP(key string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.services[key]; ok {
		return ip, nil
	}
	n := len(a.services)
	if n >= 250*50 {
		return "", fmt.Errorf("out of Service addresses in 127.%d.0.0/16", a.subnet)
	}
	ip := fmt.Sprintf("127.%d.%d.%d", a.subnet, 255-n/250, 2+n%250)
	a.services[key] = ip
	return ip, nil
}
