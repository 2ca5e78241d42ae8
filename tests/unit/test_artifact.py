"""The version-folder layout both programs share: which folders are versions, which complete."""

from service.models.artifact import (
    SERVING_FILES,
    complete_versions,
    missing_files,
    published_versions,
    version_number,
)


def test_only_positive_integer_names_are_versions():
    assert [version_number(name) for name in ("1", "12", "0", "-1", "01a", ".tmp-3", "²", "")] \
        == [1, 12, None, None, None, None, None, None]


def test_published_versions_are_numbered_folders_oldest_first(tmp_path):
    for name in ("10", "2", "0", ".tmp-11", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a folder")
    assert published_versions(tmp_path) == [2, 10]
    assert published_versions(tmp_path / "missing") == []


def test_a_complete_version_holds_every_serving_file(tmp_path):
    for version in ("1", "2", "3"):
        (tmp_path / version).mkdir()
    for name in SERVING_FILES:
        (tmp_path / "1" / name).write_text("x")
        (tmp_path / "3" / name).write_text("x")
    (tmp_path / "2" / "metadata.json").write_text("{}")
    assert complete_versions(tmp_path) == [3, 1]
    assert missing_files(tmp_path / "2") == ["model.tflite"]
