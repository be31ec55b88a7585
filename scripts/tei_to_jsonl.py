#!/usr/bin/env python3
"""TEI XML texts (e.g. the Text Creation Partnership's ECCO-TCP) -> JSON Lines compressed with xz.

Usage:
    scripts/tei_to_jsonl.py --input DIR --out OUT_DIR [options]     # the *.xml files under DIR
    scripts/tei_to_jsonl.py --git-dir REPO --out OUT_DIR [options]  # the *.xml blobs of a git
                                                   # repository (bare or not) at --rev (default HEAD)
Options:
    --prefix NAME   parts are OUT_DIR/NAME-00.jsonl.xz, NAME-01.jsonl.xz, ... (default: corpus)
    --part-mb N     a part holds at most N MB (10^6 bytes) of uncompressed JSON Lines (default 100);
                    a document larger than that gets a part of its own
    --skip-bad      report a text that does not parse (or has no text) and go on; else: an error
    --overwrite     replace NAME-*.jsonl.xz and SHA256SUMS in a non-empty OUT_DIR

One line per text, {"id": ID, "text": TEXT}, ID the file name without .xml (TCP ids: K000123.000),
in sorted id order; xz preset 9 extreme, single-threaded: the same input gives the same bytes (with
the same liblzma). OUT_DIR/SHA256SUMS (`sha256sum -c` format) lists the parts; a summary (documents,
characters, bytes) is printed as one JSON line on stdout. Exit 0, or 2 for a bad input (named).

What is kept: the text of every <text> element (front matter such as title pages and prefaces,
body, back matter such as appendices and indexes). Dropped with their text: the header (teiHeader,
TCP's TEMPHEAD / IDG metadata, anything outside <text>), <note>, <figDesc>. Element names are
matched without namespace and case (TEI P5 and TCP's upper-case P4 alike). Paragraph-like elements
(p, head, div, sp, item, list, table rows, opener/closer, ...) are separated by a blank line, verse
lines (<l>) and <lb/> by a newline; <q>, <cell>, <bibl>, <stage> and <label> are a word boundary
(a space; between paragraphs, a paragraph of their own). The print's line ends inside a paragraph
become spaces, runs of whitespace one space. TCP's conventions: <gap DESC="illegible"> becomes its
DISP (e.g. "•" per letter) so words stay whole, other gaps (foreign script, duplicate pages)
nothing; U+2223 "∣" (a word broken across printed lines) is removed. Unicode is NFC-normalised.
"""
import argparse
import hashlib
import json
import lzma
import os
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET

SKIP = {"teiheader", "temphead", "idg", "note", "figdesc"}
BLOCK = {"p", "head", "div", "div0", "div1", "div2", "div3", "div4", "div5", "div6", "div7", "lg",
         "sp", "speaker", "list", "item", "table", "row", "opener", "closer", "salute", "signed", "dateline", "byline", "argument", "epigraph", "trailer", "postscript",
         "letter", "headnote", "tailnote", "figure", "front", "body", "back", "text", "group",
         "titlepage", "docimprint", "doctitle", "titlepart", "docauthor", "quote"}
LINE = {"l", "lb"}
SPACED = {"q", "cell", "bibl", "stage", "label"}  # inline, but a word boundary on either side
WS = re.compile(r"\s+")


class BadInput(Exception):
    pass


def local(tag):
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def text_of(xml_bytes, name):
    """The text of one TEI document (see the module comment), or BadInput naming `name`."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise BadInput(f"{name}: not well-formed XML: {e}") from None
    items = []  # strings, and ints for breaks: 1 newline, 2 blank line

    def walk(el, inside):
        tag = local(el.tag)
        if tag in SKIP:
            return
        inside = inside or tag == "text"
        brk = 2 if tag in BLOCK else 1 if tag in LINE else 0
        if inside:
            if brk:
                items.append(brk)
            elif tag in SPACED:
                items.append(" ")
            if tag == "gap" and (el.get("DESC") or "").lower() == "illegible":
                items.append(el.get("DISP") or "")
            if el.text and tag != "lb":
                items.append(el.text)
        for child in el:
            walk(child, inside)
            if inside and child.tail:
                items.append(child.tail)
        if inside and brk and tag != "lb":
            items.append(brk)
        elif inside and tag in SPACED:
            items.append(" ")

    walk(root, False)
    out, buf, pending = [], [], 0
    for it in items + [2]:
        if isinstance(it, str):
            buf.append(it)
            continue
        line = WS.sub(" ", "".join(buf).replace("\u2223", "")).strip()
        buf = []
        if line:
            out.append("\n" * pending if out else "")
            out.append(line)
            pending = 0
        pending = max(pending, it)
    return unicodedata.normalize("NFC", "".join(out))


def sources_from_dir(folder):
    if not os.path.isdir(folder):
        raise BadInput(f"{folder}: no such folder")
    found = {}
    for d, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(".xml"):
                found.setdefault(f[:-4], []).append(os.path.join(d, f))
    return found


def sources_from_git(git_dir, rev):
    r = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-r", "-z", rev],
                       capture_output=True)
    if r.returncode:
        raise BadInput(f"{git_dir}: not a git repository with {rev}: "
                       f"{r.stderr.decode(errors='replace').strip()}")
    found = {}
    for entry in r.stdout.split(b"\0"):
        if not entry:
            continue
        meta, path = entry.split(b"\t", 1)
        path = path.decode()
        _, kind, obj = meta.split()
        if kind == b"blob" and path.lower().endswith(".xml"):
            found.setdefault(os.path.basename(path)[:-4], []).append((path, obj.decode()))
    return found


def read_git_blobs(git_dir, objs):
    """Yields the content of each object id in objs, in order (one `git cat-file --batch`)."""
    p = subprocess.Popen(["git", "--git-dir", git_dir, "cat-file", "--batch"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for o in objs:
        p.stdin.write(o.encode() + b"\n")
        p.stdin.flush()
        header = p.stdout.readline().split()
        data = p.stdout.read(int(header[2]))
        p.stdout.read(1)
        yield data
    p.stdin.close()
    p.wait()


class PartWriter:
    def __init__(self, out_dir, prefix, part_bytes):
        self.out_dir, self.prefix, self.limit = out_dir, prefix, part_bytes
        self.parts, self.f, self.comp, self.size = [], None, None, 0

    def _close(self):
        if self.f:
            self.f.write(self.comp.flush())
            self.f.close()
            self.f = None

    def write(self, line):
        if self.f is None or (self.size and self.size + len(line) > self.limit):
            self._close()
            name = f"{self.prefix}-{len(self.parts):02d}.jsonl.xz"
            self.parts.append(name)
            self.f = open(os.path.join(self.out_dir, name), "wb")
            self.comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                                            preset=9 | lzma.PRESET_EXTREME)
            self.size = 0
        self.f.write(self.comp.compress(line))
        self.size += len(line)

    def close(self):
        self._close()
        return self.parts


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="folder of TEI .xml files (searched recursively)")
    src.add_argument("--git-dir", help="git repository (bare or .git) holding TEI .xml files")
    ap.add_argument("--rev", default="HEAD", help="the commit of --git-dir to read (default HEAD)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--prefix", default="corpus")
    ap.add_argument("--part-mb", type=float, default=100.0)
    ap.add_argument("--skip-bad", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    if a.part_mb <= 0:
        ap.error("--part-mb must be positive")
    try:
        found = sources_from_dir(a.input) if a.input else sources_from_git(a.git_dir, a.rev)
        dups = {k: v for k, v in found.items() if len(v) > 1}
        if dups:
            k = sorted(dups)[0]
            paths = [x[0] if isinstance(x, tuple) else x for x in dups[k]]
            raise BadInput(f"id {k} occurs {len(paths)} times: {', '.join(paths)}")
        if not found:
            raise BadInput(f"{a.input or a.git_dir}: no .xml files")
        os.makedirs(a.out, exist_ok=True)
        stale = [f for f in os.listdir(a.out)
                 if f == "SHA256SUMS" or (f.startswith(a.prefix + "-") and f.endswith(".jsonl.xz"))]
        if os.listdir(a.out) and not a.overwrite:
            raise BadInput(f"{a.out}: not empty (--overwrite replaces its {a.prefix}-*.jsonl.xz)")
        for f in stale:
            os.remove(os.path.join(a.out, f))
    except BadInput as e:
        print(f"tei_to_jsonl: error: {e}", file=sys.stderr)
        return 2

    ids = sorted(found)
    if a.input:
        names = [found[i][0] for i in ids]
        blobs = (open(p, "rb").read() for p in names)
    else:
        names = [found[i][0][0] for i in ids]
        blobs = read_git_blobs(a.git_dir, [found[i][0][1] for i in ids])
    w = PartWriter(a.out, a.prefix, int(a.part_mb * 1e6))
    docs = chars = jsonl_bytes = 0
    bad = []
    for doc_id, name, data in zip(ids, names, blobs):
        try:
            text = text_of(data, name)
            if not text:
                raise BadInput(f"{name}: no text")
        except BadInput as e:
            if not a.skip_bad:
                print(f"tei_to_jsonl: error: {e} (--skip-bad skips such texts)", file=sys.stderr)
                for p in w.close():  # no partial output
                    os.remove(os.path.join(a.out, p))
                return 2
            print(f"tei_to_jsonl: skipped: {e}", file=sys.stderr)
            bad.append(doc_id)
            continue
        line = (json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n").encode()
        w.write(line)
        docs, chars, jsonl_bytes = docs + 1, chars + len(text), jsonl_bytes + len(line)
    parts = w.close()
    sums, xz_bytes = [], 0
    for p in parts:
        with open(os.path.join(a.out, p), "rb") as f:
            data = f.read()
        xz_bytes += len(data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {p}\n")
    with open(os.path.join(a.out, "SHA256SUMS"), "w") as f:
        f.writelines(sums)
    print(json.dumps({"documents": docs, "characters": chars, "jsonl_bytes": jsonl_bytes,
                      "xz_bytes": xz_bytes, "parts": parts, "skipped": len(bad),
                      "skipped_ids": bad}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
