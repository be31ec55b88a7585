#!/usr/bin/env python3
"""Draws loss curves from sophiagpt run logs (log.jsonl) into a PNG, with gnuplot.

usage: scripts/plot.py LOG [LOG ...] [-o OUT.png] [--ref SPEC ...] [options]

  LOG        a log.jsonl or a run directory holding one; append =LABEL to name the curve
             (default label: the run directory's name), e.g. runs/demo/adamw=AdamW
  --ref SPEC a reported value to overlay, e.g. from the paper:
               'LABEL=LOSS'                   a horizontal dashed line at LOSS
               'LABEL=STEP:LOSS,STEP:LOSS'    points (x in steps, or tokens with --x tokens)
  --x steps|tokens   x axis (tokens = step * batch.total_batch_tokens from the run's config.json)
  --smooth N         moving average of the train loss over N logged steps (default 1: raw)
  --no-train         only validation curves
  --ylim LO:HI, --logx, --title TEXT, --size WxH

Each log line is one JSON object: {"type":"train","step":N,"loss":..} for training steps and
{"type":"eval","step":N,"val_loss":..} for evaluations (other types are ignored). Train loss is
drawn thin, validation loss thick with points, one colour per run. Needs gnuplot with the pngcairo
terminal (Debian's gnuplot-nox, installed by scripts/setup.sh) and no Python packages.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def die(msg):
    print(f"plot: error: {msg}", file=sys.stderr)
    sys.exit(1)


def gp_str(s):
    """A gnuplot single-quoted string literal."""
    return "'" + s.replace("'", "''") + "'"


def load_log(spec):
    path, _, label = spec.partition("=")
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    if not os.path.isfile(path):
        die(f"{path}: no such log file")
    run_dir = os.path.dirname(os.path.abspath(path))
    label = label or os.path.basename(run_dir)
    train, val, bad = [], [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1  # e.g. the last line of a log still being written
                continue
            kind = rec.get("type")
            if kind == "train" and "loss" in rec:
                train.append((rec["step"], rec["loss"]))
            elif kind == "eval" and "val_loss" in rec:
                val.append((rec["step"], rec["val_loss"]))
    if bad:
        print(f"plot: {path}: skipped {bad} unreadable line(s)", file=sys.stderr)
    if not train and not val:
        die(f"{path}: no train or eval records")
    tokens_per_step = None
    cfg = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg):
        try:
            with open(cfg, encoding="utf-8") as f:
                tokens_per_step = json.load(f)["batch"]["total_batch_tokens"]
        except (KeyError, TypeError, json.JSONDecodeError):
            pass
    return {"path": path, "label": label, "train": train, "val": val, "tokens_per_step": tokens_per_step}


def parse_ref(spec):
    label, sep, rest = spec.rpartition("=")
    if not sep or not label:
        die(f"--ref '{spec}': expected LABEL=LOSS or LABEL=STEP:LOSS,...")
    try:
        if ":" not in rest:
            return {"label": label, "level": float(rest)}
        pts = []
        for p in rest.split(","):
            x, y = p.split(":")
            pts.append((float(x), float(y)))
        return {"label": label, "points": pts}
    except ValueError:
        die(f"--ref '{spec}': values must be numbers")


def moving_average(points, n):
    if n <= 1:
        return points
    out, acc = [], []
    for x, y in points:
        acc.append(y)
        if len(acc) > n:
            acc.pop(0)
        out.append((x, sum(acc) / len(acc)))
    return out


def main():
    ap = argparse.ArgumentParser(description="Loss curves from sophiagpt log.jsonl files (gnuplot PNG).")
    ap.add_argument("logs", nargs="+", metavar="LOG[=LABEL]")
    ap.add_argument("-o", "--output", default="loss.png")
    ap.add_argument("--ref", action="append", default=[], metavar="SPEC")
    ap.add_argument("--x", choices=["steps", "tokens"], default="steps")
    ap.add_argument("--smooth", type=int, default=1)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--ylim")
    ap.add_argument("--logx", action="store_true")
    ap.add_argument("--title", default="")
    ap.add_argument("--size", default="1000x600")
    a = ap.parse_args()

    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        die("gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)")
    runs = [load_log(s) for s in a.logs]
    refs = [parse_ref(s) for s in a.ref]
    try:
        w, h = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        die("--size must be WIDTHxHEIGHT")

    with tempfile.TemporaryDirectory() as tmp:
        plots = []

        def write(name, pts):
            p = os.path.join(tmp, name)
            with open(p, "w") as f:
                for x, y in pts:
                    f.write(f"{x} {y}\n")
            return p

        for i, r in enumerate(runs):
            scale = 1
            if a.x == "tokens":
                if not r["tokens_per_step"]:
                    die(f"{r['path']}: --x tokens needs batch.total_batch_tokens in the run's config.json")
                scale = r["tokens_per_step"]
            color = COLORS[i % len(COLORS)]
            if r["train"] and not a.no_train:
                pts = [(x * scale, y) for x, y in moving_average(r["train"], a.smooth)]
                faded = "#60" + color[1:]  # gnuplot #AARRGGBB: AA is the transparency
                plots.append(f"{gp_str(write(f'train{i}', pts))} using 1:2 with lines lw 1.2 lc rgb '{faded}' "
                             f"title {gp_str(r['label'] + ' train')} noenhanced")
            if r["val"]:
                pts = [(x * scale, y) for x, y in r["val"]]
                plots.append(f"{gp_str(write(f'val{i}', pts))} using 1:2 with linespoints lw 2.5 pt 7 ps 0.8 "
                             f"lc rgb '{color}' title {gp_str(r['label'] + ' val')} noenhanced")
        for j, ref in enumerate(refs):
            color = COLORS[(len(runs) + j) % len(COLORS)]
            if "level" in ref:
                plots.append(f"{ref['level']} with lines dt 2 lw 1.5 lc rgb '{color}' "
                             f"title {gp_str(ref['label'])} noenhanced")
            else:
                plots.append(f"{gp_str(write(f'ref{j}', ref['points']))} using 1:2 with linespoints dt 2 pt 5 "
                             f"lc rgb '{color}' title {gp_str(ref['label'])} noenhanced")
        if not plots:
            die("nothing to plot")
        script = [
            f"set terminal pngcairo size {w},{h} enhanced font 'Sans,11'",
            f"set output {gp_str(os.path.abspath(a.output))}",
            f"set title {gp_str(a.title)} noenhanced",
            f"set xlabel {gp_str('step' if a.x == 'steps' else 'tokens')}",
            "set ylabel 'loss (nats/token)'",
            "set grid",
            "set key top right box opaque",
        ]
        if a.logx:
            script.append("set logscale x")
        if a.ylim:
            lo, _, hi = a.ylim.partition(":")
            script.append(f"set yrange [{lo}:{hi}]")
        script.append("plot " + ", \\\n     ".join(plots))
        gp = os.path.join(tmp, "plot.gp")
        with open(gp, "w") as f:
            f.write("\n".join(script) + "\n")
        res = subprocess.run([gnuplot, gp], capture_output=True, text=True)
        if res.returncode != 0:
            die(f"gnuplot failed:\n{res.stderr}")
    print(f"plot: wrote {a.output}")


if __name__ == "__main__":
    main()
