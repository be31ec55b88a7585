"""Tests of the analysis scripts the study's numbers come from (scripts/study_table.py), of the
loss-curve plotter (scripts/plot.py) and of the kernel-profile summary (scripts/dev/ncu_summary.py). Run by ctest as `scripts_tests`:
    python3 -m unittest discover -s tests/scripts -v

Every expected value below is worked out by hand in the comment next to it (or is a published
figure, named), never taken from a run of the script under test.
"""
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDY_TABLE = os.path.join(ROOT, "scripts", "study_table.py")
PLOT = os.path.join(ROOT, "scripts", "plot.py")
STUDY_SH = os.path.join(ROOT, "scripts", "study.sh")


sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the scripts import scripts/runlog.py


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


study_table = load_module(STUDY_TABLE, "study_table")
plot = load_module(PLOT, "plot")


def make_run(runs, name, opt, lr, seed, evals, rho=0.05, warmup=100, micro_batch=8, fraction=1.0,
             skips=0, gnb=(), done=True, max_steps=200, tokens=1000, hbc=False):
    """A run directory as `sophiagpt train` leaves it: config.json, log.jsonl, and `done`."""
    d = os.path.join(runs, name)
    os.makedirs(d)
    o = {"name": opt, "lr": lr, "min_lr": lr / 10}
    if opt == "sophiag":
        o.update(rho=rho, hessian_interval=10, hessian_batch_fraction=fraction,
                 hessian_bias_correction=hbc)
    if opt == "sophiah":
        o.update(hessian_interval=10, hessian_batch_fraction=fraction)
    cfg = {"optimizer": o, "schedule": {"max_steps": max_steps, "warmup_iters": warmup},
           "batch": {"micro_batch_size": micro_batch, "total_batch_tokens": tokens}, "seed": seed,
           "model": {"n_layer": 2, "n_embd": 32, "vocab_size": 64, "block_size": 16, "bias": False}}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(d, "log.jsonl"), "w") as f:
        for s, v in evals:
            f.write(json.dumps({"type": "train", "step": s, "loss": v + 0.1}) + "\n")
            f.write(json.dumps({"type": "eval", "step": s, "val_loss": v}) + "\n")
        for _ in range(skips):
            f.write(json.dumps({"type": "skip", "step": 50}) + "\n")
        for i, w in enumerate(gnb):
            f.write(json.dumps({"type": "gnb", "step": 10 * i + 9, "win_rate": w, "h_l1": 2 * w,
                                "gnb_grad_norm": 3 * w}) + "\n")
    if done:
        open(os.path.join(d, "done"), "w").close()
    return d


def run_script(*args):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


class TokensTo(unittest.TestCase):
    def test_linear_interpolation_between_evaluations(self):
        r = {"evals": [(0, 10.0), (100, 6.0), (200, 4.0)], "tokens": 1000}
        # 5.0 lies half way from 6.0 (step 100) to 4.0 (step 200): step 150, 150,000 tokens
        self.assertAlmostEqual(study_table.tokens_to(r, 5.0), 150_000)
        # 4.6: 100 + 100 * (6 - 4.6) / (6 - 4) = 170
        self.assertAlmostEqual(study_table.tokens_to(r, 4.6), 170_000)

    def test_reached_at_the_first_evaluation_and_never(self):
        r = {"evals": [(50, 3.0), (100, 2.5)], "tokens": 10}
        self.assertEqual(study_table.tokens_to(r, 3.5), 500)  # step 50, nothing before it
        self.assertIsNone(study_table.tokens_to(r, 2.0))


class StudyTable(unittest.TestCase):
    """Seven runs: AdamW at three learning rates (two seeds of the middle one, the best), Sophia-G at
    two (two seeds of the better one; the other diverged with a lower logged final loss, so it must
    not win)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sgpt_scripts_")
        cls.runs = os.path.join(cls.tmp, "runs")
        R = cls.runs
        make_run(R, "adamw_lr1e-3", "adamw", 1e-3, 1337, [(0, 10.0), (100, 6.0), (200, 4.0)])
        make_run(R, "adamw_lr1e-3_seed1338", "adamw", 1e-3, 1338, [(0, 10.0), (100, 6.0), (200, 4.1)])
        make_run(R, "adamw_lr2e-3", "adamw", 2e-3, 1337, [(0, 10.0), (100, 6.5), (200, 4.2)])
        make_run(R, "adamw_lr5e-4", "adamw", 5e-4, 1337, [(0, 10.0), (100, 7.0), (200, 4.3)])
        # micro-batch 3, fraction 0.5: floor(1.5) = 1 sequence of 3 per GNB pass, f_eff = 1/3
        sk = dict(micro_batch=3, fraction=0.5)
        make_run(R, "sophiag_lr1e-4", "sophiag", 1e-4, 1337, [(0, 10.0), (100, 7.0), (200, 4.5)],
                 gnb=(0.1, 0.2, 0.3, 0.4, 0.5), **sk)
        make_run(R, "sophiag_lr1e-4_seed1338", "sophiag", 1e-4, 1338, [(0, 10.0), (100, 7.2), (200, 4.6)], **sk)
        make_run(R, "sophiag_lr2e-4", "sophiag", 2e-4, 1337, [(0, 10.0), (100, 5.0), (200, 3.0)], skips=1, **sk)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def table(self):
        code, out, err = run_script(STUDY_TABLE, "--runs", self.runs)
        self.assertEqual(code, 0, err)
        return out

    def row(self, out, first_cell):
        for line in out.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells and cells[0] == first_cell:
                return cells
        self.fail(f"no row '{first_cell}' in:\n{out}")

    def test_best_setting_over_seeds(self):
        out = self.table()
        # AdamW lr 1e-3: finals 4.0 and 4.1, mean 4.05, sample std sqrt(2 * 0.05^2 / 1) = 0.0707
        self.assertEqual(self.row(out, "adamw")[1:9], ["0.001", "-", "100", "2", "4.0500", "0.0707", "4.0000", "4.1000"])
        # Sophia-G lr 1e-4 (not the diverged 2e-4 with its lower 3.0): 4.5 and 4.6
        self.assertEqual(self.row(out, "sophiag")[1:9], ["0.0001", "0.050", "100", "2", "4.5500", "0.0707", "4.5000", "4.6000"])

    def test_tokens_and_compute_to_the_same_loss(self):
        out = self.table()
        # L* = 4.6, the highest final loss of the four. Tokens to 4.6 (1000 tokens a step):
        #   AdamW 1337: 100 + 100 * (6 - 4.6) / (6 - 4)   = 170      -> 170,000
        #   AdamW 1338: 100 + 100 * (6 - 4.6) / (6 - 4.1) = 173.684  -> 173,684.2
        #   Sophia 1337: 100 + 100 * (7 - 4.6) / (7 - 4.5) = 196     -> 196,000
        #   Sophia 1338: reaches 4.6 at step 200                     -> 200,000
        # ratio of means 171,842.1 / 198,000 = 0.8679; pairs: 170/200 = 0.850 .. 173.684/196 = 0.886
        self.assertIn("L* = 4.6000", out)
        self.assertEqual(self.row(out, "tokens to L*: AdamW / Sophia-G")[1:], ["0.868", "0.850 - 0.886"])
        # Sophia-G's compute: 1 + f_eff / k = 1 + (1/3) / 10 = 1.0333 per token:
        # 0.8679 / 1.0333 = 0.840; 0.850 / 1.0333 = 0.823; 0.8861 / 1.0333 = 0.858
        self.assertEqual(self.row(out, "compute to L* (GNB counted, x1.033 for Sophia-G)")[1:], ["0.840", "0.823 - 0.858"])

    def test_validation_loss_at_chosen_steps(self):
        code, out, err = run_script(STUDY_TABLE, "--runs", self.runs, "--evals", "100,150")
        self.assertEqual(code, 0, err)
        self.assertIn("| seed | val @100 | val @150 | final val |", out)
        # adamw_lr1e-3 evaluated at 0, 100, 200: 6.0 at step 100, nothing at 150
        self.assertEqual(self.row(out, "adamw_lr1e-3")[6:9], ["6.000", "-", "4.0000"])

    def test_bad_options_are_named(self):
        for args, message in [
                (["--evals", "100,x"], "--evals: '100,x' is not a comma-separated list of steps"),
                (["--evals"], "--evals needs a value"),
                (["--bogus"], "unknown option '--bogus'")]:
            code, out, err = run_script(STUDY_TABLE, "--runs", self.runs, *args)
            self.assertNotEqual(code, 0, args)
            self.assertIn(message, err, args)
        missing = os.path.join(self.tmp, "missing")
        code, out, err = run_script(STUDY_TABLE, "--runs", missing)
        self.assertNotEqual(code, 0)
        self.assertIn(f"--runs: no run folder '{missing}'", err)

    def test_divergence_listed(self):
        out = self.table()
        self.assertIn("1 run(s):", out)
        self.assertIn("- sophiag_lr2e-4: sophiag lr 0.0002 rho 0.05, 1 skipped step(s)", out)

    def test_clipping_over_training_of_the_best_sophia_run(self):
        out = self.table()
        # 5 GNB passes with win rates 0.1..0.5: first 20% = pass 0, middle = pass 2, last = pass 4
        self.assertEqual(self.row(out, "first 20%")[1:3], ["1", "0.1000"])
        self.assertEqual(self.row(out, "middle 20%")[1:3], ["1", "0.3000"])
        self.assertEqual(self.row(out, "last 20%")[1:5], ["1", "0.5000", "1", "1.5"])

    def test_best_learning_rate_at_the_edge_of_its_sweep_is_flagged(self):
        out = self.table()
        # AdamW's 1e-3 lies between 5e-4 (4.3) and 2e-3 (4.2); Sophia-G's 1e-4 is the lower of the two
        # tried (2e-4 diverged, which still counts as tried)
        self.assertNotIn("edge of its sweep: adamw", out)
        self.assertIn("At the edge of its sweep: sophiag lr 0.0001 is the lowest of 2 learning rate(s) tried; "
                      "a lower one may be better.", out)

    def test_sweep_data_for_the_plot(self):
        dat = os.path.join(self.tmp, "sweep.dat")
        code, out, err = run_script(STUDY_TABLE, "--runs", self.runs, "--sweep-dat", dat)
        self.assertEqual(code, 0, err)
        with open(dat) as f:
            lines = f.read().splitlines()
        # the plot's title: 2 layers x 32 wide, 200 steps x 1,000 tokens; seed 1337 only, the
        # diverged run as nan
        self.assertEqual(lines, [
            "# model: 2 x 32, 0.2M tokens",
            "# optimizer rho lr final_val (nan: diverged or unfinished)",
            "adamw 0 0.0005 4.3", "adamw 0 0.001 4.0", "adamw 0 0.002 4.2",
            "sophiag 0.05 0.0001 4.5", "sophiag 0.05 0.0002 nan",
        ])

    def test_next_phase_starts_from_the_best_runs_own_config_or_extends_the_sweep(self):
        code, out, err = run_script(STUDY_TABLE, "--runs", self.runs, "--next")
        self.assertEqual(code, 0, err)
        lines = [l for l in out.splitlines() if l and not l.startswith("#")]
        a = os.path.join(self.runs, "adamw_lr1e-3", "config.json")
        s = os.path.join(self.runs, "sophiag_lr1e-4", "config.json")
        self.assertEqual(lines, [
            f"adamw_lr1e-3_seed1338 {a} optimizer.lr=0.001 optimizer.min_lr=0.0001 seed=1338",
            f"adamw_lr1e-3_seed1339 {a} optimizer.lr=0.001 optimizer.min_lr=0.0001 seed=1339",
            f"adamw_lr1e-3_warmup300 {a} optimizer.lr=0.001 optimizer.min_lr=0.0001 schedule.warmup_iters=300",
            # Sophia-G's best, 1e-4, is the lowest tried (2e-4 diverged): not seeds yet, but the sweep
            # one step (its own factor, 2) further down
            f"sophiag_lr5e-05 {s} optimizer.lr=5e-05 optimizer.min_lr=5e-06 optimizer.rho=0.05",
        ])
        self.assertIn("# sophiag: lr 0.0001 is the lowest learning rate tried; the sweep goes on first", out)


class StudyTableVariants(unittest.TestCase):
    """A bias-corrected Sophia-G run (optimizer.hessian_bias_correction) is a variant of its own:
    with the lowest loss of all, it still must not become plain Sophia-G's best setting, enter its
    AdamW pairing, or join its sweep in the plot data."""

    def test_bias_corrected_runs_are_their_own_optimizer(self):
        tmp = tempfile.mkdtemp(prefix="sgpt_scripts_")
        try:
            R = os.path.join(tmp, "runs")
            make_run(R, "adamw_lr1e-3", "adamw", 1e-3, 1337, [(0, 10.0), (100, 6.0), (200, 4.0)])
            make_run(R, "sophiag_lr1e-4", "sophiag", 1e-4, 1337, [(0, 10.0), (100, 7.0), (200, 4.5)])
            make_run(R, "sophiag_hbc_lr1e-4", "sophiag", 1e-4, 1337, [(0, 10.0), (100, 5.0), (200, 3.5)],
                     hbc=True)
            code, out, err = run_script(STUDY_TABLE, "--runs", R)
            self.assertEqual(code, 0, err)
            rows = {}
            for line in out.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                rows.setdefault(cells[0], cells)
            # the best-setting rows: plain Sophia-G keeps its own 4.5; the variant has its own row
            self.assertEqual(rows["sophiag"][5], "4.5000")
            self.assertEqual(rows["sophiag+hbc"][5], "3.5000")
            # the pairing compares AdamW with plain Sophia-G only (mean finals 4.0 and 4.5)
            self.assertIn("AdamW 4.0000, Sophia-G 4.5000", out)
            dat = os.path.join(tmp, "sweep.dat")
            code, out, err = run_script(STUDY_TABLE, "--runs", R, "--sweep-dat", dat)
            self.assertEqual(code, 0, err)
            with open(dat) as f:
                lines = [l for l in f.read().splitlines() if not l.startswith("#")]
            self.assertEqual(lines, ["adamw 0 0.001 4.0", "sophiag 0.05 0.0001 4.5",
                                     "sophiag+hbc 0.05 0.0001 3.5"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class StudyTableSophiaH(unittest.TestCase):
    """Sophia-H gets its own tokens and compute section against AdamW, its Hutchinson passes counted
    at 8/3 of a forward and backward; --only keeps one horizon of a folder."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sgpt_scripts_")
        self.runs = os.path.join(self.tmp, "runs")
        R = self.runs
        make_run(R, "h5_adamw_lr1e-3", "adamw", 1e-3, 1337, [(0, 10.0), (100, 6.0), (200, 4.0)])
        # micro-batch 4, fraction 0.5: 2 of 4 sequences per pass, f_eff = 0.5
        make_run(R, "h5_sophiah_lr1e-4", "sophiah", 1e-4, 1337, [(0, 10.0), (100, 7.0), (200, 4.5)],
                 micro_batch=4, fraction=0.5)
        make_run(R, "h1_adamw_lr1e-3", "adamw", 1e-3, 1337, [(0, 10.0), (100, 8.0), (200, 7.0)])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_tokens_and_compute_to_sophia_h_loss(self):
        code, out, err = run_script(STUDY_TABLE, "--runs", self.runs, "--only", "h5_")
        self.assertEqual(code, 0, err)
        # L* = 4.5 (Sophia-H's final). AdamW: 100 + 100 * (6 - 4.5) / (6 - 4) = 175 -> 175,000 tokens;
        # Sophia-H reaches 4.5 at step 200 -> 200,000; ratio 0.875. Compute: Sophia-H's tokens count
        # 1 + (8/3) * 0.5 / 10 = 1.1333 times: 0.875 / 1.1333 = 0.772.
        self.assertIn("## Tokens and compute to the same loss: Sophia-H", out)
        self.assertIn("L* = 4.5000", out)
        self.assertIn("| tokens to L*: AdamW / Sophia-H | 0.875 | 0.875 - 0.875 |", out)
        self.assertIn("| compute to L* (Hutchinson passes counted, x1.133 for Sophia-H) | 0.772 | 0.772 - 0.772 |", out)
        # no Sophia-G here, so no Sophia-G section
        self.assertNotIn("AdamW / Sophia-G", out)

    def test_only_keeps_the_runs_whose_name_starts_with_the_prefix(self):
        code, out, err = run_script(STUDY_TABLE, "--runs", self.runs, "--only", "h5_")
        self.assertEqual(code, 0, err)
        self.assertIn("## Runs (2 in", out)
        self.assertNotIn("h1_adamw_lr1e-3", out)
        code, out, err = run_script(STUDY_TABLE, "--runs", self.runs, "--only", "h20_")
        self.assertNotEqual(code, 0)
        self.assertIn("h20_", err)


class StudyKeep(unittest.TestCase):
    """`scripts/study.sh keep`: finished runs only, every 20th train record and every other record,
    the program's path shortened to its name, each run kept once."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sgpt_scripts_")
        self.runs = os.path.join(self.tmp, "runs")
        self.dest = os.path.join(self.tmp, "kept")
        for name, done in (("a_done", True), ("b_unfinished", False)):
            d = os.path.join(self.runs, name)
            os.makedirs(d)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"seed": 1337}, f)
            with open(os.path.join(d, "log.jsonl"), "w") as f:
                f.write(json.dumps({"type": "machine", "step": -1,
                                    "command_line": "/far/away/bin/sophiagpt train --config c.json -q"}) + "\n")
                for step in range(46):
                    f.write(json.dumps({"type": "train", "step": step, "loss": 5.0}) + "\n")
                    if step == 39:
                        f.write(json.dumps({"type": "hutchinson", "step": 39, "win_rate": 0.1}) + "\n")
                    if step in (0, 40):
                        f.write(json.dumps({"type": "eval", "step": step, "val_loss": 4.0 if step else 9.0}) + "\n")
                f.write('{"type": "train", "st')  # torn: killed while writing
            if done:
                open(os.path.join(d, "done"), "w").close()

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def keep(self, *extra):
        r = subprocess.run(["bash", STUDY_SH, "keep", self.dest, "--runs", self.runs, *extra],
                           capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr

    def test_keeps_finished_runs_thinned(self):
        code, out, err = self.keep()
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(os.listdir(self.dest)), ["a_done"])  # the unfinished run stays out
        d = os.path.join(self.dest, "a_done")
        self.assertTrue(os.path.isfile(os.path.join(d, "done")))
        with open(os.path.join(d, "config.json")) as f:
            self.assertEqual(json.load(f), {"seed": 1337})
        with open(os.path.join(d, "log.jsonl")) as f:
            recs = [json.loads(l) for l in f]
        # machine; train 0, eval 0; train 20; hutchinson 39; train 40, eval 40 (the torn line dropped)
        self.assertEqual([(r["type"], r["step"]) for r in recs],
                         [("machine", -1), ("train", 0), ("eval", 0), ("train", 20), ("hutchinson", 39),
                          ("train", 40), ("eval", 40)])
        self.assertEqual(recs[0]["command_line"], "sophiagpt train --config c.json -q")
        self.assertIn("kept a_done: 7 records, final val_loss 4.0", out)
        # a second call keeps nothing more
        code, out, err = self.keep()
        self.assertEqual(code, 0, err)
        self.assertIn("0 run(s) kept", out)

    def test_bad_command_lines_and_damaged_runs_are_named(self):
        r = subprocess.run(["bash", STUDY_SH, "keep", self.dest, "--runs"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--runs", r.stderr)
        os.remove(os.path.join(self.runs, "a_done", "config.json"))
        code, out, err = self.keep()
        self.assertEqual(code, 1)
        self.assertIn("a_done", err)
        self.assertIn("config.json", err)
        self.assertFalse(os.path.exists(os.path.join(self.dest, "a_done", "done")))

    def test_every_is_checked(self):
        code, out, err = self.keep("--every", "0")
        self.assertEqual(code, 2)
        self.assertIn("--every", err)
        code, out, err = self.keep("--every", "10")
        self.assertEqual(code, 0, err)
        with open(os.path.join(self.dest, "a_done", "log.jsonl")) as f:
            steps = [json.loads(l)["step"] for l in f if '"train"' in l]
        self.assertEqual(steps, [0, 10, 20, 30, 40])


class Plot(unittest.TestCase):
    def test_parameter_count_matches_published_gpt2_sizes(self):
        # Hugging Face's GPT-2 (with biases, tied embedding): 124,439,808 and 354,823,168 parameters
        gpt2 = {"n_layer": 12, "n_embd": 768, "vocab_size": 50257, "block_size": 1024, "bias": True}
        self.assertEqual(plot.n_params(gpt2), 124_439_808)
        medium = dict(gpt2, n_layer=24, n_embd=1024)
        self.assertEqual(plot.n_params(medium), 354_823_168)
        # without biases: 12 layers x 8,448 bias values (768 + 2304 + 768 + 768 + 3072 + 768) and
        # the final LayerNorm's 768 fewer
        self.assertEqual(plot.n_params(dict(gpt2, bias=False)), 124_439_808 - 12 * 8448 - 768)

    def test_compute_counts_the_gnb_passes(self):
        # 25 steps with k = 10: passes after steps 9 and 19, each over f_eff = 0.5 of a step's tokens
        self.assertEqual(plot.flops_at(25, 1000, 100, k=10, f_eff=0.5), 6.0 * 1000 * 100 * (25 + 0.5 * 2))
        self.assertEqual(plot.flops_at(25, 1000, 100), 6.0 * 1000 * 100 * 25)

    @unittest.skipUnless(shutil.which("gnuplot"), "gnuplot not installed (scripts/setup.sh installs it)")
    def test_draws_a_png_with_the_paper_references(self):
        tmp = tempfile.mkdtemp(prefix="sgpt_plot_")
        try:
            a = make_run(tmp, "a", "adamw", 1e-3, 1337, [(0, 10.0), (100, 6.0), (200, 4.0)])
            s = make_run(tmp, "s", "sophiag", 1e-4, 1337, [(0, 10.0), (100, 7.0), (200, 4.5)])
            png = os.path.join(tmp, "out.png")
            for axis in ("steps", "tokens", "compute"):
                code, out, err = run_script(PLOT, f"{a}=AdamW", f"{s}=Sophia-G", "--paper-refs", "--x", axis, "-o", png)
                self.assertEqual(code, 0, err)
                with open(png, "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
                os.remove(png)
            code, out, err = run_script(PLOT, os.path.join(tmp, "absent"), "-o", png)
            self.assertNotEqual(code, 0)
            self.assertIn("absent", err)
            self.assertFalse(os.path.exists(png))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class TornLastLine(unittest.TestCase):
    """A run still writing its log (or killed while writing it) leaves a last line that is not
    complete JSON; the readers skip it with a note instead of failing or dropping the run. Before
    this, study_table.load() returned None for such a run (so the run silently left the tables) and
    plot.py counted it among "unreadable line(s)" without saying which."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sgpt_torn_")
        self.run = make_run(self.tmp, "adamw_lr1e-3", "adamw", 1e-3, 1337, [(0, 10.0), (100, 6.0), (200, 4.0)])
        with open(os.path.join(self.run, "log.jsonl"), "a") as f:
            f.write('{"type": "eval", "step": 300, "val_lo')  # torn: no closing brace, no newline

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_study_table_keeps_the_run_and_notes_the_line(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            r = study_table.load(self.run)
        self.assertIsNotNone(r, "the run was dropped")
        # the three complete evaluations, nothing from the torn line
        self.assertEqual(r["evals"], [(0, 10.0), (100, 6.0), (200, 4.0)])
        self.assertIn("last line", err.getvalue())
        self.assertIn("log.jsonl", err.getvalue())
        # and through the script: the run is in the table, the note on stderr
        code, out, err = run_script(STUDY_TABLE, "--runs", self.tmp)
        self.assertEqual(code, 0, err)
        self.assertIn("4.0000", out)
        self.assertIn("last line", err)

    def test_plot_keeps_every_complete_record_and_notes_the_line(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            run = plot.load_log(self.run)
        self.assertEqual(run["val"], [(0, 10.0), (100, 6.0), (200, 4.0)])
        self.assertEqual(run["train"], [(0, 10.1), (100, 6.1), (200, 4.1)])
        self.assertIn("last line", err.getvalue())

    def test_a_broken_line_inside_the_log_is_named_too(self):
        # A run killed while writing and then resumed appends after the torn line.
        path = os.path.join(self.run, "log.jsonl")
        with open(path, "a") as f:
            f.write("\n" + json.dumps({"type": "eval", "step": 300, "val_loss": 3.5}) + "\n")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            r = study_table.load(self.run)
        self.assertEqual(r["evals"][-1], (300, 3.5))
        self.assertIn("line 7", err.getvalue())  # 6 complete lines, then the torn one


NCU_SUMMARY = os.path.join(ROOT, "scripts", "dev", "ncu_summary.py")
ncu_summary = load_module(NCU_SUMMARY, "ncu_summary")

# What `ncu --csv --print-units base --metrics gpu__time_duration.sum --log-file F` writes: its own
# ==PROF== lines, then one row per kernel launch (columns trimmed to those the script reads, plus
# two it ignores). Three launches of a (two in nanoseconds, one in microseconds), one of b, and a
# row of another metric that must not count.
NCU_CSV = """==PROF== Connected to process 123 (/x/sophiagpt)
==PROF== Disconnected from process 123
"ID","Process ID","Kernel Name","Metric Name","Metric Unit","Metric Value"
"0","123","void sgpt::cuda::a_kernel<float>(float *, int)","gpu__time_duration.sum","nsecond","1,500"
"1","123","b_kernel(int)","gpu__time_duration.sum","nsecond","4000"
"2","123","void sgpt::cuda::a_kernel<float>(float *, int)","gpu__time_duration.sum","usecond","2.5"
"3","123","void sgpt::cuda::a_kernel<float>(float *, int)","gpu__time_duration.sum","nsecond","500"
"4","123","b_kernel(int)","dram__bytes.sum","byte","999999"
"""


class NcuSummary(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.csv = os.path.join(self.tmp, "k.csv")
        with open(self.csv, "w") as f:
            f.write(NCU_CSV)

    def test_sums_by_kernel_name_across_units(self):
        s = ncu_summary.summarize(ncu_summary.read_rows(NCU_CSV.splitlines()))
        # a: 1,500 ns + 2.5 us + 500 ns = 1.5 + 2.5 + 0.5 = 4.5 us over 3 launches; b: 4,000 ns =
        # 4.0 us once (its dram__bytes row is not a duration)
        self.assertEqual(set(s), {"void sgpt::cuda::a_kernel<float>", "b_kernel"})
        self.assertEqual(s["void sgpt::cuda::a_kernel<float>"][0], 3)
        self.assertAlmostEqual(s["void sgpt::cuda::a_kernel<float>"][1], 4.5)
        self.assertEqual(s["b_kernel"], [1, 4.0])

    def test_table_longest_first_with_shares(self):
        code, out, err = run_script(NCU_SUMMARY, self.csv)
        self.assertEqual(code, 0, err)
        lines = out.strip().splitlines()
        # total 8.5 us: a 4.5 (52.9%, mean 1.50), b 4.0 (47.1%)
        self.assertEqual(lines[2], "| void sgpt::cuda::a_kernel<float> | 3 | 4.5 | 1.50 | 52.9% |")
        self.assertEqual(lines[3], "| b_kernel | 1 | 4.0 | 4.00 | 47.1% |")
        self.assertEqual(lines[4], "| all kernels | 4 | 8.5 | | 100.0% |")
        code, out, _ = run_script(NCU_SUMMARY, self.csv, "--top", "1")
        self.assertEqual(code, 0)
        self.assertNotIn("| b_kernel", out)
        self.assertIn("| all kernels | 4 | 8.5 |", out)  # the total still covers every kernel

    def test_errors(self):
        empty = os.path.join(self.tmp, "empty.csv")
        with open(empty, "w") as f:
            f.write("==PROF== nothing profiled\n")
        code, _, err = run_script(NCU_SUMMARY, empty)
        self.assertEqual(code, 1)
        self.assertIn("no gpu__time_duration.sum rows", err)
        code, _, err = run_script(NCU_SUMMARY, os.path.join(self.tmp, "missing.csv"))
        self.assertEqual(code, 1)
        self.assertIn("missing.csv", err)
        bad_unit = os.path.join(self.tmp, "unit.csv")
        with open(bad_unit, "w") as f:
            f.write(NCU_CSV.replace('"usecond"', '"cycle"'))
        code, _, err = run_script(NCU_SUMMARY, bad_unit)
        self.assertEqual(code, 1)
        self.assertIn("unknown time unit 'cycle'", err)
        for args in [(), ("--top",), (self.csv, "--top", "x"), (self.csv, "extra")]:
            code, _, _ = run_script(NCU_SUMMARY, *args)
            self.assertEqual(code, 2, args)

    def test_profile_script_refuses_to_overwrite_and_bad_lines(self):
        # Checked before ncu is looked for, so these run on a host without it.
        script = os.path.join(ROOT, "scripts", "dev", "profile_kernels.sh")
        out = os.path.join(self.tmp, "k")  # k.csv exists (setUp)
        r = subprocess.run(["bash", script, out, "--", "true"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("k.csv exists already", r.stderr)
        with open(self.csv) as f:
            self.assertEqual(f.read(), NCU_CSV)  # untouched
        for args in [[], [out + "2"], [out + "2", "--skip", "x", "--", "true"], [out + "2", "--bogus"]]:
            r = subprocess.run(["bash", script, *args], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2, args)


class StudyRunSkipsKeptRuns(unittest.TestCase):
    """`study.sh run PLAN --kept DIR` starts only the plan's runs finished neither in --runs nor in
    DIR (a fresh host has an empty --runs folder; the finished runs are kept in docs/study/runs*)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.log = os.path.join(self.tmp, "calls.txt")
        self.exe = os.path.join(self.tmp, "fake_sophiagpt")
        with open(self.exe, "w") as f:  # records the run folder it was given, finishes at once
            f.write('#!/usr/bin/env bash\nwhile (($#)); do [[ $1 == --out-dir ]] && { mkdir -p "$2"; '
                    'echo "$2" >>"%s"; }; shift; done\n' % self.log)
        os.chmod(self.exe, 0o755)
        self.plan = os.path.join(self.tmp, "p.plan")
        with open(self.plan, "w") as f:
            f.write("# comment\nrun_a cfg.json x=1\nrun_b cfg.json\nrun_c cfg.json\n")
        self.kept = os.path.join(self.tmp, "kept")
        self.runs = os.path.join(self.tmp, "runs")
        os.makedirs(os.path.join(self.kept, "run_a"))
        open(os.path.join(self.kept, "run_a", "done"), "w").close()
        os.makedirs(os.path.join(self.kept, "run_b"))  # kept but unfinished: runs again

    def study(self, *extra):
        env = dict(os.environ, SOPHIAGPT=self.exe)
        return subprocess.run(["bash", STUDY_SH, "run", self.plan, "--gpus", "1", "--runs", self.runs,
                               *extra], capture_output=True, text=True, env=env)

    def calls(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [os.path.basename(l.strip()) for l in f]

    def test_kept_runs_are_not_run_again(self):
        r = self.study("--kept", self.kept)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.calls(), ["run_b", "run_c"])
        self.assertIn("run_a: complete", r.stdout)
        # A second pass finds all three complete (two here, one kept) and starts nothing.
        r = self.study("--kept", self.kept)
        self.assertEqual(self.calls(), ["run_b", "run_c"])

    def test_without_kept_every_run_starts(self):
        r = self.study()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.calls(), ["run_a", "run_b", "run_c"])

    def test_a_missing_kept_folder_is_named(self):
        r = self.study("--kept", os.path.join(self.tmp, "nope"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("--kept: no folder", r.stderr)
        self.assertEqual(self.calls(), [])


if __name__ == "__main__":
    unittest.main()
