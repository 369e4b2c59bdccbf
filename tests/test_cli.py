"""What a new user hits at the command line: unknown names, the held-out split of an ImageNet-style folder, help
texts that say what runs, and progress in a log.

Tiny random timm models, a tiny image folder written by the test, scikit-learn's digits; one Prefect test server
for the session (the subprocess test points the CLI at it too, so no second server starts).
"""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facezoo.config import Home
from facezoo.data import load_dataset
from facezoo.errors import FaceZooError
from storage.results import ResultsStore
from tasks import datasets

ROOT = Path(__file__).resolve().parents[1]
ZOO = """
name: tiny-pair
models:
  - {name: test_resnet, source: "timm:test_resnet", options: {pretrained: false}}
  - {name: test_efficientnet, source: "timm:test_efficientnet", options: {pretrained: false}}
"""
# a CPU budget of seconds: two steps at 32 px, one grid point
BUDGET = ["--steps", "2", "--batch", "8", "--resolution", "32", "--lr", "0.01", "--wd", "0"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "tiny-pair.yaml"
    path.write_text(ZOO)
    return str(path)


@pytest.fixture
def quiet_prefect():
    """Prefect's loggers as a real CLI run sets them (PREFECT_LOGGING_LEVEL=CRITICAL before Prefect loads; here
    Prefect loaded with the test session)."""
    import flows.rank  # noqa: F401 - importing the flows (MLflow among them) configures logging again

    logger = logging.getLogger("prefect")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def _cli(home, *args):
    from flows.cli import app

    return CliRunner().invoke(app, ["--home", str(home), *args])


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "FAILED" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _split_folder(root, classes=("a", "b", "c"), per_split=(("train", 6), ("val", 3))):
    """``root/<split>/<class>/<i>.png``: 32-px images whose brightness depends on the class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_split:
        for k, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((32, 32, 3)) * 60 + 80 * k).astype("uint8")
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def test_the_held_out_split_is_test_else_val_and_a_bad_one_is_one_line(tmp_path):
    data = load_dataset(f"folder:{_split_folder(tmp_path / 'imgs')}")
    assert data.split_names == ["train", "val"] and datasets.eval_split(data) == "val"
    assert datasets.eval_split(data, "val") == "val"
    with pytest.raises(FaceZooError, match=r"has no split 'nope' \(--eval-split\); it has train, val"):
        datasets.eval_split(data, "nope")
    with pytest.raises(FaceZooError, match="is the training split"):
        datasets.eval_split(data, "train")
    digits = load_dataset("builtin:digits")  # an 80/20 train/test split of its own
    assert datasets.eval_split(digits) == "test"
    only_train = digits.subset("train")
    with pytest.raises(FaceZooError, match="no held-out split .* it has train; name one with --eval-split"):
        datasets.eval_split(only_train)
    from flows.cli import app

    help_text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", CliRunner().invoke(app, ["validate", "--help"]).stdout).split())
    assert f"(default: test, else {', '.join(datasets.HELD_OUT_SPLITS[1:])})" in help_text  # the help says the order


def test_unknown_dataset_or_zoo_names_the_known_ones_and_exits_2(prefect_harness, quiet_prefect, zoo, tmp_path):
    home = Home.resolve(tmp_path / "home").ensure()
    store = ResultsStore(home.results_db)
    store.register_dataset(load_dataset("builtin:digits").sample(40), "builtin:digits", {}, None)
    store.register_dataset(load_dataset("builtin:digits", name="flowers").sample(40), "builtin:digits", {}, None)

    line = _one_line_error(_cli(home.root, "report", "--dataset", "nope"), "unknown dataset 'nope'")
    assert "registered: digits, flowers" in line
    # registered but never ranked: a state, not an error
    out = _cli(home.root, "report", "--dataset", "flowers")
    assert out.exit_code == 0 and "no ranking yet of flowers" in out.stdout
    for command in (["rank", "--zoo", zoo, "--dataset", "nope"], ["validate", "--zoo", zoo, "--dataset", "nope"]):
        _one_line_error(_cli(home.root, *command), "unknown dataset 'nope'", "digits, flowers")
    empty = Home.resolve(tmp_path / "empty").ensure()
    _one_line_error(_cli(empty.root, "report", "--dataset", "nope"), "none is registered in this home yet")

    for command in (["rank", "--zoo", "nope", "--dataset", "digits"],
                    ["validate", "--zoo", "nope", "--dataset", "digits"],
                    ["onboard", "builtin:digits", "--name", "more", "--zoo", "nope"]):
        _one_line_error(_cli(home.root, *command), "unknown zoo 'nope'", "demo-image")
    assert store.get_dataset("more") is None  # onboarding checked the zoo before registering anything


def test_validate_scores_an_imagenet_style_folder_on_val(prefect_harness, quiet_prefect, zoo, tmp_path):
    """train/<class>/ + val/<class>/ onboards, ranks and validates on 'val'; a bad --eval-split is one line before
    any work (it used to fail every model separately on the missing 'test' split and exit 1)."""
    home = Home.resolve(tmp_path / "home").ensure()
    folder = _split_folder(tmp_path / "my-images")
    out = _cli(home.root, "onboard", str(folder), "--name", "my-images", "--zoo", zoo)
    assert out.exit_code == 0, out.output
    assert re.search(r"^recommended metric: \w+\. Evidence: ", out.stdout, re.M)  # the ranking says which to trust

    out = _cli(home.root, "validate", "--zoo", zoo, "--dataset", "my-images", *BUDGET)
    assert out.exit_code == 0, out.output
    assert "Fine-tuned accuracy on the 'val' split" in out.stdout
    assert re.search(r"^recommended metric: \w+\. Evidence: ", out.stdout, re.M)
    assert "scoring on 'val' (the first held-out split of test, val" in out.stderr
    assert re.search(r"fine-tuning test_resnet \(lr 0\.01, wd 0; all of train\): 2 step in", out.stderr)
    store = ResultsStore(home.results_db)
    stored = store.query("SELECT model, budget FROM finetune ORDER BY model")
    assert stored.model.tolist() == ["test_efficientnet", "test_resnet"]
    assert all(json.loads(b)["splits"] == ["train", "val"] for b in stored.budget)
    job = store.job(store.latest_job("validate", dataset="my-images"))
    assert job["status"] == "completed" and job["params"]["splits"] == ["train", "val"]

    jobs = len(store.query("SELECT * FROM jobs"))
    _one_line_error(_cli(home.root, "validate", "--zoo", zoo, "--dataset", "my-images", "--eval-split", "nope",
                         *BUDGET), "has no split 'nope' (--eval-split); it has train, val")
    assert len(store.query("SELECT * FROM jobs")) == jobs  # no job started, no model touched


def test_demo_help_and_readme_say_what_the_demo_runs(monkeypatch):
    from facezoo import finetune
    from facezoo.models import create_model
    from flows import demo

    calls = {}

    def recorder(flow, returns):
        def record(*args, **kwargs):
            calls[flow] = kwargs
            return returns
        return record

    monkeypatch.setattr(demo, "rank_zoo", recorder("rank", {"dataset": "animal-mnist-s1000"}))
    monkeypatch.setattr(demo, "validate", recorder("validate", {}))
    monkeypatch.setenv("FACEZOO_PROGRESS", "off")
    demo.run_demo()
    runs = calls["validate"]["protocol"]
    assert runs == demo.PROTOCOL
    # what the demo's protocol means for a model that can be trained end to end: full fine-tuning
    assert finetune.resolve_protocol(create_model("timm:test_resnet", pretrained=False), runs) == ("full", None)

    from flows.cli import app

    help_text = " ".join(CliRunner().invoke(app, ["demo", "--help"]).stdout.split())
    help_text = re.sub(r"[│╭╮╰╯─]", " ", help_text)
    help_text = " ".join(help_text.split())
    assert "full fine-tuning of every model" in help_text and "frozen-head fine-tune" not in help_text
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("Run the main job"):readme.index("<!-- main-command -->")]
    paragraph = " ".join(paragraph.split())
    assert "end-to-end fine-tune of every model" in paragraph and "frozen" not in paragraph


def test_a_rank_in_a_log_says_each_stage_and_keeps_json_clean(prefect_harness, zoo, tmp_path):
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "home"
    log = tmp_path / "rank.log"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "FACEZOO_PROGRESS_INTERVAL": "0"}
    env.pop("FACEZOO_PROGRESS", None)
    with log.open("w") as stderr:  # a file, not a terminal: timed lines, no bars
        done = subprocess.run([sys.executable, "-m", "flows.cli", "--home", str(home), "rank", "--zoo", zoo,
                               "--dataset", "builtin:digits", "--max-samples", "30", "--metrics", "face,nc1",
                               "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                              timeout=300)
    said = log.read_text()
    assert done.returncode == 0, said
    summary = json.loads(done.stdout)  # stdout is the JSON alone
    assert summary["status"] == "completed"
    assert re.search(r"^ranking 2 models of zoo tiny-pair on digits-s30 \(2\d train samples, 2 metrics\)$", said, re.M)
    for line in ("scoring test_resnet", "scoring test_efficientnet", "ranking 2 models on 2 metrics",
                 "logging to MLflow"):
        assert f"\n{line}\n" in said, said
    assert "\r" not in said  # lines, not a bar redrawn in place


def test_progress_says_lines_in_a_log_a_bar_and_its_outcome_on_a_terminal_and_nothing_when_off(monkeypatch, capsys):
    from facezoo import progress

    def run():
        progress.stage("ranking 1 model")
        meter = progress.Progress(10, "fine-tuning m", unit="step", interval=0)
        meter.update(4, note="loss 2.000")
        meter.close(note="loss 1.500")
        meter.close()  # closing twice (a with block around an early close) says nothing more
        return capsys.readouterr()

    monkeypatch.setenv("FACEZOO_PROGRESS", "lines")
    said = run()
    assert said.out == ""
    lines = said.err.splitlines()
    assert lines[:3] == ["ranking 1 model", "fine-tuning m: 10 step", lines[2]] and len(lines) == 4
    assert re.fullmatch(r"fine-tuning m: 4/10 step \([\d.]+ step/s, loss 2\.000\)", lines[2])
    assert re.fullmatch(r"fine-tuning m: 4 step in [\d.]+ s \([\d.]+ step/s\); loss 1\.500", lines[3])
    monkeypatch.setenv("FACEZOO_PROGRESS", "bar")
    said = run()
    assert "\r" in said.err and said.out == ""
    assert re.search(r"\rfine-tuning m: 4 step in [\d.]+ s \([\d.]+ step/s\); loss 1\.500\n$", said.err)
    monkeypatch.setenv("FACEZOO_PROGRESS", "off")
    assert run() == ("", "")
