"""The package's shape: no import side effects, a core that knows nothing of restoration, deprecated names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import macattr
from macattr import LayerScores, targets

ROOT = Path(__file__).resolve().parents[1]
CORE = ("attribution", "paths", "engine", "targets", "layers", "scores", "finetune", "accumulators", "ranking")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})


def test_import_macattr_leaves_matplotlib_alone_and_loads_neither_pyplot_nor_scipy() -> None:
    code = (
        "import sys, macattr, matplotlib; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
        "assert 'scipy' not in sys.modules and 'matplotlib.pyplot' not in sys.modules; "
        "import macattr.plots, macattr.scores; "
        "assert 'scipy' not in sys.modules and 'matplotlib.pyplot' not in sys.modules"
    )
    result = _python(code, MPLBACKEND="svg")
    assert result.returncode == 0, result.stderr


def test_the_core_never_imports_the_restoration_subpackage() -> None:
    code = "import sys; " + "; ".join(f"import macattr.{m}" for m in CORE)
    code += "; bad = [m for m in sys.modules if m.startswith('macattr.restoration')]; assert not bad, bad"
    result = _python(code)
    assert result.returncode == 0, result.stderr


def _python_files(*folders: str) -> list:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


def test_examples_and_benchmarks_use_public_imports_only() -> None:
    for path in _python_files("examples", "benchmarks", "tests"):
        text = path.read_text()
        assert "sys.path" not in text or path.name == "test_layout.py", path
        assert not re.search(r"from macattr(\.\w+)*\._\w+ import|import macattr\._", text), path


def test_nothing_cites_notes_outside_the_repository() -> None:
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *_python_files("macattr", "examples", "benchmarks")]
    marker = "DESIGN" + ".md"
    assert [str(p) for p in files if marker in p.read_text()] == []


def test_every_public_name_resolves() -> None:
    for name in macattr.__all__:
        assert getattr(macattr, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        macattr.nope  # noqa: B018


def test_deprecated_names_still_work_and_warn(tmp_path) -> None:
    model = nn.Identity()
    images = torch.rand(2, 3, 8, 8)
    with pytest.warns(DeprecationWarning, match="IntegrationPath"):
        from macattr.paths import Path as OldPath
    assert OldPath is macattr.IntegrationPath
    with pytest.warns(DeprecationWarning, match="NAMED_TARGETS"):
        torch.testing.assert_close(targets.from_name(model, "mean")(images), images.mean((1, 2, 3)))
    with pytest.warns(DeprecationWarning, match="targets.window"):
        old = targets.gradient_magnitude(model, window=(0, 0, 4))(images)
    torch.testing.assert_close(old, targets.window(model, 0, 0, 4, of="gradient_magnitude")(images))
    scores = LayerScores({"a": 1.0, "b": 2.0}, "mac")
    with pytest.warns(DeprecationWarning, match="write_ram_files"):
        files = scores.to_ram_files(tmp_path)
    assert files[0].read_text() == "b\na\n"


def test_a_path_written_for_the_old_protocol_still_runs_with_a_warning() -> None:
    class OldLinear:
        start, end = 0.0, 1.0

        def bind(self, inputs, baselines):
            return macattr.LinearPath().bind(inputs, baselines)

    model = nn.Sequential(nn.Linear(3, 2))
    x = torch.rand(2, 3, dtype=torch.float64)
    model.double()
    with pytest.warns(DeprecationWarning, match="interval"):
        old = macattr.LayerPathConductance(model, model[0], path=OldLinear()).attribute(x, target=0, n_steps=4)
    new = macattr.LayerPathConductance(model, model[0]).attribute(x, target=0, n_steps=4)
    torch.testing.assert_close(old, new)
