package worker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Positions()) != 0 {
		t.Fatalf("fresh state has positions %v", s.Positions())
	}
	for _, p := range []Position{{"events", 5}, {"caches", 2}, {"events", 9}, {"events", 7}} {
		if err := s.Save(p.Stream, p.Token); err != nil {
			t.Fatal(err)
		}
	}
	if tok, _ := s.Position("events"); tok != 9 {
		t.Fatalf("events = %d, want 9 (positions never go back)", tok)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeT(t, s2)
	got := s2.Positions()
	if len(got) != 2 || got["events"] != 9 || got["caches"] != 2 {
		t.Fatalf("reloaded positions = %v", got)
	}
	// No temp files are left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Fatalf("temp file left: %s", e.Name())
		}
	}
}

func TestStateLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenState(dir)
	if !errors.Is(err, ErrStateDirInUse) {
		t.Fatalf("second open: err = %v, want ErrStateDirInUse", err)
	}
	closeT(t, s)
	s3, err := OpenState(dir)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	closeT(t, s3)
}

func TestStateCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":       "{",
		"wrong version":  `{"version": 7, "streams": {}}`,
		"negative token": `{"version": 1, "streams": {"events": -3}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := OpenState(dir)
			if !errors.Is(err, ErrStateCorrupt) {
				t.Fatalf("err = %v, want ErrStateCorrupt", err)
			}
			// The lock is released on failure.
			s, err := OpenState(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			closeT(t, s)
		})
	}
}

func TestStateErrors(t *testing.T) {
	if _, err := OpenState(""); err == nil || !strings.Contains(err.Error(), "--state-dir") {
		t.Fatalf("empty dir: err = %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenState(filepath.Join(file, "sub")); err == nil {
		t.Fatal("state dir under a file: no error")
	}
	// A save into a dir that became unwritable fails and keeps the old
	// position in memory.
	if os.Geteuid() == 0 {
		dir := t.TempDir()
		s, err := OpenState(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer closeT(t, s)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := s.Save("events", 3); err == nil {
			t.Fatal("save into a removed dir: no error")
		}
		if _, ok := s.Position("events"); ok {
			t.Fatal("failed save changed the in-memory position")
		}
	}
}

func TestStateCommitWithSinkOffset(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.SinkOffset(); ok {
		t.Fatal("fresh state has a sink offset")
	}
	off := int64(120)
	if err := s.Commit(map[string]int64{"events": 4, "typing": 2}, &off); err != nil {
		t.Fatal(err)
	}
	// Behind positions are ignored, the offset still moves.
	off2 := int64(150)
	if err := s.Commit(map[string]int64{"events": 3}, &off2); err != nil {
		t.Fatal(err)
	}
	closeT(t, s)
	s, err = OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeT(t, s)
	if o, ok := s.SinkOffset(); !ok || o != 150 {
		t.Fatalf("sink offset = %d, %v; want 150", o, ok)
	}
	if p := s.Positions(); p["events"] != 4 || p["typing"] != 2 {
		t.Fatalf("positions = %v", p)
	}
	// Nothing new: nothing is written. With the dir gone a write would
	// fail, so a nil error proves it; a real change then fails.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(map[string]int64{"events": 4}, &off2); err != nil {
		t.Fatalf("unchanged commit wrote: %v", err)
	}
	if err := s.Commit(map[string]int64{"events": 5}, &off2); err == nil {
		t.Fatal("a changed commit into a removed dir did not fail")
	}
}

func TestStateNegativeSinkOffsetIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"version": 1, "streams": {}, "sinkOffset": -1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenState(dir); !errors.Is(err, ErrStateCorrupt) {
		t.Fatalf("err = %v, want ErrStateCorrupt", err)
	}
}
