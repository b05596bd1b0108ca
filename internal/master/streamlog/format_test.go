package streamlog

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/go-logr/logr"
)

// rawDB opens the Pebble database under a Log directly, as another program
// (or an older version of this package) would.
func rawDB(t *testing.T, fs vfs.FS, dir string) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{FS: fs, Logger: pebbleLogger{logr.Discard()}})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func getFormat(t *testing.T, db *pebble.DB) (uint32, bool) {
	t.Helper()
	v, closer, err := db.Get(formatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	version, err := decodeFormat(v)
	if err != nil {
		t.Fatal(err)
	}
	return version, true
}

// TestFormatRecordWrittenOnOpen: a new log records its format before any
// append, durably, and opens again.
func TestFormatRecordWrittenOnOpen(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openTest(t, Options{FS: fs, Dir: "db"})
	if version, ok := getFormat(t, l.db); !ok || version != formatV2 {
		t.Fatalf("format record after Open = %d, %v; want %d", version, ok, formatV2)
	}
	// A crash right after Open keeps only what was synced; the record was.
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	closeTest(t, l)
	db := rawDB(t, crashed, "db")
	if version, ok := getFormat(t, db); !ok || version != formatV2 {
		t.Fatalf("format record after a crash = %d, %v; want %d", version, ok, formatV2)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, Options{FS: fs, Dir: "db"})
	defer closeTest(t, l)
	if u := mustAppend(t, l, "events", `[1]`); u.Token != 1 {
		t.Fatalf("first token after reopen = %d", u.Token)
	}
}

// writeFormat1 writes what the previous layout (one key per row, no format
// record) left on disk for a token of stream: its header at slot 0 and a
// row at slot 1.
func writeFormat1(t *testing.T, db *pebble.DB, stream string, token int64) {
	t.Helper()
	key := func(slot uint32) []byte {
		k := binary.BigEndian.AppendUint64(tokenKeyPrefix(stream), uint64(token))
		return binary.BigEndian.AppendUint32(k, slot)
	}
	b := db.NewBatch()
	_ = b.Set(key(0), appendHeader(nil, header{rows: 1, cum: token}), nil)
	_ = b.Set(key(1), []byte(`[1]`), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesFormat1: a directory written by the one-key-per-row layout
// (data, no format record) is refused with an error saying what was found
// and what to do, and is left as it was.
func TestOpenRefusesFormat1(t *testing.T) {
	tests := map[string]func(t *testing.T, db *pebble.DB){
		"rows": func(t *testing.T, db *pebble.DB) {
			writeFormat1(t, db, "events", 1)
			writeFormat1(t, db, "events", 2)
		},
		"retention record only": func(t *testing.T, db *pebble.DB) {
			if err := db.Set(metaKey("caches"), encodeMeta(meta{oldest: 3, trimmedCum: 2}), pebble.Sync); err != nil {
				t.Fatal(err)
			}
		},
		"a stream not configured": func(t *testing.T, db *pebble.DB) { writeFormat1(t, db, "old_stream", 1) },
	}
	for name, write := range tests {
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewMem()
			db := rawDB(t, fs, "db")
			write(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			l, err := Open(Options{FS: fs, Dir: "db", Streams: testStreams, TrimInterval: -1})
			if err == nil {
				_ = l.Close()
				t.Fatal("Open of a format 1 directory succeeded")
			}
			for _, want := range []string{`"db"`, "no format record", "format 1 (one key per row)", "reads only format 2", "move the data directory aside", "workers will resync from the new log"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("Open of a format 1 directory: %v; want it to say %q", err, want)
				}
			}
			t.Log(err)
			db = rawDB(t, fs, "db")
			defer func() { _ = db.Close() }()
			if _, ok := getFormat(t, db); ok {
				t.Fatal("the refused directory got a format record")
			}
			it, err := db.NewIter(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = it.Close() }()
			if !it.First() {
				t.Fatal("the refused directory lost its data")
			}
		})
	}
}

// TestOpenRefusesOtherFormat: a format record naming another version, or
// one that is malformed, is refused with an error saying what was found.
func TestOpenRefusesOtherFormat(t *testing.T) {
	tests := map[string]struct {
		record []byte
		want   []string
	}{
		"newer":     {encodeFormat(3), []string{"holds stream log format 3", "reads only format 2"}},
		"format 1":  {encodeFormat(1), []string{"holds stream log format 1", "reads only format 2"}},
		"malformed": {[]byte{2}, []string{"malformed format record", "reads stream log format 2"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewMem()
			l := openTest(t, Options{FS: fs, Dir: "db"})
			mustAppend(t, l, "events", `[1]`)
			if err := l.db.Set(formatKey, tc.record, nil); err != nil {
				t.Fatal(err)
			}
			closeTest(t, l)
			l, err := Open(Options{FS: fs, Dir: "db", Streams: testStreams, TrimInterval: -1})
			if err == nil {
				_ = l.Close()
				t.Fatal("Open succeeded")
			}
			for _, want := range append(tc.want, `"db"`, "move the data directory aside") {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("Open: %v; want it to say %q", err, want)
				}
			}
		})
	}
}
