package pglog

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// Commits in flight. One committer gathers what is pending into a round and
// sends it as one transaction; with Options.CommitConnections above one, up
// to that many rounds are in flight at once, each on its own connection
// (the write session and others opened from its configuration: the same
// application_name, so whatever ends the writer's sessions ends them all),
// so that the committer need not sit idle while a commit crosses a network.
// Tokens are assigned in round order before a round is sent, and rounds
// are acknowledged strictly in that order: a round becomes visible, goes to
// OnDurable and is acknowledged only after it and every earlier round
// committed. When a round fails the log fails, and later rounds are not
// acknowledged even if they committed.
//
// Such later rounds may have left rows after a gap: round k failed (its
// tokens are missing) while round k+1 committed. Those rows were never
// acknowledged, and the tokens must stay gap-free, so the next takeover
// deletes every row after a stream's first gap (Log.dropAfterGap). A gap can
// only lie among the tokens of the last MaxCommitConnections rounds, which
// maxRoundAppends bounds, so the takeover looks only at that many of the
// newest tokens.
const (
	// DefaultCommitConnections is Options.CommitConnections' default:
	// one commit at a time. With the database on the same machine (2
	// cores, loopback) one connection stored 1.02M rows/s where four
	// stored 0.81-0.85M, the database spending half the CPU per row
	// (docs/benchmarks.md): a single committer gathers everything that
	// arrives during a commit into the next, larger round. Overlapping is
	// for a database across a network, where one connection waits out a
	// round trip per commit; that was not measured.
	DefaultCommitConnections = 1
	// MaxCommitConnections bounds Options.CommitConnections: the window
	// a takeover searches for gaps (gapWindow) is sized for it.
	MaxCommitConnections = 8
	// maxRoundAppends caps the appends of one round, so that the tokens in
	// flight, and the window dropAfterGap searches, stay bounded.
	maxRoundAppends = 4096
	// gapWindow is how many of a stream's newest tokens can follow a gap:
	// every token of MaxCommitConnections rounds. A later version that raises
	// either must keep reading at least as many as this one could leave.
	gapWindow = MaxCommitConnections * maxRoundAppends
	// minOverlapBytes is the least a round holds to be sent while another
	// commit is in flight (commitLoop).
	minOverlapBytes = 256 << 10
)

// openCommitConns opens the connections commits overlap on, besides the
// write session, from the write session's own configuration (a copy of
// it: the same settings, keep-alives and application_name).
func (l *Log) openCommitConns(ctx context.Context) error {
	cfg := l.write.Config()
	n := l.opts.CommitConnections
	if n <= 0 {
		n = DefaultCommitConnections
	}
	n = min(n, MaxCommitConnections)
	for range n - 1 {
		c, err := pgx.ConnectConfig(ctx, cfg.Copy())
		if err != nil {
			l.closeCommitConns(ctx)
			return fmt.Errorf("open a commit connection to PostgreSQL at %s:%d: %w", cfg.Host, cfg.Port, err)
		}
		l.commitConns = append(l.commitConns, c)
	}
	return nil
}

func (l *Log) closeCommitConns(ctx context.Context) {
	for _, c := range l.commitConns {
		_ = c.Close(ctx)
	}
	l.commitConns = nil
}

// round is one group commit.
type round struct {
	reqs  []*appendReq
	marks []mark
	now   time.Time
	rows  commitRows
	// err is set before done is closed: the commit's own failure.
	err  error
	done chan struct{}
}

// mark is a stream's position after a round.
type mark struct {
	st              *streamState
	token, cum, pub int64
}

// commitRows are the columns of one round's INSERT.
type commitRows struct {
	streams                         []string
	tokens, published, cums, before []int64
	nRows                           []int32
	values                          [][]byte
}

// commitLoop is the committer: it takes one pending append (blocking) and
// every other one already waiting, assigns their tokens and sends them as
// one transaction on a free connection; the acker acknowledges rounds in
// order as they commit. A round starts beside one in flight only once it
// holds minOverlapBytes: under a light load commits go one at a time, as
// large as the load makes them, and overlap only when appends arrive
// faster than one connection commits them.
func (l *Log) commitLoop() {
	defer close(l.done)
	defer l.closeWrite()
	// The further connections are the committer's own: opened here, closed
	// on the way out. Failing to open them only loses the overlap.
	octx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	if err := l.openCommitConns(octx); err != nil {
		l.log.Error(err, "committing on the write session alone")
	}
	cancel()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.closeCommitConns(ctx)
	}()
	depth := 1 + len(l.commitConns)
	free := make(chan *pgx.Conn, depth)
	free <- l.write
	for _, c := range l.commitConns {
		free <- c
	}
	inflight := make(chan *round, depth)
	acked := make(chan struct{})
	go l.ackLoop(inflight, acked)
	for open := true; open; {
		req, ok := <-l.reqs
		if !ok {
			break
		}
		reqs := []*appendReq{req}
		size := len(req.value)
		var conn *pgx.Conn
	gather:
		for {
			// Take whatever else is waiting.
		drain:
			for size < l.maxCommitBytes && len(reqs) < maxRoundAppends {
				select {
				case req, ok := <-l.reqs:
					if !ok {
						open = false
						break drain
					}
					reqs = append(reqs, req)
					size += len(req.value)
				default:
					break drain
				}
			}
			// Go at once when nothing is in flight, or (with several
			// connections) when the round is worth a transaction of its
			// own beside those in flight; otherwise keep gathering until
			// a commit finishes: a small round costs the database about
			// as much as a large one.
			if !open || len(free) == depth || (depth > 1 && size >= minOverlapBytes) || size >= l.maxCommitBytes || len(reqs) >= maxRoundAppends {
				conn = <-free
				break gather
			}
			select {
			case req, ok := <-l.reqs:
				if !ok {
					open = false
					continue
				}
				reqs = append(reqs, req)
				size += len(req.value)
			case conn = <-free:
				break gather
			}
		}
		r := l.prepareRound(reqs)
		inflight <- r
		go func() {
			if r.err == nil {
				r.err = l.commit(conn, r.rows.streams, r.rows.tokens, r.rows.published, r.rows.nRows, r.rows.cums, r.rows.before, r.rows.values)
			}
			free <- conn
			close(r.done)
		}()
	}
	close(inflight)
	<-acked
	for range depth {
		<-free
	}
}

// prepareRound assigns a round's tokens, publish times and byte offsets.
// Once the log failed it assigns nothing: the round fails with it.
func (l *Log) prepareRound(reqs []*appendReq) *round {
	r := &round{reqs: reqs, now: l.now(), done: make(chan struct{})}
	if r.err = l.Err(); r.err != nil {
		return r
	}
	n := len(reqs)
	r.rows = commitRows{
		streams: make([]string, n), tokens: make([]int64, n), published: make([]int64, n),
		nRows: make([]int32, n), cums: make([]int64, n), before: make([]int64, n), values: make([][]byte, n),
	}
	seen := map[*streamState]int{}
	for i, req := range reqs {
		st := req.st
		t := max(r.now.UnixNano(), st.pendingT)
		st.pendingT = t
		st.assigned++
		st.pendingCum += int64(len(req.rows))
		req.token, req.time = st.assigned, time.Unix(0, t)
		r.rows.before[i] = st.pendingBytes
		st.pendingBytes += int64(len(req.value))
		r.rows.streams[i], r.rows.tokens[i], r.rows.published[i], r.rows.nRows[i], r.rows.cums[i], r.rows.values[i] = st.name, req.token, t, int32(len(req.rows)), st.pendingCum, req.value
		m := mark{st: st, token: st.assigned, cum: st.pendingCum, pub: t}
		if j, ok := seen[st]; ok {
			r.marks[j] = m
		} else {
			seen[st] = len(r.marks)
			r.marks = append(r.marks, m)
		}
	}
	return r
}

// ackLoop finishes rounds in the order they were sent.
func (l *Log) ackLoop(inflight <-chan *round, acked chan<- struct{}) {
	defer close(acked)
	for r := range inflight {
		<-r.done
		l.finishRound(r)
	}
}

// finishRound makes a committed round visible, hands it to OnDurable and
// acknowledges it, unless it or an earlier round failed. A failed round
// fails the log: whether PostgreSQL committed it is unknown (the COMMIT may
// have been applied and its answer lost), so neither its tokens nor any
// later ones may be assigned again until a restart re-reads them.
func (l *Log) finishRound(r *round) {
	if r.err != nil {
		r.err = l.fail(r.err)
	}
	err := l.Err()
	if err == nil {
		for _, req := range r.reqs {
			l.cache(req.st, replication.Update{Stream: req.st.name, Token: req.token, Rows: req.rows, Time: req.time})
		}
		for _, m := range r.marks {
			m.st.cum.Store(m.cum)
			m.st.lastTime.Store(m.pub)
			m.st.current.Store(m.token)
		}
		if h := l.onDurable.Load(); h != nil {
			for _, req := range r.reqs {
				(*h)(replication.Update{Stream: req.st.name, Token: req.token, Rows: req.rows, Time: req.time})
			}
		}
		for _, req := range r.reqs {
			req.st.rate.Add(r.now, len(req.rows))
		}
	}
	for _, req := range r.reqs {
		req.err = err
		close(req.done)
	}
}

// dropAfterGap deletes a stream's rows after its first missing token: rows
// of rounds that committed after an earlier round failed, never
// acknowledged (see the top of this file). It runs in the takeover
// transaction, after the epoch moved on, so no writer of the old epoch can
// add a row meanwhile.
func (l *Log) dropAfterGap(ctx context.Context, tx pgx.Tx, stream string) error {
	rows, err := tx.Query(ctx, `SELECT token FROM (SELECT token FROM tcprepl_token WHERE stream = $1 ORDER BY token DESC LIMIT $2) t ORDER BY token`, stream, gapWindow+1)
	if err != nil {
		return fmt.Errorf("read the newest tokens: %w", err)
	}
	var prev, token int64
	gap := int64(-1)
	_, err = pgx.ForEachRow(rows, []any{&token}, func() error {
		if prev != 0 && token != prev+1 && gap < 0 {
			gap = prev
		}
		prev = token
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the newest tokens: %w", err)
	}
	if gap < 0 {
		return nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM tcprepl_token WHERE stream = $1 AND token > $2`, stream, gap)
	if err != nil {
		return schemaError(fmt.Sprintf("drop the unacknowledged tokens after token %d", gap), err)
	}
	l.log.Info("dropped tokens after a gap: they committed after an earlier commit failed and were never acknowledged",
		"stream", stream, "after", gap, "dropped", tag.RowsAffected())
	return nil
}

// insertTokensSQL inserts one round. The rows of all its tokens travel as
// one bytea, cut apart by offset and length in the database: pgx encodes
// a bytea[] parameter into a buffer it grows from a few hundred bytes for
// every query, which cost the master more CPU than the rest of the commit.
const insertTokensSQL = `INSERT INTO tcprepl_token (stream, token, published_ns, n_rows, cum, bytes_before, rows)
	SELECT s, t, p, n, c, b, substring($7::bytea FROM o FOR l)
	FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::bigint[], $6::bigint[], $8::int[], $9::int[]) AS u(s, t, p, n, c, b, o, l)`

// concatValues joins a round's stored values into one buffer and says
// where each starts (1-based, as substring counts) and how long it is.
func concatValues(values [][]byte) (all []byte, offsets, lengths []int32) {
	n := 0
	for _, v := range values {
		n += len(v)
	}
	all = make([]byte, 0, n)
	offsets = make([]int32, len(values))
	lengths = make([]int32, len(values))
	for i, v := range values {
		offsets[i] = int32(len(all)) + 1
		lengths[i] = int32(len(v))
		all = append(all, v...)
	}
	return all, offsets, lengths
}
