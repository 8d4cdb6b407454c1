"""Training with a learned reward: a tiny random reward model beside a rule reward, under GDPO.

The README's promise, end to end on CPU: ``rewards: [{name: reward_model, params: {model:
PATH}}, {name: math_format}]`` trains (2 steps), logs both rewards, and the reward model's
scores in samples.jsonl are what the model itself gives those (prompt, completion) pairs.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from gdpo import compute_advantages
from gdpo.cli import main
from gdpo.rewards.reward_model import save_tiny_reward_model
from gdpo.train import train

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def config(tmp_path, rewards, **top):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(output_dir=str(tmp_path / "run"), method="gdpo", steps=2, rewards=rewards, **top)
    cfg["model"]["tiny"] = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                            "max_positions": 1024}
    cfg["task"] = {"name": "math", "params": {}}
    cfg["rollout"].update(prompts_per_step=2, num_generations=4, max_new_tokens=6, max_prompt_tokens=256)
    cfg["logging"] = {"tensorboard": False, "samples_every": 1, "num_samples": 8}  # every sample of a step
    cfg["checkpoint"] = {"every": 0, "save_final_model": False}
    return cfg


def test_two_gdpo_steps_with_a_reward_model_and_a_rule_reward(tmp_path):
    rm = save_tiny_reward_model(tmp_path / "rm", seed=3)
    cfg = config(tmp_path, [{"name": "reward_model", "params": {"model": str(rm), "batch_size": 4}},
                            {"name": "math_format"}])
    result = train(cfg)
    assert result.steps_done == 2
    for row in result.history:
        assert math.isfinite(row["loss"]) and row["rewards/reward_model/errors"] == 0
        assert math.isfinite(row["rewards/reward_model/mean"]) and row["rewards/reward_model/std"] > 0
        assert 0.0 <= row["rewards/math_format/mean"] <= 1.0
        assert math.isfinite(row["advantages/mean"])
    # The logged scores are the reward model's own, on the prompt the policy saw.
    samples = [json.loads(line) for line in (Path(cfg["output_dir"]) / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 2 * 4
    tok = AutoTokenizer.from_pretrained(rm)
    model = AutoModelForSequenceClassification.from_pretrained(rm).eval()
    for s in samples:
        messages = [*s["prompt"], {"role": "assistant", "content": s["completion"]}]
        ids = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False,
                  return_tensors="pt")["input_ids"]
        with torch.no_grad():
            want = model(input_ids=ids).logits[0, 0].item()
        assert s["rewards"]["reward_model"] == pytest.approx(want, abs=1e-4)
    # GDPO's advantages are those of the logged [N, 2] rewards (the RM's arbitrary scale normalized away)
    for step in (1, 2):
        rows = [s for s in samples if s["step"] == step]
        values = np.array([[s["rewards"]["reward_model"], s["rewards"]["math_format"]] for s in rows])
        want = compute_advantages(values, [s["group"] for s in rows], method="gdpo")
        assert [s["advantage"] for s in rows] == pytest.approx(want.tolist(), abs=1e-5)


def test_cli_refuses_a_wrong_reward_model_path_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    rewards = [{"name": "reward_model", "params": {"model": str(tmp_path / "nope")}}, {"name": "math_format"}]
    path.write_text(yaml.safe_dump(config(tmp_path, rewards)))
    code = main(["train", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "no such folder" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


class LengthJudge(BaseHTTPRequestHandler):
    """A chat-completions endpoint that scores the graded answer by its length: 'Score: len % 11'."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        answer = prompt.split("Answer to grade:\n", 1)[1].rsplit("\n\nReply with", 1)[0]
        self.server.prompts.append(prompt)
        data = json.dumps({"choices": [{"message": {"role": "assistant",
                                                    "content": f"Score: {len(answer.strip()) % 11}"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_two_gdpo_steps_with_a_judge_on_a_local_endpoint(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), LengthJudge)
    httpd.prompts = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        cfg = config(tmp_path, [{"name": "judge", "params": {"base_url": url, "model": "local-judge"}},
                                {"name": "math_format"}])
        result = train(cfg)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.steps_done == 2
    samples = [json.loads(line) for line in (Path(cfg["output_dir"]) / "samples.jsonl").read_text().splitlines()]
    for row in result.history:
        assert row["rewards/judge/errors"] == 0 and math.isfinite(row["loss"])
    for s in samples:
        assert s["rewards"]["judge"] == len(s["completion"].strip()) % 11
    assert len(httpd.prompts) <= 16  # one request per distinct (question, completion, reference), cached
    assert all("Reference answer:\n" in p for p in httpd.prompts)  # the math task's answer column
