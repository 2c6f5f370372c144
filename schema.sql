-- harvester's state database: every table, index and view lives here.
-- Applied on every open; each statement is idempotent.

-- One row per Flickr photo ever seen by the harvest.
CREATE TABLE IF NOT EXISTS photos (
    photo_id     TEXT PRIMARY KEY,
    class        TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'found'
                 CHECK (state IN ('found', 'downloaded', 'resized', 'assigned',
                                  'failed', 'rejected')),
    split        TEXT CHECK (split IN ('train', 'test')),
    found_order  INTEGER NOT NULL,      -- position in search order; decides who is in the dataset
    search_tags  TEXT NOT NULL,         -- the query that found it
    url          TEXT,                  -- the rendition to download (NULL: no usable size)
    url_width    INTEGER,
    url_height   INTEGER,
    source_path  TEXT,                  -- downloaded bytes, relative to the output folder
    source_bytes INTEGER,
    sha256       TEXT,                  -- of the downloaded bytes
    path         TEXT,                  -- dataset image, relative to the output folder
    width        INTEGER,
    height       INTEGER,
    owner        TEXT,
    owner_name   TEXT,
    license      TEXT,
    title        TEXT,
    tags         TEXT,
    date_upload  INTEGER,               -- unix time
    reason       TEXT,                  -- why it failed or was rejected
    attempts     INTEGER NOT NULL DEFAULT 0,
    found_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- The stages' work queues: "the next photos of this class in this state, in search order".
CREATE INDEX IF NOT EXISTS photos_class_state_order ON photos (class, state, found_order);
CREATE INDEX IF NOT EXISTS photos_class_order ON photos (class, found_order);

-- Where search stands for each class and query, so it resumes mid-class.
CREATE TABLE IF NOT EXISTS search_cursors (
    class       TEXT NOT NULL,
    tags        TEXT NOT NULL,          -- the query's tags parameter
    next_page   INTEGER NOT NULL DEFAULT 1,
    pages       INTEGER,                -- as Flickr last reported
    total       INTEGER,                -- as Flickr last reported
    exhausted   INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (class, tags)
);

-- One row per `harvester run`/`resume`: the config it ran with (never secrets) and how it ended.
CREATE TABLE IF NOT EXISTS runs (
    run_id      INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,
    config      TEXT NOT NULL,          -- JSON snapshot of the harvest-defining config
    started_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at TEXT,
    outcome     TEXT                    -- complete, shortfall, stopped, interrupted
);

-- Every Flickr API call, by run and method: what the quota is spent on.
CREATE TABLE IF NOT EXISTS api_calls (
    run_id  INTEGER NOT NULL REFERENCES runs (run_id),
    method  TEXT NOT NULL,
    calls   INTEGER NOT NULL DEFAULT 0,
    errors  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, method)
);

CREATE VIEW IF NOT EXISTS progress AS
    SELECT class, state, count(*) AS photos
    FROM photos
    GROUP BY class, state
    ORDER BY class, state;
