"""Print the comparison table (Markdown) from a benchmarks JSONL file: one row per training-step run, newest last
(decoding and storage runs, which have no tokens/s of training, are counted under the table).

    python tools/bench_table.py docs/benchmarks.jsonl
"""
import json
import sys


def main(path: str) -> None:
    records = [json.loads(line) for line in open(path) if line.strip()]
    rows = [r for r in records if "tokens_per_s_per_device" in r]
    print("| system | shape | card | devices | batch | tokens/s/device | TFLOP/s/device | MFU | peak GB | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = "" if r.get("mfu") is None else f"{r['mfu']:.1%}"
        print(f"| {r['system']} | {r['shape']} | {r['card']} | {r['devices']} | {r['batch']} | "
              f"{r['tokens_per_s_per_device']:,} | {r.get('tflops_per_device') or ''} | {mfu} | {r.get('peak_mem_gb') or ''} | "
              f"{r.get('notes', '')} |")
    if len(rows) < len(records):
        print(f"\n{len(records) - len(rows)} other records (decoding, storage) are in {path}.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.jsonl")
