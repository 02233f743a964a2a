"""Where GPU time goes: sum kernel durations by name from a Perfetto trace (jax.profiler.trace output).

    python tools/trace_summary.py PROFILE_DIR [--steps 3] [--top 30] [--sequence 40]

`--sequence N` also lists the first N kernels of the middle step in launch order, each with its duration and the
idle gap before it: which small kernels a layer runs, and whether the GPU waits for the host.
"""
import argparse
import collections
import glob
import gzip
import json
import re


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--sequence", type=int, default=0)
    a = p.parse_args()
    path = sorted(glob.glob(f"{a.dir}/**/*perfetto_trace.json.gz", recursive=True))[-1]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    gpu_pids = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
                and re.search(r"GPU|gpu|device", str(e.get("args", {}).get("name", "")))}
    names = {e["pid"]: e.get("args", {}).get("name") for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    print("tracks:", {pid: names[pid] for pid in sorted(names)})
    totals, counts = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in gpu_pids:
            name = re.sub(r"\.\d+$", "", e["name"])[:90]
            totals[name] += e.get("dur", 0)
            counts[name] += 1
    total = sum(totals.values())
    print(f"{path}: GPU busy {total / a.steps / 1e3:.1f} ms/step over {len(gpu_pids)} device tracks")
    for name, us in totals.most_common(a.top):
        print(f"{us / a.steps / 1e3:8.2f} ms/step {100 * us / total:5.1f}%  x{counts[name] // a.steps:<4} {name}")
    if a.sequence:
        kernels = sorted((e for e in events if e.get("ph") == "X" and e.get("pid") in gpu_pids), key=lambda e: e["ts"])
        per_step = len(kernels) // a.steps
        step = kernels[per_step * (a.steps // 2): per_step * (a.steps // 2 + 1)]
        print(f"middle step: {per_step} kernels, first {a.sequence} in order (duration, idle gap before it):")
        for before, e in zip([None] + step, step[: a.sequence]):
            gap = 0.0 if before is None else e["ts"] - before["ts"] - before.get("dur", 0)
            print(f"{e.get('dur', 0):8.1f} µs  gap {gap:6.1f} µs  {e['name'][:100]}")


if __name__ == "__main__":
    main()
