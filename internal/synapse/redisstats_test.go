package synapse

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseClientList(t *testing.T) {
	text := "id=3 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name= age=1 idle=0 flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1800 events=r cmd=subscribe user=default redir=-1 resp=2\n" +
		"id=9 addr=10.0.0.2:41000 laddr=10.0.0.1:6379 fd=9 name=synapse-main age=9 idle=0 flags=P db=0 sub=2 psub=0 omem=4194304 user=default\n" +
		"id=4 addr=10.0.0.3:41000 name=w sub=1 omem=0\n"
	want := []PubSubClient{
		{ID: 9, Name: "synapse-main", Addr: "10.0.0.2:41000", OutputBufferBytes: 4194304, Subscriptions: 2},
		{ID: 3, Addr: "127.0.0.1:50000", Subscriptions: 1},
		{ID: 4, Name: "w", Addr: "10.0.0.3:41000", Subscriptions: 1},
	}
	if got := parseClientList(text); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	many := strings.Repeat("id=1 addr=a sub=1 omem=0\n", maxListedClients+10)
	if got := parseClientList(many); len(got) != maxListedClients {
		t.Fatalf("%d clients listed, want the %d largest", len(got), maxListedClients)
	}
}

func TestParsePubSubLimit(t *testing.T) {
	tests := map[string]struct {
		value            string
		hard, soft, secs int64
		wantErr          string
	}{
		"redis default":  {value: "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60", hard: 33554432, soft: 8388608, secs: 60},
		"no limit":       {value: "normal 0 0 0 slave 0 0 0 pubsub 0 0 0"},
		"no pubsub":      {value: "normal 0 0 0", wantErr: "no pubsub class"},
		"not a number":   {value: "pubsub 32mb 8mb 60", wantErr: "32mb"},
		"empty (denied)": {value: "", wantErr: "no pubsub class"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			hard, soft, secs, err := parsePubSubLimit(tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || hard != tc.hard || soft != tc.soft || secs != tc.secs {
				t.Fatalf("= %d %d %d %v, want %d %d %d", hard, soft, secs, err, tc.hard, tc.soft, tc.secs)
			}
		})
	}
}
