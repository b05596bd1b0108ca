package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/synapse"
)

// synapse-emulate is a demo and test aid, hidden from help: it plays a
// Synapse deployment of today on a Redis, as docs/synapse.md and
// SYNAPSE-TODAY.md describe one, so that a SynapseReplication (or `tcprepl
// probe --redis`) has something to watch without a Synapse.

type emulateFlags struct {
	redisAddr    string
	passwordFile string
	serverName   string
	writers      []string
	silent       []string
	configFile   string
	configYAML   string
	interval     time.Duration
}

func newSynapseEmulateCommand() *cobra.Command {
	f := emulateFlags{}
	cmd := &cobra.Command{
		Use:    "synapse-emulate",
		Short:  "Emulate a Synapse deployment's replication on Redis (a demo and test aid)",
		Hidden: true,
		Long: `Publish, on the Redis pub/sub channel <server-name>, what the processes of a
Synapse deployment (1.67 and later) publish: each process subscribes and
sends "REPLICATE " on connect, answers every REPLICATE with one
"POSITION <stream> <instance> <token> <token>" per stream it writes, and
each writer sends "RDATA <stream> <instance> <token> <row>" every
--interval. A --silent-writer is a process that runs but never announces
the stream it is configured for (element-hq/synapse#20080).

Not a Synapse: its rows are synthetic. For demos and tests only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := newEmulatedDeployment(f)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "emulating %s on redis %s: %s\n", f.serverName, f.redisAddr, d.describe())
			return d.run(ctx)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.redisAddr, "redis", "127.0.0.1:6379", "Redis host:port")
	fs.StringVar(&f.passwordFile, "redis-password-file", "", "file holding the Redis password")
	fs.StringVar(&f.serverName, "server-name", "", "the homeserver's server_name, which is the channel (required)")
	fs.StringArrayVar(&f.writers, "writer", nil, "STREAM=INSTANCE: the instance writes the stream and announces it (repeatable; default events=master without a homeserver config)")
	fs.StringVar(&f.configFile, "homeserver-config", "", "homeserver config YAML whose stream_writers (with Synapse's defaults) give the writers")
	fs.StringVar(&f.configYAML, "homeserver-config-yaml", "", "the same, given inline")
	fs.StringArrayVar(&f.silent, "silent-writer", nil, "STREAM=INSTANCE: the instance runs but never announces the stream (repeatable)")
	fs.DurationVar(&f.interval, "interval", time.Second, "how often each writer publishes a row")
	return cmd
}

// emulatedProcess is one Synapse process: its instance name and the
// streams it writes, with its token on each.
type emulatedProcess struct {
	instance string
	client   *redis.Client

	mu     sync.Mutex
	tokens map[string]int64
}

type emulatedDeployment struct {
	channel   string
	interval  time.Duration
	processes []*emulatedProcess
}

func parseStreamInstance(flag, v string) (string, string, error) {
	stream, instance, ok := strings.Cut(v, "=")
	if !ok || stream == "" || instance == "" || strings.ContainsAny(v, " \n") {
		return "", "", fmt.Errorf("--%s %q: want STREAM=INSTANCE without spaces", flag, v)
	}
	return stream, instance, nil
}

func newEmulatedDeployment(f emulateFlags) (*emulatedDeployment, error) {
	if f.serverName == "" {
		return nil, errors.New("--server-name is required: it is the channel the deployment publishes on")
	}
	if f.interval <= 0 {
		return nil, fmt.Errorf("--interval %s: must be positive", f.interval)
	}
	opts := &redis.Options{Addr: f.redisAddr, Protocol: 2, DisableIdentity: true}
	if f.passwordFile != "" {
		pw, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("read --redis-password-file: %w", err)
		}
		opts.Password = strings.TrimRight(string(pw), "\r\n")
	}
	byInstance := map[string]*emulatedProcess{}
	process := func(instance string) *emulatedProcess {
		p, ok := byInstance[instance]
		if !ok {
			o := *opts
			p = &emulatedProcess{instance: instance, client: redis.NewClient(&o), tokens: map[string]int64{}}
			byInstance[instance] = p
		}
		return p
	}
	// Every deployment has its main process.
	process(synapse.MainInstance)
	silent := map[[2]string]bool{}
	for _, w := range f.silent {
		stream, instance, err := parseStreamInstance("silent-writer", w)
		if err != nil {
			return nil, err
		}
		silent[[2]string{stream, instance}] = true
		process(instance)
	}
	pairs, err := emulatedWriters(f)
	if err != nil {
		return nil, err
	}
	for i, pair := range pairs {
		if silent[pair] {
			continue
		}
		// Distinct starting tokens, so that two writers of one stream show
		// a spread.
		process(pair[1]).tokens[pair[0]] = int64(1000 + 10*i)
	}
	d := &emulatedDeployment{channel: f.serverName, interval: f.interval}
	for _, p := range byInstance {
		d.processes = append(d.processes, p)
	}
	sort.Slice(d.processes, func(i, j int) bool { return d.processes[i].instance < d.processes[j].instance })
	return d, nil
}

// emulatedWriters are the (stream, instance) pairs to write: those of the
// homeserver config, as Synapse reads its stream_writers, and --writer.
func emulatedWriters(f emulateFlags) ([][2]string, error) {
	var cfg []byte
	switch {
	case f.configFile != "" && f.configYAML != "":
		return nil, errors.New("give --homeserver-config or --homeserver-config-yaml, not both")
	case f.configFile != "":
		b, err := os.ReadFile(f.configFile)
		if err != nil {
			return nil, fmt.Errorf("read --homeserver-config: %w", err)
		}
		cfg = b
	case f.configYAML != "":
		cfg = []byte(f.configYAML)
	}
	var pairs [][2]string
	if cfg != nil {
		sw, err := synapse.ParseStreamWriters(cfg)
		if err != nil {
			return nil, fmt.Errorf("homeserver config: %w", err)
		}
		streams := make([]string, 0, len(sw))
		for s := range sw {
			streams = append(streams, s)
		}
		sort.Strings(streams)
		for _, s := range streams {
			for _, inst := range sw[s] {
				pairs = append(pairs, [2]string{s, inst})
			}
		}
	}
	writers := f.writers
	if cfg == nil && len(writers) == 0 {
		writers = []string{"events=" + synapse.MainInstance}
	}
	for _, w := range writers {
		stream, instance, err := parseStreamInstance("writer", w)
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, [2]string{stream, instance})
	}
	return pairs, nil
}

func (d *emulatedDeployment) describe() string {
	var parts []string
	for _, p := range d.processes {
		var streams []string
		for s := range p.tokens {
			streams = append(streams, s)
		}
		sort.Strings(streams)
		parts = append(parts, fmt.Sprintf("%s writes [%s]", p.instance, strings.Join(streams, " ")))
	}
	return strings.Join(parts, "; ")
}

// run starts every process and runs until ctx ends or one fails.
func (d *emulatedDeployment) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, p := range d.processes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx, d.channel, d.interval); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("emulated process %s: %w", p.instance, err))
			}
		}()
	}
	wg.Wait()
	for _, p := range d.processes {
		_ = p.client.Close()
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// run subscribes, solicits positions as a (re)connecting Synapse process
// does, answers REPLICATE and publishes a row per stream every interval.
func (p *emulatedProcess) run(ctx context.Context, channel string, interval time.Duration) error {
	sub := p.client.Subscribe(ctx, channel)
	defer func() { _ = sub.Close() }()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe to %q: %w", channel, err)
	}
	if err := p.client.Publish(ctx, channel, "REPLICATE ").Err(); err != nil {
		return fmt.Errorf("publish REPLICATE: %w", err)
	}
	msgs := sub.Channel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return errors.New("subscription closed")
			}
			if strings.TrimSpace(m.Payload) == "REPLICATE" {
				if err := p.announce(ctx, channel); err != nil {
					return err
				}
			}
		case <-tick.C:
			if err := p.advance(ctx, channel); err != nil {
				return err
			}
		}
	}
}

// announce answers REPLICATE: `POSITION s inst t t` for every stream.
func (p *emulatedProcess) announce(ctx context.Context, channel string) error {
	for _, line := range p.lines(func(stream string, token int64) string {
		return fmt.Sprintf("POSITION %s %s %d %d", stream, p.instance, token, token)
	}) {
		if err := p.client.Publish(ctx, channel, line).Err(); err != nil {
			return fmt.Errorf("publish %q: %w", line, err)
		}
	}
	return nil
}

// advance writes one row on every stream the process writes.
func (p *emulatedProcess) advance(ctx context.Context, channel string) error {
	p.mu.Lock()
	for s := range p.tokens {
		p.tokens[s]++
	}
	p.mu.Unlock()
	for _, line := range p.lines(func(stream string, token int64) string {
		return fmt.Sprintf(`RDATA %s %s %d ["emulated","%s",%d]`, stream, p.instance, token, p.instance, token)
	}) {
		if err := p.client.Publish(ctx, channel, line).Err(); err != nil {
			return fmt.Errorf("publish %q: %w", line, err)
		}
	}
	return nil
}

func (p *emulatedProcess) lines(format func(string, int64) string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	streams := make([]string, 0, len(p.tokens))
	for s := range p.tokens {
		streams = append(streams, s)
	}
	sort.Strings(streams)
	out := make([]string, len(streams))
	for i, s := range streams {
		out[i] = format(s, p.tokens[s])
	}
	return out
}
