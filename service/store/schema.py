"""The store's tables, its schema version and the migrations from every older version.

A database records its version in `schema_version`. Opening a store brings it up to
SCHEMA_VERSION by running, in order and in one transaction each, the migrations above its
version; a database newer than this code is refused, never written to.
"""

SCHEMA_VERSION = 2

# Each entry migrates from the version before it; {blob} is BLOB (SQLite) or BYTEA (PostgreSQL).
MIGRATIONS = {
    1: [
        """CREATE TABLE predictions (
            prediction_id TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            request_id TEXT NOT NULL,
            model TEXT NOT NULL,
            version BIGINT NOT NULL,
            version_label TEXT,
            route TEXT NOT NULL,
            top1 TEXT NOT NULL,
            top_k TEXT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            image_sha256 TEXT NOT NULL,
            client_address TEXT,
            shadow_version BIGINT,
            shadow_top_k TEXT)""",
        "CREATE INDEX predictions_created_at ON predictions (created_at)",
        "CREATE INDEX predictions_image_sha256 ON predictions (image_sha256)",
        "CREATE INDEX predictions_model_version ON predictions (model, version)",
        """CREATE TABLE feedback (
            prediction_id TEXT PRIMARY KEY,
            true_class TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            key_id TEXT)""",
        """CREATE TABLE images (
            image_sha256 TEXT PRIMARY KEY,
            format TEXT NOT NULL,
            size BIGINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            data {blob} NOT NULL)""",
        """CREATE TABLE model_versions (
            model TEXT NOT NULL,
            version BIGINT NOT NULL,
            classes TEXT NOT NULL,
            PRIMARY KEY (model, version))""",
    ],
    # Whether the answer was "unknown" (below its min_confidence): live accuracy counts such
    # an answer as not matching the true class, whatever its top guess (top1) was.
    2: ["ALTER TABLE predictions ADD COLUMN answered_unknown INTEGER NOT NULL DEFAULT 0"],
}
