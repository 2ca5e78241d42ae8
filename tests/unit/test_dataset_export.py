"""`python -m model_training.dataset export`, and training's reading of several folders."""

import hashlib
import json
import time

import numpy as np
import pytest

from model_training import data as datasets
from model_training import dataset
from service.models.routing import Route
from service.store.database import Database
from service.store.feedback import Feedback, give_feedback
from service.store.recorder import Origin, PredictionRecorder
from tests import support
from tests.unit.fakes import ColourModel


def pictures(colour, count, start=0):
    """`count` different JPEGs of one colour."""
    return [support.encode(support.draw_picture(support.SHAPE_COLOURS[colour], 16, seed))
            for seed in range(start, start + count)]


def record(database, encoded, share=1.0):
    """Record a prediction of each image; their ids."""
    recorder = PredictionRecorder(database, share, 100, 10_000_000, 30, 0)
    model = ColourModel()
    pixels = np.zeros((len(encoded), 16, 16, 3), np.uint8)
    ids = recorder.record(Route(model.name, model, "stable"), pixels, model.infer(pixels),
                          Origin("/predict", "r", time.perf_counter(), encoded))
    assert recorder.flush()
    return ids


@pytest.fixture
def store(tmp_path):
    """A store with four kept images: two red, one green labelled twice (one disagreeing),
    one blue never labelled; and one red prediction whose image was not kept."""
    database = Database(str(tmp_path / "store"))
    reds, green, blue = pictures("red", 2), pictures("green", 1), pictures("blue", 1)
    ids = record(database, reds + green + blue + green)
    give_feedback(database, [Feedback(ids[0], "red"), Feedback(ids[1], "green"),
                             Feedback(ids[2], "green")], 30)
    give_feedback(database, [Feedback(ids[4], "blue")], 30)
    unkept = record(database, pictures("red", 1, start=9), share=0.0)
    give_feedback(database, [Feedback(unkept[0], "red")], 30)
    return database, reds, green


def test_export_writes_each_labelled_image_once_under_its_class(store, tmp_path, capsys):
    database, reds, green = store
    output = tmp_path / "feedback"
    assert dataset.main(["export", "--store", database.target, "--output", str(output)]) == 0
    assert "exported 3 labelled images" in capsys.readouterr().out
    files = sorted(str(path.relative_to(output)) for path in output.rglob("*.jpg"))
    digest = [hashlib.sha256(image).hexdigest() for image in (*reds, *green)]
    # The second red picture was labelled green: the person's class wins over the answer.
    # The green one was labelled green, then blue: a tie, so the latest (blue) wins.
    assert files == sorted([f"red/{digest[0]}.jpg", f"green/{digest[1]}.jpg",
                            f"blue/{digest[2]}.jpg"])
    assert (output / f"red/{digest[0]}.jpg").read_bytes() == reds[0]
    manifest = json.loads((output / dataset.MANIFEST).read_text())
    assert manifest["classes"] == {"blue": 1, "green": 1, "red": 1}
    assert manifest["store"] == database.where
    disputed = next(entry for entry in manifest["images"] if entry["sha256"] == digest[2])
    assert disputed["feedback"] == 2 and disputed["disagreed"] is True
    assert [vote["class"] for vote in disputed["predictions"]] == ["green", "blue"]


def test_a_tie_goes_to_the_latest_and_a_majority_wins():
    votes = [(1, "cat", "a"), (2, "dog", "b")]
    assert dataset.chosen_class(votes) == "dog"
    assert dataset.chosen_class([*votes, (3, "cat", "c")]) == "cat"


def test_export_refuses_an_existing_folder_and_a_missing_store(store, tmp_path, capsys):
    database, _, _ = store
    (tmp_path / "there").mkdir()
    assert dataset.main(["export", "--store", database.target, "--output",
                         str(tmp_path / "there")]) == 2
    assert "exists already" in capsys.readouterr().err
    assert dataset.main(["export", "--store", "postgresql://nobody@127.0.0.1:9/none",
                         "--output", str(tmp_path / "new")]) == 1
    assert not (tmp_path / "new").exists()


def test_training_reads_several_folders_and_counts_a_repeated_image_once(store, tmp_path):
    database, reds, green = store
    base = support.make_image_folder(tmp_path / "base")
    output = tmp_path / "feedback"
    dataset.export(database, str(output))
    # The base set holds the second red picture under "red"; the feedback says "green".
    (base / "red" / "repeated.jpg").write_bytes(reds[1])
    paths, labels, classes = datasets.list_image_folder([str(base), str(output)])
    assert classes == sorted({*(path.name for path in base.iterdir()), "green", "red"})
    both = datasets.load_image_folder([str(base), str(output)], 16, 3)
    alone = datasets.load_image_folder(str(base), 16, 3)
    assert len(both.labels) == len(alone.labels) + 2  # the repeat counts once
    repeated = [index for index, source in enumerate(both.sources)
                if source.endswith(hashlib.sha256(reds[1]).hexdigest() + ".jpg")]
    assert [both.class_names[both.labels[index]] for index in repeated] == ["green"]
    assert not any(source.endswith("repeated.jpg") for source in both.sources)
