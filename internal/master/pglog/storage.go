package pglog

// inlineRowsMigration keeps token rows inline in their table row. By
// default PostgreSQL moves a value out of line into the TOAST table, cut
// into chunks of about 2 kB each with its own index entry, as soon as the
// row is longer than about 2 kB, which a token of a few dozen rows is:
// every publish then writes several heap tuples and index entries, and
// every catch-up read fetches and reassembles them. Storage MAIN with a
// toast_tuple_target of a whole page keeps a token of up to about 8 kB
// inline and uncompressed, compresses a larger one so that it fits
// inline if it can, and moves only what still does not fit. Compression
// is lz4 where the server has it (PostgreSQL 14 and later, built with
// lz4, as Debian's and CloudNativePG's are): several times cheaper than the
// default pglz both ways; elsewhere pglz stays.
//
// It is one self-contained migration step: ALTER TABLE only changes how
// values are stored from now on, existing ones read as before.
const inlineRowsMigration = `
ALTER TABLE tcprepl_token ALTER COLUMN rows SET STORAGE MAIN;
ALTER TABLE tcprepl_token SET (toast_tuple_target = 8160);
DO $$
BEGIN
	-- Dynamic, so that a server without lz4 (or before 14, without the
	-- syntax) raises here, where it is caught, and keeps pglz.
	EXECUTE 'ALTER TABLE tcprepl_token ALTER COLUMN rows SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
	RAISE NOTICE 'tcprepl: lz4 compression not available (%), keeping the default', SQLERRM;
END $$;
`
