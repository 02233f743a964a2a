"""What can go wrong that a user can fix, and how a verb reports it: the bottom of the layout (imports nothing).

Every verb's `main` runs its body through `run_verb`: a user error becomes one line "prog: error: ..." (exit 1)
instead of a traceback; a training run stopped by a signal exits with 128 + the signal number, so a scheduler
can requeue the same command. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable


class Interrupted(Exception):
    """Raised after a signal-triggered save; carries the exit code (128 + signal number)."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint saved, "
                         f"run the same command again to resume")
        self.exit_code = 128 + signum


class CorpusError(RuntimeError):
    """A language ended up without text, or the user's text could not be used."""


class FetchError(RuntimeError):
    """One package could not be downloaded or read; the fetch goes on without it."""


class JudgeError(RuntimeError):
    """The endpoint failed for good (non-retryable status, retries exhausted, or a reply of the wrong shape)."""


class SettingsChanged(ValueError):
    """The run directory was made with other settings; continuing would mix two experiments."""


# What a user can fix: a bad value or config key, a missing or existing file, a corpus, a download, a judge.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, CorpusError, FetchError, JudgeError,
               ConnectionError, PermissionError)  # the last two: a store that cannot be reached or refuses (paths)


def run_verb(prog: str, body: Callable[[], int | None], errors: tuple = ()) -> int:
    """body()'s exit code, with a user error (USER_ERRORS + `errors`) printed as one line "prog: error: ..."
    (exit 1) instead of a traceback, and a signal that stopped training passed on as its exit code."""
    try:
        return body() or 0
    except Interrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        if isinstance(e, USER_ERRORS + tuple(errors)):
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 1
        raise
