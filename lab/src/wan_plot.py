"""Plots of the WAN lab's results.json (matplotlib). Usage: wan_plot.py RESULTS OUTDIR.
- wan-summary.png: one column per run (its loss in the label): rounds per minute against
  the configured rate, servers and nodes declared dead while alive, failover times, master-
  kill times, areas moved for content lag during the deploy.
- wan-vs-delay.png: failover and master-kill times against the one-way delay that bounds
  them.
- wan-<run>.png, one per run (setting): the timeline of round durations with the report
  timeout, the events (kills, restarts, the deploy) and every false death.
Prints the name of every PNG written, one a line."""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = json.load(open(sys.argv[1]))
out = sys.argv[2]


def save(fig, name):
    fig.tight_layout()
    fig.savefig(f"{out}/{name}", dpi=100)
    plt.close(fig)
    print(name)


def timeout_s(r):
    m = re.search(r'report_timeout = "(\d+)(ms|s)"', r["timing"])
    if m:
        return int(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    m = re.search(r'round_period = "(\d+)(ms|s)"', r["timing"])
    period = int(m.group(1)) / (1000 if m.group(2) == "ms" else 1) if m else None
    wan = 'gcs_profile = "wan"' in r["timing"]
    if period is None:
        period = 3.0 if wan else 1.0
    return period * (0.75 if wan else 0.4)


labels = [f"{r['name']}\n{r['loss'] * 100:g}% loss" for r in results]
xs = list(range(len(results)))
fig, axes = plt.subplots(1, 5, figsize=(22, 4.4))
ax = axes[0]
ax.bar(xs, [r["rounds_per_min"] for r in results], color="tab:blue", label="completed")
ax.scatter(xs, [r["rounds_per_min_configured"] for r in results], color="k", marker="_", s=600,
           label="configured", zorder=3)
ax.set_ylabel("rounds per minute")
ax.set_title("rounds completed")
ax.legend(fontsize=7)
ax = axes[1]
ax.bar([x - 0.2 for x in xs], [r["false_server_deaths"] for r in results], width=0.4,
       color="tab:red", label="servers (distinct server, round)")
ax.bar([x + 0.2 for x in xs], [r["false_node_deaths"] for r in results], width=0.4,
       color="tab:purple", label="nodes missing from a view")
ax.set_title("declared dead while alive")
ax.legend(fontsize=7)
for ax, key, color, title in [
    (axes[2], "failover_ms", "tab:green", "failover: cluster killed -> new answer"),
    (axes[3], "master_kill_ms", "tab:orange", "master killed -> new master"),
]:
    for x, r in zip(xs, results):
        ys = [t for _, t in r[key] if t is not None]
        ax.scatter([x] * len(ys), ys, s=16, color=color)
    ax.set_ylabel("ms")
    ax.set_title(title)
ax = axes[4]
ax.bar(xs, [r["lag_moves"] for r in results], color="tab:brown")
ax.set_ylabel("areas")
ax.set_title("deploy: areas moved for content lag")
for a in axes:
    a.set_xticks(xs)
    a.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
save(fig, "wan-summary.png")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for r in results:
    d = r["one_way_ms"]  # a1-a2, a1-a3, a2-a3
    far = {1: max(d[0], d[1]), 2: max(d[0], d[2]), 3: max(d[1], d[2])}
    pts = [(far.get(a, 0), t) for a, t in r["failover_ms"] if t is not None]
    axes[0].scatter([p[0] for p in pts], [p[1] for p in pts], s=16,
                    label=f"{r['name']} ({r['loss'] * 100:g}%)")
    pts = [(max(d), t) for _, t in r["master_kill_ms"] if t is not None]
    axes[1].scatter([p[0] for p in pts], [p[1] for p in pts], s=16,
                    label=f"{r['name']} ({r['loss'] * 100:g}%)")
axes[0].set_xlabel("farthest one-way delay from the killed cluster's area, ms")
axes[0].set_ylabel("ms")
axes[0].set_title("failover time vs delay")
axes[1].set_xlabel("largest one-way delay of the run, ms")
axes[1].set_title("master-kill time vs delay")
for a in axes:
    a.legend(fontsize=7)
save(fig, "wan-vs-delay.png")

for r in results:
    if not r.get("timeline"):
        continue
    fig, ax = plt.subplots(figsize=(12, 3.4))
    ax.plot([p[0] for p in r["timeline"]], [p[1] for p in r["timeline"]], ".", ms=3,
            label="round duration (last report in, or the timeout); none inside event windows")
    ax.axhline(timeout_s(r), color="grey", ls="--", label="report timeout")
    colors = {"cluster": "tab:green", "master": "tab:orange", "node": "tab:orange",
              "deploy": "tab:blue"}
    for t, what in r.get("events_s", []):
        c = next((v for k, v in colors.items() if what.startswith(k)), None)
        if c:
            ax.axvline(t, color=c, lw=0.8, alpha=0.6)
            ax.annotate(what, (t, ax.get_ylim()[1] * 0.95), fontsize=6, rotation=90,
                        va="top")
    fd = r.get("false_death_s", [])
    ax.scatter(fd, [0.02] * len(fd), marker="x", color="tab:red", s=20,
               label=f"false deaths ({len(fd)})")
    ax.set_xlabel("seconds since the start of measurement")
    ax.set_ylabel("s")
    ax.set_title(f"{r['name']}: {r['loss'] * 100:g}% loss, one-way {r['one_way_ms']} ms "
                 f"±{r['jitter_ms']}; {r['rounds_per_min']:.1f} rounds/min of "
                 f"{r['rounds_per_min_configured']:.0f}")
    ax.legend(fontsize=7, loc="upper left")
    save(fig, f"wan-{r['name']}.png")
