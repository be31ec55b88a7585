#!/usr/bin/env python3
"""Side-by-side table of scripts/official_compare.sh's runs: validation loss, train loss, the L1
norm of Sophia-G's h and the win rate (fraction of coordinates not clipped), by step.

usage: scripts/official_compare.py OUT_DIR

The official trainer's numbers are what it logs itself (its wandb.log calls, recorded by
scripts/official_shim/wandb.py): "val/loss", "train/loss", "hessian_norm" (sum of |h| after the
last GNB pass's EMA update) and "train/win_rate" (|m| < rho*bs*h after that update). sophiagpt's
are from log.jsonl: eval val_loss, train loss, and from each GNB step's record h_l1 and win_rate,
reduced inside that step's update, i.e. before its EMA update (docs/decisions.md, "Win rate")."""
import json
import math
import os
import sys

out = sys.argv[1]
rows = {}
names = []


def put(name, step, key, v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        v = float("nan")
    rows.setdefault(step, {}).setdefault(name, {})[key] = v


for f in sorted(os.listdir(out)):
    p = os.path.join(out, f)
    if f.startswith("official_") and f.endswith(".jsonl"):
        name = f[:-6]
        names.append(name)
        for line in open(p):
            r = json.loads(line)
            if "_step" not in r:
                continue
            s = r["_step"]
            if "val/loss" in r:
                put(name, s, "val", r["val/loss"])
            if "train/loss" in r:
                put(name, s, "loss", r["train/loss"])
            if "hessian_norm" in r:
                put(name, s, "h_l1", r["hessian_norm"])
            if "train/win_rate" in r:
                put(name, s, "win", r["train/win_rate"])
    elif f.startswith("ours_") and os.path.isfile(os.path.join(p, "log.jsonl")):
        names.append(f)
        for line in open(os.path.join(p, "log.jsonl")):
            r = json.loads(line)
            t, s = r.get("type"), r.get("step")
            if t == "eval":
                put(f, s, "val", r["val_loss"])
            elif t == "train":
                put(f, s, "loss", r["loss"])
            elif t == "skip":
                put(f, s, "loss", float("nan"))
            elif t == "gnb":
                put(f, s, "h_l1", r["h_l1"])
                put(f, s, "win", r["win_rate"])

steps = sorted(s for s in rows if s % 50 == 0 or s % 10 == 9)
print("| step | " + " | ".join(f"{n} val / loss / h_l1 / win" for n in names) + " |")
print("|---|" + "---|" * len(names))
last = {}
for s in sorted(rows):
    for n in names:
        for k, v in rows[s].get(n, {}).items():
            last.setdefault(n, {})[k] = v
    if s % 50 != 0 and s != max(rows):
        continue
    cells = []
    for n in names:
        d = rows[s].get(n, {})
        l = last.get(n, {})
        cells.append(" / ".join(f"{d.get(k, l.get(k, float('nan'))):.4g}" for k in ("val", "loss", "h_l1", "win")))
    print(f"| {s} | " + " | ".join(cells) + " |")
