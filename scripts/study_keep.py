#!/usr/bin/env python3
"""Keeps the study's finished runs the way docs/study/runs* hold them (scripts/study.sh keep).

usage: scripts/study_keep.py DEST [--runs DIR] [--every N]

For each run folder DIR/NAME that finished (it holds `done`, written by scripts/study.sh run) and is
not in DEST yet (DEST/NAME/done missing), writes DEST/NAME/config.json (a copy), DEST/NAME/done and
DEST/NAME/log.jsonl: the train records of every N-th step (default 20) and every other record
(evaluations, Hessian passes, the machine record, ...) whole, in order. In the machine record the
program's path in `command_line` becomes its file name (`/some/dir/sophiagpt train ...` ->
`sophiagpt train ...`): where the binary lay on the training host says nothing about the run.
Prints one line per run kept, with its final evaluation; exit 1 when DIR holds no run.
"""
import json
import os
import shutil
import sys


def thin(lines, every):
    """The kept lines of a log: train records at steps divisible by `every`, all other records; the
    machine record's program path shortened to its name. Lines that are not JSON are dropped."""
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("type") == "train" and rec.get("step", 0) % every != 0:
            continue
        cmd = rec.get("command_line")
        if rec.get("type") == "machine" and isinstance(cmd, str) and cmd:
            prog, sep, rest = cmd.partition(" ")
            rec["command_line"] = os.path.basename(prog) + sep + rest
            line = json.dumps(rec, separators=(",", ":"), sort_keys=True, ensure_ascii=False) + "\n"
        out.append(line if line.endswith("\n") else line + "\n")
    return out


def main(argv):
    args = list(argv)
    runs, every = "runs/study", 20
    if "--runs" in args:
        i = args.index("--runs")
        runs = args[i + 1]
        del args[i:i + 2]
    if "--every" in args:
        i = args.index("--every")
        try:
            every = int(args[i + 1])
        except (IndexError, ValueError):
            every = 0
        if every < 1:
            print("study_keep: --every needs a whole number of steps >= 1", file=sys.stderr)
            return 2
        del args[i:i + 2]
    if len(args) != 1 or args[0].startswith("--"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    dest = args[0]
    if not os.path.isdir(runs):
        print(f"study_keep: --runs: no run folder '{runs}'", file=sys.stderr)
        return 1
    kept = 0
    for name in sorted(os.listdir(runs)):
        src = os.path.join(runs, name)
        if not os.path.isfile(os.path.join(src, "done")) or os.path.isfile(os.path.join(dest, name, "done")):
            continue
        d = os.path.join(dest, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(src, "log.jsonl"), encoding="utf-8") as f:
            lines = thin(f, every)
        tmp = os.path.join(d, "log.jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, os.path.join(d, "log.jsonl"))
        shutil.copyfile(os.path.join(src, "config.json"), os.path.join(d, "config.json"))
        open(os.path.join(d, "done"), "w").close()  # last: a folder without it is not kept yet
        final = [r for r in map(json.loads, lines) if r.get("type") == "eval"]
        val = final[-1].get("val_loss") if final else None
        print(f"kept {name}: {len(lines)} records, final val_loss {val if val is not None else '-'}")
        kept += 1
    print(f"study_keep: {kept} run(s) kept in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
