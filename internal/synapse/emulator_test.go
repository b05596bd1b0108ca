package synapse

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tcprepl/tcprepl/internal/synapse/synapsetest"
)

// deployment wraps synapsetest's emulated Synapse deployment for tests:
// failures fail the test, commands are typed.
type deployment struct {
	*synapsetest.Deployment
	t    testing.TB
	addr string
}

type emulatedProcess struct {
	*synapsetest.Process
	t testing.TB
}

func newDeployment(t testing.TB, addr, channel string) *deployment {
	d := &deployment{Deployment: synapsetest.New(addr, "", channel), t: t, addr: addr}
	t.Cleanup(func() {
		d.Close()
		if err := d.Err(); err != nil {
			t.Errorf("emulated deployment: %v", err)
		}
	})
	return d
}

func (d *deployment) start(instance string, positions map[string]int64, silent ...string) *emulatedProcess {
	d.t.Helper()
	p, err := d.Start(context.Background(), instance, positions, silent...)
	if err != nil {
		d.t.Fatal(err)
	}
	return &emulatedProcess{Process: p, t: d.t}
}

func (p *emulatedProcess) write(stream string, rows int) {
	p.t.Helper()
	if _, err := p.Write(context.Background(), stream, rows); err != nil {
		p.t.Fatal(err)
	}
}

func (p *emulatedProcess) restart(stream string, at int64) {
	p.t.Helper()
	if err := p.Restart(context.Background(), stream, at); err != nil {
		p.t.Fatal(err)
	}
}

func (p *emulatedProcess) publish(c Command) {
	p.t.Helper()
	if err := p.Publish(context.Background(), Format(c)); err != nil {
		p.t.Fatal(err)
	}
}

// sent returns what the deployment published, by command name.
func (d *deployment) sent() map[string]uint64 { return d.Published() }

// publishRaw publishes a message as is, from outside the deployment, for
// bad input.
func (d *deployment) publishRaw(channel, msg string) {
	d.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: d.addr, Protocol: 2, DisableIdentity: true})
	defer func() { _ = c.Close() }()
	if err := c.Publish(context.Background(), channel, msg).Err(); err != nil {
		d.t.Fatalf("publish %q: %v", truncate(msg, 40), err)
	}
}
