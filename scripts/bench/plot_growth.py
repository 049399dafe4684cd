#!/usr/bin/env python3
"""Growth plot for scripts/bench.sh (BENCH_GROWTH): events/s of each mix against the rows already
in stripe_webhook_events. Reads the bench's results.jsonl, writes a TSV and a PNG (matplotlib,
installed from PyPI when missing)."""
import json
import subprocess
import sys
from collections import defaultdict

results, tsv, png = sys.argv[1:4]
rates = defaultdict(dict)  # mix -> rows -> events/s
for line in open(results):
    r = json.loads(line)
    rates[r["mix"]][r["table_rows"]] = r["events_per_s"]
sizes = sorted({n for by_rows in rates.values() for n in by_rows})
mixes = list(rates)

with open(tsv, "w") as f:
    f.write("rows\t" + "\t".join(mixes) + "\n")
    for n in sizes:
        f.write(f"{n}\t" + "\t".join(f"{rates[m].get(n, float('nan')):.0f}" for m in mixes) + "\n")

try:
    import matplotlib
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "matplotlib"], check=True)
    import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
for m in mixes:
    xs = [n for n in sizes if n in rates[m]]
    ax.plot([x / 1e6 for x in xs], [rates[m][x] for x in xs], marker="o", label=m)
ax.set_xlabel("rows already in stripe_webhook_events (millions)")
ax.set_ylabel("events/s (concurrency 16)")
ax.set_title("stripe-worker: throughput against the event log's size")
ax.set_ylim(bottom=0)
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(png)
