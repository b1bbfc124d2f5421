"""The project's hard rules, checked on the source: no autograd in the framework, and the layers of
docs/architecture.md import only downward.

The scanners are tested on small snippets first, so that a scanner that finds nothing cannot pass
unnoticed; then they run on every file of ``src/minidl``. A runtime check completes them: a whole
training step runs with autograd's entry points disabled and with autograd globally off.
"""

from __future__ import annotations

import ast
import importlib
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import minidl
from minidl import nn, optim
from minidl.train import fit

SOURCE = Path(minidl.__file__).resolve().parent
#: The two files allowed to use torch.nn (interop) and torch.distributed (distributed).
EXEMPT = {"interop.py", "distributed.py"}
FORBIDDEN_TORCH = ("nn", "autograd", "optim", "func")


def _framework_files() -> list[Path]:
    files = sorted(
        p for p in SOURCE.rglob("*.py") if p.relative_to(SOURCE).as_posix() not in EXEMPT
    )
    assert len(files) >= 20, f"expected the framework's files under {SOURCE}, found {len(files)}"
    return files


def _code_only(source: str) -> str:
    """The source with comments and string literals (docstrings included) blanked out."""
    tokens = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            continue
        if token.type == tokenize.STRING or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            token = token._replace(string='""')
        tokens.append(token)
    return tokenize.untokenize(tokens)


TEXT_RULES = {
    "torch.nn / autograd / optim / func": re.compile(r"\btorch\s*\.\s*(nn|autograd|optim|func)\b"),
    "from torch import nn / autograd / optim / func": re.compile(
        r"\bfrom\s+torch\s+import\s+[^\n]*\b(nn|autograd|optim|func)\b"
    ),
    "requires_grad": re.compile(r"\brequires_grad\w*"),
    ".backward() on a call result (a tensor)": re.compile(r"(?<!super\()\)\s*\.\s*backward\s*\("),
    ".backward() on a tensor-named variable": re.compile(
        r"\b(loss|losses|output|out|logits|tensor|result|total)\s*\.\s*backward\s*\("
    ),
}


def text_violations(source: str) -> list[str]:
    """Rule names matched by the code (not the comments or strings) of ``source``."""
    code = _code_only(source)
    return [name for name, pattern in TEXT_RULES.items() if pattern.search(code)]


def _forbidden_torch(module: str) -> bool:
    parts = module.split(".")
    return len(parts) >= 2 and parts[0] == "torch" and parts[1] in FORBIDDEN_TORCH


def ast_violations(source: str) -> list[str]:
    """Forbidden imports and uses of torch found by walking the syntax tree of ``source``."""
    tree = ast.parse(source)
    torch_names = {"torch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            torch_names |= {a.asname for a in node.names if a.name == "torch" and a.asname}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if _forbidden_torch(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _forbidden_torch(node.module):
                found.append(f"from {node.module} import ...")
            elif node.module == "torch":
                found += [
                    f"from torch import {a.name}" for a in node.names if a.name in FORBIDDEN_TORCH
                ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in torch_names
            and node.attr in FORBIDDEN_TORCH
        ):
            found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr in ("requires_grad", "requires_grad_"):
            found.append(f".{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg == "requires_grad":
            found.append("requires_grad=")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "backward"
            and _is_tensor_expression(node.func.value)
        ):
            found.append(f"{ast.unparse(node.func.value)}.backward()")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in torch_names
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in FORBIDDEN_TORCH
        ):
            found.append(f"getattr(torch, {node.args[1].value!r})")
    return found


def _is_tensor_expression(node: ast.expr) -> bool:
    """Whether the receiver of ``.backward`` is evidently a tensor rather than a Module.

    Modules are reached by name, attribute or subscript (``model``, ``self.head``,
    ``layers[i]``); a call result or an arithmetic expression (``criterion(y, t)``,
    ``(out * g).sum()``) is a tensor, as is a variable named like one (``loss``).
    """
    if isinstance(node, ast.Call):
        return not (isinstance(node.func, ast.Name) and node.func.id == "super")
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return True
    if isinstance(node, ast.Name):
        return node.id in {"loss", "losses", "output", "out", "logits", "tensor", "result", "total"}
    return False


# -- the scanners catch what they should, and only that -------------------------------------------

BAD_SNIPPETS = [
    "import torch.nn as nn",
    "import torch.nn.functional as F",
    "from torch import nn",
    "from torch import autograd, zeros",
    "from torch.optim import SGD",
    "from torch.func import grad",
    "import torch\nlayer = torch.nn.Linear(2, 2)",
    "import torch\ntorch.autograd.grad(y, x)",
    "import torch as T\nT.optim.SGD(p, lr=1)",
    "import torch\nx = torch.zeros(2, requires_grad=True)",
    "x.requires_grad_()",
    "loss = criterion(model(x), y)\nloss.backward()",
    "(output * g).sum().backward()",
    "criterion(model(x), y).backward()",
    "import torch\nF = getattr(torch, 'nn')",
]
GOOD_SNIPPET = '''
"""Built without torch.nn or torch.autograd; call loss.backward() never; requires_grad is off."""
import torch
from torch import Tensor

# torch.nn is not used here, nor x.requires_grad_()
def step(model, criterion, x, y, layers):
    criterion(model(x), y)
    grad = model.backward(criterion.backward())
    layers[0].backward(grad)
    return super().backward(grad), torch.nonzero(x), "torch.optim"
'''


@pytest.mark.parametrize("snippet", BAD_SNIPPETS)
def test_scanners_catch_forbidden_code(snippet: str) -> None:
    found_by_ast = ast_violations(snippet)
    found_by_text = text_violations(snippet)
    assert found_by_ast, f"the AST scan missed: {snippet!r}"
    if "getattr" not in snippet and "as T" not in snippet:
        assert found_by_text, f"the text scan missed: {snippet!r}"


def test_scanners_accept_the_module_contract() -> None:
    assert ast_violations(GOOD_SNIPPET) == []
    assert text_violations(GOOD_SNIPPET) == []


# -- the framework's source ----------------------------------------------------------------------


@pytest.mark.parametrize("path", _framework_files(), ids=lambda p: p.relative_to(SOURCE).as_posix())
def test_framework_uses_no_autograd(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    problems = ast_violations(source) + text_violations(source)
    assert problems == [], (
        f"{path.relative_to(SOURCE)} breaks the hard rule (tensor operations only, every gradient "
        f"derived by hand): {problems}"
    )


def test_only_distributed_py_imports_torch_distributed() -> None:
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module in _imported_modules(tree, _package_of(path)):
            if module.startswith("torch.distributed") or module == "torch.distributed":
                assert relative == "distributed.py", f"{relative} imports {module}"


# -- layering --------------------------------------------------------------------------------------


def _package_of(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    # Relative imports in a package's __init__ resolve against the package itself.
    return ".".join(parts[:-1])


def _imported_modules(tree: ast.AST, package: str) -> Iterator[str]:
    """Every module an import statement may load: ``from a import b`` yields ``a`` and ``a.b``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


#: layer -> the packages it must not import (docs/architecture.md: each layer imports downward).
ABOVE_OPTIM = (
    "minidl.train",
    "minidl.folded",
    "minidl.rounds",
    "minidl.checkpoint",
    "minidl.experiments",
    "minidl.cli",
)
ABOVE_NN = ("minidl.optim", *ABOVE_OPTIM)
ABOVE_TRAIN = ("minidl.experiments", "minidl.cli")
ABOVE_EXPERIMENTS = ("minidl.cli",)
#: The shared helpers under the packages (_validate.py, _scalar.py, _setting.py, ...).
ABOVE_SHARED = ("minidl.nn", "minidl.data", *ABOVE_NN)


def _forbidden_for(relative: str) -> tuple[str, ...]:
    if "/" not in relative and relative.startswith("_") and not relative.startswith("__"):
        return ABOVE_SHARED
    if relative.startswith("nn/") or relative == "data.py":
        return ABOVE_NN
    if relative.startswith("optim/"):
        return ABOVE_OPTIM
    if relative in ("train.py", "folded.py", "rounds.py", "checkpoint.py"):
        return ABOVE_TRAIN
    if relative.startswith("experiments/"):
        return ABOVE_EXPERIMENTS
    return ()


def layering_violations(path: Path) -> list[str]:
    relative = path.relative_to(SOURCE).as_posix()
    forbidden = _forbidden_for(relative)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(
        {
            module
            for module in _imported_modules(tree, _package_of(path))
            if any(module == f or module.startswith(f + ".") for f in forbidden)
        }
    )


def test_import_resolution() -> None:
    tree = ast.parse("from ..optim import sgd\nfrom . import flat\nfrom minidl import train\n")
    modules = set(_imported_modules(tree, "minidl.nn"))
    assert {"minidl.optim", "minidl.optim.sgd", "minidl.nn.flat", "minidl.train"} <= modules
    assert _package_of(SOURCE / "nn" / "linear.py") == "minidl.nn"
    assert _package_of(SOURCE / "nn" / "__init__.py") == "minidl.nn"
    assert _package_of(SOURCE / "train.py") == "minidl"


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(SOURCE.rglob("*.py")) if _forbidden_for(p.relative_to(SOURCE).as_posix())],
    ids=lambda p: p.relative_to(SOURCE).as_posix(),
)
def test_layers_import_only_downward(path: Path) -> None:
    assert layering_violations(path) == [], (
        f"{path.relative_to(SOURCE)} imports from a layer above it (see docs/architecture.md)"
    )


#: The one submodule that its package's name hides on purpose: ``minidl.gradcheck`` is the
#: function, as ``torch.autograd.gradcheck`` is (see ``minidl._Package``).
HIDDEN_ON_PURPOSE = {"gradcheck.py"}


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in SOURCE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
        and p.relative_to(SOURCE).as_posix() not in HIDDEN_ON_PURPOSE
    ),
    ids=lambda p: p.relative_to(SOURCE).as_posix(),
)
def test_no_name_of_a_package_hides_a_submodule(path: Path) -> None:
    """``import minidl.nn.X as m`` gives the submodule ``X``: a function or class its package
    exports under the same name replaced the package's attribute (``nn.activation`` and
    ``nn.mlp``, functions, hid the submodules of those names, whose names are now others)."""
    package = importlib.import_module(_package_of(path))
    name = f"{package.__name__}.{path.stem}"
    held = vars(package).get(path.stem)  # (not imported here: that would set the attribute)
    assert held is None or held is sys.modules.get(name), (
        f"{name} is {held!r}, not the submodule: rename the submodule or the name"
    )


def test_the_settings_shared_by_nn_and_optim_live_below_both() -> None:
    # Setting was in minidl.nn, which optim imported it from: not an nn concept.
    from minidl._setting import Setting
    from minidl.optim.lr_scheduler import ScheduleSetting

    assert Setting.__module__ == "minidl._setting"
    assert ScheduleSetting.__mro__[1] is Setting
    assert not (SOURCE / "nn" / "_setting.py").exists()
    assert layering_violations(SOURCE / "_setting.py") == []


def test_anomaly_loads_only_the_nn_files_docs_architecture_names() -> None:
    """anomaly.py works at the level of nn/, which imports it: when loaded it imports from
    minidl only the files docs/architecture.md names (the others inside its functions)."""
    tree = ast.parse((SOURCE / "anomaly.py").read_text(encoding="utf-8"))
    loaded = {
        node.module
        for node in tree.body  # (module level: not in functions, not under TYPE_CHECKING)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minidl")
    }
    assert loaded == {"minidl.nn.module", "minidl.nn._checks"}
    architecture = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text(
        encoding="utf-8"
    )
    assert "it imports only `nn/module.py` and `nn/_checks.py` when loaded" in " ".join(
        architecture.split()
    )


def test_the_nn_files_that_import_anomaly_are_those_docs_architecture_names() -> None:
    """nn/ imports anomaly.py (beside it, working at its level) only from the files named in
    docs/architecture.md."""
    importing = set()
    for path in sorted((SOURCE / "nn").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if "minidl.anomaly" in set(_imported_modules(tree, _package_of(path))):
            importing.add(path.relative_to(SOURCE).as_posix())
    assert importing == {
        "nn/residual.py",
        "nn/sequential.py",
        "nn/stack.py",
        "nn/stacked_activation.py",
    }
    architecture = " ".join(
        (Path(__file__).resolve().parent.parent / "docs" / "architecture.md")
        .read_text(encoding="utf-8")
        .split()
    )
    for name in importing:
        assert f"`{name}`" in architecture, name


#: The switches of autograd that the framework uses, outside interop.py and distributed.py,
#: and the files that use each (docs/architecture.md says why): a new use is a decision.
_AUTOGRAD_SWITCHES = {
    "enable_grad": {"nn/module.py"},
    "grad_fn": {"nn/chain.py", "nn/module.py", "nn/sequential.py"},
    "no_grad": set(),
    "set_grad_enabled": set(),
    "is_grad_enabled": set(),
}


def test_autograds_switches_are_used_only_where_docs_architecture_says() -> None:
    """Beside torch.inference_mode (the loops' and the buffers'), the framework reads
    ``.grad_fn`` and enters ``torch.enable_grad()`` only in the files named here and, for
    each, in docs/architecture.md, to read a caller's tensor as a plain value; no ``no_grad``.
    A switch is found as an attribute or name, imported under another name, or named in a
    string (``getattr(torch, "no_grad")``)."""
    found: dict[str, set[str]] = {name: set() for name in _AUTOGRAD_SWITCHES}
    for path in _framework_files():
        relative = path.relative_to(SOURCE).as_posix()
        if relative in ("interop.py", "distributed.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.alias):
                name = node.name.rpartition(".")[2]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            else:
                continue
            if name in found:
                found[name].add(relative)
    assert found == _AUTOGRAD_SWITCHES
    architecture = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text(
        encoding="utf-8"
    )
    text = " ".join(architecture.split())
    grad_fn = re.search(r"`\.grad_fn` tells \(([^)]*)\)", text)
    enable_grad = re.search(
        r"((?:`[^`]+`(?:, | and )?)+) asks? once, under `torch\.enable_grad\(\)`", text
    )
    assert grad_fn is not None and enable_grad is not None
    assert set(re.findall(r"`([^`]+)`", grad_fn.group(1))) == _AUTOGRAD_SWITCHES["grad_fn"]
    assert set(re.findall(r"`([^`]+)`", enable_grad.group(1))) == _AUTOGRAD_SWITCHES["enable_grad"]


# -- at run time -----------------------------------------------------------------------------------


def _training_step() -> list[torch.Tensor]:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(2, 4, dtype=torch.float64)]
    for name in sorted(nn.ACTIVATIONS):
        layers += [nn.activation(name), nn.Linear(4, 4, dtype=torch.float64)]
    model = nn.Sequential(*layers, nn.Linear(4, 2, dtype=torch.float64))
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randint(2, (8,))
    results = []
    for criterion in (nn.CrossEntropyLoss(), nn.MSELoss()):
        for optimizer in (
            optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            optim.Adadelta(model.parameters()),
        ):
            scheduler = optim.CyclicLR(optimizer, 0.01, 0.1, 2)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            results.append(loss)
            results.append(model.backward(criterion.backward()))
            optimizer.step()
            scheduler.step()
    minidl.gradcheck(nn.mlp((2, 2, 2), "tanh", dtype=torch.float64), x[:2])
    # fit's folded step (minidl.folded) too
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=3)
    return results + [p.data.clone() for p in model.parameters()]


def test_training_runs_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _training_step()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the framework called autograd")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "grad", refuse)
    with torch.no_grad():  # the course's "autograd globally off"
        got = _training_step()
    assert len(got) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert not any(t.requires_grad for t in expected)
