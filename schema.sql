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
    file_sha256  TEXT,                  -- of the dataset image file, as written
    file_bytes   INTEGER,
    pixels_sha256 TEXT,                 -- of the dataset image's decoded pixels
    phash        TEXT,                  -- its 64-bit perceptual hash, 16 hex digits
    duplicate_of TEXT,                  -- the photo it (nearly) duplicates, when rejected so
    owner        TEXT,
    owner_name   TEXT,
    license      TEXT,
    title        TEXT,
    page_url     TEXT,                  -- the photo's Flickr page, for attribution
    tags         TEXT,                  -- space-separated, as Flickr normalises them
    date_upload  INTEGER,               -- unix time
    reason       TEXT,                  -- why it failed or was rejected
    attempts     INTEGER NOT NULL DEFAULT 0,
    found_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- The stages' work queues: "the next photos of this class in this state, in search order".
CREATE INDEX IF NOT EXISTS photos_class_state_order ON photos (class, state, found_order);
CREATE INDEX IF NOT EXISTS photos_class_order ON photos (class, found_order);

-- Where search stands. Each class has one query; Flickr serves at most 4,000 results of a
-- query, so a query holding more is walked in upload-date windows that each hold fewer.
-- The first window is the whole range; when it holds too many it is `split`, and windows
-- are cut off it one after the other, each sized from the last one's count. A resumed
-- search continues in the window and at the page it stopped at.
CREATE TABLE IF NOT EXISTS search_windows (
    window_id      INTEGER PRIMARY KEY,
    class          TEXT NOT NULL,
    uploaded_from  INTEGER NOT NULL,    -- min_upload_date, unix time, inclusive
    uploaded_to    INTEGER NOT NULL,    -- max_upload_date, unix time, inclusive
    state          TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'split', 'done')),
    next_page      INTEGER NOT NULL DEFAULT 1,
    pages          INTEGER,             -- as Flickr last reported
    total          INTEGER,             -- as Flickr last reported
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (class, uploaded_from, uploaded_to)
);

-- Images Flickr serves for photos that are gone, learned from its redirects to them: a
-- download with the same bytes is rejected as `unavailable`, however it was served.
CREATE TABLE IF NOT EXISTS placeholders (
    sha256   TEXT PRIMARY KEY,
    url      TEXT NOT NULL,
    seen_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Flickr's licenses (flickr.photos.licenses.getInfo), fetched once per harvest.
CREATE TABLE IF NOT EXISTS licenses (
    license_id  TEXT PRIMARY KEY,       -- as in photos.license
    name        TEXT NOT NULL,
    url         TEXT
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

-- Every Flickr API call, logged as it is made: what the quota is spent on, and what the
-- calls-per-hour limit counts, across runs.
CREATE TABLE IF NOT EXISTS api_calls (
    call_id  INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs (run_id),
    method   TEXT NOT NULL,
    made_at  REAL NOT NULL,             -- unix time
    failed   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS api_calls_made_at ON api_calls (made_at);

-- Every file the last export wrote, as written: what `harvester verify` checks the output
-- folder against. Replaced whole by each export.
CREATE TABLE IF NOT EXISTS artifacts (
    path        TEXT PRIMARY KEY,       -- relative to the output folder
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    written_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- What the last export was made of: a digest of the dataset's rows, the harvest's figures
-- and the config the exports describe. A run that finds it unchanged, with every export
-- file still there, rewrites only summary.txt (which lists the runs).
-- (A table added to layout 4: a database without it gets it on open.)
CREATE TABLE IF NOT EXISTS export_inputs (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint  TEXT NOT NULL,
    exported_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE VIEW IF NOT EXISTS progress AS
    SELECT class, state, count(*) AS photos
    FROM photos
    GROUP BY class, state
    ORDER BY class, state;

-- The layout above; a database of another version is refused rather than misread.
PRAGMA user_version = 4;
