package masterapi

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.yaml")
	yml := `
serverName: hs.example
replicationListen: 127.0.0.1:19092
dataDir: /var/lib/tcprepl
federation: true
customStreams: [my_stream, {name: counted, fields: 2}]
retention:
  "*": {maxRows: 1000000}
  federation: {maxAge: 24h}
  events: {maxRows: 10, maxAge: 3600}
limits:
  maxLineLength: 32768
  pingInterval: 2s
  pingTimeout: 10s
  maxPendingBytes: 1048576
storage: {memTableBytes: 8388608, tailCacheBytes: -1}
publishTokenFile: /etc/tcprepl/token
`
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "hs.example" || c.ReplicationListen != "127.0.0.1:19092" || c.HTTPListen != DefaultHTTPListen || c.Ephemeral {
		t.Fatalf("%+v", c)
	}
	if got := c.RetentionFor("federation"); got.MaxAge.Duration != 24*time.Hour || got.MaxRows != 0 {
		t.Fatalf("federation retention %+v", got)
	}
	if got := c.RetentionFor("events"); got.MaxAge.Duration != time.Hour || got.MaxRows != 10 {
		t.Fatalf("events retention %+v", got)
	}
	if got := c.RetentionFor("caches"); got.MaxRows != 1000000 {
		t.Fatalf("default retention %+v", got)
	}
	if c.Storage != (Storage{MemTableBytes: 8 << 20, TailCacheBytes: -1}) {
		t.Fatalf("storage %+v", c.Storage)
	}
	if c.Limits.PingInterval.Duration != 2*time.Second || c.Limits.MaxPendingCommands != DefaultMaxPendingCommands ||
		c.Limits.MaxPendingBytes != 1<<20 || c.Limits.MaxCatchUpBytes != DefaultMaxCatchUpBytes {
		t.Fatalf("limits %+v", c.Limits)
	}
	streams := c.Streams()
	if len(streams) != 18 || !slices.Contains(streams, "federation") || streams[16] != "my_stream" || c.CustomStreams[1] != (CustomStream{"counted", 2}) {
		t.Fatalf("streams %v", streams)
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yml, want string }{
		{"typo", "serverName: a\nserverNmae: b\n", "unknown field"},
		{"bad duration", "limits: {pingInterval: soon}\n", "invalid duration"},
		{"not yaml", "serverName: [\n", "parse config file"},
		{"bad custom stream", "customStreams: [{name: a, colour: red}]\n", "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(path, []byte(tc.yml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfigFile(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := LoadConfigFile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ServerName: "hs"}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no server name", func(c *Config) { c.ServerName = "" }, "serverName is required"},
		{"space in name", func(c *Config) { c.ServerName = "a b" }, "whitespace"},
		{"bad custom stream", func(c *Config) { c.CustomStreams = []CustomStream{{Name: "Bad"}} }, "[a-z][a-z0-9_]*"},
		{"custom shadows standard", func(c *Config) { c.CustomStreams = []CustomStream{{Name: "events"}} }, "standard stream"},
		{"duplicate custom", func(c *Config) { c.CustomStreams = []CustomStream{{Name: "x"}, {Name: "x"}} }, "declared twice"},
		{"negative fields", func(c *Config) { c.CustomStreams = []CustomStream{{Name: "x", Fields: -1}} }, "fields -1"},
		{"retention of unknown stream", func(c *Config) { c.Retention = map[string]Retention{"nope": {}} }, `retention for "nope"`},
		{"retention of disabled federation", func(c *Config) { c.Retention = map[string]Retention{"federation": {}} }, `retention for "federation"`},
		{"negative rows", func(c *Config) { c.Retention = map[string]Retention{"*": {MaxRows: -1}} }, "maxRows"},
		{"tiny line", func(c *Config) { c.Limits.MaxLineLength = 10 }, "maxLineLength"},
		{"huge request limit", func(c *Config) { c.Limits.MaxRequestBytes = 1e14 }, "maxRequestBytes 100000000000000 must be positive and at most 268435456"},
		{"negative request limit", func(c *Config) { c.Limits.MaxRequestBytes = -1 }, "maxRequestBytes -1"},
		{"timeout under interval", func(c *Config) {
			c.Limits.PingInterval = Duration{10 * time.Second}
			c.Limits.PingTimeout = Duration{5 * time.Second}
		}, "pingTimeout"},
		{"dir and ephemeral", func(c *Config) { c.DataDir = "/d"; c.Ephemeral = true }, "choose one"},
		{"negative cache", func(c *Config) { c.Storage.BlockCacheBytes = -1 }, "storage"},
		{"tail cache below -1", func(c *Config) { c.Storage.TailCacheBytes = -2 }, "tailCacheBytes"},
		{"tiny memtable", func(c *Config) { c.Storage.MemTableBytes = 1000 }, "memTableBytes"},
		{"negative retention interval", func(c *Config) { c.RetentionInterval = Duration{-time.Second} }, "retentionInterval"},
		{"tiny pending bytes", func(c *Config) { c.Limits.MaxPendingBytes = 1000 }, "maxPendingBytes 1000 is too small"},
		{"negative pending bytes", func(c *Config) { c.Limits.MaxPendingBytes = -1 }, "maxPendingBytes -1"},
		{"tiny catch-up bytes", func(c *Config) { c.Limits.MaxCatchUpBytes = 4096 }, "maxCatchUpBytes 4096 is too small"},
		{"unknown log backend", func(c *Config) { c.Log.Backend = "sqlite" }, `log.backend "sqlite" is unknown`},
		{"DSN file with pebble", func(c *Config) { c.Log.PostgresDSNFile = "/dsn" }, "set log.backend to \"postgres\""},
		{"data dir with postgres", func(c *Config) { c.Log.Backend = LogPostgres; c.DataDir = "/d" }, "dataDir and ephemeral are for the Pebble log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			err := c.WithDefaults().Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	if err := ok.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	atLimit := ok
	atLimit.Limits.MaxRequestBytes = MaxRequestBytesLimit
	if err := atLimit.WithDefaults().Validate(); err != nil {
		t.Fatalf("maxRequestBytes at the limit: %v", err)
	}
	// Every problem is reported at once.
	err := Config{CustomStreams: []CustomStream{{Name: "X"}}}.WithDefaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "serverName") || !strings.Contains(err.Error(), `"X"`) {
		t.Fatalf("err %v", err)
	}
}

func TestPostgresConfig(t *testing.T) {
	pg := Config{ServerName: "hs", Log: LogConfig{Backend: LogPostgres}}.WithDefaults()
	if err := pg.Validate(); err != nil || pg.Ephemeral {
		t.Fatalf("postgres backend: %v, ephemeral %v; want valid and not ephemeral", err, pg.Ephemeral)
	}
	t.Setenv(PostgresDSNEnv, "")
	if _, err := pg.PostgresDSN(); err == nil || !strings.Contains(err.Error(), "--postgres-dsn-file") {
		t.Fatalf("no DSN: %v", err)
	}
	t.Setenv(PostgresDSNEnv, " postgres://env/db\n")
	if dsn, err := pg.PostgresDSN(); err != nil || dsn != "postgres://env/db" {
		t.Fatalf("DSN from the environment: %q, %v", dsn, err)
	}
	path := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(path, []byte("postgres://file/db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pg.Log.PostgresDSNFile = path
	if dsn, err := pg.PostgresDSN(); err != nil || dsn != "postgres://file/db" {
		t.Fatalf("DSN from the file wins over the environment: %q, %v", dsn, err)
	}
	if err := os.WriteFile(path, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.PostgresDSN(); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty DSN file: %v", err)
	}
	// Pebble, the default, renders nothing new.
	if def := (Config{ServerName: "hs"}).WithDefaults(); def.Log != (LogConfig{}) || !def.Ephemeral {
		t.Fatalf("defaults changed the log config: %+v", def.Log)
	}
}

func TestPublishTokenFileEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (Config{PublishTokenFile: path}).PublishToken(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("err %v", err)
	}
	if _, err := (Config{PublishTokenFile: path + ".missing"}).PublishToken(); err == nil {
		t.Fatal("missing token file accepted")
	}
}

func TestParseCustomStream(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want CustomStream
		err  bool
	}{
		{"my_stream", CustomStream{Name: "my_stream"}, false},
		{"my_stream:3", CustomStream{Name: "my_stream", Fields: 3}, false},
		{"my_stream:x", CustomStream{}, true},
		{"my_stream:-1", CustomStream{}, true},
	} {
		got, err := ParseCustomStream(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%q: %+v %v", tc.in, got, err)
		}
	}
}
