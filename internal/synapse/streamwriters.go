package synapse

import (
	"fmt"
	"slices"
	"sort"

	"sigs.k8s.io/yaml"
)

// MainInstance is the instance name of Synapse's main process on the wire
// (Synapse's MAIN_PROCESS_INSTANCE_NAME); "main" is its name in instance_map.
const (
	MainInstance    = "master"
	mainInstanceMap = "main"
)

// CachesStream is written by every process when Synapse uses Redis, so no
// instance is ever unexpected on it.
const CachesStream = "caches"

// writerStreams maps each stream_writers key of the homeserver config to the
// replication streams its writers announce (Synapse's
// ReplicationCommandHandler: an events writer also writes backfill, a
// presence writer also presence_federation). A key not listed here names a
// stream of the same name.
var writerStreams = map[string][]string{
	"events":                    {"events", "backfill"},
	"typing":                    {"typing"},
	"to_device":                 {"to_device"},
	"account_data":              {"account_data"},
	"receipts":                  {"receipts"},
	"presence":                  {"presence", "presence_federation"},
	"push_rules":                {"push_rules"},
	"device_lists":              {"device_lists"},
	"thread_subscriptions":      {"thread_subscriptions"},
	"quarantined_media_changes": {"quarantined_media"},
}

// ParseStreamWriters reads `stream_writers` from a homeserver config (YAML)
// and returns, for every stream whose writers that setting decides, the
// instances expected to announce it, sorted. Keys Synapse defaults (absent
// from the file) get MainInstance, as Synapse does. A writer may be given as
// one name or a list; "main" means MainInstance. When instance_map is
// present, every non-main writer must be in it (Synapse refuses to start
// otherwise), which catches typos before they look like a missing writer.
func ParseStreamWriters(homeserverYAML []byte) (map[string][]string, error) {
	var cfg struct {
		StreamWriters map[string]any `json:"stream_writers"`
		InstanceMap   map[string]any `json:"instance_map"`
	}
	if err := yaml.Unmarshal(homeserverYAML, &cfg); err != nil {
		return nil, fmt.Errorf("read homeserver config: %w", err)
	}
	out := make(map[string][]string)
	for key, streams := range writerStreams {
		if _, set := cfg.StreamWriters[key]; set {
			continue
		}
		for _, s := range streams {
			out[s] = []string{MainInstance}
		}
	}
	keys := make([]string, 0, len(cfg.StreamWriters))
	for k := range cfg.StreamWriters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		instances, err := writerList(key, cfg.StreamWriters[key])
		if err != nil {
			return nil, err
		}
		for i, inst := range instances {
			if inst == mainInstanceMap {
				instances[i] = MainInstance
				continue
			}
			if cfg.InstanceMap != nil && inst != MainInstance {
				if _, ok := cfg.InstanceMap[inst]; !ok {
					return nil, fmt.Errorf("read homeserver config: stream_writers.%s names %q, which is not in instance_map; Synapse refuses this config, fix the name", key, inst)
				}
			}
		}
		slices.Sort(instances)
		instances = slices.Compact(instances)
		streams, known := writerStreams[key]
		if !known {
			streams = []string{key}
		}
		for _, s := range streams {
			out[s] = slices.Clone(instances)
		}
	}
	return out, nil
}

func writerList(key string, v any) ([]string, error) {
	switch w := v.(type) {
	case string:
		if w == "" {
			break
		}
		return []string{w}, nil
	case []any:
		names := make([]string, 0, len(w))
		for _, e := range w {
			s, ok := e.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("read homeserver config: stream_writers.%s: %v is not an instance name", key, e)
			}
			names = append(names, s)
		}
		if len(names) > 0 {
			return names, nil
		}
	}
	return nil, fmt.Errorf("read homeserver config: stream_writers.%s must be an instance name or a non-empty list of them, not %v", key, v)
}
