#!/usr/bin/env python3
"""Side-by-side table of scripts/dev/official_compare.sh's runs: validation loss, train loss, the L1
norm of Sophia-G's h and the win rate (fraction of coordinates not clipped), by step.

usage: scripts/dev/official_compare.py OUT_DIR [--plot PNG [--runs NAME,NAME,...] [plot.py options]]

--plot draws the validation losses of the runs (all, or --runs) into PNG with scripts/plot.py
(gnuplot), after writing each run's evaluations as a sophiagpt-style log.jsonl in a temporary folder.

The official trainer's numbers are what it logs itself (its wandb.log calls, recorded by
scripts/dev/official_shim/wandb.py): "val/loss", "train/loss", "hessian_norm" (sum of |h| after the
last GNB pass's EMA update) and "train/win_rate" (|m| < rho*bs*h after that update). sophiagpt's
are from log.jsonl: eval val_loss, train loss, and from each GNB step's record h_l1 and win_rate,
reduced inside that step's update, i.e. before its EMA update (docs/decisions.md, "Win rate")."""
import json
import math
import os
import subprocess
import sys
import tempfile

out = sys.argv[1]
plot_args = sys.argv[2:]
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
            try:
                r = json.loads(line)
            except ValueError:  # a line a killed run left incomplete
                print(f"note: {p}/log.jsonl: skipped a line that is not complete JSON", file=sys.stderr)
                continue
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
        if s > max(st for st in rows if n in rows[st]):  # the run had ended
            cells.append("-")
            continue
        d = rows[s].get(n, {})
        l = last.get(n, {})
        cells.append(" / ".join(f"{d.get(k, l.get(k, float('nan'))):.4g}" for k in ("val", "loss", "h_l1", "win")))
    print(f"| {s} | " + " | ".join(cells) + " |")

if plot_args:
    if plot_args[0] != "--plot" or len(plot_args) < 2:
        sys.exit("official_compare.py: expected --plot PNG after OUT_DIR")
    png, rest = plot_args[1], plot_args[2:]
    chosen = names
    if rest[:1] == ["--runs"]:
        if len(rest) < 2:
            sys.exit("official_compare.py: --runs needs a comma-separated list of run names")
        chosen = rest[1].split(",")
        rest = rest[2:]
        missing = [n for n in chosen if n not in names]
        if missing:
            sys.exit(f"official_compare.py: no run named {', '.join(missing)} in {out}")
    with tempfile.TemporaryDirectory() as tmp:
        logs = []
        for n in chosen:
            os.makedirs(os.path.join(tmp, n))
            with open(os.path.join(tmp, n, "log.jsonl"), "w") as f:
                for st in sorted(rows):
                    v = rows[st].get(n, {}).get("val")
                    if v is not None:
                        f.write(json.dumps({"type": "eval", "step": st, "val_loss": v}) + "\n")
            logs.append(os.path.join(tmp, n) + "=" + n)
        plot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plot.py")
        sys.exit(subprocess.call([sys.executable, plot, *logs, "-o", png, "--no-train", *rest]))
