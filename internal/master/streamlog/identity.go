package streamlog

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// A log's identity is a random id written once, when the log is created (or
// first opened by a version that has identities), and kept across restarts.
// A log that is wiped and created again gets a new one, and its tokens
// start again from 1: a worker that saved token 5 of the old log must not
// resume from token 5 of the new one, which holds different rows. Workers
// save the id with their positions and refuse to resume across two ids.

// logIDKey is the key of the identity record: 'i', then the id as text.
var logIDKey = []byte{'i'}

// logIDLen is the id's length in random bytes (hex doubles it).
const logIDLen = 16

// loadOrCreateLogID reads the log's id, creating and syncing one when the
// log has none.
func loadOrCreateLogID(db *pebble.DB) (string, error) {
	v, closer, err := db.Get(logIDKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return "", fmt.Errorf("read log id: %w", err)
	default:
		id := string(v)
		_ = closer.Close()
		if !validLogID(id) {
			return "", fmt.Errorf("malformed log id record %q: want %d hex digits", preview(v), 2*logIDLen)
		}
		return id, nil
	}
	var b [logIDLen]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	id := hex.EncodeToString(b[:])
	if err := db.Set(logIDKey, []byte(id), pebble.Sync); err != nil {
		return "", fmt.Errorf("write log id: %w (check the directory is writable)", err)
	}
	return id, nil
}

func validLogID(id string) bool {
	if len(id) != 2*logIDLen {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// LogID is the log's identity: random, made with the log, the same after a
// restart, different for a log created anew (for example an ephemeral log
// after a restart, or a wiped data directory).
func (l *Log) LogID() string { return l.id }

// Err returns the disk failure that stopped the log, nil while it is
// healthy. Once set it stays: see Failed.
func (l *Log) Err() error {
	if failed := l.failed.Load(); failed != nil {
		return *failed
	}
	return nil
}

// Failed is closed when a commit to disk fails. After that the log refuses
// every append until the process restarts and re-reads what is really on
// disk, so its owner should report itself unhealthy and exit.
func (l *Log) Failed() <-chan struct{} { return l.failedCh }
