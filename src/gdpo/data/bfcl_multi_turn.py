"""Task ``bfcl_multi_turn``: BFCL v3's ``multi_turn_base`` entries on BFCL's executable APIs.

Rows come from the ``bfcl-eval`` package's data (``BFCL_v4_multi_turn_base.json``, whose
entries are BFCL v3's ``multi_turn_base``, and ``possible_answer/`` for the ground truth); the
package is a dependency, nothing is copied. Each row keeps BFCL's ``id`` and::

    prompt                the system message (BFCL's function docs of the involved classes,
                          minus excluded_function, and the <tool_call> format) + the first user turn;
                          ``docs="brief"``: one line per function (name, arguments, first sentence)
    env                   "bfcl" (gdpo.envs.bfcl.BFCLEnv)
    question              JSON: every user turn (the environment sends turns 2.. when the model answers)
    initial_config, involved_classes, excluded_function, ground_truth   JSON strings, as in BFCL
    max_turns             model turns allowed: user turns + ground-truth calls + 2 (param to override)
    max_trajectory_tokens the token budget after the prompt (param, default 4096)

**Split** (documented, fixed): the entry ``multi_turn_base_<k>`` is a *test* entry iff
``k % 5 == 0`` (40 of the 200: ids 0, 5, 10, ..., 195), else a *train* entry (160). No test id
is ever trained on; :func:`split_of` is the rule and the tests check it.

``reference_replies`` gives the ground-truth policy: per user turn, one model turn with that
turn's ground-truth calls as a ``<tool_call>`` block, then an answer; replayed through the
environment it must score 100% on BFCL's checker (:func:`evaluate_reference`).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from gdpo.data.base import Row, Task, register_task
from gdpo.envs.base import MULTI_TURN_RULES, Episode, check_limits, make_env, system_prompt
from gdpo.rewards.toolcall import render_tool_calls

CATEGORY = "multi_turn_base"
TEST_EVERY = 5
ANSWER = "Done."
import gdpo.envs.toy  # noqa: E402,F401  (registers the toy multi-turn tasks beside this one)


def split_of(entry_id: str) -> str:
    """'test' iff the id's number is a multiple of 5, else 'train' (see the module doc)."""
    k = int(entry_id.rsplit("_", 1)[1])
    return "test" if k % TEST_EVERY == 0 else "train"


def load_entries(category: str = CATEGORY) -> list[dict[str, Any]]:
    """BFCL's entries of ``category`` with their ``ground_truth``, in id order."""
    from bfcl_eval.constants.eval_config import POSSIBLE_ANSWER_PATH, PROMPT_PATH

    name = f"BFCL_v4_{category}.json"
    entries = [json.loads(line) for line in (PROMPT_PATH / name).read_text().splitlines() if line.strip()]
    answers = {a["id"]: a["ground_truth"] for a in
               (json.loads(line) for line in (POSSIBLE_ANSWER_PATH / name).read_text().splitlines() if line.strip())}
    for e in entries:
        e["ground_truth"] = answers[e["id"]]
    return sorted(entries, key=lambda e: int(e["id"].rsplit("_", 1)[1]))


def brief_doc(doc: dict[str, Any]) -> str:
    """``name(arg: type, arg2?: type): first sentence`` of a BFCL function doc (short prompts)."""
    params = doc.get("parameters", {})
    required = set(params.get("required", []))
    args = ", ".join(f"{k}{'' if k in required else '?'}: {v.get('type', 'any')}"
                     for k, v in params.get("properties", {}).items())
    text = doc.get("description", "").split("Tool description:")[-1].strip()
    return f"{doc['name']}({args}): {text.split('. ')[0].rstrip('.')}"


def entry_row(entry: dict[str, Any], *, max_turns: int | None = None, max_trajectory_tokens: int = 4096,
              docs: str = "full") -> Row:
    from gdpo.envs.bfcl import func_docs

    excluded = entry.get("excluded_function") or []
    schemas = func_docs(entry["involved_classes"], excluded)
    if docs == "full":
        system = system_prompt(schemas)
    elif docs == "brief":
        system = ("You can call these functions:\n" + "\n".join(brief_doc(d) for d in schemas)
                  + "\n\n" + MULTI_TURN_RULES)
    else:
        raise ValueError(f"task bfcl_multi_turn: docs={docs!r}; expected 'full' (BFCL's JSON docs) or 'brief'")
    turns = entry["question"]
    gt = entry["ground_truth"]
    return {
        "id": entry["id"],
        "prompt": [{"role": "system", "content": system}, *turns[0]],
        "env": "bfcl",
        "question": json.dumps(turns),
        "initial_config": json.dumps(entry["initial_config"]),
        "involved_classes": json.dumps(entry["involved_classes"]),
        "excluded_function": json.dumps(excluded),
        "ground_truth": json.dumps(gt),
        "max_turns": max_turns or len(turns) + sum(len(t) for t in gt) + 2,
        "max_trajectory_tokens": max_trajectory_tokens,
    }


@register_task("bfcl_multi_turn")
def bfcl_multi_turn_task(num_train: int | None = None, num_test: int | None = None,
                         max_turns: int | None = None, max_trajectory_tokens: int = 4096, docs: str = "full") -> Task:
    """BFCL multi_turn_base on its executable APIs; train/test split by id (module doc)."""
    check_limits("bfcl_multi_turn", max_turns, max_trajectory_tokens)
    if docs not in ("full", "brief"):
        raise ValueError(f"task bfcl_multi_turn: docs={docs!r}; expected 'full' (BFCL's JSON docs) or 'brief'")
    rows = [entry_row(e, max_turns=max_turns, max_trajectory_tokens=max_trajectory_tokens, docs=docs)
            for e in load_entries()]
    train = [r for r in rows if split_of(r["id"]) == "train"][:num_train]
    test = [r for r in rows if split_of(r["id"]) == "test"][:num_test]
    return Task("bfcl_multi_turn", train, test, rewards=[
        {"name": "final_state_match", "weight": 1.0}, {"name": "turn_format", "weight": 0.5},
        {"name": "call_efficiency", "weight": 0.5}, {"name": "env_no_errors", "weight": 0.5}],
        description="BFCL v3 multi_turn_base: several user turns, calls executed on BFCL's APIs",
        info={"category": CATEGORY, "split": f"test iff id number % {TEST_EVERY} == 0",
              "num_train": len(train), "num_test": len(test), "multi_turn": True,
              # the evaluation hook: records = fn(rows, model_or_None_for_reference, tokenizer, max_new_tokens=...)
              "evaluate": "gdpo.data.bfcl_multi_turn:evaluate_entries"})


# -- episodes outside the trainer (reference replay, text policies) ------------------------------

def run_text_episode(row: Row, reply: Callable[[Episode], str], max_turns: int | None = None) -> Episode:
    """Play one episode with a text policy ``reply(episode) -> the next model turn``.

    The same environment steps as the token-level rollout, without a tokenizer: for scripted
    policies (the reference) and API models.
    """
    env = make_env(row)
    env.reset(row)
    ep = Episode(env=env, turns=[], parsed=[], env_messages=[])
    limit = max_turns or int(row.get("max_turns") or 4)
    while True:
        text = reply(ep)
        parsed = env.parse(text)
        ep.turns.append(text)
        ep.parsed.append(parsed)
        if not parsed.ok:
            ep.parse_errors += 1
        result = env.step(parsed.calls if parsed.ok else [], text)
        if result.done:
            ep.end = "answer" if not parsed.calls else "env"
            break
        if len(ep.turns) >= limit:
            ep.end = "max_turns"
            break
        ep.env_messages.append(result.messages)
    ep.env_messages.append([])
    return ep


def reference_replies(row: Row) -> Callable[[Episode], str]:
    """The ground-truth policy of a BFCL row: each user turn's calls in one block, then an answer."""
    from gdpo.envs.bfcl import parse_call_string

    gt = json.loads(row["ground_truth"]) if isinstance(row["ground_truth"], str) else row["ground_truth"]
    script: list[str] = []

    def reply(ep: Episode) -> str:
        if not script:  # first call: build the script against this episode's environment
            table = ep.env.table
            for turn in gt:
                if turn:
                    script.append(render_tool_calls([parse_call_string(c, table) for c in turn]))
                script.append(ANSWER)
        return script[len(ep.turns)] if len(ep.turns) < len(script) else ANSWER

    return reply


def evaluate_entries(rows: list[Row], model=None, tokenizer=None, *, max_new_tokens: int = 256,
                     max_prompt_tokens: int = 8192, batch_size: int = 8) -> list[dict[str, Any]]:
    """One record per row: BFCL's multi-turn verdict (``accuracy`` 1.0 / 0.0) and the trajectory.

    ``model=None``: the ground-truth policy (``--model reference``); else greedy multi-turn
    episodes of ``model`` (HF generate, ``max_new_tokens`` per turn). The mean of ``accuracy``
    over rows is BFCL's multi-turn accuracy (BFCL's ``multi_turn_checker`` decides each entry).
    This is the hook for ``gdpo eval --task bfcl_multi_turn``.
    """
    from gdpo.envs.bfcl import bfcl_check

    if model is None:
        episodes = [run_text_episode(row, reference_replies(row)) for row in rows]
    else:
        from gdpo.rollout.multi_turn import generate_multi_turn

        episodes = []
        for start in range(0, len(rows), batch_size):
            out = generate_multi_turn(model, tokenizer, rows[start:start + batch_size], num_generations=1,
                                      max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens, greedy=True)
            episodes += [r["episode"] for r in out.rows]
    records = []
    for row, ep in zip(rows, episodes):
        verdict = bfcl_check(ep.env)
        records.append({"id": row["id"], "accuracy": 1.0 if verdict.get("valid") else 0.0,
                        "error_type": verdict.get("error_type"), "turns": len(ep.turns), "calls": ep.num_calls,
                        "env_errors": ep.errors, "end": ep.end, "state_match": ep.env.success(),
                        "trajectory": ep.summary()})
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """BFCL multi-turn accuracy and means over the records of :func:`evaluate_entries`."""
    n = max(1, len(records))
    errors: dict[str, int] = {}
    for r in records:
        if not r["accuracy"]:
            errors[str(r["error_type"])] = errors.get(str(r["error_type"]), 0) + 1
    return {"accuracy": sum(r["accuracy"] for r in records) / n, "correct": int(sum(r["accuracy"] for r in records)),
            "total": len(records), "state_match": sum(r["state_match"] for r in records) / n,
            "turns": sum(r["turns"] for r in records) / n, "calls": sum(r["calls"] for r in records) / n,
            "env_errors": sum(r["env_errors"] for r in records) / n, "error_types": errors}


def evaluate_reference(rows: list[Row]) -> dict[str, Any]:
    """BFCL multi-turn accuracy of the ground-truth policy (must be 1.0)."""
    return summarize(evaluate_entries(rows))


def evaluate_model(model, tokenizer, rows: list[Row], **kwargs: Any) -> dict[str, Any]:
    """BFCL multi-turn accuracy of a model: greedy multi-turn episodes, BFCL's checker."""
    records = evaluate_entries(rows, model, tokenizer, **kwargs)
    return {**summarize(records), "records": records}
