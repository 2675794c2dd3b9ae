"""The benchmark script refuses the option combinations it cannot measure, with argparse's exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH_MAC = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mac.py"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fused-accumulation", "--scaling", "plots"], "--fused-accumulation: only for the main table"),
        (["--fused-accumulation", "--paper-swinir"], "--fused-accumulation: only for the main table"),
        (["--allocator", "mimalloc"], "--allocator: invalid choice: 'mimalloc'"),
    ],
)
def test_bench_mac_refuses_options_it_cannot_measure(argv, message, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH_MAC), *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "plots").exists()
