package probe

import (
	"encoding/json"
	"reflect"
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
	f.Add([]byte(` {"connections": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}], "total": 5} `))
	f.Add([]byte(`{"total": 3}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[]`))
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
		checkDecodeConnections(t, data)
	})
}

// checkDecodeConnections compares decodeConnections with encoding/json
// decoding the same bytes in the two forms the probe accepts: a bare array
// of connections, or {"total": N, "connections": [...]} (total defaulting
// to the length). Bytes that are not one of those must be an error; the
// connections decoded, their order, and the total must be encoding/json's.
func checkDecodeConnections(t *testing.T, data []byte) {
	t.Helper()
	conns, total, err := decodeConnections(data)
	var generic any
	if json.Unmarshal(data, &generic) != nil {
		if err == nil {
			t.Fatalf("decoded %d connections from invalid JSON %q", len(conns), data)
		}
		return
	}
	var want []Connection
	wantTotal := 0
	wantOK := false
	switch generic.(type) {
	case []any:
		if json.Unmarshal(data, &want) == nil {
			wantTotal, wantOK = len(want), true
		}
	case map[string]any:
		var env struct {
			Total       *int          `json:"total"`
			Connections *[]Connection `json:"connections"`
		}
		if json.Unmarshal(data, &env) == nil && env.Connections != nil {
			want, wantTotal, wantOK = *env.Connections, len(*env.Connections), true
			if env.Total != nil {
				wantTotal = *env.Total
			}
		}
	}
	if !wantOK {
		if err == nil {
			t.Fatalf("decoded %d connections (total %d) from %q, which is not a connection table", len(conns), total, data)
		}
		return
	}
	if err != nil {
		t.Fatalf("decodeConnections(%q): %v; encoding/json reads %d connections", data, err, len(want))
	}
	if !reflect.DeepEqual(conns, want) || total != wantTotal {
		t.Fatalf("decodeConnections(%q) = %+v total %d; encoding/json reads %+v total %d", data, conns, total, want, wantTotal)
	}
}
