#!/usr/bin/env python3
"""Merges the JSON rows of `trainer bench` and bench/ort_bench.py into one markdown table."""
import json, sys

rows = []
for path in sys.argv[1:]:
    for r in json.load(open(path)):
        r["file"] = path.rsplit("/", 1)[-1].removesuffix(".json")
        rows.append(r)
rows.sort(key=lambda r: (r["file"].split("-")[0], r["batch"], -r["images_per_second"]))
print("| network | runtime (file) | batch | images/s | latency ms | peak RSS MB |")
print("|---|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['file'].split('-')[0]} | {r['backend']} ({r['file']}) | {r['batch']} | "
          f"{r['images_per_second']:.2f} | {r['latency_ms']:.1f} | {r['peak_rss_mb']:.0f} |")
