"""The paper's experiments as data: one frozen :class:`Experiment` per row of Tables I-III.

Every row is a complete description of a training run (network, loss, optimizer, schedule,
epochs); the runner trains it for several rounds and the report compares it with the paper.
Where the paper leaves a point open (the report of ``minidl reproduce`` lists each), the choice
is made once, in :data:`CHOICES`, with the reason beside it, and the rows take their values
from there.

Rows are of three kinds:

- ``"main"``: a row of the paper's tables, with the paper's mean and s.d.;
- ``"variant"``: an extra configuration that tests an explanation of a difference between a main
  row and the paper (``variant_of`` names that row): another reading of an open point, or the
  fault of the authors' published code (momentum without effect, ADADELTA accumulators
  overwritten, schedulers that never changed the learning rate, ELU/SELU constants);
- ``"figure"``: the configurations of Fig. 1, which has no table.

Example:
    >>> [row.label for row in TABLE_II if row.kind == "main"]
    ['SGD, momentum 0', 'SGD, momentum 0.5', 'SGD, momentum 0.9', 'ADADELTA']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from minidl._validate import check_int, check_real, shown, shown_typed
from minidl.data import _MOST_POINTS
from minidl.experiments.welch import _MOST_SAMPLES

__all__ = [
    "ALL_EXPERIMENTS",
    "BATCHES_PER_EPOCH",
    "CHOICES",
    "FIGURE_1",
    "PROTOCOL",
    "TABLES",
    "TABLE_I",
    "TABLE_II",
    "TABLE_III",
    "Choices",
    "CyclicSchedule",
    "Experiment",
    "PaperResult",
    "Protocol",
    "StepSchedule",
    "experiments_for_tables",
    "shares_a_stack",
    "stack_key",
    "training_key",
]

LossName = Literal["cross-entropy", "mse"]
OptimizerName = Literal["sgd", "adadelta", "adadelta-published"]
Kind = Literal["main", "variant", "figure"]


@dataclass(frozen=True)
class Choices:
    """The decision taken on every point the paper leaves open (the report lists each).

    Each field is one decision; its ``metadata["doc"]`` says why (the report prints it). Other
    readings of some of them are run as variant rows, so the report shows what those decisions
    change (not of ``adadelta_rho``, ``adadelta_eps``, ``clr_step_size_epochs`` nor
    ``new_data_per_round``).

    Each is a parameter of the rows, taken from here by default: ``mse_reduction``,
    ``adadelta_rho`` and ``adadelta_eps`` are :class:`Experiment`'s fields of those names,
    ``new_data_per_round`` is :attr:`Protocol.new_data_per_round`; the CLR choices give the
    bounds and half-cycle of the rows' :class:`CyclicSchedule`, ``mixed_activations`` their
    ``activations``, and ``adadelta_lr_scales_update`` the ADADELTA rows' ``lr`` (1 where it
    does not scale the update). A row built with other values trains with them, and the report
    and results.json give each row's own.
    """

    mse_reduction: Literal["paper", "mean", "sum"] = field(
        default="paper",
        metadata={
            "doc": "MSE: the paper's formula, squared error summed over the 2 outputs and "
            "averaged over the samples (gradient 2(z - t)/N). PyTorch's MSELoss ('mean') also "
            "divides by the number of outputs, halving the effective learning rate; it is run "
            "as a variant of Table II."
        },
    )
    adadelta_lr_scales_update: bool = field(
        default=True,
        metadata={
            "doc": "ADADELTA: section IV.C says the optimizers were tested 'with ... a learning "
            "rate of 1e-2', so 1e-2 is passed to ADADELTA, which (as PyTorch's Adadelta) "
            "multiplies its update by it. Section II.F says the other way: ADADELTA 'does not "
            "require any manual tuning of the learning rate', as Zeiler's method, which has "
            "none (lr = 1). The paper does not settle it; that reading is a variant row of "
            "Tables II and III."
        },
    )
    adadelta_rho: float = field(
        default=0.9,
        metadata={
            "doc": "ADADELTA's decay rate rho: the paper gives neither rho nor epsilon; "
            "PyTorch's defaults are used, rho 0.9 (Zeiler's experiments used 0.95), as "
            "`minidl train --optimizer adadelta` does. Not run as a variant."
        },
    )
    adadelta_eps: float = field(
        default=1e-6,
        metadata={"doc": "ADADELTA's epsilon: 1e-6, PyTorch's default and Zeiler's value."},
    )
    clr_base_lr_ratio: float = field(
        default=0.1,
        metadata={
            "doc": "CLR lower bound as a fraction of the row's learning rate. The paper gives no "
            "bounds; the triangle runs from lr/10 to lr: one decade below the row's rate 1e-2, "
            "so that CLR never exceeds the plain SGD row it is compared with. This is our "
            "choice, not Smith's rule (he suggests a lower bound of a third or a quarter of an "
            "upper bound found by a range test, which the paper does not report). Same as "
            "`minidl train --scheduler clr`. The reading 'from lr to 10 lr' is a variant row."
        },
    )
    clr_max_lr_ratio: float = field(
        default=1.0,
        metadata={"doc": "CLR upper bound as a fraction of the row's learning rate (see above)."},
    )
    clr_step_size_epochs: int = field(
        default=2,
        metadata={
            "doc": "CLR half-cycle in epochs (x 10 batches per epoch): Smith recommends 2 to 10 "
            "epochs per half-cycle; 2 gives 100 full cycles in 400 epochs. Same as `minidl "
            "train`."
        },
    )
    mixed_activations: Literal["named-outer", "tanh-outer"] = field(
        default="named-outer",
        metadata={
            "doc": "Table I says Sigmoid and ReLU 'used alone gave really variable "
            "performances, thus they were used in combination with Tanh', without saying where. "
            "The main Sigmoid and ReLU rows are such mixes, since the paper's numbers are; "
            "'named-outer' (X, Tanh, X) keeps the named activation in two of the three hidden "
            "layers, so the row still mostly measures it. The other layout, 'tanh-outer' "
            "(Tanh, X, Tanh), and the activation alone (as the table's label reads) are "
            "variant rows."
        },
    )
    new_data_per_round: bool = field(
        default=True,
        metadata={
            "doc": "Rounds: each round draws a new data set as well as new initial weights and "
            "shuffles, so the s.d. covers all the randomness of the protocol ('estimated "
            "through 5 rounds'). Round r uses the same data, weights and shuffles in every row, "
            "so rows are paired."
        },
    )


#: The choices of this reproduction.
CHOICES = Choices()


@dataclass(frozen=True)
class Protocol:
    """What every experiment of the paper shares (section III and the start of section IV)."""

    sizes: tuple[int, ...] = (2, 25, 25, 25, 2)
    """Layer widths: "two input units, three hidden layers of 25 units and two output units"."""
    batch_size: int = 100
    """"A batch size of 100 samples was used during the training process"."""
    n_train: int = 1000
    n_validation: int = 1000
    n_test: int = 1000
    """"randomly split into 1000 samples for training, 1000 samples for validation and 1000
    samples for testing"; every set is normalised with the training set's statistics (so it
    has at least 2 points; each set at most 2**59 - 1, as ``minidl.data.make_disk_data``'s)."""
    shuffle_each_epoch: bool = True
    """The training set is reshuffled at every epoch (``minidl.train.fit`` does so), the usual
    practice of mini-batch SGD. The paper says only that "data was shuffled at the beginning of
    each round"; a single shuffle per round is another reading, not run."""
    dtype: str = "float32"
    """Floating-point type of data and weights (float32, as PyTorch's default): the name of one
    of torch's, recorded by its full name (``"double"``, one of torch's names for float64,
    becomes ``"float64"``: the same rows, trained once)."""
    new_data_per_round: bool = CHOICES.new_data_per_round
    """Whether each round draws a data set of its own (see :attr:`Choices.new_data_per_round`);
    with ``False`` every round trains and tests on round 0's, and only the initial weights and
    the shuffles change from round to round."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        if not isinstance(self.new_data_per_round, bool):  # ("no" would be taken as True)
            raise TypeError(
                f"Protocol: new_data_per_round must be a bool, got {shown(self.new_data_per_round)}"
            )
        if not isinstance(self.sizes, tuple) or len(self.sizes) < 2:
            raise TypeError(
                "Protocol: sizes must be a tuple of layer widths, input first, got "
                f"{shown(self.sizes)}"
            )
        # (NumPy numbers kept as Python's, as results.json writes them)
        sizes = tuple(check_int("Protocol", "every width of sizes", width) for width in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if (self.sizes[0], self.sizes[-1]) != (2, 2):
            raise ValueError(
                "Protocol: sizes must begin and end with 2 (the disk's points have 2 coordinates "
                f"and 2 classes), got {shown(self.sizes)}"
            )
        object.__setattr__(self, "batch_size", check_int("Protocol", "batch_size", self.batch_size))
        for name in ("n_train", "n_validation", "n_test"):
            # (make_disk_data's limits: the training set's s.d. normalises every set, and a set
            # of more points passes the largest tensor; it failed when the row's group drew its
            # data, after the groups before it trained)
            n = check_int("Protocol", name, getattr(self, name), low=2 if name == "n_train" else 1)
            if n > _MOST_POINTS:
                raise ValueError(
                    f"Protocol: {name} must be at most 2**59 - 1, got {shown(n)}: the set's "
                    "points, (n, 2) float64, would pass the largest tensor, 2**63 - 1 bytes"
                )
            object.__setattr__(self, name, n)
        if self.shuffle_each_epoch is not True:
            # (the rows train with minidl.train.fit and minidl.rounds.fit_rounds, which draw a
            # new order at every epoch: a protocol that said otherwise would be written into
            # results.json, and not followed)
            raise ValueError(
                "Protocol: shuffle_each_epoch must be True (the training reshuffles at every "
                f"epoch; one shuffle per round is not implemented), got {shown(self.shuffle_each_epoch)}"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch, ``ceil(n_train / batch_size)`` (the last one may be smaller)."""
        return -(-self.n_train // self.batch_size)


def _dtype_name(dtype: object) -> str:
    """Check a :class:`Protocol`'s ``dtype``: the name of one of torch's floating-point dtypes
    that the layers compute in (a name, which results.json records; the training makes
    ``getattr(torch, dtype)`` of it), not a float8 one; returned as its full name (torch's
    ``"float"``, ``"double"`` and ``"half"`` as ``"float32"``, ``"float64"`` and
    ``"float16"``), a plain ``str``."""
    if isinstance(dtype, torch.dtype):
        raise TypeError(
            "Protocol: dtype must be the name of a torch floating-point dtype, a str such as "
            f"'float32', got {dtype} (written {str(dtype).removeprefix('torch.')!r})"
        )
    if not isinstance(dtype, str):
        raise TypeError(
            "Protocol: dtype must be the name of a torch floating-point dtype, a str such as "
            f"'float32', got {shown_typed(dtype)}"
        )
    found = getattr(torch, dtype, None)
    if found not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(
            "Protocol: dtype must be the name of a torch floating-point dtype ('float32', "
            f"'float64', 'float16' or 'bfloat16'), got {shown(dtype)}"
        )
    return str(found).removeprefix("torch.")


#: The protocol of every row.
PROTOCOL = Protocol()

#: Batches in one epoch: 1000 training samples in batches of 100.
BATCHES_PER_EPOCH = PROTOCOL.batches_per_epoch


@dataclass(frozen=True)
class StepSchedule:
    """Step decay: ``lr = lr0 * gamma ** floor(epoch / step_size)``, stepped per epoch."""

    gamma: float = 0.5
    """The paper's alpha: "dropped by half"."""
    step_size: int = 10
    """The paper's beta: "every 10 epochs"."""

    def __post_init__(self) -> None:
        # (as minidl.optim.StepDecay takes them; NumPy numbers kept as Python's)
        object.__setattr__(
            self, "gamma", check_real("StepSchedule", "gamma", self.gamma, low=0.0, high=1.0)
        )
        object.__setattr__(
            self, "step_size", check_int("StepSchedule", "step_size", self.step_size)
        )


@dataclass(frozen=True)
class CyclicSchedule:
    """Smith's triangular cyclical learning rate, stepped per batch."""

    base_lr: float
    max_lr: float
    step_size_up_epochs: int
    """Epochs from ``base_lr`` to ``max_lr`` (and as many back down)."""

    def __post_init__(self) -> None:
        # (as minidl.optim.CyclicLR takes them; NumPy numbers kept as Python's)
        base_lr = check_real("CyclicSchedule", "base_lr", self.base_lr, low=0.0)
        max_lr = check_real("CyclicSchedule", "max_lr", self.max_lr, low=0.0, low_open=True)
        if max_lr < base_lr:
            raise ValueError(
                f"CyclicSchedule: max_lr must be at least base_lr ({shown(self.base_lr)}), got "
                f"{shown(self.max_lr)}"
            )
        up = check_int("CyclicSchedule", "step_size_up_epochs", self.step_size_up_epochs)
        object.__setattr__(self, "base_lr", base_lr)
        object.__setattr__(self, "max_lr", max_lr)
        object.__setattr__(self, "step_size_up_epochs", up)

    @property
    def step_size_up(self) -> int:
        """The half-cycle in batches of :data:`PROTOCOL` (:meth:`batches_up` for a row's own)."""
        return self.batches_up(PROTOCOL)

    def batches_up(self, protocol: Protocol) -> int:
        """The half-cycle in batches of ``protocol``: ``step_size_up_epochs`` times its
        :attr:`~Protocol.batches_per_epoch`."""
        return self.step_size_up_epochs * protocol.batches_per_epoch


@dataclass(frozen=True)
class PaperResult:
    """A row's published test error: mean and s.d. over 5 rounds, in %.

    Checked when made (a test error in [0, 100], an s.d. in [0, 100], an integer number of
    rounds in [2, 10**6], as Welch's test takes): a row of one's own given ``rounds=5.0``
    trained, then failed in the report's test, and so did an s.d. of 1.7e308, which the
    report's second reading of it (``sqrt(n / (n - 1))`` times as large) took past a float. The
    s.d. of test errors in [0, 100] is at most 50 sqrt(n / (n - 1)), 70.8 for 2 rounds.
    """

    mean: float
    sd: float
    rounds: int = 5

    def __post_init__(self) -> None:
        mean = check_real("PaperResult", "mean", self.mean, low=0.0, high=100.0)
        sd = check_real("PaperResult", "sd", self.sd, low=0.0, high=100.0)
        rounds = check_int("PaperResult", "rounds", self.rounds, low=2)
        if rounds > _MOST_SAMPLES:  # (the report's Welch test refused it, after the training)
            raise ValueError(
                "PaperResult: rounds must be an integer in [2, 10**6] (the report's Welch test "
                f"takes at most 10**6 rounds a side), got {shown(self.rounds)}"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "sd", sd)
        object.__setattr__(self, "rounds", rounds)


#: The tables of :attr:`Experiment.table`: the paper's, which the report gives a section each.
_TABLE_NAMES = ("I", "II", "III", "Fig. 1")


@dataclass(frozen=True)
class Experiment:
    """One row: a training configuration, and what the paper reported for it.

    Args:
        table: ``"I"``, ``"II"``, ``"III"`` or ``"Fig. 1"``.
        label: the row's name in the report (unique within its table).
        activations: one activation name per hidden layer (``minidl.nn.ACTIVATIONS`` or
            ``minidl.experiments.faithful.PUBLISHED_ACTIVATIONS``).
        loss: ``"cross-entropy"`` or ``"mse"``.
        optimizer: ``"sgd"``, ``"adadelta"`` or ``"adadelta-published"`` (the published fault).
        lr: the learning rate (for ADADELTA: the scale of its update).
        epochs: training epochs.
        momentum: SGD momentum.
        scheduler: ``None``, a :class:`StepSchedule` or a :class:`CyclicSchedule`.
        mse_reduction: normalisation of the MSE (see :attr:`Choices.mse_reduction`).
        kind: ``"main"``, ``"variant"`` or ``"figure"``.
        paper: the paper's numbers (main rows only).
        variant_of: the main row whose difference from the paper this variant tests.
        hypothesis: for a variant, the explanation it tests, in one sentence.
        fault: for a variant, whether it reproduces a fault of the authors' published code
            (otherwise it is another reading of what the paper says).
        protocol: the shared protocol.
        adadelta_rho: ADADELTA's decay rate, in [0, 1] (see :attr:`Choices.adadelta_rho`).
        adadelta_eps: ADADELTA's epsilon, > 0 and not 0 in the protocol's dtype (see
            :attr:`Choices.adadelta_eps`). Both are ADADELTA's: a row of another optimizer
            keeps the choices' values.
    """

    table: str
    label: str
    activations: tuple[str, ...]
    loss: LossName
    optimizer: OptimizerName
    lr: float
    epochs: int
    momentum: float = 0.0
    scheduler: StepSchedule | CyclicSchedule | None = None
    mse_reduction: Literal["paper", "mean", "sum"] = CHOICES.mse_reduction
    kind: Kind = "main"
    paper: PaperResult | None = None
    variant_of: str | None = None
    hypothesis: str = ""
    fault: bool = False
    protocol: Protocol = field(default=PROTOCOL)
    # (last: the fields before them keep their positions)
    adadelta_rho: float = CHOICES.adadelta_rho
    adadelta_eps: float = CHOICES.adadelta_eps

    def __post_init__(self) -> None:
        # (checked when the row is made: a bad field failed only when its group trained, the
        # groups before it trained already, in the words of whatever read it first)
        for name in ("table", "label", "hypothesis"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(
                    f"Experiment: {name} must be a str, got {shown(getattr(self, name))}"
                )
        if self.table not in _TABLE_NAMES:
            # (the report gives each of these a section, and a row of another table none: it
            # trained, and was left out of report.md)
            raise ValueError(
                f"Experiment: table must be one of {', '.join(map(repr, _TABLE_NAMES))}, got "
                f"{shown(self.table)}"
            )
        if not isinstance(self.protocol, Protocol):
            raise TypeError(f"Experiment: protocol must be Protocol, got {shown(self.protocol)}")
        _check_activation_names(self.activations)
        hidden = len(self.protocol.sizes) - 2
        if len(self.activations) != hidden:
            raise ValueError(
                f"Experiment: {self.key} has {len(self.activations)} activations, expected one "
                f"for each of the protocol's {hidden} hidden layers"
            )
        for name, value, allowed in (
            ("loss", self.loss, ("cross-entropy", "mse")),
            ("optimizer", self.optimizer, ("sgd", "adadelta", "adadelta-published")),
            ("mse_reduction", self.mse_reduction, ("paper", "mean", "sum")),
            ("kind", self.kind, ("main", "variant", "figure")),
        ):
            if type(value) is not str or value not in allowed:
                raise ValueError(
                    f"Experiment: {name} must be one of {', '.join(map(repr, allowed))}, got "
                    f"{shown(value)}"
                )
        # (NumPy numbers kept as Python's, as results.json writes them)
        object.__setattr__(
            self, "lr", check_real("Experiment", "lr", self.lr, low=0.0, low_open=True)
        )
        object.__setattr__(self, "epochs", check_int("Experiment", "epochs", self.epochs))
        momentum = check_real(
            "Experiment", "momentum", self.momentum, low=0.0, high=1.0, high_open=True
        )
        if momentum != 0.0 and self.optimizer != "sgd":
            raise ValueError(
                f"Experiment: momentum applies to SGD only, got momentum {shown(self.momentum)} "
                f"with optimizer {self.optimizer!r}"
            )
        object.__setattr__(self, "momentum", momentum)
        self._check_adadelta_settings()
        objects: tuple[tuple[str, object, tuple[type, ...]], ...] = (
            ("scheduler", self.scheduler, (StepSchedule, CyclicSchedule, type(None))),
            ("paper", self.paper, (PaperResult, type(None))),
            ("variant_of", self.variant_of, (str, type(None))),
        )
        for name, given, kinds in objects:
            if not isinstance(given, kinds):
                expected = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
                raise TypeError(f"Experiment: {name} must be {expected}, got {shown(given)}")
        if not isinstance(self.fault, bool):
            raise TypeError(f"Experiment: fault must be a bool, got {shown(self.fault)}")
        # (refused by the optimizer only when the row's group trained, after the groups before
        # it, in SGD's name)
        dtype = getattr(torch, self.protocol.dtype)
        largest = torch.finfo(dtype).max
        rates = [("lr", self.lr)]
        if isinstance(self.scheduler, CyclicSchedule):
            rates.append(("scheduler's max_lr", self.scheduler.max_lr))
        for name, rate in rates:
            if rate > largest:
                raise ValueError(
                    f"Experiment: {name} {shown(rate)} is beyond the range of the protocol's "
                    f"dtype {self.protocol.dtype} (largest finite value {largest:g})"
                )

    def _check_adadelta_settings(self) -> None:
        """Check ``adadelta_rho`` and ``adadelta_eps`` as :class:`minidl.optim.Adadelta` takes
        them, in the protocol's dtype (they were refused only when the row's group trained,
        after the groups before it, in Adadelta's name); another optimizer's row keeps the
        choices' values (other ones would be recorded and not used)."""
        from minidl.optim.adadelta import eps_refusal

        rho = check_real("Experiment", "adadelta_rho", self.adadelta_rho, low=0.0, high=1.0)
        eps = check_real("Experiment", "adadelta_eps", self.adadelta_eps, low=0.0, low_open=True)
        if not self.optimizer.startswith("adadelta"):
            for name, value, chosen in (
                ("adadelta_rho", rho, CHOICES.adadelta_rho),
                ("adadelta_eps", eps, CHOICES.adadelta_eps),
            ):
                if value != chosen:
                    raise ValueError(
                        f"Experiment: {name} applies to ADADELTA only, got {name} "
                        f"{shown(getattr(self, name))} with optimizer {self.optimizer!r}"
                    )
        dtype = getattr(torch, self.protocol.dtype)
        words = f"the protocol's dtype {self.protocol.dtype}"
        refusal = eps_refusal("adadelta_eps", eps, dtype, words)
        if refusal is not None:
            raise ValueError(f"Experiment: {refusal}")
        # (NumPy numbers kept as Python's, as results.json writes them)
        object.__setattr__(self, "adadelta_rho", rho)
        object.__setattr__(self, "adadelta_eps", eps)

    @property
    def activation(self) -> str:
        """The activations as one string: ``"tanh"``, or ``"sigmoid,tanh,sigmoid"`` when mixed."""
        names = self.activations
        return names[0] if len(set(names)) == 1 else ",".join(names)

    @property
    def scheduler_name(self) -> str:
        """``"none"``, ``"step"`` or ``"clr"``."""
        if self.scheduler is None:
            return "none"
        return "step" if isinstance(self.scheduler, StepSchedule) else "clr"

    @property
    def key(self) -> str:
        """A unique name: ``"II / SGD, momentum 0.5"``."""
        return f"{self.table} / {self.label}"


def _check_activation_names(names: object) -> None:
    """Check an :class:`Experiment`'s activations: a tuple of the names of minidl's
    activations (``minidl.nn.ACTIVATIONS``) or of a published fault's
    (``minidl.experiments.faithful.PUBLISHED_ACTIVATIONS``)."""
    from minidl.experiments.faithful import PUBLISHED_ACTIVATIONS
    from minidl.nn.builders import ACTIVATIONS

    known = {*ACTIVATIONS, *PUBLISHED_ACTIVATIONS}
    if not isinstance(names, tuple):
        raise TypeError(
            f"Experiment: activations must be a tuple of activation names, got {shown(names)}"
        )
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise ValueError(
                f"Experiment: unknown activation {shown(name)} in activations; expected one of "
                f"{', '.join(sorted(known))}"
            )


def training_key(experiment: Experiment) -> Experiment:
    """The experiment stripped of everything that does not change training.

    Two rows with the same key train identically (same seeds, same numbers), so the runner
    trains them once: e.g. "momentum without effect" is the momentum-0 row.
    """
    key = dataclasses.replace(
        experiment,
        label="",
        kind="main",
        paper=None,
        variant_of=None,
        hypothesis="",
        fault=False,
    )
    # (set past the row's checks: a key is no row of a table)
    object.__setattr__(key, "table", "")
    return key


def stack_key(experiment: Experiment) -> Experiment:
    """The experiment stripped of its activations, loss, optimizer and schedule as well.

    Rows with the same key have the same layer sizes, epochs, data and initial weights, and
    differ only in their activations, loss and in how they update the weights, so the runner
    may train their rounds in one stack (:func:`minidl.experiments.batched.train_rows_batched`),
    each row with its own activations (:class:`minidl.nn.StackedActivation`), loss
    (:class:`minidl.nn.StackedLoss`) and optimizer.
    """
    key = training_key(
        dataclasses.replace(
            experiment,
            loss="cross-entropy",
            mse_reduction="paper",
            optimizer="sgd",
            momentum=0.0,
            adadelta_rho=CHOICES.adadelta_rho,
            adadelta_eps=CHOICES.adadelta_eps,
            scheduler=None,
        )
    )
    # (set past the row's checks: a key is no row, and trains nothing)
    object.__setattr__(key, "activations", ())
    object.__setattr__(key, "lr", 0.0)
    return key


def _three(name: str) -> tuple[str, str, str]:
    return (name, name, name)


def _mixed(name: str, pattern: Literal["named-outer", "tanh-outer"]) -> tuple[str, str, str]:
    return (name, "tanh", name) if pattern == "named-outer" else ("tanh", name, "tanh")


_OTHER_PATTERN: Literal["named-outer", "tanh-outer"] = (
    "tanh-outer" if CHOICES.mixed_activations == "named-outer" else "named-outer"
)


def _table_i() -> tuple[Experiment, ...]:
    """Table I: cross-entropy, SGD without momentum, 400 epochs, one row per activation."""

    def row(label: str, activations: tuple[str, ...], lr: float, **extra: object) -> Experiment:
        return Experiment(
            table="I",
            label=label,
            activations=activations,
            loss="cross-entropy",
            optimizer="sgd",
            lr=lr,
            epochs=400,
            **extra,  # type: ignore[arg-type]
        )

    mains = [
        # "Sigmoid and ReLU used alone gave really variable performances, thus they were used
        # in combination with Tanh": the paper's numbers for these two rows are of mixes.
        row(
            "Sigmoid",
            _mixed("sigmoid", CHOICES.mixed_activations),
            1e-1,
            paper=PaperResult(1.60, 1.57),
        ),
        row("Tanh", _three("tanh"), 1e-2, paper=PaperResult(1.06, 0.41)),
        row("ReLU", _mixed("relu", CHOICES.mixed_activations), 1e-1, paper=PaperResult(2.64, 1.90)),
        row("LeakyReLU(0.01)", _three("leakyrelu"), 1e-1, paper=PaperResult(2.58, 1.88)),
        row("ELU", _three("elu"), 1e-2, paper=PaperResult(1.80, 0.53)),
        row("SELU", _three("selu"), 1e-1, paper=PaperResult(1.32, 0.47)),
    ]
    variants = []
    for main_label, name in (("Sigmoid", "sigmoid"), ("ReLU", "relu")):
        other = _mixed(name, _OTHER_PATTERN)
        variants += [
            row(
                f"{main_label}+Tanh ({', '.join(other)})",
                other,
                1e-1,
                kind="variant",
                variant_of=main_label,
                hypothesis=f"the paper's {main_label} row mixed {main_label} with Tanh the other "
                f"way round ({', '.join(other)})",
            ),
            row(
                f"{main_label} alone",
                _three(name),
                1e-1,
                kind="variant",
                variant_of=main_label,
                hypothesis=f"the paper's {main_label} row used {main_label} alone, as the "
                "table's label reads",
            ),
        ]
    variants += [
        row(
            "ELU, as published (SELU's alpha)",
            _three("elu-published"),
            1e-2,
            kind="variant",
            variant_of="ELU",
            hypothesis="the published ELU used SELU's alpha (1.6733) instead of 1",
            fault=True,
        ),
        row(
            "SELU, as published (scale 0.5)",
            _three("selu-published"),
            1e-1,
            kind="variant",
            variant_of="SELU",
            hypothesis="the published SELU used a scale of 0.5 instead of 1.0507",
            fault=True,
        ),
    ]
    return (*mains, *variants)


_ADADELTA_LR = 1e-2 if CHOICES.adadelta_lr_scales_update else 1.0
_ADADELTA_OTHER_LR = 1.0 if CHOICES.adadelta_lr_scales_update else 1e-2


def _adadelta_variants() -> list[dict[str, object]]:
    """The ADADELTA variants shared by Tables II and III, as keyword arguments."""
    other = "Zeiler's, no learning rate" if _ADADELTA_OTHER_LR == 1.0 else "update scaled by 1e-2"
    return [
        {
            "label": f"ADADELTA, lr {_ADADELTA_OTHER_LR:g} ({other})",
            "optimizer": "adadelta",
            "lr": _ADADELTA_OTHER_LR,
            "hypothesis": f"the paper's ADADELTA used lr {_ADADELTA_OTHER_LR:g} ({other})",
        },
        {
            "label": "ADADELTA, as published (accumulators overwritten by sqrt_)",
            "optimizer": "adadelta-published",
            "lr": _ADADELTA_LR,
            # (minidl.experiments.faithful.PublishedAdadelta: its accumulators settle near rho
            # and rho^2, whose square roots cancel in the step)
            "hypothesis": "the published ADADELTA overwrote its accumulators with their square "
            "roots (sqrt_ in place), so it stepped nearly as plain SGD at its learning rate",
            "fault": True,
        },
    ]


def _table_ii() -> tuple[Experiment, ...]:
    """Table II: MSE, Tanh, lr 1e-2, 100 epochs: SGD with momentum 0, 0.5, 0.9, and ADADELTA."""

    def row(label: str, **extra: object) -> Experiment:
        settings: dict[str, object] = {
            "activations": _three("tanh"),
            "loss": "mse",
            "optimizer": "sgd",
            "lr": 1e-2,
            "epochs": 100,
        }
        settings.update(extra)
        return Experiment(table="II", label=label, **settings)  # type: ignore[arg-type]

    mains = [
        row("SGD, momentum 0", momentum=0.0, paper=PaperResult(5.20, 1.60)),
        row("SGD, momentum 0.5", momentum=0.5, paper=PaperResult(5.00, 1.82)),
        row("SGD, momentum 0.9", momentum=0.9, paper=PaperResult(4.42, 2.11)),
        row("ADADELTA", optimizer="adadelta", lr=_ADADELTA_LR, paper=PaperResult(4.96, 2.54)),
    ]
    variants = [
        row(
            f"SGD, momentum {momentum:g}, as published (momentum without effect)",
            momentum=0.0,
            kind="variant",
            variant_of=f"SGD, momentum {momentum:g}",
            hypothesis="the published SGD never stored its momentum buffer, so momentum had no "
            "effect (the row equals momentum 0)",
            fault=True,
        )
        for momentum in (0.5, 0.9)
    ]
    variants += [
        row(**settings, kind="variant", variant_of="ADADELTA")  # type: ignore[arg-type]
        for settings in _adadelta_variants()
    ]
    variants.append(
        row(
            "SGD, momentum 0, MSE averaged over outputs too",
            mse_reduction="mean",
            kind="variant",
            variant_of="SGD, momentum 0",
            hypothesis="the paper's MSE also divided by the number of outputs (PyTorch's "
            "MSELoss), halving the effective learning rate",
        )
    )
    return (*mains, *variants)


def _table_iii() -> tuple[Experiment, ...]:
    """Table III: cross-entropy, Tanh, lr 1e-2, 400 epochs: SGD with no schedule, step decay and
    CLR, and ADADELTA."""

    lr = 1e-2

    def row(label: str, **extra: object) -> Experiment:
        settings: dict[str, object] = {
            "activations": _three("tanh"),
            "loss": "cross-entropy",
            "optimizer": "sgd",
            "lr": lr,
            "epochs": 400,
        }
        settings.update(extra)
        return Experiment(table="III", label=label, **settings)  # type: ignore[arg-type]

    clr = CyclicSchedule(
        base_lr=lr * CHOICES.clr_base_lr_ratio,
        max_lr=lr * CHOICES.clr_max_lr_ratio,
        step_size_up_epochs=CHOICES.clr_step_size_epochs,
    )
    mains = [
        row("SGD", paper=PaperResult(1.66, 0.81)),
        row("SGD, step decay", scheduler=StepSchedule(), paper=PaperResult(1.58, 0.71)),
        row("SGD, CLR", scheduler=clr, paper=PaperResult(1.38, 0.16)),
        row("ADADELTA", optimizer="adadelta", lr=_ADADELTA_LR, paper=PaperResult(1.86, 0.93)),
    ]
    variants = [
        row(
            f"SGD, {name}, as published (schedule without effect)",
            kind="variant",
            variant_of=f"SGD, {name}",
            hypothesis="the published schedulers changed their own copy of the learning rate, "
            "never the optimizer's (the row equals SGD without schedule)",
            fault=True,
        )
        for name in ("step decay", "CLR")
    ]
    variants.append(
        row(
            f"SGD, CLR from {lr:g} to {10 * lr:g}",
            scheduler=dataclasses.replace(clr, base_lr=lr, max_lr=10 * lr),
            kind="variant",
            variant_of="SGD, CLR",
            hypothesis="the paper's CLR used lr as the lower bound and 10 lr as the upper one",
        )
    )
    variants += [
        row(**settings, kind="variant", variant_of="ADADELTA")  # type: ignore[arg-type]
        for settings in _adadelta_variants()
    ]
    return (*mains, *variants)


_FIGURE_1_LOSSES: tuple[tuple[str, LossName], ...] = (
    ("MSE", "mse"),
    ("Cross-entropy", "cross-entropy"),
)


def _figure_1() -> tuple[Experiment, ...]:
    """Fig. 1: validation error per epoch with MSE and with cross-entropy (Tanh, lr 1e-1).

    A third curve uses PyTorch's MSE reduction (mean over the outputs too): at lr 1e-1 the
    paper's reduction is past the stability limit of plain SGD for this network, so the figure
    shows what each reading gives.
    """
    rows = [
        Experiment(
            table="Fig. 1",
            label=label,
            activations=_three("tanh"),
            loss=loss,
            optimizer="sgd",
            lr=1e-1,
            epochs=400,
            kind="figure",
        )
        for label, loss in _FIGURE_1_LOSSES
    ]
    rows.insert(
        1,
        dataclasses.replace(
            rows[0], label="MSE averaged over outputs too (PyTorch's MSELoss)", mse_reduction="mean"
        ),
    )
    return tuple(rows)


TABLE_I = _table_i()
TABLE_II = _table_ii()
TABLE_III = _table_iii()
FIGURE_1 = _figure_1()

#: The experiments of each ``--tables`` choice: Fig. 1 (section IV.A) goes with Table I
#: (section IV.B), whose Tanh row also gives Fig. 2; Fig. 3 comes from Table III.
TABLES: dict[str, tuple[Experiment, ...]] = {
    "1": (*FIGURE_1, *TABLE_I),
    "2": TABLE_II,
    "3": TABLE_III,
}

ALL_EXPERIMENTS: tuple[Experiment, ...] = (*TABLES["1"], *TABLES["2"], *TABLES["3"])


def shares_a_stack(experiment: Experiment) -> bool:
    """Whether another training of :data:`ALL_EXPERIMENTS` has the :func:`stack_key` of
    ``experiment`` (so that the runner may train the two in one stack)."""
    key = stack_key(experiment)
    return any(
        stack_key(other) == key and training_key(other) != training_key(experiment)
        for other in ALL_EXPERIMENTS
    )


def experiments_for_tables(tables: str) -> tuple[Experiment, ...]:
    """The experiments of ``tables``, a comma-separated choice from ``1,2,3`` (in table order).

    Example:
        >>> len(experiments_for_tables("2")) == len(TABLE_II)
        True
    """
    if not isinstance(tables, str):
        raise TypeError(
            f"experiments_for_tables: tables must be a str, got {type(tables).__name__}"
        )
    names = {"1": "1", "I": "1", "2": "2", "II": "2", "3": "3", "III": "3"}
    parts = [part.strip().upper() for part in tables.split(",")]
    if any(part not in names for part in parts):  # (an empty part too: "1,,2", "1,", "")
        raise ValueError(
            "experiments_for_tables: tables must be a comma-separated choice from 1,2,3 (or "
            f"I,II,III), got {shown(tables)}"
        )
    chosen = {names[part] for part in parts}
    return tuple(row for name in ("1", "2", "3") if name in chosen for row in TABLES[name])
