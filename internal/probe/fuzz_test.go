package probe

import (
	"encoding/json"
	"testing"
)

// FuzzParsers feeds arbitrary bytes to what the probe parses from the
// master: caches rows (heartbeat keys) and the connection table. Neither may
// panic, and a key found must be one the row really carries.
func FuzzParsers(f *testing.F) {
	f.Add([]byte(`["tcprepl_probe_heartbeat", ["tcprepl-probe:ab:1:2"], 123]`))
	f.Add([]byte(`["get_user_by_id", ["@a:x"], 1]`))
	f.Add([]byte(`{"total": 1, "connections": [{"id": 1, "name": "w"}]}`))
	f.Add([]byte(`[{"id": 1, "streams": [{"name": "events", "token": 3}]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if key, ok := heartbeatKey(data); ok {
			var fields []json.RawMessage
			if err := json.Unmarshal(data, &fields); err != nil || len(fields) < 2 {
				t.Fatalf("key %q from a row that is not an array of 2+: %q", key, data)
			}
			var keys []string
			if err := json.Unmarshal(fields[1], &keys); err != nil || len(keys) != 1 || keys[0] != key {
				t.Fatalf("key %q is not the row's only key: %q", key, data)
			}
		}
		// The table decoder must only fail, never panic; fetchConnections
		// stops paging on any total, even a negative one.
		_, _, _ = decodeConnections(data)
	})
}
