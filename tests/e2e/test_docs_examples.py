"""The examples in README.md and docs/api.md, run as written against the compose stack.

Every fenced block marked `sh test` or `python test` (tests/markdown.py) runs in one folder
that holds the files the examples name, against one compose project with its defaults, with
localhost:8000 turned into the project's published port. Each must exit 0 and print JSON of
the shape the answer block after it shows, so a changed answer fails here.
"""

import shutil

import pytest
from PIL import Image

from tests import markdown, support
from tests.e2e.compose import running_project, skip_without_compose

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

skip_without_compose()

EXAMPLES = [example for name in markdown.EXAMPLE_FILES
            for example in markdown.examples(support.ROOT / name)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The compose stack with its defaults, every shipped model ready."""
    with running_project(tmp_path_factory.mktemp("docs")) as project:
        project.wait_ready()
        for name in sorted(path.name for path in project.models_dir.iterdir() if path.is_dir()):
            support.poll(lambda name=name: project.http.get(
                project.url(f"/v2/models/{name}/ready"), timeout=3).status_code == 200,
                60, f"model {name} ready")
        yield project


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The files the examples name: JPEGs, a PNG, and a file that is no image."""
    folder = tmp_path_factory.mktemp("examples")
    (folder / "cat.jpg").write_bytes(
        support.encode(support.draw_picture(support.SHAPE_COLOURS["red"], size=32)))
    (folder / "ship.png").write_bytes(
        support.encode(support.draw_picture(support.SHAPE_COLOURS["blue"], size=48, seed=1),
                       "PNG"))
    # A photo of none of CIFAR-10's classes, for the unknown answer's example.
    skimage_data = pytest.importorskip("skimage.data")
    (folder / "rocket.jpg").write_bytes(
        support.encode(Image.fromarray(skimage_data.rocket()), quality=90))
    shutil.copy(support.ROOT / "README.md", folder / "README.md")
    return folder


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.block.where for example in EXAMPLES])
def test_the_example_runs_and_answers_as_shown(stack, folder, example):
    port = stack.environment["API_PORT"]
    problem = markdown.run_example(example, port, folder)
    assert problem is None, problem + stack.logs()
