// Package worker is tcprepl's reference worker: a reconnecting replication
// client that hands every batch of rows to a sink (stdout, a file, an HTTP
// endpoint) and keeps its per-stream positions durable, so that a restart
// resumes from the last token the sink accepted.
package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

const (
	stateFileName = "positions.json"
	lockFileName  = "lock"
	stateVersion  = 1
)

// ErrStateDirInUse means another worker holds the state dir's lock: two
// workers sharing positions would each skip the other's rows.
var ErrStateDirInUse = errors.New("state dir in use by another worker")

// ErrStateCorrupt means the positions file cannot be read back. The worker
// refuses to guess: resuming from a wrong token would skip or repeat rows.
var ErrStateCorrupt = errors.New("positions file is corrupt")

// stateFile is the positions file's JSON shape.
type stateFile struct {
	Version int              `json:"version"`
	Streams map[string]int64 `json:"streams"`
	// SinkOffset is the file sink's size when these positions were saved:
	// every batch past it is newer than the positions, and is read back
	// from the file on start. Absent for the other sinks.
	SinkOffset *int64 `json:"sinkOffset,omitempty"`
	// LogID is the identity of the master's log these positions belong
	// to (empty before the master first announced one). Tokens of another
	// log mean other rows.
	LogID string `json:"logId,omitempty"`
}

// State is the worker's durable record of the last token delivered per
// stream. It holds an exclusive lock on its directory while open. It is safe
// for concurrent use (Status reads it while the handler saves).
type State struct {
	dir  string
	lock *os.File

	mu         sync.Mutex
	positions  map[string]int64
	sinkOffset *int64
	logID      string
}

// OpenState locks dir (creating it if needed) and loads the saved positions.
func OpenState(dir string) (*State, error) {
	if dir == "" {
		return nil, errors.New("worker: no state dir given; pass --state-dir (a directory that survives restarts)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("worker: create state dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("worker: open state dir lock: %w", err)
	}
	// flock is released by the kernel when the process dies, even by
	// SIGKILL, so a crashed worker never leaves the dir locked.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("worker: %w: %s; give each worker its own --state-dir", ErrStateDirInUse, dir)
		}
		return nil, fmt.Errorf("worker: lock state dir %s: %w", dir, err)
	}
	s := &State{dir: dir, lock: lock, positions: map[string]int64{}}
	if err := s.load(); err != nil {
		_ = s.Close() // the load error is the one to report
		return nil, err
	}
	return s, nil
}

func (s *State) path() string { return filepath.Join(s.dir, stateFileName) }

func (s *State) load() error {
	data, err := os.ReadFile(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("worker: read positions: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("worker: %w: %s: %w; move it away to start over (from NOW or --from)", ErrStateCorrupt, s.path(), err)
	}
	if f.Version != stateVersion {
		return fmt.Errorf("worker: %w: %s has version %d, this worker reads version %d", ErrStateCorrupt, s.path(), f.Version, stateVersion)
	}
	for stream, tok := range f.Streams {
		if tok < 0 {
			return fmt.Errorf("worker: %w: %s: stream %s has negative token %d", ErrStateCorrupt, s.path(), stream, tok)
		}
		s.positions[stream] = tok
	}
	if f.SinkOffset != nil && *f.SinkOffset < 0 {
		return fmt.Errorf("worker: %w: %s: negative sink offset %d", ErrStateCorrupt, s.path(), *f.SinkOffset)
	}
	s.sinkOffset = f.SinkOffset
	s.logID = f.LogID
	return nil
}

// LogID returns the identity of the master's log the positions belong to
// ("" when none was recorded).
func (s *State) LogID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logID
}

// SetLogID records the identity of the master's log the positions belong
// to, durably.
func (s *State) SetLogID(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == s.logID {
		return nil
	}
	if err := s.write(s.positions, s.sinkOffset, id); err != nil {
		return err
	}
	s.logID = id
	return nil
}

// Reset forgets every position and the log id, for a resync from another
// log; sinkOffset (nil: none) marks what the file sink already holds, so it
// is not read back as positions.
func (s *State) Reset(sinkOffset *int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.write(map[string]int64{}, sinkOffset, ""); err != nil {
		return err
	}
	s.positions, s.sinkOffset, s.logID = map[string]int64{}, sinkOffset, ""
	return nil
}

// Positions returns a copy of the saved positions.
func (s *State) Positions() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.positions)
}

// Position returns the saved token of a stream.
func (s *State) Position(stream string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.positions[stream]
	return t, ok
}

// Save records stream at token durably: the new file is written beside the
// old one, synced, renamed over it, and the directory synced, so a crash at
// any point leaves either the old or the new positions, never a torn file.
// A token at or below the saved one is ignored: positions never go back.
func (s *State) Save(stream string, token int64) error {
	return s.Commit(map[string]int64{stream: token}, nil)
}

// SinkOffset returns the file sink offset saved with the positions.
func (s *State) SinkOffset() (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sinkOffset == nil {
		return 0, false
	}
	return *s.sinkOffset, true
}

// Commit saves several positions at once (each only if ahead of the saved
// one), with the file sink's offset they correspond to (nil: unchanged).
// Nothing is written when nothing changed.
func (s *State) Commit(positions map[string]int64, sinkOffset *int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(s.positions)
	changed := false
	for stream, token := range positions {
		if old, ok := next[stream]; !ok || token > old {
			next[stream] = token
			changed = true
		}
	}
	offset := s.sinkOffset
	if sinkOffset != nil && (offset == nil || *offset != *sinkOffset) {
		o := *sinkOffset
		offset = &o
		changed = true
	}
	if !changed {
		return nil
	}
	if err := s.write(next, offset, s.logID); err != nil {
		return err
	}
	s.positions, s.sinkOffset = next, offset
	return nil
}

func (s *State) write(positions map[string]int64, sinkOffset *int64, logID string) error {
	data, err := json.Marshal(stateFile{Version: stateVersion, Streams: positions, SinkOffset: sinkOffset, LogID: logID})
	if err != nil {
		return fmt.Errorf("worker: encode positions: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".positions-*.tmp")
	if err != nil {
		return fmt.Errorf("worker: save positions: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			_ = os.Remove(tmpName) // best effort: a stray temp file is harmless
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("worker: save positions: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("worker: save positions: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("worker: save positions: %w", err)
	}
	if err := os.Rename(tmpName, s.path()); err != nil {
		return fmt.Errorf("worker: save positions: %w", err)
	}
	ok = true
	return syncDir(s.dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("worker: sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("worker: sync dir %s: %w", dir, err)
	}
	return nil
}

// Close releases the state dir's lock.
func (s *State) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the descriptor releases the flock
	s.lock = nil
	return err
}
