"""The store's bounds and erasure: retention in days and a disk quota, oldest first; erasing
by prediction id or image sha256. Every process's writer applies the bounds now and then; the
erasure is a command (service/store/__main__.py)."""

import time

from service.store.database import Database

# At most this many predictions deleted per step when over the quota, and so many steps
# per upkeep, so that one upkeep holds the write lock only briefly.
QUOTA_STEP_ROWS = 2000
QUOTA_STEPS = 50
SECONDS_PER_DAY = 86400


def enforce_bounds(database: Database, retention_days: float, quota_bytes: int) -> dict:
    """Delete what is older than the retention, then the oldest until under the quota."""
    deleted = {"expired": 0, "over_quota": 0}
    cutoff = time.time() - retention_days * SECONDS_PER_DAY
    with database.transaction() as session:
        session.run("DELETE FROM feedback WHERE prediction_id IN "
                    "(SELECT prediction_id FROM predictions WHERE created_at < ?)", (cutoff,))
        session.run("DELETE FROM predictions WHERE created_at < ?", (cutoff,))
        deleted["expired"] = session.changed
        _delete_orphan_images(session)
    for _ in range(QUOTA_STEPS):
        used = database.used_bytes() if quota_bytes else 0
        if used <= quota_bytes:
            break
        with database.transaction() as session:
            count = session.run("SELECT COUNT(*) FROM predictions")[0][0]
            # About the share of rows that is over the quota, so little more than needed goes.
            step = min(QUOTA_STEP_ROWS, 1 + int(count * (used - quota_bytes) / used))
            oldest = session.run("SELECT prediction_id FROM predictions ORDER BY created_at "
                                 "LIMIT ?", (step,))
            if not oldest:
                # Only images left (their predictions were erased): drop the oldest of those.
                session.run("DELETE FROM images WHERE image_sha256 IN (SELECT image_sha256 "
                            "FROM images ORDER BY created_at LIMIT ?)", (step,))
                continue
            ids = [(row[0],) for row in oldest]
            session.run_many("DELETE FROM feedback WHERE prediction_id = ?", ids)
            session.run_many("DELETE FROM predictions WHERE prediction_id = ?", ids)
            deleted["over_quota"] += len(ids)
            _delete_orphan_images(session)
    return deleted


def erase(database: Database, prediction_id: str | None = None,
          sha256: str | None = None) -> dict:
    """Erase one prediction (and its image unless another prediction has it), or every
    prediction of an image and the image; what was erased, counted."""
    with database.transaction() as session:
        if prediction_id is not None:
            where, value = "prediction_id = ?", prediction_id
        else:
            where, value = "image_sha256 = ?", sha256
        found = session.run(f"SELECT prediction_id, image_sha256 FROM predictions WHERE {where}",
                            (value,))
        session.run("DELETE FROM feedback WHERE prediction_id IN "
                    f"(SELECT prediction_id FROM predictions WHERE {where})", (value,))
        session.run(f"DELETE FROM predictions WHERE {where}", (value,))
        if sha256 is not None:
            session.run("DELETE FROM images WHERE image_sha256 = ?", (sha256,))
            images = session.changed
        else:
            images = _delete_orphan_images(session, {row[1] for row in found})
    return {"predictions": len(found), "images": images}


def _delete_orphan_images(session, candidates: set[str] | None = None) -> int:
    """Delete kept images no prediction refers to any more (all, or among `candidates`)."""
    orphan = ("NOT EXISTS (SELECT 1 FROM predictions "
              "WHERE predictions.image_sha256 = images.image_sha256)")
    if candidates is None:
        session.run(f"DELETE FROM images WHERE {orphan}")
        return session.changed
    deleted = 0
    for sha256 in candidates:
        session.run(f"DELETE FROM images WHERE image_sha256 = ? AND {orphan}", (sha256,))
        deleted += session.changed
    return deleted
