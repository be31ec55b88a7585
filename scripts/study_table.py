#!/usr/bin/env python3
"""Collects the AdamW vs Sophia-G study (docs/study.md) from its run directories.

usage: scripts/study_table.py [--runs DIR]            markdown tables on stdout
       scripts/study_table.py [--runs DIR] --next     the second phase's plan on stdout
       scripts/study_table.py [--runs DIR] --sweep-dat FILE   lr sweep data for gnuplot
       scripts/study_table.py [--runs DIR] --best-dirs        the best settings' runs, for plot.py
       scripts/study_table.py [--runs DIR] --evals 100,300    the runs table with the validation
                                          loss at those steps too
       scripts/study_table.py [--runs DIR] --only PREFIX      only the runs whose folder name starts
                                          with PREFIX (e.g. h5_: one horizon of a folder of several)

A run directory holds config.json and log.jsonl (sophiagpt train) and `done` once it finished.
A setting is (optimizer, lr, rho, warmup); its seeds are runs that differ only in `seed`. The
optimizer is its name with "+hbc" for h bias-corrected (optimizer.hessian_bias_correction), a variant
of its own: it never joins the plain optimizer's sweep, best setting or AdamW pairing.
The sweep uses seed 1337; the best setting of each optimizer (lowest final validation loss among
finished runs) gets two more seeds and a warmup variant in the second phase, once runs on both sides
of its learning rate were worse (until then --next extends the sweep by one learning rate).

Measures (docs/study.md says how to read them):
  final val     the evaluation after the last step (mean and sample standard deviation over seeds)
  tokens ratio  L* = the highest final val loss among the runs compared (a loss every run reaches);
                T_X(L*) = tokens at which run X's validation curve first reaches L* (linear
                interpolation between evaluations); ratio = mean T_AdamW(L*) / mean T_Sophia(L*),
                with the range over every (AdamW seed, Sophia seed) pair. > 1: Sophia-G needs fewer
                tokens. Note: a point inside a cosine schedule is not the end of a shorter run.
  compute ratio the same with FLOPs: Sophia-G's tokens count (1 + f_eff / k) times (the GNB pass),
                Sophia-H's (1 + (8/3) f_eff / k) times (its Hessian-vector product costs about 8/3
                of a forward and backward's matmul FLOPs, src/cuda/hvp_cuda.h).
Sophia-H, where it ran, gets the same tokens and compute section against AdamW as Sophia-G.
"""
import json
import math
import os
import re
import statistics
import sys

from runlog import read_log_records  # scripts/runlog.py, beside this file

PHASE2_SEEDS = (1338, 1339)
BASE_SEED = 1337
HVP_COST = 8 / 3  # a Hessian-vector product's matmul FLOPs over a forward and backward's


def load(d):
    try:
        cfg = json.load(open(os.path.join(d, "config.json")))
        recs = read_log_records(os.path.join(d, "log.jsonl"), "study_table")
    except (OSError, ValueError):
        return None
    o = cfg["optimizer"]
    evals = {}
    for r in recs:
        if r.get("type") == "eval" and r.get("val_loss") is not None:
            evals[r["step"]] = r["val_loss"]
    skips = sum(1 for r in recs if r.get("type") == "skip")
    gnb = [r for r in recs if r.get("type") == "gnb"]
    max_steps = cfg["schedule"]["max_steps"]
    done = os.path.exists(os.path.join(d, "done"))
    ev = sorted(evals.items())
    final = evals.get(max_steps)
    bad = any(v is None or not math.isfinite(v) for _, v in ev) or skips > 0
    B = cfg["batch"]["micro_batch_size"]
    f = o.get("hessian_batch_fraction", 1.0)
    f_eff = max(1, math.floor(f * B)) / B
    opt = o["name"] + ("+hbc" if o.get("hessian_bias_correction") else "")
    return {
        "name": os.path.basename(d), "opt": opt, "lr": o["lr"],
        "rho": o["rho"] if o["name"] == "sophiag" else None,
        "warmup": cfg["schedule"]["warmup_iters"], "seed": cfg["seed"], "done": done,
        "final": final, "evals": ev, "tokens": cfg["batch"]["total_batch_tokens"],
        "max_steps": max_steps, "diverged": bad or (done and final is None),
        "skips": skips, "gnb": gnb,
        "flop_factor": 1 + f_eff / o["hessian_interval"] if o["name"] == "sophiag" else
                       1 + HVP_COST * f_eff / o["hessian_interval"] if o["name"] == "sophiah" else 1.0,
        "line": None,
        "model": f"{cfg['model']['n_layer']} x {cfg['model']['n_embd']}, "
                 f"{max_steps * cfg['batch']['total_batch_tokens'] / 1e6:.1f}M tokens",
    }


def label(opt):
    """AdamW, Sophia-G, Sophia-H, Lion; "+hbc": h bias-corrected."""
    name, _, variant = opt.partition("+")
    base = {"adamw": "AdamW", "sophiag": "Sophia-G", "sophiah": "Sophia-H", "lion": "Lion"}.get(name, name)
    return base + (" (h bias-corrected)" if variant == "hbc" else "")


def setting(r):
    return (r["opt"], r["lr"], r["rho"], r["warmup"])


def sweep_edge(base, b):
    """The learning rates tried at b's optimizer, rho and warmup (finished or diverged runs of the
    sweep seed), and where b's lies: None inside them, else "highest", "lowest" or "only". A best
    learning rate is only known to be best when runs on both sides of it were worse (or diverged)."""
    lrs = sorted({r["lr"] for r in base if r["opt"] == b["opt"] and r["rho"] == b["rho"]
                  and r["warmup"] == b["warmup"] and (r["done"] or r["diverged"])})
    if len(lrs) < 2:
        return lrs, "only"
    return lrs, "highest" if b["lr"] == lrs[-1] else "lowest" if b["lr"] == lrs[0] else None


def tokens_to(r, target):
    """Tokens at which the run's validation curve first reaches `target` (None: never)."""
    prev = None
    for step, v in r["evals"]:
        if v <= target:
            if prev is None:
                return step * r["tokens"]
            s0, v0 = prev
            t = s0 + (step - s0) * (v0 - target) / (v0 - v) if v0 != v else step
            return t * r["tokens"]
        prev = (step, v)
    return None


def fmt(x, p=4):
    return "-" if x is None else f"{x:.{p}f}"


def die(msg):
    sys.exit(f"study_table.py: {msg}")


def option(args, name):
    """The value after `name` in args, None when absent; a clear error when it is missing."""
    if name not in args:
        return None
    i = args.index(name) + 1
    if i >= len(args) or args[i].startswith("--"):
        die(f"{name} needs a value")
    return args[i]


def pairing(A, S, name, title, passes):
    """Tokens and compute for AdamW's best setting (runs A) and another optimizer's (runs S, `name`)
    to reach the same loss L*, the highest final loss among them."""
    la = statistics.mean(r["final"] for r in A)
    ls = statistics.mean(r["final"] for r in S)
    target = max(r["final"] for r in A + S)
    print(f"\n## Tokens and compute to the same loss{title}\n\nL* = {target:.4f} (the highest final loss of these "
          f"runs, so every run reaches it; mean final losses: AdamW {la:.4f}, {name} {ls:.4f}; difference "
          f"{name} - AdamW = {ls - la:+.4f})\n")
    ta = [tokens_to(r, target) for r in A]
    ts = [tokens_to(r, target) for r in S]
    if not all(t is not None for t in ta + ts):
        print("some run never reached L* (see the runs table)")
        return
    ratios = [a / s for a in ta for s in ts]
    fa, fs_ = A[0]["flop_factor"], S[0]["flop_factor"]
    cratios = [a * fa / (s * fs_) for a in ta for s in ts]
    print(f"| measure | mean | range over seed pairs |\n|---|---|---|")
    print(f"| tokens to L*: AdamW / {name} | {statistics.mean(ta) / statistics.mean(ts):.3f} | "
          f"{min(ratios):.3f} - {max(ratios):.3f} |")
    print(f"| compute to L* ({passes} counted, x{fs_:.3f} for {name}) | "
          f"{statistics.mean(ta) * fa / (statistics.mean(ts) * fs_):.3f} | {min(cratios):.3f} - {max(cratios):.3f} |")


def main():
    args = sys.argv[1:]
    known = {"--runs", "--sweep-dat", "--evals", "--next", "--best-dirs", "--only"}
    for a in args:
        if a.startswith("--") and a not in known:
            die(f"unknown option '{a}' (see the usage at the top of this file)")
    # --evals S1,S2,...: the runs table gives the validation loss at those steps as well
    evals_opt = option(args, "--evals")
    try:
        at = [int(x) for x in evals_opt.split(",")] if evals_opt else []
    except ValueError:
        die(f"--evals: '{evals_opt}' is not a comma-separated list of steps, e.g. 100,300,500")
    runs_dir = option(args, "--runs") or "runs/study"
    if not os.path.isdir(runs_dir):
        die(f"--runs: no run folder '{runs_dir}'")
    only = option(args, "--only") or ""
    runs = [r for r in (load(os.path.join(runs_dir, n)) for n in sorted(os.listdir(runs_dir))
                        if os.path.isdir(os.path.join(runs_dir, n)) and n.startswith(only)) if r]
    if not runs:
        die(f"no run in '{runs_dir}'" + (f" whose name starts with '{only}'" if only else ""))
    base = [r for r in runs if r["seed"] == BASE_SEED]
    best = {}
    for r in base:
        if not r["done"] or r["diverged"] or r["final"] is None:
            continue
        # the sweep's own warmup: the most common one (the warmup variant is a separate check)
        if r["opt"] not in best or r["final"] < best[r["opt"]]["final"]:
            best[r["opt"]] = r
    warmups = statistics.multimode([r["warmup"] for r in base]) if base else []
    sweep_warmup = warmups[0] if warmups else None
    for o in list(best):
        cands = [r for r in base if r["opt"] == o and r["warmup"] == sweep_warmup and r["done"]
                 and not r["diverged"] and r["final"] is not None]
        if cands:
            best[o] = min(cands, key=lambda r: r["final"])

    if "--sweep-dat" in args:
        out = open(option(args, "--sweep-dat"), "w")
        models = sorted({r["model"] for r in base if r["warmup"] == sweep_warmup})
        out.write(f"# model: {' / '.join(models)}\n")
        out.write("# optimizer rho lr final_val (nan: diverged or unfinished)\n")
        for r in sorted(base, key=lambda r: (r["opt"], r["rho"] or 0, r["lr"])):
            if r["warmup"] != sweep_warmup:
                continue
            v = r["final"] if r["done"] and not r["diverged"] and r["final"] is not None else float("nan")
            out.write(f"{r['opt']} {r['rho'] if r['rho'] is not None else 0} {r['lr']} {v}\n")
        return

    if "--best-dirs" in args:  # the runs of each optimizer's best setting, LOG=LABEL for plot.py
        for o, b in sorted(best.items()):
            for r in runs:
                if setting(r) == setting(b):
                    print(f"{os.path.join(runs_dir, r['name'])}={label(o)} "
                          f"lr {r['lr']:g}{' rho ' + str(r['rho']) if r['rho'] else ''} seed {r['seed']}")
        return

    if "--next" in args:
        print("# second phase: generated by scripts/study_table.py --next from the sweep")
        for o, r in sorted(best.items()):
            # the best run's own resolved config (any model size or recipe), its setting spelled out
            cfg = os.path.join(runs_dir, r["name"], "config.json")
            rho = f" optimizer.rho={r['rho']}" if r["rho"] is not None else ""
            lrs, end = sweep_edge(base, r)
            if end:
                # not bracketed yet: one more learning rate beyond the edge, at the sweep's own step
                # (2 with a single one), instead of seeds of a setting that may not be the best
                step = 2.0 if end == "only" else lrs[1] / lrs[0] if end == "lowest" else lrs[-1] / lrs[-2]
                print(f"# {o}: lr {r['lr']:g} is the {end} learning rate tried; the sweep goes on first")
                stem = re.sub(r"_lr[^_]*$", "", r["name"])
                for lr in ([r["lr"] * step] if end != "lowest" else []) + ([r["lr"] / step] if end != "highest" else []):
                    lr = float(f"{lr:.4g}")
                    print(f"{stem}_lr{lr:g} {cfg} optimizer.lr={lr:g} optimizer.min_lr={lr / 10:g}{rho}")
                continue
            common = f"optimizer.lr={r['lr']} optimizer.min_lr={r['lr'] / 10:g}{rho}"
            tag = r["name"]
            w2 = 300 if r["warmup"] != 300 else 100
            for s in PHASE2_SEEDS:
                print(f"{tag}_seed{s} {cfg} {common} seed={s}")
            print(f"{tag}_warmup{w2} {cfg} {common} schedule.warmup_iters={w2}")
        return

    print(f"## Runs ({len(runs)} in {runs_dir})\n")
    extra = "".join(f" val @{s} |" for s in at)
    print(f"| run | optimizer | lr | rho | warmup | seed |{extra} final val | best val | status |")
    print("|---|---|---|---|---|---|" + "---|" * len(at) + "---|---|---|")
    for r in sorted(runs, key=lambda r: (r["opt"], r["rho"] or 0, r["lr"], r["warmup"], r["seed"])):
        vals = [v for _, v in r["evals"] if v is not None and math.isfinite(v)]
        status = ("diverged" if r["diverged"] else "done") if r["done"] else \
            ("diverged (stopped)" if r["diverged"] else "unfinished")
        ev = dict(r["evals"])
        cells = "".join(f" {fmt(ev.get(s), 3)} |" for s in at)
        print(f"| {r['name']} | {r['opt']} | {r['lr']:g} | {fmt(r['rho'], 3) if r['rho'] else '-'} | "
              f"{r['warmup']} | {r['seed']} |{cells} {fmt(r['final'])} | {fmt(min(vals) if vals else None)} | {status} |")

    print("\n## Best setting of each optimizer, over seeds\n")
    print("| optimizer | lr | rho | warmup | seeds | final val mean | std | min | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups = {}
    for o, b in best.items():
        g = [r for r in runs if setting(r) == setting(b) and r["done"] and not r["diverged"] and r["final"] is not None]
        groups[o] = g
        fs = [r["final"] for r in g]
        sd = statistics.stdev(fs) if len(fs) > 1 else None
        print(f"| {o} | {b['lr']:g} | {fmt(b['rho'], 3) if b['rho'] else '-'} | {b['warmup']} | {len(fs)} | "
              f"{fmt(statistics.mean(fs))} | {fmt(sd)} | {fmt(min(fs))} | {fmt(max(fs))} |")
    for o, b in sorted(best.items()):
        lrs, end = sweep_edge(base, b)
        if end:
            more = {"highest": "a higher", "lowest": "a lower"}.get(end, "another")
            print(f"\nAt the edge of its sweep: {o} lr {b['lr']:g} is the {end} of {len(lrs)} learning rate(s) "
                  f"tried; {more} one may be better.")

    for o, title, passes in (("sophiag", "", "GNB"), ("sophiah", ": Sophia-H", "Hutchinson passes")):
        if groups.get("adamw") and groups.get(o):
            pairing(groups["adamw"], groups[o], label(o), title, passes)

    div = [r for r in runs if r["diverged"]]
    print(f"\n## Divergences\n\n{len(div)} run(s)" + (":" if div else "."))
    for r in div:
        print(f"- {r['name']}: {r['opt']} lr {r['lr']:g}" + (f" rho {r['rho']}" if r["rho"] else "") +
              f", {r['skips']} skipped step(s), evaluations {[(s, round(v, 3) if v is not None else None) for s, v in r['evals']]}")

    if "sophiag" in groups and groups["sophiag"]:
        print("\n## Sophia-G's clipping over training (best setting, seed 1337)\n")
        b = best["sophiag"]
        g = b["gnb"]
        if g:
            n = len(g)
            print("| part of training | GNB passes | mean win rate | mean h_l1 | mean GNB grad norm |\n|---|---|---|---|---|")
            for lo, hi, part_name in ((0, n // 5, "first 20%"), (2 * n // 5, 3 * n // 5, "middle 20%"), (n - n // 5, n, "last 20%")):
                part = g[lo:hi] or g[lo:lo + 1]
                print(f"| {part_name} | {len(part)} | {statistics.mean(x['win_rate'] for x in part):.4f} | "
                      f"{statistics.mean(x['h_l1'] for x in part):.4g} | "
                      f"{statistics.mean(x['gnb_grad_norm'] for x in part):.4g} |")


if __name__ == "__main__":
    main()
