"""Bad input at the command line, in checkpoints, in the training loop and in anomaly detection:
each case checks the exception type (or the exit code) and that the message names what was
wrong; a refused checkpoint leaves the model, optimizer, scheduler and generators unchanged.

The core's module, loss, optimizer, scheduler and data-set arguments are in ``test_errors.py``.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save as safetensors_save
from torch import Tensor

from minidl import nn, optim
from minidl.anomaly import detect_anomaly
from minidl.checkpoint import (
    CheckpointError,
    _canonical,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from minidl.cli import main
from minidl.data import BatchIterator
from minidl.optim.lr_scheduler import LRScheduler
from minidl.train import History, error_rate, fit
from tests.helpers import rewrite_checkpoint as rewrite


@contextmanager
def raises(kind: type[BaseException], *fragments: str) -> Iterator[None]:
    """Expect ``kind`` with every fragment in its message (case-sensitive substrings)."""
    with pytest.raises(kind) as info:
        yield
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message {message!r}"


# -- the command line ----------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``minidl`` in this process and return its exit code and standard error."""
    try:
        code = main(args)
    except SystemExit as exit:
        if isinstance(exit.code, str):  # SystemExit("message") prints the message, exits 1
            return 1, capsys.readouterr().err + exit.code
        code = int(exit.code or 0)
    return code, capsys.readouterr().err


TRAIN = ["train", "--epochs", "1", "--hidden", "4", "--quiet"]

CLI_CASES = [
    (
        ["--activation", "swish"],
        ["unknown activation 'swish'", "elu, gelu, gelutanh, leakyrelu, relu, selu"],
    ),
    (["--activation", "relu,tanh"], ["--activation gives 2 names for 1 hidden layer;"]),
    (["--hidden", "8,x"], ["--hidden", "'8,x'", "comma-separated positive integers"]),
    (["--hidden", "0"], ["--hidden", "positive widths", "'0'"]),
    (["--hidden", ""], ["--hidden", "''"]),
    (["--epochs", "-3"], ["--epochs", "integer >= 0", "-3"]),
    (["--epochs", "ten"], ["--epochs", "'ten'"]),
    (["--batch-size", "0"], ["--batch-size", "positive integer", "0"]),
    (["--batch-size", "2.5"], ["--batch-size", "'2.5'"]),
    (["--lr", "-1"], ["--lr", "[0, inf)", "'-1'"]),
    (["--lr", "nan"], ["--lr", "finite", "'nan'"]),
    (["--lr", "inf"], ["--lr", "finite", "'inf'"]),
    (["--lr", "abc"], ["--lr", "'abc'"]),
    (["--optimizer", "adadelta", "--lr", "-0.5"], ["--lr", "'-0.5'"]),
    (["--momentum", "1.5"], ["--momentum", "[0, 1)", "'1.5'"]),
    (["--momentum", "-0.1"], ["--momentum", "'-0.1'"]),
    (["--optimizer", "adadelta", "--momentum", "0.5"], ["--momentum", "sgd only"]),
    (["--optimizer", "adam"], ["--optimizer", "'adam'", "'sgd', 'adadelta'"]),
    (["--scheduler", "cosine"], ["--scheduler", "'cosine'", "'step'", "'clr'"]),
    (["--loss", "hinge"], ["--loss", "'hinge'", "'cross-entropy', 'mse'"]),
    (["--dtype", "float16"], ["--dtype", "'float16'", "'float32', 'float64'"]),
    (["--seed", "1.5"], ["--seed", "'1.5'"]),
    (["--log-every", "0"], ["--log-every", "positive integer"]),
    (["--hidden", "25,0,25"], ["--hidden", "expected positive widths", "'25,0,25'"]),
    (["--checkpoint-every", "0"], ["--checkpoint-every", "positive integer", "0"]),
    (["--checkpoint-every", "x"], ["--checkpoint-every", "'x'"]),
    (["--checkpoint", "/no/such/folder/run.ckpt"], ["--checkpoint", "existing folder"]),
    (["--resume", "/no/such/run.ckpt"], ["--resume /no/such/run.ckpt: cannot be read"]),
]


@pytest.mark.parametrize(
    ("args", "fragments"), CLI_CASES, ids=[" ".join(case[0]) or "empty" for case in CLI_CASES]
)
def test_cli_bad_flags(
    args: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, errors = run_cli([*TRAIN, *args], capsys)
    assert code == 2  # (two of them used to exit with 1, and no "error:")
    assert errors.startswith("minidl train: error: ") or "minidl train: error: " in errors
    for fragment in fragments:
        assert fragment in errors, f"{fragment!r} not in {errors!r}"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["train", "a\nb"], "minidl: error: unrecognized arguments: 'a\\nb'"),
        (
            ["train", "--bogus=a\rb", "c"],
            "minidl: error: unrecognized arguments: '--bogus=a\\rb' c",
        ),
        (["train", "\x1e"], "minidl: error: unrecognized arguments: '\\x1e'"),
        (["train", "\udc80"], "minidl: error: unrecognized arguments: '\\udc80'"),
        (
            ["train", "--d=\n"],
            "minidl train: error: ambiguous option: '--d=\\n' could match --dtype, "
            "--detect-anomaly, --dist-timeout",
        ),
    ],
    ids=["newline", "carriage return", "record separator", "no UTF-8", "ambiguous"],
)
def test_cli_quotes_an_argument_that_is_not_printable_in_its_one_line(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown argument or an ambiguous option holding a character that is not printable (a
    newline, a byte of the command line that is no UTF-8) is quoted as repr quotes it, as
    argparse quotes an invalid choice and as the messages quote a path: written as it was, it
    split the error in two lines (or, a byte that is no UTF-8, was written as the stream's
    errors handler could)."""
    code, errors = run_cli(argv, capsys)
    assert code == 2
    assert errors.splitlines()[-1] == line and errors.endswith(line + "\n"), errors


def test_cli_checkpoint_path_that_is_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, errors = run_cli([*TRAIN, "--checkpoint", str(tmp_path)], capsys)
    assert code == 2
    assert "existing folder" in errors
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def saved_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "run.ckpt"
    assert main([*TRAIN, "--epochs", "3", "--checkpoint", str(path)]) == 0
    capsys.readouterr()
    return path


RESUME_CASES = [
    (["--hidden", "5,3"], ["other settings", "--hidden 4 in the checkpoint, 5,3 now"]),
    (["--activation", "relu"], ["other settings", "--activation tanh in the checkpoint, relu now"]),
    (["--lr", "0.1"], ["other settings", "--lr 0.01 in the checkpoint, 0.1 now"]),
    (["--seed", "7"], ["other settings", "--seed 0 in the checkpoint, 7 now"]),
    (
        ["--max-grad-norm", "0.5"],
        ["other settings", "--max-grad-norm none (no clipping) in the checkpoint, 0.5 now"],
    ),
    (["--batch-size", "50"], ["other settings", "--batch-size"]),
    (["--epochs", "2"], ["the checkpoint is at epoch 3, past --epochs 2"]),
    (
        ["--detect-anomaly"],
        ["other settings", "--detect-anomaly off in the checkpoint, on now", "not folded"],
    ),
]


def test_cli_resumes_a_finished_run(saved_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint at epoch 3 resumed with --epochs 3: nothing is left to train, and the run
    ends with the saved model's errors."""
    not_quiet = [arg for arg in TRAIN if arg != "--quiet"]
    assert main([*not_quiet, "--epochs", "3", "--resume", str(saved_run)]) == 0
    output = capsys.readouterr().out
    assert f"resumed from {saved_run} at epoch 3" in output
    assert "final test error" in output


@pytest.mark.parametrize(("args", "fragments"), RESUME_CASES)
def test_cli_resume_with_other_settings(
    saved_run: Path, args: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = saved_run.read_bytes()
    code, errors = run_cli([*TRAIN, "--epochs", "5", "--resume", str(saved_run), *args], capsys)
    assert code == 2
    for fragment in fragments:
        assert fragment in errors, f"{fragment!r} not in {errors!r}"
    assert saved_run.read_bytes() == before


def test_a_checkpoint_from_before_detect_anomaly_was_recorded_resumes_without_it(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints of earlier versions hold no ``detect_anomaly`` setting: taken as off, so such
    a run resumes without the flag and is refused with it, naming both values."""

    def drop(header: dict[str, Any]) -> None:
        del header["training"]["extra"]["settings"]["detect_anomaly"]

    rewrite(saved_run, header=drop)
    settings = read_checkpoint(saved_run).training.extra["settings"]
    assert "detect_anomaly" not in settings and "seed" in settings
    code, errors = run_cli(
        [*TRAIN, "--epochs", "5", "--resume", str(saved_run), "--detect-anomaly"], capsys
    )
    assert code == 2
    assert "--detect-anomaly off in the checkpoint, on now" in errors
    assert main([*TRAIN, "--epochs", "4", "--resume", str(saved_run)]) == 0


def test_a_checkpoint_of_a_train_that_seeded_every_stream_with_seed_is_not_resumed(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Earlier versions of minidl train drew the data, the weights and the shuffles from --seed
    itself; this one derives a seed for each (round_seeds(seed, 0)). A checkpoint of theirs,
    which records no "seeds", resumed, would train on other data than it began with: refused,
    saying why; one of this version resumes."""

    def drop(header: dict[str, Any]) -> None:
        del header["training"]["extra"]["settings"]["seeds"]

    assert read_checkpoint(saved_run).training.extra["settings"]["seeds"] == "derived"
    before = saved_run.read_bytes()
    rewrite(saved_run, header=drop)
    code, errors = run_cli([*TRAIN, "--epochs", "4", "--resume", str(saved_run)], capsys)
    assert code == 2
    assert re.search(
        r"--resume .*: the checkpoint was made by an earlier minidl train, which seeded the "
        r"data, the initial weights and the shuffles with --seed itself, where this version "
        r"derives a seed for each from it \(see --seed in minidl train --help\): the resumed "
        r"run would train on other data than the run it resumes",
        errors,
    )
    saved_run.write_bytes(before)
    assert main([*TRAIN, "--epochs", "4", "--resume", str(saved_run)]) == 0


def test_resume_settings_missing_from_the_checkpoint_are_named() -> None:
    from minidl.cli import _check_resume_settings

    with raises(
        ValueError, "--resume r.ckpt", "--momentum (not recorded) in the checkpoint, 0.9 now"
    ):
        _check_resume_settings("r.ckpt", {"lr": 0.1}, {"lr": 0.1, "momentum": 0.9})


def test_cli_resume_with_activations_no_set_takes_names_the_setting(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint's --activation setting holding lists (a file not written by minidl train):
    refused as another setting, naming the file (a set of them raised Python's TypeError
    'unhashable type: 'list'', naming neither)."""

    def lists(header: dict[str, Any]) -> None:
        header["training"]["extra"]["settings"]["activation"] = [["tanh"], ["relu"]]

    rewrite(saved_run, header=lists)
    before = saved_run.read_bytes()
    code, errors = run_cli([*TRAIN, "--epochs", "5", "--resume", str(saved_run)], capsys)
    assert (code, errors) == (
        2,
        f"minidl train: error: --resume {saved_run}: the checkpoint was made with other "
        "settings: --activation ['tanh'],['relu'] in the checkpoint, tanh now\n",
    )
    assert saved_run.read_bytes() == before


def test_cli_resume_shows_a_long_setting_by_its_start_and_length(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint's --optimizer setting of a million characters, and a --hidden of one of
    them (a file not written by minidl train): named by their first 40 characters and their
    length, the message one short line (the million characters were written out, twice)."""

    def long(header: dict[str, Any]) -> None:
        header["training"]["extra"]["settings"].update(optimizer="x" * 10**6, hidden=["y" * 10**6])

    rewrite(saved_run, header=long)
    code, errors = run_cli([*TRAIN, "--epochs", "5", "--resume", str(saved_run)], capsys)
    assert (code, errors) == (
        2,
        f"minidl train: error: --resume {saved_run}: the checkpoint was made with other "
        f"settings: --optimizer {'x' * 40!r}... (a str of 1000000 characters) in the "
        f"checkpoint, sgd now; --hidden {'y' * 40!r}... (a str of 1000000 characters) in the "
        "checkpoint, 4 now\n",
    )


def test_cli_names_a_hidden_of_many_layers_by_its_start_and_length(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --hidden of 1000 layers that differs from the checkpoint's, and one of 3000 layers too
    wide for the memory: named by their first 40 characters and their length, the message one
    short line (every width was written out: 2000 and 42 000 characters for as many given)."""
    many = ",".join(["1"] * 1000)
    code, errors = run_cli(
        [*TRAIN, "--hidden", many, "--epochs", "5", "--resume", str(saved_run)], capsys
    )
    assert (code, errors) == (
        2,
        f"minidl train: error: --resume {saved_run}: the checkpoint was made with other "
        f"settings: --hidden 4 in the checkpoint, {many[:40]!r}... (a str of 1999 characters) "
        "now\n",
    )
    wide = ",".join([str(10**12)] * 3000)
    code, errors = run_cli([*TRAIN, "--hidden", wide], capsys)
    assert code == 2 and errors.count("\n") == 1 and len(errors) < 400, errors[:1000]
    assert errors.startswith(
        f"minidl train: error: --hidden {wide[:40]!r}... (a str of 41999 characters): the "
        "network's 2999000000003004000000000002 parameters and their gradients take"
    ), errors[:1000]


def test_cli_reports_a_network_that_memory_cannot_hold_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--hidden widths whose parameters the machine's memory holds, by its count, but that torch
    cannot allocate (here 400 TB on a machine said to have 2**50 bytes; the optimizer's state,
    a batch's activations or a ``ulimit -v`` do it on a real one): status 1 and one line
    with torch's words, nothing written (torch's RuntimeError ended the command with a
    traceback). Python's MemoryError likewise; another RuntimeError is let out."""
    sysconf = os.sysconf
    monkeypatch.setattr(
        os, "sysconf", lambda name: 2**50 if name == "SC_PHYS_PAGES" else sysconf(name)
    )
    path = tmp_path / "run.ckpt"
    argv = [*TRAIN, "--hidden", "10000000,10000000", "--checkpoint", str(path)]
    code, errors = run_cli(argv, capsys)
    assert code == 1 and errors.count("\n") == 1, errors
    assert errors.startswith("minidl train: error: out of memory: "), errors
    assert "400000000000000 bytes" in errors and "enforce fail" not in errors, errors
    assert errors.endswith("; a smaller --hidden or --batch-size takes less\n"), errors
    assert list(tmp_path.iterdir()) == []

    def mlp(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(nn, "mlp", mlp)
    error: BaseException = MemoryError()
    assert run_cli(TRAIN, capsys) == (
        1,
        "minidl train: error: out of memory: MemoryError; a smaller --hidden or --batch-size "
        "takes less\n",
    )
    error = RuntimeError("another error")
    with pytest.raises(RuntimeError, match=r"^another error$"):
        main(TRAIN)


def test_cli_resume_at_epoch_0_with_a_history_is_refused_before_training(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint at epoch 0 holding a history of 3 epochs (save_checkpoint takes one, from
    another run; read_checkpoint refuses it past epoch 0): refused naming the file, before
    training (the run trained, and its first save refused the history of 6 epochs at epoch 3,
    naming save_checkpoint alone)."""

    def epoch_0(header: dict[str, Any]) -> None:
        header["training"]["epoch"] = 0

    rewrite(saved_run, header=epoch_0)
    before = saved_run.read_bytes()
    code, errors = run_cli([*TRAIN, "--epochs", "3", "--resume", str(saved_run)], capsys)
    assert (code, errors) == (
        2,
        f"minidl train: error: --resume {saved_run}: the checkpoint's history holds 3 epochs, "
        "past its epoch 0: a run resumed from it would record its epochs after another run's, "
        "and its first checkpoint would be refused\n",
    )
    assert saved_run.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_cli_resume_from_a_bad_file(
    saved_run: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if damage == "truncated":
        saved_run.write_bytes(saved_run.read_bytes()[:100])
    else:
        saved_run.write_text("epoch = 3\n")
    code, errors = run_cli([*TRAIN, "--resume", str(saved_run)], capsys)
    assert code == 2
    assert errors.startswith(f"minidl train: error: --resume {saved_run}: ")


# -- checkpoints ---------------------------------------------------------------------------------

Parts = tuple[nn.Sequential, optim.Optimizer, LRScheduler | None, torch.Generator]


def parts(
    sizes: tuple[int, ...] = (2, 4, 2),
    momentum: float = 0.5,
    optimizer: str = "sgd",
    scheduler: bool = True,
    dtype: torch.dtype = torch.float32,
    activation: str = "tanh",
) -> Parts:
    model = nn.mlp(sizes, activation, dtype=dtype, generator=torch.Generator().manual_seed(0))
    opt: optim.Optimizer = (
        optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
        if optimizer == "sgd"
        else optim.Adadelta(model.parameters())
    )
    sched = optim.StepDecay(opt, step_size=2) if scheduler else None
    return model, opt, sched, torch.Generator().manual_seed(1)


def state_of(target: Parts) -> list[Any]:
    model, optimizer, scheduler, generator = target
    state = optimizer.state_dict()
    return [
        model.state_dict(),
        state.pop("state"),
        state,
        scheduler.state_dict() if scheduler is not None else None,
        generator.get_state(),
        torch.get_rng_state(),
    ]


def assert_same_state(a: list[Any], b: list[Any]) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, Tensor):
            assert torch.equal(x, y)
        elif isinstance(x, dict) and all(isinstance(v, Tensor) for v in x.values()):
            assert x.keys() == y.keys()
            assert all(torch.equal(x[k], y[k]) for k in x)
        else:
            assert x == y


@pytest.fixture
def good(tmp_path: Path) -> Path:
    model, optimizer, scheduler, generator = parts()
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=4, scheduler=scheduler)
    path = tmp_path / "good.ckpt"
    save_checkpoint(path, model, optimizer, scheduler, epoch=2, generator=generator)
    return path


def _set(tensors: dict[str, Tensor], name: str, value: Tensor) -> None:
    tensors[name] = value


def _nan(tensors: dict[str, Tensor]) -> None:
    tensors["model.0.weight"] = tensors["model.0.weight"].clone()
    tensors["model.0.weight"][1, 1] = float("nan")


def _bad_optimizer_lr(header: dict[str, Any]) -> None:
    header["optimizer"]["lr"] = -1.0


def _bad_scheduler_step(header: dict[str, Any]) -> None:
    header["scheduler"]["state"]["last_step"] = -4


def _bad_generator_state(path: Path) -> None:
    """A data-generator state of 10 bytes, consistent with the header (shape and digests): only
    ``Generator.set_state``, the last stage of loading, refuses it."""
    rewrite(
        path,
        lambda t: _set(t, "rng.generator", torch.zeros(10, dtype=torch.uint8)),
        header=lambda h: h["tensors"]["rng.generator"].update(shape=[10]),
    )


def _edit(header: dict[str, Any]) -> None:
    header["training"]["epoch"] = 40


def _reversed_keys(value: Any) -> Any:
    """``value`` with the keys of every JSON object in reverse order (not sorted)."""
    if isinstance(value, dict):
        return {key: _reversed_keys(value[key]) for key in reversed(sorted(value))}
    if isinstance(value, list):
        return [_reversed_keys(item) for item in value]
    return value


def _pad_safetensors_header(path: Path) -> None:
    """Eight more bytes of whitespace after the safetensors header's JSON, one of them a tab (a
    file any safetensors reader takes, with the same content): whether or not the header had
    padding before, which depends on its length."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    padded = data[8 : 8 + size] + b"\t" + b" " * 7
    path.write_bytes(len(padded).to_bytes(8, "little") + padded + data[8 + size :])


def _not_canonical(dump: Callable[[dict[str, Any]], str]) -> Callable[[Path], None]:
    """Rewrite the header with ``dump``: the same content and a valid digest (the digest is of
    the canonical form), but not the canonical JSON minidl writes."""

    def damage(path: Path) -> None:
        def checked(wrapper: dict[str, Any]) -> str:
            text = dump(wrapper)
            assert text != _canonical(wrapper) and json.loads(text) == wrapper
            return text

        rewrite(path, dump=checked)

    return damage


TAMPERING: list[tuple[str, Callable[[Path], None], list[str]]] = [
    (
        "truncated",
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        ["good.ckpt", "truncated"],
    ),
    ("empty", lambda p: p.write_bytes(b""), ["not a safetensors file, or truncated (0 bytes,"]),
    (
        "seven bytes",
        lambda p: p.write_bytes(p.read_bytes()[:7]),
        ["not a safetensors file, or truncated (7 bytes, fewer than the 8 that give the length"],
    ),
    ("text", lambda p: p.write_text("weights = [1, 2]"), ["not a safetensors file"]),
    (
        "a safetensors header that is a JSON list",
        lambda p: p.write_bytes((2).to_bytes(8, "little") + b"[]"),
        ["good.ckpt': the safetensors header is not a JSON object"],
    ),
    (
        "trailing bytes",
        lambda p: p.write_bytes(p.read_bytes() + b"\0"),
        ["followed by extra bytes"],
    ),
    (
        "flipped data byte",
        lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])),
        ["is corrupted", "SHA-256 does not match"],
    ),
    (
        "header padding",
        _pad_safetensors_header,
        ["corrupted"],
    ),
    (
        "wrong shape",
        lambda p: rewrite(p, lambda t: _set(t, "model.0.bias", torch.zeros(5))),
        ["'model.0.bias' has shape (5,)", "the header says (4,)"],
    ),
    (
        "wrong dtype",
        lambda p: rewrite(
            p, lambda t: _set(t, "model.0.bias", torch.zeros(4, dtype=torch.float64))
        ),
        ["'model.0.bias' has dtype float64", "the header says float32"],
    ),
    (
        # The tensor's entry changed along with it: was converted to the model's dtype silently.
        "a parameter in another dtype than the architecture says",
        lambda p: rewrite(
            p,
            lambda t: _set(t, "model.0.bias", t["model.0.bias"].to(torch.float64)),
            header=lambda h: h["tensors"]["model.0.bias"].update(dtype="float64"),
        ),
        ["'model.0.bias' is float64 of shape (4,)", "architecture says float32 of shape (4,)"],
    ),
    (
        # (was converted to the parameters' dtype silently)
        "optimizer state in another dtype than its parameters",
        lambda p: rewrite(
            p,
            lambda t: _set(t, "optimizer.momentum_buffer", t["optimizer.momentum_buffer"].double()),
            header=lambda h: h["tensors"]["optimizer.momentum_buffer"].update(dtype="float64"),
        ),
        ["SGD state 'momentum_buffer' is float64, this one's parameters are float32"],
    ),
    (
        # (was "the header is malformed (KeyError('optimizer.momentum_buffer'))")
        "optimizer state named in the header without its tensor",
        lambda p: rewrite(
            p,
            lambda t: t.pop("optimizer.momentum_buffer"),
            header=lambda h: h["tensors"].pop("optimizer.momentum_buffer"),
        ),
        [
            "SGD has state 'momentum_buffer' in its header, but no tensor 'optimizer.momentum_buffer'"
        ],
    ),
    (
        "missing tensor",
        lambda p: rewrite(p, lambda t: t.pop("optimizer.momentum_buffer")),
        ["missing ['optimizer.momentum_buffer']"],
    ),
    (
        "unexpected tensor",
        lambda p: rewrite(p, lambda t: _set(t, "model.9.weight", torch.zeros(2))),
        ["unexpected ['model.9.weight']"],
    ),
    (
        "NaN said finite",
        lambda p: rewrite(p, _nan),
        ["'model.0.weight' is not finite", "says finite"],
    ),
    (
        "newer format",
        lambda p: rewrite(p, header=lambda h: h.update(format_version=2)),
        ["format version 2", "newer", "format version 1"],
    ),
    (
        "another format",
        lambda p: rewrite(p, header=lambda h: h.update(format="other")),
        ["not a minidl checkpoint", "'other'"],
    ),
    (
        # (was quoted whole)
        "another format of 5000 characters",
        lambda p: rewrite(p, header=lambda h: h.update(format="x" * 5000)),
        ["not a minidl checkpoint (format 'xxxxxxxxxx", "... (a str of 5000 characters), "],
    ),
    (
        "format version as a text of 5000 characters",
        lambda p: rewrite(p, header=lambda h: h.update(format_version="1" * 5000)),
        ["invalid format version '1111111111", "... (a str of 5000 characters)"],
    ),
    (
        "header edited without its digest",
        lambda p: rewrite(p, header=_edit, redigest=False),
        ["header is corrupted", "SHA-256 does not match"],
    ),
    (
        "header with spaces",
        _not_canonical(lambda w: json.dumps(w, sort_keys=True)),
        ["header is corrupted", "not canonical JSON"],
    ),
    (
        "indented header",
        _not_canonical(lambda w: json.dumps(w, sort_keys=True, indent=1)),
        ["header is corrupted", "not canonical JSON"],
    ),
    (
        "header keys reordered",
        _not_canonical(lambda w: json.dumps(_reversed_keys(w), separators=(",", ":"))),
        ["header is corrupted", "not canonical JSON"],
    ),
    (
        "header with a trailing newline",
        _not_canonical(lambda w: _canonical(w) + "\n"),
        ["header is corrupted", "not canonical JSON"],
    ),
    (
        "no minidl header",
        lambda p: p.write_bytes(safetensors_save({"w": torch.zeros(2)})),
        ["no 'minidl' header"],
    ),
    (
        "malformed training entry",
        lambda p: rewrite(p, header=lambda h: h["training"].update(epoch=-1)),
        ["malformed", "training.epoch", "-1"],
    ),
    (
        "format version 0",
        lambda p: rewrite(p, header=lambda h: h.update(format_version=0)),
        ["invalid format version 0"],
    ),
    (
        "format version true",
        lambda p: rewrite(p, header=lambda h: h.update(format_version=True)),
        ["invalid format version True"],
    ),
    (
        "format version as text",
        lambda p: rewrite(p, header=lambda h: h.update(format_version="1")),
        ["invalid format version '1'"],
    ),
    (
        "step as text",
        lambda p: rewrite(p, header=lambda h: h["training"].update(step="3")),
        ["malformed", "training.step must be an integer >= 0, got '3'"],
    ),
    (
        "a text in the history",
        lambda p: rewrite(p, header=lambda h: h["training"]["history"]["lr"].append("0.1")),
        ["malformed", "training.history.lr must be a list of numbers"],
    ),
    (
        "a boolean in the history",
        lambda p: rewrite(p, header=lambda h: h["training"]["history"]["lr"].append(True)),
        ["malformed", "training.history.lr must be a list of numbers"],
    ),
    (
        "a history entry missing",
        lambda p: rewrite(p, header=lambda h: h["training"]["history"].pop("batch_lr")),
        ["malformed", "training.history has the entries ['lr', 'train_loss', 'validation_error']"],
    ),
    (
        "the history as a list of its names",
        lambda p: rewrite(
            p, header=lambda h: h["training"].update(history=sorted(h["training"]["history"]))
        ),
        ["malformed", "training.history must be an object, got list"],
    ),
    (
        "the tensor table as a list",
        lambda p: rewrite(p, header=lambda h: h.update(tensors=sorted(h["tensors"]))),
        ["malformed", "tensors must be an object, got list"],
    ),
    (
        "a tensor's shape as text",
        lambda p: rewrite(p, header=lambda h: h["tensors"]["model.0.bias"].update(shape="4")),
        ["malformed", "tensors.model.0.bias.shape must be a list"],
    ),
    (
        "finite as text",
        lambda p: rewrite(p, header=lambda h: h["tensors"]["model.0.bias"].update(finite="yes")),
        ["malformed", "tensors.model.0.bias.finite must be a boolean, got str"],
    ),
    (
        "the header as a list",
        lambda p: rewrite(p, dump=lambda w: _canonical({"header": [], "sha256": w["sha256"]})),
        ["header is corrupted", "unexpected structure"],
    ),
    (
        # Refused at the last stage: the model, optimizer, scheduler and torch's generator,
        # already loaded, must be put back.
        "generator refuses its saved state",
        _bad_generator_state,
        ["the saved state was refused"],
    ),
    (
        "optimizer refuses the saved lr",
        lambda p: rewrite(p, header=_bad_optimizer_lr),
        ["refused", "lr", "-1"],
    ),
    (
        "scheduler refuses the saved step",
        lambda p: rewrite(p, header=_bad_scheduler_step),
        ["refused", "last_step", "-4"],
    ),
]


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [(case[1], case[2]) for case in TAMPERING],
    ids=[case[0] for case in TAMPERING],
)
def test_tampered_checkpoint_is_refused_and_changes_nothing(
    good: Path, damage: Callable[[Path], None], fragments: list[str]
) -> None:
    damage(good)
    target = parts()
    torch.rand(3)
    before = state_of(target)
    with raises(CheckpointError, *fragments):
        load_checkpoint(good, *target[:3], generator=target[3])
    assert_same_state(state_of(target), before)


@pytest.mark.parametrize("kind", [KeyboardInterrupt, OSError, AttributeError])
def test_an_interrupted_load_puts_everything_back(
    good: Path, kind: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the saved state is applied (here as torch's generator is set, after the
    model, the optimizer and the scheduler), or an error of another kind than the components'
    refusals, left them loaded ("on any failure everything is left as it was"); they are put
    back, and the exception goes on as it was raised."""
    target = parts()
    torch.rand(3)
    before = state_of(target)
    real = torch.set_rng_state
    calls: list[Tensor] = []

    def set_rng_state(state: Tensor) -> None:
        calls.append(state)
        if len(calls) == 1:
            raise kind("interrupted")
        real(state)

    monkeypatch.setattr(torch, "set_rng_state", set_rng_state)
    with pytest.raises(kind, match=r"^interrupted$"):
        load_checkpoint(good, *target[:3], generator=target[3])
    assert len(calls) == 2  # (the second puts torch's state back)
    assert_same_state(state_of(target), before)


def test_a_refused_checkpoint_puts_back_a_model_loaded_alone(good: Path) -> None:
    """Refused at the generator, after the model was loaded, with no optimizer or scheduler
    given: the model and torch's generator are put back, and nothing else is touched."""
    _bad_generator_state(good)
    model, _, _, generator = parts()
    torch.rand(3)
    before = (model.state_dict(), generator.get_state(), torch.get_rng_state())
    with raises(CheckpointError, "the saved state was refused"):
        load_checkpoint(good, model, generator=generator)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before[0].items())
    assert torch.equal(generator.get_state(), before[1])
    assert torch.equal(torch.get_rng_state(), before[2])


def test_an_optimizer_of_another_model_is_refused_on_load_and_changes_nothing(good: Path) -> None:
    """An optimizer built on the model before it was built again (or on another model) was
    loaded with the saved state, which then belonged to parameters that fit never trains
    (saving refuses it); it is refused as by save_checkpoint, and nothing is changed."""
    target = parts()
    stale_optimizer, stale_scheduler = parts()[1:3]
    torch.rand(3)
    before = state_of(target)
    stale = state_of((target[0], stale_optimizer, stale_scheduler, target[3]))
    with raises(CheckpointError, "load_checkpoint", "the optimizer updates none of the model's"):
        load_checkpoint(good, target[0], stale_optimizer, stale_scheduler, generator=target[3])
    assert_same_state(state_of(target), before)
    assert_same_state(state_of((target[0], stale_optimizer, stale_scheduler, target[3])), stale)


MISMATCHES: list[tuple[str, Callable[[], Parts], list[str]]] = [
    (
        "another architecture",
        lambda: parts(sizes=(2, 5, 2)),
        ["another architecture", "'0.weight' has shape (4, 2) (float32) in the checkpoint, (5, 2)"],
    ),
    (
        "deeper",
        lambda: parts(sizes=(2, 4, 4, 2)),
        ["another architecture", "'4.weight' is not in the checkpoint"],
    ),
    (
        "shallower",
        lambda: parts(sizes=(2, 2)),
        ["another architecture", "'2.weight' is not in the model", "'2.bias' is not in the model"],
    ),
    (
        "float64",
        lambda: parts(dtype=torch.float64),
        ["parameters are float32 and this model's float64"],
    ),
    (
        "another activation",
        lambda: parts(activation="relu"),
        [
            "the checkpoint is for another model: the parameters fit, the modules differ",
            "(1): Tanh()",
            "(1): ReLU()",
            "model.load_state_dict(read_checkpoint(path).model_state)",
        ],
    ),
    ("another optimizer", lambda: parts(optimizer="adadelta"), ["optimizer SGD, got Adadelta"]),
    (
        "momentum off",
        lambda: parts(momentum=0.0),
        ["the checkpoint's SGD has state ['momentum_buffer'], this one []", "momentum"],
    ),
    ("no scheduler", lambda: parts(scheduler=False), ["scheduler StepDecay, got None"]),
]


@pytest.mark.parametrize(
    ("make", "fragments"),
    [(case[1], case[2]) for case in MISMATCHES],
    ids=[case[0] for case in MISMATCHES],
)
def test_mismatched_checkpoint_is_refused_and_changes_nothing(
    good: Path, make: Callable[[], Parts], fragments: list[str]
) -> None:
    target = make()
    before = state_of(target)
    with raises(CheckpointError, *fragments):
        load_checkpoint(good, *target[:3], generator=target[3])
    assert_same_state(state_of(target), before)


def test_the_parameters_alone_load_into_a_model_with_other_modules(good: Path) -> None:
    """What the refusal of another model suggests: the checkpoint's parameters, loaded with
    ``load_state_dict``, into a network with other activations."""
    saved = read_checkpoint(good).model_state
    model = parts(activation="relu")[0]
    model.load_state_dict(saved)
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name])


def _rmsprop_run(path: Path, **settings: Any) -> None:
    """Train a small network with RMSprop(**settings) for two epochs and save a checkpoint."""
    model = nn.mlp((2, 4, 2), "tanh", generator=torch.Generator().manual_seed(0))
    optimizer = optim.RMSprop(model.parameters(), lr=0.01, **settings)
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=4)
    save_checkpoint(path, model, optimizer, epoch=2, generator=torch.Generator())


def _rmsprop_parts(**settings: Any) -> Parts:
    model = nn.mlp((2, 4, 2), "tanh", generator=torch.Generator().manual_seed(9))
    optimizer = optim.RMSprop(model.parameters(), lr=0.05, **settings)
    return model, optimizer, None, torch.Generator().manual_seed(1)


ALL_STATE = "['grad_avg', 'momentum_buffer', 'square_avg']"


@pytest.mark.parametrize(
    ("saved", "own", "fragment"),
    [
        (
            {"centered": True, "momentum": 0.5},
            {},
            f"has state {ALL_STATE}, this one ['square_avg']",
        ),
        ({}, {"centered": True}, "has state ['square_avg'], this one ['grad_avg', 'square_avg']"),
        ({"momentum": 0.9}, {"centered": True}, "['momentum_buffer', 'square_avg'], this one"),
        ({"centered": True}, {"centered": True, "momentum": 0.1}, f"this one {ALL_STATE}"),
    ],
    ids=[
        "centered-momentum-into-plain",
        "plain-into-centered",
        "momentum-into-centered",
        "centered-into-centered-momentum",
    ],
)
def test_checkpoint_of_an_optimizer_with_other_state_tensors_is_refused(
    tmp_path: Path, saved: dict[str, Any], own: dict[str, Any], fragment: str
) -> None:
    """An optimizer of the saved class whose settings give it other state tensors (RMSprop's
    ``centered``, ``momentum > 0``) is refused before anything is loaded, the message naming
    the saved and the present state entries; nothing changes."""
    path = tmp_path / "rmsprop.ckpt"
    _rmsprop_run(path, **saved)
    target = _rmsprop_parts(**own)
    before = state_of(target)
    with raises(CheckpointError, "load_checkpoint", "the checkpoint's RMSprop", fragment):
        load_checkpoint(path, *target[:3])
    assert_same_state(state_of(target), before)


def test_checkpoint_whose_hyperparameters_need_other_state_tensors_is_refused(
    tmp_path: Path,
) -> None:
    """A tampered header (valid digests) whose RMSprop hyper-parameters say ``centered`` while
    its state entries are plain RMSprop's passes the state-name check but is refused by the
    optimizer, naming both configurations; the model and optimizer are rolled back."""
    path = tmp_path / "rmsprop.ckpt"
    _rmsprop_run(path)
    rewrite(path, header=lambda h: h["optimizer"]["hyperparameters"].update(centered=True))
    target = _rmsprop_parts()
    torch.rand(2)
    before = state_of(target)
    with raises(
        CheckpointError,
        "the saved state was refused",
        "RMSprop.load_state_dict: the state was saved with centered=True, momentum=0.0",
        "(centered=False, momentum=0.0)",
    ):
        load_checkpoint(path, *target[:3], generator=target[3])
    assert_same_state(state_of(target), before)
    assert isinstance(target[1], optim.RMSprop) and target[1].centered is False


def test_generator_requested_but_not_saved(tmp_path: Path) -> None:
    model, optimizer, scheduler, generator = parts()
    save_checkpoint(tmp_path / "c", model, optimizer, scheduler)
    before = state_of((model, optimizer, scheduler, generator))
    with raises(CheckpointError, "no data-generator state"):
        load_checkpoint(tmp_path / "c", model, optimizer, scheduler, generator=generator)
    assert_same_state(state_of((model, optimizer, scheduler, generator)), before)


@pytest.mark.parametrize("where", ["missing", "folder"])
def test_unreadable_checkpoint(tmp_path: Path, where: str) -> None:
    path = tmp_path / "none.ckpt" if where == "missing" else tmp_path
    model, _, _, _ = parts()
    with raises(CheckpointError, str(path), "cannot be read"):
        load_checkpoint(path, model)


def test_load_into_something_that_is_not_a_module(good: Path) -> None:
    with raises(CheckpointError, "model must be a minidl Module", "dict"):
        load_checkpoint(good, {})  # type: ignore[arg-type]


SAVE_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"epoch": -1}, ["epoch must be an integer >= 0", "-1"]),
    ({"epoch": 1.5}, ["epoch", "1.5"]),
    ({"model": "weights"}, ["model must be a minidl Module", "str"]),
    ({"optimizer": "sgd"}, ["optimizer must be a minidl Optimizer", "str"]),
    ({"scheduler": 3}, ["scheduler must be a minidl LRScheduler", "int"]),
    ({"generator": 0}, ["generator must be a torch.Generator", "int"]),
    ({"extra": {"when": object()}}, ["extra['when'] is of type object", "cannot keep"]),
    # (saved, a resume loaded the scheduler's state onto an optimizer it never scheduled)
    ({"optimizer": None}, ["a scheduler is saved with its optimizer; give the optimizer too"]),
    ({"optimizer": "other"}, ["the scheduler given schedules another optimizer"]),
    ({"model": "other", "scheduler": None}, ["the optimizer updates none of the model's"]),
    # (saved without it, the schedule that sets the optimizer's rate was lost: a resumed run
    # started it over, and load_checkpoint could not tell)
    (
        {"scheduler": None},
        ["the optimizer is scheduled by the StepDecay built on it, which is not given"],
    ),
]


@pytest.mark.parametrize(("change", "fragments"), SAVE_CASES)
def test_save_checkpoint_bad_arguments(
    tmp_path: Path, change: dict[str, Any], fragments: list[str]
) -> None:
    model, optimizer, scheduler, generator = parts()
    arguments: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "generator": generator,
        **change,
    }
    other_model, other_optimizer, _, _ = parts()
    for name, other in (("model", other_model), ("optimizer", other_optimizer)):
        if arguments[name] == "other":
            arguments[name] = other
    with raises(CheckpointError, "save_checkpoint", *fragments):
        save_checkpoint(tmp_path / "c", **arguments)
    assert list(tmp_path.iterdir()) == []


def test_save_checkpoint_into_a_missing_folder(tmp_path: Path) -> None:
    model, _, _, _ = parts()
    folder = tmp_path / "missing"
    with raises(FileNotFoundError, "save_checkpoint", repr(str(folder / "c")), "does not exist"):
        save_checkpoint(folder / "c", model)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("below", ["c", "sub/c"])
def test_save_checkpoint_below_a_file(tmp_path: Path, below: str) -> None:
    """A path through a file (``run.ckpt/c``) was said to be in a folder that does not exist,
    where the file exists and is no folder (Python's NotADirectoryError)."""
    model, _, _, _ = parts()
    (tmp_path / "run.ckpt").write_bytes(b"kept")
    path = tmp_path / "run.ckpt" / below
    with raises(
        NotADirectoryError,
        f"save_checkpoint: cannot write {str(path)!r}: {str(tmp_path / 'run.ckpt')!r} is not a "
        "folder",
    ):
        save_checkpoint(path, model)
    assert list(tmp_path.iterdir()) == [tmp_path / "run.ckpt"]
    assert (tmp_path / "run.ckpt").read_bytes() == b"kept"


def test_save_checkpoint_to_a_folder(tmp_path: Path) -> None:
    model, _, _, _ = parts()
    with raises(CheckpointError, "save_checkpoint", repr(str(tmp_path)), "is a folder"):
        save_checkpoint(tmp_path, model)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["", "."])
def test_read_checkpoint_of_an_empty_path_or_a_folder(path: str) -> None:
    """An empty path was read as the current folder ("Is a directory")."""
    reason = "the path is empty" if path == "" else "Is a directory"
    with raises(CheckpointError, f"checkpoint {path!r}: cannot be read ({reason})"):
        read_checkpoint(path)


# -- the training loop and the data ----------------------------------------------------------------


def test_fit_bad_start_epoch_and_history() -> None:
    model = nn.mlp((2, 3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    before = model.state_dict()
    criterion = nn.CrossEntropyLoss()
    with raises(ValueError, "fit", "start_epoch", "integer >= 0", "-1"):
        fit(model, criterion, optimizer, x, y, epochs=2, start_epoch=-1)
    with raises(ValueError, "fit", "start_epoch 3 is past epochs 2"):
        fit(model, criterion, optimizer, x, y, epochs=2, start_epoch=3)
    with raises(TypeError, "fit", "history must be a History", "list"):
        fit(model, criterion, optimizer, x, y, epochs=2, history=[])  # type: ignore[arg-type]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_error_rate_with_mismatched_sets() -> None:
    with raises(ValueError, "error_rate", "x and y", "x of shape (5, 2) and y of shape (2,)"):
        error_rate(nn.mlp((2, 2)), torch.randn(5, 2), torch.tensor([0, 1]))
    with raises(ValueError, "error_rate", "class indices of shape (N,)", "(5, 2)"):
        error_rate(nn.mlp((2, 2)), torch.randn(5, 2), torch.zeros(5, 2))
    with raises(TypeError, "error_rate", "y must be a torch.Tensor", "list"):
        error_rate(nn.mlp((2, 2)), torch.randn(2, 2), [0, 1])  # type: ignore[arg-type]


def test_error_rate_with_an_empty_set_or_inputs_on_their_own() -> None:
    # (named with its shape, as predict, fit's training set and BatchIterator name an empty one)
    with raises(ValueError, "error_rate", "the set is empty, got x of shape (0, 2) and y of"):
        error_rate(nn.mlp((2, 2)), torch.randn(0, 2), torch.zeros(0, dtype=torch.int64))
    with raises(ValueError, "error_rate", "x and y must hold as many samples", "x of shape ()"):
        error_rate(nn.mlp((2, 2)), torch.tensor(1.0), torch.tensor([0]))


def test_fit_refuses_a_bad_validation_set_before_training() -> None:
    """A validation set is first used after an epoch: it used to fail only then, with the model
    trained for an epoch (and in the model's or error_rate's name)."""
    model = nn.mlp((2, 3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = optim.CyclicLR(optimizer, 0.01, 0.1, 2)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    before, history = model.state_dict(), fit_history()
    like = "validation x must hold samples like the training x, of shape (N, 2), torch.float32"
    bad: list[tuple[tuple[Any, Any], type[Exception], tuple[str, ...]]] = [
        ((torch.randn(4, 3), y), ValueError, (like, "got (N, 3), torch.float32 on cpu")),
        ((x.double(), y), ValueError, (like, "got (N, 2), torch.float64 on cpu")),
        ((x[:, None], y), ValueError, (like, "got (N, 1, 2)")),
        ((x, y[:2]), ValueError, ("validation x and y", "x of shape (4, 2) and y of shape (2,)")),
        ((x, y[:, None]), ValueError, ("validation y", "class indices of shape (N,)", "(4, 1)")),
        ((x, [0, 1, 0, 1]), TypeError, ("validation y must be a torch.Tensor", "list")),
        (([[0.0, 1.0]], y), TypeError, ("validation x must be a torch.Tensor", "list")),
        ((x[:0], y[:0]), ValueError, ("the validation set is empty, got x of shape (0, 2)",)),
        ((x, y.to("meta")), ValueError, ("validation x and y must be on one device", "meta")),
    ]
    for validation, kind, fragments in bad:
        with raises(kind, "fit", *fragments):
            fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                x,
                y,
                epochs=2,
                batch_size=2,
                scheduler=scheduler,
                validation=validation,
                history=history,
            )
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
        assert history == fit_history()
        assert optimizer.lr == 0.01 and scheduler.last_step == 0


def fit_history() -> History:
    """A history to resume from, as a checkpoint gives it."""
    return History(train_loss=[0.5], validation_error=[10.0], lr=[0.1], batch_lr=[0.1, 0.1])


def test_a_failing_batch_leaves_the_history_as_it_was() -> None:
    """The learning rate of a batch is recorded once the batch has trained."""
    model = nn.mlp((2, 3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    scheduler = optim.CyclicLR(optimizer, 0.01, 0.1, 2)
    history = fit_history()
    with raises(ValueError, "Linear", "expected 2 input features, got 3"):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            torch.randn(4, 3),
            torch.tensor([0, 1, 0, 1]),
            epochs=1,
            scheduler=scheduler,
            history=history,
        )
    assert history == fit_history()


def test_fit_refuses_what_is_not_a_model_loss_optimizer_or_validation_pair() -> None:
    model = nn.mlp((2, 3, 2))
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    before = model.state_dict()
    bad: list[tuple[dict[str, Any], type[Exception], tuple[str, ...]]] = [
        ({"model": lambda v: v}, TypeError, ("model must be a minidl Module", "function")),
        ({"criterion": torch.nn.CrossEntropyLoss()}, TypeError, ("criterion", "CrossEntropyLoss")),
        ({"optimizer": torch.optim.SGD([torch.zeros(1)], lr=0.1)}, TypeError, ("optimizer",)),
        (
            {"optimizer": optim.SGD(nn.mlp((2, 3, 2)).parameters(), lr=0.1)},
            ValueError,
            ("updates none of the model's parameters",),
        ),
        ({"validation": x}, TypeError, ("validation must be an (x, y) pair", "Tensor")),
        ({"validation": (x, y, y)}, TypeError, ("validation must be an (x, y) pair", "tuple")),
        ({"parallel": 2}, TypeError, ("parallel must be a minidl.distributed.DataParallel", "int")),
    ]
    for change, kind, fragments in bad:
        arguments: dict[str, Any] = {"model": model, "criterion": criterion, "optimizer": optimizer}
        arguments.update(change)
        validation = arguments.pop("validation", None)
        parallel = arguments.pop("parallel", None)
        with raises(kind, "fit", *fragments):
            fit(**arguments, x=x, y=y, epochs=1, validation=validation, parallel=parallel)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # An optimizer over part of the model (the rest frozen) is fine.
    fit(model, criterion, optim.SGD(list(model.parameters())[2:], lr=0.1), x, y, epochs=1)
    assert torch.equal(model.state_dict()["0.weight"], before["0.weight"])
    assert not torch.equal(model.state_dict()["2.weight"], before["2.weight"])


def test_batch_larger_than_the_set_gives_one_batch_of_the_whole_set() -> None:
    """Documented behaviour, not an error: ``batch_size`` > N gives one batch of all N samples."""
    x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    batches = list(BatchIterator(x, y, batch_size=100, shuffle=False))
    assert len(batches) == 1
    assert torch.equal(batches[0][0], x)
    assert torch.equal(batches[0][1], y)
    assert list(BatchIterator(x, y, batch_size=100, drop_last=True)) == []


# -- anomaly detection ---------------------------------------------------------------------------


def test_detect_anomaly_needs_modules() -> None:
    model = nn.mlp((2, 2))
    with raises(TypeError, "detect_anomaly", "argument 1", "str"), detect_anomaly(model, "loss"):  # type: ignore[arg-type]
        pass
    assert "forward" not in model[0].__dict__


# -- a gap found by this audit -------------------------------------------------------------------


def test_cross_entropy_probability_target_with_nan() -> None:
    """NaN compares false with everything, so a NaN row used to pass the "sums to 1" check."""
    target = torch.tensor([[float("nan"), 1.0], [0.5, 0.5]])
    with raises(ValueError, "CrossEntropyLoss", "probability target", "summing to 1", "nan"):
        nn.CrossEntropyLoss()(torch.zeros(2, 2), target)


@pytest.mark.parametrize(
    ("saved", "now"),
    [("tanh", "tanh,tanh"), ("tanh,tanh", "tanh")],
    ids=["one-then-each", "each-then-one"],
)
def test_cli_resumes_with_activations_spelled_either_way(
    tmp_path: Path, saved: str, now: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One ``--activation`` name is that name for every hidden layer: the same network, so
    not "other settings"."""
    path = tmp_path / "run.ckpt"
    network = ["train", "--hidden", "4,3", "--quiet"]
    assert main([*network, "--epochs", "1", "--activation", saved, "--checkpoint", str(path)]) == 0
    code, errors = run_cli(
        [*network, "--epochs", "2", "--activation", now, "--resume", str(path)], capsys
    )
    assert (code, errors) == (0, "")
    code, errors = run_cli(
        [*network, "--epochs", "3", "--activation", "relu", "--resume", str(path)], capsys
    )
    # (the resumed run saved its own spelling)
    assert code == 2 and f"--activation {now} in the checkpoint, relu now" in errors


def test_cli_names_a_file_system_error_during_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that cannot be written during the run (its folder removed, a full disk):
    one line and exit status 1, no traceback."""
    import minidl.checkpoint

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(minidl.checkpoint, "save_checkpoint", full_disk)
    code, errors = run_cli([*TRAIN, "--checkpoint", str(tmp_path / "run.ckpt")], capsys)
    assert code == 1
    assert errors == "minidl train: error: [Errno 28] No space left on device\n"


def test_cli_names_the_checkpoint_a_full_disk_could_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (a full disk) raises an ``OSError`` that names no file: the line named
    neither file nor disk, ``[Errno 28] No space left on device``. It names the checkpoint, and
    the file is left as it was."""
    import minidl.checkpoint

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    path = tmp_path / "run.ckpt"
    assert run_cli([*TRAIN, "--checkpoint", str(path)], capsys) == (0, "")
    kept = path.read_bytes()
    monkeypatch.setattr(minidl.checkpoint.os, "fsync", full_disk)
    code, errors = run_cli([*TRAIN, "--seed", "1", "--checkpoint", str(path)], capsys)
    assert (code, errors) == (1, f"minidl train: error: {path}: No space left on device\n")
    assert path.read_bytes() == kept
    assert sorted(tmp_path.iterdir()) == [path]  # (no temporary file left)


@pytest.mark.parametrize(
    "content",
    [b"notes\n", b"\x80\x02}q\x00.", b"PK\x03\x04" + bytes(40)],
    ids=["text", "pickle", "zip"],
)
@pytest.mark.parametrize("resumed", [False, True])
def test_cli_refuses_to_replace_a_file_that_is_no_checkpoint(
    content: bytes, resumed: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--checkpoint train.py``, a path mistyped: the first save replaced the file with a
    checkpoint. A file there that is no minidl checkpoint (text, a pickle, a ``torch.save``
    zip) is refused before training, and left as it was; with ``--resume`` of another file too."""
    path = tmp_path / "train.py"
    path.write_bytes(content)
    resume: list[str] = []
    if resumed:
        assert run_cli([*TRAIN, "--checkpoint", str(tmp_path / "run.ckpt")], capsys) == (0, "")
        resume = ["--resume", str(tmp_path / "run.ckpt"), "--epochs", "2"]
    code, errors = run_cli([*TRAIN, *resume, "--checkpoint", str(path)], capsys)
    assert (code, errors) == (
        2,
        f"minidl train: error: --checkpoint {path}: a file of {len(content)} bytes is there "
        "that is no minidl checkpoint, and a save would replace it; give another path, or "
        "remove the file\n",
    )
    assert path.read_bytes() == content


def test_cli_replaces_its_own_checkpoint_and_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A minidl checkpoint (the last run's, any settings) and an empty file (``touch``) are
    replaced, through a link as well."""
    path = tmp_path / "run.ckpt"
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    link = tmp_path / "link.ckpt"
    link.symlink_to(path)
    for target, seed in [(path, "0"), (path, "1"), (link, "2"), (empty, "3")]:
        code, errors = run_cli([*TRAIN, "--seed", seed, "--checkpoint", str(target)], capsys)
        assert (code, errors) == (0, "")
        assert read_checkpoint(target).training.epoch == 1
    assert link.is_symlink()


class _FullOutput(io.StringIO):
    """A standard output on a full disk (``> /dev/full``)."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("command", [["train", "--epochs", "1", "--hidden", "4"], ["reproduce"]])
def test_cli_says_its_standard_output_takes_nothing(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``minidl train > /dev/full``: the line said ``[Errno 28] No space left on device``, of no
    file; it says that the standard output takes nothing (status 1, as any file's error).
    ``minidl reproduce`` has written its results when it prints its summary."""
    if command == ["reproduce"]:
        command = ["reproduce", "--quick", "--tables", "2", "--jobs", "1"]
        command += ["--out", str(tmp_path / "out")]
    monkeypatch.setattr("sys.stdout", _FullOutput())
    code, errors = run_cli(command, capsys)
    assert (code, errors.splitlines()[-1]) == (
        1,
        f"minidl {command[0]}: error: cannot write to the standard output "
        "(No space left on device)",
    )
    if command[0] == "reproduce":
        assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(28, "No space left on device", "run.ckpt"), "run.ckpt: No space left on device"),
        (
            OSError(18, "Invalid cross-device link", "a/.tmp", None, "b/run.ckpt"),
            "a/.tmp -> b/run.ckpt: Invalid cross-device link",
        ),
        (OSError(2, "No such file or directory", "x\ny"), "'x\\ny': No such file or directory"),
        (OSError(9, "Bad file descriptor", 3), "[Errno 9] Bad file descriptor: 3"),
        (OSError(28, "No space left on device"), "[Errno 28] No space left on device"),
        (OSError("no errno"), "no errno"),
    ],
    ids=["file", "rename", "odd name", "descriptor", "no file", "no errno"],
)
def test_cli_line_of_a_file_system_error(error: OSError, line: str) -> None:
    """The file first, as ``cp`` says it, shown as every path of the command line is (quoted
    where it holds a line break); Python's own words where no file name is known."""
    from minidl.cli import _file_error

    assert _file_error(error) == line


def test_cli_stops_quietly_when_its_reader_goes_away(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``minidl train | head -1``: the pipe closes; no traceback, exit status 1."""
    import minidl.cli

    def closed(*args: object, **kwargs: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    class Stdout(io.StringIO):
        def fileno(self) -> int:
            return 99

    monkeypatch.setattr(minidl.cli, "_run_train", closed)
    monkeypatch.setattr(minidl.cli.sys, "stdout", Stdout())
    dup2: list[int] = []
    monkeypatch.setattr(minidl.cli.os, "dup2", lambda source, target: dup2.append(target))
    code, errors = run_cli(TRAIN, capsys)
    assert (code, errors) == (1, "")
    assert dup2 == [99]  # the rest of the output, and Python's flush at exit, go nowhere


def test_a_refused_run_prints_its_error_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model and optimizer lines come once every argument is checked (they came before a
    refused --checkpoint path)."""
    code = main(["train", "--epochs", "1", "--checkpoint", str(tmp_path / "missing" / "x.ckpt")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "--checkpoint" in err and "existing folder" in err


def test_cli_names_only_the_hidden_layers_when_they_change(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One activation name for a network of another depth: --hidden differs, --activation not."""
    code, errors = run_cli(
        [*TRAIN, "--epochs", "5", "--hidden", "4,4", "--resume", str(saved_run)], capsys
    )
    assert code == 2
    assert "--hidden 4 in the checkpoint, 4,4 now" in errors and "--activation" not in errors
