"""Every Python block of every documentation page (and the README) runs as written: a page's blocks in page
order, in one fresh interpreter, in a scratch folder, with the repository's root on the Python path (the examples
are a folder of the repository); every ``macattr`` command of their shell blocks parses as written. A block
that cannot run here is marked on the page by a ``<!-- not run: REASON -->`` line right above it; it is counted
and named in the session's summary."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^(?:<!-- not run: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```", re.M | re.S)
SKIPPED: List[str] = []  # "page block n: reason", for the summary in conftest.py
RAN: List[str] = []


def blocks(page: Path) -> List[Tuple[int, str, str]]:
    """(number, code, reason not run or "") of each Python block of ``page``, in page order."""
    return [(n, m["code"], m["reason"] or "") for n, m in enumerate(BLOCK.finditer(page.read_text()), start=1)]


def test_the_marker_and_the_block_pattern_find_what_they_should() -> None:
    page = "text\n<!-- not run: needs a GPU -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    found = [(m["reason"], m["code"]) for m in BLOCK.finditer(page)]
    assert found == [("needs a GPU", "x = 1\n"), (None, "y = 2\n")]


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_every_python_block_of_the_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    runnable = [(n, code) for n, code, reason in blocks(page) if not reason]
    SKIPPED.extend(f"{page.name} block {n}: {reason}" for n, _, reason in blocks(page) if reason)
    RAN.extend(f"{page.name} block {n}" for n, _ in runnable)
    program = "\n".join(f"exec(compile({code!r}, {f'{page.name} block {n}'!r}, 'exec'))" for n, code in runnable)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", program], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=environment)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


FENCE = re.compile(r"^```(?P<language>[a-z]*)\n(?P<code>.*?)^```", re.M | re.S)
CALL = re.compile(r"(?:^|\s)(?P<program>\$\(which macattr\)|\S*macattr)\s+(?=(?:rank|plot|compare|demo)\b)")


def command_lines(text: str) -> List[Tuple[str, List[str]]]:
    """Each ``macattr`` command of the page's shell blocks (continued lines joined): (line, its arguments);
    under ``torchrun -m macattr`` too."""
    found = []
    for block in FENCE.finditer(text):
        if block["language"] == "python":
            continue
        for line in block["code"].replace("\\\n", " ").splitlines():
            call = CALL.search(line)
            if call:
                found.append((" ".join(line.split()), shlex.split(line[call.end("program") :], comments=True)))
    return found


def test_the_command_finder_reads_continued_lines_and_torchrun() -> None:
    page = "```\ntorchrun --nproc_per_node=2 -m macattr rank --model m:f \\\n    --k 0.1  # top 10 %\n```\n"
    assert command_lines(page) == [("torchrun --nproc_per_node=2 -m macattr rank --model m:f --k 0.1 # top 10 %",
                                    ["rank", "--model", "m:f", "--k", "0.1"])]  # fmt: skip


def test_every_command_of_the_pages_parses_as_written() -> None:
    from macattr.cli import build_parser

    failures, checked = [], 0
    for page in PAGES:
        for line, arguments in command_lines(page.read_text()):
            if "..." in arguments:  # an elided command ("the same command, under torchrun")
                continue
            checked += 1
            with contextlib.redirect_stderr(io.StringIO()) as said:
                try:
                    build_parser().parse_args(arguments)
                except SystemExit:
                    failures.append(f"{page.name}: {line}: {said.getvalue().strip()}")
    assert checked >= 15 and failures == []
