package worker

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/probe/probetest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// TestWorkerLeavesHeartbeatsOutOfTheSink publishes caches rows as the
// operator's probe and Synapse would and checks which reach the sink: by
// default not the probe's heartbeats, whose positions still count.
func TestWorkerLeavesHeartbeatsOutOfTheSink(t *testing.T) {
	heartbeat := func(key string) json.RawMessage {
		return json.RawMessage(`["` + replication.HeartbeatCacheName + `",["` + key + `"],1700000000000]`)
	}
	invalidation := func(user string) json.RawMessage {
		return json.RawMessage(`["get_user_by_id",["` + user + `"],1700000000000]`)
	}
	batches := [][]json.RawMessage{
		{invalidation("@a:example.org")},
		{heartbeat("hb-1")},
		{invalidation("@b:example.org"), heartbeat("hb-2"), invalidation("@c:example.org")},
		// A user's cache keyed by the reserved name is not a heartbeat.
		{json.RawMessage(`["get_user_by_id",["` + replication.HeartbeatCacheName + `"],1700000000000]`)},
		{heartbeat("hb-3")},
	}
	var all []string
	for _, b := range batches {
		for _, r := range b {
			all = append(all, string(r))
		}
	}
	tests := map[string]struct {
		keep bool
		want []string
	}{
		"heartbeats left out by default": {want: []string{all[0], all[2], all[4], all[5]}},
		"heartbeats kept on request":     {keep: true, want: all},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := probetest.Start(t, testServerName, "caches")
			var last int64
			for _, b := range batches {
				last = m.Publish("caches", b...)
			}
			path := filepath.Join(t.TempDir(), "rows.jsonl")
			cfg := baseConfig(t, m.Addr())
			cfg.Streams = []string{"caches"}
			cfg.Sink = "file:" + path
			cfg.From = from(0)
			cfg.KeepHeartbeats = tc.keep
			w, _ := startWorker(t, cfg)
			// The last batch is a heartbeat: its token is the position
			// either way, and once it is, every row before it was handled.
			waitFor(t, 10*time.Second, "the last token as the position", func() bool { return w.Status().Positions["caches"] == last })
			var got []string
			for _, l := range fileLines(t, path) {
				got = append(got, string(l.Row))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("the sink got\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func TestIsHeartbeatRow(t *testing.T) {
	tests := map[string]struct {
		row  string
		want bool
	}{
		"a heartbeat":                   {`["` + replication.HeartbeatCacheName + `",["k"],1]`, true},
		"a Synapse invalidation":        {`["get_user_by_id",["@a:b"],1]`, false},
		"the name as a key":             {`["get_user_by_id",["` + replication.HeartbeatCacheName + `"],1]`, false},
		"not JSON":                      {`[` + replication.HeartbeatCacheName, false},
		"an empty row":                  {`[]`, false},
		"the name, not the first field": {`[1,"` + replication.HeartbeatCacheName + `"]`, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := replication.IsHeartbeatRow(json.RawMessage(tc.row)); got != tc.want {
				t.Errorf("IsHeartbeatRow(%s) = %v, want %v", tc.row, got, tc.want)
			}
		})
	}
}
