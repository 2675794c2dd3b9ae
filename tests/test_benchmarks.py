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


def test_every_timed_method_of_the_table_runs_through_its_public_entry_points() -> None:
    import torch

    import bench_mac
    from conftest import conv_net
    from macattr import candidate_layers, targets

    model = conv_net(0).float()
    x = torch.rand(1, 3, 8, 8)
    config = dict(n_steps=3, device="cpu", captum_layers=1, method="mac")
    layers = list(candidate_layers(model).values())
    for name in bench_mac.METHODS:
        case = bench_mac._case(dict(config, method=name), targets.gradient_magnitude(model), None, layers, x)
        assert bench_mac._run_timed(case) >= 0, name
    row = {key: 1.0 for _, _, key in bench_mac.COLUMNS if isinstance(key, str)}
    row.update(network="net", layers=3, size=8, n_steps=3, captum_layers_timed=1, captum_internal_batch_size=None,
               time_pass=True, memory_pass=False)  # fmt: skip
    cells, headers = bench_mac.format_row(row), bench_mac.ROW_HEADER
    assert len(cells) == len(headers)  # every column as wide as its header


def test_the_convergence_reference_doubles_until_no_score_moves_more_than_the_tolerance() -> None:
    import bench_convergence
    import torch

    from conftest import conv_net

    case = (conv_net(0).float(), torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0)), {})
    steps = []
    ref = bench_convergence.reference(case, 4, 0.02, 256, steps.append)
    assert ref["converged"] and ref["change"] <= 0.02 and ref["n_steps"] == 4 * 2 ** len(steps)
    again = bench_convergence._scores(case, ref["n_steps"], "trapezoid")
    same = bench_convergence.compare(again, ref["scores"])
    assert {key: same[key] for key in ("max_error", "mean_error", "overlap", "k", "understated")} == {
        "max_error": 0.0, "mean_error": 0.0, "overlap": 1.0, "k": 1, "understated": 0.0}  # fmt: skip
    coarse = bench_convergence.compare(bench_convergence._scores(case, 2, "left"), ref["scores"])
    assert coarse["max_error"] > 0.02 >= ref["change"]
    assert coarse["estimate_max"] >= coarse["max_error"] and coarse["ratio_min"] >= 1  # the estimate bounds it here


def test_the_cheaper_analyses_of_the_cost_benchmark_spend_at_most_a_fifth_of_the_full_passes() -> None:
    import bench_cost

    full, *cheaper = bench_cost.analyses(10)
    passes = lambda a: 5 * a.per_task * (a.n_steps + 1)  # noqa: E731
    assert (full.per_task, full.n_steps, full.rule, passes(full)) == (10, 200, "left", 10050)
    assert all(passes(a) <= passes(full) / 5 for a in cheaper if a.until_stable is None)
