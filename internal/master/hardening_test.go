package master

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// serveMaster serves an already built master on 127.0.0.1 ports.
func serveMaster(t testing.TB, m *Master) *liveMaster {
	t.Helper()
	replLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lm := &liveMaster{Master: m, replAddr: replLn.Addr().String(), httpURL: "http://" + httpLn.Addr().String(), served: make(chan error, 1)}
	go func() { lm.served <- m.Serve(replLn, httpLn) }()
	waitFor(t, "master ready", func() bool {
		resp, err := http.Get(lm.httpURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return lm
}

func statusOf(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// Issue 11 item 4: after the first failed write the master refused every
// publish forever while /healthz and /readyz stayed 200, and SIGTERM then
// panicked inside Pebble. Now the health checks fail, the master shuts
// itself down (Serve returns ErrLogFailed, so the process exits and is
// restarted) and the shutdown does not flush the failed log.
func TestFullDiskFailsHealthAndStopsTheMaster(t *testing.T) {
	disk := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			return errorfs.ErrInjected
		}
		return nil
	})}
	cfg := masterapi.Config{ServerName: "hs.test"}
	log, err := streamlog.Open(streamlog.Options{FS: errorfs.Wrap(vfs.NewMem(), disk), Dir: "log", Streams: cfg.Streams(), TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, Options{Logger: logr.Discard(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	lm := serveMaster(t, m)
	lm.publish(t, "caches", `["f", ["k"], 1]`)
	if code, _ := statusOf(t, m.Handler(), "/healthz"); code != 200 {
		t.Fatalf("healthz before the failure: %d", code)
	}

	disk.On() // the volume is full
	resp, err := http.Post(lm.httpURL+"/v1/streams/caches/rows", "application/json", strings.NewReader(`{"rows": [["f", ["k"], 2]]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("publish on a full disk: %s, want 500", resp.Status)
	}
	disk.Off() // space freed: only a restart may trust the disk again

	select {
	case err := <-lm.served:
		if !errors.Is(err, ErrLogFailed) || !errors.Is(err, streamlog.ErrFailed) {
			t.Fatalf("Serve returned %v, want ErrLogFailed wrapping the log's failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the master kept running on a failed log")
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		code, body := statusOf(t, m.Handler(), path)
		if code != 503 || !strings.Contains(body, "stream log failed") {
			t.Errorf("%s on a failed log: %d %s, want 503 naming the failure", path, code, body)
		}
	}
}

// Issue 11 item 4: with no retention configured, a flood of client
// commands filled the volume; the default retention bounds size and age.
func TestDefaultRetentionBoundsSizeAndAge(t *testing.T) {
	cfg := masterapi.Config{ServerName: "hs"}.WithDefaults()
	def := cfg.RetentionFor("caches")
	if def.MaxBytes != masterapi.DefaultRetentionMaxBytes || def.MaxAge.Duration != masterapi.DefaultRetentionMaxAge {
		t.Fatalf("default retention %+v, want maxBytes %d and maxAge %s", def, masterapi.DefaultRetentionMaxBytes, masterapi.DefaultRetentionMaxAge)
	}
	explicit := masterapi.Config{ServerName: "hs", Retention: map[string]masterapi.Retention{"*": {}, "events": {MaxRows: 5}}}
	if got := explicit.WithDefaults().RetentionFor("caches"); got != (masterapi.Retention{}) {
		t.Fatalf("an explicit \"*\" entry was replaced by the default: %+v", got)
	}
	if _, ok := explicit.Retention["*"]; !ok || len(explicit.Retention) != 2 {
		t.Fatal("WithDefaults changed the caller's retention map")
	}
	bad := masterapi.Config{ServerName: "hs", Retention: map[string]masterapi.Retention{"*": {MaxBytes: 1000}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "maxBytes") {
		t.Fatalf("Validate(maxBytes 1000) = %v, want an error naming maxBytes", err)
	}
}

// Issue 11 item 10: the bare CLI listened on every interface.
func TestDefaultListenIsLoopback(t *testing.T) {
	cfg := masterapi.Config{ServerName: "hs"}.WithDefaults()
	for name, addr := range map[string]string{"replication": cfg.ReplicationListen, "http": cfg.HTTPListen} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			t.Errorf("default %s listen address %q is not loopback", name, addr)
		}
	}
}

// Issue 11 item 9: 2,500 connections made /metrics 7.2 MB (a series per
// connection id) and 12 KB client-chosen NAMEs made it 21.7 MB. With
// thousands of connections under distinct long names, /metrics stays small.
func TestMetricsSizeBoundedUnderManyConnections(t *testing.T) {
	lm := startMaster(t, masterapi.Config{Limits: masterapi.Limits{MaxConnections: 5000, MaxNameLength: 8192}})
	lm.publish(t, "caches", `["f", ["k"], 1]`)
	scrape := func() int {
		resp, err := http.Get(lm.httpURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	base := scrape()
	const conns = 2000
	long := strings.Repeat("n", 8000)
	var ncs []net.Conn
	defer func() {
		for _, nc := range ncs {
			nc.Close()
		}
	}()
	for i := range conns {
		nc, err := net.Dial("tcp", lm.replAddr)
		if err != nil {
			t.Fatal(err)
		}
		ncs = append(ncs, nc)
		if _, err := fmt.Fprintf(nc, "NAME %d-%s\nREPLICATE caches 0\n", i, long); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every connection subscribed", func() bool {
		n := 0
		for _, c := range lm.ConnectionTable() {
			if len(c.Streams) == 1 {
				n++
			}
		}
		return n == conns
	})
	size := scrape()
	// 100 names of at most 64 bytes, a few series each, plus "_other".
	if size-base > 256<<10 {
		t.Fatalf("/metrics grew from %d to %d bytes with %d connections; want it bounded", base, size, conns)
	}
	t.Logf("/metrics: %d bytes idle, %d bytes with %d connections named by 8 KB NAMEs", base, size, conns)
}

// The log-id extension reaches a client through the real master.
func TestMasterAnnouncesItsLogID(t *testing.T) {
	lm := startMaster(t, masterapi.Config{})
	ids := make(chan string, 4)
	w := &worker{rows: map[string][]string{}, tokens: map[string][]int64{}, positions: map[string]int64{}, done: make(chan error, 1)}
	c, err := replication.NewClient(replication.ClientConfig{
		Address: lm.replAddr, ServerName: "hs.test", Name: "w", Handler: w,
		Streams: []replication.StreamRequest{{Stream: "caches"}},
		OnLogID: func(id string) error { ids <- id; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { w.done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-w.done; !errors.Is(err, context.Canceled) {
			t.Errorf("client Run: %v", err)
		}
	}()
	got := <-ids
	if want := lm.store.(*streamlog.Log).LogID(); got != want || got == "" {
		t.Fatalf("client got log id %q, the master's log is %q", got, want)
	}
	var streams struct {
		LogID string `json:"logId"`
	}
	lm.getJSON(t, "/v1/streams", &streams)
	if streams.LogID != got {
		t.Fatalf("GET /v1/streams logId %q, want %q", streams.LogID, got)
	}
}

func TestHardeningSettingsValidated(t *testing.T) {
	tests := map[string]struct {
		cfg  masterapi.Config
		want string
	}{
		"negative maxConnections":  {masterapi.Config{Limits: masterapi.Limits{MaxConnections: -1}}, "limits.maxConnections"},
		"negative identifyTimeout": {masterapi.Config{Limits: masterapi.Limits{IdentifyTimeout: masterapi.Duration{Duration: -time.Second}}}, "limits.identifyTimeout"},
		"tiny maxNameLength":       {masterapi.Config{Limits: masterapi.Limits{MaxNameLength: 3}}, "limits.maxNameLength 3 is too small"},
		"negative maxBytes":        {masterapi.Config{Retention: map[string]masterapi.Retention{"caches": {MaxBytes: -1}}}, `retention for "caches": maxBytes -1`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.cfg.ServerName = "hs"
			err := tc.cfg.WithDefaults().Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	cfg := masterapi.Config{ServerName: "hs"}.WithDefaults()
	if l := cfg.Limits; l.MaxConnections != masterapi.DefaultMaxConnections || l.IdentifyTimeout.Duration != masterapi.DefaultIdentifyTimeout || l.MaxNameLength != masterapi.DefaultMaxNameLength {
		t.Fatalf("defaults not applied: %+v", l)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

// A config file sets the new bounds.
func TestHardeningSettingsFromYAML(t *testing.T) {
	path := t.TempDir() + "/m.yaml"
	yaml := "serverName: hs\nlimits: {maxConnections: 10, identifyTimeout: 5s, maxNameLength: 64}\nretention: {\"*\": {maxBytes: 2097152, maxAge: 1h}}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := masterapi.LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Limits; l.MaxConnections != 10 || l.IdentifyTimeout.Duration != 5*time.Second || l.MaxNameLength != 64 {
		t.Fatalf("limits from YAML: %+v", l)
	}
	if r := cfg.WithDefaults().RetentionFor("caches"); r.MaxBytes != 2<<20 || r.MaxAge.Duration != time.Hour {
		t.Fatalf("retention from YAML: %+v", r)
	}
}
