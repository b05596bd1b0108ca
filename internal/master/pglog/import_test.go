package pglog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/master/streamlog"
	"github.com/tcprepl/tcprepl/internal/pgtest"
	"github.com/tcprepl/tcprepl/internal/replication"
)

var importStreams = []string{"events", "caches", "typing"}

// pebbleWithHistory is a Pebble log with a trimmed stream (events: tokens
// 11-40 kept), an empty one (caches) and one trimmed through its newest
// token (typing: nothing kept, position 3).
func pebbleWithHistory(t *testing.T) *streamlog.Log {
	t.Helper()
	clock := time.Unix(1_700_000_000, 0)
	l, err := streamlog.Open(streamlog.Options{Dir: t.TempDir(), Streams: importStreams, TrimInterval: -1, TailCacheBytes: -1,
		Now: func() time.Time { clock = clock.Add(time.Millisecond); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	ctx := context.Background()
	for i := 1; i <= 40; i++ {
		rows := make([]json.RawMessage, 1+i%4)
		for j := range rows {
			rows[j] = json.RawMessage(fmt.Sprintf(`["e%d.%d",{"n":%d}]`, i, j, j))
		}
		if _, err := l.AppendEncoded(ctx, "events", rows); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		if _, err := l.AppendEncoded(ctx, "typing", []json.RawMessage{json.RawMessage(fmt.Sprintf(`["t%d"]`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Trim("events", 10); err != nil {
		t.Fatal(err)
	}
	if err := l.Trim("typing", 3); err != nil {
		t.Fatal(err)
	}
	return l
}

func importInto(dsn string, src pglog.ImportSource, page int) ([]pglog.ImportedStream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return pglog.Import(ctx, src, pglog.ImportOptions{DSN: dsn, ServerName: "hs.example", Streams: importStreams, PageRows: page})
}

func openImported(t *testing.T, dsn string) *pglog.Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := pglog.Open(ctx, pglog.Options{DSN: dsn, ServerName: "hs.example", Streams: importStreams, TrimInterval: -1, TailCacheBytes: -1})
	if err != nil {
		t.Fatalf("open the imported log: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// TestImportFromPebbleIsTheSameLog: the imported log has the Pebble log's
// id, positions, oldest tokens, rows and publish times, and continues its
// tokens.
func TestImportFromPebbleIsTheSameLog(t *testing.T) {
	src := pebbleWithHistory(t)
	dsn := pgtest.Shared(t).NewDatabase(t)
	got, err := importInto(dsn, src, 7) // pages of 7 rows: several copies per stream
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	want := []pglog.ImportedStream{{Stream: "events", Oldest: 11, Current: 40, Rows: 0}, {Stream: "caches", Oldest: 1, Current: 0}, {Stream: "typing", Oldest: 4, Current: 3}}
	var rows int64
	for i := 11; i <= 40; i++ {
		rows += int64(1 + i%4)
	}
	want[0].Rows = rows
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("imported %+v, want %+v", got, want)
	}
	pg := openImported(t, dsn)
	if pg.LogID() != src.LogID() {
		t.Fatalf("log id %s, want the Pebble log's %s", pg.LogID(), src.LogID())
	}
	ctx := context.Background()
	for _, s := range importStreams {
		ps, _ := src.Stats(s)
		gs, err := pg.Stats(s)
		if err != nil {
			t.Fatal(err)
		}
		if gs.CurrentToken != ps.CurrentToken || gs.OldestToken != ps.OldestToken || gs.Rows != ps.Rows || !gs.LastAppend.Equal(ps.LastAppend) {
			t.Fatalf("stream %s: PostgreSQL %+v, Pebble %+v", s, gs, ps)
		}
		pu, err := src.ReadAfter(ctx, s, ps.OldestToken-1, ps.CurrentToken, 1000)
		if err != nil {
			t.Fatal(err)
		}
		gu, err := pg.ReadAfter(ctx, s, ps.OldestToken-1, ps.CurrentToken, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(gu) != len(pu) {
			t.Fatalf("stream %s: %d updates, want %d", s, len(gu), len(pu))
		}
		for i := range pu {
			if gu[i].Token != pu[i].Token || !gu[i].Time.Equal(pu[i].Time) || !reflect.DeepEqual(gu[i].Rows, pu[i].Rows) {
				t.Fatalf("stream %s update %d: %+v, want %+v", s, i, gu[i], pu[i])
			}
		}
	}
	var tooOld *replication.TokenTooOldError
	if _, err := pg.ReadAfter(ctx, "events", 5, 40, 10); !errors.As(err, &tooOld) || tooOld.Oldest != 11 {
		t.Fatalf("read before the oldest token: %v, want a TokenTooOldError at 11", err)
	}
	for s, next := range map[string]int64{"events": 41, "caches": 1, "typing": 4} {
		u, err := pg.AppendEncoded(ctx, s, []json.RawMessage{json.RawMessage(`["after"]`)})
		if err != nil || u.Token != next {
			t.Fatalf("append to %s after the import: token %d, %v; want %d", s, u.Token, err, next)
		}
	}
}

// TestImportRefusesANonEmptyDatabase: a database a master opened, or one
// imported into already, is refused and left as it was.
func TestImportRefusesANonEmptyDatabase(t *testing.T) {
	src := pebbleWithHistory(t)
	srv := pgtest.Shared(t)
	tests := map[string]func(t *testing.T, dsn string){
		"a master opened it": func(t *testing.T, dsn string) {
			l := openImported(t, dsn)
			if _, err := l.AppendEncoded(context.Background(), "caches", []json.RawMessage{json.RawMessage(`["x"]`)}); err != nil {
				t.Fatal(err)
			}
			_ = l.Close()
		},
		"imported already": func(t *testing.T, dsn string) {
			if _, err := importInto(dsn, src, 0); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, prepare := range tests {
		t.Run(name, func(t *testing.T) {
			dsn := srv.NewDatabase(t)
			prepare(t, dsn)
			pg := openImported(t, dsn)
			before, _ := pg.Stats("caches")
			id := pg.LogID()
			_ = pg.Close()
			if _, err := importInto(dsn, src, 0); !errors.Is(err, pglog.ErrNotEmpty) {
				t.Fatalf("Import into a database holding a log: %v, want ErrNotEmpty", err)
			}
			pg = openImported(t, dsn)
			if after, _ := pg.Stats("caches"); pg.LogID() != id || after.CurrentToken != before.CurrentToken {
				t.Fatalf("the refused import changed the database: id %s/%s, caches token %d/%d", pg.LogID(), id, after.CurrentToken, before.CurrentToken)
			}
		})
	}
}

// failingSource fails its second read: the import must leave nothing.
type failingSource struct {
	pglog.ImportSource
	reads int
}

func (f *failingSource) ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]replication.Update, error) {
	if f.reads++; f.reads == 2 {
		return nil, errors.New("disk read failed")
	}
	return f.ImportSource.ReadAfter(ctx, stream, after, upTo, limit)
}

// TestImportFailureLeavesTheDatabaseEmpty: a read that fails halfway
// rolls the whole import back, so it can simply be run again.
func TestImportFailureLeavesTheDatabaseEmpty(t *testing.T) {
	src := pebbleWithHistory(t)
	dsn := pgtest.Shared(t).NewDatabase(t)
	if _, err := importInto(dsn, &failingSource{ImportSource: src}, 5); err == nil {
		t.Fatal("Import succeeded though the source failed")
	}
	if _, err := importInto(dsn, src, 5); err != nil {
		t.Fatalf("Import after a failed one: %v", err)
	}
	if pg := openImported(t, dsn); pg.LogID() != src.LogID() {
		t.Fatalf("log id %s, want %s", pg.LogID(), src.LogID())
	}
}

// TestImportNeedsServerAndStreams: the options Import cannot do without.
func TestImportNeedsServerAndStreams(t *testing.T) {
	src := pebbleWithHistory(t)
	tests := map[string]struct {
		opts pglog.ImportOptions
		want string
	}{
		"no server name": {opts: pglog.ImportOptions{DSN: "postgres://127.0.0.1:1/x", Streams: importStreams}, want: "no server name"},
		"no streams":     {opts: pglog.ImportOptions{DSN: "postgres://127.0.0.1:1/x", ServerName: "hs"}, want: "no streams"},
		"bad DSN":        {opts: pglog.ImportOptions{DSN: "postgres://[bad", ServerName: "hs", Streams: importStreams}, want: "parse the PostgreSQL DSN"},
		"server down":    {opts: pglog.ImportOptions{DSN: "postgres://postgres@127.0.0.1:1/x?connect_timeout=2", ServerName: "hs", Streams: importStreams}, want: "connect to PostgreSQL"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := pglog.Import(context.Background(), src, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Import: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
