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


@pytest.mark.parametrize(("sizes", "batch"), [((2, 7, 5, 3), 11), ((3, 4, 2), 1)])
def test_handwritten_step_trains_as_minidl_does(sizes: tuple[int, ...], batch: int) -> None:
    """The reference step of workloads A and B: the same losses and parameters as minidl's
    zero_grad, forward, loss, backward and SGD step, over several steps (float64)."""
    import run
    from handwritten import HandwrittenStep
    from minidl import nn, optim

    model = run.minidl_model(sizes, seed=5).to(dtype=torch.float64)
    with torch.inference_mode():
        hand = HandwrittenStep(model, lr=0.3, batch=batch)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = torch.randn(batch, sizes[0], dtype=torch.float64, generator=generator)
        y = torch.randint(0, sizes[-1], (batch,), generator=generator)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        model.backward(criterion.backward())
        optimizer.step()
        with torch.inference_mode():
            hand_loss = hand.step(x, y).clone()
        torch.testing.assert_close(hand_loss, loss, rtol=1e-12, atol=1e-15)
    layers = [layer for layer in model if isinstance(layer, nn.Linear)]
    for layer, (weight, bias) in zip(layers, hand.parameters(), strict=True):
        assert layer.bias is not None
        torch.testing.assert_close(weight, layer.weight.data, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(bias, layer.bias.data, rtol=1e-12, atol=1e-15)


def test_handwritten_step_refuses_what_it_does_not_compute() -> None:
    import run
    from handwritten import HandwrittenStep
    from minidl import nn

    with pytest.raises(ValueError, match="HandwrittenStep: expected Linear layers"):
        HandwrittenStep(nn.mlp((2, 3, 2), "relu"), lr=0.1, batch=4)
    hand = HandwrittenStep(run.minidl_model((2, 3, 2), seed=0), lr=0.1, batch=4)
    with torch.inference_mode(), pytest.raises(ValueError, match="expected 4 samples, got 3"):
        hand.step(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64))


def test_small_workload_reports_ratios_and_op_counts() -> None:
    import run

    threads = torch.get_num_threads()
    try:
        result = run.workload_small(repetitions=1, epochs_per_rep=1)
    finally:
        torch.set_num_threads(threads)
    assert set(result["us_per_step"]) == {
        "A minidl",
        "A in inference mode",
        "B minidl fit",
        "PyTorch eager",
        "hand-written",
    }
    ratios = ("ratio_A", "ratio_A_inference_mode", "ratio_B", "ratio_hand_written")
    assert all(result[ratio] > 0 for ratio in ratios)
    # One op count per step, and minidl's step issues fewer tensor ops than autograd's; the
    # hand-written step (A's network: 4 layers) issues 30.
    ops = result["ops_per_step"]
    assert 0 < ops["hand-written"] < ops["minidl"] < ops["PyTorch eager"]
    assert ops["hand-written"] == 30


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
