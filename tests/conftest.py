"""Shared fixtures: every test starts from torch's default state and leaves it as it found it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

# The tests use small tensors, for which intra-op threads only add contention (a training step
# can run 50x slower on a busy machine); one thread also makes every run sum in the same order.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _torch_state() -> Iterator[None]:
    """Seed torch's global generator and set one intra-op thread (whatever a test before set);
    restore the default dtype and grad mode afterwards.

    Tests never change the default dtype globally; a test that wants float64 by default uses the
    ``float64_default`` fixture, which this one undoes.
    """
    dtype = torch.get_default_dtype()
    grad_enabled = torch.is_grad_enabled()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad_enabled)


@pytest.fixture
def float64_default() -> Iterator[None]:
    """Make float64 the default dtype for one test only."""
    torch.set_default_dtype(torch.float64)
    yield
