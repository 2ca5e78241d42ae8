"""The release command: show, canary, promote and roll back, and every way it refuses."""

import json
import multiprocessing
import os

import pytest

from service.models import release
from service.models.artifact import POLICY_FILE, POLICY_LOCK_FILE, TFLITE_FILE
from tests.unit.fakes import publish_fake


@pytest.fixture
def models(tmp_path):
    """colours with versions 1-3 and serving.json pinning stable to 2."""
    folder = tmp_path / "models"
    for version in (1, 2, 3):
        publish_fake(folder, "colours", version)
    (folder / "colours" / POLICY_FILE).write_text(json.dumps({"version_labels": {"stable": 2}}))
    return folder


def run(models, *args):
    return release.main(["--models-dir", str(models), *map(str, args)])


def policy(models):
    return json.loads((models / "colours" / POLICY_FILE).read_text())


def test_a_canary_is_set_promoted_and_rolled_back(models, capsys):
    assert run(models, "canary", "colours", 3, "--percent", 10) == 0
    assert "canary: version 3, 10% of unpinned requests, split" in capsys.readouterr().out
    assert policy(models)["version_labels"] == {"canary": 3, "stable": 2}
    assert policy(models)["canary"] == {"percent": 10, "mode": "split"}

    assert run(models, "promote", "colours") == 0
    promoted = policy(models)
    assert promoted["version_labels"] == {"stable": 3} and "canary" not in promoted
    assert promoted["history"][-1]["stable"] == 2
    assert "rollback goes to: 2" in capsys.readouterr().out

    assert run(models, "rollback", "colours") == 0
    assert policy(models)["version_labels"] == {"stable": 2}
    assert "history" not in policy(models)


def test_a_shadow_canary_and_ending_it(models):
    assert run(models, "canary", "colours", 3, "--percent", 25.5, "--mode", "shadow") == 0
    assert policy(models)["canary"] == {"percent": 25.5, "mode": "shadow"}
    assert run(models, "canary", "colours", "--off") == 0
    assert policy(models)["version_labels"] == {"stable": 2} and "canary" not in policy(models)


def test_a_version_can_be_promoted_by_number(models):
    assert run(models, "promote", "colours", 1) == 0
    assert policy(models)["version_labels"] == {"stable": 1}
    assert [entry["stable"] for entry in policy(models)["history"]] == [2]


def test_status_shows_versions_labels_and_history(models, capsys):
    release.promote(str(models / "colours"), 3)
    (models / "colours" / "4").mkdir()
    assert run(models, "status", "colours") == 0
    out = capsys.readouterr().out
    assert "versions: 1, 2, 3 (stable), 4 (incomplete)" in out
    assert "rollback goes to: 2" in out


@pytest.mark.parametrize("args, words", [
    (("status", "nope"), "there is no model folder"),
    (("canary", "colours", 7), "version 7 of colours does not exist, so it cannot be canary"),
    (("canary", "colours", 2), "version 2 is already stable"),
    (("promote", "colours"), "there is no canary to promote; name a version"),
    (("rollback", "colours"), "no earlier stable version in the history"),
])
def test_bad_requests_end_with_one_line_and_status_2(models, capsys, args, words):
    before = (models / "colours" / POLICY_FILE).read_bytes()
    assert run(models, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert (models / "colours" / POLICY_FILE).read_bytes() == before


def test_an_incomplete_version_is_refused(models, capsys):
    os.unlink(models / "colours" / "3" / TFLITE_FILE)
    assert run(models, "promote", "colours", 3) == 2
    assert "version 3 of colours is incomplete (it has no model.tflite)" in capsys.readouterr().err


def test_a_broken_policy_file_is_refused_not_overwritten(models, capsys):
    (models / "colours" / POLICY_FILE).write_text('{"version_labels": {"stable": 2},')
    assert run(models, "canary", "colours", 3) == 2
    assert "cannot be used (not valid JSON" in capsys.readouterr().err
    assert (models / "colours" / POLICY_FILE).read_text().endswith(",")


@pytest.mark.parametrize("args", [("canary", "colours"), ("canary", "colours", 3, "--off"),
                                  ("canary", "colours", 3, "--percent", 101),
                                  ("canary", "colours", "three"), ("promote", "colours", 0)])
def test_a_malformed_command_line_is_a_usage_error(models, args):
    with pytest.raises(SystemExit) as exit_:
        run(models, *args)
    assert exit_.value.code == 2


def test_a_models_folder_it_cannot_write_to_is_a_clear_error(models, capsys):
    # What a read-only mount gives any user, root included: the lock file cannot be opened.
    (models / "colours" / POLICY_LOCK_FILE).mkdir()
    assert run(models, "canary", "colours", 3) == 2
    assert "cannot write to" in capsys.readouterr().err
    assert policy(models)["version_labels"] == {"stable": 2}


def test_commands_at_once_apply_one_after_the_other(models):
    folder = str(models / "colours")
    candidates = range(4, 10)
    for version in candidates:
        publish_fake(models, "colours", version)
    promoted = [multiprocessing.Process(target=release.promote, args=(folder, version))
                for version in candidates]
    for process in promoted:
        process.start()
    for process in promoted:
        process.join(30)
    assert all(process.exitcode == 0 for process in promoted)
    # Each promote saw the one before it: no change was lost, so the history holds the
    # first stable and every promoted version but the last, which is stable now.
    final = policy(models)
    history = [entry["stable"] for entry in final["history"]]
    assert history[0] == 2 and len(history) == len(candidates)
    assert sorted([*history[1:], final["version_labels"]["stable"]]) == list(candidates)
    assert not [name for name in os.listdir(folder) if name.startswith(".tmp-")]


def labelled_store(folder, counts):
    """A SQLite store in `folder` whose colours predictions got feedback: {version: (labelled,
    correct)}, each version's as stable or canary."""
    from service.store.database import Database

    database = Database(str(folder))
    with database.transaction() as session:
        for version, (labelled, correct) in counts.items():
            for index in range(labelled):
                prediction_id = f"v{version}-{index}"
                session.run("INSERT INTO predictions (prediction_id, created_at, request_id, "
                            "model, version, version_label, route, top1, top_k, latency_ms, "
                            "image_sha256) VALUES (?, 1e9, 'r', 'colours', ?, ?, '/predict', "
                            "'red', '[]', 1, 'sha')",
                            (prediction_id, version, "stable" if version == 2 else "canary"))
                session.run("INSERT INTO feedback (prediction_id, true_class, created_at) "
                            "VALUES (?, ?, 1e9)",
                            (prediction_id, "red" if index < correct else "blue"))
    return str(folder)


def test_status_shows_live_accuracy_side_by_side(models, tmp_path, capsys):
    store = labelled_store(tmp_path / "store", {2: (100, 45), 3: (100, 56)})
    assert run(models, "canary", "colours", 3) == 0
    capsys.readouterr()
    assert release.main(["--models-dir", str(models), "--store", store, "status", "colours"]) == 0
    printed = capsys.readouterr().out
    assert "live accuracy (feedback in the prediction store; stable 2, canary 3):" in printed
    assert "stable: 45/100 right, 95% interval 0.356-0.548" in printed
    assert "canary: 56/100 right, 95% interval 0.462-0.653" in printed
    assert "two-proportion z=1.556, p=0.1198: not significant at 0.05" in printed


def test_promote_with_evidence_refuses_with_3_and_why(models, tmp_path, capsys, monkeypatch):
    store = labelled_store(tmp_path / "store", {2: (300, 270), 3: (300, 272)})
    assert run(models, "canary", "colours", 3) == 0
    arguments = ["--models-dir", str(models), "--store", store, "promote", "colours",
                 "--require-evidence"]
    monkeypatch.setenv("RELEASE_MIN_FEEDBACK", "400")
    assert release.main(arguments) == 3
    assert "stable has 300 predictions with feedback; at least 400" in capsys.readouterr().err
    monkeypatch.setenv("RELEASE_MIN_FEEDBACK", "200")
    assert release.main(arguments) == 3
    assert "does not show the canary within 0.01" in capsys.readouterr().err
    assert policy(models)["version_labels"] == {"canary": 3, "stable": 2}  # unchanged
    # With a wide margin, the same feedback is evidence enough.
    assert release.main([*arguments, "--margin", "0.1"]) == 0
    assert policy(models)["version_labels"] == {"stable": 3}


def test_promote_with_evidence_needs_a_store(models, capsys):
    with pytest.raises(SystemExit) as exited:
        run(models, "promote", "colours", "--require-evidence")
    assert exited.value.code == 2


def test_promote_with_evidence_from_a_store_that_is_down(models, capsys):
    assert run(models, "canary", "colours", 3) == 0
    assert release.main(["--models-dir", str(models), "--store",
                         "postgresql://nobody@127.0.0.1:9/none", "promote", "colours",
                         "--require-evidence"]) == 3
    assert "the prediction store cannot be read" in capsys.readouterr().err
