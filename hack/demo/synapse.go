package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/tcprepl/tcprepl/test/harness"
)

// demoHomeserverConfig is the emulated Synapse's homeserver config: two
// event persisters and a quarantined_media writer, media1, that runs but
// never announces its stream (element-hq/synapse#20080).
const demoHomeserverConfig = `server_name: matrix.demo.test
redis:
  enabled: true
stream_writers:
  events:
    - event_persister1
    - event_persister2
  quarantined_media_changes: media1
`

// synapseDemo shows the second use: a SynapseReplication watching a Synapse
// deployment of today over its Redis. The deployment is emulated by `tcprepl
// synapse-emulate` in a pod; redis-server runs on the host until stop.
func synapseDemo(ctx context.Context, env *harness.Env, kubectl func(args ...string) error) (stop func() error, err error) {
	stop = func() error { return nil }
	step("a SynapseReplication watching a Synapse deployment over Redis (emulated by `tcprepl synapse-emulate`, with media1 never announcing quarantined_media)")
	redis, err := harness.StartRedis(ctx, filepath.Join(env.Dir, "redis"))
	if errors.Is(err, harness.ErrNoRedisServer) {
		fmt.Printf("    skipped: %v\n", err)
		return stop, nil
	}
	if err != nil {
		return stop, err
	}
	stop = redis.Stop
	fmt.Printf("    redis-server on %s\n", redis.Addr)
	const name = "matrix"
	if err := env.ApplyEmulatedSynapse(ctx, ns, harness.EmulatedSynapse{
		Name: name, ServerName: "matrix.demo.test", RedisAddr: redis.Addr,
		HomeserverConfig: demoHomeserverConfig, Silent: []string{"quarantined_media=media1"},
	}); err != nil {
		return stop, err
	}
	fmt.Println("    waiting for the watcher to report the missing writer ...")
	if err := waitFor(ctx, 2*time.Minute, func() error {
		out, err := env.Kubectl(ctx, "get", "srepl", name, "--namespace", ns, "-o", "jsonpath={.status.missingWriterCount}")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "1" {
			return fmt.Errorf("missingWriterCount=%q", out)
		}
		return nil
	}); err != nil {
		if ctx.Err() != nil {
			return stop, ctx.Err()
		}
		return stop, fmt.Errorf("the SynapseReplication did not report the missing writer: %w\noperator log (tail):\n%s", err, env.OperatorLogTail(20))
	}
	if err := kubectl("get", "srepl", "--namespace", ns); err != nil {
		return stop, err
	}
	if err := kubectl("get", "srepl", name, "--namespace", ns, "-o",
		`jsonpath={range .status.conditions[*]}{.type}{"="}{.status}{" "}{.reason}{": "}{.message}{"\n"}{end}`); err != nil {
		return stop, err
	}
	return stop, kubectl("get", "srepl", name, "--namespace", ns, "-o",
		`jsonpath={range .status.streams[?(@.name=="events")].writers[*]}events/{.instance}{" position="}{.position}{" lastAdvance="}{.lastAdvanceTime}{"\n"}{end}`)
}
