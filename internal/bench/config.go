package bench

import (
	"fmt"
	"slices"
	"time"
)

// Stream is the stream the benchmark publishes to. caches exists on every
// master and its rows carry an integer last field, where the benchmark puts
// the publish time in nanoseconds.
const Stream = "caches"

// Mode says where the master runs.
type Mode string

// Where the master under test runs.
const (
	// InProcess runs the master in the benchmark's own process: the
	// in-process publisher calls Master.Publish directly; memory figures
	// then include the benchmark's clients.
	InProcess Mode = "in-process"
	// Spawn runs `tcprepl master` as a child process, so RSS is the
	// master's alone.
	Spawn Mode = "spawn"
	// External uses a master someone else started (--master, --http).
	External Mode = "external"
)

// Config is one benchmark run.
type Config struct {
	Mode Mode
	// MasterAddr and HTTPURL locate an External master.
	MasterAddr string
	HTTPURL    string
	// MasterPID is an External master's process id, for its RSS.
	MasterPID  int
	ServerName string
	// PublishToken is sent as a bearer token when set.
	PublishToken string
	// DataDir is the log directory of an InProcess or Spawn master; empty
	// means a fresh temporary directory (a durable, fsynced log).
	DataDir string
	// Log is the stream log of an InProcess or Spawn master: LogPebble
	// (the default) or LogPostgres, on a scratch database the run creates
	// on the server of PostgresDSN and drops at the end.
	Log         string
	PostgresDSN string
	// TailCacheBytes is the master's tail cache (storage.tailCacheBytes):
	// zero is its default, -1 disables it so that catch-up reads the log
	// itself.
	TailCacheBytes int64
	// Binary is the tcprepl binary for Spawn (default: this executable).
	Binary string

	Duration    time.Duration // length of each throughput and latency phase
	Subscribers int           // live subscribers
	// SubscriberKind is WireSubscribers (the default) or ClientSubscribers.
	SubscriberKind SubscriberKind
	Publishers     int // concurrent publishers
	BatchRows      int // rows per publish
	RowBytes       int // approximate size of one row's JSON
	CatchUpRows    int // rows in the log for the catch-up phases
	LatencyRate    int // rows/s published during the latency phase
	IdleConns      int // connections opened for the idle-memory phase

	// Phases to run, in their fixed order; empty means all of them.
	Phases []Phase

	Logf func(format string, args ...any)
}

// Phase is one part of a run.
type Phase string

// The phases, in the order a run takes them.
const (
	PhaseIdle             Phase = "idle"
	PhaseCatchUp          Phase = "catchup"
	PhasePublishInProcess Phase = "publish-inprocess"
	PhasePublishHTTP      Phase = "publish-http"
	PhaseLatency          Phase = "latency"
)

// AllPhases lists every phase in run order.
var AllPhases = []Phase{PhaseIdle, PhaseCatchUp, PhasePublishInProcess, PhasePublishHTTP, PhaseLatency}

func (c *Config) runs(p Phase) bool {
	return len(c.Phases) == 0 || slices.Contains(c.Phases, p)
}

// validate rejects phases and subscriber kinds the benchmark does not know;
// the mode is checked where the master starts.
func (c *Config) validate() error {
	for _, p := range c.Phases {
		if !slices.Contains(AllPhases, p) {
			return fmt.Errorf("unknown phase %q: use any of %v", p, AllPhases)
		}
	}
	switch {
	case c.Log != LogPebble && c.Log != LogPostgres:
		return fmt.Errorf("unknown log %q: use %s or %s", c.Log, LogPebble, LogPostgres)
	case c.Log == LogPostgres && c.Mode != External && c.PostgresDSN == "":
		return fmt.Errorf("the %s log needs --postgres-dsn: a postgres:// URI of a server where the benchmark may create a scratch database", LogPostgres)
	case c.Mode == External && c.Log == LogPostgres:
		return fmt.Errorf("--log %s is for a master the benchmark starts; an external master already has its log", LogPostgres)
	}
	if c.SubscriberKind != WireSubscribers && c.SubscriberKind != ClientSubscribers {
		return fmt.Errorf("unknown subscriber kind %q: use %s or %s", c.SubscriberKind, WireSubscribers, ClientSubscribers)
	}
	return nil
}

// Defaults fills unset fields with the values the aims in docs/benchmarks.md
// are stated for.
func (c *Config) Defaults() {
	if c.Mode == "" {
		c.Mode = InProcess
	}
	if c.Log == "" {
		c.Log = LogPebble
	}
	if c.ServerName == "" {
		c.ServerName = "bench.tcprepl"
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Subscribers == 0 {
		c.Subscribers = 10
	}
	if c.SubscriberKind == "" {
		c.SubscriberKind = WireSubscribers
	}
	if c.Publishers == 0 {
		// Each publish waits for its group commit's fsync, and over HTTP
		// for a request's round trip as well: 32 in flight keep the
		// committer busy (docs/benchmarks.md compares 16, 32 and 64).
		c.Publishers = 32
	}
	if c.BatchRows == 0 {
		c.BatchRows = 100
	}
	if c.RowBytes == 0 {
		c.RowBytes = 100
	}
	if c.CatchUpRows == 0 {
		c.CatchUpRows = 1_000_000
	}
	if c.LatencyRate == 0 {
		c.LatencyRate = 100_000
	}
	if c.IdleConns == 0 {
		c.IdleConns = 1000
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}
