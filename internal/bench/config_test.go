package bench

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  Config
		want string // "" for valid
	}{
		"defaults":                  {cfg: Config{}},
		"every phase":               {cfg: Config{Phases: AllPhases}},
		"one phase":                 {cfg: Config{Phases: []Phase{PhaseLatency}}},
		"client subscribers":        {cfg: Config{SubscriberKind: ClientSubscribers}},
		"unknown phase among known": {cfg: Config{Phases: []Phase{PhaseCatchUp, "warp"}}, want: `unknown phase "warp": use any of [idle catchup publish-inprocess publish-http latency]`},
		"phase in another case":     {cfg: Config{Phases: []Phase{"Idle"}}, want: `unknown phase "Idle"`},
		"unknown subscriber kind":   {cfg: Config{SubscriberKind: "telepathic"}, want: `unknown subscriber kind "telepathic": use wire or client`},
		"postgres log":              {cfg: Config{Log: LogPostgres, PostgresDSN: "postgres://db/x"}},
		"unknown log":               {cfg: Config{Log: "sqlite"}, want: `unknown log "sqlite": use pebble or postgres`},
		"postgres log without DSN":  {cfg: Config{Log: LogPostgres}, want: "needs --postgres-dsn"},
		"postgres log, external":    {cfg: Config{Mode: External, Log: LogPostgres, PostgresDSN: "postgres://db/x"}, want: "an external master already has its log"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Defaults()
			err := cfg.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  Config
		want func(Config) bool
	}{
		"empty gets every default": {
			cfg: Config{},
			want: func(c Config) bool {
				return c.Mode == InProcess && c.ServerName == "bench.tcprepl" && c.Duration == 5*time.Second &&
					c.Subscribers == 10 && c.SubscriberKind == WireSubscribers && c.Publishers == 32 &&
					c.BatchRows == 100 && c.RowBytes == 100 && c.CatchUpRows == 1_000_000 &&
					c.LatencyRate == 100_000 && c.IdleConns == 1000 && c.Logf != nil && len(c.Phases) == 0
			},
		},
		"set fields are kept": {
			cfg: Config{Mode: Spawn, ServerName: "s", Duration: time.Second, Subscribers: 3, SubscriberKind: ClientSubscribers,
				Publishers: 4, BatchRows: 5, RowBytes: 6, CatchUpRows: 7, LatencyRate: 8, IdleConns: 9, Phases: []Phase{PhaseIdle}},
			want: func(c Config) bool {
				return c.Mode == Spawn && c.ServerName == "s" && c.Duration == time.Second && c.Subscribers == 3 &&
					c.SubscriberKind == ClientSubscribers && c.Publishers == 4 && c.BatchRows == 5 && c.RowBytes == 6 &&
					c.CatchUpRows == 7 && c.LatencyRate == 8 && c.IdleConns == 9 && len(c.Phases) == 1
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Defaults()
			if !tc.want(cfg) {
				t.Fatalf("after Defaults: %+v", cfg)
			}
		})
	}
}

func TestConfigRuns(t *testing.T) {
	for name, tc := range map[string]struct {
		phases []Phase
		want   map[Phase]bool
	}{
		"none listed runs all": {phases: nil, want: map[Phase]bool{PhaseIdle: true, PhaseCatchUp: true, PhasePublishInProcess: true, PhasePublishHTTP: true, PhaseLatency: true}},
		"only those listed":    {phases: []Phase{PhaseLatency, PhaseIdle}, want: map[Phase]bool{PhaseIdle: true, PhaseLatency: true}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := Config{Phases: tc.phases}
			for _, p := range AllPhases {
				if got := cfg.runs(p); got != tc.want[p] {
					t.Errorf("runs(%s) = %v, want %v", p, got, tc.want[p])
				}
			}
		})
	}
}
