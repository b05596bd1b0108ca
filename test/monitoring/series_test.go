package monitoring

import (
	"testing"
)

// connectionLabels would make a series per connection or per address:
// ids grow with every reconnect and addresses move with pods, so such
// series pile up without bound. Connections are labelled by NAME
// (bounded), masters by resource.
var connectionLabels = map[string]bool{
	"id": true, "conn_id": true, "connection_id": true, "connection": true,
	"remote_addr": true, "remote_address": true, "addr": true, "address": true, "peer": true,
}

// TestNoPerConnectionSeries: no metric the operator, master or worker
// registers is labelled by connection id or address, except the probe's
// info series, one per master.
func TestNoPerConnectionSeries(t *testing.T) {
	for proc, reg := range registeredMetrics(t) {
		for name, mi := range reg {
			for l := range mi.labels {
				infoAddress := name == "tcprepl_probe_info" && l == "address"
				if connectionLabels[l] && !infoAddress {
					t.Errorf("the %s's %s is labelled %s: a series per connection or address", proc, name, l)
				}
			}
		}
	}
	op := registeredMetrics(t)["operator"]
	for _, name := range []string{"tcprepl_probe_info", "tcprepl_probe_up", "tcprepl_probe_connection_max_seconds_behind"} {
		mi := op[name]
		if mi == nil {
			t.Errorf("the operator registers no %s", name)
			continue
		}
		if !mi.labels["namespace"] || !mi.labels["master"] {
			t.Errorf("%s labels %v, want namespace and master (the ReplicationMaster)", name, keysOf(mi.labels))
		}
	}
}
