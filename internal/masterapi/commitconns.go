package masterapi

// MaxCommitConnections bounds log.commitConnections. The PostgreSQL log's
// takeover searches a window of tokens sized for this many commits in
// flight (internal/master/pglog.MaxCommitConnections, which a test keeps
// equal to this).
const MaxCommitConnections = 8

// CommitConnectionsOrDefault is log.commitConnections with its default:
// one commit at a time, which stored the most rows per second with the
// database on the same machine (docs/benchmarks.md). More overlap pays
// when each commit waits out a network round trip to the database.
func (l LogConfig) CommitConnectionsOrDefault() int {
	if l.CommitConnections == 0 {
		return 1
	}
	return l.CommitConnections
}

// validateCommitConnections checks log.commitConnections: PostgreSQL only,
// within 1..MaxCommitConnections.
func (c Config) validateCommitConnections(bad func(string, ...any)) {
	n := c.Log.CommitConnections
	switch {
	case n == 0:
	case c.Log.Backend != LogPostgres:
		bad("log.commitConnections is for log.backend %q (the Pebble log commits in one batch at a time): remove it, or set the backend", LogPostgres)
	case n < 1 || n > MaxCommitConnections:
		bad("log.commitConnections %d is out of range: use 1 to %d (unset means 1)", n, MaxCommitConnections)
	}
}
