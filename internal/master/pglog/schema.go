package pglog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SchemaVersion is the newest schema this version creates and reads.
const SchemaVersion = 3

// migrations[i] brings the schema from version i to i+1. Each runs in one
// transaction with the version bump, so a master that dies halfway leaves
// the previous version intact.
var migrations = []string{
	// 0 -> 1: the log's identity, the writer's fencing epoch, each stream's
	// retention state and the tokens themselves.
	`
CREATE TABLE tcprepl_log (
	singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	log_id      text NOT NULL,
	server_name text NOT NULL,
	epoch       bigint NOT NULL DEFAULT 0,
	created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tcprepl_stream (
	stream       text PRIMARY KEY,
	oldest       bigint NOT NULL DEFAULT 1,
	trimmed_cum  bigint NOT NULL DEFAULT 0,
	trimmed_time bigint NOT NULL DEFAULT 0,
	trimmed_bytes bigint NOT NULL DEFAULT 0
);
CREATE TABLE tcprepl_token (
	stream       text   NOT NULL,
	token        bigint NOT NULL,
	published_ns bigint NOT NULL,
	n_rows       int    NOT NULL,
	cum          bigint NOT NULL,
	-- row bytes of the stream before this token: retention by bytes
	bytes_before bigint NOT NULL,
	rows         bytea  NOT NULL,
	PRIMARY KEY (stream, token)
);
-- Every write transaction calls this first: it locks the log's row (so a
-- takeover, which bumps the epoch, waits for the transaction or makes it
-- fail) and aborts the transaction when the epoch moved on since this
-- writer took over.
CREATE FUNCTION tcprepl_check_epoch(want bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	have bigint;
BEGIN
	SELECT epoch INTO have FROM tcprepl_log FOR SHARE;
	IF have IS DISTINCT FROM want THEN
		RAISE EXCEPTION 'tcprepl writer fenced: this master took over at epoch %, the log is now at epoch %', want, have
			USING ERRCODE = 'TR001';
	END IF;
END $$;
`,
	// 1 -> 2: the writer's lease (lease.go). The active master renews it
	// every leaseRenewInterval; a standby takes the log over once it has
	// expired by the database's clock, even when the old writer's session
	// (and advisory lock) is still open, as it is for a frozen process.
	// The fencing check now also refuses a commit whose lease has expired
	// or moved to another epoch, so a writer that missed its renewals
	// cannot commit even before anyone took over.
	`
CREATE TABLE tcprepl_lease (
	server_name text PRIMARY KEY,
	holder      text NOT NULL,
	epoch       bigint NOT NULL,
	expires_at  timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION tcprepl_check_epoch(want bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	have bigint;
	expires timestamptz;
BEGIN
	SELECT epoch INTO have FROM tcprepl_log FOR SHARE;
	IF have IS DISTINCT FROM want THEN
		RAISE EXCEPTION 'tcprepl writer fenced: this master took over at epoch %, the log is now at epoch %', want, have
			USING ERRCODE = 'TR001';
	END IF;
	SELECT l.expires_at INTO expires FROM tcprepl_lease l JOIN tcprepl_log g USING (server_name) WHERE l.epoch = want;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'tcprepl writer fenced: no lease for epoch %', want
			USING ERRCODE = 'TR001';
	END IF;
	IF expires < clock_timestamp() THEN
		RAISE EXCEPTION 'tcprepl writer fenced: the lease of epoch % expired at % (database time %)', want, expires, clock_timestamp()
			USING ERRCODE = 'TR001';
	END IF;
END $$;
`,
	// 2 -> 3: token rows kept inline, lz4 where available (storage.go).
	inlineRowsMigration,
}

// fencedCode is the SQLSTATE tcprepl_check_epoch raises.
const fencedCode = "TR001"

// migrate creates or upgrades the schema to SchemaVersion. It serialises
// concurrent masters with a transaction-level advisory lock.
func migrate(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin schema migration: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tcprepl schema'))`); err != nil {
		return fmt.Errorf("lock schema for migration: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS tcprepl_schema_version (version int NOT NULL)`); err != nil {
		return schemaError("create table tcprepl_schema_version", err)
	}
	var version int
	err = tx.QueryRow(ctx, `SELECT version FROM tcprepl_schema_version`).Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO tcprepl_schema_version (version) VALUES (0)`); err != nil {
			return schemaError("record schema version 0", err)
		}
	case err != nil:
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > SchemaVersion {
		return fmt.Errorf("the database holds stream log schema version %d, this master knows only up to version %d: run a master of the version that wrote it (or newer), or point this one at another database", version, SchemaVersion)
	}
	for v := version; v < SchemaVersion; v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return schemaError(fmt.Sprintf("migrate schema from version %d to %d", v, v+1), err)
		}
	}
	if version < SchemaVersion {
		if _, err := tx.Exec(ctx, `UPDATE tcprepl_schema_version SET version = $1`, SchemaVersion); err != nil {
			return schemaError("record schema version", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit schema migration: %w", err)
	}
	return nil
}

// ErrPermission is wrapped when the role may not create or use the schema.
var ErrPermission = errors.New("the database role lacks a privilege the stream log needs")

// schemaError explains a failed schema statement, naming the grant that is
// missing when PostgreSQL refused it.
func schemaError(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
		return fmt.Errorf("%s: %w: %w (the master creates its tables itself: run `GRANT CREATE, USAGE ON SCHEMA public TO <role>` as the database owner, or make the role own the database)", what, ErrPermission, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
