package specs

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
)

// TestConfigHashCoversOnlyRestartSettings: a spec change to a setting the
// master applies live keeps the pod template's hash (no roll); one the
// master reads only at start changes it.
func TestConfigHashCoversOnlyRestartSettings(t *testing.T) {
	t.Parallel()
	hashOf := func(m *replv1.ReplicationMaster) string {
		t.Helper()
		cfg, err := RenderMasterConfig(m)
		if err != nil {
			t.Fatal(err)
		}
		return ConfigHash(cfg, "token")
	}
	base := hashOf(newMaster())
	tests := map[string]struct {
		change func(*replv1.ReplicationMaster)
		rolls  bool
	}{
		"retention maxRows": {func(m *replv1.ReplicationMaster) { m.Spec.Retention.MaxRows = ptr.To[int64](1000) }, false},
		"retention maxAge": {func(m *replv1.ReplicationMaster) {
			m.Spec.Retention.MaxAge = &metav1.Duration{Duration: time.Hour}
		}, false},
		"stream retention": {func(m *replv1.ReplicationMaster) {
			m.Spec.Retention.Streams = []replv1.StreamRetention{{Name: "events", MaxRows: ptr.To[int64](5)}}
		}, false},
		"ping interval":        {func(m *replv1.ReplicationMaster) { m.Spec.KeepAlive.PingInterval.Duration = 2 * time.Second }, false},
		"ping timeout":         {func(m *replv1.ReplicationMaster) { m.Spec.KeepAlive.PingTimeout.Duration = time.Minute }, false},
		"max pending commands": {func(m *replv1.ReplicationMaster) { m.Spec.Limits.MaxPendingCommands = 500 }, false},
		"max line length":      {func(m *replv1.ReplicationMaster) { m.Spec.Limits.MaxLineLength = 32768 }, true},
		"federation":           {func(m *replv1.ReplicationMaster) { m.Spec.Streams.Federation = true }, true},
		"custom stream":        {func(m *replv1.ReplicationMaster) { m.Spec.Streams.Custom = []replv1.CustomStream{{Name: "audit_log"}} }, true},
		"server name":          {func(m *replv1.ReplicationMaster) { m.Spec.ServerName = "other.example.org" }, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := hashOf(newMaster(tc.change))
			if rolled := got != base; rolled != tc.rolls {
				t.Fatalf("hash changed = %v, want %v (base %s, now %s)", rolled, tc.rolls, base, got)
			}
		})
	}
	if ConfigHash("serverName: a\n", "t") == ConfigHash("serverName: a\n", "u") {
		t.Error("a token change keeps the hash")
	}
}
