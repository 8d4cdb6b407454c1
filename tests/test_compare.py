"""`gdpo compare` end to end with the real trainer: tiny runs, resume, skip, report, argument errors."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gdpo.cli import main
from gdpo.reports.compare import CompareError, compare, last_logged_step, method_list, run_state, seed_list

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
STEPS = 3
# Tiny and quick: 2 prompts x 4 rollouts, 4 new tokens, a checkpoint every step, 4 test prompts.
TINY = [f"steps={STEPS}", "rollout.prompts_per_step=2", "rollout.num_generations=4", "rollout.max_new_tokens=4",
        "checkpoint.every=1", "checkpoint.keep_last=2", "logging.samples_every=0", "eval.every=3",
        "eval.num_prompts=4", "task.params.num_rewards=2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """grpo and gdpo, seeds 0 and 1, two runs at a time."""
    out = tmp_path_factory.mktemp("compare") / "runs"
    result = compare(SMOKE, "grpo,gdpo", 2, out, overrides=TINY, parallel=2, echo=lambda *_: None)
    return out, result


def test_every_run_finishes_and_the_report_is_written(finished):
    out, result = finished
    assert not result.failed, [(r.method, r.seed, r.log) for r in result.failed]
    assert sorted((r.method, r.seed, r.action) for r in result.runs) == [
        ("gdpo", 0, "started"), ("gdpo", 1, "started"), ("grpo", 0, "started"), ("grpo", 1, "started")]
    for method in ("grpo", "gdpo"):
        for seed in (0, 1):
            run = out / method / f"seed{seed}"
            assert run_state(run, STEPS) == "done"
            saved = yaml.safe_load((run / "config.yaml").read_text())
            assert (saved["method"], saved["seed"]) == (method, seed)
    names = {p.name for p in result.report_files}
    assert {"report.md", "report.html", "summary.json", "train_rewards.png", "eval_rewards.png",
            "collapse.png", "scores.png"} <= names


def test_report_numbers_come_from_the_runs(finished):
    out, _ = finished
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["score_source"] == "eval"  # eval.every=3 wrote eval.jsonl in every run
    assert summary["rewards"] == ["toy_letter", "toy_short"]
    assert [v["reward"] for v in summary["verdicts"]] == ["toy_letter", "toy_short"]
    last_eval = json.loads((out / "gdpo" / "seed1" / "eval.jsonl").read_text().splitlines()[-1])
    assert summary["scores"]["toy_short"]["gdpo"]["final"][1] == pytest.approx(last_eval["eval/toy_short/mean"])
    assert summary["invocations"][0]["parallel"] == 2
    md = (out / "report" / "report.md").read_text()
    assert "Welch" in md and "## Collapse diagnostics" in md and "(started" in md


def test_html_is_self_contained(finished):
    out, _ = finished
    page = (out / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page


def test_a_second_call_skips_finished_runs(finished):
    out, _ = finished
    again = compare(SMOKE, ["grpo", "gdpo"], 2, out, overrides=TINY, echo=lambda *_: None)
    assert [r.action for r in again.runs] == ["skipped"] * 4


@pytest.mark.slow  # one more trainer process (~20 s on 2 busy cores)
def test_an_interrupted_run_is_resumed_to_the_end(finished, tmp_path):
    out, _ = finished
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    run = copy / "gdpo" / "seed0"
    # What a kill after step 2 leaves: no step-3 checkpoint, a metrics line for step 3 at most half-written.
    shutil.rmtree(run / "checkpoints" / "step-000003")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:2]) + lines[2][:40])
    assert run_state(run, STEPS) == "partial"
    result = compare(SMOKE, "grpo,gdpo", 2, copy, overrides=TINY, echo=lambda *_: None)
    actions = {(r.method, r.seed): r.action for r in result.runs}
    assert actions.pop(("gdpo", 0)) == "resumed" and set(actions.values()) == {"skipped"}
    assert not result.failed
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and last_logged_step(run) == STEPS
    assert "resumed from" in (run / "train.log").read_text()


def test_a_changed_config_in_the_same_folder_is_refused(finished):
    out, _ = finished
    with pytest.raises(CompareError, match="different config"):
        compare(SMOKE, "grpo,gdpo", 2, out, overrides=[*TINY, "optim.lr=0.1"], echo=lambda *_: None)


def test_report_only_through_the_command_line(finished, tmp_path):
    out, _ = finished
    code = main(["compare", "--output-dir", str(out), "--report-only", "--report-dir", str(tmp_path / "r"),
                 "--note", "a shared test box"])
    assert code == 0
    assert (tmp_path / "r" / "report.html").stat().st_size > 10_000
    assert "- note: a shared test box" in (tmp_path / "r" / "report.md").read_text()


def test_command_line_rejects_bad_arguments(tmp_path, capsys):
    assert main(["compare", "--methods", "grpo,gdpo_typo", "--output-dir", str(tmp_path)]) == 2
    assert "gdpo_typo" in capsys.readouterr().err
    assert main(["compare", "--report-only", "--output-dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_seed_and_method_lists():
    assert seed_list("3") == [0, 1, 2] and seed_list(2) == [0, 1] and seed_list("4,1") == [4, 1]
    for bad in ("0", "x", "1,1", "-1,2"):
        with pytest.raises(CompareError, match="--seeds"):
            seed_list(bad)
    assert method_list(" grpo , gdpo ") == ["grpo", "gdpo"]
    with pytest.raises(CompareError, match="twice"):
        method_list("gdpo,gdpo")


def test_a_base_config_saved_before_a_field_existed_is_the_same_experiment(tmp_path):
    # a newer gdpo adds config fields with defaults: the saved base config lacks them, and the
    # comparison continues; a real change (steps) is still refused
    from gdpo.reports.compare import resolve_base_config, write_base_config

    base = resolve_base_config(None, ["steps=3"])
    older = {k: v for k, v in base.items() if k != "sandbox_min_level"}
    older["rollout"] = {k: v for k, v in base["rollout"].items() if k != "long_prompts"}
    (tmp_path / "base_config.yaml").write_text(yaml.safe_dump(older, sort_keys=False))
    write_base_config(tmp_path, base)  # accepted, and rewritten in full
    assert yaml.safe_load((tmp_path / "base_config.yaml").read_text()) == base
    with pytest.raises(CompareError, match="holds a different config"):
        write_base_config(tmp_path, resolve_base_config(None, ["steps=4"]))
