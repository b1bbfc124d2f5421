"""The base class of every network component: :class:`Module`.

The contract is the course's (and the paper's):

* ``forward(*input)`` returns the output and caches exactly what ``backward`` needs;
* ``backward(*gradwrtoutput)`` returns the gradient of the loss with respect to the input and
  **accumulates** the gradients of the module's parameters (call ``zero_grad()`` between steps);
* ``param()`` returns ``(value, grad)`` pairs of tensors of equal shape, empty for modules without
  parameters.

``backward_parameters(grad_output)`` is ``backward`` for a module whose input needs no gradient
(the data, at the start of a network): the same parameter gradients, no input gradient returned.

On top of it, what a PyTorch user expects: ``module(x)``, ``parameters()``, ``zero_grad()``,
``train()`` / ``eval()``, ``state_dict()`` / ``load_state_dict()``, ``to(device, dtype)``,
``get_submodule(path)`` / ``get_parameter(path)`` / ``get_buffer(path)`` and a readable
``repr``. State that is not trained (e.g. batch-norm running statistics) is registered
with ``register_buffer``: saved, loaded and moved with the parameters, but given no gradient.

The cache holds references, not copies (a copy per call would cost the time minidl competes
on): the input (:class:`~minidl.nn.Linear`), the output that ``forward`` returned (the
activations that reuse it, such as :class:`~minidl.nn.Tanh`, :class:`~minidl.nn.ReLU`,
:class:`~minidl.nn.Sigmoid` and :class:`~minidl.nn.Softmax`; :class:`~minidl.nn.BatchNorm1d`
without ``affine``), the target of a loss (and, for some, the prediction); and ``backward``
reads the parameters' values when it runs. **Changing any of them in place between a forward
and its backward silently changes what backward computes**, where PyTorch's autograd raises
("modified by an inplace operation"): clone a tensor before changing it in place, or run the
forward again. What minidl itself writes during a backward is another matter: an input or gradient
given in the memory of a parameter gradient (``layer(layer.weight.grad)``,
``layer.backward(layer.weight.grad)``) is copied by :class:`~minidl.nn.Linear`,
:class:`~minidl.nn.BatchedLinear`, :class:`~minidl.nn.BatchNorm1d`, :class:`~minidl.nn.Sequential`
and :class:`~minidl.nn.Residual` before they write that gradient, so that backward computes from
the values given, as PyTorch's does. A built-in module with parameters cast or moved (``.to(...)``)
after its forward refuses to run its backward (one without parameters has nothing to move), and so
does one given a parameter of another shape since; a :class:`~minidl.nn.Sequential` checks this for
all its children before the first one's backward runs, so that such a refusal leaves every gradient
as it was.

Backward may run more than once after one forward: each call returns the same input gradient
and accumulates the parameter gradients once more (PyTorch asks for ``retain_graph=True``).
It does not change its gradient argument or the cache; the tensor it returns is new, except
where the module is the identity (:class:`~minidl.nn.Identity`, :class:`~minidl.nn.Dropout`
in evaluation mode or with ``p = 0``): it returns its argument, as its forward returns its
input, like PyTorch's (promoted to a new tensor when it has another dtype than the forward's
input, as every module without parameters promotes such a gradient).
"""

from __future__ import annotations

import contextvars
import functools
import gc
import itertools
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from types import MethodType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)

import torch
from torch import Tensor

from minidl._setting import Setting, read_overridden_settings
from minidl._validate import (
    check_copyable,
    check_dtype,
    layout_name,
    shown,
    shown_typed,
    unavailable,
)
from minidl.nn._checks import check_bool, given_module, given_parameter, refuse_set_to_none
from minidl.nn._recent import Recent
from minidl.nn._unsupported import Unsupported
from minidl.nn.flat import (
    StorageView,
    flat_buffer,
    flatten_parameters,
    moved_keeping_runs,
    storage_view,
)
from minidl.nn.parameter import Parameter, count_replacement, shares_elements

__all__ = [
    "IncompatibleKeys",
    "Module",
    "Parameter",
    "check_initialised",
    "check_registered",
    "in_graph",
    "misreported_parameters",
    "referred",
    "unregistered_modules",
    "unregistered_parameters",
]


#: A mapping given to :meth:`Module.state_dict` to write into, and returned.
_Destination = TypeVar("_Destination", bound=MutableMapping[str, Any])

#: The class of a module that a method returns (``to``, ``train``, ...: the module itself) or
#: that :meth:`Module.register_module` registers, for a type checker: ``Linear(2, 3).double()``
#: is a ``Linear``, as in PyTorch.
_Module = TypeVar("_Module", bound="Module")
#: A method of Module (see _initialised).
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _initialised(method: _Method) -> _Method:
    """``method`` of :class:`Module`, refusing first a module whose ``__init__`` did not call
    ``super().__init__()`` (see :func:`_named_uninitialised`), so that a traversal, whose
    iterator would fail only once iterated, fails at the call, in those words."""

    @functools.wraps(method)
    def checked(self: Module, *args: Any, **kwargs: Any) -> Any:
        try:
            self._modules, self._parameters, self._buffers  # noqa: B018 (read to see they exist)
        except AttributeError as error:
            raise _named_uninitialised(error) from None
        return method(self, *args, **kwargs)

    return cast("_Method", checked)


#: The arguments and result of a module's ``forward``, for a type checker (see ``_Forward``).
_Arguments = ParamSpec("_Arguments")
_Output_co = TypeVar("_Output_co", covariant=True)

if TYPE_CHECKING:
    from typing import Protocol

    class _Forward(Protocol[_Arguments, _Output_co]):
        """A module whose ``forward`` takes ``_Arguments`` and returns ``_Output_co``: calling it
        (:meth:`Module.__call__`) takes and returns the same."""

        def forward(self, *input: _Arguments.args, **kwargs: _Arguments.kwargs) -> _Output_co: ...


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` skipped: the module's keys missing from the state
    dict, and the state dict's keys the module does not have (as in PyTorch)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer, activation, loss and container.

    Subclasses override :meth:`forward`, :meth:`backward` and, when they own parameters,
    register them with :meth:`register_parameter`; containers register children with
    :meth:`register_module`. Everything else (``parameters``, ``param``, ``zero_grad``,
    ``state_dict``, ``train``/``eval``, ``to``, ``repr``) is derived from those registrations.
    Unlike in PyTorch, assigning a child or a parameter as a plain attribute
    (``self.fc = Linear(2, 3)``) does not register it (attribute assignment is not intercepted,
    which would slow down every forward), so ``parameters()`` would not see it: register it
    (:class:`~minidl.nn.Sequential`, :func:`minidl.gradcheck`, :func:`minidl.train.fit` and the
    checkpoints refuse such a parameter, or such a child with parameters or buffers, naming
    it). Nor does a subclass override :meth:`param`, which is derived from the registrations.

    ``copy.copy(module)`` is PyTorch's shallow copy: a second module over the same state. It
    shares the registries (its parameters, buffers and children are the original's), and has
    its own plain attributes (``training``, the caches of a forward), which hold what the
    original's hold (the same tensors and other objects, as PyTorch's), but for the caches of
    tensors made per input shape, new and empty, and the views of the parameters that a forward
    makes, made again. What is done
    to the state through one is done to the other: ``to(...)`` on the copy moves the original's
    parameters, buffers and children too, and a parameter or buffer registered in one is the
    other's (its attribute set on both, which each computes with), as is a child registered
    again in one (the attribute of either that held the child replaced follows), while the
    registries are shared. ``copy.deepcopy`` copies the state. A method or other attribute set
    on the instance (``layer.backward = my_backward``) is kept by both and by pickle, as in PyTorch
    (the same function; one bound to the module still bound to it in a shallow copy, so that it
    computes with the original's caches, and bound to a deep copy and, unlike PyTorch's, to a
    module loaded from a pickle), but for the checks of :func:`minidl.detect_anomaly`, which
    belong to the module they watch: a copy made inside its block holds what they replaced.

    Example:
        >>> class Double(Module):
        ...     def forward(self, x):
        ...         return 2 * x
        ...     def backward(self, grad_output):
        ...         return 2 * grad_output
    """

    #: Counts the parameters and child modules registered, in any module: a container that
    #: found which of its children have parameters (:class:`~minidl.nn.Sequential`, for
    #: ``backward_parameters``) looks again when it changed. Each registration stores the next
    #: number of one :func:`itertools.count`, as :attr:`Parameter.replacements` does, so that
    #: the count never comes back to a number a reader saw.
    _registrations: ClassVar[int] = 0

    #: Whether the class overrides :meth:`backward` but inherits the :meth:`backward_parameters`
    #: of a class above it (a Linear whose backward clips its gradient, a Sequential whose
    #: backward records): that one computes as the base class, so the containers and ``fit``,
    #: which would call it, call ``backward`` instead and drop the input gradient.
    _skips_own_backward: ClassVar[bool] = False
    #: Whether the forward of the class's modules changes their state in training mode (a
    #: batch norm's running statistics, a dropout's generator): a Sequential holding one runs
    #: its children in evaluation mode first (see ``Sequential._try``).
    _updates_in_training: ClassVar[bool] = False
    #: The buffers that a state dict may leave out, even with ``strict``: the module then keeps
    #: its own value, as PyTorch fills one in (a batch norm's ``num_batches_tracked``, which
    #: state dicts of PyTorch before 0.4.1, and plain dicts made by hand, lack).
    _optional_buffers: ClassVar[tuple[str, ...]] = ()

    def _check_training_state(self) -> None:
        """Raise what this module's training forward would refuse whatever its input, for its
        state (a batch norm's negative count of batches with ``momentum=None``), before it
        changes anything; nothing for most. :func:`minidl.train.fit` asks each module that
        :attr:`_updates_in_training`, in whatever mode (it trains them all), before it draws
        the epoch's order."""

    def _refused_cleanly(self) -> bool:
        """Whether this module, whose forward just raised, was left as it was: its backward
        reads the last good forward's caches. A module without children refuses before it
        caches anything; a ``Sequential`` or ``Residual`` says whether it noted a refusal
        after some children ran (then its own backward is refused); a container of one's own
        may have run some children on the refused input, so the ``Sequential`` or
        ``Residual`` holding it refuses the backward until a forward succeeds."""
        return not self._modules

    def _trial_state(self) -> object:
        """What of this module's state (not its input's signature, nor its parameters,
        registrations and mode: :func:`trial_key`) decides whether its training forward
        refuses an input, so that a container tries it again when that changes (a batch norm's
        count of batches); ``None`` for most. Asked on every forward of a container holding a
        module that :attr:`_updates_in_training`, for each such module."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass that overrides a setting (Dropout.p) with an attribute or a property of its
        # own: forward reads the setting's slot (_p), made to read the subclass's value.
        super().__init_subclass__(**kwargs)
        read_overridden_settings(cls)
        cls._skips_own_backward = False
        for klass in cls.__mro__:
            if "backward_parameters" in vars(klass):
                break
            if "backward" in vars(klass):
                cls._skips_own_backward = cls.backward_parameters is not Module.backward_parameters
                break

    def __new__(cls: type[_Module], *args: Any, **kwargs: Any) -> _Module:
        # PyTorch's argument that the class refuses as an attribute (CrossEntropyLoss's weight,
        # an Unsupported) is refused by name with its hint, where Python's TypeError for an
        # unexpected keyword said nothing of what to do instead.
        # A subclass whose own __init__ takes such an argument keeps it (its constructor is
        # not minidl's).
        if kwargs and _init_of(cls).__module__.startswith("minidl."):
            for name, value in kwargs.items():
                refused = getattr(cls, name, None)
                if isinstance(refused, Unsupported):
                    raise refused.refused_argument(cls, value)
        return super().__new__(cls)

    def __init__(self) -> None:
        self._parameters: dict[str, Parameter] = {}
        self._modules: dict[str, Module] = {}
        self._buffers: dict[str, Tensor] = {}
        self.training = True

    # -- the course contract ----------------------------------------------------------------------

    def forward(self, *input: Any) -> Any:
        """Compute the output from the input, caching what :meth:`backward` needs."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, *gradwrtoutput: Any) -> Any:
        """Return dL/dinput from dL/doutput and accumulate dL/dparameter into each ``grad``."""
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def backward_parameters(self, grad_output: Tensor) -> None:
        """Accumulate dL/dparameter like :meth:`backward`, without returning dL/dinput.

        For the first layers of a network, whose input is the data: its gradient is not needed,
        and a layer like :class:`~minidl.nn.Linear` then skips the matrix product that computes
        it. The checks, the errors and the accumulated gradients are :meth:`backward`'s. This
        default calls :meth:`backward` and drops its result; a module overrides it where the
        input gradient is work of its own. A subclass that overrides ``backward`` alone, below
        a class that overrides this one (a :class:`~minidl.nn.Linear` whose backward clips its
        gradient), has its ``backward`` called by the containers and ``fit`` instead.
        """
        self.backward(grad_output)

    def _check_fits_forward(self, parameters_only: bool = False) -> None:
        """Raise what this module's ``backward`` (``backward_parameters`` with
        ``parameters_only``) would raise because its parameters were replaced, cast or moved
        since its last forward; do nothing if they were not.

        A container runs it on the children its backward will call, before any of them: a
        child that refuses part-way would otherwise leave the gradients of the children after
        it (whose backward ran first) accumulated. This default checks nothing; a module whose
        backward refuses such parameters (:class:`~minidl.nn.Linear`) and a container of such
        modules override it.
        """

    def param(self) -> list[tuple[Tensor, Tensor]]:
        """``(value, grad)`` pairs of every parameter, in registration order, children included.

        Derived from the registered parameters: a module does not override it, as the course's
        modules did with tensors of their own. Nothing in minidl calls an override (optimizers
        take :meth:`parameters`), so a tensor that only it returns would be neither trained nor
        saved; :class:`~minidl.nn.Sequential`, :func:`minidl.gradcheck`, ``fit`` and the
        checkpoints refuse such a module, naming it.
        """
        return [(p.data, p.grad) for p in self.parameters()]

    if TYPE_CHECKING:
        # For a type checker, a module called takes the arguments of its class's forward and
        # returns its result (``Linear(2, 3)(x)`` is a Tensor; PyTorch's modules return Any);
        # at run time too, by position or by name (``Linear(2, 3)(input=x)``, as PyTorch's).
        def __call__(
            self: _Forward[_Arguments, _Output_co],
            *input: _Arguments.args,
            **kwargs: _Arguments.kwargs,
        ) -> _Output_co: ...

    else:

        def __call__(self, *input: Any, **kwargs: Any) -> Any:
            return self.forward(*input, **kwargs)

    # -- registration -----------------------------------------------------------------------------

    @overload
    def register_parameter(self, name: str, parameter: Parameter) -> Parameter: ...

    @overload
    def register_parameter(self, name: str, parameter: None) -> None: ...

    def register_parameter(self, name: str, parameter: Parameter | None) -> Parameter | None:
        """Register ``parameter`` under ``name`` and return it (also set as an attribute).

        ``None``, as in PyTorch, says the module has no such parameter: one registered under
        ``name`` is removed (``layer.register_parameter("bias", None)``: a layer without its
        bias, which ``parameters()``, the optimizers built after and ``state_dict`` no longer
        hold), and the attribute is set to ``None``. A ``bias`` set to ``None`` by hand, the
        registered one left, is refused by the layer, naming this call.

        Args:
            name: a non-empty ``str`` without ``"."``; not the name of a buffer or child module,
                nor of another attribute or method (re-registering a parameter replaces it).
            parameter: a :class:`Parameter`, named ``name`` if it has no name yet; or ``None``.

        Raises:
            AttributeError: called before ``Module.__init__()``.
            TypeError: ``name`` is not a ``str``, or ``parameter`` is not a :class:`Parameter`
                nor ``None``.
            KeyError: a name refused above. A refused call changes nothing.
        """
        registry = self._registry("register_parameter", "parameter")
        self._check_name("register_parameter", "parameter", name, parameter, registry)
        if parameter is None:
            registry.pop(name, None)
        elif not isinstance(parameter, Parameter):
            raise TypeError(
                f"{type(self).__name__}.register_parameter: expected a minidl Parameter (or "
                f"None) for {name!r}, got {given_parameter(parameter)}"
            )
        else:
            if not parameter.name:
                parameter.name = name
            registry[name] = parameter
        Module._registrations = next(_REGISTRATIONS)  # (not += 1: see _REGISTRATIONS)
        # (the shallow copies sharing the registry follow, the names removed too: a copy
        # registering a parameter again where the other removed one took the None there for
        # an attribute of its own)
        for module in self._sharing("_parameters"):
            object.__setattr__(module, name, parameter)
            removed: set[str] | None = getattr(module, "_removed_parameters", None)
            if parameter is None:
                if removed is None:
                    removed = set()
                    object.__setattr__(module, "_removed_parameters", removed)
                removed.add(name)
            elif removed is not None:
                # (registered again where one was removed: no longer a removed one, which
                # to_torch would take for a parameter set by hand)
                removed.discard(name)
        return parameter

    def register_module(self, name: str, module: _Module) -> _Module:
        """Register a child module under ``name`` and return it.

        A module may be registered under several names, or in several modules (it is then
        listed once by :meth:`modules`, :meth:`children` and the other traversals, as in
        PyTorch), but not in itself or in one of its own descendants.

        Args:
            name: a non-empty ``str`` without ``"."``; not the name of a parameter or buffer, nor
                of another attribute or method (but of an attribute holding ``module`` itself,
                as after ``self.block = block``; re-registering a child replaces it, and that
                attribute with it).
            module: a :class:`Module`, not this module nor one that contains it.

        Raises:
            AttributeError: called before ``Module.__init__()``.
            TypeError: ``name`` is not a ``str``, or ``module`` is not a :class:`Module`.
            KeyError: a name refused above.
            ValueError: ``module`` is this module or contains it (a cycle).
            AttributeError: ``module`` was not initialised (its ``__init__`` did not call
                ``super().__init__()``). A refused call changes nothing.
        """
        registry = self._registry("register_module", "module")
        self._check_name("register_module", "module", name, module, registry)
        if not isinstance(module, Module):
            raise TypeError(
                f"{type(self).__name__}.register_module: expected a minidl Module for "
                f"{name!r}, got {given_module(module)}"
            )
        check_initialised(f"{type(self).__name__}.register_module", f"child {name!r}", module)
        # (a shallow copy, copy.copy, shares this module's registry of children: registered
        # here, it would be its own child)
        if any(part is self or part._modules is self._modules for part in module.modules()):
            what = (
                "itself"
                if module is self
                else "a shallow copy of itself (copy.copy, which shares its children)"
                if module._modules is self._modules
                else f"a {type(module).__name__} that contains it"
            )
            raise ValueError(
                f"{type(self).__name__}.register_module: cannot register {what} as child "
                f"{name!r} (a module would be its own descendant); expected a module that "
                "does not contain this one"
            )
        previous = registry.get(name)
        registry[name] = module
        if previous is not None and previous is not module:
            # (the attribute that held the child replaced, ``self.block = block``, follows:
            # Residual's forward, which reads it, ran the old block while parameters() and the
            # optimizer held the new one; in a shallow copy sharing the registry too)
            for holder in self._sharing("_modules"):
                if getattr(holder, name, None) is previous:
                    setattr(holder, name, module)
        Module._registrations = next(_REGISTRATIONS)
        return module

    def register_buffer(self, name: str, tensor: Tensor) -> Tensor:
        """Register ``tensor`` as a buffer under ``name`` and return it (also set as an attribute).

        A buffer is state that is not trained (e.g. the running statistics of a batch
        normalisation): it is saved by :meth:`state_dict`, restored by :meth:`load_state_dict`
        and moved by :meth:`to` (a floating buffer is also cast to ``dtype``), but has no
        gradient and is not in :meth:`parameters`. Update it in place, or register the new
        tensor: an attribute of its name assigned another (``self.running_mean = ...``, which
        PyTorch registers) is refused by :meth:`state_dict`, :meth:`load_state_dict` and
        :meth:`to`, which would save, load or move the registered one (and by
        :func:`~minidl.checkpoint.save_checkpoint` and
        :func:`~minidl.checkpoint.load_checkpoint`, in their own names).

        A tensor made in ``torch.inference_mode()`` is copied out of it, and one from an
        autograd graph is detached from it (it shares its memory; the graph is not kept, nor
        extended by the updates of a forward): that tensor is registered and returned, so that
        the buffer can be updated in place anywhere. Any other tensor is registered as it is.

        Args:
            name: a non-empty ``str`` without ``"."``; not the name of a parameter or child
                module, nor of another attribute or method (re-registering a buffer replaces
                it).
            tensor: a ``torch.Tensor``.

        Raises:
            AttributeError: called before ``Module.__init__()``.
            TypeError: ``name`` is not a ``str``, or ``tensor`` is not a dense (strided)
                ``torch.Tensor``.
            KeyError: a name refused above. A refused call changes nothing.
        """
        registry = self._registry("register_buffer", "buffer")
        self._check_name("register_buffer", "buffer", name, tensor, registry)
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"{type(self).__name__}.register_buffer: expected a torch.Tensor for {name!r}, "
                f"got {type(tensor).__name__}"
            )
        if tensor.layout != torch.strided or tensor.is_nested:
            # (buffers are updated in place, saved and moved by dense operations)
            hint = "" if tensor.is_nested else " (pass tensor.to_dense())"
            layout = layout_name(tensor)
            raise TypeError(
                f"{type(self).__name__}.register_buffer: expected a dense tensor for {name!r}, "
                f"got a {layout} tensor{hint}"
            )
        tensor = _plain(tensor)
        registry[name] = tensor
        for module in self._sharing("_buffers"):
            object.__setattr__(module, name, tensor)
        return tensor

    def _registry(self, method: str, kind: str) -> dict[str, Any]:
        """The dict that ``method`` registers into; refused before ``Module.__init__()``."""
        try:
            registries: dict[str, dict[str, Any]] = {
                "parameter": self._parameters,
                "buffer": self._buffers,
                "module": self._modules,
            }
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__}.{method}: cannot assign a {kind} before "
                "Module.__init__() call; call super().__init__() first in __init__"
            ) from None
        return registries[kind]

    def _check_name(
        self, method: str, kind: str, name: object, value: object, registry: dict[str, Any]
    ) -> None:
        """Refuse a ``name`` that :meth:`register_parameter`, :meth:`register_buffer` or
        :meth:`register_module` cannot take (as PyTorch's do): not a ``str``, empty, dotted,
        another kind's name, or an attribute of another kind (an attribute holding ``value``
        itself, as ``self.block = block`` before registering it, is allowed)."""
        where = f"{type(self).__name__}.{method}"
        if not isinstance(name, str):
            raise TypeError(f"{where}: {kind} name must be a str, got {shown_typed(name)}")
        if not name or "." in name:
            raise KeyError(
                f"{where}: {kind} name {shown(name)} refused: expected a non-empty name without '.' "
                "(dots join the names of nested modules)"
            )
        for other, names in (
            ("parameter", self._parameters),
            ("buffer", self._buffers),
            ("module", self._modules),
        ):
            if other != kind and name in names:
                raise KeyError(
                    f"{where}: {name!r} is already a {other} of this {type(self).__name__}; "
                    f"expected a name that is not another parameter, buffer or module"
                )
        if name in registry:
            return  # (the same kind: replaced)
        missing = object()
        attribute = getattr(type(self), name, missing)
        if attribute is missing:
            attribute = getattr(self, name, missing)
            if attribute is value or (
                kind == "parameter"
                and attribute is None
                and name in getattr(self, "_removed_parameters", ())
            ):
                # (self.block = block, then registered; a parameter again where one was
                # removed with register_parameter(name, None): a buffer or module there is
                # refused, as torch's "attribute already exists", since the module's own
                # code reads the name as its parameter)
                return
        if attribute is not missing:
            what = "a method" if callable(attribute) else "an attribute"
            raise KeyError(
                f"{where}: {name!r} is already {what} of {type(self).__name__} (a {kind} "
                "there would hide it, or be hidden); expected another name"
            )

    # -- traversal --------------------------------------------------------------------------------

    @_initialised
    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` for this module's parameters, then its children's
        (PyTorch's arguments, in its order).

        A parameter registered in two places (tied weights) comes once, under its first name,
        as in PyTorch: its gradient is the sum of both places', and an optimizer updates it
        once. With ``remove_duplicate=False`` it comes at every place. A ``prefix`` is joined
        to the names with a dot, as in PyTorch: ``"model"`` gives ``"model.0.weight"``. With
        ``recurse=False``, only this module's own parameters come, none of its children's.
        """
        self._check_traversal("named_parameters", prefix, recurse, remove_duplicate)
        if prefix:
            prefix += "."
        named = (
            self._named_parameters(prefix)
            if recurse
            else ((prefix + name, parameter) for name, parameter in self._parameters.items())
        )
        if not remove_duplicate:
            yield from named
            return
        seen: set[int] = set()
        for name, parameter in named:
            if id(parameter) not in seen:
                seen.add(id(parameter))
                yield name, parameter

    def _check_traversal(
        self, method: str, prefix: object, recurse: object, remove_duplicate: object
    ) -> None:
        """Refuse a ``prefix`` that is not a ``str`` and flags that are not bools (a
        ``named_parameters("", False)`` written for an older minidl, where the second argument
        was ``remove_duplicate``, is PyTorch's ``recurse=False``)."""
        self._check_prefix(method, prefix)
        where = f"{type(self).__name__}.{method}"
        check_bool(where, "recurse", recurse)
        check_bool(where, "remove_duplicate", remove_duplicate)

    def _check_prefix(self, method: str, prefix: object) -> None:
        """Refuse a ``prefix`` that is not a ``str`` (it is joined to the names)."""
        if not isinstance(prefix, str):
            raise TypeError(
                f"{type(self).__name__}.{method}: prefix must be a str, got {type(prefix).__name__}"
            )

    def _named_parameters(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, parameter in self._parameters.items():
            yield prefix + name, parameter
        for child_name, child in self._modules.items():
            yield from child._named_parameters(prefix + child_name + ".")

    @_initialised
    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        """``(dotted name, tensor)`` for this module's buffers, then its children's (PyTorch's
        arguments, in its order); a ``prefix`` is joined to the names with a dot, as in
        :meth:`named_parameters`, and ``recurse=False`` gives this module's own buffers only.

        As in PyTorch, a module registered at several places (see :meth:`named_modules`) gives
        its buffers once, at its first place, and a tensor registered as two buffers comes
        once; with ``remove_duplicate=False`` they come at every place.
        """
        self._check_traversal("named_buffers", prefix, recurse, remove_duplicate)
        if prefix:
            prefix += "."
        if not remove_duplicate:
            yield from self._named_buffers(prefix) if recurse else self._own_buffers(prefix)
            return
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix[:-1]) if recurse else iter([(prefix[:-1], self)])
        for path, module in modules:
            for name, tensor in module._buffers.items():
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    yield f"{path}.{name}" if path else name, tensor

    def _own_buffers(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        for name, tensor in self._buffers.items():
            yield prefix + name, tensor

    def _named_buffers(self, prefix: str) -> Iterator[tuple[str, Tensor]]:
        yield from self._own_buffers(prefix)
        for child_name, child in self._modules.items():
            yield from child._named_buffers(prefix + child_name + ".")

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """An iterator over the :class:`Parameter` objects, as in PyTorch
        (``next(model.parameters())`` is the first; ``list(model.parameters())`` for a list), in
        the same order as :meth:`param`: those of :meth:`named_parameters`, found without making
        their names (``fit`` and the optimizers walk the model with it; a subclass's own
        ``named_parameters``, if it has one, as in PyTorch). With ``recurse=False``, this
        module's own only, none of its children's. The parameters are found when it is
        called: a parameter registered afterwards is not in the iterator."""
        if recurse is not True:
            check_bool(f"{type(self).__name__}.parameters", "recurse", recurse)
            return iter([p for _, p in self.named_parameters(recurse=False)])
        if type(self).named_parameters is not Module.named_parameters:
            return iter([p for _, p in self.named_parameters()])
        found: list[Parameter] = []
        try:
            self._collect_parameters(found, set())
        except AttributeError as error:
            raise _named_uninitialised(error) from None
        return iter(found)

    def _collect_parameters(self, found: list[Parameter], seen: set[int]) -> None:
        """Append this module's parameters not in ``seen``, then its children's, to ``found``
        (the order and the tied parameters of :meth:`named_parameters`)."""
        for parameter in self._parameters.values():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                found.append(parameter)
        for child in self._modules.values():
            child._collect_parameters(found, seen)

    @_initialised
    def named_modules(
        self,
        memo: set[Module] | None = None,
        prefix: str = "",
        remove_duplicate: bool = True,
    ) -> Iterator[tuple[str, Module]]:
        """``(dotted path, module)`` for this module and every descendant, depth first (a
        module before its children, the children in registration order), with PyTorch's
        arguments in its order (``prefix`` is the second: ``named_modules(prefix="model")``).

        As in PyTorch, a module registered at several places (under two names, or in two
        modules) comes once, at its first place; with ``remove_duplicate=False`` it comes at
        every place. ``memo``, as in PyTorch, is a set of modules to leave out (with the
        descendants found only through them); the modules that come are added to it (with
        ``remove_duplicate=False``, none are).

        Raises:
            TypeError: ``memo`` is not a set or ``None`` (a ``str`` there is a prefix written
                for an older minidl, whose first argument was ``prefix``), ``prefix`` is not a
                ``str``, or ``remove_duplicate`` not a bool.
        """
        where = f"{type(self).__name__}.named_modules"
        if memo is not None and not isinstance(memo, set):
            hint = (
                "; the prefix is the second argument, as in PyTorch: named_modules(prefix=...)"
                if isinstance(memo, str)
                else ""
            )
            raise TypeError(
                f"{where}: memo must be a set of modules or None, got {shown(memo)}{hint}"
            )
        self._check_prefix("named_modules", prefix)
        check_bool(where, "remove_duplicate", remove_duplicate)
        if memo is not None:
            return self._named_modules_memo(memo, prefix, remove_duplicate)
        return self._named_modules(prefix, set() if remove_duplicate else None)

    def _named_modules_memo(
        self, memo: set[Module], prefix: str, remove_duplicate: bool
    ) -> Iterator[tuple[str, Module]]:
        """:meth:`named_modules` with a ``memo`` of the caller's (PyTorch's walk)."""
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for child_name, child in self._modules.items():
            path = f"{prefix}.{child_name}" if prefix else child_name
            yield from child._named_modules_memo(memo, path, remove_duplicate)

    def _named_modules(self, prefix: str, seen: set[int] | None) -> Iterator[tuple[str, Module]]:
        if seen is not None:
            if id(self) in seen:
                return
            seen.add(id(self))
        yield prefix, self
        for child_name, child in self._modules.items():
            path = f"{prefix}.{child_name}" if prefix else child_name
            yield from child._named_modules(path, seen)

    @_initialised
    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """An iterator over the buffers, as in PyTorch, in the order of :meth:`named_buffers`;
        with ``recurse=False``, this module's own only."""
        check_bool(f"{type(self).__name__}.buffers", "recurse", recurse)
        return iter([buffer for _, buffer in self.named_buffers(recurse=recurse)])

    @_initialised
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for the direct children, in registration order; a child
        registered under two names comes once, under its first, as in PyTorch."""
        seen: set[int] = set()
        children = []
        for name, child in self._modules.items():
            if id(child) not in seen:
                seen.add(id(child))
                children.append((name, child))
        return iter(children)

    @_initialised
    def apply(self: _Module, fn: Callable[[Module], object]) -> _Module:
        """Call ``fn`` on every descendant, then on this module (children first, as in
        PyTorch); return this module. For example, to initialise every ``Linear`` in place::

            def init(module):
                if isinstance(module, Linear):
                    module.weight.data.uniform_(-0.1, 0.1)

            model.apply(init)

        As in PyTorch, ``fn`` is applied to each of :meth:`children` (a child registered under
        two names once), then recursively: a module registered in two different modules gets
        ``fn`` once from each.
        """
        if not callable(fn):
            raise TypeError(f"{type(self).__name__}.apply: fn must be callable, got {shown(fn)}")
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    @_initialised
    def modules(self) -> Iterator[Module]:
        """This module and every descendant, depth first: :meth:`named_modules` without the
        paths (each module once). (Found without making the paths: ``train``, ``eval`` and
        every evaluation walk the model with it.)"""
        found: list[Module] = [self]
        self._collect(found, {id(self)})
        return iter(found)

    def _collect(self, found: list[Module], seen: set[int]) -> None:
        """Append the descendants not in ``seen`` to ``found``, depth first."""
        for child in self._modules.values():
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                child._collect(found, seen)

    @_initialised
    def children(self) -> Iterator[Module]:
        """An iterator over the direct children, as in PyTorch, in registration order:
        :meth:`named_children` without the names (a child registered under two names once)."""
        return (child for _, child in self.named_children())

    @_initialised
    def get_submodule(self, target: str) -> Module:
        """The module at the dotted path ``target`` (``"2.0"``: child ``"0"`` of child ``"2"``),
        itself, not a copy; ``""`` is this module. As in PyTorch, the path is followed one name
        at a time (its cost is the depth, not the number of modules), and any path that
        :meth:`named_modules` gives, under any of a shared module's names, leads to its module.

        Raises:
            TypeError: ``target`` is not a ``str``.
            AttributeError: a name on the path is not a child of the module it reaches (as in
                PyTorch: missing, or another kind of attribute, a parameter say; in minidl also
                a module set as a plain attribute, which is not registered). The message names
                the path, the module where it stops and that module's children.
        """
        self._check_target("get_submodule", target)
        return self._submodule("get_submodule", target, target)

    @_initialised
    def get_parameter(self, target: str) -> Parameter:
        """The :class:`Parameter` at the dotted path ``target`` (``"0.weight"``), itself, as in
        PyTorch: ``target`` is :meth:`get_submodule`'s path of the module that registered it,
        then its name there. The registered one, which :meth:`parameters` and
        :meth:`state_dict` see (an attribute of the same name set since to another object is
        not it).

        Raises:
            TypeError: ``target`` is not a ``str``.
            AttributeError: the module path is not a submodule's (as :meth:`get_submodule`), or
                the last name is not a parameter of that module (missing, or a buffer, a child,
                another attribute: as in PyTorch; in minidl also a :class:`Parameter` set as a
                plain attribute, which is not registered). The message names the path, the
                module and that module's parameters.
        """
        module, name = self._registered_at("get_parameter", target, "parameter")
        return module._parameters[name]

    @_initialised
    def get_buffer(self, target: str) -> Tensor:
        """The buffer at the dotted path ``target`` (``"1.running_mean"``), the tensor itself,
        as in PyTorch: ``target`` is :meth:`get_submodule`'s path of the module that registered
        it, then its name there. The registered tensor, which :meth:`buffers` and
        :meth:`state_dict` see.

        Raises:
            TypeError: ``target`` is not a ``str``.
            AttributeError: the module path is not a submodule's (as :meth:`get_submodule`), or
                the last name is not a buffer of that module (missing, or a parameter, a child,
                another attribute, as in PyTorch). The message names the path, the module and
                that module's buffers.
        """
        module, name = self._registered_at("get_buffer", target, "buffer")
        return module._buffers[name]

    def _check_target(self, method: str, target: object) -> None:
        """Refuse a ``target`` that is not a ``str`` (a dotted path)."""
        if not isinstance(target, str):
            raise TypeError(
                f"{type(self).__name__}.{method}: target must be a str, a dotted path such as "
                f"'0.weight', got {shown(target)}"
            )

    def _submodule(self, method: str, target: str, path: str) -> Module:
        """The module at ``path``, the part of ``target`` (the argument of ``method``) that
        names a module; refused naming ``target``."""
        module, walked = self, ""
        if not path:
            return module
        for name in path.split("."):
            child = module._modules.get(name)
            if child is None:
                raise self._not_found(method, target, module, walked, name, "module")
            module = child
            walked = f"{walked}.{name}" if walked else name
        return module

    def _registered_at(self, method: str, target: str, kind: str) -> tuple[Module, str]:
        """The module that registered the parameter or buffer (``kind``) at ``target``, and its
        name there; refused, for ``method``, if there is none."""
        self._check_target(method, target)
        path, _, name = target.rpartition(".")
        module = self._submodule(method, target, path)
        if name not in (module._parameters if kind == "parameter" else module._buffers):
            raise self._not_found(method, target, module, path, name, kind)
        return module, name

    def _not_found(
        self, method: str, target: str, module: Module, path: str, name: str, kind: str
    ) -> AttributeError:
        """The refusal of ``target`` by ``method``: ``name`` is no ``kind`` (module, parameter or
        buffer) of ``module``, found at ``path``; said as PyTorch's are ("Linear has no
        attribute `foo`", "`weight` is not an nn.Module"), with the path, the module and what
        it has of that kind."""
        owner = type(module).__name__
        where = f"the {owner} at {path!r}" if path else f"this {owner}"
        registries: dict[str, dict[str, Any]] = {
            "module": module._modules,
            "parameter": module._parameters,
            "buffer": module._buffers,
        }
        # (a child is registered, not set as an attribute: a Sequential's "0" is no attribute)
        found = next((k for k, r in registries.items() if name in r), None)
        missing = object()
        value = getattr(module, name, missing) if found is None else missing
        if found is None and value is missing:
            reason = f"{owner} has no attribute `{name}`"
        else:
            if found is not None:
                what = "a child module" if found == "module" else f"a {found}"
            elif isinstance(value, Module):
                what = f"a {type(value).__name__} not registered (register_module)"
            elif isinstance(value, Parameter):
                what = "a Parameter not registered (register_parameter)"
            elif isinstance(value, Tensor) and kind == "buffer":
                what = "a tensor not registered (register_buffer)"
            else:
                what = "a method" if callable(value) else f"an attribute ({type(value).__name__})"
            label = {"module": "an nn.Module", "parameter": "an nn.Parameter", "buffer": "a buffer"}
            reason = f"`{name}` is not {label[kind]}: it is {what} of {owner}"
        names = list(registries[kind])
        own = {"module": "children", "parameter": "parameters", "buffer": "buffers"}[kind]
        has = ", ".join(repr(n) for n in names) if names else "none"
        return AttributeError(
            f"{type(self).__name__}.{method}: {shown(target)} names no {kind}: {reason} ({where}, "
            f"whose {own} are: {has})"
        )

    def zero_grad(self, set_to_none: Literal[False] = False) -> None:
        """Set the gradient of every parameter to zero, in place.

        ``set_to_none=True`` (PyTorch's default, which leaves ``grad`` ``None``) is refused: a
        minidl gradient is never ``None``. ``set_to_none=False`` is this zeroing; typed
        ``Literal[False]``, so that a type checker finds ``set_to_none=True`` too.
        """
        if set_to_none is not False:
            refuse_set_to_none(f"{type(self).__name__}.zero_grad", set_to_none)
        for parameter in self.parameters():
            parameter.grad.zero_()

    def num_parameters(self) -> int:
        """The number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    # -- modes ------------------------------------------------------------------------------------

    def train(self: _Module, mode: bool = True) -> _Module:
        """Put this module and its children in training mode (or evaluation mode if ``False``).

        As PyTorch's: this module's ``training`` is set, then each child's ``train(mode)`` is
        called, so that a child that overrides ``train`` (a batch norm kept frozen in
        evaluation mode) is put in its mode by its own method, inside a model too (setting
        ``training`` on every module below left such an override unrun)."""
        if not isinstance(mode, bool):
            raise TypeError(
                f"{type(self).__name__}.train: mode must be True or False, got {shown(mode)}"
            )
        try:
            children = self._modules.values()  # (first: one not initialised is left as it is)
        except AttributeError as error:
            raise _named_uninitialised(error) from None
        self.training = mode
        for child in children:
            child.train(mode)
        return self

    def eval(self: _Module) -> _Module:
        """Put this module and its children in evaluation mode."""
        return self.train(False)

    # -- state ------------------------------------------------------------------------------------

    @overload
    def state_dict(
        self, *, destination: None = None, prefix: str = "", keep_vars: Literal[False] = False
    ) -> dict[str, Tensor]: ...

    @overload
    def state_dict(
        self, *, destination: None = None, prefix: str = "", keep_vars: bool
    ) -> dict[str, Tensor | Parameter]: ...

    @overload
    def state_dict(
        self, *, destination: _Destination, prefix: str = "", keep_vars: bool = False
    ) -> _Destination: ...

    def state_dict(
        self,
        *,
        destination: MutableMapping[str, Any] | None = None,
        prefix: str = "",
        keep_vars: bool = False,
    ) -> MutableMapping[str, Any]:
        """A copy of every parameter value and buffer, keyed by dotted name (``"0.weight"``, ...).

        In PyTorch's order: module by module, depth first, each module's parameters before its
        buffers (a tied parameter, or the buffers of a module registered twice, once, under the
        first name). The copies are detached from any autograd graph and share no memory with
        the module (PyTorch's share it): a state dict taken during training keeps its values,
        and one saved holds its own values only, not the flat buffer around them. Taken inside
        ``torch.inference_mode()``, they are no inference tensors (PyTorch's are not either):
        they can be changed outside it.

        The arguments are PyTorch's, by keyword (PyTorch's positional form is deprecated).

        Args:
            destination: a mutable mapping that the entries are written into (after those it
                holds, or in their place under the same names) and that is returned; by
                default a new ``dict``.
            prefix: put before every name, as it is (``"model."`` gives ``"model.0.weight"``).
            keep_vars: ``True`` gives the :class:`Parameter` objects (what
                :meth:`get_parameter` gives, with their gradients) and the buffers themselves,
                not copies, as PyTorch's gives its parameters and buffers undetached;
                :meth:`load_state_dict` takes such a state dict too.

        Raises:
            TypeError: ``destination`` is not a mutable mapping, ``prefix`` not a ``str``, or
                ``keep_vars`` not a bool; ``destination`` is then left as it was.
            ValueError: an attribute of a buffer's name holds another object than the
                registered buffer, in this module or one inside it (assigned by hand: see
                :meth:`register_buffer`); ``destination`` is then left as it was.
        """
        where = f"{type(self).__name__}.state_dict"
        if destination is not None and not isinstance(destination, MutableMapping):
            raise TypeError(
                f"{where}: destination must be a mutable mapping (a dict) or None, got "
                f"{type(destination).__name__}"
            )
        self._check_prefix("state_dict", prefix)
        check_bool(where, "keep_vars", keep_vars)
        self._check_buffer_attributes("state_dict")
        entries: Mapping[str, Tensor | Parameter]
        if keep_vars:
            entries = self._state_entries(keep_vars=True)
        else:
            # (copied outside torch.inference_mode(), when taken inside it: an inference
            # tensor would refuse in-place changes outside it, where PyTorch's detached
            # tensors are not inference tensors)
            with torch.inference_mode(False):
                entries = {name: t.detach().clone() for name, t in self._state_entries().items()}
        if destination is None:
            destination = {}
        for name, value in entries.items():
            destination[prefix + name] = value
        return destination

    @overload
    def _state_entries(self, keep_vars: Literal[False] = False) -> dict[str, Tensor]: ...

    @overload
    def _state_entries(self, keep_vars: bool) -> dict[str, Tensor | Parameter]: ...

    def _state_entries(self, keep_vars: bool = False) -> Mapping[str, Tensor | Parameter]:
        """The tensors themselves (not copies) that :meth:`state_dict` copies, in its order;
        with ``keep_vars``, the :class:`Parameter` objects in place of their values."""
        entries: list[tuple[str, Tensor | Parameter]] = [
            (name, p if keep_vars else p.data) for name, p in self.named_parameters()
        ]
        entries += self.named_buffers()
        place = {path: index for index, (path, _) in enumerate(self.named_modules())}
        # (stable: within a module, its parameters stay before its buffers; a name that is no
        # module's path, from a subclass's own named_parameters, keeps its place at the end)
        last = len(place)
        entries.sort(key=lambda entry: place.get(entry[0].rpartition(".")[0], last))
        return dict(entries)

    def _with_first_names(
        self, state_dict: Mapping[str, Tensor], own: Mapping[str, Tensor]
    ) -> tuple[Mapping[str, Tensor], dict[str, str]]:
        """``state_dict`` with the other names of a tied parameter, or of the buffers of a
        module registered at several places (PyTorch's ``state_dict`` gives them, as minidl's
        did before), as the first name (the one ``state_dict()`` gives). An entry under another
        name stands for a first name left out; beside it, it must hold the same values. Also
        returned: the name given for each first name put in this way (for the errors)."""
        firsts = {id(tensor): name for name, tensor in own.items()}
        aliases = {
            name: firsts[id(tensor)]
            for name, tensor in itertools.chain(
                ((n, p.data) for n, p in self.named_parameters(remove_duplicate=False)),
                self.named_buffers(remove_duplicate=False),
            )
            if name not in own and id(tensor) in firsts
        }
        given: dict[str, str] = {}
        if not any(name in state_dict for name in aliases):
            return state_dict, given
        entries = {name: value for name, value in state_dict.items() if name not in aliases}
        for alias, first in aliases.items():
            if alias not in state_dict:
                continue
            value = state_dict[alias]
            if first not in entries:
                entries[first] = value
                given[first] = alias
                continue
            other = entries[first]
            where = f"{type(self).__name__}.load_state_dict"
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"{where}: entry {alias!r} must be a tensor, got {type(value).__name__}"
                )
            if not isinstance(other, Tensor):
                continue  # (refused below, in the words of any entry that is no tensor)
            target = own[first]
            check_copyable(where, f"entry {alias!r}", value, target)
            check_copyable(where, f"entry {given.get(first, first)!r}", other, target)
            for entry, tensor in ((given.get(first, first), other), (alias, value)):
                if tensor.shape != target.shape:  # (said as different values, of both)
                    raise ValueError(
                        f"{where}: entry {entry!r} has shape {tuple(tensor.shape)}, expected "
                        f"{tuple(target.shape)}"
                    )
            # (compared as they load: cast to the tensor's dtype, as PyTorch loads both; a NaN
            # in both at one place is the same value, as one tensor given under both names is)
            same = (
                value is other
                or target.is_meta
                or bool(
                    torch.equal(value.to(target.dtype), other.to(target.dtype))
                    or torch.allclose(
                        value.to(target.dtype), other.to(target.dtype), 0.0, 0.0, equal_nan=True
                    )
                )
            )
            if not same:
                raise ValueError(
                    f"{where}: entries {given.get(first, first)!r} and {alias!r} name one tensor "
                    "(a tied parameter, or a module registered at two places) but hold different "
                    "values; expected one of them, or equal ones"
                )
        return entries, given

    def _in_torchs_order(self, unexpected: list[str]) -> list[str]:
        """The ``unexpected`` keys of a state dict (given in its order) as PyTorch's
        ``load_state_dict`` lists them: module by module, in the order of
        ``named_modules(remove_duplicate=False)``, each key at the deepest module its path
        reaches (``"1.0.foo"`` at module ``"1.0"``; ``"5.weight"``, with no child ``"5"``, at
        this one), and in the state dict's order within a module, but for the module's own
        ``_extra_state`` key (``"1.0._extra_state"``), which PyTorch checks apart, before the
        others, and lists first (minidl's modules keep no extra state)."""
        if len(unexpected) < 2:
            return unexpected
        place = {
            path: index
            for index, (path, _) in enumerate(self.named_modules(remove_duplicate=False))
        }

        def reached(key: str) -> tuple[int, bool]:
            module, path = self, ""
            *names, last = key.split(".")
            for name in names:
                child = module._modules.get(name)
                if child is None:
                    return place[path], True
                module, path = child, f"{path}.{name}" if path else name
            return place[path], last != "_extra_state"

        return sorted(unexpected, key=reached)

    def _optional_entries(self) -> set[str]:
        """The state-dict keys of the buffers that :meth:`load_state_dict` takes as optional
        (see :attr:`_optional_buffers`)."""
        return {
            f"{prefix}.{name}" if prefix else name
            for prefix, module in self.named_modules()
            for name in type(module)._optional_buffers
            if module._buffers.get(name) is not None
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Tensor | Parameter], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy values from ``state_dict`` into the parameters and buffers, in place (cast to
        their dtypes, as in PyTorch).

        Every entry is checked (missing or unexpected keys, shapes, floating dtype) before anything
        is written, so a bad ``state_dict`` leaves the module unchanged. Each entry is loaded
        with its value at the call, even one that is a view of the module's own tensors (a
        transposed weight, say). An entry may be a :class:`Parameter`, as
        ``state_dict(keep_vars=True)`` gives them: its value is loaded.

        With ``strict=False``, as in PyTorch, the keys of one side that the other lacks are
        skipped: the entries present are loaded (a trained trunk into a model with a new head,
        say) and the others keep their values.

        Returns:
            The keys skipped, ``(missing_keys, unexpected_keys)`` (both empty with ``strict``):
            the missing in the order of :meth:`state_dict`, the unexpected as PyTorch lists them
            (module by module, each key at the deepest module its path reaches, and in
            ``state_dict``'s order within a module, its ``_extra_state`` key first).

        A batch norm's ``num_batches_tracked`` may be left out even with ``strict``: the
        module keeps its count, as PyTorch fills one in for a state dict without version
        metadata (older PyTorch's, or a dict made by hand; PyTorch refuses its own state dict
        with the key deleted, where minidl, whose state dicts carry no such metadata, takes it).

        Raises:
            KeyError: (with ``strict``) missing or unexpected keys.
            ValueError: an entry whose shape differs from the parameter's, or two entries that
                name one tensor (a tied parameter under two names) with different values.
            TypeError: ``state_dict`` is not a mapping, ``strict`` not a bool, or an entry is
                not a dense floating-point tensor (for a buffer that is not floating point: an
                entry of another dtype).
            ValueError: (before anything is loaded) an attribute of a buffer's name holds
                another object than the registered buffer, in this module or one inside it
                (assigned by hand: see :meth:`register_buffer`).
        """
        where = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{where}.load_state_dict: expected a mapping of names to tensors (as "
                f"state_dict() returns), got {type(state_dict).__name__}"
            )
        if not isinstance(strict, bool):
            raise TypeError(
                f"{where}.load_state_dict: strict must be True or False, got {shown(strict)}"
            )
        foreign = next((key for key in state_dict if not isinstance(key, str)), None)
        if foreign is not None:  # (two of them failed in sorting, in "'int' object has no ...")
            raise TypeError(
                f"{where}.load_state_dict: keys must be names (str), got {shown(foreign)} of "
                f"type {type(foreign).__name__}"
            )
        self._check_buffer_attributes("load_state_dict")
        # (in state_dict's order, as PyTorch lists the missing keys)
        own = self._state_entries()
        # (a Parameter, as state_dict(keep_vars=True) gives it, stands for its value)
        tensors = {name: _value(entry) for name, entry in state_dict.items()}
        entries, given = self._with_first_names(tensors, own)
        optional = self._optional_entries()  # (left out: kept as they are)
        missing = [k for k in own if k not in entries and k not in optional]
        unexpected = self._in_torchs_order([k for k in entries if k not in own])
        if strict and (missing or unexpected):
            raise KeyError(
                f"{where}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}; "
                f"expected exactly {list(own)} (strict=False loads the keys both have)"
            )
        for name in [k for k in own if k not in entries]:
            del own[name]
        for name, tensor in own.items():
            value = entries[name]
            # (named as given: an entry under another name of a tied tensor, say "b.weight")
            entry = f"entry {given.get(name, name)!r}"
            if tensor.is_floating_point():
                if not isinstance(value, Tensor) or not value.is_floating_point():
                    got = value.dtype if isinstance(value, Tensor) else type(value).__name__
                    raise TypeError(
                        f"{where}.load_state_dict: {entry} must be a floating-point tensor, "
                        f"got {got}"
                    )
            elif not isinstance(value, Tensor) or value.dtype != tensor.dtype:
                got = value.dtype if isinstance(value, Tensor) else type(value).__name__
                raise TypeError(
                    f"{where}.load_state_dict: {entry} must be a tensor of dtype "
                    f"{tensor.dtype}, got {got}"
                )
            # (first: a nested tensor's shape is not read)
            check_copyable(f"{where}.load_state_dict", entry, value, tensor)
            if value.shape != tensor.shape:
                raise ValueError(
                    f"{where}.load_state_dict: {entry} has shape {tuple(value.shape)}, "
                    f"expected {tuple(tensor.shape)}"
                )
            if shares_elements(tensor):  # (a buffer registered expanded: PyTorch takes one)
                raise ValueError(
                    f"{where}.load_state_dict: {entry} is to be written into {name!r} of shape "
                    f"{tuple(tensor.shape)}, whose elements share memory (strides "
                    f"{tensor.stride()}, as an expanded tensor has): the copy would fail part-way, "
                    f"other entries written; register {name!r} as a tensor whose elements each "
                    "have their own memory (its .clone()), or load without this entry "
                    "(strict=False)"
                )
        # An entry that shares memory with the module's tensors (a view of its own or another
        # parameter, of the flat buffer they share) is read before anything is written: each
        # entry is its value at the call, whatever the order of the writes, and a copy onto
        # overlapping memory, which the tensor library refuses half-way through, cannot happen.
        written = {t.untyped_storage().data_ptr() for t in own.values() if not t.is_meta}
        values = {}
        for name in own:
            # (detached: an entry from an autograd graph, a PyTorch Parameter say, is a value)
            value = entries[name].detach()
            if not value.is_meta and value.untyped_storage().data_ptr() in written:
                value = value.clone()
            values[name] = value
        for name, tensor in own.items():
            tensor.copy_(values[name])
        return IncompatibleKeys(missing, unexpected)

    def to(
        self: _Module,
        device: torch.device | str | int | torch.dtype | Tensor | None = None,
        dtype: torch.dtype | bool | None = None,
        non_blocking: bool = False,
    ) -> _Module:
        """Move every parameter (value and gradient) and buffer to ``device`` and/or cast it to ``dtype``.

        The :class:`Parameter` objects stay the same, so optimizers built on them keep working
        (their state moves with the next ``step``). A move that fails leaves the module as it
        was, and one that changes nothing does nothing; parameters already on ``device`` and of
        ``dtype`` keep their tensors where only buffers move, as in PyTorch. As in PyTorch, a
        device is a ``torch.device``, a ``str`` (``"cuda:1"``) or an index (``1``, as
        ``torch.device(1)`` takes it: a GPU's), a dtype may come alone as the first argument,
        ``model.to(torch.float64)``, and a tensor stands for its device and dtype,
        ``model.to(x)`` (a floating-point one).

        ``non_blocking`` is PyTorch's flag, taken also where PyTorch takes it after a dtype or
        a tensor, ``model.to(torch.float64, True)``; the copies are made blocking whatever it
        says, with the same results. (In PyTorch it makes a copy from pinned host memory to a
        GPU asynchronous, which minidl's parameters, not pinned, would not be, and one from a
        GPU to the host, which must not be read before the GPU is synchronised: minidl puts the
        moved tensors together into its flat buffer at once, which, on the host, would read such
        a copy not yet done.)

        Raises:
            TypeError: ``dtype`` is not float16, bfloat16, float32 or float64 (a float8 one
                included), or ``non_blocking`` not a bool (or given twice: after a dtype or a
                tensor, and by keyword).
            ValueError: ``device`` is not a device; or (before anything moves) an attribute of
                a buffer's name holds another object than the registered buffer, in this module
                or one inside it (assigned by hand: see :meth:`register_buffer`).
            RuntimeError: the device is not available here (e.g. ``"cuda"`` without a GPU).
        """
        name = type(self).__name__
        if isinstance(device, torch.dtype | Tensor) and not isinstance(dtype, torch.dtype | None):
            # PyTorch's to(dtype, non_blocking) and to(tensor, non_blocking)
            what = "dtype" if isinstance(device, torch.dtype) else "tensor"
            if non_blocking is not False:
                raise TypeError(
                    f"{name}.to: got non_blocking twice, {shown(dtype)} after the {what} and "
                    f"non_blocking={shown(non_blocking)}; give one of them"
                )
            check_bool(f"{name}.to", f"non_blocking (the argument after the {what})", dtype)
            non_blocking = dtype
            dtype = None
        check_bool(f"{name}.to", "non_blocking", non_blocking)
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise TypeError(f"{name}.to: got two dtypes, {device} and {dtype}")
            device, dtype = None, device
        elif isinstance(device, Tensor):
            if dtype is not None:
                raise TypeError(
                    f"{name}.to: got a tensor, whose dtype {device.dtype} it takes, and the "
                    f"dtype {dtype}; give one of them"
                )
            like = device
            device, dtype = like.device, like.dtype
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"{name}.to: dtype must be a torch.dtype, got {shown(dtype)}")
        if dtype is not None:
            check_dtype(f"{name}.to", dtype)
        given: object = device
        if isinstance(given, type) and given in (float, int, bool, complex):
            # (torch's words listed every signature of torch.device)
            kind = given.__name__
            raise TypeError(
                f"{name}.to: got Python's {kind}, which is neither a device nor a dtype; a dtype "
                "is torch.float32 or torch.float64 (or torch.float16, torch.bfloat16)"
            )
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError, ValueError) as error:
                raise ValueError(f"{name}.to: {shown(device)} is not a device ({error})") from None
            reason = unavailable(device)  # a device this torch or machine lacks
            if reason is not None:
                raise RuntimeError(f"{name}.to: {device} is not available ({reason})")
        self._check_buffer_attributes("to")
        # Normal (not inference-mode) tensors, so that they can still be updated in place outside
        # torch.inference_mode() when the move runs inside it.
        with torch.inference_mode(False):
            self._move(device, dtype)
        return self

    def _check_buffer_attributes(self, method: str, caller: str | None = None) -> None:
        """Refuse, before anything changes, a module (this one or one inside it) whose attribute
        of a buffer's name holds another object than the registered buffer: assigned by hand
        (``self.running_mean = 0.9 * self.running_mean + ...``, which PyTorch registers and
        minidl does not), the module computes with the attribute while ``method`` would save,
        load or move the registered tensor (and ``to`` set the attribute back to it).

        ``caller`` is the function the user called, if not ``method`` itself
        (``"save_checkpoint"``, ``"load_checkpoint: checkpoint 'run.safetensors'"``): the
        message begins with it and says what its first word would do."""
        where = caller if caller is not None else f"{type(self).__name__}.{method}"
        doer = caller.split(":", 1)[0] if caller is not None else method
        try:
            held = [(path, module, module._buffers) for path, module in self.named_modules()]
        except AttributeError as error:  # (the first walk of state_dict, load_state_dict, to)
            raise _named_uninitialised(error) from None
        for path, module, buffers in held:
            for name, registered in buffers.items():
                attribute = getattr(module, name, registered)
                if attribute is registered:
                    continue
                attribute_path = f"{path}.{name}" if path else name
                raise ValueError(
                    f"{where}: the attribute {attribute_path!r} of "
                    f"{type(module).__name__} is not its registered buffer {name!r} (it was "
                    f"assigned {_held(attribute)}, which minidl does not register: the module "
                    f"computes with the attribute, {doer} {_USES[method]}); "
                    f"change the buffer in place (self.{name}.copy_(...), self.{name}.mul_(...)), "
                    f"or register the new one: self.{name} = self.register_buffer({name!r}, ...)"
                )

    def float(self: _Module) -> _Module:
        """``self.to(torch.float32)``, as in PyTorch."""
        return self.to(torch.float32)

    def double(self: _Module) -> _Module:
        """``self.to(torch.float64)``, as in PyTorch."""
        return self.to(torch.float64)

    def bfloat16(self: _Module) -> _Module:
        """``self.to(torch.bfloat16)``, as in PyTorch."""
        return self.to(torch.bfloat16)

    def half(self: _Module) -> _Module:
        """``self.to(torch.float16)``, as in PyTorch."""
        return self.to(torch.float16)

    def cpu(self: _Module) -> _Module:
        """``self.to("cpu")``, as in PyTorch."""
        return self.to("cpu")

    def cuda(self: _Module, device: int | str | torch.device | None = None) -> _Module:
        """``self.to(device)`` for a GPU (default: the current one), as in PyTorch."""
        target: str | torch.device
        if device is None:
            target = "cuda"
        elif isinstance(device, int) and not isinstance(device, bool):
            # (an index past 64 bits is refused by .to(), named by its digits)
            target = f"cuda:{device}" if device.bit_length() < 64 else f"cuda:{shown(device)}"
        elif isinstance(device, str | torch.device):
            target = device
        else:
            raise TypeError(
                f"{type(self).__name__}.cuda: device must be an index, a str or a "
                f"torch.device, got {shown(device)}"
            )
        return self.to(target)

    def _move(self, device: torch.device | None, dtype: torch.dtype | None) -> bool:
        """Every tensor is moved first, then all are put in place: a move that fails (out of
        memory, say) leaves the module as it was. Return whether anything moved."""
        parameters = list(self.parameters())
        if device is not None and device.type != "meta":
            # (a meta tensor holds no values: torch's "Cannot copy out of meta tensor; no data!")
            tensors = itertools.chain(
                (p.data for p in parameters),
                (b for module in self.modules() for b in module._buffers.values()),
            )
            if any(tensor.is_meta for tensor in tensors):
                raise ValueError(
                    f"{type(self).__name__}.to: its tensors are on the meta device, which holds "
                    f"no values to copy to {device}; build the model on {device} and load a "
                    "state dict into it"
                )
        # A buffer registered in two modules (running statistics shared by two batch norms,
        # as from_torch keeps them) is moved once, so that both hold the one moved tensor
        # (moved for each, they no longer shared it: both updated their own afterwards).
        moves: dict[int, Tensor] = {}
        buffers = []
        for module in self.modules():
            for name, buffer in module._buffers.items():
                new = moves.get(id(buffer))
                if new is None:
                    kind = dtype if buffer.is_floating_point() else None
                    new = moves[id(buffer)] = buffer.to(device, kind)
                buffers.append((module, name, new))
        # (parameters already of the device and dtype keep their memory, as in PyTorch, where
        # only buffers move: their views, and a flat model's buffer, stay as they are)
        kept = all(p.data.to(device, dtype) is p.data for p in parameters)
        if kept and all(moved is module._buffers[name] for module, name, moved in buffers):
            return False  # nothing to move (a copy would take a part of a flat model out of it)
        if not kept and flat_buffer([p.data for p in parameters]) is not None:
            # Keep a flat model flat: move the whole buffer, then view it again (its own moves
            # all come before the first view is put in place).
            flatten_parameters(parameters, device=device, dtype=dtype)
        elif not kept:
            # Parameters of its own and flat parts (a Sequential inside): each part stays flat.
            moved = moved_keeping_runs(parameters, device, dtype)
            for parameter, (data, grad) in zip(parameters, moved, strict=True):
                parameter.data, parameter.grad = data, grad
        for module, name, buffer in buffers:
            module._buffers[name] = buffer
            for sharing in module._sharing("_buffers"):
                object.__setattr__(sharing, name, buffer)
        for module in self.modules():
            for sharing in module._sharing("_buffers"):
                sharing._moved()
        return True

    def _moved(self) -> None:
        """Called on the module moved and on every module inside it, once their tensors are
        in place: drop what was made for the old ones (a :class:`~minidl.nn.Sequential`'s
        plans, whose buffers are of the old dtype or device). A module that keeps nothing
        of the kind does nothing."""

    # -- copying and pickling ---------------------------------------------------------------------

    def __copy__(self) -> Module:
        """``copy.copy``: a module over the same state, as PyTorch's shallow copy (see the
        class docstring); its attributes are those that pickling keeps (:meth:`__getstate__`),
        but that the tensors it keeps are the original's objects, as in PyTorch's (a pickle
        writes them as views of their storages, and a part of one as a copy of that part).

        Each buffer and parameter is held twice, in a registry and as an attribute (read by
        the forward without a lookup); the copy and the original share the registries but not
        their attributes, so both are noted in one set of the modules made by shallow copies
        from one another (:meth:`_sharing`): what puts a tensor in a shared registry
        (``to``, ``register_buffer``, ``register_parameter``) sets the attribute of each. (A
        ``to`` on the copy left the original's buffer attributes on the old tensors, and its
        ``state_dict``, ``load_state_dict`` and ``to`` refused them.)"""
        copied = type(self).__new__(type(self))
        shallow = _SHALLOW.set(self)
        try:
            state = self.__getstate__()
        finally:
            _SHALLOW.reset(shallow)
        copied.__setstate__(state)
        family = getattr(self, "_shallow_copies", None)
        if family is None:
            family = weakref.WeakSet([self])
            object.__setattr__(self, "_shallow_copies", family)
        family.add(copied)
        object.__setattr__(copied, "_shallow_copies", family)
        return copied

    def _sharing(self, registry: str) -> list[Module]:
        """This module and the shallow copies of it (or that it is one of) whose ``registry``
        (``"_parameters"``, ``"_buffers"``, ``"_modules"``) is still this module's own dict:
        those whose attribute must follow it."""
        family = getattr(self, "_shallow_copies", None)
        if family is None:
            return [self]
        own = getattr(self, registry)
        return [module for module in family if getattr(module, registry, None) is own]

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        # A plan of a chain finds a method set on a child's instance by the number of
        # attributes the child holds (see minidl.nn.chain): one deleted and another set, with
        # no call between, would leave it as it was. (Setting an attribute is not checked:
        # Module has no __setattr__, which every attribute set in a step would pay for.)
        count_replacement()

    def __getstate__(self) -> dict[str, Any]:
        """For pickle and ``copy.deepcopy``: the module's attributes, with the tensors it keeps
        between calls (caches, constants, some views of others) as views of their storages
        (:class:`~minidl.nn.flat.StorageView`: they come back sharing storage as they did, and
        detached from any autograd graph, which ``copy.deepcopy`` refuses to copy), and with its
        caches of per-shape tensors empty (also for a shallow ``copy.copy``: see
        :class:`~minidl.nn._recent.Recent`). A ``forward``, ``backward`` or
        ``backward_parameters`` set on the instance is kept, as PyTorch keeps every attribute of
        the instance: the same function (which a pickle writes by its name, as PyTorch's does:
        one defined inside a function cannot be pickled), and a method bound to this module
        (any attribute that holds one) bound to the copy, as ``copy.deepcopy`` binds it, also
        in a pickle (a :class:`_Bound`: pickle writes a bound method as a lookup of its name on
        the module loaded, done before the module's attributes are, which found its class's
        method of that name, or none, in PyTorch too). The checks of
        :func:`minidl.detect_anomaly` are not kept (they call this module): what they replaced
        is kept in their place (:func:`own_method`).

        A kept tensor that shares no storage with the parameters (values or gradients) or
        buffers of this module and its descendants is written compactly: only the part of its
        storage that it reaches (a cached input that is a 32-row slice of a data set takes
        those rows along, not the data set)."""
        state = self.__dict__.copy()
        # (the modules sharing the state with this one stay with it: a deep copy or a pickle
        # has a state of its own, and a shallow copy joins the set in __copy__)
        state.pop("_shallow_copies", None)
        for name in _CHECKED_METHODS:
            if name in state:
                own = own_method(self, state[name])
                if own is None:
                    del state[name]
                else:
                    state[name] = own
        owned: set[int] | None = None  # the storages of the parameters and buffers (if needed)
        shallow = _SHALLOW.get() is self  # (a shallow copy keeps the tensors themselves)
        for name, value in state.items():
            if name in self._buffers:  # (the same object as in _buffers: kept as it is)
                continue
            if shallow and not isinstance(value, Recent):
                continue
            # (a tensor with a storage, alone or in a plain tuple: a sparse or nested one has
            # none, and a tuple of another type, a NamedTuple or torch.return_types.max, is
            # written as it is, which keeps its type)
            if _viewable(value) or (type(value) is tuple and any(_viewable(v) for v in value)):
                if owned is None:
                    owned = self._owned_storages()
                if isinstance(value, Tensor):
                    state[name] = _kept_view(value, owned)
                else:
                    state[name] = tuple(_kept_view(v, owned) if _viewable(v) else v for v in value)
            elif isinstance(value, Recent):
                # A new one, also for a shallow copy (copy.copy), whose parameters may be
                # replaced on their own: what a cache keeps belongs to this module's tensors.
                state[name] = value.empty()
            elif isinstance(value, MethodType) and value.__self__ is self:
                state[name] = _Bound(value.__func__)
        return state

    def _owned_storages(self) -> set[int]:
        """The addresses of the storages of the parameters (values and gradients) and buffers
        of this module and its descendants."""
        tensors = [t for p in self.parameters() for t in (p.data, p.grad)] + list(self.buffers())
        return {t.untyped_storage().data_ptr() for t in tensors if _viewable(t)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The tensors again; loaded inside ``torch.inference_mode()``, buffers are copied out of
        it, as :meth:`register_buffer` does, so that they can still be updated in place outside
        it.

        A module pickled by an earlier minidl version may hold a plain attribute of a name that
        is now a setting (:class:`~minidl._setting.Setting`, kept in ``_<name>``) or an option
        of PyTorch's that is refused (:class:`~minidl.nn._unsupported.Unsupported`): each goes
        to the descriptor's ``set_pickled``. A setting that the computation read is checked
        as when set (``Dropout.p``); one it ignored (``inplace``, ``track_running_stats``, a
        loss's ``weight``) is taken where it holds what the module computes anyway
        (``inplace=False``) and otherwise dropped with a ``UserWarning``: the module computes
        as it did."""
        for name, value in state.items():
            if isinstance(value, StorageView):
                state[name] = value.tensor()
            elif isinstance(value, tuple) and any(isinstance(v, StorageView) for v in value):
                state[name] = tuple(v.tensor() if isinstance(v, StorageView) else v for v in value)
            elif isinstance(value, _Bound):
                state[name] = MethodType(value.function, self)
        # One attribute at a time: filling self.__dict__ would keep the attributes in a plain
        # dict, and reading them in every forward and backward then takes longer (about 1% of
        # a step of the paper's network).
        kind = type(self)
        for name, value in state.items():
            if not name.startswith("_"):  # (no setting's name, nor a slot of one)
                kept = getattr(kind, name, None)
                if isinstance(kept, Setting | Unsupported):  # (pickled as a plain attribute)
                    kept.set_pickled(self, value)
                    continue
            object.__setattr__(self, name, value)
        for name, buffer in self._buffers.items():
            if buffer.is_inference():
                self.register_buffer(name, buffer)

    # -- repr -------------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The text between the parentheses of ``repr``; override to show hyper-parameters."""
        return ""

    def __repr__(self) -> str:
        """As PyTorch's: the class name, then the lines of :meth:`extra_repr` and a line per
        child, ``(name): repr(child)``, indented; on one line when there is a one-line
        :meth:`extra_repr` and no child."""
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        try:
            modules = self._modules
        except AttributeError as error:
            raise _named_uninitialised(error) from None
        if len(lines) == 1 and not modules:
            return f"{type(self).__name__}({lines[0]})"
        for name, child in modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        if not lines:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


#: The numbers Module._registrations takes, from 1 on. (``+= 1`` reads, then writes: a
#: registration stopped in between, as another thread may stop it, stored a count that others
#: had passed, and later ones brought the count back to a number a reader had seen.)
_REGISTRATIONS = itertools.count(1)


class _Bound:
    """A method bound to a module, as :meth:`Module.__getstate__` writes it for pickle and
    ``copy.deepcopy``: its function, which :meth:`Module.__setstate__` binds to the module
    made."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Bound, (self.function,))


#: The module whose :meth:`Module.__copy__` asks for its state, while it does: its tensors are
#: kept as they are (not those of another module whose state that one's may ask for).
_SHALLOW: contextvars.ContextVar[Module | None] = contextvars.ContextVar("shallow", default=None)

#: Whether a container's trial in evaluation mode is running (``Sequential._try``): the checks
#: of :func:`minidl.detect_anomaly` stand aside during it (its values are not the training
#: forward's, which follows and is checked).
TRIAL: contextvars.ContextVar[bool] = contextvars.ContextVar("trial", default=False)

#: The ids of the modules that a running trial put in evaluation mode from training mode: such
#: a module makes the refusals of its training forward in the trial too (a batch norm's of a
#: single sample, or of a negative count of batches), so that a refusal that only training
#: makes comes before an earlier module's statistics count the batch, as every other does.
TRAINING_IN_TRIAL: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "training_in_trial", default=frozenset()
)

#: The methods that :func:`minidl.detect_anomaly` sets on the instances it watches.
_CHECKED_METHODS = ("forward", "backward", "backward_parameters")

#: The methods that minidl sets on a module's instance for a while (the checks of
#: :func:`minidl.detect_anomaly`), each with its module and what it replaced there: the method
#: that the instance held itself (one of its user's, or the check of an outer block), or
#: ``None`` where it held none (its class's ran). Such a check calls its module, and belongs to
#: it: a copy or a pickle of the module holds what lies beneath (:func:`own_method`). Filled by
#: :mod:`minidl.anomaly`, above this module.
REPLACED: weakref.WeakKeyDictionary[
    Callable[..., Any], tuple[Module, Callable[..., Any] | None]
] = weakref.WeakKeyDictionary()


def own_method(module: Module, method: Callable[..., Any]) -> Callable[..., Any] | None:
    """What ``method``, held by the instance of ``module``, is of its user's: ``method`` itself,
    or, if it is a check that minidl set over what the instance held (:data:`REPLACED`), the
    method beneath the checks, ``None`` where the instance held none. A check of another
    module, set on this one by hand, is its user's."""
    while True:
        try:
            owner, beneath = REPLACED[method]
        except (KeyError, TypeError):  # (no check; TypeError: no weak reference to it)
            return method
        if owner is not module:  # (another module's check, set on this one by hand)
            return method
        if beneath is None:
            return None
        method = beneath


#: What each method that checks the buffers' attributes does with the registered buffers.
_USES = {
    "state_dict": "would save the registered one",
    "load_state_dict": "would load into the registered one",
    "to": "would move the registered one and set the attribute back to it",
    "architecture": "would record the registered one",
}


def _held(value: object) -> str:
    """What an attribute holds, for a message: a tensor's shape and dtype, or the type."""
    if isinstance(value, Tensor):
        if value.is_nested:  # (whose shape is not read)
            return f"a nested tensor of {value.dtype}"
        return f"a tensor of shape {tuple(value.shape)}, {value.dtype}"
    return f"a {type(value).__name__}"


def _viewable(value: object) -> bool:
    """Whether ``value`` is a tensor that :func:`_kept_view` writes: a strided one, not
    nested (a sparse or nested tensor has no storage to view; it is pickled as it is)."""
    return isinstance(value, Tensor) and value.layout is torch.strided and not value.is_nested


def _kept_view(tensor: Tensor, owned: set[int]) -> StorageView:
    """``tensor`` as :meth:`Module.__getstate__` writes it: a view of its whole storage if it
    shares it with the module's parameters or buffers (``owned``), else a compact one."""
    return storage_view(tensor, compact=tensor.untyped_storage().data_ptr() not in owned)


def _value(entry: Tensor | Parameter) -> Tensor:
    """A state dict's entry as a tensor: a :class:`Parameter`'s value (as
    ``state_dict(keep_vars=True)`` gives it), any other entry itself."""
    return entry.data if isinstance(entry, Parameter) else entry


def _plain(tensor: Tensor) -> Tensor:
    """``tensor`` as a buffer keeps it: an inference tensor copied outside inference mode, a
    tensor of an autograd graph (recorded by an op on it, or a leaf whose ops are recorded)
    detached; any other tensor itself."""
    if tensor.is_inference():
        with torch.inference_mode(False):
            tensor = tensor.clone()
    return tensor.detach() if in_graph(tensor) else tensor


def off_graph(result: Tensor) -> Tensor:
    """``result``, a tensor computed by a module, detached if it was computed from a tensor of
    an autograd graph (a loss's gradient of such a prediction: it held the graph for as long as
    it was kept); itself otherwise. (Where the operations ran with recording on, a result of a
    recorded tensor has a grad_fn.)"""
    return result.detach() if result.grad_fn is not None else result


def in_graph(tensor: Tensor) -> bool:
    """Whether autograd records ``tensor`` (a normal tensor, not an inference one): the result
    of recorded operations, or a leaf whose operations are recorded (which an update in place
    would be recorded on, or refused)."""
    if tensor.grad_fn is not None:
        return True
    # A leaf whose ops are recorded: a view of it taken with recording on has a grad_fn.
    with torch.inference_mode(False), torch.enable_grad():
        return tensor.view_as(tensor).grad_fn is not None


def unregistered_parameters(module: Module) -> list[str]:
    """The attributes of ``module`` and its descendants (dotted paths) that hold a
    :class:`Parameter` which is not one of ``module.parameters()``.

    Setting a parameter as an attribute does not register it, unlike in PyTorch: such a
    parameter is not trained by an optimizer built on ``parameters()``, saved by ``state_dict``
    or checked by :func:`minidl.gradcheck`.
    """
    return _unregistered_parameters(module, _held_by_parts(module))


def _held_by_parts(module: Module) -> list[tuple[str, Module, list[object]]]:
    """``(path, part, referred(part))`` of every module in ``module``: what the checks of
    unregistered parameters and modules look through, found once for both."""
    return [(path, part, referred(part)) for path, part in module.named_modules()]


def _unregistered_parameters(
    module: Module, walk: list[tuple[str, Module, list[object]]]
) -> list[str]:
    registered = {id(parameter) for parameter in module.parameters()}
    found = []
    for path, part, held in walk:
        if any(isinstance(v, Parameter) and id(v) not in registered for v in held):
            found += [
                f"{path}.{name}" if path else name
                for name, value in _attributes(part)
                if isinstance(value, Parameter) and id(value) not in registered
            ]
    return found


#: The types of values that hold no module or parameter: a list of them is not looked into.
_PLAIN = frozenset({int, float, str, bool, bytes, type(None)})
#: The most lists and dicts in one nested level that :func:`referred` looks into.
_MOST_NESTED = 1024
#: How deep :func:`_attributes` names the items of lists inside lists (a refusal's message).
_DEEPEST_NAMED = 50


def updating_parts(root: Module) -> tuple[int, tuple[Module, ...]]:
    """The modules under ``root`` (itself included) whose forward changes their state in
    training mode (:attr:`Module._updates_in_training`: a batch norm, a dropout), after
    :attr:`Module._registrations` as it is now: a container keeps the pair, and finds them
    again once a module or parameter was registered since."""
    return Module._registrations, tuple(
        part for part in root.modules() if type(part)._updates_in_training
    )


def trial_key(parts: tuple[Module, ...], input: Tensor) -> tuple[object, ...] | None:
    """What a container's trial in evaluation mode is made once for (see
    ``Sequential._try``), given ``parts``, its modules that change their state in training
    mode (:func:`updating_parts`): ``None`` where none of them is in training mode (no trial is
    needed, whatever the container's own mode); else the input's shape past the batch, dtype
    and device, the state of the parameter tensors and registrations, and the parts' modes, so
    that a part put back in training mode (a batch norm unfrozen) is tried again."""
    modes = tuple([part.training for part in parts])
    if True not in modes:  # (none in training mode, or no part at all)
        return None
    return (
        input.shape[1:], input.dtype, input.device,
        Parameter.replacements, Module._registrations, modes,
        input.shape[0] < 2,  # (a batch of one sample, which a batch norm trains on in none)
        tuple([part._trial_state() for part in parts]),
    )  # fmt: skip


#: The registries of a module (see :func:`referred`).
_REGISTRIES = ("_parameters", "_buffers", "_modules")


def referred(part: Module) -> list[object]:
    """What ``part`` refers to (its attributes' values), and the items of those that are lists
    or dicts (a list of layers: minidl has no ``ModuleList``), found without asking for its
    ``__dict__``: on CPython 3.11, an instance whose ``__dict__`` was asked for keeps its
    attributes in a plain dict from then on, and every attribute read in its forward and
    backward gets slower (3% more instructions for a step of the paper's network). Only a
    refusal asks for the names (:func:`_attributes`). A tuple is not looked into: it is how a
    module is kept out of the registries on purpose (a frozen teacher). The items of the
    module's own registries (its registered parameters, buffers and children), where its
    ``__dict__`` holds them, are not looked into: no check asks for them."""
    referents = gc.get_referents(part)
    tops = [d for d in referents if isinstance(d, dict)]  # (the registries, a plain __dict__)
    held = referents + list(itertools.chain.from_iterable(d.values() for d in tops))
    # (lists and dicts inside them too, ``[[layer]]``, level by level, each once: one may
    # hold itself; a level of numbers and strings alone, as a log, is passed over in C)
    # Past a level of more than _MOST_NESTED containers (a log of a million rows is data, not
    # layers) the walk stops, so that fit's check of each call stays cheap.
    seen = {id(d) for d in tops}
    seen.update(id(getattr(part, name, None)) for name in _REGISTRIES)
    level = [v for v in held if (type(v) is list or type(v) is dict) and id(v) not in seen]
    if not level:  # (most modules: nothing more to look into)
        return held
    items: list[object] = []
    first = True
    while level and (first or len(level) <= _MOST_NESTED):
        first = False
        fresh = {id(c): c for c in level if id(c) not in seen}
        seen.update(fresh)
        values = list(
            itertools.chain.from_iterable(
                c.values() if type(c) is dict else c for c in fresh.values()
            )
        )
        if set(map(type, values)) <= _PLAIN:
            break
        items += [v for v in values if type(v) not in _PLAIN]
        level = [v for v in values if type(v) is list or type(v) is dict]
    return held + items


def _attributes(part: Module) -> list[tuple[str, object]]:
    """``(name, value)`` of ``part``'s attributes, and ``(name[index], item)`` of the items of
    those that are lists or dicts (see :func:`referred`)."""
    found: list[tuple[str, object]] = []
    seen: set[int] = set()

    def add(name: str, value: object, depth: int = 0) -> None:
        found.append((name, value))
        if id(value) in seen or depth > _DEEPEST_NAMED:
            return
        if type(value) is list:
            seen.add(id(value))
            for index, item in enumerate(value):
                add(f"{name}[{index}]", item, depth + 1)
        elif type(value) is dict:
            seen.add(id(value))
            for key, item in value.items():
                add(f"{name}[{key!r}]", item, depth + 1)

    for name, value in vars(part).items():
        if type(value) is dict and name.startswith("_"):
            found.append((name, value))  # (the registries and private caches, not walked)
        else:
            add(name, value)
    return found


#: The attributes that Module.__init__ makes, which a module whose own __init__ did not call
#: super().__init__() lacks.
_MADE_BY_INIT = ("_parameters", "_modules", "_buffers", "training")


def _named_uninitialised(error: AttributeError) -> AttributeError:
    """``error``, or, where it is the lack of an attribute that :meth:`Module.__init__` makes
    (on a module whose own ``__init__`` did not call ``super().__init__()``), an error that says
    so: Python's named a private attribute alone (``'MyNet' object has no attribute
    '_parameters'``)."""
    module = getattr(error, "obj", None)
    if isinstance(module, Module) and getattr(error, "name", None) in _MADE_BY_INIT:
        kind = type(module).__name__
        return AttributeError(
            f"{kind} was not initialised as a Module (it has no {error.name}): {kind}.__init__ "
            "must call super().__init__() first"
        )
    return error


def check_initialised(where: str, what: str, module: Module) -> None:
    """Refuse ``module`` (described as ``what``) if its ``__init__`` did not call
    ``Module.__init__()``: without the registries it makes, every traversal (``parameters()``,
    ``named_modules()``, ...) would fail on a missing attribute, naming no module."""
    if (
        getattr(module, "_modules", None) is None
        or getattr(module, "_parameters", None) is None
        or getattr(module, "_buffers", None) is None
    ):
        name = type(module).__name__
        raise AttributeError(
            f"{where}: {what}, a {name}, was not initialised as a Module: {name}.__init__ must "
            "call super().__init__() first"
        )


def unregistered_modules(module: Module) -> list[tuple[str, Module]]:
    """The attributes of ``module`` and its descendants (dotted paths) that hold a
    :class:`Module` which is not one of ``module.modules()`` and holds parameters or buffers
    that ``module`` does not register, with that module.

    Setting a child as an attribute (``self.fc = Linear(2, 3)``) does not register it, unlike
    in PyTorch: its parameters are not trained by an optimizer built on ``parameters()``,
    saved by ``state_dict``, moved or cast by ``to`` or checked by :func:`minidl.gradcheck`.
    One without parameters or buffers (a loss, an activation kept as a plain attribute) is
    not listed: nothing of it is missed.
    """
    return _unregistered_modules(module, _held_by_parts(module))


def _unregistered_modules(
    module: Module, walk: list[tuple[str, Module, list[object]]]
) -> list[tuple[str, Module]]:
    inside = {id(part) for _, part, _ in walk}
    found: list[tuple[str, Module]] = []
    registered: set[int] | None = None  # (the ids of the parameters and buffers, if needed)
    for path, part, held in walk:
        outside = [
            v
            for v in held
            if isinstance(v, Module) and id(v) not in inside and hasattr(v, "_buffers")
        ]
        if not outside:
            continue
        if registered is None:
            registered = {id(p) for p in module.parameters()} | {id(b) for b in module.buffers()}
        missed = {
            id(value)
            for value in outside
            if any(id(p) not in registered for p in value.parameters())
            or any(id(b) not in registered for b in value.buffers())
        }
        if missed:  # (only then are the names asked for)
            found += [
                (f"{path}.{name}" if path else name, value)
                for name, value in _attributes(part)
                if isinstance(value, Module) and id(value) in missed
            ]
    return found


def misreported_parameters(module: Module) -> list[tuple[str, Module, str]]:
    """The modules in ``module`` (dotted paths, with the module) whose class or instance
    overrides :meth:`Module.param` and returns anything but ``(value, grad)`` pairs of its
    registered parameters, with what the first such item is.

    The course's modules wrote ``param()`` themselves; minidl derives it from the parameters
    registered (:meth:`Module.register_parameter`) and never reads an override: optimizers are
    built on ``parameters()``, and ``state_dict``, ``to``, :func:`minidl.gradcheck` and the
    containers read the registries. A tensor that only an override of ``param()`` returns would
    not be trained, saved, moved or checked.
    """
    found: list[tuple[str, Module, str]] = []
    for path, part in module.named_modules():
        if getattr(part.param, "__func__", None) is Module.param:
            continue
        pairs = {(id(p.data), id(p.grad)) for p in part.parameters()}
        returned = part.param()
        items = list(returned) if isinstance(returned, list | tuple) else [returned]
        for index, item in enumerate(items):
            if (
                isinstance(item, tuple | list)
                and len(item) == 2
                and (id(item[0]), id(item[1])) in pairs
            ):
                continue
            if not isinstance(returned, list | tuple):
                what = f"a {type(returned).__name__}, not a list of pairs"
            elif isinstance(item, tuple | list) and len(item) == 2:
                what = f"item {index}, a pair of {_held(item[0])} and {_held(item[1])}"
            else:
                what = f"item {index}, {_held(item)}"
            found.append((path, part, what))
            break
    return found


def _init_of(cls: type) -> Any:
    """The ``__init__`` that constructing ``cls`` runs (the first class in its MRO that
    defines one)."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            return vars(klass)["__init__"]
    return object.__init__


def check_registered(where: str, module: Module) -> None:
    """Refuse ``module`` if :func:`unregistered_parameters`, :func:`unregistered_modules` or
    :func:`misreported_parameters` finds any, naming the first."""
    walk = _held_by_parts(module)  # (once for both checks)
    children = _unregistered_modules(module, walk)
    if children:
        path, child = children[0]
        name = path.rsplit(".", 1)[-1]
        kind = type(child).__name__
        more = f" (and {len(children) - 1} more)" if len(children) > 1 else ""
        if "[" in name:  # (an item of a list or a dict)
            held = name.split("[", 1)[0]
            hint = (
                f"register each module of self.{held} (self.register_module(f'{held}{{i}}', "
                "module): minidl has no ModuleList; a Sequential of them registers them as its "
                f"children), or, to keep them out on purpose, hold them in a tuple"
            )
        else:
            hint = (
                f"register it: self.{name} = self.register_module({name!r}, {kind}(...)) (or, "
                "to keep it out of them on purpose, a frozen teacher, hold it in a tuple: "
                f"self.{name} = ({kind}(...),))"
            )
        raise ValueError(
            f"{where}: the {kind} in attribute {path!r}{more} is not registered, so an optimizer "
            "on parameters() would not train its parameters, state_dict would not save them and "
            f"to() would not move them; {hint}"
        )
    found = _unregistered_parameters(module, walk)
    if found:
        path = found[0]
        name = path.rsplit(".", 1)[-1]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        if "[" in name:  # (an item of a list or a dict)
            held = name.split("[", 1)[0]
            hint = (
                f"register each Parameter of self.{held} "
                f"(self.register_parameter(f'{held}{{i}}', parameter))"
            )
        else:
            hint = f"register it: self.{name} = self.register_parameter({name!r}, Parameter(...))"
        raise ValueError(
            f"{where}: the Parameter in attribute {path!r}{more} is not registered, so an "
            f"optimizer on parameters() would not train it and state_dict would not save it; {hint}"
        )
    misreported = misreported_parameters(module)
    if misreported:
        path, part, what = misreported[0]
        kind = type(part).__name__
        at = f" (the module at {path!r})" if path else ""
        more = f" (and {len(misreported) - 1} more)" if len(misreported) > 1 else ""
        raise ValueError(
            f"{where}: {kind}.param{at}{more} is overridden and returns {what}, not the "
            "(value, grad) pair of a registered parameter: minidl never calls an override of "
            "param() (optimizers take parameters(); state_dict, to and gradcheck read the "
            "registered parameters), so that tensor would not be trained, saved or checked; "
            "hold it in a registered Parameter, self.w = self.register_parameter('w', "
            f"Parameter(tensor)), accumulate into self.w.grad, and remove {kind}.param (the "
            "inherited one returns the registered pairs)"
        )
