"""Behaviour of ``minidl.cli`` that a fourth mutation audit found unchecked: each test pins one
result against its oracle (the exact message, the documented rule, the state left). The
comment above each test names the mutant it kills."""

from __future__ import annotations

import os
import re

import pytest

from minidl import cli
from minidl.cli import build_parser, main


def _settings(*flags: str) -> dict[str, object]:
    """The settings that ``minidl train FLAGS`` records in its checkpoints."""
    return cli._train_settings(build_parser().parse_args(["train", *flags]))


# (kills m22)
def test_a_checkpoint_without_detect_anomaly_differing_elsewhere_gives_no_anomaly_reason() -> None:
    """A checkpoint written before --detect-anomaly was recorded ran without it (taken as off):
    resumed without it, only the setting that differs is named, with no word of
    --detect-anomaly's folding."""
    saved = _settings("--lr", "0.5")
    del saved["detect_anomaly"]
    with pytest.raises(ValueError) as info:
        cli._check_resume_settings("run.ckpt", saved, _settings())
    assert str(info.value) == (
        "--resume run.ckpt: the checkpoint was made with other settings: "
        "--lr 0.5 in the checkpoint, 0.01 now"
    )


# (kills m18)
def test_activations_that_differ_after_the_first_layer_are_refused() -> None:
    """``relu,tanh,relu`` is not ``relu`` (only a list of one name repeated is)."""
    cli._check_resume_settings(
        "run.ckpt", _settings("--activation", "relu"), _settings("--activation", "relu,relu,relu")
    )
    saved = _settings("--activation", "relu,tanh,relu")
    for now in ("relu", "relu,relu,relu"):
        with pytest.raises(
            ValueError, match=re.escape(f"--activation relu,tanh,relu in the checkpoint, {now} now")
        ):
            cli._check_resume_settings("run.ckpt", saved, _settings("--activation", now))


def _sgd(momentum: float = 0.0) -> object:
    import torch

    from minidl.nn import Parameter
    from minidl.optim import SGD

    return SGD([Parameter(torch.zeros(2))], lr=0.01, momentum=momentum)


# (kills m17)
def test_a_hyperparameter_without_a_flag_is_said_to_have_none() -> None:
    saved = {
        "class": "SGD",
        "lr": 0.01,
        "hyperparameters": {"momentum": 0.5, "weight_decay": 0.0, "nesterov": True},
    }
    with pytest.raises(ValueError) as info:
        cli._check_resume_hyperparameters("run.ckpt", saved, _sgd(0.5), 0.01)
    assert str(info.value) == (
        "--resume run.ckpt: the checkpoint's optimizer has other settings than these flags "
        "(changed during the run that saved it?): nesterov on in the checkpoint's SGD, off now "
        "(minidl train has no flag for it)"
    )


# (kills m63)
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rho", "0"], "--rho applies to --optimizer adadelta only"),
        (["--rho", "0", "--eps", "1"], "--rho applies to --optimizer adadelta only"),
        (
            ["--optimizer", "adadelta", "--momentum", "0.1"],
            "--momentum applies to --optimizer sgd only",
        ),
    ],
)
def test_a_flag_of_the_other_optimizer_is_refused_whatever_its_value(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--rho 0`` (a value that is false) is still given: refused with sgd, as 0.5 is."""
    assert main(["train", "--epochs", "0", "--hidden", "3", *argv]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"minidl train: error: {message}\n")


# (kills m39)
def test_a_machine_whose_memory_is_unknown_refuses_no_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """os.sysconf gives -1 for a count it does not know: memory <= 0 is no limit."""
    for pages in (-1, 0):
        known = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": pages}
        monkeypatch.setattr(os, "sysconf", known.__getitem__)
        assert cli._check_network_fits((25, 25, 25), "float64") is None


# (kills m48)
@pytest.mark.parametrize(("rank", "prefix"), [(0, ""), (1, "rank 1: ")])
def test_an_anomaly_on_a_rank_other_than_0_names_the_rank(
    rank: int, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each rank checks its own shards: the anomaly line of a rank other than 0 names it."""
    import minidl.distributed
    import minidl.train
    from minidl.anomaly import AnomalyError

    class Group:
        world_size = 1

    group = Group()
    group.rank = rank  # type: ignore[attr-defined]

    class Parallel:
        def __init__(self, model: object, group: object) -> None:
            pass

    error = AnomalyError.__new__(AnomalyError)
    RuntimeError.__init__(error, "Sequential[1]: Tanh forward output holds nan")

    def fit(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(minidl.distributed, "DataParallel", Parallel)
    monkeypatch.setattr(minidl.train, "fit", fit)
    args = build_parser().parse_args(["train", "--hidden", "3", "--quiet"])
    args.process_group = group
    args.silent_rank = rank != 0
    assert cli._run_train(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"minidl train: {prefix}anomaly detected: {error}\n"
