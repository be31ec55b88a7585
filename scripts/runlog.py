"""Reading a run's log.jsonl, shared by scripts/plot.py and scripts/study_table.py."""
import json
import sys


def read_log_records(path, prog):
    """The JSON records of a log.jsonl, in order. A line that is not complete JSON is skipped with a
    note on stderr naming it: the last line when the run is still writing it or was killed while
    writing it; a line inside the log when such a run was resumed (it appends after the torn line)."""
    recs, bad = [], []
    last = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            last = n
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad.append(n)
                continue
            if isinstance(rec, dict):
                recs.append(rec)
            else:
                bad.append(n)
    inner = [n for n in bad if n != last]
    if inner:
        shown = ", ".join(map(str, inner[:5])) + (", ..." if len(inner) > 5 else "")
        print(f"{prog}: note: {path}: skipped {len(inner)} line(s) that are not JSON (line {shown}: a run "
              f"killed while writing its log, then resumed)", file=sys.stderr)
    if last and last in bad:
        print(f"{prog}: note: {path}: skipped its last line ({last}), which is not complete JSON (a run "
              f"still writing it, or killed while writing it)", file=sys.stderr)
    return recs
