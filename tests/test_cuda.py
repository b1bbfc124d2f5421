"""Every module, loss, stack, checkpoint and the data-parallel path on a GPU, against the CPU.

Each test computes the same thing on the CPU and on the device, in float64, and compares them
to 1e-10 (relative; the kernels of the two devices sum in other orders), or bit for bit where
the claim is about the device alone (a resumed run continues the uninterrupted one exactly).
The tests are skipped where no CUDA device is available; ``scripts/gpu-check`` runs them.
``MINIDL_TEST_DEVICE`` names another device to run them on (``cuda:1``, or ``cpu`` for a
smoke run of the tests themselves on a machine without a GPU).
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from minidl import gradcheck, nn, optim
from minidl.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from minidl.data import make_disk_data
from minidl.distributed import DataParallel, Launch, ProcessGroup
from minidl.rounds import PerModel, fit_rounds
from minidl.train import fit
from tests.helpers import assert_close, free_port
from tests.test_chain_plan import CHAINS, _chain

DEVICE = torch.device(os.environ.get("MINIDL_TEST_DEVICE", "cuda"))
F64 = torch.float64

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

MODULES: dict[str, Callable[[], nn.Module]] = {
    "Linear": lambda: nn.Linear(5, 4, dtype=F64),
    "Linear without bias": lambda: nn.Linear(5, 4, bias=False, dtype=F64),
    **{name: (lambda name=name: nn.activation(name)) for name in sorted(nn.ACTIVATIONS)},
    "BatchNorm1d": lambda: nn.BatchNorm1d(5, dtype=F64),
    "Dropout (eval)": lambda: nn.Dropout(0.3).eval(),
    "Identity": nn.Identity,
    "Softmax": nn.Softmax,
    "LogSoftmax": nn.LogSoftmax,
    "Residual": lambda: nn.Residual(nn.Sequential(nn.Linear(5, 5, dtype=F64), nn.Tanh())),
    "mlp": lambda: nn.mlp((5, 6, 4, 3), "elu", dtype=F64),
}

LOSSES: dict[str, tuple[Callable[[], nn.Loss], str]] = {
    "CrossEntropyLoss": (nn.CrossEntropyLoss, "indices"),
    "NLLLoss": (nn.NLLLoss, "indices"),
    "MSELoss": (nn.MSELoss, "dense"),
    "L1Loss": (nn.L1Loss, "dense"),
    "HuberLoss": (lambda: nn.HuberLoss(delta=0.5), "dense"),
    "BCEWithLogitsLoss": (nn.BCEWithLogitsLoss, "probabilities"),
}


def _on_both(make: Callable[[], nn.Module]) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    here = make()
    there = copy.deepcopy(here).to(device=DEVICE)
    return here, there


def _assert_same_gradients(here: nn.Module, there: nn.Module, what: str) -> None:
    for (name, mine), theirs in zip(there.named_parameters(), here.parameters(), strict=True):
        assert mine.grad.device == DEVICE or mine.grad.device.type == DEVICE.type
        assert_close(mine.grad.cpu(), theirs.grad, what=f"{what} {name}.grad")


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("name", list(MODULES))
def test_module_forward_and_backward_match_the_cpu(name: str, batch: int) -> None:
    here, there = _on_both(MODULES[name])
    if name == "BatchNorm1d" and batch == 1:
        batch = 2  # one sample has no batch variance in training mode
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 5, generator=generator, dtype=F64)
    expected = here(x)
    got = there(x.to(DEVICE))
    assert got.device.type == DEVICE.type
    assert_close(got.cpu(), expected, what=f"{name} forward")
    gradient = torch.randn(expected.shape, generator=generator, dtype=F64)
    expected_dx = here.backward(gradient)
    got_dx = there.backward(gradient.to(DEVICE))
    assert_close(got_dx.cpu(), expected_dx, what=f"{name} backward")
    _assert_same_gradients(here, there, name)
    for (key, mine), (_, theirs) in zip(there.named_buffers(), here.named_buffers(), strict=True):
        assert_close(mine.cpu().to(F64), theirs.to(F64), what=f"{name} buffer {key}")


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_and_its_gradient_match_the_cpu(name: str, batch: int) -> None:
    make, kind = LOSSES[name]
    generator = torch.Generator().manual_seed(2)
    prediction = torch.randn(batch, 3, generator=generator, dtype=F64)
    if kind == "indices":
        target = torch.randint(0, 3, (batch,), generator=generator)
    elif kind == "probabilities":
        target = torch.rand(batch, 3, generator=generator, dtype=F64)
    else:
        target = torch.randn(batch, 3, generator=generator, dtype=F64)
    here, there = make(), make()
    expected = here(prediction, target)
    got = there(prediction.to(DEVICE), target.to(DEVICE))
    assert got.device.type == DEVICE.type
    assert_close(got.cpu(), expected, what=f"{name} value")
    assert_close(there.backward().cpu(), here.backward(), what=f"{name} gradient")


def test_dropout_in_training_scales_what_it_keeps_and_its_backward_follows_the_mask() -> None:
    dropout = nn.Dropout(0.25)
    x = torch.rand(64, 16, dtype=F64, device=DEVICE) + 0.5  # no zeros of its own
    y = dropout(x)
    kept = y != 0
    assert 0 < int(kept.sum()) < x.numel()
    assert_close(y[kept].cpu(), (x[kept] / 0.75).cpu(), rtol=1e-15)
    gradient = torch.randn(64, 16, dtype=F64, device=DEVICE)
    expected = torch.where(kept, gradient / 0.75, 0.0)
    assert_close(dropout.backward(gradient).cpu(), expected.cpu(), rtol=1e-15)


def test_gradcheck_passes_on_the_device() -> None:
    torch.manual_seed(0)
    model = nn.mlp((3, 5, 2), "tanh", dtype=F64).to(device=DEVICE)
    x = torch.randn(4, 3, dtype=F64, device=DEVICE)
    assert gradcheck(model, x)


@pytest.mark.parametrize("layout", ["layer", "model"])
def test_a_stack_of_mixed_activations_matches_the_cpu(layout: str) -> None:
    """Stacked products (``BatchedLinear``, either parameter layout) and a
    ``StackedActivation`` writing each run into one output."""
    torch.manual_seed(3)
    models = [nn.mlp((2, 6, 5, 2), name, dtype=F64) for name in ("tanh", "tanh", "elu", "relu")]
    here = nn.stack_models(models, layout=layout)  # type: ignore[arg-type]
    there = copy.deepcopy(here).to(device=DEVICE)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(4, 9, 2, generator=generator, dtype=F64)
    expected = here(x)
    assert_close(there(x.to(DEVICE)).cpu(), expected, what="stack forward")
    gradient = torch.randn(expected.shape, generator=generator, dtype=F64)
    expected_dx = here.backward(gradient)
    assert_close(there.backward(gradient.to(DEVICE)).cpu(), expected_dx, what="stack backward")
    _assert_same_gradients(here, there, "stack")


def test_fit_rounds_on_the_device_equals_one_by_one_and_the_cpu() -> None:
    """Three models of mixed activations, trained at once on the device, end as each trained
    alone there (to 1e-12) and as the same rounds on the CPU (to 1e-10)."""
    datasets = [make_disk_data(120, 40, 10, seed=10 + r, dtype=F64) for r in range(3)]
    torch.manual_seed(5)
    start = [nn.mlp((2, 7, 5, 2), name, dtype=F64) for name in ("tanh", "relu", "tanh")]

    def rounds(device: torch.device) -> list[nn.Sequential]:
        models = [copy.deepcopy(m).to(device=device) for m in start]
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: optim.SGD(stack.parameters(), lr=0.1, momentum=0.9),
            [(d.train.x.to(device), d.train.y.to(device)) for d in datasets],
            epochs=4,
            batch_size=30,
            generators=[torch.Generator().manual_seed(20 + r) for r in range(3)],
            validation_sets=[
                (d.validation.x.to(device), d.validation.y.to(device)) for d in datasets
            ],
        )
        return models

    on_device, on_cpu = rounds(DEVICE), rounds(torch.device("cpu"))
    for r, (model, reference, data) in enumerate(zip(on_device, on_cpu, datasets, strict=True)):
        alone = copy.deepcopy(start[r]).to(device=DEVICE)
        fit(
            alone,
            nn.CrossEntropyLoss(),
            optim.SGD(alone.parameters(), lr=0.1, momentum=0.9),
            data.train.x.to(DEVICE),
            data.train.y.to(DEVICE),
            epochs=4,
            batch_size=30,
            generator=torch.Generator().manual_seed(20 + r),
        )
        for p, q, s in zip(
            model.parameters(), alone.parameters(), reference.parameters(), strict=True
        ):
            assert p.data.device.type == DEVICE.type
            assert_close(p.data.cpu(), q.data.cpu(), rtol=1e-12, what=f"model {r} vs alone")
            assert_close(p.data.cpu(), s.data, what=f"model {r} vs the CPU")


@pytest.mark.parametrize("flat", [False, True], ids=["by-layer", "flat"])
def test_fit_rounds_clips_each_model_on_the_device_as_fit_there(flat: bool) -> None:
    """max_grad_norm on the device (its masks, norms and coefficients made there, with a
    parameter outside the stack in each model's optimizer, its gradient kept from step to step,
    and one optimizer holding part of its model): each model ends as fit leaves it alone there (to 1e-12), beside a model whose
    inputs are 100 times larger, and as the same rounds on the CPU (to 1e-10)."""
    datasets = [make_disk_data(120, 40, 10, seed=30 + r, dtype=F64) for r in range(3)]
    scales = (1.0, 100.0, 1.0)
    torch.manual_seed(7)
    start = [nn.mlp((2, 7, 5, 2), "tanh", dtype=F64) for _ in range(3)]

    class KeepsLast(optim.SGD):
        """Leaves its last parameter's gradient as it is: only the clipping changes it."""

        def zero_grad(self) -> None:
            for parameter in self.params[:-1]:
                parameter.grad.zero_()

    def optimizer(r: int, parameters: list[nn.Parameter], extra: nn.Parameter) -> optim.SGD:
        held = parameters[:2] if r == 2 and not flat else parameters
        return KeepsLast([*held, extra], lr=0.2, momentum=0.9)

    def extras(device: torch.device) -> list[nn.Parameter]:
        made = [nn.Parameter(torch.ones(3, dtype=F64, device=device)) for _ in range(3)]
        for extra in made:
            extra.grad.fill_(0.03)
        return made

    def rounds(device: torch.device) -> tuple[list[nn.Sequential], list[nn.Parameter]]:
        models = [copy.deepcopy(m) for m in start]
        for model in models:
            model.to(device=device)  # (in place)
        own = extras(device)
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            PerModel(lambda r, parameters: optimizer(r, parameters, own[r]), flat=flat),
            [
                (d.train.x.to(device) * scale, d.train.y.to(device))
                for d, scale in zip(datasets, scales, strict=True)
            ],
            epochs=3,
            batch_size=30,
            generators=[torch.Generator().manual_seed(40 + r) for r in range(3)],
            max_grad_norm=0.05,
        )
        return models, own

    (on_device, device_extras), (on_cpu, cpu_extras) = rounds(DEVICE), rounds(torch.device("cpu"))
    alone_extras = extras(DEVICE)
    for r, (model, reference, data) in enumerate(zip(on_device, on_cpu, datasets, strict=True)):
        alone = copy.deepcopy(start[r]).to(device=DEVICE)
        fit(
            alone,
            nn.CrossEntropyLoss(),
            optimizer(r, list(alone.parameters()), alone_extras[r]),
            data.train.x.to(DEVICE) * scales[r],
            data.train.y.to(DEVICE),
            epochs=3,
            batch_size=30,
            generator=torch.Generator().manual_seed(40 + r),
            max_grad_norm=0.05,
        )
        pairs = [
            *zip(model.parameters(), alone.parameters(), reference.parameters(), strict=True),
            (device_extras[r], alone_extras[r], cpu_extras[r]),
        ]
        for p, q, s in pairs:
            for mine, theirs, cpu in ((p.data, q.data, s.data), (p.grad, q.grad, s.grad)):
                assert mine.device.type == DEVICE.type
                assert_close(mine.cpu(), theirs.cpu(), rtol=1e-12, what=f"model {r} vs alone")
                assert_close(mine.cpu(), cpu, what=f"model {r} vs the CPU")


def _training(device: torch.device) -> tuple[nn.Sequential, optim.Optimizer, optim.StepDecay]:
    """A network with a Dropout layer, whose masks are drawn from the device's default
    generator (seeded here, on every device, by ``torch.manual_seed``)."""
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Linear(2, 8, dtype=F64),
        nn.Tanh(),
        nn.Dropout(0.2),
        nn.Linear(8, 8, dtype=F64),
        nn.Tanh(),
        nn.Linear(8, 2, dtype=F64),
    ).to(device=device)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer, optim.StepDecay(optimizer, step_size=2, gamma=0.5)


def test_a_resumed_run_on_the_device_continues_bit_for_bit(tmp_path: Path) -> None:
    data = make_disk_data(160, 20, 10, seed=3, dtype=F64, device=DEVICE)

    def train(parts, epochs: int, generator: torch.Generator, **resume: object):  # type: ignore[no-untyped-def]
        return fit(
            parts[0],
            nn.CrossEntropyLoss(),
            parts[1],
            data.train.x,
            data.train.y,
            epochs=epochs,
            batch_size=32,
            scheduler=parts[2],
            validation=(data.validation.x, data.validation.y),
            generator=generator,
            **resume,  # type: ignore[arg-type]
        )

    whole = _training(DEVICE)
    whole_history = train(whole, 5, torch.Generator().manual_seed(0))

    first = _training(DEVICE)
    generator = torch.Generator().manual_seed(0)
    history = train(first, 2, generator)
    save_checkpoint(tmp_path / "run", *first, epoch=2, history=history, generator=generator)
    resumed = _training(DEVICE)
    generator = torch.Generator().manual_seed(99)
    state = load_checkpoint(tmp_path / "run", *resumed, generator=generator)
    assert all(p.data.device.type == DEVICE.type for p in resumed[0].parameters())
    if DEVICE.type == "cuda":  # the dropout masks continue from the saved generator state
        assert f"rng.cuda.{DEVICE.index or 0}" in read_checkpoint(tmp_path / "run").tensors
    resumed_history = train(resumed, 5, generator, start_epoch=state.epoch, history=state.history)
    assert resumed_history == whole_history
    for p, q in zip(resumed[0].parameters(), whole[0].parameters(), strict=True):
        assert torch.equal(p.data, q.data)
    for key, value in resumed[1].state_dict()["state"].items():
        assert torch.equal(value, whole[1].state_dict()["state"][key]), key

    # The device's checkpoint loads into a model on the CPU, with the same values.
    on_cpu = _training(torch.device("cpu"))[0]
    load_checkpoint(tmp_path / "run", on_cpu)
    for p, q in zip(on_cpu.parameters(), first[0].parameters(), strict=True):
        assert torch.equal(p.data, q.data.cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("layout", "widths"), CHAINS)
def test_a_planned_chain_on_the_device_computes_the_bits_of_its_children(
    layout: str, widths: list[int], dtype: torch.dtype
) -> None:
    """A plan runs the children's own operations, which on a GPU choose their kernels (and
    so the order of their sums) by shape and layout too: four steps of each chain, planned and
    never planned, give the same outputs, input gradients, parameter gradients and values, bit
    for bit, for batches of 100 and 4096, contiguous and transposed inputs, ``backward`` and
    ``backward_parameters``."""
    features = widths[0] if widths else 5
    generator = torch.Generator(device=DEVICE).manual_seed(2)
    for batch, transposed, with_input in itertools.product(
        [100, 4096], [False, True], [True, False]
    ):
        planned = _chain(layout, widths, dtype, seed=1).to(device=DEVICE)
        plain = copy.deepcopy(planned)
        plain._plannable = False
        shape = (features, batch) if transposed else (batch, features)
        x = torch.randn(shape, dtype=dtype, device=DEVICE, generator=generator)
        x = x.t() if transposed else x
        case = f"batch {batch}, transposed {transposed}, backward with input {with_input}"
        for step in range(4):
            y = planned(x)
            assert torch.equal(y, plain(x)), f"{case}, step {step}: output"
            grad = torch.randn(y.shape, dtype=dtype, device=DEVICE, generator=generator)
            if with_input:
                assert torch.equal(planned.backward(grad), plain.backward(grad)), case
            else:
                planned.backward_parameters(grad)
                plain.backward_parameters(grad)
            for p, q in zip(planned.parameters(), plain.parameters(), strict=True):
                assert torch.equal(p.grad, q.grad) and torch.equal(p.data, q.data), case
        assert planned._planned is not None and plain._planned is None, case


@pytest.mark.skipif(DEVICE.type != "cuda", reason="NCCL needs a CUDA device")
def test_data_parallel_over_nccl_of_one_rank_equals_plain_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One rank on NCCL: the broadcast, the all-reduce and the parameter checksum run on the
    GPU, and the run equals plain training on it."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    data = make_disk_data(120, 20, 10, seed=4, dtype=F64, device=DEVICE)
    runs = []
    for parallel in (False, True):
        torch.manual_seed(7)
        model = nn.mlp((2, 6, 2), "tanh", dtype=F64).to(device=DEVICE)
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        arguments = dict(epochs=3, batch_size=20, generator=torch.Generator().manual_seed(1))
        if parallel:
            with ProcessGroup(
                Launch(0, 1, DEVICE.index or 0), device="cuda", timeout=60.0
            ) as group:
                assert group.backend == "nccl"
                runner = DataParallel(model, group)
                fit(
                    model,
                    nn.CrossEntropyLoss(),
                    optimizer,
                    data.train.x,
                    data.train.y,
                    parallel=runner,
                    **arguments,
                )  # type: ignore[arg-type]
                runner.check_in_sync()
        else:
            fit(model, nn.CrossEntropyLoss(), optimizer, data.train.x, data.train.y, **arguments)  # type: ignore[arg-type]
        runs.append(model)
    for p, q in zip(runs[1].parameters(), runs[0].parameters(), strict=True):
        assert_close(p.data.cpu(), q.data.cpu(), rtol=1e-12)


def test_clip_grad_norm_and_value_on_the_device() -> None:
    """Clipping on the device, flat and per parameter, against torch's clipping there."""
    torch.manual_seed(0)
    for loose in (False, True):
        model = nn.mlp((5, 6, 3), "tanh", dtype=F64).to(device=DEVICE)
        parameters = list(model.parameters())
        for parameter in parameters:
            parameter.grad.normal_()
            if loose:
                grad = parameter.grad.clone()
                parameter.data = parameter.data.clone()
                parameter.grad = grad
        twins = []
        for parameter in parameters:
            twin = torch.nn.Parameter(parameter.data.clone())
            twin.grad = parameter.grad.clone()
            twins.append(twin)
        total = nn.clip_grad_norm_(parameters, 0.5)
        expected = torch.nn.utils.clip_grad_norm_(twins, 0.5)
        assert total.device == DEVICE or total.device.type == DEVICE.type
        assert_close(total.cpu(), expected.cpu(), rtol=1e-13)
        nn.clip_grad_value_(parameters, 0.01)
        torch.nn.utils.clip_grad_value_(twins, 0.01)
        for parameter, twin in zip(parameters, twins, strict=True):
            assert twin.grad is not None
            assert_close(parameter.grad.cpu(), twin.grad.cpu(), rtol=1e-13)


def test_init_on_the_device_gives_torch_bits() -> None:
    layer = nn.Linear(7, 5, dtype=F64).to(device=DEVICE)
    expected = torch.empty(5, 7, dtype=F64, device=DEVICE)
    generator = torch.Generator(device=DEVICE).manual_seed(3)
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
    torch.nn.init.kaiming_normal_(
        expected, nonlinearity="relu", generator=torch.Generator(device=DEVICE).manual_seed(3)
    )
    assert torch.equal(layer.weight.data, expected)
    if DEVICE.type != "cpu":  # a CPU generator for the device's tensor
        before = layer.weight.data.clone()
        with pytest.raises(ValueError, match=r"init.xavier_uniform_: the generator is on cpu"):
            nn.init.xavier_uniform_(layer.weight, generator=torch.Generator())
        assert torch.equal(layer.weight.data, before)
