package streamlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

func TestLogIDKeptAcrossRestartsNewForANewLog(t *testing.T) {
	fs := vfs.NewMem()
	first := openTest(t, Options{FS: fs, Dir: "log"})
	id := first.LogID()
	if !validLogID(id) {
		t.Fatalf("LogID = %q, want %d hex digits", id, 2*logIDLen)
	}
	mustAppend(t, first, "events", `[1]`)
	closeTest(t, first)

	again := openTest(t, Options{FS: fs, Dir: "log"})
	if got := again.LogID(); got != id {
		t.Fatalf("LogID after a restart = %q, want the same %q", got, id)
	}
	closeTest(t, again)

	// The same path on a wiped volume is a new log: tokens restart at 1,
	// so its id must differ.
	wiped := openTest(t, Options{FS: vfs.NewMem(), Dir: "log"})
	defer closeTest(t, wiped)
	if wiped.LogID() == id {
		t.Fatalf("a new log has the old log's id %q", id)
	}
	eph1 := openTest(t, Options{Ephemeral: true})
	eph2 := openTest(t, Options{Ephemeral: true})
	defer closeTest(t, eph1)
	defer closeTest(t, eph2)
	if eph1.LogID() == eph2.LogID() {
		t.Fatalf("two ephemeral logs share id %q", eph1.LogID())
	}
}

func TestMalformedLogIDRecordIsRefused(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, Options{FS: fs, Dir: "log"})
	if err := l.db.Set(logIDKey, []byte("not-an-id"), nil); err != nil {
		t.Fatal(err)
	}
	closeTest(t, l)
	_, err := Open(Options{FS: fs, Dir: "log", Streams: testStreams})
	if err == nil || !strings.Contains(err.Error(), "malformed log id") {
		t.Fatalf("Open with a damaged id record: %v, want an error naming it", err)
	}
}

// failingFS fails every write while on: a full or failing data volume.
func failingFS() (vfs.FS, *errorfs.Toggle) {
	tog := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			return errorfs.ErrInjected
		}
		return nil
	})}
	return errorfs.Wrap(vfs.NewMem(), tog), tog
}

// A failed commit is reported through Err and Failed, and Close does not
// flush the failed log (Pebble's flush after a failed WAL write panicked
// inside rotateWAL and the master exited 2 on SIGTERM).
func TestFailedWriteIsReportedAndCloseDoesNotPanic(t *testing.T) {
	fs, disk := failingFS()
	l, err := Open(Options{FS: fs, Dir: "log", Streams: testStreams, TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "caches", `[1]`)
	if l.Err() != nil {
		t.Fatalf("Err on a healthy log = %v", l.Err())
	}
	select {
	case <-l.Failed():
		t.Fatal("Failed closed on a healthy log")
	default:
	}
	disk.On()
	if _, err := l.Append(context.Background(), "caches", rowsOf(`[2]`)); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append on a failing disk: %v, want ErrFailed", err)
	}
	<-l.Failed()
	if !errors.Is(l.Err(), ErrFailed) || !errors.Is(l.Err(), errorfs.ErrInjected) {
		t.Fatalf("Err = %v, want ErrFailed wrapping the disk error", l.Err())
	}
	disk.Off() // space freed: the log still refuses, a restart recovers
	if _, err := l.Append(context.Background(), "caches", rowsOf(`[3]`)); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after the disk recovered: %v, want ErrFailed until a restart", err)
	}
	if err := l.Trim("caches", 1); !errors.Is(err, ErrFailed) {
		t.Fatalf("Trim on a failed log: %v, want ErrFailed", err)
	}
	// Pebble may report the broken WAL file on close; it must not panic.
	_ = l.Close()
	// Restarted on the freed disk, the log has what was acknowledged.
	again := openTest(t, Options{FS: fs, Dir: "log"})
	defer closeTest(t, again)
	if got := summary(mustRead(t, again, "caches", 0, 10, 10)); got != "1:[1]" {
		t.Fatalf("after restart: %s, want the acknowledged row only", got)
	}
}

// An unauthenticated INVALIDATE_CACHE flood filled 20 MiB in 1.8 s with no
// retention configured: MaxBytes keeps a stream within a size.
func TestRetentionByBytes(t *testing.T) {
	const maxBytes = 256 << 10
	l := openTest(t, Options{Ephemeral: true, DefaultRetention: Retention{MaxBytes: maxBytes}})
	defer closeTest(t, l)
	row := make([]byte, 4<<10)
	const tokens = 300 // 1.2 MiB of incompressible rows
	for i := 0; i < tokens; i++ {
		_, _ = rand.Read(row)
		mustAppend(t, l, "caches", fmt.Sprintf(`["f", [%q], %d]`, hex.EncodeToString(row[:2<<10]), i))
	}
	mustAppend(t, l, "events", `[1]`)
	if err := l.db.Flush(); err != nil { // sizes are counted once on disk
		t.Fatal(err)
	}
	if err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	st, err := l.Stats("caches")
	if err != nil {
		t.Fatal(err)
	}
	if st.CurrentToken != tokens || st.OldestToken <= 1 {
		t.Fatalf("caches after retention: current %d oldest %d; want older tokens dropped", st.CurrentToken, st.OldestToken)
	}
	held := st.CurrentToken - st.OldestToken + 1
	// Each token is about 4 KiB on disk: the log keeps about 64 of them.
	if kept := held * 4 << 10; kept > 2*maxBytes || kept < maxBytes/4 {
		t.Fatalf("caches keeps %d tokens (~%d bytes), want about %d bytes", held, kept, maxBytes)
	}
	usage, err := l.db.EstimateDiskUsage(appendTokenKey(nil, tokenKeyPrefix("caches"), st.OldestToken), tokenKeysEnd(tokenKeyPrefix("caches")))
	if err != nil {
		t.Fatal(err)
	}
	if usage > maxBytes {
		t.Fatalf("caches holds %d bytes after retention, over MaxBytes %d", usage, maxBytes)
	}
	if ev, _ := l.Stats("events"); ev.OldestToken != 1 {
		t.Fatalf("a small stream lost tokens: %+v", ev)
	}
}

// A flood of 32 MiB of incompressible rows into one stream: with MaxBytes
// the files on the volume stay a fraction of it (35 MB without retention).
func TestFloodStaysWithinMaxBytesOnDisk(t *testing.T) {
	fs := vfs.NewMem()
	const maxBytes = 2 << 20
	l := openTest(t, Options{FS: fs, Dir: "log", MemTableSize: 1 << 20, DefaultRetention: Retention{MaxBytes: maxBytes}})
	defer closeTest(t, l)
	row := make([]byte, 4<<10)
	const tokens = 4000 // 8 KiB each
	for i := range tokens {
		_, _ = rand.Read(row)
		mustAppend(t, l, "caches", fmt.Sprintf(`["f", [%q], %d]`, hex.EncodeToString(row), i))
		if i%100 == 99 { // the trimmer's pace, deterministically
			if err := l.ApplyRetention(); err != nil {
				t.Fatal(err)
			}
		}
	}
	names, err := fs.List("log")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, n := range names {
		if st, err := fs.Stat(fs.PathJoin("log", n)); err == nil {
			total += st.Size()
		}
	}
	// MaxBytes of sstables, plus memtables' WAL files and compaction lag.
	if total > 6*maxBytes {
		t.Fatalf("the log's files take %d bytes after a %d-byte flood with MaxBytes %d", total, tokens*8<<10, maxBytes)
	}
	if st, _ := l.Stats("caches"); st.CurrentToken != tokens || st.OldestToken < tokens/2 {
		t.Fatalf("caches: %+v; want the old tokens dropped", st)
	}
}
