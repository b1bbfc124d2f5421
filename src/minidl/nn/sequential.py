"""A chain of modules."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, SupportsIndex, TypeVar, overload

import torch
from torch import Tensor

from minidl import anomaly
from minidl._validate import add_note, check_int, shown
from minidl.nn._checks import given_module, refuse_given_gradient_dtype
from minidl.nn._gradient_memory import GradientMemory
from minidl.nn._recent import Recent
from minidl.nn.chain import ChainPlan, PlanDeclinedError, Signature, plannable
from minidl.nn.flat import flat_buffer, flatten_parameters
from minidl.nn.loss import check_not_a_loss
from minidl.nn.module import (
    TRAINING_IN_TRIAL,
    TRIAL,
    Module,
    check_initialised,
    check_registered,
    trial_key,
    updating_parts,
)
from minidl.nn.parameter import Parameter, first_overlap

__all__ = ["Sequential"]

#: The class of a module registered (see :meth:`Module.register_module`).
_Module = TypeVar("_Module", bound=Module)


class Sequential(Module):
    r"""Modules applied one after the other: :math:`y = f_k(\dots f_2(f_1(x)))`.

    ``forward`` calls each child's ``forward`` in order; ``backward`` calls each child's
    ``backward`` in reverse order, so gradients flow from the last module to the first: the chain
    rule :math:`\partial L/\partial x = J_{f_1}^T(J_{f_2}^T(\dots J_{f_k}^T g))`, with
    :math:`J_{f_i}` the Jacobian of :math:`f_i` at its input of the last forward: the transpose
    of the chain's Jacobian :math:`J_{f_k} \cdots J_{f_1}`, applied to :math:`g` starting with
    :math:`J_{f_k}^T`: each child computes the product :math:`J_{f_i}^T g_i` with the gradient
    :math:`g_i` that reaches it, directly from its cache, and no Jacobian is ever formed. Each child accumulates its own parameters' gradients from the
    gradient that reaches it. ``param()`` and ``parameters()`` concatenate the children's, in
    order. ``backward_parameters`` (for a network whose input is data) stops at the first
    module with parameters and skips its input gradient.

    A chain of :class:`~minidl.nn.Linear` layers and built-in activations plans its calls for
    an input shape it trains on (see :mod:`minidl.nn.chain`): the same operations and bits as
    the children one by one, checked once for the chain, with the results inside it written
    into buffers made once.

    When it is built, a ``Sequential`` makes the values (and the gradients) of all its parameters
    views of one flat buffer (see :mod:`minidl.nn.flat`), so that an optimizer runs its update's
    few tensor operations once over the whole model, not once per parameter. The
    :class:`~minidl.nn.Parameter` objects of the children are kept.
    Parameters that already tile one buffer, in order (those of consecutive modules of another
    ``Sequential``), stay where they are.

    ``model[i]`` is the i-th module; ``model[a:b]`` is a ``Sequential`` of the same module
    objects under the same names (as in PyTorch: ``model[2:]``'s first module is ``"2"``,
    and its ``state_dict`` keys are the model's; ``model[:-1]`` runs all but the last), whose
    parameters stay where they are: training either trains both. The modules are fixed when
    it is built: ``model[i] = module``, ``del model[i]``, ``append``, ``extend``, ``insert``,
    ``pop``, ``+=`` and ``*=``, which change PyTorch's ``Sequential`` in place, are refused with
    the ``Sequential`` to build instead. ``model + other`` and ``model * 1`` build a new one of
    the same module objects, as PyTorch's; ``model * 2``, which repeats them in PyTorch, is
    refused, as is any module object at two places (it keeps its last forward's cache for its
    backward): build the repeats with new modules, ``Sequential(*model, *copy.deepcopy(model))``.

    A forward refused part-way (a child raises, say for an input that the children before it
    accepted) leaves those children holding the refused input's caches. Where a child changes
    its state in training mode (a :class:`~minidl.nn.BatchNorm1d`'s running statistics, a
    ``Dropout``'s generator), an input of a new shape, dtype or device is first tried in
    evaluation mode, so that one refused for its shape or dtype leaves that state as it was
    (PyTorch's batch norm counts the batch); one refused otherwise, after such a trial passed
    (a module of one's own refusing some values, say), leaves the statistics updated by it,
    as in PyTorch. Rather than mix the caches of two inputs, ``backward`` then raises a
    ``RuntimeError`` until a forward succeeds (under :func:`minidl.detect_anomaly` too); so does
    a forward interrupted (``KeyboardInterrupt``) or stopped by ``detect_anomaly``, even in the
    first child. The parameters and their gradients are untouched.

    Args:
        *modules: the modules, in the order data flows through them.

    Shape:
        - Input: what the first module takes, e.g. ``(N, in_features)`` for a ``Linear``.
        - Output: what the last module gives, e.g. ``(N, out_features)``; the input gradient
          of :meth:`backward` has the input's shape.

    Example:
        >>> model = Sequential(Linear(2, 25), Tanh(), Linear(25, 2))
        >>> model(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    # (declared here, not set: _move assigns it before _init_plans does)
    _planned: ChainPlan | None

    def __init__(self, *modules: Module) -> None:
        self._chain(modules)
        check_registered("Sequential", self)
        self._refuse_untied_sharing()
        self._flatten()

    def _refuse_untied_sharing(self) -> None:
        """Refuse two Parameters over one tensor's memory (``second.weight.data =
        first.weight.data``, or a part of it): the flat buffer copies each into a place of its
        own, which would untie them without a word (an optimizer refuses them so). A tied
        weight is one Parameter at two places."""
        pair = first_overlap((name, p.data) for name, p in self.named_parameters())
        if pair is not None:
            first, second = pair
            raise ValueError(
                f"Sequential: parameters {first!r} and {second!r} are two Parameters over one "
                "tensor's memory, which the model's flat buffer would copy apart (untying "
                f"them); tie them as one Parameter (register the Parameter at {first!r} as "
                f"{second!r} too, register_parameter), or give each its own tensor (.clone())"
            )

    def _flatten(self) -> None:
        """Make the parameters views of one flat buffer, unless they already are."""
        parameters = list(self.parameters())
        if (
            flat_buffer([parameter.data for parameter in parameters]) is None
            or flat_buffer([parameter.grad for parameter in parameters]) is None
        ):
            flatten_parameters(parameters)

    def _move(self, device: torch.device | None, dtype: torch.dtype | None) -> bool:
        """Move, then make the parameters one flat buffer again if they are not (after a part
        of the model was moved on its own, say); a move that changes nothing does nothing."""
        moved = super()._move(device, dtype)
        if moved:
            self._flatten()
        return moved

    def _moved(self) -> None:
        """Drop the plans, whose buffers are of the old dtype or device: after a move of this
        chain, or of a module around it (whose ``.to()`` moves the tensors of every module
        inside it at once, not through this chain's :meth:`_move`)."""
        self._plans.clear()
        self._planned = None
        self._tried: tuple[object, ...] | None = None  # (the buffers moved: tried again)
        # The modules inside that change their state in training mode, and when found (see
        # _try).
        self._updaters: tuple[int, tuple[Module, ...]] = (-1, ())

    def _chain(self, modules: tuple[Module, ...], names: tuple[str, ...] | None = None) -> None:
        """Everything ``__init__`` does but the flattening; the modules are registered as
        ``names`` (default ``"0"``, ``"1"``, ...)."""
        super().__init__()
        names = tuple(str(index) for index in range(len(modules))) if names is None else names
        places: dict[int, str] = {}  # id of every module in the chain -> its path
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: argument {index} must be a minidl Module, got "
                    + _what_was_given(module)
                )
            check_initialised("Sequential", f"argument {index}", module)
            check_not_a_loss("Sequential", f"argument {index}", module)
            for path, part in module.named_modules(prefix=str(index), remove_duplicate=False):
                if id(part) in places:
                    # Its second forward would overwrite the cache its first backward needs.
                    name = type(part).__name__
                    hint = f"e.g. a second {name}()"
                    if next(part.parameters(), None) is not None:
                        # Tied weights are one Parameter registered in two layers.
                        own = next(iter(part._parameters), None)
                        hint = (
                            f"a second {name}; to share weights between the places, register "
                            f"the first's Parameter in it: second.register_parameter({own!r}, "
                            f"first.{own})"
                            if own is not None
                            else f"a second {name} of new layers; to share weights between the "
                            "places, register the first's Parameters in them: "
                            "new.register_parameter('weight', old.weight)"
                        )
                    raise ValueError(
                        f"Sequential: the {name} at {path!r} is the same object as the one at "
                        f"{places[id(part)]!r}; a module keeps what its last forward computed "
                        f"for its backward, so each place needs its own ({hint})"
                    )
                places[id(part)] = path
            self.register_module(names[index], module)
        self._layers: tuple[Module, ...] = tuple(modules)
        # What the last forward was, if it raised part-way (see forward). (An instance attribute
        # only: one of the class too would make every read of it a slow lookup.)
        self._refused: str | None = None
        self._reversed: tuple[Module, ...] = tuple(reversed(modules))
        # An input or gradient given in the memory of the parameters' gradients is copied
        # first: the first layer reads its input, cached, after the last ones wrote their
        # gradients (see minidl.nn._gradient_memory).
        self._gradients = GradientMemory()
        self._find_first_trained()
        self._init_plans()

    def _find_first_trained(self) -> None:
        """For backward_parameters: the modules from the last one back to the first that has
        parameters (the last module alone if none has), that one apart; and the checks of
        :meth:`_init_checks`. Found again by backward_parameters when a parameter or module was
        registered anywhere since (a child, a lazy module of one's own say, may have got its
        first parameter)."""
        modules = self._layers
        trained = [
            index
            for index, module in enumerate(modules)
            if next(module.parameters(), None) is not None
        ]
        first = trained[0] if trained else len(modules) - 1
        self._first_trained: Module | None = modules[first] if modules else None
        self._after_first_trained: tuple[Module, ...] = tuple(reversed(modules[first + 1 :]))
        self._registrations_seen = Module._registrations
        self._init_checks()

    def register_module(self, name: str, module: _Module) -> _Module:
        """Register a child while the chain is built; a built ``Sequential`` refuses (its
        ``forward`` runs the modules it was built with, in that order, and its parameters are
        one flat buffer made then): build a new one with the modules in the order data flows
        through them.

        Raises:
            ValueError: called on a built ``Sequential``; nothing is changed. (And the errors of
                :meth:`Module.register_module` while it is built.)
        """
        # (not self.__dict__: asking for it makes CPython keep the attributes in a plain dict,
        # and every later attribute read slower)
        if getattr(self, "_layers", None) is not None:
            raise ValueError(
                f"Sequential.register_module: a Sequential's modules are fixed when it is built "
                f"(its forward runs them in that order), got a {type(module).__name__} to "
                f"register as {name!r}; build a new Sequential with every module in the order "
                "data flows through them"
            )
        return super().register_module(name, module)

    def _init_checks(self) -> None:
        """The children whose parameters backward checks before any child runs (see
        :meth:`_check_fits_forward`): those that check anything, for backward and for
        backward_parameters (the first trained one last, as a parameters-only backward)."""
        checks = [
            module
            for module in self._reversed
            if type(module)._check_fits_forward is not Module._check_fits_forward
        ]
        self._checks: tuple[Module, ...] = tuple(checks)
        first = self._first_trained
        self._parameter_checks: tuple[Module, ...] = tuple(
            module for module in checks if module in self._after_first_trained
        )
        self._first_checked = first if first is not None and first in checks else None

    def _check_fits_forward(self, parameters_only: bool = False) -> None:
        """Refuse, before any child's backward runs, parameters put in place, cast or moved
        since the last forward that a child's backward would refuse (each child's own check
        and error): a child refusing part-way would leave the gradients of the children after
        it, whose backward ran first, accumulated."""
        for module in self._parameter_checks if parameters_only else self._checks:
            module._check_fits_forward()
        if parameters_only and self._first_checked is not None:
            self._first_checked._check_fits_forward(parameters_only=True)

    def _init_plans(self) -> None:
        """No plan yet (see :mod:`minidl.nn.chain`): a chain of Linear layers and built-in
        activations is planned for an input signature seen twice in a row, the first time
        followed by a backward."""
        self._tried = None  # (what the last trial was made for: see _try)
        self._updaters = (-1, ())  # (and the modules it needs it for, found again)
        self._plannable = plannable(self._layers)
        self._plans: Recent[ChainPlan] = Recent(4)
        self._planned: ChainPlan | None = None  # the plan of the last forward, if it ran one
        # The signature of the last forward not planned, and Parameter.replacements then; and
        # that of the last one a backward followed (only such a signature is planned: a model
        # evaluated on a large set keeps no buffers for it).
        self._last_signature: tuple[Signature, int] | None = None
        self._trained_signature: tuple[Signature, int] | None = None

    def forward(self, input: Tensor) -> Tensor:
        if self._gradients.holds(input, self):
            input = input.clone()
        # (the one check of `with minidl.detect_anomaly():`, but in a trial: see TRIAL)
        checking = anomaly.enabled and not TRIAL.get()
        if self._plannable and not checking:
            plan = self._planned
            if plan is None or not plan.accepts(input):
                plan = self._plan_for(input)
            if plan is not None:
                planned = self._planned_forward(plan, input)
                if planned is not None:
                    return planned
        self._planned = None
        first = input
        tried_now = False  # (whether a trial ran children here: their caches are the trial's)
        updaters = self._updaters
        if updaters[0] != Module._registrations:
            updaters = self._updaters = updating_parts(self)
        if (
            updaters[1]  # (most chains hold no module that needs a trial: nothing more)
            and type(input) is Tensor
            and not input.is_nested  # (whose shape is not read: its modules refuse it)
            and input.dim()
            and input.shape[0]
        ):
            tried = trial_key(updaters[1], input)
            if tried is not None and tried != self._tried:
                tried_now = self._try(input)
                self._tried = tried
        if checking:  # (after the trial, as without the checks)
            output = anomaly.sequential_forward(self, input, cached=tried_now)  # (notes refusals)
            self._refused = None  # (a forward that succeeds, as below)
            return output
        module = None
        try:
            for module in self._layers:
                input = module.forward(input)
        except BaseException as error:
            self._note_refusal(module, error, cached=tried_now)
            raise
        if self._refused is not None:
            self._refused = None  # a forward that succeeds makes backward possible again
        if (
            self._plannable
            and type(first) is Tensor
            and first.grad_fn is None
            and not first.is_nested
        ):
            self._note_signature(first)
        return input

    def _refused_cleanly(self) -> bool:
        return self._refused is None  # (set by _note_refusal where a child ran on the input)

    def _try(self, input: Tensor) -> bool:
        """Where a module inside the chain changes its state in training mode (a batch norm's
        running statistics, a dropout's generator: :attr:`Module._updates_in_training`), run
        the children on ``input``'s first sample in evaluation mode first, which changes
        neither: a child after it that refuses its input (a layer of another width or dtype)
        then refuses before the statistics counted the batch, or the generator drew, as every
        refusal leaves the state as it was. Where the first sample is refused, the whole batch
        runs in evaluation mode too: a child that takes no single sample passes there, and a
        refusal names the shapes given. Once for each signature of the input (its shape
        past the batch, dtype and device), set of parameter tensors and registrations and the
        modes of the modules that need it (see :func:`~minidl.nn.module.trial_key`), as
        :func:`minidl.train.fit` runs its trial once a call; the children's forward caches then
        hold the trial's, until the forward that follows replaces them. Whether a child's
        forward ran to its end (its cache is then the trial's) is returned."""
        modules = list(self.modules())
        if not any(type(part)._updates_in_training and part.training for part in modules):
            return False
        modes = [(part, part.training) for part in modules]
        at: list[Module | None] = [None]  # (the child running, for the note of a refusal)
        ran = [False]  # (whether a child's forward ran to its end)

        def run(trial: Tensor) -> None:
            for module in self._layers:
                at[0] = module
                trial = module.forward(trial)
                ran[0] = True

        trial = TRIAL.set(True)  # (detect_anomaly's checks stand aside: see TRIAL)
        # (and the parts in training mode make its refusals in the trial: see TRAINING_IN_TRIAL)
        training = TRAINING_IN_TRIAL.set(frozenset(id(part) for part, was in modes if was))
        try:
            for part, _ in modes:
                part.training = False
            sample_refused = False
            try:
                run(input[:1])
            except Exception:
                if input.shape[0] <= 1:
                    raise
                sample_refused = True
            if sample_refused:
                # A child that takes no single sample (one of one's own that needs two), or a
                # refusal whose message would give the sample's shape: the whole batch, still
                # in evaluation mode; only if it fails too is the input refused, in its shapes
                # (raised on its own, not as an error while handling the sample's).
                run(input)
        except BaseException as error:
            self._note_refusal(at[0], error, cached=ran[0])
            raise
        finally:
            TRIAL.reset(trial)
            TRAINING_IN_TRIAL.reset(training)
            for part, was in modes:
                part.training = was
        return True

    def _plan_for(self, input: Tensor) -> ChainPlan | None:
        """The plan made for ``input``'s signature, if any and still valid."""
        if type(input) is not Tensor or input.is_nested:
            return None
        plan = self._plans.get((input.shape, input.dtype, input.device))
        if plan is None or plan.accepts(input):
            return plan
        if plan.stale():  # parameter tensors were replaced, or a method was set: made again
            self._plans.clear()
        return None

    def _planned_forward(self, plan: ChainPlan, input: Tensor) -> Tensor | None:
        """``plan``'s forward; ``None`` if an operation raised an error (the forward then runs
        child by child, whose checks name what went wrong)."""
        step = None
        try:
            for step in plan.steps:
                input = step.forward(input)
        except Exception:
            # (an input from an autograd graph that ChainPlan.accepts cannot tell: a leaf whose
            # operations are recorded, where writing into a buffer is refused before anything
            # is written; the plan stays for inputs that are plain values)
            self._planned = None
            return None
        except BaseException as error:  # (interrupted: see _note_refusal)
            self._planned = None
            self._note_refusal(None if step is None else step.module, error)
            raise
        self._planned = plan
        if self._refused is not None:
            self._refused = None
        return input

    def _decline(self, plan: ChainPlan) -> None:
        """``plan`` refused a gradient from an autograd graph before changing anything (see
        :meth:`ChainPlan.backward`): drop it (its buffers may be in the graph now); the
        children take the gradient."""
        self._plans.clear()
        self._planned = None

    def _note_signature(self, input: Tensor) -> None:
        """After a forward run child by child: plan the input's signature if the forward before
        had it too and was followed by a backward, no parameter tensor was replaced in between
        (a plan made where tensors are replaced on every step would be stale at the next call),
        and no plan is kept for it (one that an input from an autograd graph could not use).
        (Not called for an input that no plan accepts: one of a subclass of ``Tensor``, or the
        result of recorded operations, whose operations record the graph and refuse to write
        into a buffer.)"""
        signature = (input.shape, input.dtype, input.device)
        seen = (signature, Parameter.replacements)
        if seen != self._last_signature:
            self._last_signature = seen
        elif (
            seen == self._trained_signature
            and ChainPlan.possible(self._layers)
            and self._plans.get(signature) is None
        ):
            if any(plan.stale() for plan in self._plans.values()):
                self._plans.clear()  # (their buffers are for parameters replaced since)
            self._plans.put(signature, ChainPlan(self._layers, input))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # Plans hold buffers and the children's caches of this process: made again when needed.
        # The count of registrations seen is this process's too (another starts from 0 and may
        # come to the same number, the registrations since then not seen): found again.
        state.update(
            _planned=None, _last_signature=None, _trained_signature=None, _tried=None,
            _updaters=(-1, ()), _registrations_seen=-1,
        )  # fmt: skip
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_refused", None)  # (pickled before it existed)
        state.setdefault("_tried", None)  # (likewise)
        state.setdefault("_updaters", (-1, ()))  # (likewise)
        state.setdefault("_registrations_seen", -1)  # (pickled before it existed: found again)
        state.setdefault("_gradients", GradientMemory())  # (likewise)
        super().__setstate__(state)
        if "_checks" not in state:  # (pickled before the checks existed)
            self._init_checks()
        if "_plans" not in state:  # (pickled before plans existed)
            self._init_plans()

    def _note_refusal(
        self, module: Module | None, error: BaseException, cached: bool = False
    ) -> None:
        """A child's forward raised: unless it was the first child, has no children of its
        own and refused its input (a refusing module changes nothing), the children before it
        now hold the caches of the refused input, so backward is refused until a forward
        succeeds. A first child interrupted (``KeyboardInterrupt``) or stopped by
        :func:`minidl.detect_anomaly`'s check of its output may have cached its input already;
        and where this forward's trial ran children (``cached``: see :meth:`_try`), their
        caches are the trial's, whichever child refused."""
        if module is None:  # (no child ran)
            return
        index = next(i for i, layer in enumerate(self._layers) if layer is module)
        # Named as registered: a slice keeps the model's names (model[2:]'s first is "2").
        place = tuple(self._modules)[index]
        name = type(module).__name__
        if anomaly.may_follow_a_run(error):
            self._refused = (
                f"a forward stopped at module {place} ({name}) by {type(error).__name__}"
            )
        elif index > 0 or not module._refused_cleanly() or cached:
            self._refused = f"the forward refused by module {place} ({name})"
        # Where in the chain: the module's own message names its class, not its place.
        add_note(error, f"in Sequential, at module {place} ({name})")

    def _note_backward_refusal(self, method: str, module: Module | None, error: Exception) -> None:
        """A child's backward raised: note its place, and where the gradient it was given came
        from (the backward of the module after it, or this ``Sequential``'s caller). A module of
        one's own that returns a gradient of the wrong shape (or none) is otherwise named by
        no message: the module before it refuses that gradient, in its own name. (Not an
        :class:`~minidl.anomaly.AnomalyError`, which names the module and the pass itself: the
        gradient given was finite, or the check of the module after it would have named it.)"""
        if module is None or isinstance(error, anomaly.AnomalyError):
            return
        index = next(i for i, layer in enumerate(self._layers) if layer is module)
        places = tuple(self._modules)
        if index + 1 < len(self._layers):
            after = type(self._layers[index + 1]).__name__
            source = f"returned by the backward of module {places[index + 1]} ({after})"
        else:
            source = f"passed to Sequential.{method}"
        add_note(
            error,
            f"in Sequential.{method}, at module {places[index]} ({type(module).__name__}), "
            f"given the gradient {source}",
        )

    def _check_not_refused(self) -> None:
        if self._refused is not None:
            raise RuntimeError(
                f"Sequential: backward after {self._refused}: the modules that ran had already "
                "cached its input, so the last good forward cannot be differentiated; run a "
                "forward that succeeds, then backward"
            )

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._refused is not None:
            self._check_not_refused()
        if self._gradients.holds(grad_output, self):
            grad_output = grad_output.clone()
        if anomaly.enabled:
            if self._checks:
                self._check_fits_forward()
            try:
                return anomaly.sequential_backward(self, grad_output, method="backward")
            except Exception as error:
                refuse_given_gradient_dtype("Sequential", error, grad_output)
                raise
        plan = self._planned
        if plan is not None and plan.takes(grad_output):
            try:
                return plan.backward(grad_output, with_input=True)  # type: ignore[return-value]
            except PlanDeclinedError:
                self._decline(plan)
        self._trained_signature = self._last_signature
        if self._checks:
            self._check_fits_forward()
        module = None
        gradient = grad_output
        try:
            for module in self._reversed:
                gradient = module.backward(gradient)
        except Exception as error:
            self._note_backward_refusal("backward", module, error)
            refuse_given_gradient_dtype("Sequential", error, grad_output)
            raise
        return gradient

    def backward_parameters(self, grad_output: Tensor) -> None:
        """:meth:`backward` without the input gradient: the modules in front of the first one
        with parameters are skipped, and that one runs its own ``backward_parameters``.

        The parameter gradients, the checks of the gradients that flow and their errors are
        :meth:`backward`'s. Under :func:`minidl.detect_anomaly` it is :meth:`backward` (every
        module runs and is checked).
        """
        if self._refused is not None:
            self._check_not_refused()
        if self._gradients.holds(grad_output, self):
            grad_output = grad_output.clone()
        if anomaly.enabled:
            if self._checks:
                self._check_fits_forward()
            try:
                anomaly.sequential_backward(self, grad_output, method="backward_parameters")
            except Exception as error:
                refuse_given_gradient_dtype("Sequential", error, grad_output)
                raise
            return
        plan = self._planned
        if plan is not None and plan.takes(grad_output):
            try:
                plan.backward(grad_output, with_input=False)
                return
            except PlanDeclinedError:
                self._decline(plan)
        self._trained_signature = self._last_signature
        if self._registrations_seen != Module._registrations:
            self._find_first_trained()
        if self._checks:
            self._check_fits_forward(parameters_only=True)
        module = None
        gradient = grad_output
        try:
            for module in self._after_first_trained:
                gradient = module.backward(gradient)
            module = self._first_trained
            if module is not None:
                if type(module)._skips_own_backward:
                    module.backward(gradient)  # (see Module._skips_own_backward)
                else:
                    module.backward_parameters(gradient)
        except Exception as error:
            self._note_backward_refusal("backward_parameters", module, error)
            refuse_given_gradient_dtype("Sequential", error, grad_output)
            raise

    @overload
    def __getitem__(self, index: SupportsIndex) -> Module: ...

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

    def __getitem__(self, index: SupportsIndex | slice) -> Module:
        if isinstance(index, slice):
            # The same modules, their parameters left where they are (even with a step, where
            # they do not tile one buffer and __init__ would move them out of this model's).
            # Registered under their names in this model, as PyTorch's slices keep them (so
            # that the part's state_dict keys are the model's).
            part = Sequential.__new__(Sequential)
            part._chain(self._layers[index], tuple(self._modules)[index])
            part.training = self.training  # its modules are in this model's mode
            return part
        boolean = isinstance(index, bool) or (
            isinstance(index, Tensor) and index.dtype is torch.bool
        )
        position = None if boolean else _as_index(index)
        if position is None:  # (a float tensor has __index__, which refuses it in torch's words)
            got = (
                f"a tensor of {index.dtype} and shape {tuple(index.shape)}"
                if isinstance(index, Tensor)
                else type(index).__name__
            )
            raise TypeError(f"Sequential: indices must be integers or slices, got {got}")
        try:
            return self._layers[position]
        except IndexError:
            raise IndexError(
                f"Sequential: index {shown(index)} is out of range for {len(self._layers)} modules"
            ) from None

    # -- what PyTorch's Sequential changes in place: refused, as register_module is --------------

    def __setitem__(self, index: int | slice, module: object) -> NoReturn:
        """Refused, as :meth:`register_module` is: a built ``Sequential``'s modules are fixed
        (PyTorch's ``Sequential`` replaces the module). Build a new one:
        ``Sequential(*model[:i], module, *model[i + 1:])``.

        Raises:
            TypeError: always (the error of an object without item assignment, saying how to
                build the model wanted); nothing is changed.
        """
        raise self._fixed(
            f"{_a(type(module).__name__)} to put at model[{_index_text(index)}]",
            self._spliced(index, "*modules" if isinstance(index, slice) else "module"),
        )

    def __delitem__(self, index: int | slice) -> NoReturn:
        """Refused, as :meth:`__setitem__` is (PyTorch's ``Sequential`` removes the module): build
        the model without it, ``Sequential(*model[:i], *model[i + 1:])``.

        Raises:
            TypeError: always; nothing is changed.
        """
        raise self._fixed(f"del model[{_index_text(index)}]", self._spliced(index, None))

    def append(self, module: object) -> NoReturn:
        """Refused, as :meth:`__setitem__` is (PyTorch's ``Sequential.append`` adds the module at
        the end): build ``Sequential(*model, module)``.

        Raises:
            TypeError: always; nothing is changed.
        """
        raise self._fixed(f"{_a(type(module).__name__)} to append", "Sequential(*model, module)")

    def extend(self, modules: object) -> NoReturn:
        """Refused, as :meth:`__setitem__` is: build ``Sequential(*model, *modules)``.

        Raises:
            TypeError: always; nothing is changed.
        """
        raise self._fixed(
            f"{_a(type(modules).__name__)} to extend it with", "Sequential(*model, *modules)"
        )

    def insert(self, index: int, module: object) -> NoReturn:
        """Refused, as :meth:`__setitem__` is: build
        ``Sequential(*model[:index], module, *model[index:])`` (``Sequential(module, *model)`` at
        the start, ``Sequential(*model, module)`` at the end; for an index that PyTorch's
        ``insert`` takes, an int in ``[-len(model), len(model)]``, a NumPy integer too; for
        another, which it refuses, the refusal names no place, as :meth:`__setitem__`'s for an
        index out of range).

        Raises:
            TypeError: always; nothing is changed.
        """
        count = len(self._layers)
        at = _as_index(index)
        if at is not None and -count <= at <= count:
            at = at + count if at < 0 else at
            before = [] if at == 0 else ["*model" if at == count else f"*model[:{at}]"]
            after = [] if at == count else ["*model" if at == 0 else f"*model[{at}:]"]
            instead = f"Sequential({', '.join([*before, 'module', *after])})"
        else:
            instead = "Sequential(*modules)"
        raise self._fixed(f"{_a(type(module).__name__)} to insert at {_index_text(index)}", instead)

    def pop(self, key: int | slice) -> NoReturn:
        """Refused, as :meth:`__delitem__` is: take ``model[key]``, then build the model
        without it.

        Raises:
            TypeError: always; nothing is changed.
        """
        at = _index_text(key)
        raise self._fixed(f"pop({at})", f"model[{at}], and {self._spliced(key, None)}")

    def _fixed(self, given: str, instead: str) -> TypeError:
        """The refusal of a change to the modules of this built ``Sequential`` (``given``
        describes it); ``instead`` builds the model wanted."""
        return TypeError(
            "Sequential: a Sequential's modules are fixed when it is built (its forward runs "
            f"them in that order, and its parameters are one flat buffer made then), got {given};"
            " build a new Sequential with every module in the order data flows through them, "
            f"{instead}"
        )

    def _spliced(self, index: object, new: str | None) -> str:
        """How to build this model with ``model[index]`` replaced by ``new`` (removed if
        ``None``), in the words of the refusals above."""
        count = len(self._layers)
        at = None if isinstance(index, slice) else _as_index(index)
        if at is not None and -count <= at < count:
            start, stop = at % count, at % count + 1
        elif isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(count)
            stop = max(start, stop)
        else:
            return "Sequential(*modules)"
        parts = [f"*model[:{start}]"] if start > 0 else []
        parts += [new] if new is not None else []
        parts += [f"*model[{stop}:]"] if stop < count else []
        return f"Sequential({', '.join(parts)})"

    # -- PyTorch's operators: a new Sequential; in place, refused ----------------------------------

    def __add__(self, other: Sequential) -> Sequential:
        """``model + other``: a new ``Sequential`` of this model's modules, then ``other``'s,
        numbered from ``"0"``, as PyTorch's: the module objects themselves, neither model
        changed. It is ``Sequential(*model, *other)``: the parameters are put into one new flat
        buffer, unless they already tile one in order (``model[:2] + model[2:]``).

        Raises:
            ValueError: ``other`` is not a minidl ``Sequential`` (as PyTorch's), or a module is
                in both (a module keeps its last forward's cache for its backward, so each
                place needs its own); nothing is changed.
        """
        if not isinstance(other, Sequential):
            hint = (
                "; to add one module, build Sequential(*model, module)"
                if isinstance(other, Module)
                else ""
            )
            raise ValueError(f"Sequential: + takes a Sequential, got {given_module(other)}{hint}")
        # Named here by each model's own paths (those of its repr), not the sum's numbers.
        places = {id(part): path for path, part in self.named_modules(remove_duplicate=False)}
        for path, part in other.named_modules(remove_duplicate=False):
            if path and id(part) in places:
                raise ValueError(
                    f"Sequential: model + other would put the {type(part).__name__} at "
                    f"{path!r} of other, the same object as the one at {places[id(part)]!r} of "
                    "model, at two places; a module keeps what its last forward computed for its "
                    "backward, so each place needs its own: add a copy with modules of its own, "
                    "model + copy.deepcopy(other)"
                )
        return Sequential(*self._layers, *other._layers)

    def __mul__(self, factor: int) -> Sequential:
        """``model * factor``: PyTorch's repeats the module objects themselves ``factor`` times,
        which a minidl ``Sequential`` refuses (a module keeps its last forward's cache for its
        backward, so each place needs its own). ``model * 1`` is a new ``Sequential`` of the
        same modules, as PyTorch's (``Sequential(*model)``), and an empty model repeated is
        empty; for a model at several places, build it with new modules,
        ``Sequential(*model, *copy.deepcopy(model))`` (with weights of their own).

        Raises:
            TypeError: ``factor`` is not an integer (as PyTorch's; a bool is not one here).
            ValueError: ``factor`` is below 1 (as PyTorch's), or above 1 for a model with
                modules; nothing is changed.
        """
        count = check_int("Sequential", "the factor of model * factor", factor)
        if count > 1 and self._layers:
            raise ValueError(
                f"Sequential: model * {shown(factor)} would put each of its {len(self._layers)} "
                "modules at several places (PyTorch's repeats the module objects themselves); "
                "a module keeps what its last forward computed for its backward, so each place "
                "needs its own: build the repeats with new modules, "
                "Sequential(*model, *copy.deepcopy(model)) for weights of their own"
            )
        return Sequential(*self._layers)

    def __rmul__(self, factor: int) -> Sequential:
        """``factor * model`` is ``model * factor``, as in PyTorch."""
        return self.__mul__(factor)

    def __iadd__(self, other: object) -> NoReturn:
        """Refused, as :meth:`extend` is (PyTorch's ``+=`` adds ``other``'s modules in place):
        build ``model = model + other``, a new ``Sequential``.

        Raises:
            TypeError: always; nothing is changed.
        """
        raise self._fixed(f"{_a(type(other).__name__)} to add in place (+=)", "model + other")

    def __imul__(self, factor: object) -> NoReturn:
        """Refused, as :meth:`extend` is (PyTorch's ``*=`` repeats the modules in place); see
        :meth:`__mul__` for the model to build.

        Raises:
            TypeError: always; nothing is changed.
        """
        raise self._fixed(
            f"{shown(factor)} to repeat it by in place (*=)",
            "Sequential(*model, *copy.deepcopy(model)) for two places with modules of their own",
        )

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)


def _index_text(index: object) -> str:
    """``index`` as written between brackets: ``1``, ``-1``, ``1:3``, ``::2``."""
    if isinstance(index, slice):
        parts = ["" if part is None else shown(part) for part in (index.start, index.stop)]
        if index.step is not None:
            parts.append(shown(index.step))
        return ":".join(parts)
    return shown(index)


def _as_index(index: object) -> int | None:
    """``index`` as the int that PyTorch's ``Sequential`` takes it for (``operator.index``: an
    int, a NumPy integer, a one-element integer tensor), or ``None`` for another object."""
    if isinstance(index, int):
        return int(index)
    try:
        return operator.index(index)  # type: ignore[arg-type]
    except Exception:  # (no __index__, or one that refuses: a float tensor, say)
        return None


def _a(name: str) -> str:
    """``name`` after its article: ``a Sigmoid``, ``an int``, ``an ELU``."""
    return f"{'an' if name[:1] in tuple('AEIOUaeiou') else 'a'} {name}"


def _what_was_given(value: object) -> str:
    """A non-module given to ``Sequential``, and the usual fix."""
    if isinstance(value, type) and issubclass(value, Module):
        return f"the class {value.__name__}; pass an instance, {value.__name__}()"
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__}; pass the modules themselves, Sequential(*modules)"
    if isinstance(value, Mapping):
        # PyTorch's Sequential(OrderedDict(...)) names its children; minidl numbers them.
        return (
            f"{_a(type(value).__name__)}; a minidl Sequential numbers its "
            "modules (it takes no names): pass the modules themselves, "
            "Sequential(*modules.values())"
        )
    return given_module(value)
