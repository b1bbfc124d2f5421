"""The benchmark suite runs, and its PyTorch twins compute what minidl computes (no timings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def test_torch_twin_has_the_same_outputs_and_gradients() -> None:
    import run
    from minidl import nn

    model = run.minidl_model((2, 7, 5, 2), seed=3).to(dtype=torch.float64)
    assert isinstance(model, nn.Sequential)
    twin = run.torch_twin(model).double()
    x = torch.randn(11, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (11,))
    criterion = nn.CrossEntropyLoss()
    loss = criterion(model(x), y)
    model.backward(criterion.backward())
    twin_loss = torch.nn.functional.cross_entropy(twin(x), y)
    twin_loss.backward()
    torch.testing.assert_close(loss, twin_loss.detach(), rtol=1e-12, atol=0)
    for parameter, twin_parameter in zip(model.parameters(), twin.parameters(), strict=True):
        assert twin_parameter.grad is not None
        torch.testing.assert_close(parameter.grad, twin_parameter.grad, rtol=1e-10, atol=1e-14)


def test_small_workload_reports_ratios_and_op_counts() -> None:
    import run

    threads = torch.get_num_threads()
    try:
        result = run.workload_small(repetitions=1, epochs_per_rep=1)
    finally:
        torch.set_num_threads(threads)
    assert set(result["us_per_step"]) == {"A minidl", "B minidl fit", "PyTorch eager"}
    assert result["ratio_A"] > 0 and result["ratio_B"] > 0
    # One op count per framework, and minidl's step issues fewer tensor ops than autograd's.
    assert 0 < result["ops_per_step"]["minidl"] < result["ops_per_step"]["PyTorch eager"]


def test_torch_reproduce_twin_trains_every_row_in_quick_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch_reproduce
    from minidl.experiments import runner

    monkeypatch.setattr(runner, "QUICK_EPOCHS", 1)
    monkeypatch.setattr(torch_reproduce, "QUICK_EPOCHS", 1)
    rows = torch_reproduce.run_torch_reproduce(quick=True)
    from minidl.experiments.config import experiments_for_tables

    assert [row["label"] for row in rows] == [e.label for e in experiments_for_tables("1,2,3")]
    assert all(0.0 <= row["mean"] <= 100.0 for row in rows)
    # In worker processes, the same numbers.
    assert torch_reproduce.run_torch_reproduce(quick=True, jobs=2) == rows
