"""The repository's Markdown, read for the doc tests: files, fenced blocks, links, anchors.

The doc tests (tests/unit/test_docs.py, tests/e2e/test_docs_examples.py) need only these
few rules of CommonMark and of GitHub's rendering, so they are written here rather than
pulled in as a Markdown parser.

Runnable examples: a fenced block whose info string is `sh test` (run with bash) or
`python test` (run with the test interpreter) talks to the service at localhost:8000. The
answer it must give is the `json` block right after it (only blank lines between), or, when
its info string also says `shape=previous`, the last such answer block above it. Without one
it must only succeed and print no JSON error.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

from tests.support import ROOT

# Where the examples that talk to the service live; each of these runs in CI.
EXAMPLE_FILES = ("README.md", "docs/api.md")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`]*)$")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the target may be <...> and may carry a "title".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
SERVICE = "localhost:8000"


@dataclasses.dataclass
class Block:
    """One fenced code block: where it starts, its info string and its text."""

    path: Path
    line: int
    info: str
    text: str

    @property
    def words(self):
        return self.info.split()

    @property
    def language(self):
        return self.words[0] if self.words else ""

    @property
    def where(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclasses.dataclass
class Example:
    """A block marked to run against the service, and the answer shown for it (or None)."""

    block: Block
    answer: Block | None


def markdown_files():
    """Every Markdown file git tracks (or, outside a git checkout, every one in the tree)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard", "--", "*.md"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split("\0")
        return sorted(ROOT / name for name in listed if name)
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", ".git", "node_modules"}
        return sorted(path for path in ROOT.rglob("*.md")
                      if not skip & set(path.relative_to(ROOT).parts))


def split(path):
    """(prose lines with their numbers, fenced blocks) of one Markdown file."""
    prose, blocks = [], []
    fence, info, start, body = None, "", 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            opened = FENCE.match(line)
            if opened:
                fence, info, start, body = opened[1], opened[2].strip(), number, []
            else:
                prose.append((number, line))
        elif (line.strip().startswith(fence[0] * len(fence))
              and not line.strip().strip(fence[0]).strip()):
            blocks.append(Block(path, start, info, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{path.relative_to(ROOT)}:{start}: a fenced block is never closed"
    return prose, blocks


def anchor(heading):
    """GitHub's anchor for a heading's text: lower case, punctuation gone, spaces to '-'."""
    text = LINK.sub(lambda match: match[0][match[0].index("[") + 1:match[0].index("](")],
                    heading)
    text = re.sub(r"[`*]|<[^>]+>", "", text).strip().lower()
    kept = "".join(character for character in text
                   if character in " -_" or unicodedata.category(character)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path):
    """Every anchor a file's headings make, with GitHub's -1, -2, ... for repeats."""
    seen, result = {}, set()
    for _, line in split(path)[0]:
        heading = HEADING.match(line)
        if heading:
            base = anchor(heading[2])
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path):
    """(line number, target) of every link and image in a file's prose, code spans left out."""
    found = []
    for number, line in split(path)[0]:
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match[1].strip("<>")))
    return found


def is_relative(target):
    """Whether a link points into the repository rather than to another site."""
    return not SCHEME.match(target) and not target.startswith("//")


def examples(path):
    """Every block of one file marked to run against the service, with its answer."""
    blocks = split(path)[1]
    lines = path.read_text(encoding="utf-8").splitlines()
    found, previous = [], None
    for index, block in enumerate(blocks):
        if "test" not in block.words:
            continue
        answer = None
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        end = block.line + block.text.count("\n")
        if (following is not None and following.language == "json"
                and all(not line.strip() for line in lines[end + 1:following.line - 1])):
            answer = previous = following
        elif "shape=previous" in block.words:
            answer = previous
        found.append(Example(block, answer))
    return found


def talks_to_service(block):
    """Whether a block's code (its comments left out) names the service's address."""
    for line in block.text.splitlines():
        code = line if block.language == "json" else re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
        if SERVICE in code:
            return True
    return False


def json_documents(text):
    """The JSON values printed one after another in `text`; ValueError if anything else."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return documents
        document, position = decoder.raw_decode(text, position)
        documents.append(document)


def shape_mismatch(actual, expected, where="answer"):
    """Why `actual` does not have the shape of `expected`, or None when it does.

    Objects must have the same keys, lists' elements the shape of the example's first
    element, and other values the same JSON type (numbers alike; null fits any value).
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where} is {type(actual).__name__}, not an object"
        if set(actual) != set(expected):
            return f"{where} has keys {sorted(actual)}, not {sorted(expected)}"
        for key, value in expected.items():
            why = shape_mismatch(actual[key], value, f"{where}.{key}")
            if why:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{where} is {type(actual).__name__}, not a list"
        if expected and not actual:
            return f"{where} is empty"
        for index, item in enumerate(actual if expected else []):
            why = shape_mismatch(item, expected[0], f"{where}[{index}]")
            if why:
                return why
        return None
    if expected is None or actual is None:
        return None
    kinds = [str if isinstance(value, str) else bool if isinstance(value, bool)
             else float if isinstance(value, int | float) else type(value)
             for value in (actual, expected)]
    return None if kinds[0] is kinds[1] else f"{where} is {actual!r}, not like {expected!r}"


def run_example(example, port, folder, timeout=60):
    """Run one example against the service on 127.0.0.1:`port` in `folder`; say what is wrong.

    Returns None when the example succeeded and printed what its answer block shows.
    """
    block = example.block
    code = block.text.replace(SERVICE, f"127.0.0.1:{port}")
    environment = {key: value for key, value in os.environ.items()
                   if key.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    # `python3` in an example is the test interpreter, with the test requirements.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["NO_PROXY"] = environment["no_proxy"] = "*"
    if block.language == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    result = subprocess.run(command, cwd=folder, env=environment, capture_output=True,
                            text=True, timeout=timeout)
    told = f"{block.where}: ({block.info})\n{block.text}\nprinted:\n{result.stdout[-3000:]}" \
           f"{result.stderr[-3000:]}"
    if result.returncode != 0:
        return f"exit status {result.returncode}\n{told}"
    try:
        documents = json_documents(result.stdout)
    except ValueError:
        documents = None
    if example.answer is None:
        errors = [document for document in documents or ()
                  if isinstance(document, dict) and "error" in document]
        return f"it answered with an error\n{told}" if errors else None
    if not documents:
        return f"it printed no JSON, where {example.answer.where} shows an answer\n{told}"
    expected = json.loads(example.answer.text)
    for document in documents:
        why = shape_mismatch(document, expected)
        if why:
            return f"{why} (the answer shown at {example.answer.where})\n{told}"
    return None
