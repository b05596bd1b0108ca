package streamlog

import (
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// readOnlyFS is a data directory on a read-only mount: reads work, every
// write fails with EROFS. (Permission bits would not do: tests may run as
// root, who writes through them.)
type readOnlyFS struct{ vfs.FS }

func erofs(op, name string) error { return &os.PathError{Op: op, Path: name, Err: syscall.EROFS} }

func (readOnlyFS) Create(name string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	return nil, erofs("create", name)
}
func (readOnlyFS) Link(_, newname string) error { return erofs("link", newname) }
func (readOnlyFS) OpenReadWrite(name string, _ vfs.DiskWriteCategory, _ ...vfs.OpenOption) (vfs.File, error) {
	return nil, erofs("open", name)
}
func (readOnlyFS) Remove(name string) error    { return erofs("remove", name) }
func (readOnlyFS) RemoveAll(name string) error { return erofs("remove", name) }
func (readOnlyFS) Rename(_, newname string) error {
	return erofs("rename", newname)
}
func (readOnlyFS) ReuseForWrite(_, newname string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	return nil, erofs("open", newname)
}
func (readOnlyFS) MkdirAll(dir string, _ os.FileMode) error { return erofs("mkdir", dir) }
func (readOnlyFS) Lock(name string) (io.Closer, error)      { return nil, erofs("open", name) }

// TestRecoveryErrorsStopOpen: a log that cannot be recovered stops Open
// with an error that says what failed and what to do, and leaves the data
// as it was: a read-only data directory, and a key in a stream's token
// range that is not a token key.
func TestRecoveryErrorsStopOpen(t *testing.T) {
	tests := map[string]struct {
		damage  func(t *testing.T, l *Log)
		fs      func(fs vfs.FS) vfs.FS
		wantErr []string
		wantIs  error
		// intact: the log opens normally afterwards with the rows written.
		intact bool
	}{
		"read-only data directory": {
			fs:      func(fs vfs.FS) vfs.FS { return readOnlyFS{fs} },
			wantErr: []string{`open stream log in "db"`, "read-only file system", "is writable"},
			wantIs:  syscall.EROFS,
			intact:  true,
		},
		"corrupt token key": {
			damage: func(t *testing.T, l *Log) {
				// Sorts after every token key of the stream, so recovery
				// reads it as the newest token.
				key := append(tokenKeyPrefix("events"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
				if err := l.db.Set(key, []byte("x"), nil); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{`recover stream "events"`, "malformed token key", "want 16 bytes, got 17", "restore it from a backup or start with an empty one"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			mem := vfs.NewMem()
			l := openTest(t, Options{FS: mem, Dir: "db"})
			mustAppend(t, l, "events", `[1]`, `[2]`)
			if tc.damage != nil {
				tc.damage(t, l)
			}
			closeTest(t, l)

			fs := vfs.FS(mem)
			if tc.fs != nil {
				fs = tc.fs(mem)
			}
			l2, err := Open(Options{FS: fs, Dir: "db", Streams: testStreams, TrimInterval: -1})
			if err == nil {
				closeTest(t, l2)
				t.Fatal("Open succeeded")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("Open: %v\nwant it to say %q", err, want)
				}
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("Open: %v, want it to wrap %v", err, tc.wantIs)
			}
			if !tc.intact {
				return
			}
			l3 := openTest(t, Options{FS: mem, Dir: "db"})
			defer closeTest(t, l3)
			if got := summary(mustRead(t, l3, "events", 0, 10, 10)); got != "1:[1]|[2]" {
				t.Fatalf("after the failed Open the log holds %s", got)
			}
		})
	}
}
