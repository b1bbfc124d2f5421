"""Runs the paper's experiments from the command line (placeholder until the tables exist)."""

from __future__ import annotations

import argparse

__all__ = ["run_from_cli"]


def run_from_cli(args: argparse.Namespace) -> int:
    """Entry point of ``minidl reproduce``."""
    raise NotImplementedError("minidl reproduce: the experiments are not written yet")
