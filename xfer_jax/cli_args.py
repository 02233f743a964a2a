"""Command-line flags spelled one way (snake_case) everywhere; a renamed flag's old spelling parses for one release.

The bottom of the layout (imports nothing): any verb's parser, and tools/, may use it.
"""
from __future__ import annotations

import argparse


def add_flag(parser: argparse.ArgumentParser, name: str, *old: str, **kwargs) -> argparse.Action:
    """parser.add_argument(name, **kwargs), plus each `old` spelling (a renamed flag, kept for one release)
    parsing exactly like it (same dest, type, action) but left out of --help."""
    action = parser.add_argument(name, **kwargs)
    hidden = {**kwargs, "dest": action.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
    hidden.pop("required", None)
    for spelling in old:
        parser.add_argument(spelling, **hidden)
    return action
