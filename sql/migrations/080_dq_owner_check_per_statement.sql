-- 080: data_quality_checks checks compressor ownership once per statement, as the hourly
-- aggregates do since migration 060, instead of by a foreign key.
--
-- Every hourly run records four checks per compressor (~18,000 rows for 4,500 units, one
-- statement per organization). The composite foreign key (org_id, compressor_id) ->
-- compressors looked up and locked (FOR KEY SHARE) the compressor row for each of them:
-- measured as the tenant on this machine, the four statements took 0.48-0.56 s with the key,
-- 0.29-0.44 s with the statement-level check below and 0.31 s with no check at all. They run
-- beside the aggregates' COPY, on the same two cores.
--
-- The guarantee is the same, for every writer: after each INSERT or UPDATE statement one
-- query checks the distinct (org_id, compressor_id) pairs it wrote against compressors and
-- fails the statement with the foreign-key error code (23503), naming the pair; a compressor
-- that still has quality checks cannot be deleted or re-keyed (23503 too).

ALTER TABLE data_quality_checks
    DROP CONSTRAINT data_quality_checks_org_id_compressor_id_fkey;

-- the same check as the aggregates' (migration 060), with a hint that names the table
CREATE OR REPLACE FUNCTION agg_rows_owned() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT w.org_id, w.compressor_id INTO bad
    FROM (SELECT DISTINCT org_id, compressor_id FROM written) w
    WHERE NOT EXISTS (SELECT 1 FROM compressors c
                      WHERE c.org_id = w.org_id AND c.compressor_id = w.compressor_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%s: compressor %L is not a compressor of organization %L',
                             TG_TABLE_NAME, bad.compressor_id, bad.org_id),
            HINT = format('rows of %s must belong to a compressor the organization owns',
                          TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER dq_owned_insert AFTER INSERT ON data_quality_checks
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION agg_rows_owned();
CREATE TRIGGER dq_owned_update AFTER UPDATE ON data_quality_checks
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION agg_rows_owned();

CREATE FUNCTION compressor_keeps_quality_checks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.org_id, NEW.compressor_id) = (OLD.org_id, OLD.compressor_id)
    THEN
        RETURN NULL;
    END IF;
    -- data_quality_checks_latest_idx leads with (org_id, compressor_id)
    IF EXISTS (SELECT 1 FROM data_quality_checks
               WHERE org_id = OLD.org_id AND compressor_id = OLD.compressor_id) THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('compressor %L of organization %L still has data-quality checks',
                             OLD.compressor_id, OLD.org_id),
            HINT = 'delete its rows of data_quality_checks first';
    END IF;
    RETURN NULL;
END $$;

-- AFTER, as the foreign key's own check was: row-level security judges the new row first
CREATE TRIGGER compressor_keeps_quality_checks AFTER DELETE OR UPDATE OF org_id, compressor_id
    ON compressors FOR EACH ROW EXECUTE FUNCTION compressor_keeps_quality_checks();
