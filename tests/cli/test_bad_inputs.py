"""Every bad input found by the probes: one ``error:`` line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig
from saescope.sae.formats import save_sae


@pytest.fixture(scope="module")
def files(tmp_path_factory, lm) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    sae = SAE(SAEConfig(576, 64, "topk", k=4, hook_name="blocks.1.hook_resid_post"))
    good = save_sae(sae, root / "sae")
    out = {}
    def negative_k(cfg: dict) -> None:
        cfg.update(k=-3)
        cfg["metadata"]["saescope"].pop("k")

    for name, edit in {"no_d_in": lambda c: c.pop("d_in"), "d_in_abc": lambda c: c.update(d_in="abc"),
                       "d_in_string": lambda c: c.update(d_in="576"), "k_negative": negative_k,
                       "not_object": None}.items():
        folder = root / name
        shutil.copytree(good, folder)
        cfg = json.loads((folder / "cfg.json").read_text())
        if edit is None:
            (folder / "cfg.json").write_text("[1, 2]")
        else:
            edit(cfg)
            (folder / "cfg.json").write_text(json.dumps(cfg))
        out[name] = folder
    from saescope.features.extract import extract_features

    run = extract_features(lm, sae, root / "run", tokens=256, batch_size=2, context=32, top_k=2, progress=False)
    broken = root / "run_without_stats"
    shutil.copytree(run.path, broken)
    (broken / "stats.parquet").unlink()
    damaged = root / "run_damaged"
    shutil.copytree(run.path, damaged)
    (damaged / "stats.parquet").write_bytes(b"not parquet")
    (root / "a_file").write_text("x")
    (root / "bad_edit").mkdir()
    (root / "bad_edit" / "edit.json").write_text(json.dumps({"module": "model.layers.9.mlp.down_proj", "layer": 9,
                                                             "request": {"prompt": "{}", "subject": "a", "target": "b"}}))
    (root / "bad_edit" / "edit.safetensors").write_bytes(b"garbage")
    narrow = save_sae(SAE(SAEConfig(32, 16, "topk", k=2, hook_name="blocks.1.hook_resid_post")), root / "narrow_sae")
    pair = {"clean": "The friends", "patch": "The friend", "clean_answer": " have", "patch_answer": " has"}
    (root / "multi_token.jsonl").write_text(json.dumps({**pair, "clean_answer": " have been"}) + "\n")
    (root / "empty.jsonl").write_text("\n\n")
    (root / "two_lengths.jsonl").write_text(json.dumps(pair) + "\n" + json.dumps(
        {**pair, "clean": "The old friends", "patch": "The old friend"}) + "\n")
    (root / "latin1.txt").write_bytes("café au lait\n\nna\xefve".encode("latin-1") * 50)
    (root / "latin1_prompts.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    out.update(_circuits(root, good), **_bios(root), **_edits(root))
    (root / "rep_existing").mkdir()
    (root / "rep_existing" / "train.jsonl").write_text("{}\n")
    (root / "registry.yaml").write_text("my-release: [1, 2]\n")
    out.update(run=run.path, rep_existing=root / "rep_existing")
    return {**out, "bad_edit": root / "bad_edit", "sae": good, "narrow_sae": narrow, "multi_token": root / "multi_token.jsonl",
            "empty_pairs": root / "empty.jsonl", "two_lengths": root / "two_lengths.jsonl",
            "run_without_stats": broken, "run_damaged": damaged, "a_file": root / "a_file",
            "latin1": root / "latin1.txt", "latin1_prompts": root / "latin1_prompts.txt", "root": root}


def _circuits(root: Path, sae_folder: Path) -> dict[str, Path]:
    from saescope.circuits.graph import METRIC, Circuit, Edge, Node
    from saescope.sae.core import sae_fingerprint
    from saescope.sae.formats import load_sae

    hook, other = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"
    saes = {hook: {"source": str(sae_folder), "fingerprint": sae_fingerprint(load_sae(str(sae_folder)))}}
    settings, data = {"method": "atp", "aggregation": "sum"}, {"pairs": "sva_simple_test", "n_pairs": 1}
    node = Node(hook, 3, None, 0.5)
    good = Circuit([hook], [node], [Edge(node.key, METRIC, 0.5)], settings, saes, data).save(root / "c_good")
    wide = Circuit([hook], [Node(hook, 99999, None, 0.5)], [], settings, saes, data).save(root / "c_wide")
    elsewhere = Circuit([other], [Node(other, 3, None, 0.5)], [], settings, {other: saes[hook]}, data)
    elsewhere.save(root / "c_other")
    dangling = Circuit([hook], [Node(hook, 3, None, 0.5)], [Edge(f"{hook}/7", METRIC, 0.5)], settings, saes, data)
    dangling.save(root / "c_dangling")  # save does not check; load must
    return {"c_good": good, "c_wide": wide, "c_other": root / "c_other", "c_dangling": root / "c_dangling"}


def _bios(root: Path) -> dict[str, Path]:
    rows = [{"text": f"Alex {i} works.", "profession": i % 2, "gender": (i // 2) % 2} for i in range(8)]
    (root / "labels.jsonl").write_text("".join(json.dumps({**r, "profession": 2}) + "\n" for r in rows))
    (root / "one_class.jsonl").write_text("".join(json.dumps({**r, "profession": 1}) + "\n" for r in rows))
    return {"bad_labels": root / "labels.jsonl", "one_class": root / "one_class.jsonl"}


def _edits(root: Path) -> dict[str, Path]:
    from saescope.editing.request import EditRequest
    from saescope.editing.weight_edit import WeightEdit

    u, v = torch.ones(576), torch.ones(1536)
    edit = WeightEdit("model.layers.9.mlp.down_proj", 3, u, v, EditRequest("Name: {}.", "Ben", " F"), torch.outer(u, v))
    return {"mismatched_edit": edit.save(root / "mismatched_edit")}


CASES = [
    ("shift replica --out under a file", ["shift", "replica", "--out", "{a_file}/rep"], "cannot write"),
    ("cfg.json without d_in", ["sae", "eval", "{no_d_in}"], "field 'd_in' is missing"),
    ("cfg.json with d_in 'abc'", ["sae", "eval", "{d_in_abc}"], "field 'd_in' must be a positive int"),
    ("cfg.json with d_in as a string", ["sae", "eval", "{d_in_string}"], "field 'd_in' must be a positive int"),
    ("cfg.json with a negative k", ["sae", "eval", "{k_negative}", "--tokens", "64"], "field 'k' must be a positive int"),
    ("cfg.json that is not an object", ["sae", "eval", "{not_object}"], "expected a JSON object"),
    ("extract --out naming a file", ["features", "extract", "--sae", "{sae}", "--tokens", "64", "--out", "{a_file}"],
     "is a file, not a folder"),
    ("a RUN whose stats.parquet was deleted", ["features", "table", "{run_without_stats}"], "stats.parquet missing"),
    ("a RUN whose stats.parquet is damaged", ["features", "show", "{run_damaged}", "1"], "damaged or not Parquet"),
    ("an absurd coefficient", ["steer", "--sae", "{sae}", "--feature", "1", "--coeff", "1e308", "--prompt", "hi"],
     "at most 1e+06"),
    ("a corpus file that is not UTF-8", ["features", "extract", "--sae", "{sae}", "--tokens", "64", "--corpus",
                                          "{latin1}", "--out", "{root}/new_run"], "not UTF-8 text"),
    ("a prompt file that is not UTF-8", ["steer", "sweep", "--feature", "1", "--sae", "{sae}", "--prompts",
                                         "{latin1_prompts}"], "not UTF-8 text"),
    ("a dashboard feature list with a word", ["features", "dashboard", "{run_damaged}", "--out", "{root}/d",
                                              "--features", "1,x"], "comma-separated"),
    ("an unknown dtype", ["sae", "eval", "{sae}", "--dtype", "float8"], "unknown dtype"),
    ("an unknown debias method", ["debias", "--method", "nonsense", "--out", "{root}/x"], "unknown debias method"),
    ("a circuit threshold out of range", ["circuit", "find", "--node-threshold", "-1", "--out", "{root}/c"],
     "node_threshold must be a non-negative number"),
    ("circuit answers of several tokens", ["circuit", "find", "--pairs", "{multi_token}", "--saes", "{sae}",
                                           "--out", "{root}/c"], "answers must be single tokens"),
    ("an empty pair file", ["circuit", "find", "--pairs", "{empty_pairs}", "--out", "{root}/c"], "no pairs"),
    ("aggregation none over prompts of two lengths", ["circuit", "find", "--pairs", "{two_lengths}", "--saes", "{sae}",
                                                      "--aggregation", "none", "--out", "{root}/c"], "of one length"),
    ("an SAE that does not fit the hook", ["circuit", "find", "--pairs", "{two_lengths}", "--saes", "{narrow_sae}",
                                           "--out", "{root}/c"], "width"),
    ("circuit eval of a folder that is no circuit", ["circuit", "eval", "{root}"], "is not a circuit"),
    ("a suite with a repeated layer", ["sae", "train-suite", "--layers", "2,2", "--out", "{root}/s"], "must not repeat"),
    ("an edit subject not in the prompt", ["edit", "trace", "--prompt", "Name: Ben. Gender:", "--subject", "Tom",
                                           "--out", "{root}/t"], "does not occur"),
    ("an edit layer out of range", ["edit", "rome", "--prompt", "Name: {{}}. Gender:", "--subject", "Ben", "--target",
                                    " Female", "--layer", "40", "--out", "{root}/e"], "out of range"),
    ("an empty edit target", ["edit", "rome", "--prompt", "Name: {{}}. Gender:", "--subject", "Ben", "--target", " ",
                              "--out", "{root}/e"], "target is empty"),
    ("a corrupt edit", ["edit", "eval", "{bad_edit}"], "not a readable saescope edit"),
    ("a folder that is no edit", ["generate", "--prompt", "Hi", "--edit", "{root}"], "edit.json"),
    ("an FT-L bound that is not a number", ["edit", "ft", "--prompt", "Name: {{}}. Gender:", "--subject", "Ben",
                                            "--target", " Female", "--layer", "9", "--epsilon", "nan",
                                            "--out", "{root}/f"], "epsilon"),
    ("a gender-vector study with too few names", ["edit", "gender-vector", "--names", "3", "--out", "{root}/g"],
     "at least 10"),
    ("a circuit node beyond the SAE's width", ["circuit", "eval", "{c_wide}", "--limit", "1"], "out of range"),
    ("a circuit node beyond the SAE's width (plot)", ["circuit", "plot", "{c_wide}"], "out of range"),
    ("a circuit node beyond the SAE's width (export)", ["circuit", "export", "{c_wide}"], "out of range"),
    ("an edge to a node the circuit lacks", ["circuit", "plot", "{c_dangling}"], "does not have"),
    ("circuit find with --limit 0", ["circuit", "find", "--limit", "0", "--out", "{root}/c"], "at least 1"),
    ("circuit find with --limit -1", ["circuit", "find", "--limit", "-1", "--out", "{root}/c"], "at least 1"),
    ("circuit eval thresholds nan, inf", ["circuit", "eval", "{c_good}", "--thresholds", "nan,inf"], "non-negative"),
    ("circuit plot with a negative threshold", ["circuit", "plot", "{c_good}", "--node-threshold", "-1"], "non-negative"),
    ("circuit plot with another hook point's RUN", ["circuit", "plot", "{c_other}", "--run",
                                                    "blocks.2.hook_resid_post={run}"], "was extracted at blocks.1"),
    ("an edit whose module and layer disagree", ["edit", "eval", "{mismatched_edit}"], "is in layer 9 but layer says 3"),
    ("shift replica over existing splits", ["shift", "replica", "--out", "{rep_existing}"], "--overwrite"),
    ("shift labels outside 0/1", ["shift", "run", "--train", "{bad_labels}", "--out", "{root}/s"], "must be 0 or 1"),
    ("a one-class shift training file", ["shift", "run", "--train", "{one_class}", "--oracle-train", "{one_class}",
                                         "--out", "{root}/s"], "all have profession 1"),
    ("shift run with --limit 1", ["shift", "run", "--limit", "1", "--out", "{root}/s"], "at least 4"),
    ("shift run with --limit 0", ["shift", "run", "--limit", "0", "--out", "{root}/s"], "at least 4"),
    ("shift run with --seeds 0", ["shift", "run", "--seeds", "0", "--out", "{root}/s"], "seeds must be at least 1"),
    ("features sample of a billion features", ["features", "sample", "{run}", "--features", "0-999999999"], "out of range"),
]


def _run(args: list[str | bytes], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saescope.cli.main", *args], capture_output=True, timeout=600,
                          env={**os.environ, **(env or {})})


def _check(result: subprocess.CompletedProcess, message: str) -> None:
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], stderr


@pytest.mark.parametrize("what, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_error_line_and_exit_2(files, what, args, message):
    _check(_run([a.format(**{k: str(v) for k, v in files.items()}) for a in args]), message)


def test_a_prompt_with_bytes_that_are_not_utf8(files):
    _check(_run(["sae", "top", "--sae", str(files["sae"]), "--text", b"caf\xe9 ok"]), "not UTF-8")


def test_an_unwritable_cache_folder(files, tmp_path):
    _check(_run(["info"], env={"SAESCOPE_HOME": str(files["a_file"] / "cache")}), "cannot write")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs a /proc file system")
def test_a_folder_that_cannot_be_made():
    """mkdir fails with FileNotFoundError under /proc: still one error line, not a traceback."""
    _check(_run(["shift", "replica", "--out", "/proc/saescope-none/rep"]), "cannot write")


def test_a_malformed_sae_registry(files):
    _check(_run(["sae", "eval", "my-release/some-id"], env={"SAESCOPE_SAE_REGISTRY": str(files["root"] / "registry.yaml")}),
           "must be a mapping with repo_id")


def test_braces_in_an_edit_prompt_are_text():
    from saescope.editing.request import EditRequest, fill_subject

    assert EditRequest("Gender {M/F}: {}", "Ben", " F").text == "Gender {M/F}: Ben"
    assert fill_subject("{0.__class__} {}", "Ben") == "{0.__class__} Ben"
    with pytest.raises(SaescopeError, match="exactly once"):
        EditRequest("Name: {} and {}", "Ben", " F")


def test_circuit_eval_json_parses(files):
    result = _run(["circuit", "eval", str(files["c_good"]), "--limit", "2", "--thresholds", "0.1", "--no-components",
                   "--json"])
    assert result.returncode == 0, result.stderr.decode()
    parsed = json.loads(result.stdout)
    assert parsed["rows"][0]["node_threshold"] == 0.1 and parsed["precision"]["dtype"] == "float32"


@pytest.mark.embedded  # loads the embedded model in a subprocess
def test_ctrl_c_exits_130_with_a_message(tmp_path):
    """typer returns 130 on Ctrl-C outside standalone mode; it used to be dropped (exit 0, no message)."""
    def as_from_a_shell() -> None:  # a test worker may hand its children SIGINT ignored or blocked; a shell does not
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen([sys.executable, "-m", "saescope.cli.main", "edit", "trace", "--prompt", "Name: Ben. Gender:",
                                "--subject", "Ben", "--samples", "200", "--out", str(tmp_path / "t")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=as_from_a_shell)
    try:
        time.sleep(1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not _model_loaded(process.pid):
            time.sleep(0.5)
        time.sleep(2)
        status = Path(f"/proc/{process.pid}/status").read_text() if process.poll() is None else ""
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            masks = [line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
            raise AssertionError(f"Ctrl-C did not stop the job within 120 s; its signal masks: {masks}") from None
    finally:  # never leave the job running (a timed-out run once kept a core busy for 16 min)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr.decode()
    assert "interrupted" in stderr.decode() and "Traceback" not in stderr.decode()


def _model_loaded(pid: int) -> bool:
    """The process has mapped the model's weights (so it is generating, not importing)."""
    try:
        return "model.safetensors" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True
