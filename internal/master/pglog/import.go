package pglog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// ImportSource is the log being moved into PostgreSQL: the Pebble log
// (streamlog.Log) serves it.
type ImportSource interface {
	LogID() string
	Stats(stream string) (StreamStats, error)
	ReadAfter(ctx context.Context, stream string, after, upTo int64, limit int) ([]replication.Update, error)
}

// ImportOptions configure Import.
type ImportOptions struct {
	DSN string
	// ServerName is the master's server name, recorded with the log as Open
	// records it.
	ServerName string
	// Streams are the streams copied.
	Streams []string
	// PageRows is how many rows are read and copied at a time; zero means
	// 10,000.
	PageRows int
	Logger   logr.Logger
}

// ImportedStream says what Import copied of one stream.
type ImportedStream struct {
	Stream string
	// Oldest and Current are the first and last token copied; Current <
	// Oldest when the stream held none.
	Oldest, Current int64
	Rows            int64
}

// ErrNotEmpty is wrapped by Import when the database already holds a log.
var ErrNotEmpty = errors.New("the database already holds a stream log")

// Import copies a stream log into an empty PostgreSQL database: every
// stream's retained tokens with their rows and publish times, its oldest
// retained token, and the log's identity. The copy is the same log, not a
// new one: workers compare the log id the master announces with the one
// they saved, so keeping it lets them resume from their saved tokens, and
// the tokens mean the same rows as before.
//
// Everything is written in one transaction: an import that fails leaves
// the database as it was, and it refuses a database that already holds a
// log (a master opened it, or an import ran). It holds the log table
// locked meanwhile, so a master started against the database during the
// import waits and then finds the imported log. The source must not change
// while it is read: stop the master that writes it first.
func Import(ctx context.Context, src ImportSource, opts ImportOptions) ([]ImportedStream, error) {
	if opts.ServerName == "" {
		return nil, errors.New("import stream log: no server name; the log records the server it belongs to")
	}
	if len(opts.Streams) == 0 {
		return nil, errors.New("import stream log: no streams to copy")
	}
	id := src.LogID()
	if id == "" {
		return nil, errors.New("import stream log: the source log has no identity")
	}
	page := opts.PageRows
	if page <= 0 {
		page = 10_000
	}
	cfg, err := pgx.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("import stream log: parse the PostgreSQL DSN: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("import stream log: connect to PostgreSQL at %s:%d: %w (check the server is up and the DSN is right)", cfg.Host, cfg.Port, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if err := migrate(ctx, conn); err != nil {
		return nil, fmt.Errorf("import stream log: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("import stream log: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	// A master's takeover updates this table: locked, a master started
	// now waits for the import, then takes the imported log over.
	if _, err := tx.Exec(ctx, `LOCK TABLE tcprepl_log IN EXCLUSIVE MODE`); err != nil {
		return nil, schemaError("import stream log: lock the log table", err)
	}
	var logs, tokens int64
	if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM tcprepl_log), (SELECT count(*) FROM (SELECT 1 FROM tcprepl_token LIMIT 1) t)`).Scan(&logs, &tokens); err != nil {
		return nil, fmt.Errorf("import stream log: check the database is empty: %w", err)
	}
	if logs > 0 || tokens > 0 {
		return nil, fmt.Errorf("import stream log: %w: a master already opened it or an import already ran; import into a new, empty database (or drop the tcprepl_* tables of this one if its log is not needed)", ErrNotEmpty)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tcprepl_log (log_id, server_name, epoch) VALUES ($1, $2, 0)`, id, opts.ServerName); err != nil {
		return nil, schemaError("import stream log: record the log's identity", err)
	}
	var out []ImportedStream
	for _, name := range opts.Streams {
		is, err := importStream(ctx, tx, src, name, page)
		if err != nil {
			return nil, fmt.Errorf("import stream log: stream %q: %w", name, err)
		}
		opts.Logger.Info("copied stream", "stream", name, "oldest", is.Oldest, "current", is.Current, "rows", is.Rows)
		out = append(out, is)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("import stream log: commit: %w (nothing was imported)", err)
	}
	return out, nil
}

// importStream copies one stream's retained tokens. Cumulative rows and
// bytes count from the oldest retained token (the Pebble log does not say
// how many it trimmed): only differences of them are ever read.
func importStream(ctx context.Context, tx pgx.Tx, src ImportSource, name string, page int) (ImportedStream, error) {
	stats, err := src.Stats(name)
	if err != nil {
		return ImportedStream{}, fmt.Errorf("read its position: %w", err)
	}
	is := ImportedStream{Stream: name, Oldest: stats.OldestToken, Current: stats.CurrentToken}
	var trimmedTime int64
	if !stats.LastAppend.IsZero() {
		trimmedTime = stats.LastAppend.UnixNano()
	}
	var cum, bytesBefore int64
	for after := stats.OldestToken - 1; after < stats.CurrentToken; {
		updates, err := src.ReadAfter(ctx, name, after, stats.CurrentToken, page)
		if err != nil {
			return is, fmt.Errorf("read after token %d: %w", after, err)
		}
		if len(updates) == 0 {
			return is, fmt.Errorf("read after token %d: nothing, though the stream's current token is %d (did a master write it meanwhile?)", after, stats.CurrentToken)
		}
		if after == stats.OldestToken-1 {
			// The token before the oldest is gone; a stream trimmed
			// through it reports this time for its last append.
			trimmedTime = updates[0].Time.UnixNano()
		}
		rows := make([][]any, 0, len(updates))
		for _, u := range updates {
			if u.Token != after+1 {
				return is, fmt.Errorf("token %d follows token %d: the source log has a gap", u.Token, after)
			}
			value := joinRows(u.Rows)
			cum += int64(len(u.Rows))
			rows = append(rows, []any{name, u.Token, u.Time.UnixNano(), int32(len(u.Rows)), cum, bytesBefore, value})
			bytesBefore += int64(len(value))
			after = u.Token
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"tcprepl_token"},
			[]string{"stream", "token", "published_ns", "n_rows", "cum", "bytes_before", "rows"}, pgx.CopyFromRows(rows)); err != nil {
			return is, schemaError(fmt.Sprintf("copy tokens %d-%d", updates[0].Token, after), err)
		}
	}
	is.Rows = cum
	if _, err := tx.Exec(ctx, `INSERT INTO tcprepl_stream (stream, oldest, trimmed_cum, trimmed_time, trimmed_bytes) VALUES ($1, $2, 0, $3, 0)`,
		name, stats.OldestToken, trimmedTime); err != nil {
		return is, schemaError("record the stream", err)
	}
	return is, nil
}

// joinRows is the stored form of a token's rows: joined by '\n', as
// AppendEncoded stores them.
func joinRows(rows []json.RawMessage) []byte {
	n := len(rows)
	for _, r := range rows {
		n += len(r)
	}
	buf := make([]byte, 0, n)
	for i, r := range rows {
		if i > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, r...)
	}
	return buf
}
