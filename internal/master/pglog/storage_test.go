package pglog

import (
	"testing"

	"github.com/tcprepl/tcprepl/internal/pgtest"
)

// TestRowsAreStoredUncompressed: a new database and one migrated from
// schema version 1 both store token rows uncompressed, and a log written
// before the migration reads the same after it.
func TestRowsAreStoredUncompressed(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	l := mustOpen(t, dsn)
	if _, err := appendRow(l, "events", `["before"]`); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		var storage string
		var opts []string
		query(t, dsn, `SELECT a.attstorage::text, coalesce(c.reloptions, '{}') FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
			WHERE c.relname = 'tcprepl_token' AND a.attname = 'rows'`, &storage, &opts)
		if storage != "e" || len(opts) != 1 || opts[0] != "toast_tuple_target=8160" {
			t.Fatalf("%s: rows storage %q, table options %v; want EXTERNAL (e) and toast_tuple_target=8160", when, storage, opts)
		}
	}
	check("new database")
	// Back to what schema version 1 created.
	query(t, dsn, `ALTER TABLE tcprepl_token ALTER COLUMN rows SET STORAGE EXTENDED`)
	query(t, dsn, `ALTER TABLE tcprepl_token RESET (toast_tuple_target)`)
	query(t, dsn, `UPDATE tcprepl_schema_version SET version = 1`)
	l = mustOpen(t, dsn)
	check("migrated from version 1")
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
