package kubelet

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// readVolume returns what a process sees in dir: every file reached
// through the user-visible names, by relative path.
func readVolume(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		root := filepath.Join(dir, e.Name())
		// Walk from the resolved link, as a process opening the path would.
		real, err := filepath.EvalSymlinks(root)
		if err != nil {
			t.Fatal(err)
		}
		err = filepath.Walk(real, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(real, p)
			name := e.Name()
			if rel != "." {
				name += "/" + filepath.ToSlash(rel)
			}
			b, err := os.ReadFile(p)
			out[name] = string(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestWriteAtomic(t *testing.T) {
	type step struct {
		files       map[string]string
		wantChanged bool
		want        map[string]string // nil: the same as files
	}
	tests := map[string]struct {
		steps []step
	}{
		"first write": {steps: []step{
			{files: map[string]string{"a": "1", "b.yaml": "x: 1\n"}, wantChanged: true},
		}},
		"the same content writes nothing": {steps: []step{
			{files: map[string]string{"a": "1"}, wantChanged: true},
			{files: map[string]string{"a": "1"}, wantChanged: false},
		}},
		"changed, added and removed keys": {steps: []step{
			{files: map[string]string{"a": "1", "b": "2"}, wantChanged: true},
			{files: map[string]string{"a": "one", "c": "3"}, wantChanged: true},
		}},
		"nested paths": {steps: []step{
			{files: map[string]string{"d/x": "1", "d/y": "2", "top": "t"}, wantChanged: true},
			{files: map[string]string{"d/x": "1"}, wantChanged: true},
			{files: map[string]string{"d/x": "1"}, wantChanged: false},
		}},
		"empty set": {steps: []step{
			{files: map[string]string{"a": "1"}, wantChanged: true},
			{files: map[string]string{}, wantChanged: true},
			{files: map[string]string{}, wantChanged: false},
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vol")
			for i, s := range tc.steps {
				files := map[string][]byte{}
				for k, v := range s.files {
					files[k] = []byte(v)
				}
				changed, err := writeAtomic(dir, files)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if changed != s.wantChanged {
					t.Errorf("step %d: changed = %v, want %v", i, changed, s.wantChanged)
				}
				want := s.want
				if want == nil {
					want = s.files
				}
				got := readVolume(t, dir)
				if len(got) != len(want) {
					t.Errorf("step %d: files %v, want %v", i, got, want)
				}
				for k, v := range want {
					if got[k] != v {
						t.Errorf("step %d: %s = %q, want %q (all: %v)", i, k, got[k], v, got)
					}
				}
				// One version dir, ..data, and a link per top-level name:
				// old versions and removed keys are gone.
				entries, err := os.ReadDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				var versions []string
				for _, e := range entries {
					if strings.HasPrefix(e.Name(), "..") && e.Name() != dataLink {
						versions = append(versions, e.Name())
					}
				}
				sort.Strings(versions)
				if len(versions) != 1 {
					t.Errorf("step %d: version dirs %v, want one", i, versions)
				}
			}
		})
	}
}

func TestWriteAtomicRefusesEscapingPaths(t *testing.T) {
	for _, name := range []string{"..", "..data", "..2026_x/f", ""} {
		dir := filepath.Join(t.TempDir(), "vol")
		_, err := writeAtomic(dir, map[string][]byte{name: []byte("x")})
		if !errors.Is(err, errConfig) {
			t.Errorf("writeAtomic(%q): err = %v, want errConfig", name, err)
		}
	}
}

// TestWriteAtomicPlainFilesReplaced: a volume written before this layout
// (plain files) is taken over, its stale files removed.
func TestWriteAtomicPlainFilesReplaced(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stale"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := writeAtomic(dir, map[string][]byte{"a": []byte("new")}); err != nil {
		t.Fatal(err)
	}
	got := readVolume(t, dir)
	if len(got) != 1 || got["a"] != "new" {
		t.Fatalf("files %v, want only a=new", got)
	}
}

// TestWriteAtomicReadersSeeWholeVersions reads a file and its sibling
// while versions are swapped under them: every read is one whole version,
// never a truncated or mixed file.
func TestWriteAtomicReadersSeeWholeVersions(t *testing.T) {
	dir := t.TempDir()
	versions := [][]byte{bytes.Repeat([]byte("a"), 1<<20), bytes.Repeat([]byte("b"), 1<<20+7)}
	if _, err := writeAtomic(dir, map[string][]byte{"f": versions[0]}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	var mu sync.Mutex
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(filepath.Join(dir, "f"))
				// A reader that resolved the old version just before it
				// was removed gets ENOENT, as with the kubelet, and reads
				// again; what it reads is never partial.
				if err != nil {
					if !errors.Is(err, os.ErrNotExist) {
						mu.Lock()
						bad = append(bad, err.Error())
						mu.Unlock()
					}
					continue
				}
				if !bytes.Equal(b, versions[0]) && !bytes.Equal(b, versions[1]) {
					mu.Lock()
					bad = append(bad, "a read of "+strconv.Itoa(len(b))+" bytes is neither version")
					mu.Unlock()
				}
			}
		}()
	}
	for i := range 200 {
		if _, err := writeAtomic(dir, map[string][]byte{"f": versions[(i+1)%2]}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d bad reads, first: %s", len(bad), bad[0])
	}
}
