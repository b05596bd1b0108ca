package replication

import (
	"bytes"
	"encoding/json"
)

// HeartbeatCacheName is the cache name of the INVALIDATE_CACHE heartbeats
// the operator's probe sends through a master. It is reserved: no Synapse
// cache is called this, so a Synapse worker that receives the relayed caches
// row invalidates nothing, and the reference worker leaves such rows out of
// its sink.
const HeartbeatCacheName = "tcprepl_probe_heartbeat"

// IsHeartbeatRow reports whether a caches-stream row, [cache_func, keys,
// invalidation_ts], is one of the probe's heartbeats.
func IsHeartbeatRow(row json.RawMessage) bool {
	// Cheap test first: most caches rows are Synapse's own invalidations.
	if !bytes.Contains(row, []byte(HeartbeatCacheName)) {
		return false
	}
	var fields []json.RawMessage
	if err := json.Unmarshal(row, &fields); err != nil || len(fields) == 0 {
		return false
	}
	var fn string
	return json.Unmarshal(fields[0], &fn) == nil && fn == HeartbeatCacheName
}
