"""A run directory whose stages each run once: what makes `xfer demo` and `xfer study` resumable.

Each stage owns a sub-folder and leaves `done.json` (its result, JSON) there as its last act. A stage whose
`done.json` exists is skipped and its stored result returned, so rerunning after a crash continues with the
first unfinished stage; a training stage that died mid-way resumes from its own last checkpoint (the
trainer's resumption). `run.json` at the top records the settings the directory was made with: continuing
with different settings would mix runs of two experiments, so it is refused unless the caller starts over.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import time
from collections.abc import Callable

from xfer_jax import paths
from xfer_jax.errors import SettingsChanged

RUN_FILE = "run.json"
DONE_FILE = "done.json"
TIMES_FILE = "timings.json"




def differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix or "(root)"]
    return [d for k in sorted(set(old) | set(new)) for d in differences(old.get(k), new.get(k), f"{prefix}{k}.")]


class RunDir:
    """`stage(name, fn, ...)` runs `fn(folder, ...)` unless it finished before; progress lines carry the
    time since this process started."""

    def __init__(self, root, settings: dict, *, fresh: bool = False, name: str = "xfer", log=print):
        self.root = pathlib.Path(root).resolve()
        self.name, self.log = name, log
        self.start = time.perf_counter()
        if fresh:
            self.remove()
        self.root.mkdir(parents=True, exist_ok=True)
        stored = self.root / RUN_FILE
        if stored.exists():
            changed = differences(json.loads(stored.read_text()), json.loads(json.dumps(settings)))
            if changed:
                raise SettingsChanged(
                    f"{self.root} was made with other settings ({', '.join(c.rstrip('.') for c in changed[:8])}); "
                    f"pass --fresh to start over there, or choose another --out")
        elif any(self.root.iterdir()):
            raise FileExistsError(f"{self.root} exists and is not a {name} run directory (no {RUN_FILE}); "
                                  f"choose another --out")
        else:
            stored.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")

    def remove(self) -> None:
        """Delete the run directory, but only one this class made (it holds run.json)."""
        if not self.root.exists():
            return
        if not (self.root / RUN_FILE).exists():
            raise FileExistsError(f"--fresh would delete {self.root}, which holds no {RUN_FILE} (not a {self.name} "
                                  f"run directory); delete it yourself or choose another --out")
        shutil.rmtree(self.root)

    def elapsed(self) -> str:
        seconds = int(time.perf_counter() - self.start)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def say(self, message: str) -> None:
        self.log(f"[{self.name} {self.elapsed()}] {message}", flush=True)

    def folder(self, name: str) -> pathlib.Path:
        return self.root / name

    def stage(self, name: str, fn: Callable, *args, **kwargs):
        """fn(folder, *args, **kwargs) → a JSON-able result, stored; skipped (stored result returned) when done."""
        folder = self.folder(name)
        marker = folder / DONE_FILE
        if marker.exists():
            self.say(f"{name}: done before, skipped")
            return json.loads(marker.read_text())
        self.say(f"{name}: running")
        t0 = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        result = fn(folder, *args, **kwargs)
        paths.write_text(marker, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        seconds = time.perf_counter() - t0
        self.timings = {**self.timings, name: seconds}
        self.say(f"{name}: finished in {seconds:.1f} s")
        return result

    @property
    def timings(self) -> dict[str, float]:
        """Seconds each finished stage took when it ran (kept across resumptions)."""
        path = self.root / TIMES_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    @timings.setter
    def timings(self, value: dict[str, float]) -> None:
        (self.root / TIMES_FILE).write_text(json.dumps(value, indent=1) + "\n")
