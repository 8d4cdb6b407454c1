"""The `judge` reward: parse rules, a real OpenAI-compatible HTTP endpoint on 127.0.0.1, a local causal LM.

The endpoint is ``http.server`` in a thread speaking the chat-completions JSON shape. What it
replies is steered by a marker the completion carries (the completion is quoted in the judge's
prompt): ``<<reply:TEXT>>`` replies TEXT, ``<<fail:N:CODE>>`` answers HTTP CODE to the first N
requests of that prompt, ``<<sleep:S>>`` waits S seconds, ``<<garbage>>`` answers a body that
is not JSON; otherwise it replies ``Score: 5``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import gdpo.rewards
from gdpo.rewards import judge_http, learned
from gdpo.rewards.judge import JudgeParseError, parse_score
from gdpo.rewards.reward_set import RewardSet

MARKER = re.compile(r"<<(\w+)(?::([^>]*))?>>")


class JudgeServer:
    """A chat-completions endpoint; records every request (prompt, headers, model) and the peak in flight."""

    def __init__(self):
        self.requests: list[dict] = []
        self.attempts: Counter = Counter()
        self.inflight = self.peak = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                            "model": body["model"], "prompt": prompt, "body": body})
                    server.attempts[prompt] += 1
                    attempt = server.attempts[prompt]
                    server.inflight += 1
                    server.peak = max(server.peak, server.inflight)
                try:
                    code, data = self.answer(prompt, attempt)
                finally:
                    # out of flight *before* the reply leaves: once the client has it, it may send
                    # its next request at once, and that one must not count this one as in flight
                    with server.lock:
                        server.inflight -= 1
                self.send(code, data)

            def answer(self, prompt, attempt):
                found = MARKER.search(prompt)
                kind, arg = (found.group(1), found.group(2)) if found else ("default", None)
                if kind == "sleep":
                    time.sleep(float(arg))
                if kind == "fail":
                    times, code = arg.split(":")
                    if attempt <= int(times):
                        return int(code), b'{"error": "try again"}'
                if kind == "garbage":
                    return 200, b"<html>not json</html>"
                text = arg if kind == "reply" else "Score: 5"
                reply = {"id": "x", "object": "chat.completion", "model": "judge",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}]}
                return 200, json.dumps(reply).encode()

            def send(self, code, data):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = JudgeServer()
    yield s
    s.close()


def http_judge(server, **params):
    base = dict(backend="http", base_url=server.url, model="test-judge", backoff_s=0.0, timeout_s=5.0)
    return {"name": "judge", "params": {**base, **params}}


# -- parse rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("reply, score", [
    ("Score: 7", 7.0),
    ("The answer is right.\nScore: 8/10", 8.0),
    ("**Score:** 9.5", 9.5),
    ("score = 2", 2.0),
    ("Score: 3. On reflection, Score: 4", 4.0),  # the last one counts
    ("6", 6.0),
    (" 7/10. ", 7.0),
    ("10 out of 10", 10.0),
    ("Score: 0", 0.0),
])
def test_parse_rules_accept(reply, score):
    assert parse_score(reply, 0, 10) == score


@pytest.mark.parametrize("reply, words", [
    ("great answer", "no 'Score: N'"),
    ("I give it 7 because", "no 'Score: N'"),  # a number inside prose is not a score
    ("Score: 11", "outside [0, 10]"),
    ("Score: -1", "outside [0, 10]"),
    ("4/5", "not out of max_score 10"),
    ("", "no 'Score: N'"),
])
def test_parse_rules_refuse(reply, words):
    with pytest.raises(JudgeParseError, match=re.escape(words)):
        parse_score(reply, 0, 10)


def test_score_regex_overrides_the_rules():
    rx = re.compile(r"rating\s+(\d+)")
    assert parse_score("rating 3 then rating 4", 1, 5, rx) == 4.0
    with pytest.raises(JudgeParseError, match="no match for score_regex"):
        parse_score("Score: 3", 1, 5, rx)


# -- HTTP endpoint -------------------------------------------------------------------------
def test_http_judge_scores_parses_and_floors_failures_without_crashing(server):
    rs = RewardSet.from_config([http_judge(server, max_retries=1), "toy_short"])
    completions = ["<<reply:Score: 7>>", "<<reply:Score: 9/10>>", "<<reply:lovely>>", "<<garbage>>",
                   "<<fail:1:503>>", "<<fail:5:500>>", "<<fail:1:404>>", "<<reply:Score: 12>>", "plain"]
    scores = rs.score(completions, prompts=["Q?"] * 9, target=["a"] * 9, max_len=[3] * 9)
    # 503 once then fine -> the default 'Score: 5'; 500 five times with 1 retry -> floor; 404 -> no retry, floor
    assert scores.column("judge").tolist() == [7.0, 9.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 5.0]
    err = scores.errors["judge"]
    assert err.count == 5  # lovely, garbage, 500 x2, 404, 12 out of range: 5 samples
    assert "no 'Score: N'" in err.first_message and "lovely" in err.first_message
    tries = {c: n for c in completions for p, n in server.attempts.items() if c in p}
    # retries only for what a retry can fix; the reward set's per-sample pass asked nobody again
    assert tries == {"<<reply:Score: 7>>": 1, "<<reply:Score: 9/10>>": 1, "<<reply:lovely>>": 1, "<<garbage>>": 1,
                     "<<fail:1:503>>": 2, "<<fail:5:500>>": 2, "<<fail:1:404>>": 1, "<<reply:Score: 12>>": 1,
                     "plain": 1}
    assert scores.column("toy_short").tolist() == [0.0] * 9  # every completion is over 3 characters
    assert rs.score(["<<fail:5:500>>"], prompts=["Q?"], target=["a"], max_len=[3]).errors["judge"].count == 1


def test_request_shape_key_from_env_model_rubric_and_reference(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-local-123")
    fn = gdpo.rewards.get("judge", **http_judge(server, api_key_env="JUDGE_TEST_KEY", rubric="Be strict.",
                                                max_new_tokens=7, min_score=1, max_score=5)["params"])
    q = [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 2+2?"}]
    got = fn(["<<reply:Score: 4>>", "<<reply:3>>"], prompts=[q, q], answer=["4", None])
    assert got == [4.0, 3.0]
    first, second = sorted(server.requests, key=lambda r: r["prompt"])[::-1]
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert {r["auth"] for r in server.requests} == {"Bearer sk-local-123"}
    assert first["model"] == "test-judge" and first["body"]["max_tokens"] == 7 and first["body"]["temperature"] == 0
    assert "Be strict." in first["prompt"] and "Question:\nWhat is 2+2?" in first["prompt"]
    assert "from 1 to 5" in first["prompt"] and "sys" not in first["prompt"]
    # the reference appears only where the row has one
    with_ref = [r["prompt"] for r in server.requests if "Score: 4" in r["prompt"]][0]
    without = [r["prompt"] for r in server.requests if "<<reply:3>>" in r["prompt"]][0]
    assert "Reference answer:\n4" in with_ref and "Reference answer" not in without


def test_timeout_is_a_failure_not_a_hang(server):
    rs = RewardSet.from_config([http_judge(server, timeout_s=0.2, max_retries=1)])
    start = time.perf_counter()
    scores = rs.score(["<<sleep:1.0>>", "<<reply:Score: 3>>"], prompts=["Q"] * 2)
    elapsed = time.perf_counter() - start
    assert scores.values[:, 0].tolist() == [0.0, 3.0]
    assert "within 0.2 s" in scores.errors["judge"].first_message
    assert "after 2 attempt(s)" in scores.errors["judge"].first_message
    assert elapsed < 1.8  # two 0.2 s attempts, not the server's 1 s per try (plus slack for a busy machine)


def test_concurrency_limit(server):
    fn = gdpo.rewards.get("judge", **http_judge(server, max_concurrency=2)["params"])
    got = fn([f"<<sleep:0.15>> #{i}" for i in range(6)], prompts=["Q"] * 6)
    assert got == [5.0] * 6 and len(server.requests) == 6
    assert server.peak == 2  # never more than 2 in flight, and the 2 slots were used


def test_cache_scores_repeated_completions_once(server):
    fn = gdpo.rewards.get("judge", **http_judge(server)["params"])
    group = ["<<reply:Score: 7>>", "<<reply:Score: 2>>", "<<reply:Score: 7>>", "<<reply:Score: 7>>"]
    assert fn(group, prompts=["Q"] * 4) == [7.0, 2.0, 7.0, 7.0]
    assert fn(group, prompts=["Q"] * 4) == [7.0, 2.0, 7.0, 7.0]
    assert len(server.requests) == 2  # 2 distinct judge prompts, asked once over both calls
    assert fn.cache.stats().hit_rate == pytest.approx(6 / 8)
    # a different question is a different judge prompt
    fn(["<<reply:Score: 7>>"], prompts=["Another Q"])
    assert len(server.requests) == 3


def test_floor_mode_outside_a_reward_set(server):
    fn = gdpo.rewards.get("judge", **http_judge(server, on_error="floor", min_score=1, max_score=10,
                                                max_retries=0)["params"])
    assert fn(["<<garbage>>", "<<reply:Score: 8>>", "<<fail:1:500>>"]) == [1.0, 8.0, 1.0]
    assert fn.error_count == 2


def test_unreachable_endpoint_is_counted_not_raised():
    rs = RewardSet.from_config([{"name": "judge", "params": {
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 1, "backoff_s": 0, "timeout_s": 2}}])
    scores = rs.score(["a", "b"], prompts=["Q", "Q"])
    assert scores.values[:, 0].tolist() == [0.0, 0.0] and scores.errors["judge"].count == 2
    assert "cannot reach" in scores.errors["judge"].first_message or "failed" in scores.errors["judge"].first_message


@pytest.mark.parametrize("params, words", [
    ({"base_url": "127.0.0.1:8000", "model": "m"}, "params.base_url"),
    ({"base_url": "http://127.0.0.1:1/v1"}, "params.model = None"),
    ({"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": "GDPO_NO_SUCH_KEY_VAR"},
     "environment variable GDPO_NO_SUCH_KEY_VAR is not set"),
    ({"base_url": "http://127.0.0.1:1/v1", "model": "m", "min_score": 5, "max_score": 5}, "params.max_score = 5"),
    ({"base_url": "http://127.0.0.1:1/v1", "model": "m", "template": "Rate {answer}"}, "unknown field(s) ['answer']"),
    ({"base_url": "http://127.0.0.1:1/v1", "model": "m", "template": "Rate it"}, "must contain {completion}"),
    ({"base_url": "http://127.0.0.1:1/v1", "model": "m", "score_regex": "\\d+"}, "needs one group"),
    ({"base_url": "http://127.0.0.1:1/v1", "model": "m", "max_concurrency": 0}, "params.max_concurrency = 0"),
    ({"base_url": "http://127.0.0.1:1/v1", "model": "m", "timeout_s": 0}, "params.timeout_s = 0"),
    ({"backend": "hf", "model": "/no/such/judge"}, "no such folder"),
    ({"backend": "hf", "model": "/tmp", "base_url": "http://x"}, "params.base_url"),
    ({"backend": "grpc", "model": "m"}, "params.backend = 'grpc'"),
])
def test_bad_options_fail_before_anything_loads_or_connects(params, words, monkeypatch):
    monkeypatch.delenv("GDPO_NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError) as info:  # LearnedRewardError, or the schema check wrapping it
        RewardSet.from_config([{"name": "judge", "params": params}])
    assert words in str(info.value)
    with pytest.raises(ValueError):
        learned.precheck([{"name": "judge", "params": params}])


def test_retry_after_header_and_backoff_are_honoured(monkeypatch):
    slept = []
    calls = iter([judge_http._Retryable("busy", 0.25), judge_http._Retryable("busy"), "Score: 1"])

    def fake_once(endpoint, prompt):
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(judge_http, "chat_once", fake_once)
    ep = judge_http.Endpoint(base_url="http://127.0.0.1:1", model="m", max_retries=2, backoff_s=0.1)
    assert judge_http.chat_with_retries(ep, "p", sleep=slept.append) == "Score: 1"
    assert slept == [0.25, 0.2]  # the server's Retry-After, then backoff_s * 2**1


# -- local causal LM -----------------------------------------------------------------------
def chain_lm(folder, chain: str):
    """A tiny Llama whose greedy reply to any chat prompt is ``chain`` then EOS.

    Every layer's output projections are zero, so the last hidden state is the last token's
    embedding: the next token depends on the current one only. Embeddings of the chain's
    tokens are orthogonal, and the head maps <|assistant|> -> chain[0] -> chain[1] ... -> EOS.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from gdpo.models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    ids = [tok.convert_tokens_to_ids("<|assistant|>")] + tok.convert_tokens_to_ids(list(chain))
    assert len(set(ids)) == len(ids), "chain tokens must be distinct"
    targets = ids[1:] + [tok.eos_token_id]
    hidden = 32
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=32, max_position_embeddings=1024,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (src, dst) in enumerate(zip(ids, targets)):
            v = torch.zeros(hidden)
            v[k] = hidden ** 0.5  # unit RMS: the final norm leaves it as is
            model.model.embed_tokens.weight[src] = v
            model.lm_head.weight[dst, k] = 10.0
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_hf_judge_generates_and_parses(tmp_path):
    seven = chain_lm(tmp_path / "seven", "7")
    rs = RewardSet.from_config([{"name": "judge", "params": {"backend": "hf", "model": str(seven), "batch_size": 2,
                                                             "max_new_tokens": 4}}])
    fn = rs.fns[0]
    assert fn.generate(["Rate this: x", "a longer prompt to pad against"]) == ["7", "7"]
    scores = rs.score(["x", "y", "x"], prompts=["Q"] * 3)
    assert scores.values[:, 0].tolist() == [7.0, 7.0, 7.0] and scores.errors["judge"].count == 0
    assert fn.cache.stats().hits == 1
    assert not fn.loaded.model.training and not any(p.requires_grad for p in fn.loaded.model.parameters())


def test_hf_judge_garbage_reply_scores_the_floor_and_is_counted(tmp_path):
    garbage = chain_lm(tmp_path / "garbage", "no!")
    rs = RewardSet.from_config([{"name": "judge", "params": {"backend": "hf", "model": str(garbage),
                                                             "max_new_tokens": 5}},
                                "toy_short"], )
    scores = rs.score(["x", "y"], prompts=["Q"] * 2, target=["a"] * 2, max_len=[3] * 2)
    assert scores.column("judge").tolist() == [0.0, 0.0]
    assert scores.errors["judge"].count == 2 and "'no!'" in scores.errors["judge"].first_message
    assert scores.column("toy_short").tolist() == [1.0, 1.0]


def test_hf_judge_refuses_a_classifier(tmp_path):
    from gdpo.rewards.reward_model import save_tiny_reward_model

    rm = save_tiny_reward_model(tmp_path / "rm")
    with pytest.raises(ValueError, match="cannot generate.*'reward_model'"):
        RewardSet.from_config([{"name": "judge", "params": {"backend": "hf", "model": str(rm)}}])


def test_http_judge_against_judge_serve_over_a_local_causal_lm(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gdpo.rewards.judge_serve import ChatModel, make_server

    folder = chain_lm(tmp_path / "seven", "7")
    server = make_server(ChatModel(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder),
                                   "seven"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        rs = RewardSet.from_config([{"name": "judge", "params": {"base_url": url, "model": "seven"}}])
        scores = rs.score(["x", "y"], prompts=["Q", "Q"])
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/completions", data=b"{}")
    finally:
        server.shutdown()
        server.server_close()
    assert scores.values[:, 0].tolist() == [7.0, 7.0] and scores.errors["judge"].count == 0
    assert info.value.code == 404


def test_gdpo_score_with_a_judge_on_the_endpoint(server, tmp_path, capsys):
    from gdpo.cli import main

    path = tmp_path / "c.jsonl"
    lines = [{"completion": "<<reply:Score: 8>>", "prompt": "Q", "answer": "4"},
             {"completion": "<<reply:no idea>>", "prompt": "Q", "answer": "4"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code = main(["score", "--rewards", "judge", "--param", f"judge.base_url={server.url}", "--param", "judge.model=m",
                 "--param", "judge.backoff_s=0", "--input", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "c.scores.jsonl").read_text().splitlines()]
    assert [r["scores"]["judge"] for r in rows] == [8.0, 0.0]
    assert "raised on 1 completion(s)" in out and "no idea" in out  # the unparseable reply, counted
    assert all("Reference answer:\n4" in r["prompt"] for r in server.requests)


def test_called_by_trl_directly_a_failed_reply_floors_instead_of_raising(server):
    from gdpo.rewards.score_cache import ScoringFailed

    fn = gdpo.rewards.get("judge", **http_judge(server, max_retries=0, min_score=1)["params"])
    logged = {}
    got = fn(["<<reply:Score: 6>>", "<<garbage>>"], prompts=["Q", "Q"], trainer_state=object(),
             completion_ids=[[1], [2]], log_metric=lambda k, v: logged.setdefault(k, v))
    assert got == [6.0, 1.0] and fn.error_count == 1 and "judge/cache_hit_rate" in logged
    with pytest.raises(ScoringFailed, match="not chat-completions JSON"):  # no trainer_state: the reward-set way
        fn(["<<garbage>>"], prompts=["Q"])
