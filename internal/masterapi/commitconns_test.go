package masterapi

import (
	"strings"
	"testing"
)

func TestCommitConnections(t *testing.T) {
	for name, tc := range map[string]struct {
		log  LogConfig
		want string // "" means valid
		got  int
	}{
		"unset":         {log: LogConfig{Backend: LogPostgres}, got: 1},
		"four":          {log: LogConfig{Backend: LogPostgres, CommitConnections: 4}, got: 4},
		"the most":      {log: LogConfig{Backend: LogPostgres, CommitConnections: MaxCommitConnections}, got: MaxCommitConnections},
		"too many":      {log: LogConfig{Backend: LogPostgres, CommitConnections: MaxCommitConnections + 1}, want: "log.commitConnections 9 is out of range: use 1 to 8"},
		"negative":      {log: LogConfig{Backend: LogPostgres, CommitConnections: -1}, want: "out of range"},
		"with pebble":   {log: LogConfig{CommitConnections: 2}, want: `log.commitConnections is for log.backend "postgres"`},
		"pebble, unset": {log: LogConfig{}, got: 1},
	} {
		t.Run(name, func(t *testing.T) {
			c := Config{ServerName: "hs.example", Log: tc.log}
			err := c.WithDefaults().Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid setting refused: %v", err)
				}
				if got := c.Log.CommitConnectionsOrDefault(); got != tc.got {
					t.Fatalf("CommitConnectionsOrDefault() = %d, want %d", got, tc.got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
