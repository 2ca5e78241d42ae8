"""The Markdown: links resolve, the service's examples are marked to run, answers are JSON.

The examples themselves run against the compose stack in tests/e2e/test_docs_examples.py.
"""

import json
from pathlib import Path

import pytest

from tests import markdown
from tests.support import ROOT

FILES = markdown.markdown_files()
EXAMPLE_PATHS = [ROOT / name for name in markdown.EXAMPLE_FILES]


def relative_links():
    """(file, line, target) of every link and image that points into the repository."""
    return [(path, line, target) for path in FILES
            for line, target in markdown.links(path) if markdown.is_relative(target)]


def test_there_is_markdown_to_check():
    assert ROOT / "README.md" in FILES and len(relative_links()) > 20


@pytest.mark.parametrize("path, line, target", relative_links(),
                         ids=lambda value: str(value.relative_to(ROOT))
                         if isinstance(value, Path) else str(value))
def test_every_relative_link_resolves(path, line, target):
    where = f"{path.relative_to(ROOT)}:{line}: {target}"
    file_part, _, fragment = target.partition("#")
    destination = (path.parent / file_part).resolve() if file_part else path
    assert destination.exists(), f"{where}: no such file or folder"
    assert ROOT in destination.parents or destination == ROOT, f"{where}: outside the repository"
    if fragment:
        assert destination.suffix == ".md", f"{where}: an anchor into a file that is not Markdown"
        assert fragment in markdown.anchors(destination), (
            f"{where}: no heading makes #{fragment} in {destination.relative_to(ROOT)}")


@pytest.mark.parametrize("path", EXAMPLE_PATHS, ids=markdown.EXAMPLE_FILES)
def test_every_block_that_talks_to_the_service_is_run_in_ci(path):
    unmarked = [block.where for block in markdown.split(path)[1]
                if markdown.talks_to_service(block) and "test" not in block.words
                and block.language != "json"]
    assert not unmarked, f"mark these blocks `sh test` (or `python test`): {unmarked}"


@pytest.mark.parametrize("path", EXAMPLE_PATHS, ids=markdown.EXAMPLE_FILES)
def test_the_examples_show_answers_that_are_json(path):
    examples = markdown.examples(path)
    assert examples, f"{path.name} has no example marked to run"
    for example in examples:
        assert example.block.language in ("sh", "python"), example.block.where
        if example.answer is not None:
            json.loads(example.answer.text)


def test_examples_are_marked_only_where_ci_runs_them():
    elsewhere = [block.where for path in FILES if path not in EXAMPLE_PATHS
                 for block in markdown.split(path)[1] if "test" in block.words]
    assert not elsewhere, f"only {markdown.EXAMPLE_FILES} are run: {elsewhere}"


@pytest.mark.parametrize("actual, expected, fits", [
    ({"a": 1, "b": [{"x": "s"}]}, {"a": 0.5, "b": [{"x": "t"}]}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"a": "1"}, {"a": 1}, False),
    ({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]}, False),
    ({"a": []}, {"a": [1]}, False),
    ({"a": None}, {"a": "stable"}, True),
])
def test_answers_are_compared_by_shape(actual, expected, fits):
    assert (markdown.shape_mismatch(actual, expected) is None) is fits


@pytest.mark.parametrize("heading, expected", [
    ("Classifying images: `/predict`", "classifying-images-predict"),
    ("The proxy's cost", "the-proxys-cost"),
    ("The Open Inference Protocol (KServe V2)", "the-open-inference-protocol-kserve-v2"),
    ("[Links](x.md) and **bold** – dashes", "links-and-bold--dashes"),
])
def test_anchors_follow_githubs_rules(heading, expected):
    assert markdown.anchor(heading) == expected
