#!/usr/bin/env python3
"""Per-kernel time from an Nsight Compute CSV (scripts/dev/profile_kernels.sh makes one).

usage: scripts/dev/ncu_summary.py FILE.csv [--top N]

FILE.csv is what `ncu --csv --metrics gpu__time_duration.sum ...` prints: one row per profiled
kernel launch (a graph's kernel nodes included), with at least the columns "Kernel Name",
"Metric Name", "Metric Unit" and "Metric Value" (lines before the header, such as ncu's own
"==PROF==" messages, are skipped). Sums gpu__time_duration by kernel name and prints a Markdown
table, longest total first: launches, total and mean microseconds, and the share of the summed
time; then the total. Kernel names are cut at the first '(' (arguments) so that template
instances stay apart but argument lists do not make the table unreadable.
Exit status: 0; 1 when the file has no duration rows; 2 for a bad command line.
"""
import csv
import sys

UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
         "second": 1e6, "s": 1e6}


def read_rows(lines):
    """The CSV rows after the header line (the first line whose first field is "ID")."""
    for i, line in enumerate(lines):
        if line.startswith('"ID"') or line.startswith("ID,"):
            return list(csv.DictReader(lines[i:]))
    return []


def summarize(rows):
    """{kernel name: [launches, total microseconds]} over the rows measuring gpu__time_duration."""
    out = {}
    for r in rows:
        if r.get("Metric Name", "").strip() != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "").strip()
        if unit not in UNITS:
            raise ValueError(f"unknown time unit '{unit}'")
        value = float(r["Metric Value"].replace(",", "")) * UNITS[unit]
        name = r["Kernel Name"].split("(")[0].strip()
        entry = out.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += value
    return out


def table(summary, top=0):
    """The Markdown table of summarize()'s result, longest total first (top > 0: only that many)."""
    total = sum(t for _, t in summary.values())
    items = sorted(summary.items(), key=lambda kv: (-kv[1][1], kv[0]))
    if top > 0:
        items = items[:top]
    lines = ["| kernel | launches | total us | mean us | share |", "|---|---:|---:|---:|---:|"]
    for name, (n, t) in items:
        lines.append(f"| {name} | {n} | {t:.1f} | {t / n:.2f} | {100.0 * t / total:.1f}% |")
    lines.append(f"| all kernels | {sum(n for n, _ in summary.values())} | {total:.1f} | | 100.0% |")
    return "\n".join(lines)


def main(argv):
    top, path = 0, None
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--top":
            if not args or not args[0].isdigit():
                print("ncu_summary: --top needs a number", file=sys.stderr)
                return 2
            top = int(args.pop(0))
        elif path is None and not a.startswith("-"):
            path = a
        else:
            print(f"ncu_summary: unexpected argument '{a}' (usage: ncu_summary.py FILE.csv [--top N])",
                  file=sys.stderr)
            return 2
    if path is None:
        print("ncu_summary: usage: ncu_summary.py FILE.csv [--top N]", file=sys.stderr)
        return 2
    try:
        with open(path, newline="") as f:
            summary = summarize(read_rows(f.read().splitlines()))
    except (OSError, ValueError, KeyError) as e:
        print(f"ncu_summary: {path}: {e}", file=sys.stderr)
        return 1
    if not summary:
        print(f"ncu_summary: {path}: no gpu__time_duration.sum rows", file=sys.stderr)
        return 1
    print(table(summary, top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
