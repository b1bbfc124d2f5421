"""Messages that name a user-given integer write one of more than 40 digits as its number of
digits (``minidl._validate.shown``): written whole, past 4300 digits Python refuses to write it
(``repr`` and f-strings raise their own ``ValueError``, "Exceeds the limit (4300 digits) for
integer string conversion", in place of the message), and below that hundreds of digits bury
the message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import nn, optim
from minidl._validate import shown
from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidl.cli import main
from minidl.data import BatchIterator, make_disk_data
from minidl.distributed import Launch, ShardedBatches
from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import TABLE_I, Protocol
from minidl.experiments.pool import train_groups
from minidl.experiments.runner import RunSettings
from minidl.experiments.training import train_row
from minidl.experiments.welch import welch
from minidl.gradcheck import gradcheck
from minidl.nn import model_parameters, stack_models
from minidl.nn.stacked_activation import StackedActivation
from minidl.rounds import PerModel, fit_rounds
from minidl.train import fit

#: An int of 5001 digits (Python writes none of more than 4300) and one of 60.
VALUES = {"5001 digits": 10**5000, "60 digits": 10**59}


def _sgd(dtype: torch.dtype = torch.float32) -> optim.SGD:
    return optim.SGD(nn.Linear(2, 2, dtype=dtype).parameters(), lr=0.1)


def _fit(**settings: Any) -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    arguments: dict[str, Any] = {"epochs": 1, "batch_size": 4, **settings}
    if arguments.pop("scheduled", False):
        arguments["scheduler"] = optim.OneCycle(optimizer, max_lr=0.1, total_steps=10)
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        torch.randn(8, 2),
        torch.zeros(8).long(),
        **arguments,
    )


def _fit_rounds(per_model: PerModel) -> None:
    models = [nn.Sequential(nn.Linear(2, 2)) for _ in range(2)]
    sets = [(torch.randn(4, 2), torch.zeros(4).long()) for _ in range(2)]
    fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        per_model,
        sets,
        epochs=1,
        generators=[torch.Generator() for _ in range(2)],
    )


def _stacked() -> nn.Sequential:
    return stack_models([nn.Sequential(nn.Linear(2, 2)) for _ in range(2)])


def _load_last_step(scheduler: optim.LRScheduler, step: int) -> None:
    scheduler.load_state_dict({"base_lr": 0.1, "last_step": step})


def _one_cycle_past(n: int) -> None:
    # (a schedule at step n, whose total_steps is then set below it)
    one_cycle = optim.OneCycle(_sgd(), max_lr=0.1, total_steps=10 * n)
    _load_last_step(one_cycle, n)
    one_cycle.total_steps = 10


def _sequential(n: int) -> optim.SequentialSchedule:
    optimizer = _sgd()
    parts = [optim.StepDecay(optimizer, step_size=1) for _ in range(3)]
    return optim.SequentialSchedule(optimizer, parts, milestones=[n, 1])


def _save(tmp: Path, **settings: Any) -> None:
    save_checkpoint(tmp / "run.ckpt", nn.Sequential(nn.Linear(2, 2)), **settings)


#: (what raises, given the int, or its negative where only that is refused; the error; a
#: fragment of its message; the one of VALUES that alone reaches the check, if any: one beyond
#: the range of a float is refused before some checks, one within it passes others)
SITES: dict[str, tuple[Callable[[int, Path], object], type[BaseException], str, str | None]] = {
    # data
    "make_disk_data dtype": (
        lambda n, _: make_disk_data(dtype=n),  # type: ignore[arg-type]
        TypeError,
        "make_disk_data: dtype must be torch.float16, torch.bfloat16, torch.float32 or torch.float64 (the dtypes minidl computes in), got ",
        None,
    ),
    "BatchIterator shuffle": (
        lambda n, _: BatchIterator(torch.zeros(4, 2), torch.zeros(4), 2, shuffle=n),  # type: ignore[arg-type]
        TypeError,
        "BatchIterator: shuffle must be a bool, got ",
        None,
    ),
    # checkpoint
    "save_checkpoint epoch": (
        lambda n, tmp: _save(tmp, epoch=-n),
        CheckpointError,
        "save_checkpoint: epoch must be an integer >= 0, got a negative",
        None,
    ),
    "save_checkpoint extra key": (
        lambda n, tmp: _save(tmp, extra={n: 1}),
        CheckpointError,
        "save_checkpoint: extra must be a mapping with string keys, got the key ",
        None,
    ),
    # distributed
    "Launch rank": (
        lambda n, _: Launch(world_size=2, rank=n, local_rank=0),
        ValueError,
        "Launch: rank must be in [0, 1] for world_size 2, got ",
        None,
    ),
    "Launch world_size": (
        lambda n, _: Launch(world_size=n, rank=n + 1, local_rank=0),
        ValueError,
        "Launch: rank must be in [0, ",
        None,
    ),
    "ShardedBatches rank": (
        lambda n, _: ShardedBatches(BatchIterator(torch.zeros(4, 2), torch.zeros(4), 2), n, 2),
        ValueError,
        "ShardedBatches: rank must be in [0, 1], got ",
        None,
    ),
    "ShardedBatches world_size": (
        lambda n, _: ShardedBatches(BatchIterator(torch.zeros(4, 2), torch.zeros(4), 3), 0, n),
        ValueError,
        "ShardedBatches: the batch size 3 is not divisible by the world size ",
        None,
    ),
    "ShardedBatches batch size": (
        lambda n, _: ShardedBatches(BatchIterator(torch.zeros(1, 2), torch.zeros(1), n), 0, 2),
        ValueError,
        "ShardedBatches: the last batch of every epoch holds 1 samples (1 samples, batches of ",
        None,
    ),
    # gradcheck
    "gradcheck raise_exception": (
        lambda n, _: gradcheck(
            nn.Linear(2, 2, dtype=torch.float64),
            torch.zeros(1, 2, dtype=torch.float64),
            raise_exception=n,  # type: ignore[arg-type]
        ),
        TypeError,
        "gradcheck: raise_exception must be a bool, got ",
        None,
    ),
    # rounds, train
    "fit_rounds PerModel.flat": (
        lambda n, _: _fit_rounds(PerModel(lambda g, p: optim.SGD(p, lr=0.1), flat=n)),  # type: ignore[arg-type]
        TypeError,
        "fit_rounds: PerModel.flat must be a bool, got ",
        None,
    ),
    "fit_rounds PerModel.group": (
        lambda n, _: _fit_rounds(PerModel(lambda g, p: optim.SGD(p, lr=0.1), group=n)),
        ValueError,
        "fit_rounds: PerModel.group must be a divisor of the number of models (2), got ",
        None,
    ),
    "fit epochs past the step limit": (
        lambda n, _: _fit(epochs=n, scheduled=True),
        ValueError,
        "fit: the scheduler OneCycle has rates up to step 10 and is at step 0, but ",
        None,
    ),
    "fit start_epoch": (
        lambda n, _: _fit(start_epoch=n),
        ValueError,
        "fit: start_epoch ",
        None,
    ),
    "fit drop_last": (
        lambda n, _: _fit(drop_last=n),
        TypeError,
        "fit: drop_last must be a bool, got ",
        None,
    ),
    "fit batch_size with drop_last": (
        lambda n, _: _fit(drop_last=True, batch_size=n),
        ValueError,
        "fit: with drop_last, batches of ",
        None,
    ),
    # nn
    "BatchedLinear.model": (
        lambda n, _: nn.BatchedLinear(2, 2, 2).model(n),
        IndexError,
        "BatchedLinear.model: index ",
        None,
    ),
    "StackedActivation.activation_of": (
        lambda n, _: StackedActivation([(nn.ReLU(), 2)]).activation_of(n),
        IndexError,
        "StackedActivation: index ",
        None,
    ),
    "model_parameters index": (
        lambda n, _: model_parameters(_stacked(), n),
        IndexError,
        "model_parameters: index ",
        None,
    ),
    "model_parameters slice": (
        lambda n, _: model_parameters(_stacked(), slice(0, n, n)),
        IndexError,
        "model_parameters: expected a non-empty slice of step 1 within 2 models, got slice(0, ",
        None,
    ),
    "Sequential index": (
        lambda n, _: nn.Sequential(nn.ReLU())[n],
        IndexError,
        "Sequential: index ",
        None,
    ),
    "Sequential del": (
        lambda n, _: nn.Sequential(nn.ReLU()).__delitem__(slice(n, None)),
        TypeError,
        "got del model[",
        None,
    ),
    "Sequential pop": (
        lambda n, _: nn.Sequential(nn.ReLU()).pop(n),
        TypeError,
        "got pop(",
        None,
    ),
    "kaiming_uniform_ mode": (
        lambda n, _: nn.init.kaiming_uniform_(torch.empty(2, 2), mode=n),  # type: ignore[arg-type]
        ValueError,
        "kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got ",
        None,
    ),
    "kaiming_uniform_ nonlinearity": (
        lambda n, _: nn.init.kaiming_uniform_(torch.empty(2, 2), nonlinearity=n),  # type: ignore[arg-type]
        ValueError,
        "kaiming_uniform_: nonlinearity must be one of ",
        None,
    ),
    "BatchNorm1d affine": (
        lambda n, _: nn.BatchNorm1d(2, affine=n),  # type: ignore[arg-type]
        TypeError,
        "BatchNorm1d: affine must be a bool, got ",
        None,
    ),
    "BatchNorm1d track_running_stats": (
        lambda n, _: nn.BatchNorm1d(2, track_running_stats=n),  # type: ignore[arg-type]
        TypeError,
        "BatchNorm1d: track_running_stats must be True or False, got ",
        None,
    ),
    "clip_grad_norm_ error_if_nonfinite": (
        lambda n, _: nn.clip_grad_norm_(
            nn.Linear(2, 2).parameters(),
            1.0,
            error_if_nonfinite=n,  # type: ignore[arg-type]
        ),
        TypeError,
        "clip_grad_norm_: error_if_nonfinite must be a bool, got int ",
        None,
    ),
    "Module.apply": (
        lambda n, _: nn.Linear(2, 2).apply(n),  # type: ignore[arg-type]
        TypeError,
        "Linear.apply: fn must be callable, got ",
        None,
    ),
    "Module.train": (
        lambda n, _: nn.Linear(2, 2).train(n),  # type: ignore[arg-type]
        TypeError,
        "Linear.train: mode must be True or False, got ",
        None,
    ),
    "Module.load_state_dict strict": (
        lambda n, _: nn.Linear(2, 2).load_state_dict({}, strict=n),  # type: ignore[arg-type]
        TypeError,
        "Linear.load_state_dict: strict must be True or False, got ",
        None,
    ),
    # optim
    "SGD nesterov": (
        lambda n, _: optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, nesterov=n),  # type: ignore[arg-type]
        TypeError,
        "SGD: nesterov must be a bool, got ",
        None,
    ),
    "RMSprop centered": (
        lambda n, _: optim.RMSprop(nn.Linear(2, 2).parameters(), centered=n),  # type: ignore[arg-type]
        TypeError,
        "RMSprop: centered must be a bool, got ",
        None,
    ),
    "Adam betas": (
        lambda n, _: optim.Adam(nn.Linear(2, 2).parameters(), betas=(n,)),  # type: ignore[arg-type]
        ValueError,
        "Adam: betas must be a pair of numbers in [0, 1)",
        None,
    ),
    "CyclicLR mode": (
        lambda n, _: optim.CyclicLR(_sgd(), 0.01, 0.1, 2, mode=n),  # type: ignore[arg-type]
        ValueError,
        "CyclicLR: mode must be 'triangular', 'triangular2' or 'exp_range', got ",
        None,
    ),
    "OneCycle anneal_strategy": (
        lambda n, _: optim.OneCycle(_sgd(), max_lr=0.1, total_steps=10, anneal_strategy=n),  # type: ignore[arg-type]
        ValueError,
        "OneCycle: anneal_strategy must be 'cos' or 'linear', got ",
        None,
    ),
    "OneCycle total_steps beyond a float": (
        lambda n, _: optim.OneCycle(_sgd(), max_lr=0.1, total_steps=n),
        ValueError,
        "OneCycle: total_steps must be at most 1.79769e+308 (the largest float), got ",
        "5001 digits",
    ),
    "OneCycle pct_start * total_steps": (
        lambda n, _: optim.OneCycle(_sgd(), max_lr=0.1, total_steps=n + 1, pct_start=1 / (n + 1)),
        ValueError,
        "OneCycle: pct_start * total_steps - 1 = 0 (pct_start=1e-59, total_steps=",
        "60 digits",
    ),
    "OneCycle.lr_at": (
        lambda n, _: optim.OneCycle(_sgd(), max_lr=0.1, total_steps=10).lr_at(n),
        ValueError,
        "OneCycle: step ",
        None,
    ),
    "OneCycle.load_state_dict last_step": (
        lambda n, _: _load_last_step(optim.OneCycle(_sgd(), max_lr=0.1, total_steps=10), n),
        ValueError,
        "OneCycle.load_state_dict: last_step ",
        None,
    ),
    "OneCycle total_steps below last_step": (
        lambda n, _: _one_cycle_past(n),
        ValueError,
        "OneCycle: with total_steps=10 the last step would be 10 (its step_limit), "
        "before the current step ",
        "60 digits",
    ),
    "CosineAnnealing.load_state_dict step beyond a float": (
        lambda n, _: _load_last_step(optim.CosineAnnealing(_sgd(), T_max=10), n),
        ValueError,
        "CosineAnnealing.load_state_dict: the rate of step ",
        "5001 digits",
    ),
    "StepDecay interval": (
        lambda n, _: optim.CosineAnnealing(_sgd(), T_max=10, interval=n),  # type: ignore[arg-type]
        ValueError,
        "CosineAnnealing: interval must be 'epoch' or 'batch', got ",
        None,
    ),
    "SequentialSchedule milestones": (
        lambda n, _: _sequential(n),
        ValueError,
        "SequentialSchedule: milestones must be strictly increasing integers >= 1, got [",
        None,
    ),
    # experiments
    "train_row rounds": (
        lambda n, _: train_row(TABLE_I[0], -n, 0),
        ValueError,
        "train_row: rounds must be an integer >= 1, got a negative",
        None,
    ),
    "train_rows_batched rounds": (
        lambda n, _: train_rows_batched(TABLE_I[:1], -n, 0),
        ValueError,
        "train_rows_batched: rounds must be an integer >= 1, got a negative",
        None,
    ),
    "train_groups jobs": (
        lambda n, _: train_groups([TABLE_I[:1]], 1, 0, jobs=-n, train=train_rows_batched),
        ValueError,
        "train_groups: jobs must be an integer >= 1, got a negative",
        None,
    ),
    "Protocol shuffle_each_epoch": (
        lambda n, _: Protocol(shuffle_each_epoch=n),  # type: ignore[arg-type]
        ValueError,
        "Protocol: shuffle_each_epoch must be True",
        None,
    ),
    "RunSettings quick": (
        lambda n, _: RunSettings(
            rounds=1,
            base_seed=0,
            tables="1",
            quick=n,
            epochs_override=None,
            command="",  # type: ignore[arg-type]
        ),
        TypeError,
        "RunSettings: quick must be True or False, got ",
        None,
    ),
    "welch n_1": (
        lambda n, _: welch(1.0, 1.0, -n, 1.0, 1.0, 5),
        ValueError,
        "welch: n_1 must be an integer >= 2, got a negative",
        None,
    ),
}


@pytest.mark.parametrize(
    ("site", "digits"),
    [
        (site, digits)
        for site, case in SITES.items()
        for digits in VALUES
        if case[3] in (None, digits)
    ],
)
def test_a_huge_integer_is_named_by_its_number_of_digits(
    site: str, digits: str, tmp_path: Path
) -> None:
    """Each site with each size that reaches its check (some checks see only one of them)."""
    make, kind, fragment, _ = SITES[site]
    value = VALUES[digits]
    with pytest.raises(kind) as info:
        make(value, tmp_path)
    message = str(info.value)
    assert fragment in message, message
    # (the message's own words, not Python's "Exceeds the limit (4300 digits) for integer
    # string conversion"; neither are 60 digits written whole)
    assert f"int of {digits.split(maxsplit=1)[0]} digits" in message, message
    assert "0" * 41 not in message, message


def test_shown_writes_a_tuple_or_list_item_by_item() -> None:
    for value in ((), [], (1,), (0.9, 0.999), [1, "a", (2, 3)], (10**40 - 1,)):
        assert shown(value) == repr(value)
    assert shown((0.9, 10**5000)) == "(0.9, an int of 5001 digits)"
    assert shown((10**59,)) == "(an int of 60 digits,)"
    assert shown([1, [-(10**40)]]) == "[1, [a negative int of 41 digits]]"


#: Digits typed on the command line: of more than Python converts from text, and of 60.
TEXTS = {"5001 digits": "1" + "0" * 5000, "60 digits": "1" + "0" * 59}


COMMAND_LINES = [
    (["--epochs", "-{}"], "argument --epochs: expected an integer >= 0, got a negative int"),
    (["--epochs", "{}"], "argument --epochs: expected an integer >= 0, got an int"),
    (["--batch-size", "-{}"], "argument --batch-size: expected a positive integer, got a "),
    (["--log-every", "-{}"], "argument --log-every: expected a positive integer, got a "),
    (["--seed", "{}"], "argument --seed: expected an integer in [-9223372036854775808, "),
    (["--hidden", "2,{}"], "--hidden 2,an int of"),
    (["--checkpoint-every", "{}"], "--checkpoint-every an int of"),
]


@pytest.mark.parametrize(
    ("arguments", "expected", "digits"),
    [
        (arguments, expected, digits)
        for arguments, expected in COMMAND_LINES
        for digits in TEXTS
        # (60 digits of epochs are taken: the training would run)
        if not (digits == "60 digits" and arguments == ["--epochs", "{}"])
    ],
)
def test_the_command_line_names_a_huge_integer_by_its_number_of_digits(
    arguments: list[str], expected: str, digits: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One ``error:`` line naming the flag and the number of digits: past 4300 digits ``int``
    raised the ``ValueError`` of an integer of too many digits, which the flag took for no
    integer at all ("expected an integer >= 0, got '1000...'", all 5001 digits quoted)."""
    text = TEXTS[digits]
    if digits == "5001 digits" and arguments[0] in ("--hidden", "--checkpoint-every"):
        expected = f"argument {arguments[0]}: expected "
    try:  # (argparse exits; a refusal after the parsing is returned)
        code = main(["train", "--quiet", *(part.format(text) for part in arguments)])
    except SystemExit as exit_info:
        code = exit_info.code  # type: ignore[assignment]
    assert code == 2
    error = capsys.readouterr().err
    last = error.rstrip("\n").splitlines()[-1]
    assert expected in last, last
    assert f"int of {digits}" in last, last
    assert error.count("error:") == 1 and "0" * 41 not in error, error
    if digits == "5001 digits":
        assert last.endswith("(more than Python converts from text: 4300)"), last


def test_the_command_line_reads_an_integer_with_leading_zeros_past_python_s_limit() -> None:
    """``int`` refuses 5001 digits even when 5000 of them are leading zeros; the number they
    write is 3."""
    from minidl.cli import _non_negative_int, _positive_int, _seed, _sizes

    zeros = "0" * 5000
    assert _non_negative_int(zeros + "3") == 3 == _positive_int(f" +{zeros}3 ")
    assert _seed(f"-{zeros}3") == -3 and _non_negative_int(zeros + "0") == 0
    assert _sizes(f"2,{zeros}25") == (2, 25)


@pytest.mark.parametrize("digits", VALUES)
def test_the_command_line_s_other_messages_name_a_huge_integer_by_its_number_of_digits(
    digits: str,
) -> None:
    """The refusal of a --batch-size the processes of a launch cannot split, and a setting
    written as typed (the refusal of a --resume with other settings)."""
    from minidl.cli import _as_typed, _check_batches_split

    value = VALUES[digits]
    with pytest.raises(ValueError) as info:
        _check_batches_split(value + 1, 1000, 2)  # (odd: not divisible by 2 processes)
    assert str(info.value).startswith(f"--batch-size an int of {digits} is not divisible by")
    assert _as_typed([2, value, 2]) == f"2,an int of {digits},2"
    assert _as_typed(value) == f"an int of {digits}" and _as_typed([25, 25]) == "25,25"


def _schedules(steps: int) -> dict[str, Callable[[optim.Optimizer], optim.LRScheduler]]:
    """A schedule of each kind with an integer setting of ``steps``, taken as given."""
    return {
        "StepDecay": lambda o: optim.StepDecay(o, step_size=steps),
        "CyclicLR": lambda o: optim.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=steps),
        "CosineAnnealingWarmRestarts": lambda o: optim.CosineAnnealingWarmRestarts(
            o, T_0=2, T_mult=steps
        ),
        "LinearWarmup": lambda o: optim.LinearWarmup(o, warmup_steps=steps),
        "SequentialSchedule": lambda o: optim.SequentialSchedule(
            o, [optim.StepDecay(o, step_size=1), optim.StepDecay(o, step_size=1)], [steps]
        ),
    }


@pytest.mark.parametrize("name", list(_schedules(1)))
def test_a_schedule_s_repr_writes_a_setting_of_5001_digits_whole_in_hexadecimal(
    name: str,
) -> None:
    """A schedule took a step setting of more than 4300 digits, then its repr raised Python's
    ValueError ("Exceeds the limit (4300 digits) for integer string conversion"), and so did
    save_checkpoint, which records it. Written whole (in hexadecimal), not shortened as a
    message would: checkpoints compare schedules by their repr."""
    huge = VALUES["5001 digits"]
    written = repr(_schedules(huge)[name](_sgd()))
    assert f"{hex(huge)}" in written and len(written) < 2 * len(hex(huge)) + 200
    assert repr(_schedules(huge + 1)[name](_sgd())) != written
    assert str(10**59) in repr(_schedules(10**59)[name](_sgd()))  # (in decimal, as before)


def test_a_checkpoint_of_a_schedule_with_a_setting_of_5001_digits_loads_into_that_one_only(
    tmp_path: Path,
) -> None:
    huge = VALUES["5001 digits"]

    def parts(steps: int) -> tuple[nn.Linear, optim.SGD, optim.StepDecay]:
        model = nn.Linear(2, 2)
        optimizer = optim.SGD(model.parameters(), lr=0.1)
        return model, optimizer, optim.StepDecay(optimizer, step_size=steps)

    path = tmp_path / "run.safetensors"
    save_checkpoint(path, *parts(huge))
    load_checkpoint(path, *parts(huge))
    with pytest.raises(CheckpointError, match="the checkpoint is for another scheduler"):
        load_checkpoint(path, *parts(huge + 1))


@pytest.mark.parametrize(
    "make",
    [
        lambda o: optim.CosineAnnealing(o, 10),
        lambda o: optim.StepDecay(o, 3),
        lambda o: optim.ExponentialDecay(o, 0.5),
        lambda o: optim.CyclicLR(o, 0.01, 0.1, 5),
        lambda o: optim.CosineAnnealingWarmRestarts(o, 2, T_mult=2),
        lambda o: optim.SequentialSchedule(
            o, [optim.LinearWarmup(o, 2), optim.CosineAnnealing(o, 4)], [2]
        ),
    ],
)
def test_lr_at_names_a_step_past_a_floats_range(make: Callable[[optim.Optimizer], Any]) -> None:
    """``lr_at(10**400)`` raised Python's OverflowError ("int too large to convert to float")
    where ``step()`` refuses the same step by name: a ValueError in the schedule's words, the
    schedule as it was and its rates as before."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    schedule = make(optimizer)
    state, rate = schedule.state_dict(), schedule.lr_at(3)
    name = type(schedule).__name__
    with pytest.raises(
        ValueError,
        match=rf"^{name}\.lr_at: the rate of step an int of 401 digits cannot be computed "
        r"\([^;]+\); expected a step within the range of a float$",
    ):
        schedule.lr_at(10**400)
    assert schedule.state_dict() == state and schedule.lr_at(3) == rate
