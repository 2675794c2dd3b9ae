"""A benchmark's results file that a rerun with the same settings resumes from."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from macattr.files import write_text_atomic


def resumable_results(path: Optional[Path], settings: Dict[str, Any],
                      threads: int) -> Tuple[Dict[str, Any], Callable[[], None]]:  # fmt: skip
    """The results in ``path`` when they were made with ``settings``, else fresh ones (``{"settings", "threads",
    "networks": {}}``), and a function that writes them there atomically (nothing without a path)."""
    settings = json.loads(json.dumps(settings))  # as a file holds them: tuples become lists
    results: Dict[str, Any] = {"settings": settings, "threads": threads, "networks": {}}
    if path is not None and path.is_file():
        earlier = json.loads(path.read_text())
        if earlier.get("settings") == settings:
            results = earlier

    def save() -> None:
        if path is not None:
            write_text_atomic(path, json.dumps(results, indent=1) + "\n")

    return results, save


def write_results(path: Optional[Path], results: Dict[str, Any]) -> None:
    """Write a benchmark's ``results`` to ``path`` as indented JSON, atomically, and say so (nothing without a
    path)."""
    if path is not None:
        write_text_atomic(path, json.dumps(results, indent=1) + "\n")
        print(f"wrote {path}")


def run_once(description: str, run: Callable[[], Dict[str, Any]], argv: Optional[List[str]] = None,
             table: Optional[Callable[[Dict[str, Any]], str]] = None) -> int:  # fmt: skip
    """The command line of a benchmark that runs once: ``--json FILE`` and ``--threads N`` (default 1); the
    results of ``run()`` with the seconds it took and torch's version, printed as ``table`` and written."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="results file")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = run()
    results["seconds"] = time.perf_counter() - started
    results["torch"] = torch.__version__
    if table is not None:
        print(table(results))
    write_results(args.json, results)
    return 0
