"""Plots the storm benchmark from criterion's saved estimates.

    cargo bench --bench storm
    python3 benches/plot_storm.py    # needs matplotlib; writes benches/storm.png
"""
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "target" / "criterion" / "storm"
VARIANTS = [
    ("ours", "ours (single flight): 1 refresh"),
    ("mutex_held_over_refresh", "mutex held over the refresh: 1 refresh, callers in turn"),
    ("no_single_flight", "no single flight: N refreshes"),
]
SIZES = [10, 1000, 10000]

fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
width = 0.26
for i, (key, label) in enumerate(VARIANTS):
    means = []
    for n in SIZES:
        est = json.loads((DATA / key / str(n) / "new" / "estimates.json").read_text())
        means.append(est["mean"]["point_estimate"] / 1e6)  # ns -> ms
    xs = [j + (i - 1) * width for j in range(len(SIZES))]
    bars = ax.bar(xs, means, width, label=label)
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
ax.set_xticks(range(len(SIZES)), [f"{n:,} callers" for n in SIZES])
ax.set_ylabel("time until every caller has a token (ms)")
ax.set_title("Storm at expiry: token endpoint latency 5 ms")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
fig.savefig(ROOT / "benches" / "storm.png")
print("wrote benches/storm.png")
