package masterapi

import (
	"strings"
	"testing"
	"time"
)

func TestLeaseSettings(t *testing.T) {
	pg := func(ttl, renew, poll time.Duration) LogConfig {
		return LogConfig{Backend: LogPostgres, LeaseTTL: Duration{ttl}, LeaseRenewInterval: Duration{renew}, StandbyPollInterval: Duration{poll}}
	}
	for name, tc := range map[string]struct {
		log     LogConfig
		want    string // "" means valid
		ttl     time.Duration
		renew   time.Duration
		pollGot time.Duration
	}{
		"defaults":                  {log: LogConfig{Backend: LogPostgres}, ttl: 2 * time.Second, renew: 500 * time.Millisecond, pollGot: 250 * time.Millisecond},
		"short TTL scales the rest": {log: pg(time.Second, 0, 0), ttl: time.Second, renew: 250 * time.Millisecond, pollGot: 250 * time.Millisecond},
		"all set":                   {log: pg(4*time.Second, time.Second, 100*time.Millisecond), ttl: 4 * time.Second, renew: time.Second, pollGot: 100 * time.Millisecond},
		"renew over half the TTL":   {log: pg(2*time.Second, 1500*time.Millisecond, 0), want: "at most half of log.leaseTTL"},
		"TTL too short":             {log: pg(100*time.Millisecond, 0, 0), want: "log.leaseTTL 100ms is too short"},
		"renew too short":           {log: pg(0, 10*time.Millisecond, 0), want: "log.leaseRenewInterval 10ms is too short"},
		"poll over the TTL":         {log: pg(time.Second, 0, 2*time.Second), want: "must not exceed log.leaseTTL"},
		"negative":                  {log: pg(-time.Second, 0, 0), want: "must not be negative"},
		"with pebble":               {log: LogConfig{LeaseTTL: Duration{time.Second}}, want: `are for log.backend "postgres"`},
	} {
		t.Run(name, func(t *testing.T) {
			c := Config{ServerName: "hs.example", Log: tc.log}
			err := c.WithDefaults().Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid settings refused: %v", err)
				}
				ttl, renew, poll := c.Log.LeaseTimes()
				if ttl != tc.ttl || renew != tc.renew || poll != tc.pollGot {
					t.Fatalf("LeaseTimes = %s %s %s, want %s %s %s", ttl, renew, poll, tc.ttl, tc.renew, tc.pollGot)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
