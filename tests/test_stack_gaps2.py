"""stack_models, StackedActivation and the model slices: what a fourth mutation audit of
minidl.nn.stack, stacked_activation and stacked_loss found untested, each test naming its
mutant, and a bug it found (fixed): a slice of step 0 or of bounds that are not integers escaped
model_parameters and flat_model_parameters as Python's own error."""

from __future__ import annotations

import pickle

import pytest
import torch

from minidl import nn

DTYPE = torch.float64


def test_a_stacked_activation_that_refused_a_forward_stays_refused_once_pickled() -> None:
    """A11: after a forward refused by run 1, the runs before it hold the refused input; a
    pickled copy must refuse backward as the original does (not differentiate the mix)."""
    elu = nn.ELU()
    layer = nn.StackedActivation([(nn.Tanh(), 1), (elu, 1)])
    layer(torch.randn(2, 1, 2))
    elu.alpha = 1e39
    with pytest.raises(ValueError, match=r"^ELU: alpha=1e\+39 is beyond the range"):
        layer(torch.randn(2, 1, 2))
    copied = pickle.loads(pickle.dumps(layer))
    message = (
        r"^StackedActivation: backward after the forward refused by run 1 \(ELU\): the runs "
        "before it had already cached its input"
    )
    for module in (layer, copied):
        with pytest.raises(RuntimeError, match=message):
            module.backward(torch.ones(2, 1, 2))


@pytest.mark.parametrize("function", [nn.model_parameters, nn.flat_model_parameters])
def test_a_slice_of_step_zero_is_refused_as_a_slice_with_a_step(function: object) -> None:
    """The docstrings promise an IndexError for a slice that "has a step", in the function's
    words, as slice(0, 3, 2) gets; slice(None, None, 0) too. (Fixed: Python's own ValueError
    "slice step cannot be zero" from slice.indices, naming neither.)"""
    stacked = nn.stack_models([nn.Sequential(nn.Linear(2, 2)) for _ in range(3)], layout="model")
    name = function.__name__  # type: ignore[attr-defined]
    with pytest.raises(
        IndexError,
        match=rf"^{name}: expected a non-empty slice of step 1 within 3 models, got "
        r"slice\(None, None, 0\)$",
    ):
        function(stacked, slice(None, None, 0))  # type: ignore[operator]


@pytest.mark.parametrize("function", [nn.model_parameters, nn.flat_model_parameters])
def test_a_slice_of_non_integer_bounds_is_refused_in_the_functions_words(
    function: object,
) -> None:
    """A slice whose bound or step is not an integer (nor None) is refused in the function's
    words, naming the slice. (Fixed: Python's TypeError "slice indices must be integers or None
    or have an __index__ method", which named neither.)"""
    stacked = nn.stack_models([nn.Sequential(nn.Linear(2, 2)) for _ in range(3)], layout="model")
    name = function.__name__  # type: ignore[attr-defined]
    for index, shown in [
        (slice(0, 2.0), r"slice\(0, 2\.0, None\)"),
        (slice("a", 2), r"slice\('a', 2, None\)"),
        (slice(0, 2, 1.0), r"slice\(0, 2, 1\.0\)"),
    ]:
        with pytest.raises(
            TypeError, match=rf"^{name}: expected a slice of integers or None, got {shown}$"
        ):
            function(stacked, index)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("other", "named"),
    [
        (lambda: nn.Linear(2, 4), "out_features=4, bias=True\\) of torch\\.float32"),
        (lambda: nn.Linear(2, 3, dtype=DTYPE), "out_features=3, bias=True\\) of torch\\.float64"),
    ],
    ids=["shape", "dtype"],
)
def test_linear_layers_that_differ_are_refused_naming_the_model_and_both_layers(
    other: object, named: str
) -> None:
    """S08, S22, S23: Linear layers at one position that differ in shape or dtype (each model of
    one dtype) are refused by stack_models in its own words, naming the first model that
    differs by its index and both layers, dtype and device included; the models are left as
    they were."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(2, 3)) for _ in range(2)]
    models.append(nn.Sequential(other()))  # type: ignore[operator]
    before = [[p.data.clone() for p in model.parameters()] for model in models]
    with pytest.raises(
        ValueError,
        match=r"^stack_models: layer 0 differs between models\[0\] and models\[2\]: "
        r"Linear\(in_features=2, out_features=3, bias=True\) of torch\.float32 on cpu against "
        rf"Linear\(in_features=2, {named} on cpu$",
    ):
        nn.stack_models(models)
    for model, values in zip(models, before, strict=True):
        for parameter, value in zip(model.parameters(), values, strict=True):
            assert torch.equal(parameter.data, value)


def test_a_method_bound_to_a_linear_and_set_on_its_instance_is_refused() -> None:
    """S21: a forward of one's own bound to the layer (types.MethodType) and set on its
    instance is a method of the instance, not its class's: the stack, which computes as Linear
    does, refuses it rather than leave it out (a bound method of the layer is skipped only when
    it is its class's own)."""
    import types

    def forward(self: nn.Linear, input: torch.Tensor) -> torch.Tensor:
        return 2 * nn.Linear.forward(self, input)

    models = [nn.Sequential(nn.Linear(2, 2), nn.Tanh()) for _ in range(2)]
    models[1][0].forward = types.MethodType(forward, models[1][0])
    with pytest.raises(
        TypeError,
        match=r"^stack_models: layer 0 of models\[1\] \(Linear\) has forward set on its "
        r"instance: a stack computes every model's layer as Linear does",
    ):
        nn.stack_models(models)
