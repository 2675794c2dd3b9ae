"""The package's shape: no import side effects, a core that knows nothing of plots or restoration, no 0.1 names."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import macattr
from macattr import LayerScores

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


EXTRAS = ("plots", "cli", "commands", "restoration", "peft", "__main__", "__init__")  # above the core; the facade


def _core_modules() -> list:
    package = ROOT / "macattr"
    return [p for p in package.rglob("*.py") if p.relative_to(package).parts[0].removesuffix(".py") not in EXTRAS]


def _imported_modules(path: Path) -> set:
    """Every module a file imports, at its top or inside functions, as absolute dotted names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_no_core_module_imports_plots_or_restoration_even_inside_functions() -> None:
    assert len(_core_modules()) > 15
    for path in _core_modules():
        back = sorted(m for m in _imported_modules(path) if m.startswith(("macattr.plots", "macattr.restoration",
                                                                         "macattr.cli")))  # fmt: skip
        assert not back, f"{path.relative_to(ROOT)} imports {back}"


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "macattr").mkdir()
    module = tmp_path / "macattr" / "bad.py"
    module.write_text("def f():\n    from macattr.plots import describe\n    from . import restoration\n")
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        assert {"macattr.plots.describe", "macattr.restoration"} <= _imported_modules(module)
    finally:
        ROOT = root


def test_the_core_never_imports_the_restoration_subpackage() -> None:
    code = "import sys; " + "; ".join(f"import macattr.{m}" for m in CORE)
    code += "; bad = [m for m in sys.modules if m.startswith(('macattr.restoration', 'macattr.plots'))]; "
    code += "assert not bad, bad"
    result = _python(code)
    assert result.returncode == 0, result.stderr


def _python_files(*folders: str) -> list:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


def test_examples_and_benchmarks_use_public_imports_only() -> None:
    for path in _python_files("examples", "benchmarks", "tests"):
        text = path.read_text()
        assert "sys.path" not in text or path.name == "test_layout.py", path
        assert not re.search(r"from macattr(\.\w+)*\._\w+ import|import macattr\._", text), path
        assert "mock.patch" not in text or path.parent.name == "tests", path  # extension points, not patches


def test_nothing_cites_notes_outside_the_repository() -> None:
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *_python_files("macattr", "examples", "benchmarks")]
    marker = "DESIGN" + ".md"
    assert [str(p) for p in files if marker in p.read_text()] == []


def test_every_public_name_resolves() -> None:
    for name in macattr.__all__:
        assert getattr(macattr, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        macattr.nope  # noqa: B018


def test_the_names_of_macattr_0_1_are_gone() -> None:
    with pytest.raises(ImportError):
        from macattr.paths import Path  # noqa: F401
    assert not hasattr(macattr.targets, "from_name") and not hasattr(LayerScores, "to_ram_files")

    class OldLinear:  # the 0.1 path protocol: start/end attributes, no interval()
        start, end = 0.0, 1.0

        def bind(self, inputs, baselines):
            return macattr.LinearPath().bind(inputs, baselines)

    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="interval"):
        macattr.LayerPathConductance(model, model[0], path=OldLinear())


def test_the_readme_quick_start_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text()
    code = text.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md quick start", "exec"), namespace)
    assert (tmp_path / "scores.json").is_file() and (tmp_path / "ram" / "filter_name.txt").is_file()
    assert (tmp_path / "profile.png").stat().st_size > 1000
    assert namespace["names"] == ["conv_last", "conv_first", "patch_norm", "norm"]  # as the comment shows
    assert namespace["last"].shape == namespace["x"].shape
    assert all(p.requires_grad for p in namespace["model"].parameters())  # freeze_except restored the flags


def test_the_docs_home_page_shows_the_readme_quick_start() -> None:
    def quick_start(text: str) -> str:
        return text.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]

    assert quick_start((ROOT / "docs" / "index.md").read_text()) == quick_start((ROOT / "README.md").read_text())


def test_every_public_module_has_a_reference_page() -> None:
    package = ROOT / "macattr"
    files = [p.relative_to(package) for p in package.rglob("*.py") if "__all__" in p.read_text()]
    public = {".".join(("macattr", *f.with_suffix("").parts)).removesuffix(".__init__") for f in files
              if not any(part.startswith("_") and part != "__init__.py" for part in f.parts)}  # fmt: skip
    pages = (ROOT / "docs" / "reference").glob("*.md")
    shown = {name for page in pages for name in re.findall(r"^::: (\S+)", page.read_text(), re.MULTILINE)}
    # the facade's names are its modules'; the command has a page of its own
    assert public - shown == {"macattr", "macattr.cli", "macattr.commands"}
