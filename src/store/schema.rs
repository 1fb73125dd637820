//! Versioned migrations, applied in order; `PRAGMA user_version` records the
//! last one applied. Never edit a released migration: add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE referrals (
        id               TEXT PRIMARY KEY,
        etag             TEXT,
        status           TEXT NOT NULL,
        substatus        TEXT NOT NULL,
        stage            TEXT,
        direction        TEXT,
        referral_type    TEXT,
        name             TEXT,
        created_at       TEXT,
        updated_at       TEXT,
        deadline         TEXT,
        projection_hash  TEXT,
        raw_json         TEXT NOT NULL,
        favorite         INTEGER NOT NULL DEFAULT 0,
        locally_expired  INTEGER NOT NULL DEFAULT 0,
        first_seen       TEXT NOT NULL,
        last_seen        TEXT NOT NULL
    ) STRICT;
    CREATE INDEX referrals_stage ON referrals(stage);
    CREATE INDEX referrals_deadline ON referrals(deadline) WHERE deadline IS NOT NULL;

    CREATE TABLE links (
        crm          TEXT NOT NULL,
        crm_id       TEXT NOT NULL,
        referral_id  TEXT,
        crm_hash     TEXT,
        crm_version  TEXT,
        pc_hash      TEXT,
        pc_version   TEXT,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (crm, crm_id),
        UNIQUE (crm, referral_id)
    ) STRICT;

    CREATE TABLE cursors (
        source      TEXT PRIMARY KEY,
        position    TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    ) STRICT;

    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        target           TEXT NOT NULL,
        operation        TEXT NOT NULL,
        record_key       TEXT NOT NULL,
        payload          TEXT NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TEXT NOT NULL,
        last_error       TEXT,
        created_at       TEXT NOT NULL
    ) STRICT;
    CREATE INDEX outbox_due ON outbox(next_attempt_at);
    CREATE INDEX outbox_record ON outbox(target, record_key);

    CREATE TABLE failures (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        record      TEXT NOT NULL,
        side        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        message     TEXT NOT NULL,
        hint        TEXT NOT NULL,
        raw         TEXT,
        attempts    INTEGER NOT NULL DEFAULT 1,
        first_seen  TEXT NOT NULL,
        last_seen   TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'open',
        UNIQUE (record, side)
    ) STRICT;

    CREATE TABLE runs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        outcome      TEXT,
        summary      TEXT
    ) STRICT;

    CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        referral_id  TEXT NOT NULL,
        at           TEXT NOT NULL,
        side         TEXT NOT NULL,
        kind         TEXT NOT NULL,
        message      TEXT NOT NULL,
        detail       TEXT
    ) STRICT;
    CREATE INDEX events_referral ON events(referral_id, id);

    CREATE TABLE kv (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    ) STRICT;
    "#,
    // 2: the CRM fields last seen or written per link (the base of minimal
    // CRM updates), and when an outbound deal asked Microsoft for help.
    r#"
    ALTER TABLE links ADD COLUMN crm_fields TEXT;
    ALTER TABLE links ADD COLUMN help_requested_at TEXT;
    "#,
    // 3: due effects of one target in order without scanning the others
    // (a backfill queues one effect per referral per CRM).
    r#"
    CREATE INDEX outbox_target_id ON outbox(target, id);
    "#,
    // 4: the checks every cycle makes (unanswered referrals past their
    // deadline, lapsed help requests) read only the rows that can match,
    // not every tracked referral or link; creates know whether they were sent.
    r#"
    CREATE INDEX referrals_open_deadline ON referrals(deadline)
        WHERE stage = 'received' AND locally_expired = 0 AND deadline IS NOT NULL;
    CREATE INDEX links_help_requested ON links(help_requested_at)
        WHERE help_requested_at IS NOT NULL AND referral_id IS NOT NULL;
    -- A Partner Center create marked sent before it goes out: only a create
    -- that may have been made already is looked up before it is sent again.
    ALTER TABLE outbox ADD COLUMN sent_at TEXT;
    "#,
    // 5: CRM records read changed and not yet matched by a complete Partner
    // Center listing (conflicts), kept across a crash and out of memory.
    r#"
    CREATE TABLE pending_crm_changes (
        crm          TEXT NOT NULL,
        referral_id  TEXT NOT NULL,
        modified_at  TEXT,
        noted_at     TEXT NOT NULL,
        PRIMARY KEY (crm, referral_id)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 6: the edit a CRM record held while its deal was on hold (not taken
    // as seen), so a later Partner Center change of the field is a conflict.
    r#"
    ALTER TABLE links ADD COLUMN held_edit TEXT;
    "#,
    // 7: a referral's events are found by the referral's sequence number,
    // given in the order referrals are first stored, not by its id: Partner
    // Center's ids are random GUIDs, and an index on them puts every event
    // of a backfill on a leaf page of its own. `seq` is an INTEGER PRIMARY
    // KEY so that VACUUM keeps it. Events written before their referral was
    // stored keep a NULL `referral_seq` and are found by id.
    r#"
    CREATE TABLE referrals_v7 (
        seq              INTEGER PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        etag             TEXT,
        status           TEXT NOT NULL,
        substatus        TEXT NOT NULL,
        stage            TEXT,
        direction        TEXT,
        referral_type    TEXT,
        name             TEXT,
        created_at       TEXT,
        updated_at       TEXT,
        deadline         TEXT,
        projection_hash  TEXT,
        raw_json         TEXT NOT NULL,
        favorite         INTEGER NOT NULL DEFAULT 0,
        locally_expired  INTEGER NOT NULL DEFAULT 0,
        first_seen       TEXT NOT NULL,
        last_seen        TEXT NOT NULL
    ) STRICT;
    INSERT INTO referrals_v7 (seq, id, etag, status, substatus, stage, direction, referral_type,
        name, created_at, updated_at, deadline, projection_hash, raw_json, favorite,
        locally_expired, first_seen, last_seen)
    SELECT rowid, id, etag, status, substatus, stage, direction, referral_type,
        name, created_at, updated_at, deadline, projection_hash, raw_json, favorite,
        locally_expired, first_seen, last_seen
    FROM referrals ORDER BY rowid;
    DROP TABLE referrals;
    ALTER TABLE referrals_v7 RENAME TO referrals;
    CREATE INDEX referrals_stage ON referrals(stage);
    CREATE INDEX referrals_deadline ON referrals(deadline) WHERE deadline IS NOT NULL;
    CREATE INDEX referrals_open_deadline ON referrals(deadline)
        WHERE stage = 'received' AND locally_expired = 0 AND deadline IS NOT NULL;

    ALTER TABLE events ADD COLUMN referral_seq INTEGER;
    UPDATE events SET referral_seq = (SELECT seq FROM referrals WHERE referrals.id = events.referral_id);
    DROP INDEX events_referral;
    CREATE INDEX events_by_referral_seq ON events(referral_seq, id) WHERE referral_seq IS NOT NULL;
    CREATE INDEX events_of_unstored_referrals ON events(referral_id, id) WHERE referral_seq IS NULL;
    "#,
    // 8: a link finds its referral by the referral's sequence number, not
    // by its GUID: the index on `(crm, referral_id)` took every new link's
    // insert on a random leaf page. Links of a referral not stored yet keep
    // a NULL `referral_seq` and are found by id through a partial index of
    // those only; storing the referral gives them its sequence.
    // Both partial indexes are unique, so a referral still has at most one
    // link per CRM.
    r#"
    CREATE TABLE links_v8 (
        crm                TEXT NOT NULL,
        crm_id             TEXT NOT NULL,
        referral_id        TEXT,
        crm_hash           TEXT,
        crm_version        TEXT,
        pc_hash            TEXT,
        pc_version         TEXT,
        created_at         TEXT NOT NULL,
        updated_at         TEXT NOT NULL,
        crm_fields         TEXT,
        help_requested_at  TEXT,
        held_edit          TEXT,
        referral_seq       INTEGER,
        PRIMARY KEY (crm, crm_id)
    ) STRICT;
    INSERT INTO links_v8 (rowid, crm, crm_id, referral_id, crm_hash, crm_version, pc_hash,
        pc_version, created_at, updated_at, crm_fields, help_requested_at, held_edit, referral_seq)
    SELECT l.rowid, l.crm, l.crm_id, l.referral_id, l.crm_hash, l.crm_version, l.pc_hash,
        l.pc_version, l.created_at, l.updated_at, l.crm_fields, l.help_requested_at, l.held_edit,
        (SELECT seq FROM referrals r WHERE r.id = l.referral_id)
    FROM links l ORDER BY l.rowid;
    DROP TABLE links;
    ALTER TABLE links_v8 RENAME TO links;
    CREATE UNIQUE INDEX links_by_referral_seq ON links(referral_seq, crm)
        WHERE referral_seq IS NOT NULL;
    CREATE UNIQUE INDEX links_of_unstored_referrals ON links(referral_id, crm)
        WHERE referral_seq IS NULL AND referral_id IS NOT NULL;
    CREATE INDEX links_help_requested ON links(help_requested_at)
        WHERE help_requested_at IS NOT NULL AND referral_id IS NOT NULL;
    CREATE TRIGGER links_lose_a_deleted_referral AFTER DELETE ON referrals BEGIN
        UPDATE links SET referral_seq = NULL WHERE referral_seq = OLD.seq;
    END;
    "#,
    // 9: a referral's JSON and a link's CRM fields packed (store/packed.rs).
    // Rows written before keep their text until they are next written; a
    // packed row's text column is empty (raw_json) or NULL (crm_fields).
    r#"
    ALTER TABLE referrals ADD COLUMN raw_packed BLOB;
    ALTER TABLE links ADD COLUMN crm_fields_packed BLOB;
    "#,
];
