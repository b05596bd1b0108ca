package synapse

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// emulatedProcess is one Synapse process as SYNAPSE-TODAY.md describes it:
// a publishing connection, a subscribing connection on `<server_name>` (and
// `<server_name>/USER_IP` for main), and an answer to every REPLICATE: one
// `POSITION s inst t t` per stream it writes.
type emulatedProcess struct {
	d        *deployment
	instance string
	pub      *redis.Client
	sub      *redis.PubSub
	done     chan struct{}

	mu sync.Mutex
	// positions are the streams it writes and its token on each.
	positions map[string]int64
	// silent streams are written but never announced: the quarantined_media
	// writer of element-hq/synapse#20080.
	silent map[string]bool
}

// deployment is a set of emulated processes on one Redis and one channel,
// counting what it published so tests can compare with the watcher.
type deployment struct {
	t       testing.TB
	addr    string
	channel string

	mu        sync.Mutex
	published map[string]uint64 // by command name, both channels
	userIPs   uint64
	processes []*emulatedProcess
}

func newDeployment(t testing.TB, addr, channel string) *deployment {
	return &deployment{t: t, addr: addr, channel: channel, published: make(map[string]uint64)}
}

// start brings up one process writing streams at the given positions; it
// publishes REPLICATE once subscribed, as a Synapse process does on connect.
func (d *deployment) start(instance string, positions map[string]int64, silent ...string) *emulatedProcess {
	d.t.Helper()
	p := &emulatedProcess{
		d:         d,
		instance:  instance,
		pub:       redis.NewClient(&redis.Options{Addr: d.addr, Protocol: 2, DisableIdentity: true}),
		positions: maps.Clone(positions),
		silent:    make(map[string]bool),
		done:      make(chan struct{}),
	}
	for _, s := range silent {
		p.silent[s] = true
	}
	channels := []string{d.channel}
	if instance == MainInstance {
		channels = append(channels, d.channel+userIPSuffix)
	}
	ctx := context.Background()
	p.sub = p.pub.Subscribe(ctx, channels...)
	for range channels {
		if _, err := p.sub.Receive(ctx); err != nil {
			d.t.Fatalf("emulated %s: subscribe: %v", instance, err)
		}
	}
	go p.answer()
	d.mu.Lock()
	d.processes = append(d.processes, p)
	d.mu.Unlock()
	d.t.Cleanup(p.stop)
	p.publish(Replicate{})
	return p
}

// answer re-announces every written stream on each REPLICATE, like
// Synapse's ReplicationCommandHandler.on_REPLICATE.
func (p *emulatedProcess) answer() {
	defer close(p.done)
	for msg := range p.sub.Channel() {
		if msg.Channel != p.d.channel || msg.Payload != replicateMessage {
			continue
		}
		p.announce()
	}
}

func (p *emulatedProcess) announce() {
	p.mu.Lock()
	var cmds []Command
	for stream, tok := range p.positions {
		if !p.silent[stream] {
			cmds = append(cmds, Position{Stream: stream, Instance: p.instance, PrevToken: tok, NewToken: tok})
		}
	}
	p.mu.Unlock()
	for _, c := range cmds {
		p.publish(c)
	}
}

// write publishes rows on stream: all but the last as batch, the last with
// the next token.
func (p *emulatedProcess) write(stream string, rows int) int64 {
	p.mu.Lock()
	p.positions[stream]++
	tok := p.positions[stream]
	p.mu.Unlock()
	for i := 0; i < rows; i++ {
		c := RData{Stream: stream, Instance: p.instance, Row: `["$ev` + strconv.Itoa(i) + `:example.org","!room:example.org","m.room.message",null,null,null,false,1,null]`}
		if i == rows-1 {
			c.Token = tok
		} else {
			c.Batch = true
		}
		p.publish(c)
	}
	return tok
}

// restart models the process restarting at a new position on stream: it
// publishes REPLICATE on reconnect, and every process (itself included)
// answers it.
func (p *emulatedProcess) restart(stream string, at int64) {
	p.mu.Lock()
	p.positions[stream] = at
	p.mu.Unlock()
	p.publish(Replicate{})
}

func (p *emulatedProcess) publish(c Command) {
	p.d.t.Helper()
	channel := p.d.channel
	if _, ok := c.(UserIP); ok {
		channel += userIPSuffix
	}
	if err := p.pub.Publish(context.Background(), channel, Format(c)).Err(); err != nil {
		p.d.t.Errorf("emulated %s: publish %s: %v", p.instance, c.Name(), err)
		return
	}
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	p.d.published[c.Name()]++
	if channel != p.d.channel {
		p.d.userIPs++
	}
}

// publishRaw publishes a message as is, for bad input.
func (d *deployment) publishRaw(channel, msg string) {
	d.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: d.addr, Protocol: 2, DisableIdentity: true})
	defer func() { _ = c.Close() }()
	if err := c.Publish(context.Background(), channel, msg).Err(); err != nil {
		d.t.Fatalf("publish %q: %v", truncate(msg, 40), err)
	}
}

func (p *emulatedProcess) stop() {
	_ = p.sub.Close()
	<-p.done
	_ = p.pub.Close()
}

// sent returns what the deployment published on the main channel, by name.
func (d *deployment) sent() map[string]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.published)
}

func (d *deployment) String() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fmt.Sprintf("published %v, USER_IP %d", d.published, d.userIPs)
}
