"""A minimal OpenAI-compatible chat-completions server over a local HF causal LM.

For trying the ``judge`` reward's HTTP backend without a serving stack (a real deployment
would use vLLM, TGI, llama.cpp or a hosted API, all of which speak the same shape)::

    python -m gdpo.rewards.judge_serve --model smollm2 --port 8000
    # judge params: {base_url: "http://127.0.0.1:8000/v1", model: smollm2}

``POST /v1/chat/completions`` with ``{"model", "messages", "max_tokens", "temperature"}``
answers ``{"choices": [{"message": {"role": "assistant", "content": ...}}]}``; generation is
greedy at temperature 0, one request at a time (a lock), under ``torch.inference_mode()``.
``GET /v1/models`` lists the one model. Binds 127.0.0.1 unless told otherwise. Standard
library HTTP only.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatModel:
    """A loaded causal LM that answers chat messages."""

    def __init__(self, model: Any, tokenizer: Any, name: str):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.lock = threading.Lock()

    def reply(self, messages: list[dict[str, Any]], max_tokens: int = 64, temperature: float = 0.0) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
        else:
            enc = tok("\n".join(str(m.get("content", "")) for m in messages), return_tensors="pt")
        sample = temperature > 0
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with self.lock, torch.inference_mode():
            out = self.model.generate(**enc.to(self.model.device), max_new_tokens=max_tokens, do_sample=sample,
                                      temperature=temperature if sample else None, top_p=None, top_k=None,
                                      pad_token_id=pad)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def make_server(chat: ChatModel, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The HTTP server (not started); ``server.server_address[1]`` is the port (0 = any free one)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": chat.name, "object": "model"}]})
            self._send(404, {"error": {"message": f"no route {self.path}; use POST /v1/chat/completions"}})

        def do_POST(self):
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}; use /v1/chat/completions"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages = body["messages"]
                max_tokens = int(body.get("max_tokens") or 64)
                temperature = float(body.get("temperature") or 0.0)
            except (ValueError, KeyError, TypeError) as exc:
                return self._send(400, {"error": {"message": f"bad request: {exc}"}})
            text = chat.reply(messages, max_tokens, temperature)
            self._send(200, {"object": "chat.completion", "model": chat.name,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}]})

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a local causal-LM folder, or 'smollm2' (embedded)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    from gdpo.models import load_model_and_tokenizer

    loaded = load_model_and_tokenizer(args.model)
    server = make_server(ChatModel(loaded.model, loaded.tokenizer, args.model), args.host, args.port)
    print(f"serving {args.model} at http://{args.host}:{server.server_address[1]}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
