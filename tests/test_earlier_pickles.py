"""Modules pickled by an earlier minidl version load and compute as they did.

``inplace`` (ReLU, LeakyReLU, ELU, SELU, SiLU, Dropout), BatchNorm1d's ``track_running_stats``,
SELU's ``scale`` and the losses' PyTorch options (``weight``, ``ignore_index``,
``label_smoothing``, ``pos_weight``) are refused when set; before, each set made a plain
attribute that the computation ignored, and a module pickled with one failed to load. The
pickles of tests/data/ were written by minidl as of commit 20ee7a9, the last version before
(tests/data/make_pickles_20ee7a9.py says how), with what each module computed then: the oracle.
A value that the module computes with anyway (``inplace=False``, PyTorch's default
``weight=None``) is taken without a word; another one, which it ignored, is dropped with a
``UserWarning`` naming the class, the attribute and the value.
"""

from __future__ import annotations

import copy
import copyreg
import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import nn
from minidl._frozen import FrozenDict
from minidl.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from minidl.nn.selu import SELU_SCALE
from tests.helpers import F64, assert_close

DATA = Path(__file__).resolve().parent / "data"
PICKLED = pickle.loads((DATA / "modules_20ee7a9.pickle").read_bytes())

#: The plain attributes of the set ``ignored``, as each warning names them.
IGNORED = [
    ("ReLU", "inplace=True", "as with inplace=False"),
    ("LeakyReLU", "inplace=True", "as with inplace=False"),
    ("ELU", "inplace=True", "as with inplace=False"),
    ("SELU", "scale=2.0", f"with its scale {SELU_SCALE!r}"),
    ("SELU", "inplace=True", "as with inplace=False"),
    ("SiLU", "inplace=True", "as with inplace=False"),
    ("Dropout", "inplace=True", "as with inplace=False"),
    ("BatchNorm1d", "track_running_stats=False", "as with track_running_stats=True"),
    (
        "CrossEntropyLoss",
        "weight=tensor([1., 2., 3.], dtype=torch.float64)",
        "without it (every class weighs the same)",
    ),
    (
        "CrossEntropyLoss",
        "ignore_index=1",
        "without it (every target is a class in [0, C): leave out the samples to skip)",
    ),
    (
        "CrossEntropyLoss",
        "label_smoothing=0.1",
        "without it (give the smoothed probabilities as the target: (1 - s) one_hot(y) + s / C)",
    ),
    (
        "NLLLoss",
        "weight=tensor([1., 2., 3.], dtype=torch.float64)",
        "without it (every class weighs the same)",
    ),
    (
        "NLLLoss",
        "ignore_index=0",
        "without it (every target is a class in [0, C): leave out the samples to skip)",
    ),
    (
        "BCEWithLogitsLoss",
        "weight=tensor([2.], dtype=torch.float64)",
        "without it (every element weighs the same)",
    ),
    (
        "BCEWithLogitsLoss",
        "pos_weight=tensor([3.], dtype=torch.float64)",
        "without it (positive targets weigh as negative ones)",
    ),
]


def _message(kind: str, value: str, computes: str) -> str:
    return (
        f"{kind}: {value}, pickled by an earlier minidl version that ignored it, is dropped "
        f"(setting it now raises): the {kind} computes as it did, {computes}"
    )


def _loaded(data: bytes, load: Any = pickle.loads) -> tuple[Any, list[str]]:
    """``load(data)`` and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load(data)
    assert all(w.category is UserWarning for w in caught), [w.category for w in caught]
    # (each names the line that loads, not one inside minidl, copy, pickle or torch)
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]
    return loaded, [str(w.message) for w in caught]


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pickle's inputs: a batch of 4 x 3 (float64), its classes and probabilities."""
    x, target, probabilities = PICKLED["inputs"]
    return torch.tensor(x, dtype=F64), torch.tensor(target), torch.tensor(probabilities, dtype=F64)


def _computes(modules: dict[str, Any], computed: dict[str, Any]) -> None:
    """Each module computes on the pickle's inputs what it computed in the version that
    pickled it: the output (the loss) and the input gradient, BatchNorm1d's running mean after,
    Dropout's mask from the seed 0; and its attributes read as constructed."""
    x, target, probabilities = _inputs()
    for name, module in modules.items():
        if name == "CrossEntropyLoss":
            out = module(x, target)
        elif name == "NLLLoss":
            out = module(torch.log_softmax(x, dim=1), target)
        elif name == "BCEWithLogitsLoss":
            out = module(x, probabilities)
        else:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                out = module(x)
        grad = module.backward() if name.endswith("Loss") else module.backward(torch.ones_like(x))
        expected = computed[name]
        assert_close(out, torch.tensor(expected[0], dtype=F64))
        assert_close(grad, torch.tensor(expected[1], dtype=F64))
        if name == "BatchNorm1d":
            assert_close(module.running_mean, torch.tensor(expected[2], dtype=F64))
            assert module.track_running_stats is True
        elif name.endswith("Loss"):
            assert not hasattr(module, "weight") and not hasattr(module, "ignore_index")
            options = {"weight", "ignore_index", "label_smoothing", "pos_weight"}
            assert not options & set(vars(module))
        else:
            assert module.inplace is False
            assert not {"inplace", "track_running_stats", "scale"} & set(vars(module))
    assert modules["SELU"].scale == SELU_SCALE


def test_modules_pickled_with_the_values_they_compute_with_load_without_a_word() -> None:
    """``inplace=False``, ``track_running_stats=True``, SELU's own scale and PyTorch's defaults
    ``weight=None``, ``ignore_index=-100``, ``label_smoothing=0.0`` and ``pos_weight=None``, set
    as plain attributes before: the modules load without a warning (the losses' options failed
    to load) and compute as they did."""
    loaded, messages = _loaded(PICKLED["taken"])
    assert messages == []
    _computes(loaded["modules"], loaded["computed"])


def test_modules_pickled_with_values_they_ignored_load_without_them_with_a_warning() -> None:
    """``inplace=True``, ``track_running_stats=False``, another scale, a loss's weight, ...:
    each is dropped with a warning naming the class, the attribute and the value, in the order
    pickled, and the modules compute as they did (each failed to load)."""
    loaded, messages = _loaded(PICKLED["ignored"])
    assert messages == [_message(*entry) for entry in IGNORED]
    _computes(loaded["modules"], loaded["computed"])


@pytest.mark.parametrize("how", ["deepcopy", "copy", "pickle"])
def test_modules_loaded_from_an_earlier_pickle_copy_and_pickle_without_a_word(how: str) -> None:
    """Loaded, a module holds what its class would: a copy, a deep copy or a pickle of it loads
    without a warning and computes as the earlier version did."""
    loaded, _ = _loaded(PICKLED["ignored"])
    modules = loaded["modules"]
    copy_of = {
        "deepcopy": copy.deepcopy,
        "copy": copy.copy,
        "pickle": lambda module: pickle.loads(pickle.dumps(module)),
    }[how]
    copied, messages = _loaded(modules, lambda modules: {n: copy_of(m) for n, m in modules.items()})
    assert messages == []
    _computes(copied, loaded["computed"])


def test_a_model_saved_by_torch_save_before_loads_and_trains_as_it_did() -> None:
    """``torch.save`` of a network (BatchNorm1d's track_running_stats=False, ReLU's and
    Dropout's inplace=True), its CrossEntropyLoss (label_smoothing=0.1) and an SGD optimizer:
    ``torch.load(weights_only=False)`` gives them with four warnings (it failed), and a step
    gives the output, loss, gradients and parameters that the earlier version gave; so does a
    deep copy of the three, without a warning."""
    data = (DATA / "model_20ee7a9.pt").read_bytes()

    def load(data: bytes) -> Any:
        return torch.load(io.BytesIO(data), weights_only=False)

    saved, messages = _loaded(data, load)
    assert messages == [
        _message("BatchNorm1d", "track_running_stats=False", "as with track_running_stats=True"),
        _message("ReLU", "inplace=True", "as with inplace=False"),
        _message("Dropout", "inplace=True", "as with inplace=False"),
        _message(*IGNORED[10]),
    ]
    trio = (saved["model"], saved["loss"], saved["optimizer"])
    copied, messages = _loaded(trio, copy.deepcopy)
    assert messages == []
    x, target, _ = _inputs()
    for model, loss, optimizer in (trio, copied):
        with torch.random.fork_rng():
            torch.manual_seed(1)
            output = model(x)
        assert_close(output, torch.tensor(saved["output"], dtype=F64))
        assert_close(loss(output, target), torch.tensor(saved["loss_value"], dtype=F64))
        model.backward(loss.backward())
        for parameter, grad in zip(model.parameters(), saved["gradients"], strict=True):
            assert_close(parameter.grad, torch.tensor(grad, dtype=F64))
        optimizer.step()
        for parameter, value in zip(model.parameters(), saved["parameters"], strict=True):
            assert_close(parameter.data, torch.tensor(value, dtype=F64))


@pytest.mark.parametrize(
    ("kind", "name", "value", "shown"),
    [
        ("ReLU", "inplace", "yes", "'yes'"),
        ("Dropout", "inplace", 0, "0"),
        ("BatchNorm1d", "track_running_stats", None, "None"),
        (
            "CrossEntropyLoss",
            "weight",
            torch.ones(9),
            "a tensor of shape (9,) and dtype torch.float32",
        ),
        ("BCEWithLogitsLoss", "pos_weight", 1.0, "1.0"),
        ("SELU", "scale", "1.0", "'1.0'"),
    ],
)
def test_a_plain_attribute_of_another_kind_that_was_ignored_is_dropped_by_name(
    kind: str, name: str, value: object, shown: str
) -> None:
    """A value that the setting refuses by its type (``inplace='yes'``, ``0``), or a loss's
    option of another value than PyTorch's default, as a module of that version held it (its
    state with the plain attribute added): dropped with a warning that names it (a tensor of
    more than 8 elements by its shape and dtype), the module's setting as constructed (each
    failed to load)."""
    module = nn.BatchNorm1d(3) if kind == "BatchNorm1d" else getattr(nn, kind)()
    state = module.__getstate__()
    state[name] = value
    loaded = type(module).__new__(type(module))
    with pytest.warns(UserWarning) as caught:
        loaded.__setstate__(state)
    computes = next(entry[2] for entry in IGNORED if entry[0] == kind and name in entry[1])
    assert [str(w.message) for w in caught] == [_message(kind, f"{name}={shown}", computes)]
    assert name not in vars(loaded)
    assert repr(loaded) == repr(module)


def test_a_checkpoint_pickled_before_is_read_only_and_loads_as_one_read_now() -> None:
    """A Checkpoint that read_checkpoint gave, pickled when it was pickled by its fields (a
    frozen dataclass then): its header and tensors are read-only, as those of one read now (they
    loaded as plain dicts, which a change reached), and it restores the model's parameters."""
    saved = pickle.loads((DATA / "checkpoint_20ee7a9.pickle").read_bytes())
    checkpoint = saved["checkpoint"]
    assert type(checkpoint.header) is FrozenDict and type(checkpoint.tensors) is FrozenDict
    with pytest.raises(TypeError, match=r"^Checkpoint: its header is read-only "):
        checkpoint.header["training"]["epoch"] = 4
    with pytest.raises(TypeError, match=r"^Checkpoint: its tensors are read-only "):
        del checkpoint.tensors["model.0.weight"]
    layer = nn.Sequential(nn.Linear(2, 1, dtype=F64))
    assert load_checkpoint(checkpoint, layer).epoch == 3
    for parameter, value in zip(layer.parameters(), saved["parameters"], strict=True):
        assert torch.equal(parameter.data, torch.tensor(value, dtype=F64))


class _ByFields(pickle.Pickler):
    """Pickles a Checkpoint as one was pickled before (a frozen dataclass): made by
    ``__new__``, then given ``fields`` as its state."""

    def __init__(self, file: io.BytesIO, fields: dict[str, Any]) -> None:
        super().__init__(file, protocol=4)
        self.fields = fields

    def reducer_override(self, obj: object) -> Any:
        if type(obj) is Checkpoint:
            return (copyreg.__newobj__, (Checkpoint,), self.fields)
        return NotImplemented


def test_a_checkpoint_pickled_before_with_a_header_changed_by_hand_is_refused() -> None:
    """A header changed after read_checkpoint (an epoch of -1, which a checkpoint refuses), as
    a plain dict could be then and pickled so: refused as loaded, in the constructor's words (it
    loaded, unchecked, for load_checkpoint to apply)."""
    checkpoint = pickle.loads((DATA / "checkpoint_20ee7a9.pickle").read_bytes())["checkpoint"]
    header = copy.deepcopy(checkpoint.header)
    header["training"]["epoch"] = -1
    tensors = dict(checkpoint.tensors)
    with pytest.raises(CheckpointError) as expected:
        Checkpoint(header=header, tensors=tensors)
    data = io.BytesIO()
    _ByFields(data, {"header": header, "tensors": tensors}).dump(checkpoint)
    with pytest.raises(CheckpointError) as info:
        pickle.loads(data.getvalue())
    assert str(info.value) == str(expected.value)
