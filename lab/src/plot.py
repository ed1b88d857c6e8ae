"""Plots of the steering lab's results.json (matplotlib). Usage: plot.py RESULTS OUTDIR.
Prints the name of every PNG written, one a line."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = json.load(open(sys.argv[1]))
out = sys.argv[2]
written = []

conv = [r for r in results if r["convergence"] and r["name"].startswith("convergence")]
# 1. Convergence over time, one panel per resolver, one line per number of areas.
kinds = []
for r in conv:
    for c in r["convergence"]:
        if c["resolver"] not in kinds:
            kinds.append(c["resolver"])


def panels(n, width):
    """A figure of n side-by-side panels sharing the y axis; (fig, list of axes)."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, 3.4), sharey=True)
    return fig, [axes] if n == 1 else list(axes)


if conv:
    fig, axes = panels(len(kinds), 4)
    for ax, k in zip(axes, kinds):
        for r in conv:
            for c in r["convergence"]:
                if c["resolver"] == k and c["series"]:
                    xs = [s[0] for s in c["series"]]
                    ys = [s[1] for s in c["series"]]
                    ax.plot(xs, ys, marker=".", label=f"{r['areas']} areas")
        ax.set_title(k)
        ax.set_xlabel("seconds since start")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of probes to nearest area")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/convergence-over-time.png", dpi=110)
    written.append("convergence-over-time.png")

    # 2. After warm-up share vs number of areas.
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for k in kinds:
        pts = sorted(
            (r["areas"], c["nearest_after_warmup"])
            for r in conv
            for c in r["convergence"]
            if c["resolver"] == k
        )
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
    if conv:
        ns = sorted({r["areas"] for r in conv})
        ax.plot(ns, [1 / n for n in ns], "k--", alpha=0.5, label="uniform (1/areas)")
    ax.set_xlabel("areas")
    ax.set_ylabel("share to nearest after warm-up")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/convergence-vs-areas.png", dpi=110)
    written.append("convergence-vs-areas.png")

ORACLES = {"oracle", "walrus-oracle-table", "walrus-runtime-oracle-table"}
KINDS = ["unbound", "unbound-fast", "bind", "knot", "pdns", "unbound-ecs", "pdns-ecs"]


def label(mode):
    return f"{mode} (oracle)" if mode in ORACLES else mode


steady = [r for r in results if r["clients"] and r["name"].startswith("steady")]
for n in sorted({r["areas"] for r in steady}):
    runs = [r for r in steady if r["areas"] == n]
    # 3. Latency p50/p99 per mode (all clients).
    names = [label(r["mode"]) for r in runs]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    alls = [next(c for c in r["clients"] if c["who"] == "all") for r in runs]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [c["p50_ms"] for c in alls], width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [c["p99_ms"] for c in alls], width=0.4, label="p99")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20, fontsize=7, ha="right")
    ax.set_ylabel("request time, ms (DNS + HTTP)")
    ax.set_title(f"{n} areas", fontsize=9)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{out}/latency-by-mode-{n}-areas.png", dpi=110)
    written.append(f"latency-by-mode-{n}-areas.png")

    # 4. Share served by the nearest cluster, per resolver and mode.
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        vals = []
        for w in KINDS:
            c = next((c for c in r["clients"] if c["who"] == w), None)
            if c is None and r["mode"] == "oracle":
                c = next((c for c in r["clients"] if c["who"] == "oracle"), None)
            vals.append(c["nearest"] if c else 0)
        ax.bar(
            [x + i * width for x in range(len(KINDS))],
            vals,
            width=width,
            label=names[i],
            hatch="//" if r["mode"] in ORACLES else None,
        )
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(KINDS))])
    ax.set_xticklabels(KINDS, fontsize=8)
    ax.set_ylabel("share served by nearest cluster")
    ax.set_title(f"{n} areas (hatched: oracles)", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{out}/nearest-by-resolver-{n}-areas.png", dpi=110)
    written.append(f"nearest-by-resolver-{n}-areas.png")

    # 5. Convergence over time per mode: share of client requests served by the nearest
    # cluster per 2 s bin, one panel per resolver, one line per mode.
    kinds = [k for k in KINDS if any(w["who"] == k for r in runs for w in r.get("warmup", []))]
    if kinds:
        fig, axes = panels(len(kinds), 3.2)
        for ax, k in zip(axes, kinds):
            for r in runs:
                w = next((w for w in r.get("warmup", []) if w["who"] == k), None)
                if r["mode"] == "oracle":
                    w = next((w for w in r.get("warmup", []) if w["who"] == "oracle"), None)
                if not w or not w.get("series"):
                    continue
                ax.plot(
                    [s[0] for s in w["series"]],
                    [s[1] for s in w["series"]],
                    linestyle="--" if r["mode"] in ORACLES else "-",
                    marker=".",
                    label=label(r["mode"]),
                )
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("s since the clients' start", fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("requests served by nearest cluster")
        axes[-1].legend(fontsize=6)
        fig.suptitle(f"Convergence over time per mode, {n} areas (dashed: oracles)", fontsize=9)
        fig.tight_layout()
        fig.savefig(f"{out}/convergence-by-mode-{n}-areas.png", dpi=100)
        written.append(f"convergence-by-mode-{n}-areas.png")

events = [r for r in results if r.get("event")]
if events:
    # 5. The real runtime: which cluster each area's server answered with, around the event.
    fig, axes = plt.subplots(1, len(events), figsize=(3.2 * len(events), 3.2), sharey=True)
    if len(events) == 1:
        axes = [axes]
    for ax, r in zip(axes, events):
        e = r["event"]
        t0 = e["times"]["start"]
        end = e["times"]["end"]
        horizon = max([25.0] + [t / 1000.0 + 2 for t, _, _ in e["answer_changes"]])
        for area in range(1, r["areas"] + 1):
            xs, ys = [-2.0], [area]
            for t, a, clusters in e["answer_changes"]:
                if a == area and t >= 0 and clusters:
                    xs.append(t / 1000.0)
                    ys.append(sum(clusters) / len(clusters))
            xs.append(horizon)
            ys.append(ys[-1])
            ax.step(xs, [y + 0.04 * (area - 2) for y in ys], where="post", label=f"a{area}")
        ax.axvline(0, color="red", linestyle="--", linewidth=1)
        if end:
            ax.axvline((end - t0) / 1000.0, color="green", linestyle="--", linewidth=1)
        ax.set_title(r["name"].replace("runtime-", ""), fontsize=9)
        ax.set_xlabel("s after the event (red: start, green: end)", fontsize=7)
        ax.set_yticks(range(1, r["areas"] + 1))
        ax.set_yticklabels([f"c{i}" for i in range(1, r["areas"] + 1)])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cluster answered")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/runtime-events.png", dpi=110)
    written.append("runtime-events.png")

for w in written:
    print(w)
