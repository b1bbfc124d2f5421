"""The shared helpers that no earlier mutation review aimed at (minidl._setting, minidl._validate,
minidl.nn._checks): tests that kill the hand-made bugs the suite let through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import nn

# -- minidl._setting --------------------------------------------------------------------------


def test_a_plain_subclass_read_before_its_setting_is_set_names_the_setting() -> None:
    """A subclass that does not override ``p`` reads the setting itself: before the
    constructor set it, the error names ``Sub.p`` (a slot read back through ``p`` would
    recurse until Python's limit)."""

    class Sub(nn.Dropout):
        pass

    assert "_p" not in vars(Sub)  # (no slot reader: nothing overrides p)
    bare = Sub.__new__(Sub)
    with pytest.raises(AttributeError, match=r"^Sub\.p has no value yet: Sub's constructor"):
        bare.p  # noqa: B018


def test_a_subclass_that_defines_the_slot_itself_keeps_it() -> None:
    """``read_overridden_settings``: the slot ``_p`` is read from ``self.p`` unless the class
    that overrides ``p`` defines ``_p`` too; its own ``_p``, a class default here, stays."""

    class Fixed(nn.Dropout):
        p = 0.9  # (a plain attribute: the constructor's self.p = ... sets the instance's)
        _p = 0.0

    assert vars(Fixed)["_p"] == 0.0
    layer = Fixed(0.5)
    x = torch.randn(4, 3)
    assert (layer.p, layer._p) == (0.5, 0.0)
    assert torch.equal(layer(x), x)  # forward reads the class's _p: no dropout


# -- minidl._validate -------------------------------------------------------------------------


def test_check_int_gives_a_python_int_for_a_numpy_integer() -> None:
    np = pytest.importorskip("numpy")
    from minidl._validate import check_int

    value = check_int("f", "n", np.int64(3))
    assert type(value) is int and value == 3


def test_check_real_writes_the_range_it_checks() -> None:
    """Each bound as it is (one of more than six significant digits whole: ``1`` for a bound of
    ``1.0000001`` would read as if ``1.0000002`` were refused for being above 1), and an
    unbounded side open."""
    from minidl._validate import check_real

    with pytest.raises(ValueError, match=r"^f: x must be in \[0, 1\.0000001\], got 1\.0000002$"):
        check_real("f", "x", 1.0000002, low=0.0, high=1.0000001)
    with pytest.raises(ValueError, match=r"^f: x must be in \(0\.5, inf\), got 0\.25$"):
        check_real("f", "x", 0.25, low=0.5, low_open=True)
    # An unbounded side is open: the value must be finite.
    with pytest.raises(ValueError, match=r"^f: x must be a finite number in \(-inf, 1\], got inf$"):
        check_real("f", "x", float("inf"), high=1.0)


def test_check_class_indices_names_the_value_out_of_range() -> None:
    from minidl._validate import check_class_indices

    # Both ends out of range: the negative one is named.
    with pytest.raises(ValueError, match=r"have 2 columns\), got -1$"):
        check_class_indices("f", "", torch.tensor([5, -1]), 2)
    with pytest.raises(ValueError, match=r"have 2 columns\), got 2$"):
        check_class_indices("f", "", torch.tensor([0, 2]), 2)
    check_class_indices("f", "", torch.tensor([0, 1]), 2)


def test_check_like_compares_the_dtype() -> None:
    from minidl._validate import check_like

    reference = torch.zeros(4, 2)
    with pytest.raises(
        ValueError,
        match=r"^f: x must hold samples like the training x, of shape "
        r"\(N, 2\), torch\.float32 on cpu; got \(N, 2\), torch\.float64 on cpu$",
    ):
        check_like("f", "x", torch.zeros(3, 2, dtype=torch.float64), reference, "the training x")
    check_like("f", "x", torch.zeros(3, 2), reference, "the training x")


def test_check_copyable_takes_a_meta_tensor_into_a_meta_target_only() -> None:
    from minidl._validate import check_copyable

    value = torch.zeros(2, device="meta")
    check_copyable("load", "w", value, torch.zeros(2, device="meta"))
    with pytest.raises(TypeError, match=r"^load: w is a meta tensor; expected a dense tensor"):
        check_copyable("load", "w", value, torch.zeros(2))


def test_a_seed_is_any_that_manual_seed_takes() -> None:
    """``torch.Generator.manual_seed`` takes -2**63 to 2**64 - 1 (a negative seed s is
    2**64 + s): all of them pass, and one past either end is refused."""
    from minidl._validate import check_seed

    for seed in (-(2**63), 2**63, 2**64 - 1):
        assert check_seed("f", seed) == seed
        torch.Generator().manual_seed(seed)
    for seed in (-(2**63) - 1, 2**64):
        with pytest.raises(ValueError, match=r"^f: seed must be in \[-2\*\*63, 2\*\*64 - 1\]"):
            check_seed("f", seed)


def test_a_size_past_the_largest_tensor_dimension_is_refused() -> None:
    from minidl.nn._checks import check_size

    assert check_size("Linear", "in_features", 2**63 - 1) == 2**63 - 1
    with pytest.raises(ValueError, match=r"^Linear: in_features must be at most 2\*\*63 - 1 "):
        check_size("Linear", "in_features", 2**63)


# -- minidl.nn._checks ------------------------------------------------------------------------


def test_a_module_cast_or_moved_since_its_forward_is_named_for_the_device_too() -> None:
    from minidl.nn._checks import check_still_fits

    with pytest.raises(
        RuntimeError,
        match=r"^Linear: the parameters are torch\.float32 on cpu "
        r"but the last forward ran in torch\.float32 on meta",
    ):
        check_still_fits("Linear", torch.zeros(2, device="meta"), torch.zeros(2))
    check_still_fits("Linear", torch.zeros(2), torch.zeros(3))


def test_only_a_0_dim_gradient_is_taken_for_the_loss_itself() -> None:
    """The hint that ``backward`` takes the gradient, not the loss, is for a 0-dim gradient;
    a gradient of another wrong shape gets the shapes only."""
    from minidl.nn._checks import check_grad_output

    shape = torch.Size([2, 3])
    with pytest.raises(ValueError, match=r"criterion\.backward\(\), not the loss$"):
        check_grad_output("Tanh", torch.tensor(1.0), shape)
    with pytest.raises(ValueError, match=r"\(the shape of the last forward's output\)$"):
        check_grad_output("Tanh", torch.zeros(3), shape)


def test_only_an_inputs_mismatch_says_how_to_mend_the_input() -> None:
    from minidl.nn._checks import check_like_parameter

    parameter = torch.zeros(2)
    with pytest.raises(TypeError, match=r"; convert the input or call \.to\(dtype=\.\.\.\)"):
        check_like_parameter("Linear", torch.zeros(2, dtype=torch.float64), parameter)
    with pytest.raises(
        TypeError,
        match=r"^Linear: gradient dtype torch\.float64 does not match "
        r"the parameters' dtype torch\.float32$",
    ):
        check_like_parameter("Linear", torch.zeros(2, dtype=torch.float64), parameter, "gradient")


def test_make_hidden_folder_refuses_when_every_name_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 names drawn, all another's folder: refused with a FileExistsError naming the prefix
    and the folder, ``made`` as it was given and the other folder untouched."""
    from minidl import _files

    monkeypatch.setattr(_files.secrets, "token_hex", lambda nbytes: "taken")
    (tmp_path / ".x-taken").mkdir()
    made: list[Path] = [tmp_path / "earlier"]
    with pytest.raises(FileExistsError, match=r"^\[Errno 17\] no free folder name \.x-\.\.\. in "):
        _files.make_hidden_folder(tmp_path, ".x-", made)
    assert made == [tmp_path / "earlier"]
    assert sorted(tmp_path.iterdir()) == [tmp_path / ".x-taken"]


def test_make_hidden_folder_keeps_its_name_before_making_it_and_skips_a_taken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is in ``made`` while the folder is made (an interrupt just then finds it
    there); a name already taken (another's folder) is skipped and not put in ``made``; the
    folder is private to its owner, as ``tempfile.mkdtemp`` makes one."""
    import os
    import stat

    from minidl import _files

    names = iter(["taken", "taken", "free"])
    monkeypatch.setattr(_files.secrets, "token_hex", lambda nbytes: next(names))
    (tmp_path / ".x-taken").mkdir()
    made: list[Path] = []
    seen: list[list[Path]] = []
    make = os.mkdir

    def recording(path: Any, mode: int = 0o777) -> None:
        seen.append(list(made))
        make(path, mode)

    monkeypatch.setattr(os, "mkdir", recording)
    folder = _files.make_hidden_folder(tmp_path, ".x-", made)
    assert folder == tmp_path / ".x-free" and made == [folder] and folder.is_dir()
    assert seen == [[tmp_path / ".x-taken"], [tmp_path / ".x-taken"], [folder]]
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
