package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/synapse"
	"github.com/tcprepl/tcprepl/internal/synapse/redistest"
)

// realSynapseWatcher is the operator's wiring (cmd/tcprepl), with a short
// settle time so that missing writers show quickly.
func realSynapseWatcher(t *testing.T) SynapseWatcherFactory {
	return func(tg SynapseWatchTarget) (SynapseWatcher, error) {
		return synapse.NewWatcher(synapse.Config{
			Addr: tg.Addr, Username: tg.Username, Password: tg.Password, DB: tg.DB, TLS: tg.TLS,
			ServerName: tg.ServerName, SolicitInterval: tg.SolicitInterval, StreamWriters: tg.StreamWriters,
			SettleTime: 500 * time.Millisecond, StatsInterval: 500 * time.Millisecond, MaxBackoff: time.Second,
			Logger: testr.New(t),
		})
	}
}

// answerReplicate plays the processes of a deployment: on every REPLICATE
// each writer of writers (but the silent one) announces its position, and
// each writer publishes a row every 200ms.
func answerReplicate(t *testing.T, addr, password, channel string, writers map[string][]string, silent synapse.WriterRef) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, Protocol: 2, DisableIdentity: true})
	sub := c.Subscribe(ctx, channel)
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("emulated deployment: subscribe: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		_ = sub.Close()
		_ = c.Close()
	})
	var pairs []synapse.WriterRef
	for s, insts := range writers {
		for _, i := range insts {
			if (synapse.WriterRef{Stream: s, Instance: i}) != silent {
				pairs = append(pairs, synapse.WriterRef{Stream: s, Instance: i})
			}
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].Stream+pairs[i].Instance < pairs[j].Stream+pairs[j].Instance })
	token := int64(100)
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		msgs := sub.Channel()
		for {
			var lines []string
			select {
			case <-ctx.Done():
				return
			case m := <-msgs:
				if strings.TrimSpace(m.Payload) != "REPLICATE" {
					continue
				}
				for _, p := range pairs {
					lines = append(lines, fmt.Sprintf("POSITION %s %s %d %d", p.Stream, p.Instance, token, token))
				}
			case <-tick.C:
				token++
				for _, p := range pairs {
					lines = append(lines, fmt.Sprintf(`RDATA %s %s %d ["row"]`, p.Stream, p.Instance, token))
				}
			}
			for _, l := range lines {
				if err := c.Publish(ctx, channel, l).Err(); err != nil && ctx.Err() == nil {
					t.Errorf("emulated deployment: publish: %v", err)
					return
				}
			}
		}
	}()
}

// TestSynapseReplicationRealWatcher runs the controller with the real
// watcher against a real redis-server with a password.
func TestSynapseReplicationRealWatcher(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	addr, _ := redistest.StartRedis(t, "--requirepass", "s3cret")
	writers, err := synapse.ParseStreamWriters([]byte(homeserverYAML))
	if err != nil {
		t.Fatal(err)
	}
	answerReplicate(t, addr, "s3cret", "example.com", writers, synapse.WriterRef{Stream: "quarantined_media", Instance: "media1"})

	ns := startSynapseOperator(t, realSynapseWatcher(t), synapse.ParseStreamWriters)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "redis"}, Data: map[string][]byte{"password": []byte("s3cret")}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hs"}, Data: map[string]string{"homeserver.yaml": homeserverYAML}}
	sr := minimalSynapseReplication(ns, "real")
	sr.Spec.Redis.Address = addr
	sr.Spec.Redis.PasswordSecretRef = &replv1.SecretKeyRef{Name: "redis", Key: "password"}
	sr.Spec.HomeserverConfigRef = &replv1.ConfigKeyRef{Name: "hs", Key: "homeserver.yaml"}
	for _, err := range []error{k8s.Create(ctx, secret), k8s.Create(ctx, cm), k8s.Create(ctx, sr)} {
		if err != nil {
			t.Fatal(err)
		}
	}

	eventually(t, 30*time.Second, "status shows the deployment with one missing writer", func() error {
		got := getSynapseReplication(t, ns, "real")
		if err := srConditionIs(got, replv1.ConditionReady, "True", replv1.ReasonSubscribed); err != nil {
			return err
		}
		if err := srConditionIs(got, replv1.ConditionWritersHealthy, "False", replv1.ReasonMissingWriter); err != nil {
			return err
		}
		st := got.Status
		if st.MissingWriterCount != 1 || len(st.MissingWriters) != 1 || st.MissingWriters[0] != (replv1.SynapseWriterRef{Stream: "quarantined_media", Instance: "media1"}) {
			return fmt.Errorf("missing writers %d %v", st.MissingWriterCount, st.MissingWriters)
		}
		events := -1
		for i, s := range st.Streams {
			if s.Name == "events" {
				events = i
			}
		}
		if events < 0 || len(st.Streams[events].Writers) != 2 {
			return fmt.Errorf("events stream: %+v", st.Streams)
		}
		for _, w := range st.Streams[events].Writers {
			if !w.Announced || !w.Configured || w.Position < 100 {
				return fmt.Errorf("events writer %+v", w)
			}
		}
		if st.Redis == nil || st.Redis.Subscribers < 2 || st.Redis.OutputBufferLimitBytes <= 0 {
			return fmt.Errorf("redis status %+v", st.Redis)
		}
		if strings.Join(st.Responders, ",") != "event_persister1,event_persister2,master" {
			return fmt.Errorf("responders %v", st.Responders)
		}
		return nil
	})

	// A wrong password: the watcher is restarted with it and says so.
	secret.Data["password"] = []byte("wrong")
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Ready False RedisAuthFailed", func() error {
		return srConditionIs(getSynapseReplication(t, ns, "real"), replv1.ConditionReady, "False", replv1.ReasonRedisAuthFailed)
	})
}
