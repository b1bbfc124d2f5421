r"""Gradient clipping per model in a stack (:func:`minidl.rounds.fit_rounds`'s ``max_grad_norm``).

:func:`minidl.train.fit` clips, each step, the gradients of its optimizer's parameters to the
total 2-norm ``max_grad_norm`` (:func:`minidl.nn.clip_grad_norm_`). In a stack of R models
(:func:`minidl.nn.stack_models`) model :math:`r` gets what it would get alone: with
:math:`g_r` the gradients of model :math:`r`'s parameters that its optimizer holds (and of the
optimizer's parameters outside the stack, where the optimizer is model :math:`r`'s alone),

.. math::
    g_r \leftarrow g_r \cdot \min\!\left(\frac{\text{max\_norm}}{\|g_r\|_2 + 10^{-6}},\ 1\right),

each model by its own norm, in a few batched operations per step, whatever R: a norm over the
model dimension of each stacked gradient, viewed ``(R, -1)`` (one over the whole gradient
buffer, viewed ``(R, entries)``, each model's block less its padding, which stays zero, where
the stack is laid out by model; of more than 4096 entries a model, three: of its rows of 4096
entries, of the rest, and of theirs, for its rounding, as :func:`~minidl.nn.clip_grad_norm_`
takes a long buffer's), the norm of those norms,
the R coefficients, and one broadcast multiply per stacked gradient (one in all laid out by
model). A gradient that no optimizer holds for a model is neither counted nor scaled, as
:func:`~minidl.train.fit` clips only its optimizer's parameters. A non-finite norm gives the
coefficient of the formula (NaN, or 0 for an infinite one), as in
:func:`~minidl.nn.clip_grad_norm_`, for that model alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from minidl.nn.clip import _ROW, _float16_coefficient
from minidl.nn.parameter import Parameter
from minidl.nn.sequential import Sequential
from minidl.nn.stack import _stacked_models, flat_model_parameters

__all__ = ["StackClip"]


class StackClip:
    """Clip each model of a stack to its own total 2-norm, in place; see the module's docstring.

    Args:
        stacked: a network made by :func:`minidl.nn.stack_models`.
        max_norm: the largest total 2-norm of a model's gradients (a checked number ``> 0``).
        holders: one ``(name, first, last, given, held)`` per optimizer: its name in a
            message, the models ``first`` to ``last - 1`` that it trains, the parameters it
            was built for (the stack's own parameters, :func:`minidl.nn.model_parameters` of
            those models, or their :func:`minidl.nn.flat_model_parameters`, as
            :func:`~minidl.rounds.fit_rounds` gives them) and those it holds
            (``optimizer.params``).
        flat: whether ``given`` are flat parameters (a stack laid out by model).
        where: the caller, for the message of a refusal.

    Raises:
        ValueError: an optimizer of several models holds a parameter outside the stack (and
            outside what it was given), or two optimizers hold one parameter (or one holds a
            parameter given to another): its gradient belongs to no one model.
    """

    def __init__(
        self,
        stacked: Sequential,
        max_norm: float,
        holders: Sequence[tuple[str, int, int, Sequence[Parameter], Sequence[Parameter]]],
        *,
        flat: bool,
        where: str,
    ) -> None:
        models = _stacked_models(stacked, where)
        parameters = list(stacked.parameters())
        self.max_norm = max_norm
        # held[j, r]: whether model r's optimizer holds the stack's parameter j.
        held = torch.zeros(len(parameters), models, dtype=torch.bool)
        #: (model, parameter) of each parameter outside the stack that model's optimizer holds.
        self.extras: list[tuple[int, Parameter]] = []
        # The optimizer (its name) that holds each parameter, and the one given each.
        holder: dict[int, str] = {}
        owner = {id(p): name for name, _, _, given, _ in holders for p in given}
        for name, first, last, given, holds in holders:
            places = {id(parameter): place for place, parameter in enumerate(given)}
            for parameter in holds:
                other = holder.setdefault(id(parameter), name)
                if other != name or owner.get(id(parameter), name) != name:
                    # (its gradient would be counted in two models' norms, scaled by both
                    # coefficients: one model's gradients would change the other's clipping)
                    raise ValueError(
                        f"{where}: with max_grad_norm, each model's gradients are clipped to "
                        f"their own norm, but {name} holds {parameter!r}, which "
                        + (
                            f"{other} holds too"
                            if other != name
                            else f"was given to {owner[id(parameter)]}"
                        )
                        + ": its gradient would belong to no one model; give each optimizer "
                        "parameters of its own"
                    )
                place = places.get(id(parameter))
                if place is not None:
                    if flat:
                        held[:, first:last] = True
                    else:
                        held[place, first:last] = True
                elif last - first == 1:
                    self.extras.append((first, parameter))
                else:
                    raise ValueError(
                        f"{where}: with max_grad_norm, each model's gradients are clipped to "
                        f"their own norm, but {name}, of models {first} to {last - 1}, holds "
                        f"{parameter!r}, which is not the parameter of one model in the stack: "
                        "its gradient would belong to no one model; give each model an "
                        "optimizer of its own (PerModel with group 1), which clips it with "
                        "that model's gradients"
                    )
        used = held.any(dim=1)
        like = parameters[0].grad  # (a stack has a stacked layer)
        #: The gradients clipped, each viewed (R, -1): the whole buffer laid out by model, or
        #: each stacked gradient that an optimizer holds for some model.
        self.pieces: list[Tensor]
        if flat:
            # Each model's block without its padding, which stays zero (a NaN coefficient
            # would make it NaN): (R, entries), rows a block apart.
            entries = sum(parameter.data[0].numel() for parameter in parameters)
            blocks = flat_model_parameters(stacked, slice(0, models)).grad.view(models, -1)
            self.pieces = [blocks[:, :entries]]
            held = held[:1]
        else:
            self.pieces = [
                parameter.grad.view(models, -1)
                for parameter, use in zip(parameters, used.tolist(), strict=True)
                if use
            ]
            held = held[used]
        # (a model without some piece: its norm leaves that piece out, its coefficient is 1)
        self.partial = bool(not held.all())
        dtype, device = like.dtype, like.device
        # The norms of 16-bit gradients are taken in float32 and the total rounded once, as
        # fit's one norm of a model's buffer is (rounded to the dtype at each piece, the norm
        # of the norms differed from it, and the models from those trained alone).
        #: The dtype of the norms: float32 for 16-bit gradients, theirs otherwise.
        self.norm_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        norm_dtype = self.norm_dtype
        with torch.inference_mode(False):  # (written in place inside inference mode)
            self.held = held.to(device)
            self.unheld = ~self.held
            self.one = torch.ones((), dtype=dtype, device=device)
            # Each piece's norm per model, then a row per parameter outside the stack (the
            # norm in its model's column, zeros elsewhere).
            self.norms = torch.zeros(
                len(self.pieces) + len(self.extras), models, dtype=norm_dtype, device=device
            )
            self.total = torch.zeros(models, dtype=norm_dtype, device=device)
            # (the total in the gradients' dtype, where the norms are float32)
            self.rounded = torch.zeros(models, dtype=dtype, device=device)
            self.coefficient = torch.zeros(models, dtype=dtype, device=device)
            self.coefficients = torch.zeros(len(self.pieces), models, dtype=dtype, device=device)
            # The norms of the rows of _ROW entries of each piece longer than that (and of
            # the rest), whose norm is the piece's: its rounding stays bounded (as in
            # clip_grad_norm_'s buffer norm).
            self.rows = [
                torch.zeros(models, -(-piece.shape[1] // _ROW), dtype=norm_dtype, device=device)
                if piece.shape[1] > _ROW
                else None
                for piece in self.pieces
            ]
        # The views a step uses, made once: each norm it takes (of what, into what, over which
        # dimension; a piece longer than _ROW: its rows', its rest's, then theirs), the rows of
        # the parameters outside the stack (each with its model's coefficient), the total norm
        # (the one piece's norm, or the norm of the norms) and each piece's coefficients as a
        # column (R, 1).
        self.steps: list[tuple[Tensor, Tensor, int]] = []
        for piece, rows, out in zip(self.pieces, self.rows, self.norms, strict=False):
            if rows is None:
                self.steps.append((piece, out, 1))
                continue
            whole = piece.shape[1] // _ROW
            self.steps.append(
                (piece[:, : whole * _ROW].view(models, whole, _ROW), rows[:, :whole], 2)
            )
            if piece.shape[1] > whole * _ROW:
                self.steps.append((piece[:, whole * _ROW :], rows[:, whole], 1))
            self.steps.append((rows, out, 1))
        self.piece_norms = self.norms[: len(self.pieces)]
        self.extra_steps = [
            (self.norms[row, model], parameter, self.coefficient[model])
            for row, (model, parameter) in enumerate(self.extras, start=len(self.pieces))
        ]
        self.whole = self.norms[0] if len(self.norms) == 1 else None
        self.columns = (
            [row.unsqueeze(1) for row in self.coefficients]
            if self.partial
            else [self.coefficient.unsqueeze(1)] * len(self.pieces)
        )

    def __call__(self) -> None:
        """Clip the gradients of this step, each model by its own norm."""
        norm_dtype = self.norm_dtype
        for source, out, dim in self.steps:
            torch.linalg.vector_norm(source, dim=dim, dtype=norm_dtype, out=out)
        if self.partial:
            self.piece_norms.masked_fill_(self.unheld, 0.0)
        for out, parameter, _ in self.extra_steps:
            torch.linalg.vector_norm(parameter.grad, dtype=norm_dtype, out=out)
        total = self.whole
        if total is None:
            total = torch.linalg.vector_norm(self.norms, dim=0, out=self.total)
        if total.dtype is not self.rounded.dtype:
            total = self.rounded.copy_(total)
        # max_norm / (norm + 1e-6), clamped to 1: clip_grad_norm_'s operations (a float over a
        # tensor is its reciprocal times the float), so the same bits for the same norm.
        coefficient = torch.add(total, 1e-6, out=self.coefficient)
        if total.dtype is torch.float16:  # (where 1 / (norm + 1e-6) overflows: see clip.py)
            reciprocal = coefficient.reciprocal_().clone()
            coefficient.mul_(self.max_norm).clamp_(max=1.0)
            coefficient.copy_(_float16_coefficient(total, reciprocal, coefficient, self.max_norm))
        else:
            coefficient.reciprocal_().mul_(self.max_norm).clamp_(max=1.0)
        if self.partial:  # (1 for a model whose optimizer does not hold the piece)
            torch.where(self.held, coefficient, self.one, out=self.coefficients)
        for piece, column in zip(self.pieces, self.columns, strict=True):
            piece.mul_(column)
        for _, parameter, model_coefficient in self.extra_steps:
            parameter.grad.mul_(model_coefficient)
