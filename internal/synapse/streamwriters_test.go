package synapse

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseStreamWriters(t *testing.T) {
	defaults := func(overrides map[string][]string) map[string][]string {
		out := map[string][]string{}
		for _, streams := range writerStreams {
			for _, s := range streams {
				out[s] = []string{MainInstance}
			}
		}
		for s, w := range overrides {
			out[s] = w
		}
		return out
	}
	tests := map[string]struct {
		yaml string
		want map[string][]string
	}{
		"no workers": {yaml: "server_name: example.org\n", want: defaults(nil)},
		"ess-helm like": {yaml: homeserverYAML, want: defaults(map[string][]string{
			"events":            {"event_persister-0", "event_persister-1"},
			"backfill":          {"event_persister-0", "event_persister-1"},
			"quarantined_media": {"media-0"},
		})},
		"one name, main alias, presence pair": {yaml: `
stream_writers:
  typing: main
  presence: [presence-1, presence-0, presence-1]
  to_device: master
`, want: defaults(map[string][]string{
			"presence":            {"presence-0", "presence-1"},
			"presence_federation": {"presence-0", "presence-1"},
		})},
		"a stream this version does not know": {yaml: "stream_writers:\n  sticky_events: [w1]\n", want: defaults(map[string][]string{"sticky_events": {"w1"}})},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseStreamWriters([]byte(tc.yaml))
			if err != nil {
				t.Fatalf("ParseStreamWriters: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestParseStreamWritersRefuses(t *testing.T) {
	tests := map[string]struct {
		yaml, mention string
	}{
		"not yaml":              {"stream_writers: [", "read homeserver config"},
		"number":                {"stream_writers:\n  events: 3\n", "stream_writers.events"},
		"empty list":            {"stream_writers:\n  events: []\n", "non-empty"},
		"list of maps":          {"stream_writers:\n  events: [{a: b}]\n", "not an instance name"},
		"not in instance_map":   {"instance_map:\n  main: {}\n  ep-1: {}\nstream_writers:\n  events: [ep-1, ep-2]\n", `"ep-2"`},
		"stream_writers a list": {"stream_writers: [events]\n", "read homeserver config"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseStreamWriters([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("ParseStreamWriters = %v, %v; want an error mentioning %q", got, err, tc.mention)
			}
		})
	}
}
