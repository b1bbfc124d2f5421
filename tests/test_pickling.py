"""Models and optimizers through pickle and ``copy.deepcopy``.

A flat model's parameters are views of one buffer, and the per-model parameters of a stack
(``model_parameters``) views of the stack's. Pickled as they are, each view would take its whole
storage along and come back a view of nothing in common. Each parameter is written as a view of
one tensor over its whole storage, which pickle writes once: the copies share storage as the
originals did, in the same layout. An optimizer finds its layout again at its next step (its
count of parameter replacements means nothing in another process).
"""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.nn.flat import flat_buffer
from tests.helpers import F64, tree_environment


def _flat(model: nn.Module) -> bool:
    parameters = list(model.parameters())
    return (
        flat_buffer([p.data for p in parameters]) is not None
        and flat_buffer([p.grad for p in parameters]) is not None
    )


def _step(model: nn.Module, optimizer: optim.Optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 2, dtype=F64, generator=generator)
    target = torch.randint(0, 2, (8,), generator=generator)
    criterion = nn.CrossEntropyLoss()
    optimizer.zero_grad()
    criterion(model(x), target)
    model.backward(criterion.backward())
    optimizer.step()


def _trained() -> tuple[nn.Sequential, optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.mlp((2, 64, 64, 2), "relu", dtype=F64)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, optimizer, 0)
    return model, optimizer


@pytest.mark.parametrize("copier", ["pickle", "deepcopy"])
def test_a_model_and_its_optimizer_go_on_training_as_the_original(copier: str) -> None:
    """The copies train on, bit for bit as the original does, from one flat buffer; the
    original is left as it was."""
    model, optimizer = _trained()
    if copier == "pickle":
        copied_model, copied_optimizer = pickle.loads(pickle.dumps((model, optimizer)))
    else:
        copied_model, copied_optimizer = copy.deepcopy((model, optimizer))
    assert _flat(copied_model)
    for seed in (1, 2, 3):
        _step(model, optimizer, seed)
        _step(copied_model, copied_optimizer, seed)
    assert copied_optimizer._flat is not None  # the one-operation update, found again
    for mine, theirs in zip(model.parameters(), copied_model.parameters(), strict=True):
        assert torch.equal(mine.data, theirs.data)
        assert mine.data.untyped_storage().data_ptr() != theirs.data.untyped_storage().data_ptr()
    for name, state in optimizer.state.items():
        assert torch.equal(state, copied_optimizer.state[name])


def test_an_optimizer_loaded_in_another_process_updates_its_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An optimizer remembers the count of parameter replacements at which it last found its
    layout. Loaded where the count happens to have that value (another process), it used to
    skip the search and update (and zero) the copy of the buffer its pickled views held."""
    model, optimizer = _trained()
    seen = optimizer._replacements_seen
    copied_model, copied_optimizer = pickle.loads(pickle.dumps((model, optimizer)))
    monkeypatch.setattr(nn.Parameter, "replacements", seen)
    before = [p.data.clone() for p in copied_model.parameters()]
    _step(copied_model, copied_optimizer, 1)
    _step(model, optimizer, 1)
    for old, new, expected in zip(
        before, copied_model.parameters(), model.parameters(), strict=True
    ):
        assert not torch.equal(old, new.data)
        assert torch.equal(new.data, expected.data)


class _LateScale(nn.Module):
    """A per-feature scale, registered after the module is made (none at first)."""

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        scale = self._parameters.get("scale")
        return input if scale is None else input * scale.data

    def backward(self, grad_output: Tensor) -> Tensor:
        scale = self._parameters.get("scale")
        if scale is None:
            return grad_output
        scale.grad += (grad_output * self._input).sum(0)
        return grad_output * scale.data


def test_a_chain_loaded_in_another_process_finds_a_parameter_registered_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Sequential remembers the count of registrations at which it last found which children
    have parameters. Loaded where the count happens to have that value (another process), it
    skipped the search, and backward_parameters (which fit calls) gave a parameter registered
    on a child after loading no gradient. Review."""
    model = nn.Sequential(_LateScale(), nn.Linear(2, 2, dtype=F64))
    x = torch.randn(4, 2, dtype=F64)
    model.backward_parameters(torch.ones_like(model(x)))
    seen = model._registrations_seen
    copied = pickle.loads(pickle.dumps(model))
    copied[0].register_parameter("scale", nn.Parameter(torch.ones(2, dtype=F64)))
    monkeypatch.setattr(nn.Module, "_registrations", seen)  # (the other process's count)
    copied.backward_parameters(torch.ones_like(copied(x)))
    assert copied[0].scale.grad.abs().sum() > 0
    assert torch.equal(copied[0].scale.grad, (copied[1].weight.data.sum(0) * x).sum(0))


def test_a_pickled_model_holds_its_parameters_once() -> None:
    """Values and gradients once each (plus small caches), not the whole buffer per parameter."""
    model, _ = _trained()
    parameter_bytes = 8 * model.num_parameters()
    assert len(pickle.dumps(model)) < 3 * parameter_bytes  # (17 times when each view took all)
    copied = pickle.loads(pickle.dumps(model))
    storages = {p.data.untyped_storage().data_ptr() for p in copied.parameters()}
    assert len(storages) == 1


@pytest.mark.parametrize("inference", [False, True], ids=["", "in-inference-mode"])
@pytest.mark.parametrize("copier", ["pickle", "deepcopy"])
@pytest.mark.parametrize("layout", ["layer", "model"])
def test_a_stack_and_its_per_model_optimizers_stay_together(
    copier: str, layout: str, inference: bool
) -> None:
    """The per-model parameters of a stack are views of its layers' parameters: copied together
    with their optimizers, they still are (the copied optimizers train the copied stack), and a
    ``layout="model"`` stack keeps its layout; also for a copy made inside
    ``torch.inference_mode()`` (each storage comes back out of it once, not each view)."""
    torch.manual_seed(0)
    stack = nn.stack_models([nn.mlp((3, 5, 2), "tanh", dtype=F64) for _ in range(2)], layout=layout)
    if layout == "model":
        optimizers = [optim.SGD([nn.flat_model_parameters(stack, r)], lr=0.1) for r in range(2)]
    else:
        optimizers = [optim.SGD(nn.model_parameters(stack, r), lr=0.1) for r in range(2)]
    with torch.inference_mode(inference):
        if copier == "pickle":
            copied, copied_optimizers = pickle.loads(pickle.dumps((stack, optimizers)))
        else:
            copied, copied_optimizers = copy.deepcopy((stack, optimizers))
    if layout == "model":
        for r in range(2):
            nn.flat_model_parameters(copied, r)  # (raises unless the layout was kept)
    criterion = nn.CrossEntropyLoss()
    x, target = torch.randn(2, 6, 3, dtype=F64), torch.randint(0, 2, (2, 6))
    for model, group in ((stack, optimizers), (copied, copied_optimizers)):
        for optimizer in group:
            optimizer.zero_grad()
        criterion(model(x), target)
        model.backward(criterion.backward())
        for optimizer in group:
            optimizer.step()
    for mine, theirs in zip(stack.parameters(), copied.parameters(), strict=True):
        assert torch.equal(mine.data, theirs.data)


def test_copies_made_in_inference_mode_train_outside_it() -> None:
    """Parameters, buffers and optimizer state of a copy made inside ``torch.inference_mode()``
    are normal tensors, which can be updated in place outside it."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for copier in (copy.deepcopy, lambda pair: pickle.loads(pickle.dumps(pair))):
        with torch.inference_mode():
            copied, copied_optimizer = copier((model, optimizer))
        # (the state too before any step, which would copy it: it is changed in place here)
        assert not any(t.is_inference() for t in copied_optimizer.state.values())
        copied_optimizer.state["momentum_buffer"].mul_(0.5)
        criterion = nn.CrossEntropyLoss()
        criterion(copied(torch.randn(5, 3)), torch.tensor([0, 1, 1, 0, 1]))
        copied.backward(criterion.backward())
        copied_optimizer.step()
        assert copied[1].num_batches_tracked == 1  # type: ignore[union-attr]


def test_a_model_that_read_an_autograd_input_can_be_copied() -> None:
    """Its caches hold tensors of that graph, which ``copy.deepcopy`` refuses to copy: they are
    copied detached, and the copy's backward gives the original's numbers."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    model(torch.randn(2, 3, requires_grad=True) * 2)
    copied = copy.deepcopy(model)
    grad = torch.randn(2, 4)
    assert torch.equal(copied.backward(grad), model.backward(grad).detach())


def test_a_copy_made_under_anomaly_detection_is_its_own_model() -> None:
    """The checks :func:`minidl.detect_anomaly` sets on each module call that module: a copy
    does not take them along (it would run the original)."""
    import minidl

    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    with minidl.detect_anomaly(model):
        copied = copy.deepcopy(model)
        pickled = pickle.loads(pickle.dumps(model))
    for other in (copied, pickled):
        other[0].weight.data.zero_()  # type: ignore[union-attr]
        other[0].bias.data.zero_()  # type: ignore[union-attr]
        assert torch.equal(other(torch.randn(2, 3)), torch.zeros(2, 4))


def test_a_loss_goes_on_after_pickling() -> None:
    """A loss keeps constants for the last batch shape, some views of others: a copy gives the
    original's loss and gradient for a batch of that shape."""
    criterion = nn.CrossEntropyLoss()
    logits, target = torch.randn(5, 3, dtype=F64), torch.tensor([0, 2, 1, 1, 0])
    criterion(logits, target)
    for copied in (pickle.loads(pickle.dumps(criterion)), copy.deepcopy(criterion)):
        other_logits = torch.randn(5, 3, dtype=F64)
        assert torch.equal(copied(other_logits, target), criterion(other_logits, target))
        assert torch.equal(copied.backward(), criterion.backward())


def test_a_pickled_model_keeps_its_buffers_and_modes() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(0.5), nn.Linear(3, 2))
    model(torch.randn(6, 2))
    model[2].eval()
    copied = pickle.loads(pickle.dumps(model))
    assert [m.training for m in copied] == [True, True, False, True]
    for (name, mine), (_, theirs) in zip(
        model.state_dict().items(), copied.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    assert copied[1].running_mean is copied[1]._buffers["running_mean"]
    copied.eval()
    model.eval()
    x = torch.randn(4, 2)
    assert torch.equal(copied(x), model(x))


def test_nll_loss_pickled_with_its_target_rather_than_the_index_gives_its_gradient() -> None:
    """An NLLLoss pickled when it kept the last target (now the index, ``target.unsqueeze(1)``)
    comes back with the index made from it, and backward gives the same gradient."""
    loss = nn.NLLLoss()
    prediction = torch.log_softmax(torch.randn(4, 3), dim=1)
    target = torch.tensor([0, 2, 1, 2])
    loss(prediction, target)
    expected = loss.backward()
    state = pickle.loads(pickle.dumps(loss)).__dict__.copy()
    del state["_index"]
    state["_target"] = target
    old = nn.NLLLoss.__new__(nn.NLLLoss)
    old.__setstate__(state)
    assert torch.equal(old.backward(), expected)


def test_nll_loss_pickled_by_a_version_that_kept_the_target_loads_and_gives_its_gradient() -> None:
    """As written by the previous version: the kept target goes through Module.__getstate__,
    which writes it as a view of its storage (a StorageView), not as a tensor."""
    loss = nn.NLLLoss()
    prediction = torch.log_softmax(torch.randn(4, 3), dim=1)
    target = torch.tensor([0, 2, 1, 2])
    loss(prediction, target)
    expected = loss.backward()
    del loss.__dict__["_index"]
    loss.__dict__["_target"] = target
    restored = pickle.loads(pickle.dumps(loss))
    assert "_target" not in vars(restored)
    assert torch.equal(restored.backward(), expected)


def test_a_sequence_of_schedules_loaded_in_another_process_restarts_from_the_first_ones_rate(
    tmp_path: Path,
) -> None:
    """A SequentialSchedule restarts its schedules from the reference rate of the one built
    first. Schedules counted their order in the process that built them: a warm-up pickled with
    its optimizer and loaded in a fresh process (whose count starts again) came after a decay
    built there on it, and the sequence restarted from the warm-up's first rate, ten times too
    low. The optimizer counts them now, so the order travels with it."""
    optim.StepDecay(optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0), step_size=1)  # (built before)
    optimizer = optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=4, start_factor=0.1)
    path = tmp_path / "warmup.pickle"
    path.write_bytes(pickle.dumps((optimizer, warmup)))
    build = (
        "decay = optim.CosineAnnealing(optimizer, T_max=10)\n"
        "sequence = optim.SequentialSchedule(optimizer, [warmup, decay], milestones=[4])\n"
        "rates = [sequence.base_lr] + [sequence.lr_at(step) for step in range(8)]\n"
    )
    script = (
        "import json, pickle, sys\n"
        "from minidl import optim\n"
        "optimizer, warmup = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        f"{build}print(json.dumps(rates))\n"
    )
    env = tree_environment(OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    namespace = {"optim": optim, "optimizer": optimizer, "warmup": warmup}
    exec(build, namespace)  # the same, in the process that built the warm-up
    expected = namespace["rates"]
    assert expected[0] == 0.1
    assert json.loads(result.stdout) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cross_entropy_pickled_with_five_constants_gives_its_gradient_and_loss(
    dtype: torch.dtype,
) -> None:
    """A CrossEntropyLoss pickled by the version whose constants were five tensors (without
    whether the loss is a dot product) after a forward: backward, and a forward on logits of
    the same shape, give what the loss gave, rather than fail to unpack them."""
    logits = torch.randn(4, 3).to(dtype)
    target = torch.tensor([0, 2, 1, 2])
    loss = nn.CrossEntropyLoss()
    value = loss(logits, target)
    gradient = loss.backward()
    state = pickle.loads(pickle.dumps(loss)).__dict__.copy()
    state["_constants"] = state["_constants"][:5]
    state["_used"] = state["_used"][:5]
    old = nn.CrossEntropyLoss.__new__(nn.CrossEntropyLoss)
    old.__setstate__(state)
    assert torch.equal(old.backward(), gradient)
    assert torch.equal(old(logits, target), value)
    assert torch.equal(old.backward(), gradient)


# -- copy.copy: PyTorch's shallow copy, a second module over the same state ---------------------


def _batch_norm_pair() -> tuple[nn.BatchNorm1d, torch.nn.BatchNorm1d, torch.Tensor]:
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    ours, theirs = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    ours(x)
    theirs(x)
    return ours, theirs, x


def test_a_move_of_a_shallow_copy_moves_the_original_as_pytorch_s_does() -> None:
    """``copy.copy(bn).to(torch.float64)``: PyTorch's shallow copy shares the registries, and
    the original's parameters and buffers are float64 after it, its state dict and a training
    forward (output, running statistics) those of one moved itself. minidl's moved the shared
    registry and the parameters, not the original's buffer attributes: its state_dict,
    load_state_dict and to refused them, and its forward mixed float32 statistics with float64
    parameters. Both directions, and a copy of the copy."""
    ours, theirs, x = _batch_norm_pair()
    copy.copy(theirs).to(F64)
    copy.copy(copy.copy(ours)).to(F64)
    expected = theirs.state_dict()
    assert all(value.dtype == F64 for name, value in expected.items() if "num_batches" not in name)
    got = ours.state_dict()
    assert got.keys() == expected.keys()
    for name, value in got.items():
        assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    torch.testing.assert_close(ours(x.to(F64)), theirs(x.to(F64)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-12, atol=1e-12)
    ours.load_state_dict(ours.state_dict())
    # The other way: the original moved, the copy follows.
    original = nn.BatchNorm1d(3)
    shallow = copy.copy(original)
    original.to(F64)
    assert shallow.running_mean is original.running_mean and shallow.weight is original.weight
    assert shallow.running_mean.dtype == F64 and shallow.state_dict().keys() == got.keys()


def test_a_buffer_registered_in_a_shallow_copy_is_the_original_s() -> None:
    """As in PyTorch (whose attributes are looked up in the shared registry), a buffer or a
    parameter registered in the copy is the original's attribute too: the original's
    state_dict holds it and takes it (it refused the registered buffer that its attribute was
    not)."""
    original = nn.BatchNorm1d(3)
    shallow = copy.copy(original)
    scale = shallow.register_buffer("scale", torch.ones(3))
    weight = shallow.register_parameter("weight", nn.Parameter(torch.full((3,), 2.0)))
    assert original.scale is scale and original.weight is weight
    assert torch.equal(original.state_dict()["scale"], torch.ones(3))
    assert torch.equal(original.state_dict()["weight"], torch.full((3,), 2.0))


def test_a_deep_copy_or_a_pickle_of_a_shallow_copy_shares_nothing() -> None:
    """A deep copy (or a pickle) has a state of its own: moving it, or registering in it,
    leaves the original and its shallow copies as they were."""
    original = nn.BatchNorm1d(3)
    shallow = copy.copy(original)
    for other in (copy.deepcopy(shallow), pickle.loads(pickle.dumps(shallow))):
        other.to(F64)
        other.register_buffer("scale", torch.ones(3))
    for module in (original, shallow):
        assert module.running_mean.dtype == torch.float32 and module.weight.dtype == torch.float32
        assert "scale" not in module.state_dict()


def _doubled(input: torch.Tensor) -> torch.Tensor:
    """A forward set on an instance (defined at module level: pickled by its name)."""
    return 2 * input


def _tripled(grad_output: torch.Tensor) -> torch.Tensor:
    """A backward set on an instance."""
    return 3 * grad_output


def _shape_of(module: object, input: torch.Tensor) -> tuple[int, ...]:
    """Bound to a module and set on it as another method."""
    return tuple(input.shape)


_COPIERS: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda module: pickle.loads(pickle.dumps(module)),
}


def _set_on_instance(module: Any, bound: bool) -> None:
    module.forward = _doubled
    module.backward = _tripled
    module.backward_parameters = _tripled
    module.note = [1, 2]
    if bound:  # (a bound method pickles as a lookup of its name on the module: not here)
        module.shape_of = types.MethodType(_shape_of, module)


def _kept(original: Any, copied: Any, name: str) -> str:
    """How the copy holds the attribute ``name`` that the original's instance holds."""
    missing = object()
    value, before = vars(copied).get(name, missing), vars(original)[name]
    if value is missing:
        return "dropped"
    if value is before:
        return "the same"
    if isinstance(value, types.MethodType):
        return "bound to the copy" if value.__self__ is copied else "bound elsewhere"
    return "equal" if value == before else "changed"


@pytest.mark.parametrize("copier", list(_COPIERS))
def test_copies_keep_what_is_set_on_the_instance_as_pytorch_s_do(copier: str) -> None:
    """A forward, backward and backward_parameters set on the instance (and a plain attribute,
    and a method bound to the module) are kept by copy.copy, copy.deepcopy and pickle as
    torch.nn.Linear's are: the same functions, the list the same in a shallow copy and an
    equal one otherwise, the bound method the same in a shallow copy and bound to a deep copy;
    and the copy computes with them. minidl's dropped forward, backward and
    backward_parameters in all three (it meant to drop the checks of detect_anomaly alone)."""
    names = ["forward", "backward", "backward_parameters", "note"]
    if copier != "pickle":
        names.append("shape_of")
    ours, theirs = nn.Linear(2, 3, dtype=F64), torch.nn.Linear(2, 3, dtype=F64)
    for module in (ours, theirs):
        _set_on_instance(module, bound=copier != "pickle")
    our_copy, their_copy = _COPIERS[copier](ours), _COPIERS[copier](theirs)
    expected = {
        "copy": dict.fromkeys(names, "the same"),
        "deepcopy": {**dict.fromkeys(names, "the same"), "note": "equal"},
        "pickle": {**dict.fromkeys(names, "the same"), "note": "equal"},
    }[copier]
    if copier == "deepcopy":
        expected["shape_of"] = "bound to the copy"
    assert {name: _kept(theirs, their_copy, name) for name in names} == expected
    assert {name: _kept(ours, our_copy, name) for name in names} == expected
    x = torch.randn(4, 2, dtype=F64)
    assert torch.equal(our_copy(x), 2 * x) and torch.equal(our_copy.backward(x), 3 * x)
    assert our_copy.weight.grad.count_nonzero() == 0  # (the class's backward_parameters: not run)
    our_copy.backward_parameters(x)
    assert our_copy.weight.grad.count_nonzero() == 0


def test_a_shallow_copy_holds_the_tensors_of_the_instance_as_pytorch_s_does() -> None:
    """Tensors set on the instance (a slice of another, one of an autograd graph, one in a
    tuple) are the same objects in copy.copy's copy as in torch.nn.Linear's, so a change in
    place through one shows in the other, and the copy of a Linear after a forward gives the
    original's gradients. minidl's copy held them as a pickle writes them: the slices copied
    (the part of the storage they reach), the graph's tensor detached."""
    ours, theirs = nn.Linear(2, 3, dtype=F64), torch.nn.Linear(2, 3, dtype=F64)
    x = torch.randn(4, 2, dtype=F64)
    ours(x[1:])
    held = []
    for module in (ours, theirs):
        base = torch.ones(6, dtype=F64)
        module.mask = base[::2]
        module.pair = (base[:2], "kept")
        module.scaled = torch.ones(3, dtype=F64, requires_grad=True) * 2
        copied = copy.copy(module)
        module.mask.mul_(5)
        held.append(
            (
                [getattr(copied, name) is getattr(module, name) for name in ("mask", "scaled")],
                copied.pair[0] is module.pair[0],
                copied.mask.tolist(),
                copied.scaled.requires_grad,
            )
        )
    assert held[0] == held[1] == ([True, True], True, [5.0, 5.0, 5.0], True)
    shallow = copy.copy(ours)
    grad = torch.randn(3, 3, dtype=F64)
    expected = ours.backward(grad)
    ours.zero_grad()
    assert torch.equal(shallow.backward(grad), expected)
    assert torch.equal(ours.weight.grad, grad.T @ x[1:])


def test_a_shallow_copy_has_new_empty_caches_and_leaves_later_copies_as_they_were() -> None:
    """copy.copy gives the copy its own caches of per-shape tensors, new and empty, the
    original's left as they are; and a deep copy or a pickle made after it, of the original or
    of the copy, holds a graph's tensor detached, as one made before it (a deep copy of the
    tensor itself is refused, as it is not a leaf)."""
    layer = nn.Linear(2, 3, dtype=F64)
    layer(torch.randn(4, 2, dtype=F64))
    layer(torch.randn(5, 2, dtype=F64))
    assert len(layer._shapes) == 2
    shallow = copy.copy(layer)
    assert shallow._shapes is not layer._shapes and len(shallow._shapes) == 0
    assert len(layer._shapes) == 2
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(torch.ones(3, dtype=F64, requires_grad=True) * 2)
    for module in (layer, shallow):
        module.scaled = torch.ones(3, dtype=F64, requires_grad=True) * 2
        for copier in ("deepcopy", "pickle"):
            copied = _COPIERS[copier](module)
            assert not copied.scaled.requires_grad, copier
            assert torch.equal(copied.scaled, torch.full((3,), 2.0, dtype=F64)), copier


class _Snapshot(nn.Module):
    """A module of one's own whose state holds a deep copy of its child, taken as it is
    copied."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 3, dtype=F64)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["snapshot"] = copy.deepcopy(self.inner)
        return state


def test_the_state_another_module_gives_inside_a_shallow_copy_is_a_deep_copy_s() -> None:
    """Inside copy.copy of a module, only that module's tensors are kept as they are: a deep
    copy of another that its state asks for (a module of one's own keeping a snapshot of its
    child) holds a graph's tensor detached, as one made outside it."""
    outer = _Snapshot()
    outer.inner.scaled = torch.ones(3, dtype=F64, requires_grad=True) * 2
    shallow = copy.copy(outer)
    assert shallow.inner is outer.inner
    assert not shallow.snapshot.scaled.requires_grad
    assert torch.equal(shallow.snapshot.scaled, torch.full((3,), 2.0, dtype=F64))


class _Refusing(nn.Linear):
    """A module of one's own whose state refuses to be taken while ``refuse`` is set."""

    refuse = False

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self.refuse:
            raise RuntimeError("not now")
        return state


def test_a_shallow_copy_that_fails_leaves_later_copies_as_they_were() -> None:
    """copy.copy marks its request for the state (see Module.__copy__) only while it asks: a
    module of one's own whose ``__getstate__`` raises there leaves no mark, and a deep copy
    or a pickle made after it holds a graph's tensor detached, as one made before it. (With
    the mark left set where ``__getstate__`` raised, a deep copy of the module kept the
    graph's tensor as it was, and failed as a deep copy of that tensor does.)"""
    layer = _Refusing(2, 3, dtype=F64)
    layer.scaled = torch.ones(3, dtype=F64, requires_grad=True) * 2
    layer.refuse = True
    with pytest.raises(RuntimeError, match="not now"):
        copy.copy(layer)
    layer.refuse = False
    for copier in ("deepcopy", "pickle"):
        copied = _COPIERS[copier](layer)
        assert not copied.scaled.requires_grad, copier
        assert torch.equal(copied.scaled, torch.full((3,), 2.0, dtype=F64)), copier


class _Counter:
    """An object with a method, which a module may hold bound to it."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, n: int) -> int:
        self.count += n
        return self.count


@pytest.mark.parametrize("copier", list(_COPIERS))
def test_a_method_bound_to_another_object_stays_bound_to_it(copier: str) -> None:
    """An attribute holding a method bound to another object than the module (another
    module's, a plain object's) is kept bound to that object, as torch.nn's copies keep it
    (in a deep copy or a pickle, to that object's copy): only a method bound to the module
    itself is bound to the module's copy."""
    ours, theirs = nn.Linear(2, 3, dtype=F64), torch.nn.Linear(2, 3, dtype=F64)
    held = []
    for module in (ours, theirs):
        module.counted = _Counter().add
        module.other_forward = nn.Linear(2, 3, dtype=F64).forward
        copied = _COPIERS[copier](module)
        counter, linear = copied.counted.__self__, copied.other_forward.__self__
        held.append(
            (
                type(counter).__name__,
                counter is module.counted.__self__,
                copied.counted(2),
                type(linear).__name__,
                linear is copied,
                linear is module.other_forward.__self__,
            )
        )
    same = copier == "copy"
    assert held[0] == held[1] == ("_Counter", same, 2, "Linear", False, same)


class _Passing:
    """A callable object that takes no weak reference (no ``__weakref__`` slot)."""

    __slots__ = ()

    def __call__(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


@pytest.mark.parametrize("copier", ["copy", "deepcopy"])
def test_another_module_s_check_set_by_hand_is_kept_as_one_s_own(copier: str) -> None:
    """A check of detect_anomaly set by hand on another module than the one it watches is
    that module's user's method, kept by its copies (only a module's own checks are left
    out), and so is a callable object that takes no weak reference; the watched module's copy
    holds none of its checks, and a module with no method set on its instance none either."""
    import minidl
    from minidl.anomaly import checks_only

    watched, other = nn.Linear(2, 3, dtype=F64), nn.Linear(2, 3, dtype=F64)
    with minidl.detect_anomaly(watched):
        check = vars(watched)["forward"]
        other.forward = check
        other.backward = _Passing()  # type: ignore[method-assign]
        assert checks_only(watched, "forward") and not checks_only(other, "forward")
        assert not checks_only(other, "backward")
        assert not checks_only(nn.Linear(2, 3), "forward")
        copied = _COPIERS[copier](other)
        assert vars(copied)["forward"] is check
        assert isinstance(vars(copied)["backward"], _Passing)
        assert "forward" not in vars(_COPIERS[copier](watched))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_of_every_protocol_binds_a_method_to_the_module_loaded(protocol: int) -> None:
    """A method bound to the module comes back bound to the module loaded whatever the
    pickle's protocol (0 and 1 too, which pickle an object with __slots__ only through its
    own __reduce__)."""
    layer = nn.Linear(2, 3, dtype=F64)
    layer.forward = types.MethodType(_doubling, layer)
    loaded = pickle.loads(pickle.dumps(layer, protocol=protocol))
    assert vars(loaded)["forward"].__self__ is loaded
    x = torch.randn(4, 2, dtype=F64)
    assert torch.equal(loaded(x), 2 * x)


def test_a_pickle_of_a_function_set_on_the_instance_that_has_no_name_fails_as_pytorch_s() -> None:
    """A lambda set as a method is kept, so pickle refuses it as it refuses torch.nn's, rather
    than leaving it out without a word (a copy in another process computed otherwise). (The
    error is AttributeError or PicklingError, as the Python version raises it.)"""
    errors = []
    for module in (nn.Linear(2, 3), torch.nn.Linear(2, 3)):
        module.backward = lambda grad_output: grad_output  # type: ignore[method-assign]
        with pytest.raises((AttributeError, pickle.PicklingError), match="lambda") as error:
            pickle.dumps(module)
        errors.append(error.type)
    assert errors[0] is errors[1]


def _doubling(module: object, input: torch.Tensor) -> torch.Tensor:
    """Bound to a module and set on it as its forward."""
    return 2 * input


def test_a_pickle_binds_the_methods_bound_to_the_module_to_the_module_loaded() -> None:
    """A forward and another attribute holding methods bound to the module come back bound to
    the module loaded, as copy.deepcopy binds them, and it computes with them. Pickle writes a
    bound method as a lookup of its function's name on the module being loaded, before its
    attributes are set: torch.nn.Linear's could not be loaded (no attribute '_doubling', the
    function's name; one named forward finds the class's forward), nor minidl's."""
    ours, theirs = nn.Linear(2, 3, dtype=F64), torch.nn.Linear(2, 3, dtype=F64)
    for module in (ours, theirs):
        module.forward = types.MethodType(_doubling, module)
        module.shape_of = types.MethodType(_shape_of, module)
    with pytest.raises(AttributeError, match="no attribute '_doubling'"):
        pickle.loads(pickle.dumps(theirs))
    loaded = pickle.loads(pickle.dumps(ours))
    for name, function in (("forward", _doubling), ("shape_of", _shape_of)):
        method = vars(loaded)[name]
        assert method.__func__ is function and method.__self__ is loaded, name
    x = torch.randn(4, 2, dtype=F64)
    assert torch.equal(loaded(x), 2 * x) and loaded.shape_of(x) == (4, 2)


@pytest.mark.parametrize("copier", list(_COPIERS))
def test_a_copy_made_under_anomaly_detection_keeps_the_methods_beneath_its_checks(
    copier: str,
) -> None:
    """Inside two nested detect_anomaly blocks, a copy holds the backward set on the instance
    beneath the checks, and none of the forward and backward_parameters that the class gives:
    it computes with them, unchecked (a NaN passes), and the original is still checked."""
    import minidl

    layer = nn.Linear(2, 3, dtype=F64)
    layer.backward = _tripled  # type: ignore[method-assign]
    with minidl.detect_anomaly(layer), minidl.detect_anomaly(layer):
        copied = _COPIERS[copier](layer)
        assert vars(copied)["backward"] is _tripled
        assert "forward" not in vars(copied) and "backward_parameters" not in vars(copied)
        nan = torch.full((1, 2), float("nan"), dtype=F64)
        assert copied(nan).isnan().all()
        assert copied.backward(nan).isnan().all()
        with pytest.raises(minidl.AnomalyError):
            layer.backward(nan)
    assert vars(layer)["backward"] is _tripled


def test_state_dict_round_trips_and_moves_keep_what_is_set_on_the_instance() -> None:
    """load_state_dict (of its own state dict, and of a torch.nn.Linear's) and to() leave the
    methods and attributes set on the instance as they are, as torch.nn's do."""
    ours, theirs = nn.Linear(2, 3), torch.nn.Linear(2, 3)
    for module in (ours, theirs):
        _set_on_instance(module, bound=True)
        before = dict(vars(module))
        module.load_state_dict(module.state_dict())
        module.to(F64)
        if module is ours:
            module.load_state_dict(theirs.state_dict())
        for name in ("forward", "backward", "backward_parameters", "note", "shape_of"):
            assert vars(module)[name] is before[name], name


_OLD_PICKLES: dict[str, tuple[Callable[[], nn.Module], str, tuple[int, ...]]] = {
    "Linear": (lambda: nn.Linear(4, 3, dtype=F64), "_gradients", (5, 4)),
    "BatchedLinear": (
        lambda: nn.BatchedLinear.stack([nn.Linear(4, 3, dtype=F64) for _ in range(2)]),
        "_gradients",
        (2, 5, 4),
    ),
    "Sequential": (
        lambda: nn.Sequential(nn.Linear(4, 3, dtype=F64), nn.Tanh()),
        "_gradients",
        (5, 4),
    ),
    "Residual": (lambda: nn.Residual(nn.Linear(4, 4, dtype=F64)), "_gradients", (5, 4)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(4, dtype=F64), "_gradients", (5, 4)),
    "Identity": (nn.Identity, "_dtype", (5, 4)),
    "Dropout": (lambda: nn.Dropout(0.5).eval(), "_dtype", (5, 4)),
}


@pytest.mark.parametrize("case", list(_OLD_PICKLES))
def test_a_module_pickled_before_its_gradient_memory_or_dtype_existed_loads_and_runs(
    case: str,
) -> None:
    """A module pickled after a forward by a version without the attribute (the memory of its
    gradients, or the forward's dtype of an identity) loads with it made again: its backward,
    before and after a new forward, gives the input and parameter gradients of the module
    itself, bit for bit (an identity's float32 gradient is returned as given until a new
    forward says its dtype, then promoted to float64)."""
    make, name, shape = _OLD_PICKLES[case]
    torch.manual_seed(0)
    module = make()
    x = torch.randn(shape, dtype=F64)
    output = module(x)
    state = module.__getstate__()
    del state[name]
    old = type(module).__new__(type(module))
    old.__setstate__(state)
    grad = torch.randn_like(output)
    if name == "_dtype":
        grad = grad.float()
    for again in (False, True):
        if again:
            module(x)
            old(x)
        expected = module.backward(grad)
        got = old.backward(grad)
        if name == "_dtype" and not again:  # (no dtype known: returned as given, as before)
            assert got is grad and torch.equal(got.double(), expected)
            continue
        assert got.dtype == expected.dtype == F64 and torch.equal(got, expected)
        for got_parameter, parameter in zip(old.parameters(), module.parameters(), strict=True):
            assert torch.equal(got_parameter.grad, parameter.grad)


class _MaxPick(nn.Module):
    """Keeps its forward's ``x.max(dim=1)`` (a ``torch.return_types.max``) for its backward."""

    def forward(self, x: Tensor) -> Tensor:
        self.best = x.max(dim=1)
        return self.best.values

    def backward(self, grad_output: Tensor) -> Tensor:
        grad = torch.zeros(grad_output.shape[0], 4)
        grad.scatter_(1, self.best.indices[:, None], grad_output[:, None])
        return grad


class _Pair(NamedTuple):
    first: Tensor
    second: int


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_tuple_of_another_type_holding_tensors_keeps_its_type(how: str) -> None:
    """A cache that is a tuple of another type (``torch.return_types.max``, a NamedTuple) came
    back as a plain tuple, and the copy's backward failed (``'tuple' object has no attribute
    'indices'``); torch.nn.Module keeps the type."""
    module = _MaxPick()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    module(x)
    module.pair = _Pair(torch.ones(2), 3)
    copied = copy.deepcopy(module) if how == "deepcopy" else pickle.loads(pickle.dumps(module))
    assert type(copied.best) is type(module.best) and type(copied.pair) is _Pair
    assert torch.equal(copied.best.indices, module.best.indices)
    assert torch.equal(copied.pair.first, torch.ones(2)) and copied.pair.second == 3
    assert torch.equal(copied.backward(torch.ones(3)), module.backward(torch.ones(3)))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize(
    ("layout", "how"),
    [("coo", "deepcopy"), ("coo", "pickle"), ("csr", "pickle"), ("nested", "pickle")],
)
def test_a_module_holding_a_tensor_without_storage_is_copied(layout: str, how: str) -> None:
    """A sparse or nested tensor kept as an attribute (a graph layer's adjacency matrix) failed
    ``deepcopy`` and pickling in torch's words (``Cannot access storage of SparseTensorImpl``),
    where torch.nn.Module copies it. It is written as it is; the copy holds equal values, and a
    tuple holding one with a strided tensor beside it too. (torch deep-copies no CSR or nested
    tensor, itself: those are pickled only.)"""
    dense = torch.eye(3)
    held = {
        "coo": dense.to_sparse(),
        "csr": dense.to_sparse_csr(),
        "nested": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
    }[layout]
    module = nn.Linear(3, 3)
    module.adjacency = held
    module.both = (held, torch.ones(2))
    copied = copy.deepcopy(module) if how == "deepcopy" else pickle.loads(pickle.dumps(module))
    for got in (copied.adjacency, copied.both[0]):
        assert got.layout == held.layout and got.is_nested == held.is_nested
        if layout == "nested":
            assert all(torch.equal(a, b) for a, b in zip(got.unbind(), held.unbind(), strict=True))
        else:
            assert torch.equal(got.to_dense(), dense)
    assert torch.equal(copied.both[1], torch.ones(2))


def test_a_shallow_copy_registered_in_its_original_is_refused() -> None:
    """copy.copy shares the registry of children, so the check that a module does not contain
    the one it is registered in passed, and the copy became its own child: every traversal
    then recursed without end (RecursionError)."""

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_module("layer", nn.Linear(2, 2))

    original = Holder()
    shallow = copy.copy(original)
    with pytest.raises(ValueError) as error:
        original.register_module("x", shallow)
    assert str(error.value) == (
        "Holder.register_module: cannot register a shallow copy of itself (copy.copy, which "
        "shares its children) as child 'x' (a module would be its own descendant); expected a "
        "module that does not contain this one"
    )
    assert list(original._modules) == ["layer"] and len(list(original.parameters())) == 2
