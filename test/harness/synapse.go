package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tcprepl/tcprepl/test/internal/proc"
)

// RedisServer is a redis-server process for the emulated Synapse
// deployment of the end-to-end test and the demo.
type RedisServer struct {
	// Addr is redisHost:PORT, where pods of the test kubelet and the
	// operator reach it.
	Addr string
	p    *proc.Process
}

// ErrNoRedisServer: redis-server is not installed.
var ErrNoRedisServer = errors.New("redis-server is not installed (Debian: apt-get install redis-server)")

// redisHost is a loopback address outside the test kubelet's pod subnets
// (127.N.0.0/16, N > 0): the kubelet rewrites 127.0.0.1 in a pod's
// arguments to the pod's own IP, as "localhost" means the pod itself.
const redisHost = "127.0.0.2"

// StartRedis starts redis-server on a free port of redisHost, without
// persistence, in dir.
func StartRedis(ctx context.Context, dir string) (*RedisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedisServer
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	var last error
	// A port found free can be taken before redis-server binds it: retry
	// with another.
	for range 5 {
		port, err := freePortOn(redisHost)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort(redisHost, strconv.Itoa(port))
		logPath := filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log")
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", redisHost, "--save", "", "--appendonly", "no",
			"--dir", dir, "--logfile", logPath)
		p, err := proc.Start("redis-server", cmd)
		if err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		if last = waitTCP(ctx, addr, 10*time.Second, p.Done()); last == nil {
			return &RedisServer{Addr: addr, p: p}, nil
		}
		_ = p.Stop(time.Second)
		if log, _ := os.ReadFile(logPath); !strings.Contains(string(log), "in use") {
			return nil, fmt.Errorf("redis-server on %s: %w\n%s", addr, last, log)
		}
	}
	return nil, fmt.Errorf("redis-server: no free port: %w", last)
}

func freePortOn(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Stop ends the redis-server.
func (r *RedisServer) Stop() error {
	if r == nil || r.p == nil {
		return nil
	}
	return r.p.Stop(5 * time.Second)
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("exited (last: %w)", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out after %s: %w", timeout, last)
}

// EmulatedSynapse describes a Synapse deployment that `tcprepl
// synapse-emulate` plays in a pod, and the SynapseReplication that watches
// it.
type EmulatedSynapse struct {
	// Name of the Deployment, the ConfigMap and the SynapseReplication.
	Name       string
	ServerName string
	RedisAddr  string
	// HomeserverConfig is the homeserver YAML (its stream_writers) that
	// both the emulator and the SynapseReplication read.
	HomeserverConfig string
	// Silent are STREAM=INSTANCE writers that run but never announce.
	Silent []string
}

// ApplyEmulatedSynapse creates, in ns, the homeserver config ConfigMap, a
// Deployment running the emulated deployment and a SynapseReplication that
// points at its Redis and the ConfigMap.
func (e *Env) ApplyEmulatedSynapse(ctx context.Context, ns string, s EmulatedSynapse) error {
	args := []string{"tcprepl", "synapse-emulate", "--redis", s.RedisAddr, "--server-name", s.ServerName,
		"--homeserver-config-yaml", s.HomeserverConfig, "--interval", "1s"}
	for _, w := range s.Silent {
		args = append(args, "--silent-writer", w)
	}
	// Not app.kubernetes.io/instance: the tests select a topology's objects
	// by it.
	labels := map[string]any{"app.kubernetes.io/name": "synapse-emulated", "tcprepl.io/emulated-synapse": s.Name}
	objs := []map[string]any{
		{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": s.Name + "-synapse"},
			"data":     map[string]any{"homeserver.yaml": s.HomeserverConfig},
		},
		{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": s.Name + "-synapse", "labels": labels},
			"spec": map[string]any{
				"replicas": 1,
				"selector": map[string]any{"matchLabels": labels},
				"template": map[string]any{
					"metadata": map[string]any{"labels": labels},
					"spec": map[string]any{"containers": []any{map[string]any{
						// The built image, whose binary has the emulator.
						"name": "synapse", "image": e.Tools.Image, "command": args,
					}}},
				},
			},
		},
		{
			"apiVersion": "replication.tcprepl.io/v1alpha1", "kind": "SynapseReplication",
			"metadata": map[string]any{"name": s.Name},
			"spec": map[string]any{
				"serverName": s.ServerName,
				"redis":      map[string]any{"address": s.RedisAddr},
				"homeserverConfigRef": map[string]any{
					"kind": "ConfigMap", "name": s.Name + "-synapse", "key": "homeserver.yaml",
				},
			},
		},
	}
	for _, o := range objs {
		if err := e.apply(ctx, ns, o); err != nil {
			return fmt.Errorf("apply %s: %w", o["kind"], err)
		}
	}
	return nil
}
