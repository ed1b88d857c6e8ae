#!/usr/bin/python3
"""Plots of docs/scale/*.jsonl (issue 24): traffic and view-change cost against the number
of hosts, all-members next to two-tier (clients modelled, labelled as such).

    /usr/bin/python3 docs/scale/plot.py        (Debian's python3-matplotlib)

Reads scale.jsonl (the `scale` example) and, if present, real.jsonl (docs/scale/real.sh)
and real_clients.jsonl (docs/scale/real_clients.sh: two-tier with REAL clients over QUIC);
writes traffic.png and viewchange.png beside itself.
"""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def lines(name):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


scale = lines("scale.jsonl")
real = [r for r in lines("real.jsonl") if r.get("lo_bytes_per_s")]
sim = [d for d in scale if d["design"] == "all-members" and "extrapolated" not in d]
ext = [d for d in scale if d["design"] == "all-members" and "extrapolated" in d]
tier = [d for d in scale if d["design"] == "two-tier"]
rc = [r for r in lines("real_clients.jsonl") if r.get("real_clients") and r.get("nft") and r.get("idle")
      and r["join"]["traffic"].get("view_lines", 0) == 0]  # runs whose members held one view
RC_LABEL = "two-tier, REAL clients over QUIC + member processes (loopback)"


def busiest_member_packets(r):
    return max(p["peer_packets_per_s"] + p["client_packets_per_s"] for p in r["idle"]["per_member"])


def hosts(d):
    return d["members"] + d["clients"]


def style(ax, xlabel, ylabel, title, ylog=True, ylim0=False, loc="best"):
    """Log axes, labels, grid and legend of one panel."""
    ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    if ylim0:
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc=loc)


TIER_LABEL = "two-tier (members simulated, clients MODELLED)"

# ---------------------------------------------------------------- traffic
fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
ax = axes[0]
ax.plot([hosts(d) for d in sim], [d["idle"]["bytes_per_s"] for d in sim], "o-",
        label="all-members (simulated cores)")
if ext:
    ax.plot([sim[-1]["members"]] + [hosts(d) for d in ext],
            [sim[-1]["idle"]["bytes_per_s"]] + [d["idle"]["bytes_per_s"] for d in ext],
            "o--", color="C0", alpha=0.6, label="all-members (formula, extrapolated)")
ax.plot([hosts(d) for d in tier], [d["idle"]["bytes_per_s"] for d in tier], "s-",
        color="C1", label=TIER_LABEL)
if real:
    ax.plot([r["members"] for r in real], [r["lo_bytes_per_s"] for r in real], "^",
            color="C2", label="all-members, real processes (loopback bytes incl. QUIC)")
if rc:
    ax.plot([hosts(r) for r in rc], [r["idle"]["lo_bytes_per_s"] for r in rc], "D-",
            color="C5", label=RC_LABEL)
style(ax, "hosts (members + clients)", "bytes/s, whole group (idle: heartbeats)", "Idle control traffic, total", ylog=True)

ax = axes[1]
ax.plot([hosts(d) for d in sim], [d["idle"]["busiest_node_msgs_per_s"] for d in sim], "o-",
        label="all-members: busiest node (simulated)")
if ext:
    ax.plot([hosts(d) for d in ext], [2 * d["idle"]["per_node_msgs_per_s"] for d in ext], "o--",
            color="C0", alpha=0.6, label="all-members: per node (formula)")
ax.plot([hosts(d) for d in tier],
        [d["idle"]["members"]["busiest_node_msgs_per_s"]
         + d["idle"]["client_links_model"]["busiest_member_msgs_per_s"] for d in tier],
        "s-", color="C1", label="two-tier: busiest member (clients MODELLED)")
ax.plot([hosts(d) for d in tier], [2 * 1000 / d["heartbeat_interval_ms"] for d in tier], "s:",
        color="C3", label="two-tier: a client (MODELLED)")
if rc:
    ax.plot([hosts(r) for r in rc], [busiest_member_packets(r) for r in rc], "D-",
            color="C5", label="two-tier: busiest member, REAL (loopback packets/s)")
    ax.plot([hosts(r) for r in rc],
            [r["idle"]["client_links_packets_per_s"] / r["clients"] for r in rc], "D:",
            color="C6", label="two-tier: a client, REAL (loopback packets/s)")
style(ax, "hosts (members + clients)", "messages/s sent + received by one node", "Control messages per node", ylog=True)

ax = axes[2]
ax.plot([d["members"] for d in sim], [d["sim_cpu_ms_per_virtual_s"] / d["members"] for d in sim],
        "o-", label="all-members")
ax.plot([d["members"] for d in tier],
        [d["sim_cpu_ms_per_virtual_s"] / d["members"] for d in tier], "s",
        color="C1", label="two-tier members (x = members)")
style(ax, "members running the protocol", "ms of CPU per node per second", "Protocol CPU per member, idle (simulator, one thread)", ylog=True)
fig.tight_layout()
fig.savefig(os.path.join(HERE, "traffic.png"), dpi=90)

# ---------------------------------------------------------------- view changes
fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
ax = axes[0]
ax.plot([hosts(d) for d in sim], [d["crash"]["vc_bytes"] for d in sim], "o-",
        label="all-members: a host crash = view change (bytes)")
ax.plot([hosts(d) for d in tier], [d["member_crash"]["vc_bytes"] for d in tier], "s-",
        color="C1", label="two-tier: a member crash = view change (bytes)")
ax.plot([hosts(d) for d in tier], [d["client_crash"]["bytes"] for d in tier], "s--",
        color="C3", label="two-tier: a client crash = one Gone op (bytes, MODELLED client)")
if rc:
    ax.plot([hosts(r) for r in rc], [max(1, r["client_crash"]["extra_lo_bytes"]) for r in rc], "D-",
            color="C5", label="two-tier: a client crash, REAL (loopback bytes over idle, all links)")
style(ax, "hosts (members + clients)", "bytes between members", "Cost of one crash", ylog=True, loc="upper left")

ax = axes[1]
ax.plot([hosts(d) for d in sim], [d["per_hour"]["once_a_day"]["view_changes"] for d in sim], "o-",
        label="all-members, each host crashes once a day")
if ext:
    ax.plot([hosts(d) for d in ext], [d["per_hour"]["once_a_day"]["view_changes"] for d in ext],
            "o--", color="C0", alpha=0.6, label="all-members (formula)")
ax.plot([hosts(d) for d in sim], [d["per_hour"]["once_a_week"]["view_changes"] for d in sim], "o-",
        color="C4", label="all-members, once a week")
ax.plot([hosts(d) for d in tier], [d["per_hour"]["once_a_day"]["view_changes"] for d in tier],
        "s-", color="C1", label="two-tier view changes, once a day")
ax.plot([hosts(d) for d in tier], [d["per_hour"]["once_a_day"]["client_ops"] for d in tier],
        "s:", color="C3", label="two-tier client Gone/Join ops, once a day (MODELLED)")
style(ax, "hosts (members + clients)", "per hour", "View changes per hour (crash + restart)", ylog=True)

ax = axes[2]
ax.plot([d["members"] for d in sim], [d["crash"]["failover_ms"] for d in sim], "o-",
        label="all-members, simulated (virtual time, 200 us links)")
ax.plot([d["members"] for d in tier], [d["member_crash"]["failover_ms"] for d in tier], "s",
        color="C1", label="two-tier member crash, simulated (x = members)")
if real:
    pts = [(r["members"], r["bench"]["view_change_ms"]) for r in real
           if isinstance(r.get("bench"), dict) and r["bench"].get("view_change_ms") is not None
           and r["bench"].get("valid")]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "^-", color="C2",
                label="real processes on loopback (kill -9)")
if rc:
    pts = [(r["members"], r["failover"]["attach_again_ms_p50"]) for r in rc
           if r["failover"].get("attach_again_ms_p50") is not None]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "D-", color="C5",
            label="REAL clients: kill -9 of their member -> attached again (p50)")
    pts = [(r["members"], r["failover"]["members_view_ms"]) for r in rc
           if r["failover"].get("members_view_ms") is not None]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "D:", color="C6",
            label="REAL member processes beside clients: kill -9 -> view")
style(ax, "members", "ms from kill to new view", "Failover (a member killed)", ylog=False, ylim0=True)
fig.tight_layout()
fig.savefig(os.path.join(HERE, "viewchange.png"), dpi=90)
print("wrote", os.path.join(HERE, "traffic.png"), os.path.join(HERE, "viewchange.png"))
