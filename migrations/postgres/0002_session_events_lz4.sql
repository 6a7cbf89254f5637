-- Packed event rows are a few KB of JSON each, over the TOAST threshold: compressing them with
-- the default pglz was most of PostgreSQL's CPU on the realtime path, in a burst at every
-- batch that held up the frames sharing the machine. lz4 does the same job several times faster.
-- A server built without lz4 (or older than PostgreSQL 14) keeps pglz: EXECUTE makes that a
-- caught error instead of a failed migration.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE session_events ALTER COLUMN payload SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'session_events.payload keeps the default compression: %', SQLERRM;
END
$$;
