"""The prediction store against real databases: SQLite in a folder, and a PostgreSQL server."""

import hashlib
import json
import multiprocessing
import time
import uuid

import numpy as np
import psycopg
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from service.models.routing import Route
from service.store import schema
from service.store.__main__ import main as store_command
from service.store.accuracy import LiveAccuracy, live_accuracy
from service.store.database import Database, StoreSchemaError, StoreUnavailableError
from service.store.feedback import Feedback, FeedbackError, give_feedback, key_id
from service.store.maintenance import enforce_bounds, erase
from service.store.recorder import RECORD_BYTES, Origin, PredictionRecorder, is_sampled
from tests.postgres import postgres_server  # noqa: F401 (a fixture)
from tests.support import draw_picture, encode
from tests.unit.fakes import ColourModel


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """An empty store in each kind of database."""
    if request.param == "sqlite":
        yield Database(str(tmp_path / "store"))
        return
    server = request.getfixturevalue("postgres_server")
    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    store = Database(server.url.rsplit("/", 1)[0] + "/" + name)
    yield store
    store.close()


def recorder_for(database, **overrides):
    """A recorder with every image kept and room for everything, unless told otherwise."""
    settings = {"sample_share": 1.0, "max_records": 1000, "max_bytes": 10_000_000,
                "retention_days": 30, "quota_bytes": 0} | overrides
    return PredictionRecorder(database, **settings)


def pictures(count, colour="red"):
    """`count` different encoded pictures and their decoded pixels."""
    encoded = [encode(draw_picture(colour, 16, seed), "PNG") for seed in range(count)]
    return encoded, np.stack([np.asarray(draw_picture(colour, 16, seed)) for seed in range(count)])


def classify(recorder, model, encoded, pixels, label="stable", request_id="req-1"):
    """Record `model`'s answer for the pictures, as Serving.classify does."""
    route = Route(model.name, model, label)
    origin = Origin("/predict", request_id, time.perf_counter(), encoded, "10.1.2.3", 2)
    return recorder.record(route, pixels, model.infer(pixels), origin)


def rows(database, sql, parameters=()):
    with database.transaction() as session:
        return session.run(sql, parameters)


def counter(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0


def test_each_image_gets_a_row_with_what_was_asked_and_answered(database):
    recorder, model = recorder_for(database), ColourModel("colours", 7)
    encoded, pixels = pictures(3)
    ids = classify(recorder, model, encoded, pixels)
    assert recorder.flush()
    assert len(set(ids)) == 3 and all(len(found) >= 22 for found in ids)
    written = rows(database, "SELECT prediction_id, request_id, model, version, version_label, "
                             "route, top1, top_k, image_sha256, client_address, latency_ms "
                             "FROM predictions ORDER BY prediction_id")
    assert sorted(row[0] for row in written) == sorted(ids)
    for row in written:
        assert row[1:7] == ("req-1", "colours", 7, "stable", "/predict", "red")
        assert [item["label"] for item in json.loads(row[7])][0] == "red"
        assert len(json.loads(row[7])) == 2  # the request's top_k
        assert row[9] is None  # no client addresses unless a setting asks for them
        assert row[10] >= 0
    assert {row[8] for row in written} == {hashlib.sha256(data).hexdigest() for data in encoded}
    classes = rows(database, "SELECT classes FROM model_versions")
    assert json.loads(classes[0][0]) == model.classes


def test_client_addresses_are_kept_only_when_asked(database):
    recorder = recorder_for(database, keep_client_addresses=True)
    classify(recorder, ColourModel(), *pictures(1))
    assert recorder.flush()
    assert rows(database, "SELECT client_address FROM predictions") == [("10.1.2.3",)]


def test_a_sampled_image_is_kept_once_by_its_sha256(database):
    recorder, model = recorder_for(database), ColourModel()
    encoded, pixels = pictures(2)
    classify(recorder, model, encoded, pixels)
    classify(recorder, model, encoded, pixels, request_id="req-2")
    assert recorder.flush()
    kept = rows(database, "SELECT image_sha256, format, size, data FROM images")
    assert sorted((row[0], row[1], bytes(row[3])) for row in kept) == sorted(
        (hashlib.sha256(data).hexdigest(), "png", data) for data in encoded)
    assert rows(database, "SELECT COUNT(*) FROM predictions")[0][0] == 4


def test_the_sampled_share_is_chosen_by_hash(database):
    recorder = recorder_for(database, sample_share=0.25)
    encoded, pixels = pictures(40)
    classify(recorder, ColourModel(), encoded, pixels)
    assert recorder.flush()
    expected = {hashlib.sha256(data).hexdigest() for data in encoded
                if is_sampled(hashlib.sha256(data).hexdigest(), 0.25)}
    assert {row[0] for row in rows(database, "SELECT image_sha256 FROM images")} == expected
    assert 0 < len(expected) < 40


def test_raw_pixels_are_kept_as_png(database):
    recorder, model = recorder_for(database), ColourModel()
    _, pixels = pictures(1)
    route = Route(model.name, model, None)
    recorder.record(route, pixels, model.infer(pixels), Origin("/v2", "r", time.perf_counter()))
    assert recorder.flush()
    (sha256, image_format), = rows(database, "SELECT image_sha256, format FROM images")
    assert image_format == "png"
    assert sha256 == hashlib.sha256(np.ascontiguousarray(pixels[0])).hexdigest()


def test_a_full_queue_drops_and_counts_and_never_blocks(database):
    recorder, model = recorder_for(database, max_records=3), ColourModel("full-queue")
    before = counter("prediction_store_records_dropped_total", model="full-queue",
                     reason="queue_full")
    encoded, pixels = pictures(8)
    started = time.perf_counter()
    ids = classify(recorder, model, encoded, pixels)
    assert time.perf_counter() - started < 1
    assert len(ids) == 8  # every image still answered with an id
    assert recorder.flush()
    dropped = counter("prediction_store_records_dropped_total", model="full-queue",
                      reason="queue_full") - before
    written = rows(database, "SELECT COUNT(*) FROM predictions")[0][0]
    assert dropped >= 5 and written + dropped == 8


def test_the_queue_is_bounded_in_bytes_too(database):
    encoded, pixels = pictures(4)
    room = 2 * (RECORD_BYTES + max(len(data) for data in encoded))
    recorder = recorder_for(database, max_bytes=room)
    before = counter("prediction_store_records_dropped_total", model="bytes-bound",
                     reason="queue_full")
    classify(recorder, ColourModel("bytes-bound"), encoded, pixels)
    assert recorder.flush()
    assert rows(database, "SELECT COUNT(*) FROM predictions")[0][0] == 2
    assert counter("prediction_store_records_dropped_total", model="bytes-bound",
                   reason="queue_full") - before == 2


def test_an_unreachable_store_drops_and_counts(tmp_path):
    database = Database("postgresql://nobody@127.0.0.1:9/none")  # the discard port: refused
    recorder = recorder_for(database)
    ids = classify(recorder, ColourModel("unreachable"), *pictures(2))
    assert len(ids) == 2
    assert recorder.flush(timeout=30)
    assert counter("prediction_store_records_dropped_total", model="unreachable",
                   reason="write_failed") == 2


def test_a_read_only_sqlite_store_drops_and_counts(tmp_path):
    folder = tmp_path / "store"
    Database(str(folder)).used_bytes()  # made, migrated
    recorder = recorder_for(Database(f"{folder}"))
    recorder.database._open = lambda: _read_only(folder)
    classify(recorder, ColourModel("read-only"), *pictures(1))
    assert recorder.flush()
    assert counter("prediction_store_records_dropped_total", model="read-only",
                   reason="write_failed") == 1


def _read_only(folder):
    import sqlite3

    return sqlite3.connect(f"file:{folder}/predictions.sqlite3?mode=ro", uri=True,
                           isolation_level=None)


def test_the_shadow_answer_joins_its_rows_by_prediction_id(database):
    recorder, stable, shadow = recorder_for(database), ColourModel(version=1), ColourModel(
        version=2)
    encoded, pixels = pictures(2, "blue")
    ids = classify(recorder, stable, encoded, pixels)
    recorder.record_shadow(stable.name, shadow, ids, shadow.infer(pixels))
    assert recorder.flush()
    for version, top_k in rows(database, "SELECT shadow_version, shadow_top_k FROM predictions"):
        assert version == 2 and json.loads(top_k)[0]["label"] == "blue"


def test_retention_deletes_the_old_and_their_feedback_and_images(database):
    recorder, model = recorder_for(database), ColourModel()
    old_ids = classify(recorder, model, *pictures(2))
    encoded, pixels = pictures(1, "green")
    new_ids = classify(recorder, model, encoded, pixels)
    assert recorder.flush()
    give_feedback(database, [Feedback(old_ids[0], "red")], 30)
    with database.transaction() as session:
        session.run_many("UPDATE predictions SET created_at = ? WHERE prediction_id = ?",
                         [(time.time() - 3 * 86400, found) for found in old_ids])
    assert enforce_bounds(database, 2, 0)["expired"] == 2
    assert [row[0] for row in rows(database, "SELECT prediction_id FROM predictions")] == new_ids
    assert rows(database, "SELECT COUNT(*) FROM feedback")[0][0] == 0
    assert [row[0] for row in rows(database, "SELECT image_sha256 FROM images")] == [
        hashlib.sha256(encoded[0]).hexdigest()]


def test_over_the_quota_the_oldest_go_first(database):
    recorder, model = recorder_for(database), ColourModel()
    noise = np.random.default_rng(0).integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    encoded = [encode(Image.fromarray(image), "PNG") for image in noise]
    pixels = noise[:, :16, :16]
    ids = [classify(recorder, model, [data], pixels[index:index + 1])[0]
           for index, data in enumerate(encoded)]
    assert recorder.flush()
    with database.transaction() as session:
        session.run_many("UPDATE predictions SET created_at = ? WHERE prediction_id = ?",
                         [(1000.0 + index, found) for index, found in enumerate(ids)])
    quota = database.used_bytes() // 2
    deleted = enforce_bounds(database, 1e6, quota)
    assert deleted["over_quota"] > 0
    assert database.used_bytes() <= quota
    kept = {row[0] for row in rows(database, "SELECT prediction_id FROM predictions")}
    assert kept == set(ids[len(ids) - len(kept):])  # the newest survive


def test_erase_by_prediction_id_and_by_sha256(database, capsys):
    recorder, model = recorder_for(database), ColourModel()
    encoded, pixels = pictures(2)
    first = classify(recorder, model, encoded, pixels)
    second = classify(recorder, model, encoded, pixels, request_id="again")
    assert recorder.flush()
    give_feedback(database, [Feedback(first[0], "red")], 30)
    assert erase(database, prediction_id=first[0]) == {"predictions": 1, "images": 0}
    assert rows(database, "SELECT COUNT(*) FROM feedback")[0][0] == 0
    sha256 = hashlib.sha256(encoded[0]).hexdigest()
    assert store_command(["--store", database.target, "erase", "--sha256", sha256]) == 0
    assert json.loads(capsys.readouterr().out) == {"predictions": 1, "images": 1}
    left = {row[0] for row in rows(database, "SELECT prediction_id FROM predictions")}
    assert left == {first[1], second[1]}
    assert store_command(["--store", database.target, "erase", "--sha256", "nothex"]) == 2


def test_feedback_answers_each_case(database):
    recorder, model = recorder_for(database), ColourModel("fb", 3)
    ids = classify(recorder, model, *pictures(2))
    assert recorder.flush()
    done = give_feedback(database, [Feedback(ids[0], "red")], 30, key_id("k" * 20))
    assert done[0] | {} == {"prediction_id": ids[0], "class": "red", "correct": True,
                            "new": True, "model": "fb", "version": 3, "version_label": "stable"}
    assert give_feedback(database, [Feedback(ids[0], "red")], 30)[0]["new"] is False
    with pytest.raises(FeedbackError) as conflict:
        give_feedback(database, [Feedback(ids[0], "blue")], 30)
    assert conflict.value.kind == "feedback_conflict"
    with pytest.raises(FeedbackError) as unknown_class:
        give_feedback(database, [Feedback(ids[1], "dog")], 30)
    assert unknown_class.value.kind == "unknown_class"
    with pytest.raises(FeedbackError) as not_found:
        give_feedback(database, [Feedback(ids[1], "blue"), Feedback("no-such-id", "red")], 30)
    assert not_found.value.kind == "prediction_not_found"
    # All or nothing: the good item of the refused list was not written.
    assert rows(database, "SELECT prediction_id, true_class, key_id FROM feedback") == [
        (ids[0], "red", key_id("k" * 20))]


def test_an_unknown_answer_never_matches_the_true_class(database):
    recorder, model = recorder_for(database), ColourModel("abstains", 3)
    encoded, pixels = pictures(2)  # both red: the top guess is right for each
    origin = Origin("/predict", "req-u", time.perf_counter(), encoded, None, 2)
    ids = recorder.record(Route(model.name, model, "stable"), pixels, model.infer(pixels),
                          origin, unknown=[True, False])
    assert recorder.flush()
    given = give_feedback(database, [Feedback(found, "red") for found in ids], 30)
    assert [item["correct"] for item in given] == [False, True]
    assert live_accuracy(database, "abstains")[("abstains", 3, "stable")] == LiveAccuracy(2, 1)
    # The guess is kept beside the verdict.
    assert sorted(rows(database, "SELECT top1, answered_unknown FROM predictions")) == [
        ("red", 0), ("red", 1)]


def test_feedback_for_an_expired_prediction_is_not_found(database):
    recorder = recorder_for(database)
    ids = classify(recorder, ColourModel(), *pictures(1))
    assert recorder.flush()
    with database.transaction() as session:
        session.run("UPDATE predictions SET created_at = ?", (time.time() - 2 * 86400,))
    with pytest.raises(FeedbackError) as expired:
        give_feedback(database, [Feedback(ids[0], "red")], 1)
    assert expired.value.kind == "prediction_not_found"


def test_feedback_sent_at_once_waits_for_its_row(database):
    recorder = recorder_for(database)
    ids = classify(recorder, ColourModel(), *pictures(1))
    assert give_feedback(database, [Feedback(ids[0], "green")], 30)[0]["correct"] is False


def test_the_schema_version_is_kept_and_a_newer_one_refused(database, monkeypatch):
    assert database.used_bytes() >= 0
    assert rows(database, "SELECT version FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    with database.transaction() as session:
        session.run("UPDATE schema_version SET version = ?", (schema.SCHEMA_VERSION + 1,))
    with pytest.raises(StoreSchemaError):
        Database(database.target).used_bytes()


def test_an_older_store_is_migrated(database, monkeypatch):
    recorder = recorder_for(database)
    ids = classify(recorder, ColourModel(), *pictures(1))
    assert recorder.flush()
    later = schema.SCHEMA_VERSION + 1
    monkeypatch.setattr(schema, "SCHEMA_VERSION", later)
    monkeypatch.setitem(schema.MIGRATIONS, later,
                        ["ALTER TABLE predictions ADD COLUMN note TEXT"])
    monkeypatch.setattr("service.store.database.SCHEMA_VERSION", later)
    reopened = Database(database.target)
    assert rows(reopened, "SELECT prediction_id, note FROM predictions") == [(ids[0], None)]
    assert rows(reopened, "SELECT version FROM schema_version") == [(later,)]


def _record_from_a_process(folder, seed):
    recorder = recorder_for(Database(folder), sample_share=0.0)
    model = ColourModel()
    for round_ in range(20):
        encoded, pixels = pictures(5)
        classify(recorder, model, encoded, pixels, request_id=f"p{seed}-{round_}")
    assert recorder.flush(timeout=60)


def test_several_processes_write_one_sqlite_store(tmp_path):
    folder = str(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_from_a_process, args=(folder, seed))
               for seed in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert rows(Database(folder), "SELECT COUNT(*) FROM predictions")[0][0] == 300


def test_a_store_that_is_down_says_so():
    with pytest.raises(StoreUnavailableError):
        Database("postgresql://nobody@127.0.0.1:9/none").used_bytes()
