package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
)

// bindAttempts bounds how often a component is started again after losing
// the race for a port it was given.
const bindAttempts = 5

// addrInUse is what etcd, kube-apiserver, kube-controller-manager and Go
// programs print when bind fails because the port is taken.
const addrInUse = "address already in use"

// startOnFreePorts starts a component that must be told its ports up front
// (etcd, kube-apiserver, kube-controller-manager take no port 0 they would
// report back): it picks free ports, starts the component with args(ports)
// and waits for ready(ports). Between picking a port and the component
// binding it another process on the machine may take it; the component then
// exits saying so, and is started again on new ports, up to bindAttempts
// times. Any other failure is returned at once.
func (c *Cluster) startOnFreePorts(ctx context.Context, name, bin string, n int, args func(ports []int) []string, ready func(ports []int) error) ([]int, error) {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(n)
		if err != nil {
			return nil, err
		}
		if err := c.start(name, bin, args(ports)...); err != nil {
			return nil, err
		}
		err = ready(ports)
		if err == nil {
			return ports, nil
		}
		if attempt >= bindAttempts || ctx.Err() != nil || !c.lostBindRace(name) {
			return nil, err
		}
		c.forget(name)
	}
}

// lostBindRace reports whether the named component has exited and its log
// says a port was taken.
func (c *Cluster) lostBindRace(name string) bool {
	select {
	case <-c.exited(name):
	default:
		return false
	}
	b, err := os.ReadFile(c.LogPath(name))
	return err == nil && strings.Contains(string(b), addrInUse)
}

// forget drops an exited component, so that it can be started again under
// the same name (its log is rewritten by the next start).
func (c *Cluster) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.procs {
		if p.Name == name {
			c.procs = append(c.procs[:i], c.procs[i+1:]...)
			break
		}
	}
	delete(c.logs, name)
}

// freePorts returns n distinct ports free on 127.0.0.1 at the time of the
// call. The listeners are held until all n are chosen, so the same port is
// not handed out twice; after that the ports are free for anyone, which is
// why startOnFreePorts retries.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
