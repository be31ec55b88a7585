"""Tests of scripts/tei_to_jsonl.py (TEI XML -> JSON Lines .xz parts), on small hand-written TEI
texts written into a temporary folder. Run by ctest as `scripts_tests`:
    python3 -m unittest discover -s tests/scripts -v

The expected texts are written out by hand from the fixtures' markup and the rules in the script's
header (notes and header dropped, blank line between paragraphs, newline between verse lines).
"""
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "tei_to_jsonl.py")

# TEI P5 (namespaced, lower-case names), entities, a combining accent, TCP's broken-word bar.
P5 = """<?xml version="1.0" encoding="UTF-8"?>
<TEI xmlns="http://www.tei-c.org/ns/1.0">
<teiHeader><fileDesc><titleStmt><title>HEADER TITLE</title></titleStmt></fileDesc></teiHeader>
<text>
<front><titlePage><p>THE
   TITLE</p></titlePage></front>
<body>
<div type="chapter"><head>CHAP. I.</head>
<p>First   paragraph, with a note<note place="foot">A NOTE TEXT</note> in the
middle &amp; an ampersand, &lt;angles&gt;, a long &#x17F; and e&#x301;.</p>
<p>A word con\u2223tinued.</p>
<lg><l>Line one,</l>
<l>line two.</l></lg>
<p>Before<lb/>after the break.</p>
</div></body>
<back><div><p>The END.</p></div></back>
</text></TEI>
"""
P5_TEXT = ("THE TITLE\n\nCHAP. I.\n\n"
           "First paragraph, with a note in the middle & an ampersand, <angles>, a long \u017f and "
           "\u00e9.\n\nA word continued.\n\nLine one,\nline two.\n\nBefore\nafter the break.\n\n"
           "The END.")

# TCP's own upper-case format (ECCO-TCP), with its header, a page break, gaps, a quotation, a
# speaker and a table.
TCP = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE ETS SYSTEM "http://www.lib.umich.edu/tcp/docs/code/eebo2prf.xml.dtd">
<ETS><TEMPHEAD><REVDESCR><CHANGE><ITEM>REVISION NOTE</ITEM></CHANGE></REVDESCR></TEMPHEAD>
<EEBO><IDG ID="K000002.000"><STC>STC NUMBER</STC></IDG>
<TEXT LANG="eng"><BODY><DIV1 TYPE="text"><PB REF="1"/>
<P>Some <HI>rea</HI>l text, w<GAP DESC="illegible" EXTENT="1 letter" DISP="\u2022"/>rds<NOTE N="*"
PLACE="foot">FOOT NOTE</NOTE> here;<Q>a quote</Q>then <GAP DESC="foreign"
DISP="\u3008 in non-Latin alphabet \u3009"/>Greek.</P>
<SP><SPEAKER>HORATIA.</SPEAKER><P>Speak,<STAGE>(aside)</STAGE>then go.</P></SP>
<STAGE>Exit.</STAGE>
<TABLE><ROW><CELL>a</CELL><CELL>b</CELL></ROW></TABLE>
</DIV1></BODY></TEXT></EEBO></ETS>
"""
TCP_TEXT = ("Some real text, w\u2022rds here; a quote then Greek.\n\nHORATIA.\n\n"
            "Speak, (aside) then go.\n\nExit.\n\na b")

BAD = '<?xml version="1.0"?>\n<TEI><text><body><p>unclosed &; entity</p></body></text></TEI>\n'


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def read_parts(out):
    """{part name: [documents]} of every .jsonl.xz in out."""
    parts = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".jsonl.xz"):
            with lzma.open(os.path.join(out, name), "rt", encoding="utf-8") as f:
                parts[name] = [json.loads(line) for line in f]
    return parts


class TeiToJsonl(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.src = os.path.join(self.tmp, "src")
        os.makedirs(os.path.join(self.src, "sub"))
        self.write("sub/K000001.000.xml", P5)
        self.write("K000002.000.xml", TCP)
        self.write("README.txt", "not a text")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def write(self, rel, content):
        with open(os.path.join(self.src, rel), "w", encoding="utf-8") as f:
            f.write(content)

    def extract(self, out, *extra, src=None):
        r = run("--input", src or self.src, "--out", os.path.join(self.tmp, out), *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout), os.path.join(self.tmp, out)

    def test_texts(self):
        summary, out = self.extract("out", "--prefix", "t")
        docs = read_parts(out)["t-00.jsonl.xz"]
        self.assertEqual([d["id"] for d in docs], ["K000001.000", "K000002.000"])  # sorted ids
        self.assertEqual(docs[0]["text"], P5_TEXT)
        self.assertEqual(docs[1]["text"], TCP_TEXT)
        for d in docs:
            for dropped in ("NOTE", "HEADER", "REVISION", "STC", "non-Latin", "\u2223"):
                self.assertNotIn(dropped, d["text"])
        self.assertEqual(summary["documents"], 2)
        self.assertEqual(summary["characters"], len(P5_TEXT) + len(TCP_TEXT))
        self.assertEqual(summary["xz_bytes"], os.path.getsize(os.path.join(out, "t-00.jsonl.xz")))
        self.assertEqual(summary["skipped"], 0)

    def test_deterministic_and_manifest(self):
        _, a = self.extract("a", "--part-mb", "0.0001")  # 100 bytes: one document per part
        _, b = self.extract("b", "--part-mb", "0.0001")
        names = sorted(os.listdir(a))
        self.assertEqual(names, ["SHA256SUMS", "corpus-00.jsonl.xz", "corpus-01.jsonl.xz"])
        self.assertEqual(names, sorted(os.listdir(b)))
        for n in names:
            with open(os.path.join(a, n), "rb") as fa, open(os.path.join(b, n), "rb") as fb:
                self.assertEqual(fa.read(), fb.read(), n)
        with open(os.path.join(a, "SHA256SUMS")) as f:
            lines = f.read().splitlines()
        expect = []
        for n in names[1:]:
            with open(os.path.join(a, n), "rb") as f:
                expect.append(f"{hashlib.sha256(f.read()).hexdigest()}  {n}")
        self.assertEqual(lines, expect)
        self.assertEqual([len(v) for v in read_parts(a).values()], [1, 1])

    def test_git_dir_same_as_folder(self):
        if not shutil.which("git"):
            self.skipTest("no git")
        g = ["git", "-C", self.src, "-c", "user.name=t", "-c", "user.email=t@t"]
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fixtures"]):
            subprocess.run(g + cmd, check=True, capture_output=True)
        self.write("K000003.000.xml", BAD)  # not committed: the git input must not see it
        r = run("--git-dir", os.path.join(self.src, ".git"), "--out", os.path.join(self.tmp, "g"))
        self.assertEqual(r.returncode, 0, r.stderr)
        os.remove(os.path.join(self.src, "K000003.000.xml"))
        _, folder = self.extract("f")
        for n in ("corpus-00.jsonl.xz", "SHA256SUMS"):
            with open(os.path.join(folder, n), "rb") as a, open(os.path.join(self.tmp, "g", n), "rb") as b:
                self.assertEqual(a.read(), b.read(), n)

    def test_bad_input(self):
        self.write("sub/K000009.000.xml", BAD)
        r = run("--input", self.src, "--out", os.path.join(self.tmp, "bad"))
        self.assertEqual(r.returncode, 2)
        self.assertIn(os.path.join("sub", "K000009.000.xml") + ": not well-formed XML", r.stderr)
        self.assertEqual(read_parts(os.path.join(self.tmp, "bad")), {})  # no partial output
        summary, out = self.extract("skip", "--skip-bad")
        self.assertEqual((summary["documents"], summary["skipped"]), (2, 1))
        self.assertEqual(summary["skipped_ids"], ["K000009.000"])
        missing = os.path.join(self.tmp, "nowhere")
        r = run("--input", missing, "--out", os.path.join(self.tmp, "o"))
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{missing}: no such folder", r.stderr)
        r = run("--input", self.src, "--out", out)  # not empty
        self.assertEqual(r.returncode, 2)
        self.assertIn("not empty", r.stderr)


if __name__ == "__main__":
    unittest.main()
