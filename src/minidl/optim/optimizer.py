"""The base class of optimizers."""

from __future__ import annotations

import numbers
import operator
import struct
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, ClassVar, Generic, Literal, NoReturn, TypeVar, overload

import torch
from torch import Tensor

from minidl._validate import check_copyable, check_int, check_real, shown
from minidl.nn._checks import given_module, given_parameter, refuse_set_to_none
from minidl.nn.flat import flat_buffer
from minidl.nn.module import Module, in_graph
from minidl.nn.parameter import Parameter

__all__ = ["Hyperparameter", "Optimizer", "check_step_count"]

T = TypeVar("T")

#: The most steps an optimizer counts: torch's largest integer, which a checkpoint's
#: ``step_count`` is read back as, and past which Adam's ``beta ** t`` has no float ``t``.
MOST_STEPS = 2**63 - 1

#: The largest finite float16, the smallest largest value of the dtypes parameters take.
_FLOAT16_LARGEST = 65504.0


def check_step_count(where: str, name: str, value: object) -> int:
    """Return ``value``, a step count, as an ``int`` after checking it is an integer in
    ``[0, MOST_STEPS]`` (a numpy integer is one; a bool is not)."""
    count = check_int(where, name, value, low=0)
    if count > MOST_STEPS:
        raise ValueError(
            f"{where}: {name} must be an integer in [0, 2**63 - 1], got {shown(value)}"
        )
    return count


class Hyperparameter(Generic[T]):
    """A hyper-parameter of an optimizer (``momentum``, ``betas``, ...), read and set as an
    attribute; ``T`` is the type of its value (``momentum: Hyperparameter[float]``), which a
    type checker gives the attribute.

    Setting it runs the constructor's checks, with the optimizer's other hyper-parameters (SGD's
    ``nesterov`` needs ``momentum > 0``), so ``optimizer.momentum = 5`` raises as
    ``SGD(..., momentum=5)`` does, and leaves the optimizer as it was. A value that would need
    other state tensors than the optimizer keeps (SGD's ``momentum`` between 0 and > 0) is
    refused too. The value is kept in ``_<name>``, which the updates read.

    ``check(where, value)``, where given, checks one value on its own and returns it normalised
    (a float for a number), or raises naming ``where``, the optimizer's class: a subclass of
    one's own declares ``beta = Hyperparameter(check_beta)`` and has its values checked when
    set, by the constructor, by assignment and by ``load_state_dict``, before anything
    changes. The built-in optimizers check theirs with each other in
    ``_validate_hyperparameters``: a subclass of one that sets its own before calling the
    built-in's constructor has it checked alone then, and with the built-in's when the
    constructor sets them.

    Args:
        check: the check of a value, ``None`` (the default) for none.
    """

    # (a hyper-parameter declared without its type or check, ``beta = Hyperparameter()``, is
    # Hyperparameter[Any] to a type checker, read as Any, as all were before they had one)
    @overload
    def __init__(self: Hyperparameter[Any], check: None = None) -> None: ...

    @overload
    def __init__(self, check: Callable[[str, Any], T]) -> None: ...

    def __init__(self, check: Callable[[str, Any], T] | None = None) -> None:
        self.check = check
        self.name = ""
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        # Named once, by the class that made it (an alias in a subclass, ``mu =
        # SGD.momentum``, is the same hyper-parameter; see minidl._setting.Setting).
        if not getattr(self, "name", ""):
            self.name = name
            self.slot = "_" + name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Hyperparameter[T]: ...

    @overload
    def __get__(self, instance: Optimizer, owner: type | None = None) -> T: ...

    def __get__(
        self, instance: Optimizer | None, owner: type | None = None
    ) -> Hyperparameter[T] | T:
        if instance is None:
            return self
        value: T = getattr(instance, self.slot)
        return value

    def __set__(self, instance: Optimizer, value: Any) -> None:
        instance._assign_hyperparameters({self.name: value})


#: ``(device, first byte, byte past the last)`` of a tensor's memory (:func:`_memory_span`).
_Span = tuple[torch.device, int, int]


def _memory_span(tensor: Tensor) -> _Span:
    """``(device, first byte, byte past the last)`` of the memory that ``tensor`` (strided,
    not empty) reads and writes: a strided one's whole span, its gaps included."""
    steps = zip(tensor.shape, tensor.stride(), strict=True)
    last = sum((size - 1) * step for size, step in steps)
    start = tensor.data_ptr()
    return tensor.device, start, start + (last + 1) * tensor.element_size()


def _overlap(span: _Span, other: _Span) -> bool:
    """Whether two :func:`_memory_span` share a byte (on one device; never on the meta device,
    which holds no memory, every tensor's address 0 there)."""
    return (
        span[0] == other[0] and span[0].type != "meta" and span[1] < other[2] and other[1] < span[2]
    )


#: What becomes of the memory of the parameters' values and gradients, which a state tensor
#: sharing it would take as its own (:meth:`Optimizer._check_state_tensors`).
_PARAMETER_MEMORY = {
    "values": "the update writes",
    "gradients": "the update reads and zero_grad zeroes",
}


class Optimizer:
    """Updates a list of :class:`~minidl.nn.Parameter` in place from their accumulated gradients.

    A subclass names its per-parameter state in ``state_names`` (e.g. ``("momentum_buffer",)``)
    and implements :meth:`_update`, which updates one value tensor in place from its gradient and
    state tensors (where an update writes ``operand(rho, x)`` for a constant ``rho``, read the
    number ``rho``: a cached 0-dim tensor of ``x``'s dtype that gives the same bits without a
    conversion on every call, see ``minidl/_scalar.py``). The state of all parameters lives in
    one flat tensor per name, in :attr:`state`, a dict of those names in that order, the
    parameters' entries in the order of :attr:`params`, so that the state is kept by place: a
    ``Parameter`` of the same size put in ``params[i]`` takes over the state there (PyTorch's
    optimizers key it by parameter object), one of another size is refused at the next step. A
    tensor may be replaced (``optimizer.state[name] = tensor``), but a state of other names, of
    another order or no dict is refused by ``step``, ``state_dict`` and ``load_state_dict``
    (and by :func:`~minidl.train.fit` before it trains), before anything changes. When the
    parameters' values and gradients are views of flat buffers (as in a
    :class:`~minidl.nn.Sequential`), ``step`` and ``zero_grad`` run one update over the whole
    model; otherwise they run it parameter by parameter. Both give the same numbers.

    The parameters must share one dtype and device (the state's); a model moved with
    ``model.to(...)`` after the optimizer was built takes its state along at the next ``step``.

    ``step_count`` is the number of steps done (``step`` adds one; Adam's bias correction and
    Adagrad's decay read it), an ``int`` >= 0: one set by hand to anything else is refused by
    the next update that reads it, before it changes anything, and by :meth:`state_dict`; one
    that cannot be counted on at all (no number: a ``str``, ``None``) is refused by every
    ``step``, before it changes anything.

    A subclass declares its hyper-parameters as :class:`Hyperparameter` attributes (SGD's
    ``momentum``, Adam's ``betas``, ...): they may be set between steps, as ``lr`` may, and
    each value set is checked as the constructor checks it.

    Args:
        params: the parameters to optimise, usually ``model.parameters()``.
        lr: the learning rate, finite and >= 0; read and set it through :attr:`lr`.
    """

    state_names: tuple[str, ...] = ()

    #: Hyper-parameters that :meth:`hyperparameters` leaves out at their default (the values
    #: here): a saved state without them restores the default.
    optional_hyperparameters: ClassVar[Mapping[str, Any]] = {}

    #: Hyper-parameters that keep the denominator of an update from 0 (Adam's ``eps``): one
    #: that the parameters' dtype rounds to 0 is refused (see :meth:`_check_in_range`).
    denominator_terms: ClassVar[tuple[str, ...]] = ()

    #: Hyper-parameters that enter no tensor operation, only the Python arithmetic of a step's
    #: rate (Adagrad's ``lr_decay``, which divides it): not checked against the range of the
    #: parameters' dtype (see :meth:`_check_in_range`).
    scalar_terms: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        name = type(self).__name__
        if isinstance(params, Parameter | Tensor):
            raise TypeError(
                f"{name}: params must be an iterable of Parameters (e.g. model.parameters()), "
                f"got a single {type(params).__name__}"
            )
        if isinstance(params, Module) or not isinstance(params, Iterable):
            owner = getattr(params, "__self__", None)
            if isinstance(owner, Module) and callable(params):
                # (model.parameters, uncalled: given_module would say to pass the module)
                given = getattr(params, "__name__", "method")
                raise TypeError(
                    f"{name}: params must be an iterable of Parameters (e.g. "
                    f"model.parameters()), got the method {given} of a "
                    f"{type(owner).__name__}, uncalled; pass .parameters()"
                )
            hint = " (pass its .parameters())" if isinstance(params, Module) else ""
            raise TypeError(
                f"{name}: params must be an iterable of Parameters (e.g. model.parameters()), "
                f"got {given_module(params)}{hint}"
            )
        if isinstance(params, set | frozenset):
            raise TypeError(
                f"{name}: params must be an ordered iterable such as a list, got a "
                f"{type(params).__name__}: a set's order changes from run to run, and the state "
                "of an optimizer is saved and loaded in the order of its parameters"
            )
        self.params: list[Parameter] = list(params)
        if not self.params:
            raise ValueError(
                f"{name}: got an empty parameter list (a module of your own registers its layers "
                "with register_module and its parameters with register_parameter: an attribute "
                "alone, self.fc = Linear(...), is not registered)"
            )
        for index, parameter in enumerate(self.params):
            if not isinstance(parameter, Parameter):
                raise TypeError(
                    f"{name}: params[{index}] must be a minidl Parameter, got "
                    + given_parameter(parameter)
                )
        if len({id(p) for p in self.params}) != len(self.params):
            places: dict[int, int] = {}
            for index, parameter in enumerate(self.params):
                seen = places.setdefault(id(parameter), index)
                if seen != index:  # (the first repeat, named by both its places)
                    raise ValueError(
                        f"{name}: a parameter appears more than once in params, at params[{seen}] "
                        f"and params[{index}]: each step would update it twice; give it once"
                    )
        _refuse_shared_data(name, self.params)
        self._check_one_kind()
        self._lr = check_real(name, "lr", lr, low=0.0)
        # The largest finite value of the parameters' dtype: a larger hyper-parameter cannot
        # enter an update of them (see _check_in_range).
        self._largest = torch.finfo(self.params[0].data.dtype).max
        try:
            hyperparameters = self.hyperparameters()
        except AttributeError:
            # A subclass of one's own that sets them after this call: checked at the first
            # step instead (the layout is found then; see _check_layout).
            hyperparameters = {}
            self._largest = -1.0
        self._check_in_range({"lr": self._lr, **hyperparameters}, name)
        self.step_count = 0
        # (token, class name) of the schedule built last on it (see LRScheduler).
        self._scheduled_by: tuple[int, str] | None = None
        # The number of schedules built on it (each takes the next: see LRScheduler).
        self._schedules_built = 0
        self._sizes = [p.numel() for p in self.params]
        numel = sum(self._sizes)
        first = self.params[0].data
        # Normal (not inference-mode) tensors, updated in place inside and outside
        # torch.inference_mode() whichever of the two the optimizer was built in.
        with torch.inference_mode(False):
            self.state: dict[str, Tensor] = {
                state_name: torch.zeros(numel, dtype=first.dtype, device=first.device)
                for state_name in self.state_names
            }
        self._layout_key: tuple[Tensor, ...] = ()
        # Parameter.replacements when the layout was last found unchanged: while it stays the
        # same, no parameter tensor was replaced and the per-parameter comparison is skipped.
        self._replacements_seen = -1
        #: The parameters as they were then (a list: one changed by hand is looked at again).
        self._params_seen: list[Parameter] | None = None
        self._flat: tuple[Tensor, Tensor] | None = None
        self._state_views: list[tuple[Tensor, ...]] = []
        # The state tensors as the optimizer made or last took them (see _check_state_held):
        # one replaced since (optimizer.state[name] = tensor) is checked, then taken.
        self._state_key: tuple[Tensor, ...] = tuple(self.state.values())

    @property
    def lr(self) -> float:
        """The current learning rate (schedulers set it)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        name = type(self).__name__
        lr = check_real(name, "lr", value, low=0.0)
        # (_largest is the dtype's the optimizer last checked against: past float16's largest,
        # the smallest of any, the parameters may have been cast since, so the dtype is read)
        if lr > self._largest or lr > _FLOAT16_LARGEST:
            self._check_in_range({"lr": lr}, name)
        self._lr = lr

    def _check_in_range(
        self, values: Mapping[str, Any], where: str, dtype: torch.dtype | None = None
    ) -> None:
        """Refuse a hyper-parameter (or one of a pair, such as ``betas``) beyond the largest
        finite value of the parameters' dtype (or of ``dtype``, the one they were cast to): an
        update would fail to convert it part-way, with some state tensors already changed (but
        one of :attr:`scalar_terms`, which no tensor operation takes).

        Refuse too a positive one of :attr:`denominator_terms` that the dtype rounds to 0 (Adam's
        default ``eps`` of 1e-8 in float16, whose smallest positive value is 6e-8; every value
        below 2.980232416405216e-08, about half that, rounds to 0 there): the sum it keeps from
        0 (``sqrt(v) + eps``) would be 0 wherever the gradient was 0, or its square
        underflowed, at every step so far, and the parameter NaN or infinite (PyTorch's
        optimizers compute it so, without a word). The message names the smallest value taken,
        exactly.

        Checked against the parameters' dtype now (``dtype`` not given: a value set between
        steps) that is not the one the optimizer last checked everything against (the model was
        cast since, and cast again before the next step, say from float32 to float64 and back),
        the values taken are checked again at the next step (:meth:`_check_layout`), against the
        dtype then: a rate of 1e39, set while the model was float64, passed float32's check
        then, and failed part-way through the update (SGD's velocity scaled)."""
        given_dtype = dtype
        dtype = self.params[0].data.dtype if dtype is None else dtype
        largest = torch.finfo(dtype).max
        for key, value in values.items():
            if key in self.scalar_terms:
                continue
            parts = value if isinstance(value, tuple | list) else (value,)
            for part in parts:
                if not isinstance(part, numbers.Real) or isinstance(part, bool):
                    continue
                try:
                    within = abs(float(part)) <= largest
                except OverflowError:  # (an int, or a fraction, beyond every float)
                    within = False
                if not within:
                    raise ValueError(
                        f"{where}: {key}={shown(value)} is beyond the range of the parameters' "
                        f"dtype {dtype} (largest finite value {largest:.6g})"
                    )
            if key in self.denominator_terms and _rounds_to_zero(value, dtype):
                smallest = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
                taken = _smallest_taken(dtype)
                raise ValueError(
                    f"{where}: {key}={shown(value)} rounds to 0 in the parameters' dtype {dtype}, "
                    f"whose smallest positive value is {smallest:.6g} (every {key} below "
                    f"{taken!r} does): the update's denominator, which {key} keeps from 0, "
                    "would be 0 wherever the gradient was 0 (or its square underflowed) at every "
                    f"step so far, and the parameter NaN or infinite; give {key} >= {taken!r}"
                )
        if given_dtype is None and largest != self._largest:
            self._largest = -1.0  # (no dtype's: _check_layout checks them all again)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's hyper-parameters besides ``lr`` (for ``repr`` and ``state_dict``):
        those the class lists (a built-in optimizer's, see :meth:`_listed_hyperparameters`),
        then every other :class:`Hyperparameter` declared (by a subclass of one's own, of
        :class:`Optimizer` or of a built-in optimizer) that holds a value, in the order
        declared. (Such a subclass's were neither saved nor shown, and its resumed run went on
        with the values it was built with.) Those added so are optional in
        :meth:`load_state_dict`: a state saved without them keeps the current values."""
        settings = self._listed_hyperparameters()
        for name in self._added_hyperparameters():
            if name not in settings and hasattr(self, "_" + name):
                settings[name] = getattr(self, "_" + name)
        return settings

    def _listed_hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters the class lists itself, its own way (SGD leaves out a weight
        decay of 0); none here. A class that overrides it lists every one it declares."""
        return {}

    @classmethod
    def _added_hyperparameters(cls) -> list[str]:
        """The :class:`Hyperparameter` names declared below the class that wrote
        :meth:`_listed_hyperparameters` (all of them, where none did): not listed by it."""
        lister: type[Optimizer] = next(
            k for k in cls.__mro__ if "_listed_hyperparameters" in vars(k)
        )
        listed = set(lister._hyperparameter_names()) if lister is not Optimizer else set()
        return [name for name in cls._hyperparameter_names() if name not in listed]

    # -- the update -------------------------------------------------------------------------------

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        """Update ``value`` in place from ``grad`` and this optimizer's ``state`` tensors.

        ``value``, ``grad`` and each state tensor (in the order of ``state_names``) have one
        shape: one parameter's, or the whole flat buffer's. During the call ``step_count`` is
        the number of steps done before this one (:math:`t - 1` at step :math:`t`). ``grad``
        is the parameters' own gradient: it is read, never changed (a penalty term such as
        weight decay is added out of place). (:func:`~minidl.train.fit` folds the steps of
        minidl's own updates only, handing them the entries in another order than the flat
        buffer's; with an ``_update`` of one's own it runs step by step, so that one may read
        an entry's place, a rate per parameter laid over the flat buffer, say.)
        """
        raise NotImplementedError(
            f"{type(self).__name__}._update is not implemented (a subclass of Optimizer updates "
            "the parameters' values in place from their gradients and its state)"
        )

    def _check_step_count(self) -> int:
        """``step_count`` as an ``int`` (a numpy integer is made one), for an update that has
        found it to be no ``int`` >= 0; raise if it is none (set by hand: ``step`` and
        :meth:`load_state_dict` keep it one). Called before the update changes anything."""
        count = check_step_count(
            type(self).__name__, "step_count (the number of steps done)", self.step_count
        )
        self.step_count = count
        return count

    def _refresh_layout(self, method: str = "", state: bool = True) -> None:
        """Find out whether the parameters are flat, and move the state along with them
        (``state``: see :meth:`_check_layout`).

        The views are made outside inference mode, so that they stay usable in place whether
        the next step runs inside ``torch.inference_mode()`` (as :func:`minidl.train.fit` does)
        or not.
        """
        self._check_state_held(method or "step")
        self._sizes = self._check_layout(method, state)
        with torch.inference_mode(False):
            self._make_views()

    def _check_layout(self, method: str = "", state: bool = True) -> list[int]:
        """Refuse parameters that the state cannot follow (one resized, two of another dtype or
        device) or whose dtype, another than when last checked (a cast), cannot hold the rate or
        a setting; return their sizes. Nothing is moved: :meth:`_refresh_layout` does it once
        they are taken, and :func:`minidl.train.fit` asks before it trains
        (:meth:`_check_next_step`). A refused rate or setting is named with ``method``, the
        method that asks (none for a step). ``state`` ``False``: the state held, which the
        caller replaces (:meth:`load_state_dict`), is not checked against a new dtype, and the
        dtype is checked again at the next call."""
        sizes = [p.numel() for p in self.params]
        if self.state and sizes != self._sizes:  # the state would not fit
            if len(sizes) != len(self._sizes):  # (params appended to, or popped from, by hand)
                raise ValueError(
                    f"{type(self).__name__}: params holds {len(sizes)} Parameters, "
                    f"{len(self._sizes)} when the optimizer was built (Parameters added to the "
                    "list or taken from it since: the state holds the entries of those it was "
                    "built with); build a new optimizer"
                )
            index = next(
                i for i, (a, b) in enumerate(zip(sizes, self._sizes, strict=True)) if a != b
            )
            raise ValueError(
                f"{type(self).__name__}: params[{index}] ({self.params[index]!r}) holds "
                f"{sizes[index]} values, {self._sizes[index]} when the optimizer was built (its "
                "data was replaced by a tensor of another size, or another Parameter put in its "
                "place); build a new optimizer"
            )
        self._check_one_kind()
        # (a .data replaced since, q.data = p.data, as at the constructor)
        _refuse_shared_data(type(self).__name__, self.params)
        self._refuse_parameters_in_state(method)
        dtype = self.params[0].data.dtype
        largest = torch.finfo(dtype).max
        if largest != self._largest:  # cast since (or set after the constructor): checked first
            # (named by the method asking, but for a step's: zero_grad refused an eps)
            asked = f".{method}" if method else ""
            where = f"{type(self).__name__}{asked} (parameters of dtype {dtype})"
            self._check_in_range({"lr": self._lr, **self.hyperparameters()}, where, dtype)
            for state_name, tensor in self.state.items() if state else ():
                _check_state_fits(
                    where, state_name, tensor, dtype,
                    "build a new optimizer for the parameters cast (its state starts anew), or load a "
                    "state that fits",
                )  # fmt: skip
            if state:
                self._largest = largest
        return sizes

    def _check_next_step(self) -> None:
        """Refuse now what the next :meth:`step` would refuse of the state
        (:meth:`_check_state_held`) and of the parameters as they are (:meth:`_check_layout`),
        before anything changes; where they are as at the last step, nothing is checked. The
        state stays where it is (a fit that trains no epoch leaves the optimizer as it is)."""
        self._check_state_held("step")
        if (
            Parameter.replacements != self._replacements_seen or self.params != self._params_seen
        ) and self._layout_changed():
            self._check_layout()
        self._check_next_numbers()

    def _check_next_numbers(self) -> None:
        """Refuse now the numbers that the next :meth:`step` would compute from the rate, the
        settings and the step count and refuse, before anything changes (``Adam``'s
        bias-corrected step size beyond the parameters' dtype); nothing by default."""

    def _check_one_kind(self) -> None:
        """Check that the parameters share one dtype and device, those of the state tensors."""
        first = self.params[0].data
        for index, parameter in enumerate(self.params):
            value = parameter.data
            if value.dtype != first.dtype or value.device != first.device:
                raise TypeError(
                    f"{type(self).__name__}: all parameters must have one dtype and device (the "
                    f"state is one tensor of them), but params[{index}] is {value.dtype} on "
                    f"{value.device} and params[0] {first.dtype} on {first.device}; build one "
                    "optimizer for each kind, or move the model with .to()"
                )

    def _make_views(self) -> None:
        """The views of the state tensors on the parameters (checked by :meth:`_check_layout`),
        the state moved to their dtype and device."""
        values = [p.data for p in self.params]
        grads = [p.grad for p in self.params]
        self._layout_key = (*values, *grads)
        flat_values, flat_grads = flat_buffer(values), flat_buffer(grads)
        self._flat = (
            None if flat_values is None or flat_grads is None else (flat_values, flat_grads)
        )
        first = values[0]
        for state_name, tensor in self.state.items():
            if tensor.device != first.device or tensor.dtype != first.dtype:
                self.state[state_name] = tensor.to(device=first.device, dtype=first.dtype)
            elif tensor.is_inference():  # (one set inside inference mode: a copy made outside)
                self.state[state_name] = tensor.clone()
        self._state_key = tuple(self.state.values())
        self._state_views = []
        offset = 0
        for value in values:
            size = value.numel()
            self._state_views.append(
                tuple(t[offset : offset + size].view(value.shape) for t in self.state.values())
            )
            offset += size

    def _layout_changed(self) -> bool:
        replacements = Parameter.replacements
        # (a Parameter put in params, or taken out of it, replaces no tensor: compared apart)
        if replacements == self._replacements_seen and self.params == self._params_seen:
            return False
        key = self._layout_key
        params = self.params
        count = len(params)
        if len(key) != 2 * count:
            return True
        for index, parameter in enumerate(params):
            if parameter.data is not key[index] or parameter.grad is not key[count + index]:
                return True
        self._replacements_seen = replacements
        self._params_seen = list(params)
        return False

    def step(self) -> None:
        """Update every parameter from its accumulated gradient."""
        held = self.state
        if not isinstance(held, dict) or tuple(held) != tuple(self.state_names):
            self._refuse_state_names("step")
        if (
            Parameter.replacements != self._replacements_seen or self.params != self._params_seen
        ) and self._layout_changed():
            self._refresh_layout()
        tensors = tuple(held.values())
        if tensors and not _same_objects(tensors, self._state_key):  # (one replaced by hand)
            self._take_state("step")
            # (as taken: one made in torch.inference_mode() is held as a copy made outside it)
            tensors = tuple(held.values())
        if type(self.step_count) is not int:
            self._check_countable()
        flat = self._flat
        if flat is not None:
            self._update(flat[0], flat[1], tensors)
        else:
            for parameter, state in zip(self.params, self._state_views, strict=True):
                self._update(parameter.data, parameter.grad, state)
        self.step_count += 1

    def _check_state_held(self, method: str) -> None:
        """Refuse a :attr:`state` that is not a dict of the names of :attr:`state_names`, in
        their order (see :meth:`_refuse_state_names`), or that holds a tensor replaced by one
        the update cannot take (:meth:`_check_state_tensors`); :meth:`step` asks the same
        inline (one call less a step). Nothing changes."""
        state = self.state
        if not isinstance(state, dict) or tuple(state) != tuple(self.state_names):
            self._refuse_state_names(method)
        if not _same_objects(tuple(state.values()), self._state_key):
            self._check_state_tensors(method)

    def _taken_state(self) -> tuple[Tensor, ...]:
        """The state tensors, one replaced by hand since the last step taken first (checked;
        one made in ``torch.inference_mode()`` held as a copy made outside it), as
        :meth:`step` takes it inline: for :mod:`minidl.folded`, which updates them itself."""
        tensors = tuple(self.state.values())
        if tensors and not _same_objects(tensors, self._state_key):
            self._take_state("step")
            tensors = tuple(self.state.values())
        return tensors

    def _take_state(self, method: str) -> None:
        """Take the state tensors replaced by hand since the last step, once checked: the
        views of each parameter's entries are made on them."""
        self._check_state_tensors(method)
        with torch.inference_mode(False):
            self._make_views()

    def _check_state_tensors(self, method: str) -> None:
        """Refuse, before anything changes, a state tensor replaced by hand that the update
        cannot take in place as one of its own: no tensor, one of another shape than
        ``(P,)`` (``P`` the parameters' scalars), dtype or device than the parameters' (or
        its own state's, the model cast since the last step), not contiguous, one autograd
        records, or one sharing memory with another state tensor (two names updated through
        one memory) or with the parameters' values or gradients (a strided parameter's whole
        span; the other way round, a parameter given a state's memory, is refused by
        :meth:`_check_layout`). The optimizer's own tensors (cast with the parameters at the
        next step, after a ``model.to()``) are not asked. One made inside
        ``torch.inference_mode()`` is taken as a copy made outside it (:meth:`_make_views`)."""
        name = type(self).__name__
        first = self.params[0].data
        size = sum(p.data.numel() for p in self.params)
        own = {id(tensor) for tensor in self._state_key}
        # (the parameters' dtype and device, or those of its own state tensors where the model
        # was cast or moved since the last step: those move with them at the next one)
        kinds = {(first.dtype, first.device)} | {(t.dtype, t.device) for t in self._state_key}
        expected = (
            f"expected a contiguous {first.dtype} tensor of shape ({size},) on {first.device} "
            "(one entry per parameter scalar, of the parameters' dtype and device)"
        )
        memory: dict[str, _Span] = {}
        parameters: list[tuple[int, str, _Span]] | None = None  # (found where needed)
        for state_name, tensor in self.state.items():
            where = f"{name}.{method}: state {state_name!r}"
            if not isinstance(tensor, Tensor):
                raise TypeError(f"{where} is a {type(tensor).__name__}, {expected}")
            replaced = id(tensor) not in own
            if replaced and (tensor.is_nested or tensor.layout is not torch.strided):
                raise ValueError(f"{where} is a {tensor.layout} tensor, {expected}")
            if replaced and (
                (tensor.dtype, tensor.device) not in kinds
                or tensor.shape != (size,)
                or not tensor.is_contiguous()
            ):
                layout = "" if tensor.is_contiguous() else "non-contiguous "
                raise ValueError(
                    f"{where} is a {layout}{tensor.dtype} tensor of shape "
                    f"{tuple(tensor.shape)} on {tensor.device}, {expected}"
                )
            if replaced and in_graph(tensor):
                raise ValueError(
                    f"{where} is recorded by autograd (it requires grad), where an update in "
                    "place would be recorded too; give it tensor.detach()"
                )
            # (contiguous, all of them: the bytes each spans; two parts of one buffer may be)
            span = _memory_span(tensor)
            if replaced:
                parameters = self._parameter_memory() if parameters is None else parameters
                for _, what, held in parameters:
                    if _overlap(span, held):
                        raise ValueError(
                            f"{where} shares its memory with the parameters' {what}, which "
                            f"{_PARAMETER_MEMORY[what]}: give it a tensor of its own (clone() one)"
                        )
            for other, held in memory.items():
                if _overlap(span, held):
                    raise ValueError(
                        f"{where} shares its memory with state {other!r}: each name needs a "
                        "tensor of its own (clone() one)"
                    )
            memory[state_name] = span

    def _parameter_memory(self) -> list[tuple[int, str, _Span]]:
        """``(index, what, span)`` of the memory (:func:`_memory_span`) of each parameter's
        value (``"values"``) and gradient (``"gradients"``), as the parameters hold them
        now."""
        spans: list[tuple[int, str, _Span]] = []
        for index, parameter in enumerate(self.params):
            for what, tensor in (("values", parameter.data), ("gradients", parameter.grad)):
                if isinstance(tensor, Tensor) and tensor.numel():
                    spans.append((index, what, _memory_span(tensor)))
        return spans

    def _refuse_parameters_in_state(self, method: str) -> None:
        """Refuse a parameter whose value or gradient was replaced by memory of a state tensor
        (``p.grad = optimizer.state["momentum_buffer"][:n]``): the update would write the state
        where it reads the gradient (or over the value), and ``zero_grad`` zero the state."""
        spans = self._parameter_memory()
        for state_name, tensor in self.state.items():
            if not isinstance(tensor, Tensor) or tensor.numel() == 0:
                continue
            span = _memory_span(tensor)
            for index, what, held in spans:
                if _overlap(span, held):
                    asked = f".{method}" if method else ""
                    attribute = "data" if what == "values" else "grad"
                    raise ValueError(
                        f"{type(self).__name__}{asked}: params[{index}].{attribute} shares its "
                        f"memory with state {state_name!r}, which the update writes: give the "
                        "parameter a tensor of its own"
                    )

    def _refuse_state_names(self, method: str) -> None:
        """Refuse, before an update changes anything, a :attr:`state` whose names are not the
        optimizer's (a dict set in its place, a tensor removed or added): the update reads the
        tensors in the order of :attr:`state_names`."""
        name, state = type(self).__name__, self.state
        held = (
            f"holds {tuple(state)}"
            if isinstance(state, dict)
            else f"is a {type(state).__name__}, not a dict"
        )
        raise ValueError(
            f"{name}.{method}: state {held}, expected {tuple(self.state_names)} (one "
            f"flat tensor each, as the {name} made them); replace a tensor with "
            "optimizer.state[name] = tensor, or build a new optimizer"
        )

    def _check_countable(self) -> None:
        """Refuse, before an update changes anything, a ``step_count`` set by hand that the
        count after it cannot be added to (``"2"``, ``None``): ``step_count += 1`` raised
        Python's own error once the parameters were updated. (A number that is no count, such
        as 2.5, is left to the updates that read it, as documented in the class.)"""
        try:
            self.step_count + 1
        except TypeError:
            self._check_step_count()  # (raises, naming it)

    def _flat_buffers(self) -> tuple[Tensor, Tensor] | None:
        """The flat buffers of the parameters' values and gradients (see :meth:`step`), or
        ``None`` where they are not views of two such buffers."""
        if (
            Parameter.replacements != self._replacements_seen or self.params != self._params_seen
        ) and self._layout_changed():
            self._refresh_layout()
        return self._flat

    def _step_buffers(self, values: Tensor, grads: Tensor, state: tuple[Tensor, ...]) -> None:
        """:meth:`step` on flat buffers laid out otherwise than the parameters (those of
        :class:`minidl.folded.FoldedStep`): ``values``, ``grads`` and one tensor per state
        tensor (in the order of :attr:`state`), all of one layout, which the element-wise
        update does not see."""
        if type(self.step_count) is not int:
            self._check_countable()
        self._update(values, grads, state)
        self.step_count += 1

    def zero_grad(self, set_to_none: Literal[False] = False) -> None:
        """Set the gradient of every parameter to zero, in place.

        ``set_to_none=True`` (PyTorch's default, which leaves ``grad`` ``None``, and skips
        such a parameter at the next ``step``) is refused: a minidl gradient is never ``None``.
        ``set_to_none=False`` is this zeroing; typed ``Literal[False]``, so that a type checker
        finds ``set_to_none=True`` too.
        """
        if set_to_none is not False:
            refuse_set_to_none(f"{type(self).__name__}.zero_grad", set_to_none)
        if (
            Parameter.replacements != self._replacements_seen or self.params != self._params_seen
        ) and self._layout_changed():
            self._refresh_layout("zero_grad")
        flat = self._flat
        if flat is not None:
            flat[1].zero_()
        else:
            for parameter in self.params:
                parameter.grad.zero_()

    # -- what a PyTorch optimizer has and a minidl one has not ------------------------------------

    @property
    def param_groups(self) -> NoReturn:
        """Refused: a minidl optimizer is one group of parameters, whose learning rate and
        hyper-parameters are attributes (``optimizer.lr = 0.01``), checked when set.

        Raises:
            AttributeError: always, saying so.
        """
        names = ", ".join(["lr", *self._hyperparameter_names()])
        raise AttributeError(
            f"{type(self).__name__}.param_groups: a minidl optimizer is one group of parameters "
            f"(optimizer.params) and has no param_groups: read and set its settings ({names}) "
            "as attributes, optimizer.lr = 0.01, checked as the constructor checks them; build "
            "one optimizer for each group"
        )

    def add_param_group(self, param_group: object) -> NoReturn:
        """Refused: a minidl optimizer is one group of parameters; build another optimizer for
        the new group.

        Raises:
            TypeError: always; nothing is changed.
        """
        raise TypeError(
            f"{type(self).__name__}.add_param_group: parameter groups are not supported (a "
            "minidl optimizer is one group, fixed when it is built), got a "
            f"{type(param_group).__name__}; build another optimizer for these parameters and "
            "call the zero_grad and step of both"
        )

    # -- pickling ---------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """For pickle and ``copy.deepcopy``: without the layout found last (views, which would
        take whole storages along, and a count of replacements that means nothing in another
        process); the next ``step`` or ``zero_grad`` finds it again."""
        state = self.__dict__.copy()
        state.update(
            _layout_key=(), _replacements_seen=-1, _params_seen=None, _flat=None, _state_views=[]
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Loaded inside ``torch.inference_mode()``, the state tensors are copied out of it, so
        that they can still be updated in place outside it."""
        for key in self._hyperparameter_names():  # pickled when they were plain attributes
            if key in state:
                state["_" + key] = state.pop(key)
        state.setdefault("_scheduled_by", None)  # (pickled before they existed)
        state.setdefault("_schedules_built", 0)
        state.setdefault("_largest", float("inf"))
        for key, value in state.items():  # (not self.__dict__.update: see Module.__setstate__)
            object.__setattr__(self, key, value)
        with torch.inference_mode(False):
            for name, tensor in self.state.items():
                if tensor.is_inference():
                    self.state[name] = tensor.clone()
        if "_state_key" not in state:  # (pickled before it existed: the state as it was)
            object.__setattr__(self, "_state_key", tuple(self.state.values()))

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``lr``, ``step_count``, the hyper-parameters, a copy of each flat state tensor, the
        shapes of the parameters (``shapes``: a list of lists of ints) that the flat tensors
        hold the state of, in order, and the optimizer's class name (``class``), which
        :meth:`load_state_dict` compares: Adam's and AdamW's states hold the same names, whose
        weight decay means another thing in each.

        The state tensors have the parameters' current device and dtype, even when the model was
        moved (``model.to(...)``) since the last ``step``, and are no inference tensors when
        taken inside ``torch.inference_mode()``.
        """
        # (one that load_state_dict would refuse, set by hand, is refused here, before saving,
        # and before the state moves with the model)
        step_count = check_step_count(
            f"{type(self).__name__}.state_dict",
            "step_count (the number of steps done)",
            self.step_count,
        )
        self._check_state_held("state_dict")
        if self._layout_changed():
            self._refresh_layout("state_dict")
        with torch.inference_mode(False):  # (no inference tensors: torch.optim's are not)
            state = {name: tensor.clone() for name, tensor in self.state.items()}
        return {
            "lr": self._lr,
            "step_count": step_count,
            "hyperparameters": dict(self.hyperparameters()),
            "state": state,
            "shapes": self._shapes(),
            "class": type(self).__name__,
        }

    def _shapes(self) -> list[list[int]]:
        return [list(parameter.data.shape) for parameter in self.params]

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; everything is checked before anything changes.

        A state saved over parameters of other shapes is refused (``shapes``; a state without
        it, from an older version, is checked by its total size only), and one of another
        optimizer class (``class``; not asked of a state without it). State tensors are copied
        as plain values, detached from any autograd graph.
        """
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{name}.load_state_dict: expected a mapping (as state_dict() returns), got "
                f"{type(state_dict).__name__}"
            )
        missing = {"lr", "step_count", "state"} - set(state_dict)
        if missing:
            # (a PyTorch optimizer's state_dict: {"state": {index: {...}}, "param_groups": [...]})
            hint = (
                " (a PyTorch optimizer's state_dict, with param_groups: a minidl optimizer "
                "loads what a minidl optimizer's state_dict() returns)"
                if "param_groups" in state_dict
                else ""
            )
            raise KeyError(f"{name}.load_state_dict: missing keys {sorted(missing)}{hint}")
        # The state moves with a model moved since the last step, once the state given is
        # taken (a refused one leaves it as it was, of the dtype it had); what the move refuses
        # is refused first.
        self._check_state_held("load_state_dict")
        moved = self._layout_changed()
        if moved:
            # (not the state held, which the state given replaces: that one is checked below)
            self._check_layout("load_state_dict", state=False)
        lr = check_real(f"{name}.load_state_dict", "lr", state_dict["lr"], low=0.0)
        step_count = check_step_count(
            f"{name}.load_state_dict", "step_count", state_dict["step_count"]
        )
        shapes = state_dict.get("shapes")
        if shapes is not None and not _same_shapes(shapes, self._shapes()):
            raise ValueError(
                f"{name}.load_state_dict: the state was saved for parameters of shapes "
                f"{_format_shapes(shapes)}, but this optimizer's parameters have shapes "
                f"{_format_shapes(self._shapes())}"
            )
        state = state_dict["state"]
        if not isinstance(state, Mapping) or set(state) != set(self.state):
            found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            hint = self._other_state_hint(state_dict) if isinstance(state, Mapping) else ""
            raise KeyError(
                f"{name}.load_state_dict: state must have the entries {sorted(self.state)}, "
                f"got {found}{hint}"
            )
        # (after the names: another optimizer's state of other names is named from its
        # hyper-parameters above; one of the same names, Adam's in an AdamW, here)
        saved_class = state_dict.get("class", name)  # (a state saved without it: not asked)
        if saved_class != name:
            saver = saved_class if isinstance(saved_class, str) else shown(saved_class)
            raise ValueError(
                f"{name}.load_state_dict: the state was saved by {saver} (its 'class' entry), "
                f"this optimizer is {name}; load it into {saver}, whose settings and state "
                "mean what they meant there"
            )
        for state_name, tensor in state.items():
            expected = self.state[state_name]
            if not isinstance(tensor, Tensor):
                raise TypeError(
                    f"{name}.load_state_dict: state {state_name!r} must be a tensor, got "
                    f"{type(tensor).__name__}"
                )
            # (against the parameters, whose device the state has once it moves with them;
            # first: a nested tensor's shape is not read)
            where = f"{name}.load_state_dict"
            check_copyable(where, f"state {state_name!r}", tensor, self.params[0].data)
            if tensor.shape != expected.shape:
                got = tuple(tensor.shape)
                raise ValueError(
                    f"{name}.load_state_dict: state {state_name!r} has shape {got}, expected "
                    f"{tuple(expected.shape)} (one entry per parameter scalar)"
                )
            if not tensor.is_floating_point():
                raise TypeError(
                    f"{name}.load_state_dict: state {state_name!r} must be floating point, "
                    f"got {tensor.dtype}"
                )
            _check_state_fits(
                where, state_name, tensor, self.params[0].data.dtype,
                "load it into an optimizer of parameters of its dtype",
            )  # fmt: skip
        hyperparameters = state_dict.get("hyperparameters", {})
        if not isinstance(hyperparameters, Mapping):
            raise TypeError(
                f"{name}.load_state_dict: hyperparameters must be a mapping of names to values "
                f"(as state_dict() returns), got {type(hyperparameters).__name__}"
            )
        if hyperparameters:
            self._check_hyperparameters(hyperparameters)
            self._check_state_names(hyperparameters)
        self._check_in_range({"lr": lr, **hyperparameters}, f"{name}.load_state_dict")
        if moved:
            self._refresh_layout("load_state_dict", state=False)
        # An entry that shares memory with the state (another state tensor of this optimizer,
        # or a view of one) is read before anything is written: each entry is its value at the
        # call, whatever the order of the writes (exp_avg given as exp_avg_sq and the other
        # way round took the second's value twice), as Module.load_state_dict does.
        written = {t.untyped_storage().data_ptr() for t in self.state.values() if not t.is_meta}
        values = {}
        for state_name, tensor in state.items():
            value = tensor.detach()
            if not value.is_meta and value.untyped_storage().data_ptr() in written:
                value = value.clone()
            values[state_name] = value
        self._lr = lr
        self.step_count = step_count
        for state_name, value in values.items():
            self.state[state_name].copy_(value)
        if hyperparameters:
            self._set_hyperparameters(hyperparameters)

    def _other_state_hint(self, state_dict: Mapping[str, Any]) -> str:
        """Where state tensors of other names come from, to end the message that refuses them:
        the state_dict of another optimizer (named from its hyper-parameters, which a
        state_dict records, but not its class), or of one of this class built with other
        settings (SGD with momentum, RMSprop centered)."""
        name = type(self).__name__
        saved = state_dict.get("hyperparameters")
        if not isinstance(saved, Mapping) or not saved:
            return " (it looks like another optimizer's state, or one saved with other settings)"
        found = set(saved)
        if _takes(type(self), found) and _same_settings(saved, self.hyperparameters()):
            # (this optimizer's own settings: the state's names were changed, not the settings)
            return (
                f" (saved with this {name}'s own settings, whose state has no other entries: "
                "the state was edited, or put together from another optimizer's)"
            )
        if _takes(type(self), found):
            given = ", ".join(f"{key}={shown(value)}" for key, value in saved.items())
            return f" (a state saved with other settings, {given}; build this {name} with them)"
        import minidl.optim

        classes = [getattr(minidl.optim, key) for key in minidl.optim.__all__]
        others = [
            klass.__name__
            for klass in classes
            if isinstance(klass, type)
            and issubclass(klass, Optimizer)
            and klass is not Optimizer
            and _takes(klass, found)
        ]
        who = " or ".join(others) if others else "none of minidl.optim's optimizers"
        required = sorted(set(self._hyperparameter_names()) - set(self.optional_hyperparameters))
        return (
            f" (it looks like another optimizer's state: its hyper-parameters {sorted(found)} "
            f"are those of {who}; {name} takes {required})"
        )

    def _check_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> None:
        """Check saved hyper-parameters with the constructor's own checks."""
        name = type(self).__name__
        optional = set(self.optional_hyperparameters) | set(self._added_hyperparameters())
        required = set(self.hyperparameters()) - optional
        found = set(hyperparameters)
        if not required <= found <= required | optional:
            also = f" (and optionally {sorted(optional)})" if optional else ""
            raise KeyError(
                f"{name}.load_state_dict: hyper-parameters must be "
                f"{sorted(required)}{also}, got {sorted(found)}"
            )
        try:
            self._checked_hyperparameters(hyperparameters)
        except (TypeError, ValueError) as error:  # the constructor's message, from load_state_dict
            message = str(error).replace(f"{name}: ", f"{name}.load_state_dict: ", 1)
            raise type(error)(message) from None

    def _check_state_names(self, hyperparameters: Mapping[str, Any]) -> None:
        """Refuse saved (checked) hyper-parameters that need other state tensors than this
        optimizer keeps (SGD's ``momentum`` 0 with a momentum buffer), before anything is
        loaded: setting them afterwards would raise with the state already overwritten."""
        settings = {**self.optional_hyperparameters, **hyperparameters}
        given = ", ".join(f"{key}={shown(value)}" for key, value in hyperparameters.items())
        self._check_state_fits(
            self._checked_hyperparameters(settings),
            f"{type(self).__name__}.load_state_dict: the saved hyper-parameters ({given}) need",
        )

    def _check_state_fits(self, checked: Mapping[str, Any], what: str) -> None:
        """Refuse ``checked`` hyper-parameters that need other state tensors than this
        optimizer keeps (they are fixed when it is built); ``what`` starts the message."""
        needed = self._state_names_for(checked)
        if set(needed) != set(self.state):
            name = type(self).__name__
            raise ValueError(
                f"{what} the state tensors {sorted(needed)}, but this optimizer keeps "
                f"{sorted(self.state)}, fixed when it was built; build a new {name} with these "
                "settings"
            )

    def _validate_hyperparameters(self, **hyperparameters: Any) -> dict[str, Any]:
        """Return the hyper-parameters checked (and normalised); raise on a bad one."""
        return dict(hyperparameters)

    def _checked_hyperparameters(
        self, settings: Mapping[str, Any], together: bool = True
    ) -> dict[str, Any]:
        """``settings`` checked: each by its :class:`Hyperparameter`'s own ``check``, then all
        together by :meth:`_validate_hyperparameters` (unless ``together`` is false)."""
        name = type(self).__name__
        checks = type(self)._hyperparameter_checks()
        alone = {
            key: checks[key](name, value) if key in checks else value
            for key, value in settings.items()
        }
        if not together:
            return alone
        return {**alone, **self._validate_hyperparameters(**alone)}

    def _set_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> None:
        """Restore saved hyper-parameters (an optional one left out takes its default); a
        list where the value is a tuple (as JSON gives one back, from a checkpoint) is made a
        tuple again."""
        restored = {
            key: _as_tuples(value)
            if isinstance(value, list) and isinstance(getattr(self, "_" + key, None), tuple)
            else value
            for key, value in hyperparameters.items()
        }
        self._assign_hyperparameters({**self.optional_hyperparameters, **restored})

    def _state_names_for(self, hyperparameters: Mapping[str, Any]) -> tuple[str, ...]:
        """The state tensors that the (checked) ``hyperparameters`` need."""
        return type(self).state_names

    def _assign_hyperparameters(self, changes: Mapping[str, Any]) -> None:
        """Check ``changes`` with the other hyper-parameters, as the constructor does, then
        set them (all of them or none)."""
        # (getattr and setattr rather than self.__dict__, whose use would make every later
        # attribute read of this optimizer, those of step() too, a slower lookup)
        name = type(self).__name__
        absent = object()
        names = self._hyperparameter_names()
        current = {key: getattr(self, "_" + key, absent) for key in names}
        settings = {
            **self.optional_hyperparameters,
            **{key: value for key, value in current.items() if value is not absent},
            **changes,
        }
        # A subclass of a built-in optimizer that sets a setting of its own before calling the
        # built-in's constructor (as a subclass of Optimizer does its own): the built-in's are
        # not set yet, and its _validate_hyperparameters, which reads them, would fail on the
        # first one missing (a KeyError). The value is checked alone by its Hyperparameter,
        # and stored; the built-in's constructor checks it with all the others when it sets
        # its own.
        added = self._added_hyperparameters()
        if all(key in settings for key in names if key not in added):
            checked = self._checked_hyperparameters(settings)
        else:
            checked = self._checked_hyperparameters(changes, together=False)
        if hasattr(self, "state"):  # (built: the state tensors exist)
            given = ", ".join(f"{key}={shown(value)}" for key, value in changes.items())
            self._check_state_fits(checked, f"{name}: {given} needs")
            self._check_in_range(checked, name)
        for key, value in checked.items():
            # (a subclass that keeps a hyper-parameter as a plain attribute, as before
            # Hyperparameter existed, gets it back there)
            setattr(self, "_" + key if key in names else key, value)

    @classmethod
    def _hyperparameter_names(cls) -> list[str]:
        """The names of the class's :class:`Hyperparameter` attributes."""
        # (by each one's own name: an alias in a subclass, ``mu = SGD.momentum``, is the same)
        names = (
            value.name
            for klass in reversed(cls.__mro__)
            for value in vars(klass).values()
            if isinstance(value, Hyperparameter)
        )
        return list(dict.fromkeys(names))

    @classmethod
    def _hyperparameter_checks(cls) -> dict[str, Callable[[str, Any], Any]]:
        """The ``check`` of each of the class's :class:`Hyperparameter` attributes that has one."""
        checks: dict[str, Callable[[str, Any], Any]] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                if isinstance(value, Hyperparameter) and value.check is not None:
                    checks[value.name] = value.check
        return checks

    def __repr__(self) -> str:
        settings = ", ".join(
            f"{k}={v}" for k, v in {"lr": self._lr, **self.hyperparameters()}.items()
        )
        return f"{type(self).__name__}({settings})"


def _check_state_fits(where: str, name: str, tensor: Tensor, dtype: torch.dtype, then: str) -> None:
    """Refuse a state tensor whose finite values would be infinite in ``dtype`` (the
    parameters', which the state takes): Adagrad's ``sum`` or Adam's ``exp_avg_sq`` infinite
    makes every update it divides 0, the parameters stopping with no error. ``then`` ends the
    message: what to do instead."""
    if tensor.dtype == dtype or tensor.is_meta or not tensor.numel():
        return
    if torch.finfo(tensor.dtype).max <= torch.finfo(dtype).max:  # (cannot overflow)
        return
    finite = tensor.isfinite()
    if not bool((finite & tensor.to(dtype).isinf()).any()):
        return
    largest = tensor[finite].abs().max().item()
    raise ValueError(
        f"{where}: state {name!r} holds {largest:.6g}, beyond the range of the parameters' "
        f"dtype {dtype} (largest finite value {torch.finfo(dtype).max:.6g}): cast to it, the "
        f"state would be infinite, and the updates made from it infinite or 0; {then}"
    )


def _as_tuples(value: object) -> object:
    """``value`` with every list in it made a tuple (a saved tuple of tuples, from JSON)."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(item) for item in value)
    return value


def _rounds_to_zero(value: object, dtype: torch.dtype) -> bool:
    """Whether ``value``, a positive real number, is 0 once rounded to ``dtype``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not float(value) > 0:
        return False
    return float(torch.tensor(float(value), dtype=dtype)) == 0.0


@lru_cache(maxsize=8)
def _smallest_taken(dtype: torch.dtype) -> float:
    """The smallest positive float that ``dtype`` does not round to 0 (as :func:`_rounds_to_zero`
    converts it), found among the floats between 0 and the dtype's smallest positive value, in
    the order of their bit patterns. About half that value: float16's is
    2.980232416405216e-08, not the next float above 2**-25, a Python float being rounded to
    float32 first, here as in a 16-bit operation with a Python number (``sqrt(v).add_(eps)``
    gives 0 below it, float16's smallest positive value from it on)."""
    below = 0  # the bits of 0.0, which rounds to 0
    above = _float_bits(torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps)
    while above - below > 1:
        middle = (below + above) // 2
        if _rounds_to_zero(_bits_float(middle), dtype):
            below = middle
        else:
            above = middle
    return _bits_float(above)


def _float_bits(value: float) -> int:
    """The bit pattern of a positive float, as an integer (ordered as the floats are)."""
    return int(struct.unpack("<q", struct.pack("<d", value))[0])


def _bits_float(bits: int) -> float:
    """The float of the bit pattern ``bits`` (see :func:`_float_bits`)."""
    return float(struct.unpack("<d", struct.pack("<q", bits))[0])


def _same_settings(saved: Mapping[str, Any], own: Mapping[str, Any]) -> bool:
    """Whether hyper-parameters saved in a state dict are ``own`` (a pair such as ``betas`` as
    a tuple or a list); anything that is no plain value compares unequal."""

    def plain(value: object) -> object:
        return tuple(value) if isinstance(value, list | tuple) else value

    if set(saved) != set(own):
        return False
    try:
        return all(bool(plain(saved[key]) == plain(value)) for key, value in own.items())
    except Exception:  # (a tensor of several elements, or a value of one's own)
        return False


def _takes(klass: type[Optimizer], names: set[str]) -> bool:
    """Whether ``klass`` saves hyper-parameters of these ``names``: its required ones and
    perhaps some of its optional ones."""
    optional = set(klass.optional_hyperparameters)
    required = set(klass._hyperparameter_names()) - optional
    return required <= names <= required | optional


def _same_shapes(saved: object, shapes: list[list[int]]) -> bool:
    """Whether ``saved`` (from a state dict: lists or tuples of ints) equals ``shapes``."""
    if not isinstance(saved, list | tuple) or len(saved) != len(shapes):
        return False
    return all(
        isinstance(shape, list | tuple | torch.Size) and list(shape) == expected
        for shape, expected in zip(saved, shapes, strict=True)
    )


def _format_shapes(shapes: object) -> str:
    if isinstance(shapes, list | tuple) and all(isinstance(s, list | tuple) for s in shapes):
        return "[" + ", ".join(str(tuple(shape)) for shape in shapes) + "]"
    return repr(shapes)


def _refuse_shared_data(name: str, params: list[Parameter]) -> None:
    """Refuse two Parameters over one tensor's memory (``Parameter(t)`` twice, or over ``t``
    and ``t.view(-1)``): each step updated it twice, with two states, where PyTorch warns of a
    tensor given twice. Two views that start at one address and span as many elements over as
    much memory count as one tensor; views of parts of one buffer (a flat model's parameters)
    do not, unless the parts share elements (``t[0:4]`` and ``t[2:6]``, whose shared elements
    each step updated twice, without a word from PyTorch either)."""
    held: dict[tuple[torch.device, int, int, int], int] = {}
    spans: list[tuple[str, int, int, int]] = []  # (device, first byte, past the last, index)
    for index, parameter in enumerate(params):
        data = parameter.data
        if data.numel() == 0 or data.is_meta:  # (no memory to share)
            continue
        span = _extent(data)
        key = (data.device, data.data_ptr(), data.numel(), span * data.element_size())
        first = held.setdefault(key, index)
        if first != index:
            raise ValueError(
                f"{name}: params[{first}] and params[{index}] are two Parameters over the same "
                f"tensor ({tuple(data.shape)}, {data.dtype}): each step would update it twice; "
                "give one of them"
            )
        start = data.data_ptr()
        spans.append((str(data.device), start, start + span * data.element_size(), index))
    # Parts whose memory ranges meet (none in a flat buffer laid out by layer, whose parameters
    # lie one after the other; every pair in a stack laid out by model, whose weights stride
    # through each other's blocks): each cluster of ranges that meet is marked element by
    # element in one mask over it, in the parameters' order, so that the first parameter whose
    # elements are marked already shares some with one before it (a linear cost, where one
    # mask a pair took 9 s on a 43-million-entry stack).
    spans.sort()
    cluster: list[int] = []  # (the indices of the parameters of the cluster being gathered)
    cluster_device, cluster_end = "", 0
    for device, start, end, index in [*spans, ("", 0, 0, -1)]:  # (the last closes the last)
        if cluster and (device != cluster_device or start >= cluster_end):
            if len(cluster) > 1:
                _refuse_shared_elements(name, params, sorted(cluster))
            cluster = []
        if not cluster:
            cluster_device, cluster_end = device, end
        cluster.append(index)
        cluster_end = max(cluster_end, end)


def _refuse_shared_elements(name: str, params: list[Parameter], indices: list[int]) -> None:
    """Refuse two of ``params[i]`` (``i`` in ``indices``, ascending; one dtype, their memory
    ranges meeting) that share an element: each marks its elements in one mask over their
    ranges (on the CPU, from their strides alone), and the first that finds one of its
    elements marked already is named with the one before it that holds that element (found
    by a second pass, which marks each element with its holder's number)."""
    tensors = [params[index].data for index in indices]
    size = tensors[0].element_size()
    low = min(tensor.data_ptr() for tensor in tensors)
    offsets = [tensor.data_ptr() - low for tensor in tensors]
    if any(offset % size for offset in offsets):  # (not a whole number of elements apart)
        _raise_shared(name, params, indices[0], indices[1])
    reach = max(offset // size + _extent(t) for offset, t in zip(offsets, tensors, strict=True))

    def marked(dtype: torch.dtype) -> list[Tensor]:
        """Each tensor's elements in one new mask of ``dtype`` over the ranges."""
        mask = torch.zeros(reach, dtype=dtype)
        return [
            mask.as_strided(t.shape, t.stride(), offset // size)
            for t, offset in zip(tensors, offsets, strict=True)
        ]

    for position, view in enumerate(marked(torch.bool)):
        if position and bool(view.any()):
            break
        view.fill_(True)
    else:
        return
    # (one shares: a mask again, each element marked with its holder's number, to name both)
    for position, view in enumerate(marked(torch.int32)):
        taken = view[view > 0]
        if taken.numel():
            _raise_shared(name, params, indices[int(taken[0]) - 1], indices[position])
        view.fill_(position + 1)


def _raise_shared(name: str, params: list[Parameter], first: int, second: int) -> NoReturn:
    """Refuse ``params[first]`` and ``params[second]``, which share elements."""
    raise ValueError(
        f"{name}: params[{first}] ({_described(params[first].data)}) and "
        f"params[{second}] ({_described(params[second].data)}) share elements of one tensor's "
        "memory: each step would update those elements twice; give Parameters over separate "
        "memory (a clone() of one of them)"
    )


def _extent(tensor: Tensor) -> int:
    """The elements from a strided tensor's first to its last, both included."""
    return 1 + sum(
        (n - 1) * stride for n, stride in zip(tensor.shape, tensor.stride(), strict=True)
    )


def _described(data: Tensor) -> str:
    """A parameter's shape and dtype, for a message."""
    return f"{tuple(data.shape)}, {data.dtype}"


def _same_objects(these: tuple[object, ...], those: tuple[object, ...]) -> bool:
    """Whether two tuples hold the same objects, in the same order (by identity: a tensor's
    ``==`` compares its values)."""
    return len(these) == len(those) and all(map(operator.is_, these, those))
