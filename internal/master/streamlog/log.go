// Package streamlog is the master's durable, append-only stream log on
// Pebble. Each stream is a sequence of tokens starting at 1; each token holds
// the rows of one write (a batch) in order and the time it was accepted.
//
// Appends are group-committed: one committer goroutine gathers whatever
// appends are pending, assigns their tokens and applies them as one Pebble
// batch with Sync; a syncer goroutine waits for each batch's fsync in order
// and only then makes its tokens visible and acknowledges its appends. While
// one fsync runs the committer applies the next batches, and Pebble's WAL
// writer covers them all with its next fsync. A token is therefore never
// visible (CurrentToken, ReadAfter) or acknowledged before it is durable,
// and tokens become visible strictly in order; the syncer then hands each
// durable update to OnDurable (the protocol server's Publish), in that
// order.
//
// Log implements replication.Source.
package streamlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/internal/master/logmem"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// ErrClosed is returned by operations on a closed Log.
var ErrClosed = errors.New("stream log is closed")

// ErrRowTooLong is wrapped by Append for a row too long to send: it is
// replication.ErrRowTooLong, whose CheckRDATARow decides.
var ErrRowTooLong = replication.ErrRowTooLong

// ErrFailed is wrapped by every append after a commit to disk failed.
var ErrFailed = errors.New("stream log failed")

// Retention bounds what a stream keeps. Zero fields mean no bound.
type Retention struct {
	// MaxRows keeps at most about this many rows: whole tokens are dropped
	// oldest first until the rest fits. The newest token is always kept, so
	// a batch larger than MaxRows survives until the next append.
	MaxRows int64
	// MaxAge drops tokens published longer ago than this. It may empty a
	// quiet stream; its current token is still remembered.
	MaxAge time.Duration
	// MaxBytes keeps the stream's tokens within about this many bytes on
	// disk (compressed sstables, as Pebble estimates them), dropping whole
	// tokens oldest first; the newest token is always kept. Rows still in
	// the memtable are not counted until they are flushed, so the bound is
	// MaxBytes plus at most the memtables.
	MaxBytes int64
}

// Options configure Open.
type Options struct {
	// Dir is the Pebble directory. Ignored when Ephemeral or FS is set.
	Dir string
	// Ephemeral keeps the log in memory (vfs.NewMem): same code path,
	// nothing survives Close.
	Ephemeral bool
	// FS overrides the filesystem (tests use one vfs.NewMem across reopens).
	// Dir is then the path inside it.
	FS vfs.FS

	// Streams are the streams served, in the order Streams() reports them.
	// Names must be non-empty and free of NUL bytes; the rows catalogue
	// enforces the full naming rule.
	Streams []string

	// Retention per stream; streams not listed use DefaultRetention.
	Retention        map[string]Retention
	DefaultRetention Retention
	// TrimInterval is how often the background trimmer applies retention.
	// Zero means 10s; negative disables the trimmer (call ApplyRetention).
	TrimInterval time.Duration

	// Now is the clock for publish times and retention by age; nil means
	// time.Now. Tests inject their own.
	Now func() time.Time
	// Logger receives the log's and Pebble's messages; the zero value
	// discards them.
	Logger logr.Logger

	// MaxCommitBytes caps the row bytes gathered into one group commit, so
	// a burst cannot build an unbounded batch. Zero means 32 MiB. A single
	// append larger than this still commits, on its own.
	MaxCommitBytes int
	// MaxLineLength, when positive, refuses a row whose RDATA line
	// ("RDATA <stream> <token> <row>") could be longer than this many bytes
	// in wire form (replication.CheckRDATARow): the protocol server could
	// never send it, and every subscriber would stop at its token. Pass the
	// server's line limit.
	MaxLineLength int

	// OnDurable, when set, receives every update once it is durable and
	// visible; see Log.OnDurable.
	OnDurable func(replication.Update)

	// MemTableSize is Pebble's memtable size; zero means 16 MiB. Each
	// full memtable is flushed at once, and while a flush runs commits
	// wait longer: larger memtables raised the append p99 and its stalls
	// (figures in docs/benchmarks.md).
	MemTableSize uint64
	// TailCacheBytes is the memory for the most recent updates of all
	// streams, served to catching-up readers without Pebble and without
	// copying rows. Zero means 64 MiB; negative disables it.
	TailCacheBytes int64

	// CacheSize is Pebble's block cache; zero means 32 MiB. Workers that
	// catch up read recent blocks, which the cache keeps decompressed.
	CacheSize int64
}

// Log is the stream log. It is safe for concurrent use.
type Log struct {
	db      *pebble.DB
	log     logr.Logger
	now     func() time.Time
	streams map[string]*streamState
	order   []string

	maxCommitBytes int
	maxLineLength  int

	// onDurable is the hand-off of durable updates (OnDurable); nil until
	// one is set.
	onDurable atomic.Pointer[func(replication.Update)]

	cacheBudget int64        // TailCacheBytes; 0 when disabled
	cacheBytes  atomic.Int64 // bytes held by all streams' tail caches

	// apply and syncWait write one group commit: Pebble's ApplyNoSyncWait
	// with Sync, then the batch's SyncWait. Tests replace them to exercise
	// a failing disk.
	apply    func(b *pebble.Batch) error
	syncWait func(b *pebble.Batch) error
	// syncq carries applied rounds from the committer to the syncer, in
	// order. Its capacity bounds the rounds waiting for one fsync.
	syncq    chan *inflight
	roundSeq uint64 // committer-owned
	// keyBuf and valueBuf are the committer's buffers for one token's key
	// and value, reused across tokens and rounds: Batch.Set copies them.
	keyBuf, valueBuf []byte
	// rounds counts applied rounds (benchmarks report appends per round).
	rounds atomic.Uint64
	// failed holds the first commit error. After it the log refuses every
	// append: whether that batch reached the disk is unknown, and a retried
	// fsync can report success for data the kernel already dropped, so the
	// only safe recovery is a restart that re-reads what is really on disk.
	failed   atomic.Pointer[error]
	failedCh chan struct{} // closed with the first failure

	id string // the log's identity (identity.go)

	reqs chan *appendReq
	// closeMu orders Append's send on reqs against Close closing it.
	closeMu sync.RWMutex
	closed  bool

	pipelineDone chan struct{}

	trimMu      sync.Mutex // serialises trims (trimmer and Trim)
	trimStop    chan struct{}
	trimDone    chan struct{}
	trimEvery   time.Duration
	retention   map[string]Retention
	defaultKeep Retention
}

// streamState is the in-memory view of one stream. Fields read by any
// goroutine are atomics; the committer owns the rest.
type streamState struct {
	name   string
	prefix []byte // tokenKeyPrefix(name)

	current  atomic.Int64 // newest durable, visible token
	cum      atomic.Int64 // rows appended through current
	lastTime atomic.Int64 // publish time of current, unix ns
	// retained is the retention state, swapped whole so that readers see
	// oldest and trimmedCum from the same trim.
	retained atomic.Pointer[meta]

	// Committer-owned: where the stream stands with every applied round,
	// durable or not yet.
	assigned   int64
	pendingCum int64
	pendingT   int64
	roundSeq   uint64 // the last round that touched the stream

	rate logmem.Rate
	tail logmem.Tail
}

// Open opens (creating if needed) the log and recovers each stream's current
// token, retention state and row count from what is on disk.
func Open(opts Options) (*Log, error) {
	if len(opts.Streams) == 0 {
		return nil, errors.New("open stream log: no streams configured; pass at least one stream name")
	}
	fs := opts.FS
	dir := opts.Dir
	switch {
	case fs != nil:
	case opts.Ephemeral:
		fs = vfs.NewMem()
		if dir == "" {
			dir = "streamlog"
		}
	default:
		if dir == "" {
			return nil, errors.New("open stream log: no data directory; set a directory or use the ephemeral (in-memory) mode")
		}
		fs = vfs.Default
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	memTable := opts.MemTableSize
	if memTable == 0 {
		memTable = 16 << 20
	}
	l := &Log{
		log:            opts.Logger,
		now:            now,
		streams:        make(map[string]*streamState, len(opts.Streams)),
		maxCommitBytes: opts.MaxCommitBytes,
		maxLineLength:  opts.MaxLineLength,
		reqs:           make(chan *appendReq, 1024),
		pipelineDone:   make(chan struct{}),
		syncq:          make(chan *inflight, 16),
		trimStop:       make(chan struct{}),
		trimDone:       make(chan struct{}),
		failedCh:       make(chan struct{}),
		trimEvery:      opts.TrimInterval,
		retention:      opts.Retention,
		defaultKeep:    opts.DefaultRetention,
	}
	if l.maxCommitBytes <= 0 {
		l.maxCommitBytes = 32 << 20
	}
	if opts.OnDurable != nil {
		l.OnDurable(opts.OnDurable)
	}
	switch {
	case opts.TailCacheBytes == 0:
		l.cacheBudget = 64 << 20
	case opts.TailCacheBytes > 0:
		l.cacheBudget = opts.TailCacheBytes
	}
	if l.trimEvery == 0 {
		l.trimEvery = 10 * time.Second
	}
	for _, name := range opts.Streams {
		if name == "" || slices.Contains([]byte(name), 0) {
			return nil, fmt.Errorf("open stream log: invalid stream name %q; names must be non-empty and contain no NUL byte", name)
		}
		if _, dup := l.streams[name]; dup {
			return nil, fmt.Errorf("open stream log: stream %q configured twice; list each stream once", name)
		}
		l.streams[name] = &streamState{name: name, prefix: tokenKeyPrefix(name)}
		l.order = append(l.order, name)
	}

	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = 32 << 20
	}
	cache := pebble.NewCache(cacheSize)
	// Pebble takes its own reference; ours is only for the Open call.
	defer cache.Unref()
	popts := &pebble.Options{
		FS:                          fs,
		Cache:                       cache,
		Logger:                      pebbleLogger{l.log.WithName("pebble")},
		MemTableSize:                memTable,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		FormatMajorVersion:          formatVersion,
	}
	for i := range popts.Levels {
		popts.Levels[i].BlockSize = blockSize
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("open stream log in %q: %w (check the directory exists, is writable and is not used by another master)", dir, err)
	}
	l.db = db
	if err := checkFormat(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open stream log in %q: %w", dir, err)
	}
	if l.id, err = loadOrCreateLogID(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open stream log in %q: %w", dir, err)
	}
	l.apply = func(b *pebble.Batch) error { return db.ApplyNoSyncWait(b, pebble.Sync) }
	l.syncWait = func(b *pebble.Batch) error { return b.SyncWait() }
	for _, name := range l.order {
		if err := l.recover(l.streams[name]); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("open stream log: recover stream %q: %w (the data directory may be damaged; restore it from a backup or start with an empty one)", name, err)
		}
	}
	go l.commitLoop()
	go l.syncLoop()
	if l.trimEvery > 0 {
		go l.trimLoop()
	} else {
		close(l.trimDone)
	}
	return l, nil
}

// checkFormat makes sure the database holds this package's layout. A new
// (empty) database gets the format record, synced, before anything else is
// written; one without the record but with data was written by format 1 (one
// key per row), which this version cannot read.
func checkFormat(db *pebble.DB) error {
	const advice = "move the data directory aside (or delete it) and start the master again with an empty one; workers will resync from the new log"
	v, closer, err := db.Get(formatKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read format record: %w", err)
	default:
		version, err := decodeFormat(v)
		_ = closer.Close()
		if err != nil {
			return fmt.Errorf("%w; this version reads stream log format %d: %s", err, formatV2, advice)
		}
		if version != formatV2 {
			return fmt.Errorf("the data directory holds stream log format %d, this version reads only format %d (one key per token): %s", version, formatV2, advice)
		}
		return nil
	}
	it, err := db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("open iterator: %w", err)
	}
	found := it.First()
	var key []byte
	if found {
		key = slices.Clone(it.Key())
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("close iterator: %w", err)
	}
	if found {
		return fmt.Errorf("the data directory holds stream data (key %q) but no format record: it was written by an older version in stream log format 1 (one key per row), and this version reads only format %d (one key per token): %s", preview(key), formatV2, advice)
	}
	if err := db.Set(formatKey, encodeFormat(formatV2), pebble.Sync); err != nil {
		return fmt.Errorf("write format record: %w (check the directory is writable)", err)
	}
	return nil
}

// recover loads a stream's state: the retention record, then the newest
// token from the last key of the stream's range.
func (l *Log) recover(st *streamState) error {
	m := meta{oldest: 1}
	v, closer, err := l.db.Get(metaKey(st.name))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read retention record: %w", err)
	default:
		m, err = decodeMeta(v)
		_ = closer.Close()
		if err != nil {
			return err
		}
	}
	it, err := l.db.NewIter(&pebble.IterOptions{
		LowerBound: st.prefix,
		UpperBound: tokenKeysEnd(st.prefix),
	})
	if err != nil {
		return fmt.Errorf("open iterator: %w", err)
	}
	current, cum, last := m.oldest-1, m.trimmedCum, m.trimmedTime
	if it.Last() {
		token, err := decodeTokenKey(it.Key(), len(st.prefix))
		if err != nil {
			_ = it.Close()
			return err
		}
		h, err := l.getHeader(st, token)
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("token %d: %w", token, err)
		}
		if token < m.oldest {
			_ = it.Close()
			return fmt.Errorf("newest token %d is older than the oldest retained token %d", token, m.oldest)
		}
		current, cum, last = token, h.cum, h.time.UnixNano()
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("close iterator: %w", err)
	}
	st.current.Store(current)
	st.retained.Store(&m)
	st.cum.Store(cum)
	st.lastTime.Store(last)
	st.assigned, st.pendingCum, st.pendingT = current, cum, last
	return nil
}

// getHeader reads the header of a token: the fixed prefix of its value,
// without decoding its rows.
func (l *Log) getHeader(st *streamState, token int64) (header, error) {
	var kb [64]byte
	v, closer, err := l.db.Get(appendTokenKey(kb[:0], st.prefix, token))
	if err != nil {
		return header{}, fmt.Errorf("read header of token %d: %w", token, err)
	}
	defer closer.Close()
	return decodeHeader(v)
}

func (l *Log) stream(name string) (*streamState, error) {
	st, ok := l.streams[name]
	if !ok {
		return nil, fmt.Errorf("stream %q: %w", name, replication.ErrUnknownStream)
	}
	return st, nil
}

// appendReq is one Append waiting for the committer.
type appendReq struct {
	st    *streamState
	rows  []json.RawMessage // wire form
	bytes int
	done  chan struct{}
	// Set by the committer before done is signalled.
	token int64
	time  time.Time
	err   error
}

var reqPool = sync.Pool{New: func() any { return &appendReq{done: make(chan struct{}, 1)} }}

// Append stores rows as one new token of stream and returns that update once
// it is durable (fsynced) and visible to readers. Rows may be any JSON
// arrays; they are stored re-encoded in wire form (Python's json.dumps
// style), and the returned update's Rows are those bytes, ready for Publish.
// If any row is refused, nothing is stored. The returned rows are shared
// with the log's tail cache and readers: they must not be modified.
//
// ctx is honoured only until the append is queued: after that the write may
// already be in a commit, and returning early would let a caller retry a row
// that is in fact stored.
func (l *Log) Append(ctx context.Context, stream string, rows []json.RawMessage) (replication.Update, error) {
	st, err := l.stream(stream)
	if err != nil {
		return replication.Update{}, fmt.Errorf("append: %w", err)
	}
	if len(rows) == 0 {
		return replication.Update{}, fmt.Errorf("append to stream %q: no rows; send at least one row", stream)
	}
	size := 0
	for _, r := range rows {
		size += len(r)
	}
	// Re-encode in the appender's goroutine so that work runs in parallel;
	// the committer only copies bytes.
	buf := make([]byte, 0, size+size/8+len(rows))
	wire := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		start := len(buf)
		buf, err = appendWireForm(buf, r)
		if err != nil {
			return replication.Update{}, fmt.Errorf("append to stream %q: row %d: %w", stream, i, err)
		}
		wire[i] = buf[start:len(buf):len(buf)]
		if err := l.checkLine(stream, i, wire[i]); err != nil {
			return replication.Update{}, err
		}
	}
	return l.appendWire(ctx, st, wire, len(buf))
}

// AppendEncoded is Append for rows the caller has already re-encoded with
// replication.AppendPythonJSON (the master does so while splitting a
// publish request): they are stored as given, saving a second encoding
// pass. It still refuses rows that could break the protocol's framing:
// empty, not starting with '[', or containing a line break. The rows are
// copied (one buffer), so the caller may reuse its buffers afterwards.
func (l *Log) AppendEncoded(ctx context.Context, stream string, rows []json.RawMessage) (replication.Update, error) {
	st, err := l.stream(stream)
	if err != nil {
		return replication.Update{}, fmt.Errorf("append: %w", err)
	}
	if len(rows) == 0 {
		return replication.Update{}, fmt.Errorf("append to stream %q: no rows; send at least one row", stream)
	}
	size := 0
	for i, r := range rows {
		var oneLine bool
		if l.maxLineLength > 0 {
			// CheckRDATARow looks for line breaks too: one look at the
			// row decides both.
			err := l.checkLine(stream, i, r)
			if errors.Is(err, ErrRowTooLong) {
				return replication.Update{}, err
			}
			oneLine = err == nil
		} else {
			oneLine = bytes.IndexByte(r, '\n') < 0 && bytes.IndexByte(r, '\r') < 0
		}
		if !oneLine || len(r) == 0 || r[0] != '[' {
			return replication.Update{}, fmt.Errorf("append to stream %q: row %d: not in wire form (one line, a JSON array as replication.AppendPythonJSON writes it), got %s; use Append to have it encoded", stream, i, preview(r))
		}
		size += len(r)
	}
	buf := make([]byte, 0, size)
	own := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		start := len(buf)
		buf = append(buf, r...)
		own[i] = buf[start:len(buf):len(buf)]
	}
	return l.appendWire(ctx, st, own, size)
}

// checkLine refuses a row whose RDATA line could exceed the line limit.
func (l *Log) checkLine(stream string, i int, row []byte) error {
	if l.maxLineLength <= 0 {
		return nil
	}
	if err := replication.CheckRDATARow(stream, row, l.maxLineLength); err != nil {
		return fmt.Errorf("append to stream %q: row %d: %w", stream, i, err)
	}
	return nil
}

// OnDurable makes the log hand every durable update to h: from its sync
// loop, once the update's token is durable and visible to readers, before
// its appender is acknowledged; in token order within a stream, and across
// streams in the order their tokens became visible. This is the log's
// promise of durable order, which the protocol server relies on to send
// each stream's updates in order: concurrent appends to one stream are
// committed together and their Append calls return in any order, so only
// the log knows the order. h runs on the path of every append and must not
// block (the server only queues). Set it before the first append; setting
// it again replaces it, and nil stops the hand-off.
func (l *Log) OnDurable(h func(replication.Update)) {
	if h == nil {
		l.onDurable.Store(nil)
		return
	}
	l.onDurable.Store(&h)
}

// appendWire hands rows in wire form to the committer and waits until they
// are durable.
func (l *Log) appendWire(ctx context.Context, st *streamState, wire []json.RawMessage, size int) (replication.Update, error) {
	stream := st.name
	if err := ctx.Err(); err != nil {
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", stream, err)
	}
	if failed := l.failed.Load(); failed != nil {
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", stream, *failed)
	}
	req := reqPool.Get().(*appendReq)
	req.st, req.rows, req.bytes = st, wire, size
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		reqPool.Put(req)
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", stream, ErrClosed)
	}
	select {
	case l.reqs <- req:
	case <-ctx.Done():
		l.closeMu.RUnlock()
		reqPool.Put(req)
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", stream, ctx.Err())
	}
	l.closeMu.RUnlock()
	<-req.done
	u := replication.Update{Stream: stream, Token: req.token, Rows: wire, Time: req.time}
	err := req.err
	*req = appendReq{done: req.done}
	reqPool.Put(req)
	if err != nil {
		return replication.Update{}, fmt.Errorf("append to stream %q: %w", stream, err)
	}
	return u, nil
}

// commitLoop is the committer: it takes one pending append (blocking), then
// every other one already waiting, assigns their tokens and applies them as
// one batch with Sync, without waiting for the fsync: the round goes to
// syncLoop, which waits for it. While a sync is in flight the committer
// applies the next rounds, and Pebble's WAL writer covers all of them with
// its next fsync, so the sync rate stays bounded while rows per sync grow
// with load, and a slow wake-up of some appenders never costs a sync of its
// own.
func (l *Log) commitLoop() {
	defer close(l.syncq)
	var round []*appendReq
	for {
		req, ok := <-l.reqs
		if !ok {
			return
		}
		round = append(round[:0], req)
		bytes := req.bytes
	gather:
		for bytes < l.maxCommitBytes {
			select {
			case req, ok := <-l.reqs:
				if !ok {
					break gather
				}
				round = append(round, req)
				bytes += req.bytes
			default:
				break gather
			}
		}
		l.syncq <- l.applyRound(round)
		round = nil // the inflight round owns the slice now
	}
}

// inflight is a round applied to Pebble and waiting for its WAL sync.
type inflight struct {
	b     *pebble.Batch // nil if the round was never applied
	round []*appendReq
	marks []streamMark
	now   time.Time
	err   error // why the round was not applied
}

// streamMark is where a stream stands once its round is durable.
type streamMark struct {
	st              *streamState
	token, cum, pub int64
}

// applyRound assigns tokens to a round and applies it (visible to Pebble
// iterators, not yet to readers of the Log: ReadAfter never reads past the
// current token, which only moves once the round is durable).
func (l *Log) applyRound(round []*appendReq) *inflight {
	l.roundSeq++
	l.rounds.Add(1)
	in := &inflight{round: round, now: l.now()}
	if failed := l.failed.Load(); failed != nil {
		in.err = *failed
		return in
	}
	b := l.db.NewBatch()
	kb, vb := l.keyBuf, l.valueBuf
	var touched []*streamState
	for _, req := range round {
		st := req.st
		if st.roundSeq != l.roundSeq {
			st.roundSeq = l.roundSeq
			touched = append(touched, st)
		}
		// Publish times never go backwards within a stream, so retention by
		// age can binary-search them even if the wall clock steps back.
		t := max(in.now.UnixNano(), st.pendingT)
		st.pendingT = t
		st.assigned++
		st.pendingCum += int64(len(req.rows))
		req.token = st.assigned
		req.time = time.Unix(0, t)
		kb = appendTokenKey(kb[:0], st.prefix, req.token)
		vb = slices.Grow(vb[:0], tokenValueLen(req.rows, req.bytes))
		vb = appendTokenValue(vb, header{time: req.time, rows: len(req.rows), cum: st.pendingCum}, req.rows)
		_ = b.Set(kb, vb, nil) // Batch.Set only fails on a committed batch
	}
	// Keep the buffers for the next round, unless one huge append grew the
	// value buffer past what a typical round needs.
	l.keyBuf = kb
	if cap(vb) <= maxKeptValueBuf {
		l.valueBuf = vb
	} else {
		l.valueBuf = nil
	}
	for _, st := range touched {
		in.marks = append(in.marks, streamMark{st: st, token: st.assigned, cum: st.pendingCum, pub: st.pendingT})
	}
	if err := l.apply(b); err != nil {
		_ = b.Close()
		in.err = l.fail(err)
		return in
	}
	in.b = b
	return in
}

// maxKeptValueBuf bounds the value buffer the committer keeps between
// rounds.
const maxKeptValueBuf = 1 << 20

// cache adds a durable update to its stream's tail cache and keeps all
// caches within the budget by evicting that stream's oldest updates.
func (l *Log) cache(st *streamState, u replication.Update) {
	if l.cacheBudget <= 0 {
		return
	}
	l.cacheBytes.Add(st.tail.Add(u))
	for l.cacheBytes.Load() > l.cacheBudget {
		freed := st.tail.EvictOldest()
		if freed == 0 {
			return
		}
		l.cacheBytes.Add(-freed)
	}
}

// fail records the first disk failure and returns the error to report.
func (l *Log) fail(cause error) error {
	err := fmt.Errorf("%w: commit to disk: %w (the data volume may be full or failing; restart the master once it is fixed)", ErrFailed, cause)
	if l.failed.CompareAndSwap(nil, &err) {
		close(l.failedCh)
		l.log.Error(err, "group commit failed; refusing further appends")
		return err
	}
	return *l.failed.Load()
}

// syncLoop waits for each applied round's fsync, in order, then makes its
// tokens visible, hands its updates to OnDurable and wakes its appenders. A
// round fails if it or any round before it failed: its tokens would follow a
// gap otherwise.
func (l *Log) syncLoop() {
	defer close(l.pipelineDone)
	var failed error
	for in := range l.syncq {
		err := in.err
		if in.b != nil {
			if serr := l.syncWait(in.b); serr != nil && err == nil {
				err = l.fail(serr)
			}
			_ = in.b.Close()
		}
		if err == nil {
			err = failed
		}
		if err != nil {
			failed = err
		} else {
			// Cache first, then move current: a reader who sees the new
			// token finds it cached (or, if evicted, in Pebble).
			for _, req := range in.round {
				l.cache(req.st, replication.Update{Stream: req.st.name, Token: req.token, Rows: req.rows, Time: req.time})
			}
			for _, m := range in.marks {
				m.st.cum.Store(m.cum)
				m.st.lastTime.Store(m.pub)
				m.st.current.Store(m.token)
			}
			if h := l.onDurable.Load(); h != nil {
				for _, req := range in.round {
					(*h)(replication.Update{Stream: req.st.name, Token: req.token, Rows: req.rows, Time: req.time})
				}
			}
			for _, req := range in.round {
				req.st.rate.Add(in.now, len(req.rows))
			}
		}
		for _, req := range in.round {
			req.err = err
			req.done <- struct{}{}
		}
	}
}

// Streams lists the configured streams in their configured order.
func (l *Log) Streams() []string { return slices.Clone(l.order) }

// CurrentToken returns the newest durable token of the stream (0 before the
// first append).
func (l *Log) CurrentToken(stream string) (int64, error) {
	st, err := l.stream(stream)
	if err != nil {
		return 0, err
	}
	return st.current.Load(), nil
}

// acquire guards a read against Close closing Pebble underneath it: Close
// takes closeMu exclusively, so it waits for reads in flight, and reads that
// start later see closed. Pair with l.closeMu.RUnlock().
func (l *Log) acquire() error {
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Close stops the trimmer, commits every append already queued, flushes the
// memtable (so the next Open replays no WAL; skipped once a commit failed)
// and closes Pebble. Appends after
// Close fail with ErrClosed.
func (l *Log) Close() error {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return ErrClosed
	}
	l.closed = true
	close(l.reqs)
	l.closeMu.Unlock()
	close(l.trimStop)
	<-l.trimDone
	<-l.pipelineDone
	// Wait for a Trim in flight; later ones see closed and stop.
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	var errs []error
	if l.Err() == nil {
		// A flush after a failed commit made Pebble rotate its WAL and
		// panic (Close after a failed write exited 2); a failed log may not
		// be written anyway. What is durable is on disk already and the
		// next Open replays the WAL.
		if err := l.db.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("flush stream log: %w", err))
		}
	}
	if err := l.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close stream log: %w", err))
	}
	return errors.Join(errs...)
}

// pebbleLogger routes Pebble's messages to logr.
type pebbleLogger struct{ log logr.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.log.V(1).Info(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.log.Error(fmt.Errorf(format, args...), "pebble error")
}

// Fatalf must not return (Pebble's contract); keep its default behaviour,
// after logging through logr so the reason reaches the structured log.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.log.Error(fmt.Errorf(format, args...), "pebble fatal error")
	pebble.DefaultLogger.Fatalf(format, args...)
}

var _ replication.Source = (*Log)(nil)

// formatVersion is the Pebble format new logs are created with: the newest,
// whose columnar blocks Pebble is optimising for. Measured against row
// blocks (FormatFlushableIngestExcises), CPU per row was the same within
// noise for appends and catch-up reads (docs/benchmarks.md).
const formatVersion = pebble.FormatNewest

// blockSize is the sstable block size. Catch-up reads scan long key ranges,
// so larger blocks than Pebble's 4 KiB default mean fewer block loads and
// index steps per row: less CPU per row read, appends unchanged
// (docs/benchmarks.md) (with format 1's key per row; a key per token only makes the
// values longer). Point reads (headers for retention, TokenTime) are rare.
const blockSize = 32 << 10
