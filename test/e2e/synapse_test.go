package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/test/harness"
)

// e2eHomeserverConfig is the emulated deployment's homeserver config: two
// event persisters, and a quarantined_media writer (media1) that runs but
// never announces its stream (element-hq/synapse#20080). Every other stream
// defaults to the main process, as in Synapse.
const e2eHomeserverConfig = `server_name: matrix.e2e.test
redis:
  enabled: true
stream_writers:
  events:
    - event_persister1
    - event_persister2
  quarantined_media_changes: media1
`

type synapseReplicationStatus struct {
	Conditions         []condition `json:"conditions"`
	StreamCount        int32       `json:"streamCount"`
	WriterCount        int32       `json:"writerCount"`
	MissingWriterCount int32       `json:"missingWriterCount"`
	MissingWriters     []struct {
		Stream   string `json:"stream"`
		Instance string `json:"instance"`
	} `json:"missingWriters"`
	Streams []struct {
		Name    string `json:"name"`
		Writers []struct {
			Instance  string `json:"instance"`
			Announced bool   `json:"announced"`
			Position  int64  `json:"position"`
		} `json:"writers"`
	} `json:"streams"`
	Responders []string `json:"responders"`
}

// checkSynapseReplication starts a real redis-server, an emulated Synapse
// deployment (a pod running `tcprepl synapse-emulate`) publishing today's
// lines, and a SynapseReplication watching it, then reads with kubectl
// what a user reads: MISSING 1, the missing writer named, both event
// writers advancing; and the operator's metrics say the same.
func checkSynapseReplication(t *testing.T, ctx context.Context, env *harness.Env) {
	t.Helper()
	redis, err := harness.StartRedis(ctx, filepath.Join(env.Dir, "redis"))
	if err != nil {
		t.Fatalf("the SynapseReplication end-to-end check needs a real redis-server: %v", err)
	}
	t.Cleanup(func() {
		if err := redis.Stop(); err != nil {
			t.Logf("stop redis-server: %v", err)
		}
	})
	const name = "matrix"
	if err := env.ApplyEmulatedSynapse(ctx, ns, harness.EmulatedSynapse{
		Name: name, ServerName: "matrix.e2e.test", RedisAddr: redis.Addr,
		HomeserverConfig: e2eHomeserverConfig, Silent: []string{"quarantined_media=media1"},
	}); err != nil {
		t.Fatal(err)
	}

	var st synapseReplicationStatus
	eventually(t, 2*time.Minute, "SynapseReplication reports the missing writer", func() error {
		st = synapseReplicationStatus{}
		if err := getStatus(ctx, env, "srepl", name, &st); err != nil {
			return err
		}
		if err := condTrue(st.Conditions, "Ready"); err != nil {
			return err
		}
		if st.MissingWriterCount != 1 || len(st.MissingWriters) != 1 ||
			st.MissingWriters[0].Stream != "quarantined_media" || st.MissingWriters[0].Instance != "media1" {
			return fmt.Errorf("missing writers %d %+v", st.MissingWriterCount, st.MissingWriters)
		}
		for _, s := range st.Streams {
			if s.Name != "events" {
				continue
			}
			if len(s.Writers) != 2 {
				return fmt.Errorf("events writers %+v", s.Writers)
			}
			for _, w := range s.Writers {
				if !w.Announced || w.Position <= 1000 {
					return fmt.Errorf("events writer %+v has not announced or advanced", w)
				}
			}
			return nil
		}
		return fmt.Errorf("no events stream in status")
	})
	if got := condStatus(st.Conditions, "WritersHealthy"); got != "False/MissingWriter" {
		t.Errorf("WritersHealthy = %s, want False/MissingWriter", got)
	}
	if strings.Join(st.Responders, ",") != "event_persister1,event_persister2,master" {
		t.Errorf("responders = %v", st.Responders)
	}

	// What `kubectl get srepl` prints.
	out, err := env.Kubectl(ctx, "get", "srepl", name, "--namespace", ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get srepl:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get srepl printed %d lines", len(lines))
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	if strings.Join(header, " ") != "NAME SERVER READY STREAMS WRITERS MISSING AGE" || len(row) != len(header) {
		t.Fatalf("kubectl get srepl columns: %q / %q", lines[0], lines[1])
	}
	if row[1] != "matrix.e2e.test" || row[2] != "True" || row[5] != "1" {
		t.Errorf("kubectl get srepl row = %q, want SERVER matrix.e2e.test, READY True, MISSING 1", lines[1])
	}
	missing, err := env.Kubectl(ctx, "get", "srepl", name, "--namespace", ns, "-o", "jsonpath={.status.missingWriters[*].instance}")
	if err != nil || strings.TrimSpace(missing) != "media1" {
		t.Errorf("missing writer named %q (%v), want media1", missing, err)
	}

	// The operator's metrics agree, labelled by namespace, name, stream and
	// instance.
	eventually(t, 30*time.Second, "operator metrics of the SynapseReplication", func() error {
		body, err := scrape(env.OperatorMetricsURL)
		if err != nil {
			return err
		}
		for _, c := range []struct {
			metric string
			labels map[string]string
			want   float64
		}{
			{"tcprepl_operator_synapse_subscribed", map[string]string{"namespace": ns, "name": name}, 1},
			{"tcprepl_operator_synapse_writer_missing", map[string]string{"namespace": ns, "name": name, "stream": "quarantined_media", "instance": "media1"}, 1},
			{"tcprepl_operator_synapse_writer_missing", map[string]string{"namespace": ns, "name": name, "stream": "events", "instance": "event_persister1"}, 0},
		} {
			if got, ok := metricValue(body, c.metric, c.labels); !ok || got != c.want {
				return fmt.Errorf("%s%v = %v (present %v), want %v", c.metric, c.labels, got, ok, c.want)
			}
		}
		if v, ok := metricValue(body, "tcprepl_operator_synapse_writer_position", map[string]string{"namespace": ns, "stream": "events", "instance": "event_persister2"}); !ok || v <= 1000 {
			return fmt.Errorf("events position of event_persister2 = %v (present %v)", v, ok)
		}
		return nil
	})
}

// condStatus is "Status/Reason" of a condition, or "absent".
func condStatus(conds []condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status + "/" + c.Reason
		}
	}
	return "absent"
}
