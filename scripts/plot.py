#!/usr/bin/env python3
"""Draws loss curves from sophiagpt run logs (log.jsonl) into a PNG, with gnuplot.

usage: scripts/plot.py LOG [LOG ...] [-o OUT.png] [--ref SPEC ...] [--paper-refs] [options]

  LOG        a log.jsonl or a run directory holding one; append =LABEL to name the curve
             (default label: the run directory's name), e.g. runs/demo/adamw=AdamW
  --ref SPEC a reported value to overlay, e.g. from the paper:
               'LABEL=LOSS'                   a horizontal dashed line at LOSS
               'LABEL=STEP:LOSS,STEP:LOSS'    points (x in the units of --x: steps, tokens or FLOPs)
  --paper-refs       mark the published GPT-2 125M OpenWebText validation losses (below)
  --x steps|tokens|compute   x axis:
      steps    the optimizer step
      tokens   step * batch.total_batch_tokens (from the run's config.json)
      compute  training FLOPs, from the run's config.json:
                 C(s) = 6 * N * D * (s + f_eff * floor(s / k))       (Sophia-G)
                 C(s) = 6 * N * D * s                                 (AdamW)
               N = parameters (n_layer * (12 d^2 + 2 d) + d + vocab_size * d + block_size * d,
                   plus 11 d per layer + d with model.bias; the tied embedding counted once),
               D = batch.total_batch_tokens, k = optimizer.hessian_interval,
               f_eff = floor(f * micro_batch_size) / micro_batch_size, f =
                   optimizer.hessian_batch_fraction: one GNB pass (a forward and a backward over
                   f_eff of a step's tokens, 6 N FLOPs per token like a training token) after
                   every step s with s % k == k-1. 6*N per token leaves out attention's
                   score/value products (~6 * n_layer * block_size * d per token, 2-4% at these sizes)
                   and the optimizer's own work.
  --list-paper-refs  print the reference values with their sources and exit
  --smooth N         moving average of the train loss over N logged steps (default 1: raw)
  --no-train         only validation curves
  --ylim LO:HI, --logx, --title TEXT, --size WxH

Each log line is one JSON object: {"type":"train","step":N,"loss":..} for training steps and
{"type":"eval","step":N,"val_loss":..} for evaluations (other types are ignored). Train loss is
drawn thin, validation loss thick with points, one colour per run. When a resumed run logged a
step twice, the last record of that step is kept. Needs gnuplot with the pngcairo terminal
(Debian's gnuplot-nox, installed by scripts/setup.sh) and no Python packages (matplotlib is not
used).

--paper-refs (GPT-2 125M on OpenWebText, validation loss; 491,520 tokens per step, so 100K steps
= 49.2B tokens; on the compute axis the 125M shape of configs/gpt2_125m_*.json, and for Sophia-G
k = 10, f = 1 as in configs/gpt2_125m_sophiag.json):
  paper   Liu et al. 2023, "Sophia", arXiv 2305.14342: at 100K steps AdamW 2.921, Sophia-G 2.895
  #31     github.com/Liuhong99/Sophia issue #31, a rerun of the official code with both optimizers
          tuned: AdamW 2.869, Sophia-G 2.876 (at 100K steps)
  #46     github.com/Liuhong99/Sophia issue #46: AdamW 2.863 at 200K steps, Sophia 2.897 at 100K
AdamW points are squares, Sophia-G points circles/triangles; each is labelled with its source.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

from runlog import read_log_records  # scripts/runlog.py, beside this file

# (optimizer, source label, steps, val loss): GPT-2 125M on OpenWebText (see the docstring).
PAPER_REFS = [
    ("adamw", "paper (Liu et al. 2023, arXiv 2305.14342)", 100_000, 2.921),
    ("sophiag", "paper (Liu et al. 2023, arXiv 2305.14342)", 100_000, 2.895),
    ("adamw", "rerun, both tuned (Liuhong99/Sophia issue #31)", 100_000, 2.869),
    ("sophiag", "rerun, both tuned (Liuhong99/Sophia issue #31)", 100_000, 2.876),
    ("adamw", "report (Liuhong99/Sophia issue #46)", 200_000, 2.863),
    ("sophiag", "report (Liuhong99/Sophia issue #46)", 100_000, 2.897),
]
PAPER_TOKENS_PER_STEP = 491_520  # 480 sequences of 1024 tokens, the paper's batch
PAPER_SHAPE = {"n_layer": 12, "n_embd": 768, "vocab_size": 50257, "block_size": 1024, "bias": False}
PAPER_SOPHIA_K, PAPER_SOPHIA_F = 10, 1.0
REF_POINT_TYPES = {"paper": (5, 7), "rerun": (4, 6), "report": (13, 9)}  # (AdamW, Sophia-G) gnuplot pt

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
          "#7f7f7f", "#bcbd22", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]


def die(msg):
    print(f"plot: error: {msg}", file=sys.stderr)
    sys.exit(1)


def gp_str(s):
    """A gnuplot single-quoted string literal."""
    return "'" + s.replace("'", "''") + "'"


def n_params(m):
    """Parameters of the GPT-2 shape m (a config's "model" object); the tied embedding counted once."""
    d, L = m["n_embd"], m["n_layer"]
    per_layer = 12 * d * d + 2 * d + (11 * d if m.get("bias") else 0)
    return L * per_layer + d + (d if m.get("bias") else 0) + m["vocab_size"] * d + m["block_size"] * d


def flops_at(step, n, tokens_per_step, k=None, f_eff=0.0):
    """Training FLOPs after `step` steps: 6 N D per step plus 6 N f_eff D per GNB pass (every k steps)."""
    gnb = (step // k) if k else 0
    return 6.0 * n * tokens_per_step * (step + f_eff * gnb)


def load_log(spec):
    path, _, label = spec.partition("=")
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    if not os.path.isfile(path):
        die(f"{path}: no such log file")
    run_dir = os.path.dirname(os.path.abspath(path))
    label = label or os.path.basename(run_dir)
    train, val = {}, {}
    for rec in read_log_records(path, "plot"):
        kind = rec.get("type")
        if kind == "train" and "loss" in rec:
            train[rec["step"]] = rec["loss"]  # a resumed run may log a step again: keep the last
        elif kind == "eval" and "val_loss" in rec:
            val[rec["step"]] = rec["val_loss"]
    train, val = sorted(train.items()), sorted(val.items())
    if not train and not val:
        die(f"{path}: no train or eval records")
    tokens_per_step, compute = None, None
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_path):
        try:
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, json.JSONDecodeError):
            cfg = {}
        try:
            tokens_per_step = cfg["batch"]["total_batch_tokens"]
        except (KeyError, TypeError):
            pass
        try:
            opt = cfg["optimizer"]
            gnb = opt.get("name", "sophiag") == "sophiag"
            k = opt.get("hessian_interval", 10) if gnb else None
            mb = cfg["batch"]["micro_batch_size"]
            f_eff = math.floor(opt.get("hessian_batch_fraction", 1.0) * mb) / mb if gnb else 0.0
            compute = {"n": n_params(cfg["model"]), "k": k, "f_eff": f_eff}
        except (KeyError, TypeError, ValueError):
            pass
    return {"path": path, "label": label, "train": train, "val": val, "tokens_per_step": tokens_per_step,
            "compute": compute}


def x_mapper(run, axis):
    """A function step -> x for the chosen axis, or a fatal error naming what the run lacks."""
    if axis == "steps":
        return lambda s: s
    if not run["tokens_per_step"]:
        die(f"{run['path']}: --x {axis} needs batch.total_batch_tokens in the run's config.json")
    d = run["tokens_per_step"]
    if axis == "tokens":
        return lambda s: s * d
    c = run["compute"]
    if not c:
        die(f"{run['path']}: --x compute needs the model shape, optimizer and batch in the run's config.json")
    return lambda s: flops_at(s, c["n"], d, c["k"], c["f_eff"])


def paper_ref_points(axis):
    """[(label, optimizer, source key, x, loss)] for --paper-refs on the chosen axis."""
    n = n_params(PAPER_SHAPE)
    out = []
    for opt, source, steps, loss in PAPER_REFS:
        if axis == "steps":
            x = steps
        elif axis == "tokens":
            x = steps * PAPER_TOKENS_PER_STEP
        else:
            k, f = (PAPER_SOPHIA_K, PAPER_SOPHIA_F) if opt == "sophiag" else (None, 0.0)
            x = flops_at(steps, n, PAPER_TOKENS_PER_STEP, k, f)
        name = "AdamW" if opt == "adamw" else ("Sophia" if "#46" in source else "Sophia-G")  # #46 says "Sophia"
        at = f"{steps // 1000}K steps"
        out.append((f"{name} {loss:.3f} at {at}: {source}", opt, source.split()[0].rstrip(","), x, loss))
    return out


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="*", metavar="LOG[=LABEL]")
    ap.add_argument("-o", "--output", default="loss.png")
    ap.add_argument("--ref", action="append", default=[], metavar="SPEC")
    ap.add_argument("--paper-refs", action="store_true",
                    help="mark the published GPT-2 125M OpenWebText val losses (paper, issues #31 and #46)")
    ap.add_argument("--list-paper-refs", action="store_true", help="print the --paper-refs values and exit")
    ap.add_argument("--x", choices=["steps", "tokens", "compute"], default="steps")
    ap.add_argument("--smooth", type=int, default=1)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--ylim")
    ap.add_argument("--logx", action="store_true")
    ap.add_argument("--title", default="")
    ap.add_argument("--size", default=None, help="WIDTHxHEIGHT (default 1000x600, 1100x800 with --paper-refs)")
    a = ap.parse_args()
    if a.list_paper_refs:
        for label, _, _, x, loss in paper_ref_points("steps"):
            print(label)
        return
    if not a.logs and not a.paper_refs and not a.ref:
        ap.error("give at least one LOG (or --paper-refs / --ref)")

    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        die("gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)")
    runs = [load_log(s) for s in a.logs]
    refs = [parse_ref(s) for s in a.ref]
    try:
        w, h = (int(v) for v in (a.size or ("1100x800" if a.paper_refs else "1000x600")).lower().split("x"))
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
            to_x = x_mapper(r, a.x)
            color = COLORS[i % len(COLORS)]
            if r["train"] and not a.no_train:
                pts = [(to_x(x), y) for x, y in moving_average(r["train"], a.smooth)]
                faded = "#60" + color[1:]  # gnuplot #AARRGGBB: AA is the transparency
                plots.append(f"{gp_str(write(f'train{i}', pts))} using 1:2 with lines lw 1.2 lc rgb '{faded}' "
                             f"title {gp_str(r['label'] + ' train')} noenhanced")
            if r["val"]:
                pts = [(to_x(x), y) for x, y in r["val"]]
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
        notes = []
        if a.paper_refs:
            ref_colors = {"adamw": "#d62728", "sophiag": "#1f77b4"}
            for j, (label, opt, src, x, loss) in enumerate(paper_ref_points(a.x)):
                pt = REF_POINT_TYPES[src][0 if opt == "adamw" else 1]
                plots.append(f"{gp_str(write(f'paper{j}', [(x, loss)]))} using 1:2 with points pt {pt} ps 1.6 "
                             f"lc rgb '{ref_colors[opt]}' title {gp_str(label)} noenhanced")
            notes.append("reference points: GPT-2 125M, OpenWebText val loss; paper = Liu et al. 2023 (arXiv "
                         "2305.14342); #31, #46 = github.com/Liuhong99/Sophia/issues/31, /46")
            if a.x == "tokens":
                notes.append("references placed at steps x 491,520 tokens")
            elif a.x == "compute":
                notes.append("references placed at 6*N*tokens, N = 124M shape, Sophia-G + GNB k=10, f=1")
        if not plots:
            die("nothing to plot")
        xlabel = {"steps": "step", "tokens": "tokens",
                  "compute": "training compute (FLOPs): 6 N tokens, GNB passes included"}[a.x]
        script = [
            f"set terminal pngcairo size {w},{h} enhanced font 'Sans,11'",
            f"set output {gp_str(os.path.abspath(a.output))}",
            f"set title {gp_str(a.title)} noenhanced",
            f"set xlabel {gp_str(xlabel)} noenhanced",
            "set ylabel 'loss (nats/token)'",
            "set grid",
            "set key below box font 'Sans,9' maxcols 2" if a.paper_refs else "set key top right box opaque",
        ]
        if a.x != "steps":
            script.append("set format x '%.1te%T'")
        if notes:  # under the title; the key goes below the plot
            script.append(f"set tmargin {3 + len(notes)}")
            for m, note in enumerate(notes):
                script.append(f"set label {m + 1} {gp_str(note)} at graph 0.5, graph 1, 0 center "
                              f"offset 0, char {0.8 + 1.2 * (len(notes) - 1 - m)} font 'Sans,9' "
                              "textcolor rgb '#444444' noenhanced")
            script.append(f"set title offset 0, char {1.2 * len(notes)}")
            script.append("set xlabel offset 0, char 0.3")
            script.append("set offsets graph 0.03, graph 0.03, 0, 0")  # keep edge points off the border
            script.append(f"set bmargin {len(plots) + 2}")  # room for the key below, one entry a line
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
