"""The Walrus tables: migration steps, applied in order by the store (never edit a step once released)."""

from __future__ import annotations

SCHEMA = [
    """
    CREATE TABLE walrus_buckets (
        name TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        owner_name TEXT NOT NULL,
        created REAL NOT NULL,
        location TEXT NOT NULL DEFAULT '',
        versioning TEXT NOT NULL DEFAULT '',
        acl TEXT NOT NULL,
        tags TEXT
    );
    CREATE TABLE walrus_objects (
        id INTEGER PRIMARY KEY,
        bucket TEXT NOT NULL,
        key BLOB NOT NULL,
        version_id TEXT NOT NULL,
        is_latest INTEGER NOT NULL,
        delete_marker INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL DEFAULT 0,
        etag TEXT NOT NULL DEFAULT '',
        last_modified REAL NOT NULL,
        storage_id TEXT,
        owner_id TEXT NOT NULL,
        owner_name TEXT NOT NULL,
        headers TEXT NOT NULL DEFAULT '{}',
        checksum_algorithm TEXT,
        checksum_type TEXT,
        checksum TEXT,
        parts TEXT,
        acl TEXT,
        tags TEXT
    );
    CREATE UNIQUE INDEX walrus_objects_version ON walrus_objects(bucket, key, version_id);
    CREATE INDEX walrus_objects_history ON walrus_objects(bucket, key, id);
    CREATE INDEX walrus_objects_live ON walrus_objects(bucket, key) WHERE is_latest = 1 AND delete_marker = 0;
    CREATE TABLE walrus_uploads (
        upload_id TEXT PRIMARY KEY,
        bucket TEXT NOT NULL,
        key BLOB NOT NULL,
        initiated REAL NOT NULL,
        owner_id TEXT NOT NULL,
        owner_name TEXT NOT NULL,
        headers TEXT NOT NULL,
        acl TEXT NOT NULL,
        tags TEXT,
        checksum_algorithm TEXT,
        checksum_type TEXT
    );
    CREATE INDEX walrus_uploads_key ON walrus_uploads(bucket, key, upload_id);
    CREATE TABLE walrus_parts (
        upload_id TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        storage_id TEXT NOT NULL,
        checksum TEXT,
        last_modified REAL NOT NULL,
        PRIMARY KEY (upload_id, part_number)
    );
    """,
    # Bucket policies and public access block settings (JSON text each; NULL: none set).
    """
    CREATE TABLE walrus_bucket_policies (
        bucket TEXT PRIMARY KEY,
        policy TEXT,
        public_access_block TEXT
    );
    """,
    # CORS rules per bucket (JSON list).
    """
    CREATE TABLE walrus_bucket_cors (
        bucket TEXT PRIMARY KEY,
        rules TEXT NOT NULL
    );
    """,
    # Small objects kept in the store itself (no file, no per-object fsync: the bytes commit, durably, with
    # their metadata row); keyed by walrus_objects.id, a separate table so listings never read the bytes.
    """
    CREATE TABLE walrus_inline (
        object_id INTEGER PRIMARY KEY,
        data BLOB NOT NULL
    );
    """,
    # A multipart object kept as its part files (JSON list of storage ids, in order; sizes in `parts`), so that
    # CompleteMultipartUpload does not copy every byte into a new file.
    """
    ALTER TABLE walrus_objects ADD COLUMN segments TEXT;
    """,
    # Bucket settings added with issue 11, one row per bucket and setting (JSON value): "lifecycle",
    # "ownership", "object_lock", "logging", "encryption".
    """
    CREATE TABLE walrus_bucket_settings (
        bucket TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (bucket, name)
    );
    """,
    # Server-side encryption at rest (issue 11): a part's CTR nonce; its upload's headers hold the data key.
    """
    ALTER TABLE walrus_parts ADD COLUMN sse TEXT;
    """,
    # The id of the SSE cloud key every Walrus host of the cloud must hold (one row; the key stays in files).
    """
    CREATE TABLE walrus_sse_key (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        kid TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
]
