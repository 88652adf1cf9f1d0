"""Every shell and Python example in the README and under docs/ runs, as written.

The examples are read from the Markdown (fenced blocks marked ``sh``, ``bash``, ``shell`` or
``python``), so a page written on any branch is picked up by adding it under ``docs/``. They
run the way a reader follows a page: top to bottom, the shell blocks of a page in one bash
session (variables carry over), its Python blocks in one interpreter, in a folder holding the
files the examples name (``photo.jpg``, ``shots/``...: CC0 photos) and a ``.venv`` link to this
virtualenv, with ``cutout`` on the ``PATH``. Pages whose examples call
``http://localhost:5000`` get a real ``cutout serve`` (its address put in place of that one),
its data directory as ``CUTOUT_DATA_DIR`` (so ``cutout keys create`` makes keys for it), a key
in ``$KEY`` for the Python blocks, and ``IMAGE_URL``: a photo served on this machine, which the
server is allowed to fetch. A block fails the page if it exits non-zero.

A block preceded by ``<!-- example: skip REASON -->`` is not run (a server in the foreground,
a cloud account); ``<!-- example: needs COMMAND -->`` runs only where COMMAND exists. Each
appears as a skipped test with its reason, so the end of the run says what did not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.api.test_live_api import cli_key
from tests.conftest import ROOT, Photos
from tests.helpers import LocalServer
from tests.live import LiveServer

SHELLS = {"sh", "bash", "shell"}
PYTHONS = {"python", "py"}
DIRECTIVE = re.compile(r"<!--\s*example:\s*(skip|needs)\s+(.+?)\s*-->")
FENCE = re.compile(r"^```(\w+)?[^\n]*$")
LOCAL = "localhost:5000"


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    language: str  # "sh" or "python"
    code: str
    skip: str | None  # why it is not run here

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples(page: Path) -> list[Example]:
    """The shell and Python blocks of *page*, with what their directive says."""
    found: list[Example] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        language = (fence.group(1) or "").lower()
        kind = "sh" if language in SHELLS else "python" if language in PYTHONS else None
        if kind:
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            found.append(Example(page, i + 1, kind, "\n".join(lines[i + 1 : end]), _skip(previous)))
        i = end + 1
    return found


def _skip(previous: str) -> str | None:
    directive = DIRECTIVE.search(previous)
    if directive is None:
        return None
    verb, argument = directive.groups()
    if verb == "skip":
        return argument
    command = argument.split()[0]
    return None if shutil.which(command) else f"needs {command}, not found on this machine"


ALL = [example for page in pages() for example in examples(page)]
NOT_RUN = [e for e in ALL if e.skip is not None]


def _runnable(page: Path) -> tuple[tuple[str, str], ...]:
    return tuple((e.language, e.code) for e in examples(page) if e.skip is None)


def _alike() -> list[list[Path]]:
    """The pages with examples to run, those whose runnable examples are the very same blocks
    in the same order (the README and the site's home page) together: one run covers them."""
    groups: dict[tuple[tuple[str, str], ...], list[Path]] = {}
    for page in pages():
        if blocks := _runnable(page):
            groups.setdefault(blocks, []).append(page)
    return sorted(groups.values())


RUN = _alike()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, photos: Photos) -> Path:
    """The files the examples name, as a reader would have them in their folder."""
    work = tmp_path_factory.mktemp("docs-examples")
    jpeg = {"photo.jpg": "coffee", "shoe.jpg": "coffee", "product.jpg": "coffee",
            "portrait.jpg": "astronaut", "hair.jpg": "chelsea", "b.jpg": "rocket"}  # fmt: skip
    for name, stem in jpeg.items():
        with Image.open(photos.named(stem)) as image:
            image.convert("RGB").save(work / name, "JPEG", quality=90)
    shutil.copy(photos.named("chelsea"), work / "input.png")
    shutil.copy(photos.named("coffee"), work / "item.png")
    with Image.open(photos.named("chelsea")) as image:
        image.save(work / "a.heic", "HEIF", quality=80)
    (work / "shots").mkdir()
    for stem in ("astronaut", "chelsea", "coffee"):
        with Image.open(photos.named(stem)) as image:
            image.convert("RGB").save(work / "shots" / f"{stem}.jpg", "JPEG", quality=90)
    (work / ".venv").symlink_to(Path(sys.prefix))
    return work


@pytest.fixture(scope="module")
def photo_host(workdir: Path) -> Iterator[LocalServer]:
    photo = (workdir / "shoe.jpg").read_bytes()
    routes = {("GET", "/shoe.jpg"): lambda h, b: (200, {"Content-Type": "image/jpeg"}, photo)}
    with LocalServer(routes) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("docs-server") / "data"
    env = {"USER_LIMIT": "1000", "CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32"}
    with LiveServer(data, env) as live:
        yield live


def environment(workdir: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "PYTHON"))}
    env = {**keep, "PATH": f"{Path(sys.executable).parent}:{keep['PATH']}", "HOME": str(workdir)}
    for name in ("CUTOUT_MODEL_DIR",):
        if name in os.environ:
            env[name] = os.environ[name]
    if "CUTOUT_MODEL_DIR" not in env:  # HOME moved: keep the models `make install` fetched
        env["CUTOUT_MODEL_DIR"] = str(Path.home() / ".cache" / "cutout" / "models")
    return env


@pytest.mark.model
@pytest.mark.parametrize(
    "alike", RUN, ids=lambda ps: " = ".join(str(p.relative_to(ROOT)) for p in ps)
)
def test_the_examples_of_a_page_run_as_written(
    alike: list[Path], workdir: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    page = alike[0]
    runnable = [e for e in examples(page) if e.skip is None]
    env = environment(workdir)
    if any(LOCAL in e.code for e in runnable):
        live: LiveServer = request.getfixturevalue("server")
        host: LocalServer = request.getfixturevalue("photo_host")
        env.update(
            CUTOUT_DATA_DIR=live.env["CUTOUT_DATA_DIR"],
            CUTOUT_ENV="development",
            KEY=cli_key(live, f"docs {page.stem}"),
            IMAGE_URL=f"{host.url}/shoe.jpg",
        )
        address = live.url.removeprefix("http://")
        runnable = [
            Example(e.page, e.line, e.language, e.code.replace(LOCAL, address), None)
            for e in runnable
        ]
    folder = tmp_path / "work"
    shutil.copytree(workdir, folder, symlinks=True)
    for language in ("sh", "python"):
        blocks = [e for e in runnable if e.language == language]
        if blocks:
            run_blocks(blocks, folder, env)


def run_blocks(blocks: list[Example], folder: Path, env: dict[str, str]) -> None:
    """Run *blocks* in one session; on failure, name the block that failed and its output."""
    marker = "::example-done::"
    if blocks[0].language == "sh":
        script = "set -e\n" + "".join(f"{b.code}\necho '{marker}{b.line}'\n" for b in blocks)
        argv = ["bash", "-c", script]
    else:
        script = "".join(f"{b.code}\nprint('{marker}{b.line}', flush=True)\n" for b in blocks)
        argv = [sys.executable, "-c", script]
    result = subprocess.run(
        argv, cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    done = re.findall(re.escape(marker) + r"(\d+)", result.stdout)
    failed = next((b for b in blocks if str(b.line) not in done), None)
    assert result.returncode == 0 and failed is None, (
        f"the example at {failed.id if failed else blocks[-1].id} failed "
        f"(exit {result.returncode}):\n{failed.code if failed else ''}\n--- stdout\n"
        f"{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


@pytest.mark.parametrize("example", NOT_RUN, ids=lambda e: e.id)
def test_examples_not_run_here_say_why(example: Example) -> None:
    assert example.skip and len(example.skip) > 15, "say why the example cannot run here"
    pytest.skip(f"example not run: {example.skip}")


def test_the_harness_finds_the_examples() -> None:
    """The README and the guides' examples run; what does not (cloud accounts, servers in the
    foreground) is the exception."""
    ran = [e for e in ALL if e.skip is None]
    assert len(ran) >= 20 and len(ran) > len(NOT_RUN), (len(ran), len(NOT_RUN))
    guides = {e.page.name for e in ran}
    assert {"README.md", "library.md", "cli.md", "api.md", "rest-api.md"} <= guides
