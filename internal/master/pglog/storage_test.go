package pglog

import (
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// TestRowsAreStoredInline: a new database and one migrated from the
// schema version before inlineRowsMigration both keep token rows inline (storage MAIN, a page-sized
// toast_tuple_target) with lz4 compression when the server has it, and a
// log written before the migration reads the same after it.
func TestRowsAreStoredInline(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	// lz4 where this server has it, else the default (an empty setting).
	wantCompression := "l"
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE lz4_probe (b bytea COMPRESSION lz4)`); err != nil {
		wantCompression = ""
	}
	_ = conn.Close(ctx)
	l := mustOpen(t, dsn)
	if _, err := appendRow(l, "events", `["before"]`); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		var storage, compression string
		var opts []string
		query(t, dsn, `SELECT a.attstorage::text, a.attcompression::text, coalesce(c.reloptions, '{}') FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
			WHERE c.relname = 'tcprepl_token' AND a.attname = 'rows'`, &storage, &compression, &opts)
		if storage != "m" || len(opts) != 1 || opts[0] != "toast_tuple_target=8160" {
			t.Fatalf("%s: rows storage %q, table options %v; want MAIN (m) and toast_tuple_target=8160", when, storage, opts)
		}
		if compression != wantCompression {
			t.Fatalf("%s: rows compression %q, want %q", when, compression, wantCompression)
		}
	}
	check("new database")
	// Back to what the versions before it created.
	query(t, dsn, `ALTER TABLE tcprepl_token ALTER COLUMN rows SET STORAGE EXTENDED`)
	query(t, dsn, `ALTER TABLE tcprepl_token ALTER COLUMN rows SET COMPRESSION default`)
	query(t, dsn, `ALTER TABLE tcprepl_token RESET (toast_tuple_target)`)
	// The version this migration starts from: its place in the chain.
	from := slices.Index(migrations, inlineRowsMigration)
	if from < 0 {
		t.Fatal("inlineRowsMigration is not in the migrations")
	}
	query(t, dsn, fmt.Sprintf(`UPDATE tcprepl_schema_version SET version = %d`, from))
	l = mustOpen(t, dsn)
	check("migrated")
	var version int
	query(t, dsn, `SELECT version FROM tcprepl_schema_version`, &version)
	if version != SchemaVersion {
		t.Fatalf("schema version %d after opening, want %d", version, SchemaVersion)
	}
	u, err := l.ReadAfter(t.Context(), "events", 0, 1, 10)
	if err != nil || len(u) != 1 || string(u[0].Rows[0]) != `["before"]` {
		t.Fatalf("the row written before the migration: %+v, %v", u, err)
	}
}
