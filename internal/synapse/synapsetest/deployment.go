// Package synapsetest emulates a Synapse deployment of today on a real
// Redis, as /work/shared/SYNAPSE-TODAY.md describes one: each process holds
// a publishing and a subscribing connection, answers every `REPLICATE ` by
// announcing `POSITION <stream> <instance> <token> <token>` for each stream
// it writes, and publishes RDATA rows (`batch` for all rows of one token but
// the last). For the watcher's tests, the operator's envtest and end-to-end
// tests, and demos.
//
// It speaks the wire format directly (no import of package synapse) so that
// package synapse's own tests can use it.
package synapsetest

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// MainInstance is the main process's instance name on the wire.
const MainInstance = "master"

// Deployment is a set of emulated processes sharing one Redis and one
// server name. It counts what it published, by command name, so a test can
// compare with what a watcher heard.
type Deployment struct {
	addr, password, serverName string

	mu        sync.Mutex
	published map[string]uint64
	processes []*Process
	// errs collects publish failures from the answering goroutines.
	errs []error
}

// Process is one emulated Synapse process.
type Process struct {
	d        *Deployment
	instance string
	pub      *redis.Client
	sub      *redis.PubSub
	done     chan struct{}

	mu        sync.Mutex
	positions map[string]int64
	silent    map[string]bool
}

// New returns an empty deployment on the Redis at addr (password may be
// empty) for server_name serverName.
func New(addr, password, serverName string) *Deployment {
	return &Deployment{addr: addr, password: password, serverName: serverName, published: make(map[string]uint64)}
}

// Start brings up a process writing the given streams at the given tokens.
// Streams named in silent are written but never announced: the
// quarantined_media writer of element-hq/synapse#20080. Like a Synapse
// process, it subscribes (main also to `<server_name>/USER_IP`) and then
// publishes `REPLICATE `, which every process, itself included, answers.
// Stop (or Deployment.Close) ends it.
func (d *Deployment) Start(ctx context.Context, instance string, positions map[string]int64, silent ...string) (*Process, error) {
	p := &Process{
		d:         d,
		instance:  instance,
		pub:       redis.NewClient(&redis.Options{Addr: d.addr, Password: d.password, Protocol: 2, DisableIdentity: true}),
		positions: maps.Clone(positions),
		silent:    make(map[string]bool),
		done:      make(chan struct{}),
	}
	if p.positions == nil {
		p.positions = make(map[string]int64)
	}
	for _, s := range silent {
		p.silent[s] = true
	}
	channels := []string{d.serverName}
	if instance == MainInstance {
		channels = append(channels, d.serverName+"/USER_IP")
	}
	p.sub = p.pub.Subscribe(ctx, channels...)
	for range channels {
		if _, err := p.sub.Receive(ctx); err != nil {
			_ = p.sub.Close()
			_ = p.pub.Close()
			return nil, fmt.Errorf("emulated %s: subscribe: %w", instance, err)
		}
	}
	go p.answer()
	d.mu.Lock()
	d.processes = append(d.processes, p)
	d.mu.Unlock()
	return p, p.Publish(ctx, "REPLICATE ")
}

// answer re-announces every written stream on each REPLICATE, like
// Synapse's ReplicationCommandHandler.on_REPLICATE.
func (p *Process) answer() {
	defer close(p.done)
	for msg := range p.sub.Channel() {
		if msg.Channel != p.d.serverName || msg.Payload != "REPLICATE " {
			continue
		}
		if err := p.Announce(context.Background()); err != nil {
			p.d.mu.Lock()
			p.d.errs = append(p.d.errs, err)
			p.d.mu.Unlock()
		}
	}
}

// Instance is the process's instance name.
func (p *Process) Instance() string { return p.instance }

// Announce publishes POSITION for every stream the process writes and does
// not keep silent.
func (p *Process) Announce(ctx context.Context) error {
	p.mu.Lock()
	var lines []string
	for stream, tok := range p.positions {
		if !p.silent[stream] {
			lines = append(lines, fmt.Sprintf("POSITION %s %s %d %d", stream, p.instance, tok, tok))
		}
	}
	p.mu.Unlock()
	for _, l := range lines {
		if err := p.Publish(ctx, l); err != nil {
			return err
		}
	}
	return nil
}

// Write publishes rows new rows on stream under the next token: all but
// the last with token `batch`. It returns the new token.
func (p *Process) Write(ctx context.Context, stream string, rows int) (int64, error) {
	p.mu.Lock()
	p.positions[stream]++
	tok := p.positions[stream]
	p.mu.Unlock()
	for i := 0; i < rows; i++ {
		token := "batch"
		if i == rows-1 {
			token = strconv.FormatInt(tok, 10)
		}
		row := `["$ev` + strconv.Itoa(i) + `:example.org","!room:example.org","m.room.message",null,null,null,false,1,null]`
		if err := p.Publish(ctx, "RDATA "+stream+" "+p.instance+" "+token+" "+row); err != nil {
			return tok, err
		}
	}
	return tok, nil
}

// Restart models the process restarting at token at on stream: it
// publishes `REPLICATE ` on reconnect, and every process answers.
func (p *Process) Restart(ctx context.Context, stream string, at int64) error {
	p.mu.Lock()
	p.positions[stream] = at
	p.mu.Unlock()
	return p.Publish(ctx, "REPLICATE ")
}

// Publish publishes one command line as is: on `<server_name>/USER_IP`
// for USER_IP, on `<server_name>` otherwise.
func (p *Process) Publish(ctx context.Context, line string) error {
	channel := p.d.serverName
	name, _, _ := strings.Cut(line, " ")
	if name == "USER_IP" {
		channel += "/USER_IP"
	}
	if err := p.pub.Publish(ctx, channel, line).Err(); err != nil {
		return fmt.Errorf("emulated %s: publish %s: %w", p.instance, name, err)
	}
	p.d.mu.Lock()
	p.d.published[name]++
	p.d.mu.Unlock()
	return nil
}

// Stop closes the process's connections and waits for it.
func (p *Process) Stop() {
	_ = p.sub.Close()
	<-p.done
	_ = p.pub.Close()
}

// Published returns what the deployment's processes published, by command
// name, on both channels.
func (d *Deployment) Published() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.published)
}

// Err returns the first failure of a process answering REPLICATE, if any.
func (d *Deployment) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.errs) > 0 {
		return d.errs[0]
	}
	return nil
}

// Close stops every process.
func (d *Deployment) Close() {
	d.mu.Lock()
	ps := d.processes
	d.processes = nil
	d.mu.Unlock()
	for _, p := range ps {
		p.Stop()
	}
}
