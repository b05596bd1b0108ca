package kubelet

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Files from the API (ConfigMap, Secret, downward-API and projected
// volumes) are laid out as the kubelet's atomic writer lays them out, so
// that a running process can re-read them while they are updated:
//
//	<volume>/..2026_01_02_15_04_05.123456/<key>   the files, one dir per version
//	<volume>/..data -> ..2026_01_02_15_04_05.123456
//	<volume>/<key>  -> ..data/<key>                what the process opens
//
// A new version is written into a fresh directory and published by
// renaming a new symlink over ..data, which is atomic: a reader sees the old
// set of files or the new one, never a half-written file or a mix. The
// volume's directory itself is never replaced, so an image-mode bind mount
// of it keeps showing the current version.
const (
	dataLink    = "..data"
	dataLinkTmp = "..data_tmp"
)

// writeAtomic publishes files (relative paths, possibly nested) as the
// volume's content in dir. It reports whether anything changed: when the
// current version already holds exactly these files, it writes nothing.
func writeAtomic(dir string, files map[string][]byte) (bool, error) {
	clean := make(map[string][]byte, len(files))
	tops := map[string]bool{}
	for name, data := range files {
		rel := strings.TrimPrefix(path.Clean("/"+name), "/")
		if rel == "" || strings.HasPrefix(rel, "..") {
			return false, fmt.Errorf("%w: file path %q is empty or starts with \"..\"", errConfig, name)
		}
		clean[rel] = data
		tops[strings.SplitN(rel, "/", 2)[0]] = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create volume dir %s: %w", dir, err)
	}
	if current(dir, clean, tops) {
		return false, nil
	}
	version, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, fmt.Errorf("create a version dir in %s: %w", dir, err)
	}
	// MkdirTemp makes it 0700; the files are for the container's user.
	if err := os.Chmod(version, 0o755); err != nil {
		return false, fmt.Errorf("chmod %s: %w", version, err)
	}
	for rel, data := range clean {
		p := filepath.Join(version, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return false, fmt.Errorf("create dir for %s: %w", p, err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return false, fmt.Errorf("write %s: %w", p, err)
		}
	}
	tmp := filepath.Join(dir, dataLinkTmp)
	if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
		return false, fmt.Errorf("remove stale %s: %w", tmp, err)
	}
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		return false, fmt.Errorf("link the new version in %s: %w", dir, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return false, fmt.Errorf("publish the new version in %s: %w", dir, err)
	}
	for top := range tops {
		p, target := filepath.Join(dir, top), filepath.Join(dataLink, top)
		if got, err := os.Readlink(p); err == nil && got == target {
			continue
		}
		// A plain file or dir here is from before this layout (or the
		// user-visible name of a key whose kind changed): replace it.
		if err := os.RemoveAll(p); err != nil {
			return false, fmt.Errorf("replace %s: %w", p, err)
		}
		if err := os.Symlink(target, p); err != nil {
			return false, fmt.Errorf("link %s: %w", p, err)
		}
	}
	// Keys that are gone, and old versions: readers that resolved ..data
	// before the swap keep the files they already opened.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("read volume dir %s: %w", dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		if n == dataLink || n == filepath.Base(version) || tops[n] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return false, fmt.Errorf("remove %s from %s: %w", n, dir, err)
		}
	}
	return true, nil
}

// current says whether dir's published version holds exactly files, with
// a link for every top-level name.
func current(dir string, files map[string][]byte, tops map[string]bool) bool {
	version, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		return false
	}
	root := filepath.Join(dir, version)
	seen := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		want, ok := files[filepath.ToSlash(rel)]
		if !ok {
			return fs.ErrNotExist
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fs.ErrInvalid
		}
		seen++
		return nil
	})
	if err != nil || seen != len(files) {
		return false
	}
	for top := range tops {
		if got, err := os.Readlink(filepath.Join(dir, top)); err != nil || got != filepath.Join(dataLink, top) {
			return false
		}
	}
	return true
}
