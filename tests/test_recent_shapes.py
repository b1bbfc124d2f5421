"""Switching between batch shapes: what a module makes for a shape is kept for its next calls.

A ``Linear``, ``BatchedLinear``, ``CrossEntropyLoss`` and ``MSELoss`` keep what they made for the
last few input shapes (:class:`minidl.nn._recent.Recent`), so that an epoch's last, smaller
batch or an evaluation on another batch size costs no new tensors when the shape comes back.
The oracle is PyTorch autograd on every call of a sequence of shapes longer than the cache, and
an unchanged refusal where the module's parameters changed.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from minidl import nn
from minidl.nn._recent import Recent
from minidl.nn.stack import stack_models
from tests.helpers import F64, assert_close, helper_test_op

# 12 batch sizes, 10 of them different (more than the 8 a module keeps), returning to earlier
# ones after others, batch size 1 among them.
BATCHES = (5, 3, 5, 1, 3, 7, 2, 9, 4, 6, 8, 10, 11, 5, 1, 3)


def test_recent_keeps_the_last_values_and_drops_the_oldest() -> None:
    recent: Recent[str] = Recent(size=3)
    for key in "abc":
        assert recent.put(key, key.upper()) == key.upper()
    recent.put("a", "A again")  # a key kept already takes no room
    assert [recent.get(key) for key in "abc"] == ["A again", "B", "C"]
    recent.put("d", "D")  # full: the oldest put goes
    assert [recent.get(key) for key in "abcd"] == [None, "B", "C", "D"]
    assert len(recent) == 3
    recent.clear()
    assert len(recent) == 0 and recent.get("b") is None


def test_recent_drops_the_value_used_least_recently() -> None:
    recent: Recent[str] = Recent(size=3)
    for key in "abc":
        recent.put(key, key.upper())
    assert recent.get("a") == "A"  # a is now the most recent: b goes first
    recent.put("d", "D")
    assert [recent.get(key) for key in "abcd"] == ["A", None, "C", "D"]


def test_recent_makes_a_value_only_when_it_has_none() -> None:
    recent: Recent[list[int]] = Recent(size=2)
    made: list[str] = []

    def make(key: str) -> list[int]:
        made.append(key)
        return [len(made)]

    first = recent.get_or_make("a", lambda: make("a"))
    assert recent.get_or_make("a", lambda: make("a")) is first and made == ["a"]
    recent.get_or_make("b", lambda: make("b"))
    recent.get_or_make("c", lambda: make("c"))  # full: a goes
    assert recent.get_or_make("a", lambda: make("a")) == [4] and made == ["a", "b", "c", "a"]


def test_recent_key_put_again_drops_nothing_and_becomes_the_most_recent() -> None:
    """A key kept already takes no room even where it is not the oldest: putting it again
    when full drops nothing, and makes it the most recent."""
    recent: Recent[str] = Recent(size=3)
    for key in "abc":
        recent.put(key, key.upper())
    recent.put("b", "B again")
    assert len(recent) == 3 and recent.values() == ["A", "C", "B again"]
    recent.put("d", "D")  # full: a, the least recent, goes
    assert recent.values() == ["C", "B again", "D"]


def test_recent_lists_its_values_least_recently_used_first() -> None:
    recent: Recent[str] = Recent(size=4)
    for key in "abcd":
        recent.put(key, key.upper())
    assert recent.values() == ["A", "B", "C", "D"]
    recent.get("b")
    recent.get_or_make("a", lambda: "not made")
    assert recent.values() == ["C", "D", "B", "A"]


def test_recent_keeps_8_values_by_default_and_its_empty_copy_its_size() -> None:
    """A module's cache (Recent()) keeps 8 shapes; empty(), the cache a module's copy starts
    with, keeps as many as the one it was made from (Sequential's plans: 4)."""
    for recent, size in ((Recent[int](), 8), (Recent[int](size=2).empty(), 2)):
        for key in range(size + 1):
            recent.put(key, key)
        assert recent.values() == list(range(1, size + 1)), size


@pytest.mark.parametrize(
    ("size", "error"), [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_recent_refuses_a_size_that_keeps_nothing(size: object, error: type[Exception]) -> None:
    """A size below 1 was taken, and its first put raised a bare StopIteration (no oldest
    value to drop): the size is refused when the cache is made, naming it."""
    with pytest.raises(error, match=rf"^Recent: size must be an integer >= 1, got {size}$"):
        Recent(size)  # type: ignore[arg-type]


def test_recent_is_pickled_and_copied_empty() -> None:
    recent: Recent[torch.Tensor] = Recent(size=2)
    recent.put((4, 2), torch.ones(4))
    for other in (pickle.loads(pickle.dumps(recent)), copy.deepcopy(recent)):
        assert len(other) == 0
        for key in ((1,), (2,), (3,)):
            other.put(key, torch.zeros(1))
        assert len(other) == 2  # the size is kept


@pytest.mark.parametrize(
    "criterion",
    [nn.CrossEntropyLoss(), nn.MSELoss(), nn.MSELoss(reduction="mean")],
    ids=["cross-entropy", "MSE, class indices", "MSE mean, class indices"],
)
def test_every_call_of_a_sequence_of_shapes_matches_autograd(criterion: nn.Loss) -> None:
    torch.manual_seed(0)
    model = nn.mlp((3, 6, 5, 4), "tanh").to(dtype=F64)
    for batch in BATCHES:
        x = torch.randn(batch, 3, dtype=F64)
        y = torch.randint(0, 4, (batch,))
        helper_test_op(model, x, criterion, y)


def test_mse_of_dense_targets_over_a_sequence_of_shapes_matches_autograd() -> None:
    torch.manual_seed(0)
    model = nn.mlp((3, 6, 4), "relu").to(dtype=F64)
    criterion = nn.MSELoss()
    for batch in BATCHES:
        x, target = torch.randn(batch, 3, dtype=F64), torch.randn(batch, 4, dtype=F64)
        helper_test_op(model, x, criterion, target)


def test_a_stack_over_a_sequence_of_shapes_matches_its_models() -> None:
    torch.manual_seed(0)
    models = [nn.mlp((3, 6, 2), "tanh").to(dtype=F64) for _ in range(3)]
    copies = copy.deepcopy(models)
    for layout in ("layer", "model"):
        stack = stack_models(copy.deepcopy(models), layout=layout)
        criterion = nn.CrossEntropyLoss()
        for batch in BATCHES:
            x, y = torch.randn(3, batch, 3, dtype=F64), torch.randint(0, 2, (3, batch))
            stack.zero_grad()
            criterion(stack(x), y)
            stack.backward(criterion.backward())
            stacked = [parameter.grad for parameter in stack.parameters()]
            for index, model in enumerate(copies):
                model.zero_grad()
                alone = nn.CrossEntropyLoss()
                alone(model(x[index]), y[index])
                model.backward(alone.backward())
                for grad, parameter in zip(stacked, model.parameters(), strict=True):
                    assert_close(grad[index], parameter.grad, what=f"{layout}, batch {batch}")


def test_a_shape_seen_lately_reuses_what_was_made_for_it() -> None:
    layer, criterion = nn.Linear(3, 2), nn.CrossEntropyLoss()

    def call(batch: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        criterion(layer(torch.randn(batch, 3)), torch.zeros(batch, dtype=torch.int64))
        return layer._ones, criterion._constants

    ones, constants = call(5)
    call(3)
    assert call(5) == (ones, constants)  # the same tensors, not equal new ones
    for batch in range(10, 18):  # 8 other shapes: 5 is dropped
        call(batch)
    again, constants_again = call(5)
    assert again is not ones and constants_again is not constants
    assert torch.equal(again, ones)


def test_a_layer_given_other_parameters_forgets_the_shapes_it_accepted() -> None:
    layer = nn.Linear(3, 2).to(dtype=F64)
    for batch in (5, 3):
        layer(torch.randn(batch, 3, dtype=F64))
    layer.to(dtype=torch.float32)
    with pytest.raises(TypeError, match=r"Linear: input dtype torch\.float64 does not match"):
        layer(torch.randn(5, 3, dtype=F64))
    assert layer(torch.randn(5, 3)).dtype == torch.float32


def test_backward_takes_only_the_last_forwards_shape() -> None:
    layer = nn.Linear(3, 2)
    for batch in (5, 3):
        layer(torch.randn(batch, 3))
    with pytest.raises(ValueError, match=r"Linear: .*\(3, 2\)"):
        layer.backward(torch.randn(5, 2))
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_a_shallow_copy_keeps_shapes_of_its_own() -> None:
    # A copy shares the parameters until one of them is given new ones: then each must use
    # what was made for its own.
    layer = nn.Linear(3, 2)
    twin = copy.copy(layer)
    for batch in (4, 5):
        layer(torch.randn(batch, 3))
    # (a shallow copy shares the registry: the twin's new parameters are registered in one of
    # its own, as a forward refuses a Parameter set as a plain attribute)
    twin._parameters = {}
    del twin.weight, twin.bias
    twin.register_parameter("weight", nn.Parameter(torch.randn(2, 3, dtype=F64)))
    twin.register_parameter("bias", nn.Parameter(torch.randn(2, dtype=F64)))
    twin(torch.randn(4, 3, dtype=F64))
    x = torch.randn(4, 3)
    output = layer(x)
    layer.zero_grad()
    layer.backward(torch.ones_like(output))
    assert layer.bias.grad.tolist() == [4.0, 4.0]
    assert layer._ones.dtype == torch.float32


def test_a_model_layout_stack_keeps_one_gradient_temporary_whatever_the_batch_sizes() -> None:
    torch.manual_seed(0)
    stack = stack_models([nn.mlp((3, 6, 2), "tanh") for _ in range(4)], layout="model")
    criterion = nn.CrossEntropyLoss()
    temporaries: dict[int, set[int]] = {}
    for batch in BATCHES:
        x, y = torch.randn(4, batch, 3), torch.randint(0, 2, (4, batch))
        criterion(stack(x), y)
        stack.backward(criterion.backward())
        for index, layer in enumerate(stack):
            if isinstance(layer, nn.BatchedLinear) and layer._product is not None:
                temporaries.setdefault(index, set()).add(id(layer._product))
    assert temporaries  # (this CPU uses them for the model layout)
    assert all(len(ids) == 1 for ids in temporaries.values())


def test_a_batched_layer_whose_bias_is_removed_after_a_forward_adds_none() -> None:
    layer = nn.BatchedLinear(2, 3, 2).to(dtype=F64)
    x = torch.randn(2, 4, 3, dtype=F64)
    layer(x)
    layer.register_parameter("bias", None)
    assert torch.equal(layer(x), torch.bmm(x, layer.weight.data.transpose(1, 2)))
