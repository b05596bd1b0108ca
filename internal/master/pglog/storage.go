package pglog

// uncompressedRowsMigration stores token rows uncompressed. By default
// PostgreSQL compresses (pglz) every value that makes a row longer than
// about 2 kB, which a token of a few dozen rows does: the committer's
// backend then compresses every publish and every catch-up read
// decompresses it again, the largest share of the database's CPU per row
// in `tcprepl bench` (docs/benchmarks.md). Rows are JSON and short-lived,
// so disk is the cheaper resource: EXTERNAL keeps them uncompressed, and
// toast_tuple_target keeps a token of up to about 8 kB inline in its table
// row, so reading it needs no second (TOAST) lookup.
//
// It is one self-contained migration step (ALTER TABLE only changes how
// new values are stored; existing ones stay as they are and read the
// same), chained after the step before it in migrations.
const uncompressedRowsMigration = `
ALTER TABLE tcprepl_token ALTER COLUMN rows SET STORAGE EXTERNAL;
ALTER TABLE tcprepl_token SET (toast_tuple_target = 8160);
`
