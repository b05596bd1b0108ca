package masterapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tcprepl/tcprepl/internal/master/rows"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// The smallest byte limits that still let the protocol work: a connection
// must queue a few lines of the longest allowed length, and catch-up needs
// room for one page.
const (
	minPendingBytes = 64 << 10
	minCatchUpBytes = 1 << 20
)

// Defaults for the settings a user may leave out. The protocol values are
// the 2020 Synapse ones so that a real Synapse worker sees what it expects.
const (
	// The bare CLI listens on loopback only: the replication port has no
	// authentication and publishing is open without a token, so reaching
	// other hosts must be asked for (the operator passes the pod IP).
	DefaultReplicationListen  = "127.0.0.1:9092"
	DefaultHTTPListen         = "127.0.0.1:9093"
	DefaultMaxLineLength      = replication.DefaultMaxLineLength
	DefaultMaxPendingCommands = replication.DefaultMaxPendingCommands
	DefaultPingInterval       = replication.DefaultPingInterval
	DefaultPingTimeout        = replication.DefaultPingTimeout
	DefaultMaxPendingBytes    = replication.DefaultMaxPendingBytes
	DefaultMaxCatchUpBytes    = replication.DefaultMaxCatchUpBytes
	// DefaultMaxRequestBytes bounds a publish request body. 8 MiB holds a
	// batch of tens of thousands of typical rows while keeping one request
	// from exhausting the pod's memory.
	DefaultMaxRequestBytes = 8 << 20
	// MaxRequestBytesLimit bounds limits.maxRequestBytes: a publish holds
	// at most MaxRowsPerPublish rows of one line each, far less, and a
	// larger limit only lets one request hold more of the master's memory.
	MaxRequestBytesLimit = 256 << 20
	// DefaultMaxUserIPs bounds the USER_IP table: one entry per
	// (user, ip, device); the least recently seen entry is dropped beyond it.
	DefaultMaxUserIPs = 100000
	// PublishTokenEnv names the environment variable that may carry the
	// publish bearer token when no token file is configured.
	PublishTokenEnv = "TCPREPL_PUBLISH_TOKEN"
)

// Hardening defaults (issue 11): what clients control is bounded.
const (
	// DefaultMaxConnections bounds replication connections; each costs
	// buffers and a connection-table entry (docs/benchmarks.md measures an
	// idle one), and none needs authentication. A topology has
	// tens of workers; the benchmark opens 1000 idle connections.
	DefaultMaxConnections = 4096
	// DefaultIdentifyTimeout closes a connection that has sent neither NAME
	// nor REPLICATE this long after connecting.
	DefaultIdentifyTimeout = 30 * time.Second
	// DefaultMaxNameLength bounds the NAME a client gives itself; it is
	// kept in the connection table and logs.
	DefaultMaxNameLength = 256
	// DefaultRetentionMaxBytes and DefaultRetentionMaxAge are the retention
	// of every stream when the config has no "*" entry: enough for a
	// worker to be down for days, while a flood of client commands (such
	// as INVALIDATE_CACHE, docs/security.md) cannot fill the data volume.
	DefaultRetentionMaxBytes = 256 << 20
	DefaultRetentionMaxAge   = 7 * 24 * time.Hour
)

// Duration is a time.Duration written in YAML/JSON as a Go duration string
// ("30s", "24h"). Plain integers are read as seconds, the least surprising
// reading for a config file.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads "90s"-style strings or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: use a Go duration such as \"30s\" or \"24h\": %w", s, err)
		}
		d.Duration = v
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("invalid duration %s: use a string such as \"30s\" or a number of seconds", string(b))
	}
	d.Duration = time.Duration(secs * float64(time.Second))
	return nil
}

// Retention bounds how much of one stream the log keeps. Zero means no bound.
type Retention struct {
	// MaxRows keeps at most this many rows (whole tokens are dropped).
	MaxRows int64 `json:"maxRows,omitempty"`
	// MaxAge drops tokens published longer ago than this.
	MaxAge Duration `json:"maxAge,omitzero"`
	// MaxBytes keeps the stream within about this many bytes on disk.
	MaxBytes int64 `json:"maxBytes,omitempty"`
}

// Limits are the protocol and API limits.
type Limits struct {
	MaxLineLength      int      `json:"maxLineLength,omitempty"`
	MaxPendingCommands int      `json:"maxPendingCommands,omitempty"`
	PingInterval       Duration `json:"pingInterval,omitzero"`
	PingTimeout        Duration `json:"pingTimeout,omitzero"`
	WriteTimeout       Duration `json:"writeTimeout,omitzero"`
	MaxRequestBytes    int64    `json:"maxRequestBytes,omitempty"`
	MaxUserIPs         int      `json:"maxUserIPs,omitempty"`
	// MaxPendingBytes closes a connection whose queued output, beyond the
	// write in progress and the update at the head of the queue, exceeds
	// it (Redis's client-output-buffer-limit, in spirit).
	MaxPendingBytes int `json:"maxPendingBytes,omitempty"`
	// MaxCatchUpBytes bounds the catch-up pages all connections hold at
	// once; a catch-up waits for room instead of growing memory.
	MaxCatchUpBytes int `json:"maxCatchUpBytes,omitempty"`

	// Connection bounds (issue 11, item 9).
	MaxConnections  int      `json:"maxConnections,omitempty"`
	IdentifyTimeout Duration `json:"identifyTimeout,omitzero"`
	MaxNameLength   int      `json:"maxNameLength,omitempty"`
}

// CustomStream declares a custom stream. In YAML it is either a bare name
// or {name: my_stream, fields: 3}.
type CustomStream struct {
	Name string `json:"name"`
	// Fields, when positive, is the number of fields every row must have;
	// 0 accepts any JSON array.
	Fields int `json:"fields,omitempty"`
}

// UnmarshalJSON accepts a bare name as well as the object form.
func (c *CustomStream) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err == nil {
		*c = CustomStream{Name: name}
		return nil
	}
	type plain CustomStream
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("custom stream %s: give a name or {name, fields}: %w", string(b), err)
	}
	*c = CustomStream(p)
	return nil
}

// ParseCustomStream reads the --custom-stream flag form: NAME or NAME:FIELDS.
func ParseCustomStream(s string) (CustomStream, error) {
	name, fields, ok := strings.Cut(s, ":")
	if !ok {
		return CustomStream{Name: s}, nil
	}
	n, err := strconv.Atoi(fields)
	if err != nil || n < 0 {
		return CustomStream{}, fmt.Errorf("custom stream %q: the part after ':' must be a field count (0 or more)", s)
	}
	return CustomStream{Name: name, Fields: n}, nil
}

// Storage sizes the log's memory. Zero means the log's default; together
// they are most of the master's resident memory.
type Storage struct {
	// MemTableBytes is Pebble's memtable size (default 16 MiB; up to four
	// are in memory while earlier ones are flushed). Larger memtables
	// flush less often but stall publishes longer when they do.
	MemTableBytes int64 `json:"memTableBytes,omitempty"`
	// BlockCacheBytes is Pebble's block cache (default 32 MiB).
	BlockCacheBytes int64 `json:"blockCacheBytes,omitempty"`
	// TailCacheBytes keeps the newest rows of every stream in memory for
	// catching-up workers (default 64 MiB; -1 disables it).
	TailCacheBytes int64 `json:"tailCacheBytes,omitempty"`
}

// Log backends (Config.Log.Backend).
const (
	LogPebble   = "pebble"
	LogPostgres = "postgres"
)

// PostgresDSNEnv holds the PostgreSQL DSN when no postgresDSNFile is set.
const PostgresDSNEnv = "TCPREPL_POSTGRES_DSN"

// LogConfig chooses where the stream log lives.
type LogConfig struct {
	// Backend is "pebble" (the default: a local directory, DataDir) or
	// "postgres" (a PostgreSQL database; the master creates its tables).
	Backend string `json:"backend,omitempty"`
	// PostgresDSNFile holds the PostgreSQL connection URI. When empty the
	// environment variable TCPREPL_POSTGRES_DSN is used.
	PostgresDSNFile string `json:"postgresDSNFile,omitempty"`
	// LeaseTTL, LeaseRenewInterval and StandbyPollInterval time failover
	// on PostgreSQL (lease.go; defaults 2s, 500ms, 250ms).
	LeaseTTL            Duration `json:"leaseTTL,omitzero"`
	LeaseRenewInterval  Duration `json:"leaseRenewInterval,omitzero"`
	StandbyPollInterval Duration `json:"standbyPollInterval,omitzero"`
	// CommitConnections is how many group commits may be in flight at
	// once on PostgreSQL, each on its own connection (1 to
	// MaxCommitConnections; unset means 1). See commitconns.go.
	CommitConnections int `json:"commitConnections,omitzero"`
}

// Config is everything the master process is configured with. It is read
// from a YAML file (see LoadConfigFile); command-line flags override it.
// The operator renders it into the master's ConfigMap, so settings left
// unset are omitted (omitzero): a new setting must not change what an
// unchanged resource renders, which would roll every master pod.
type Config struct {
	// ServerName is announced with SERVER; workers check it.
	ServerName        string `json:"serverName"`
	ReplicationListen string `json:"replicationListen,omitempty"`
	HTTPListen        string `json:"httpListen,omitempty"`
	// DataDir holds the Pebble log. Empty means in memory (as Ephemeral).
	DataDir   string `json:"dataDir,omitempty"`
	Ephemeral bool   `json:"ephemeral,omitempty"`
	// Federation publishes the federation stream (only when the master does
	// not send federation traffic itself) and lets FEDERATION_ACK trim it.
	Federation bool `json:"federation,omitempty"`
	// CustomStreams are extra streams, each a name ([a-z][a-z0-9_]*) or
	// {name, fields}: fields > 0 requires every row to have that many.
	CustomStreams []CustomStream `json:"customStreams,omitempty"`
	// Retention per stream name; "*" applies to streams not listed.
	Retention map[string]Retention `json:"retention,omitempty"`
	// RetentionInterval is how often retention is applied (default 10s).
	RetentionInterval Duration `json:"retentionInterval,omitzero"`
	Limits            Limits   `json:"limits,omitempty"`
	Storage           Storage  `json:"storage,omitzero"`
	// Log chooses the stream log's backend.
	Log LogConfig `json:"log,omitzero"`
	// PublishTokenFile holds the bearer token required on writes. When empty
	// the environment variable TCPREPL_PUBLISH_TOKEN is used if set.
	PublishTokenFile string `json:"publishTokenFile,omitempty"`
	// TLS and Access: see tls.go.
	TLS    TLS    `json:"tls,omitzero"`
	Access Access `json:"access,omitzero"`
}

// LoadConfigFile reads a YAML config file. Unknown fields are an error so
// that a typo does not silently fall back to a default.
func LoadConfigFile(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config file: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return c, fmt.Errorf("parse config file %s: %w", path, err)
	}
	return c, nil
}

// WithDefaults returns the config with every unset setting at its default.
func (c Config) WithDefaults() Config {
	if c.ReplicationListen == "" {
		c.ReplicationListen = DefaultReplicationListen
	}
	if c.HTTPListen == "" {
		c.HTTPListen = DefaultHTTPListen
	}
	// Backend stays "" for Pebble: the operator renders the config, and a
	// new default must not change what an unchanged resource renders.
	if c.DataDir == "" && c.Log.Backend != LogPostgres {
		c.Ephemeral = true
	}
	l := &c.Limits
	if l.MaxLineLength == 0 {
		l.MaxLineLength = DefaultMaxLineLength
	}
	if l.MaxPendingCommands == 0 {
		l.MaxPendingCommands = DefaultMaxPendingCommands
	}
	if l.PingInterval.Duration == 0 {
		l.PingInterval.Duration = DefaultPingInterval
	}
	if l.PingTimeout.Duration == 0 {
		l.PingTimeout.Duration = DefaultPingTimeout
	}
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if l.MaxUserIPs == 0 {
		l.MaxUserIPs = DefaultMaxUserIPs
	}
	if l.MaxPendingBytes == 0 {
		l.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if l.MaxCatchUpBytes == 0 {
		l.MaxCatchUpBytes = DefaultMaxCatchUpBytes
	}
	c.applyHardeningDefaults()
	return c
}

// applyHardeningDefaults fills the connection bounds and, when the config
// has no "*" retention entry, the default retention. An explicit "*" entry
// is kept as written ({} means unbounded).
func (c *Config) applyHardeningDefaults() {
	l := &c.Limits
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.IdentifyTimeout.Duration == 0 {
		l.IdentifyTimeout.Duration = DefaultIdentifyTimeout
	}
	if l.MaxNameLength == 0 {
		l.MaxNameLength = DefaultMaxNameLength
	}
	if _, ok := c.Retention["*"]; !ok {
		r := make(map[string]Retention, len(c.Retention)+1)
		maps.Copy(r, c.Retention)
		r["*"] = Retention{MaxBytes: DefaultRetentionMaxBytes, MaxAge: Duration{DefaultRetentionMaxAge}}
		c.Retention = r
	}
}

// validateHardening reports bad connection bounds and byte retention.
func (c Config) validateHardening(bad func(format string, args ...any)) {
	l := c.Limits
	if l.MaxConnections < 0 {
		bad("limits.maxConnections %d must be positive", l.MaxConnections)
	}
	if l.IdentifyTimeout.Duration < 0 {
		bad("limits.identifyTimeout %s must not be negative", l.IdentifyTimeout)
	}
	if l.MaxNameLength < 0 || (l.MaxNameLength > 0 && l.MaxNameLength < 16) {
		bad("limits.maxNameLength %d is too small: use at least 16 (worker names such as synapse.app.generic_worker)", l.MaxNameLength)
	}
	for name, r := range c.Retention {
		if r.MaxBytes < 0 || (r.MaxBytes > 0 && r.MaxBytes < 1<<20) {
			bad("retention for %q: maxBytes %d must be 0 (unbounded) or at least 1 MiB (1048576)", name, r.MaxBytes)
		}
	}
}

// Validate reports every problem in the config at once, each naming the
// setting and what to do about it.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if strings.TrimSpace(c.ServerName) == "" {
		bad("serverName is required: set --server-name or serverName in the config file (workers check it against SERVER)")
	} else if strings.ContainsAny(c.ServerName, " \t\r\n") {
		bad("serverName %q must not contain whitespace: it is sent on one protocol line", c.ServerName)
	}
	if c.ReplicationListen == "" {
		bad("replicationListen is empty: give a listen address such as %q", DefaultReplicationListen)
	}
	if c.HTTPListen == "" {
		bad("httpListen is empty: give a listen address such as %q", DefaultHTTPListen)
	}
	seen := map[string]bool{}
	for _, s := range c.CustomStreams {
		switch err := rows.ValidateName(s.Name); {
		case err != nil:
			bad("customStreams: %w", err)
		case seen[s.Name]:
			bad("custom stream %q is declared twice; declare each stream once", s.Name)
		case s.Fields < 0:
			bad("custom stream %q: fields %d must be 0 (any array) or positive", s.Name, s.Fields)
		}
		seen[s.Name] = true
	}
	streams := c.Streams()
	for name, r := range c.Retention {
		if name != "*" && !slices.Contains(streams, name) {
			bad("retention for %q: no such stream (standard, custom, or federation when enabled); use \"*\" for the default", name)
		}
		if r.MaxRows < 0 {
			bad("retention for %q: maxRows %d must be 0 (unbounded) or positive", name, r.MaxRows)
		}
		if r.MaxAge.Duration < 0 {
			bad("retention for %q: maxAge %s must be 0 (unbounded) or positive", name, r.MaxAge)
		}
	}
	if c.RetentionInterval.Duration < 0 {
		bad("retentionInterval %s must not be negative", c.RetentionInterval)
	}
	l := c.Limits
	if l.MaxLineLength < 0 || (l.MaxLineLength > 0 && l.MaxLineLength < 1024) {
		bad("limits.maxLineLength %d is too small: use at least 1024 (Synapse uses 16384)", l.MaxLineLength)
	}
	if l.MaxPendingCommands < 0 {
		bad("limits.maxPendingCommands %d must be positive", l.MaxPendingCommands)
	}
	if l.PingInterval.Duration < 0 || l.PingTimeout.Duration < 0 || l.WriteTimeout.Duration < 0 {
		bad("limits: pingInterval, pingTimeout and writeTimeout must not be negative")
	}
	if l.PingInterval.Duration > 0 && l.PingTimeout.Duration > 0 && l.PingTimeout.Duration <= l.PingInterval.Duration {
		bad("limits.pingTimeout %s must be longer than pingInterval %s, or every idle peer times out", l.PingTimeout, l.PingInterval)
	}
	if l.MaxRequestBytes < 0 || l.MaxRequestBytes > MaxRequestBytesLimit {
		bad("limits.maxRequestBytes %d must be positive and at most %d (256 MiB); a publish of %d rows needs far less", l.MaxRequestBytes, MaxRequestBytesLimit, MaxRowsPerPublish)
	}
	if l.MaxUserIPs < 0 {
		bad("limits.maxUserIPs %d must be positive", l.MaxUserIPs)
	}
	if l.MaxPendingBytes < 0 || (l.MaxPendingBytes > 0 && l.MaxPendingBytes < minPendingBytes) {
		bad("limits.maxPendingBytes %d is too small: use at least %d (64 KiB) so that a connection can queue a few full lines", l.MaxPendingBytes, minPendingBytes)
	}
	if l.MaxCatchUpBytes < 0 || (l.MaxCatchUpBytes > 0 && l.MaxCatchUpBytes < minCatchUpBytes) {
		bad("limits.maxCatchUpBytes %d is too small: use at least %d (1 MiB), one catch-up page", l.MaxCatchUpBytes, minCatchUpBytes)
	}
	if st := c.Storage; st.MemTableBytes < 0 || st.BlockCacheBytes < 0 || st.TailCacheBytes < -1 {
		bad("storage: memTableBytes and blockCacheBytes must not be negative; tailCacheBytes is -1 (off), 0 (default) or a size")
	}
	if st := c.Storage; st.MemTableBytes > 0 && st.MemTableBytes < 1<<20 {
		bad("storage.memTableBytes %d is too small: use at least 1 MiB (1048576)", st.MemTableBytes)
	}
	if c.DataDir != "" && c.Ephemeral {
		bad("dataDir %q and ephemeral are both set: choose one (ephemeral keeps the log in memory)", c.DataDir)
	}
	c.validateLog(bad)
	c.validateHardening(bad)
	c.validateTLSAccess(bad)
	return errors.Join(errs...)
}

// validateLog checks the log backend's settings.
func (c Config) validateLog(bad func(string, ...any)) {
	switch c.Log.Backend {
	case "", LogPebble:
		if c.Log.PostgresDSNFile != "" {
			bad("log.postgresDSNFile is set but log.backend is %q: set log.backend to %q to use PostgreSQL", LogPebble, LogPostgres)
		}
	case LogPostgres:
		if c.DataDir != "" || c.Ephemeral {
			bad("dataDir and ephemeral are for the Pebble log; with log.backend %q the log lives in PostgreSQL: remove them", LogPostgres)
		}
	default:
		bad("log.backend %q is unknown: use %q (default) or %q", c.Log.Backend, LogPebble, LogPostgres)
	}
	c.validateLease(bad)
	c.validateCommitConnections(bad)
}

// PostgresDSN reads the PostgreSQL DSN: from Log.PostgresDSNFile when set
// (surrounding whitespace trimmed), else from TCPREPL_POSTGRES_DSN.
func (c Config) PostgresDSN() (string, error) {
	if f := c.Log.PostgresDSNFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read PostgreSQL DSN file: %w", err)
		}
		dsn := strings.TrimSpace(string(b))
		if dsn == "" {
			return "", fmt.Errorf("PostgreSQL DSN file %s is empty: write the connection URI (postgres://user:password@host:5432/db) into it", f)
		}
		return dsn, nil
	}
	if dsn := strings.TrimSpace(os.Getenv(PostgresDSNEnv)); dsn != "" {
		return dsn, nil
	}
	return "", fmt.Errorf("log.backend is %q but no DSN is given: set log.postgresDSNFile (--postgres-dsn-file) or $%s", LogPostgres, PostgresDSNEnv)
}

// Streams lists the streams this master publishes, in a stable order:
// the standard ones (federation only when enabled) then the custom ones.
func (c Config) Streams() []string {
	out := rows.StandardStreams(c.Federation)
	for _, s := range c.CustomStreams {
		out = append(out, s.Name)
	}
	return out
}

// RetentionFor returns the retention of one stream: its own entry, else "*".
func (c Config) RetentionFor(stream string) Retention {
	if r, ok := c.Retention[stream]; ok {
		return r
	}
	return c.Retention["*"]
}

// PublishToken reads the publish bearer token: from PublishTokenFile when
// set (surrounding whitespace trimmed, since files usually end in a
// newline), else from TCPREPL_PUBLISH_TOKEN. Empty means writes are open.
func (c Config) PublishToken() (string, error) {
	if c.PublishTokenFile != "" {
		b, err := os.ReadFile(c.PublishTokenFile)
		if err != nil {
			return "", fmt.Errorf("read publish token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("publish token file %s is empty: put the token in it or remove publishTokenFile", c.PublishTokenFile)
		}
		return tok, nil
	}
	return strings.TrimSpace(os.Getenv(PublishTokenEnv)), nil
}
