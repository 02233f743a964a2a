"""Where GPU time goes: sum kernel durations by name from a Perfetto trace (jax.profiler.trace output).

    python tools/trace_summary.py PROFILE_DIR [--steps 3] [--top 30]
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


if __name__ == "__main__":
    main()
