#!/usr/bin/env python3
"""Keeps the study's finished runs the way docs/study/runs* hold them (scripts/study.sh keep).

usage: scripts/study_keep.py DEST [--runs DIR] [--every N]

For each run folder DIR/NAME that finished (it holds `done`, written by scripts/study.sh run) and is
not in DEST yet (DEST/NAME/done missing), writes DEST/NAME/config.json (a copy), DEST/NAME/done and
DEST/NAME/log.jsonl: the train records of every N-th step (default 20) and every other record
(evaluations, Hessian passes, the machine record, ...) whole, in order. In the machine record the
program's path in `command_line` becomes its file name (`/some/dir/sophiagpt train ...` ->
`sophiagpt train ...`): where the binary lay on the training host says nothing about the run.
Prints one line per run kept, with its final evaluation. Exit status: 0; 1 when DIR is missing
or a finished run in it lacks its log.jsonl or config.json (named; the other runs are still kept);
2 for a bad command line.
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


def take(args, name):
    """Removes `name VALUE` from args and returns VALUE (None when absent, "" when VALUE is missing)."""
    if name not in args:
        return None
    i = args.index(name)
    value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
    del args[i:i + (2 if value else 1)]
    return value


def main(argv):
    args = list(argv)
    runs, every = take(args, "--runs"), take(args, "--every")
    if runs == "":
        print("study_keep: --runs needs a folder", file=sys.stderr)
        return 2
    runs = runs or "runs/study"
    try:
        every = 20 if every is None else int(every)
    except ValueError:
        every = 0
    if every < 1:
        print("study_keep: --every needs a whole number of steps >= 1", file=sys.stderr)
        return 2
    if len(args) != 1 or args[0].startswith("--"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    dest = args[0]
    if not os.path.isdir(runs):
        print(f"study_keep: --runs: no run folder '{runs}'", file=sys.stderr)
        return 1
    kept, damaged = 0, 0
    for name in sorted(os.listdir(runs)):
        src = os.path.join(runs, name)
        if not os.path.isfile(os.path.join(src, "done")) or os.path.isfile(os.path.join(dest, name, "done")):
            continue
        missing = [f for f in ("log.jsonl", "config.json") if not os.path.isfile(os.path.join(src, f))]
        if missing:
            print(f"study_keep: {src}: finished but without {' and '.join(missing)}; not kept", file=sys.stderr)
            damaged += 1
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
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
