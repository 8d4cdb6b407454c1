"""The judge's HTTP backend: an OpenAI-compatible ``POST {base_url}/chat/completions``.

Standard library only (``urllib``). One request per judge prompt::

    {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
     "temperature": T, "max_tokens": M}

and the reply text is ``choices[0].message.content``. ``Authorization: Bearer KEY`` is sent
when a key is configured (read from an environment variable by the judge, never from config).

Failures never raise out of :func:`chat_many`: each prompt gets its reply text or a
:class:`~gdpo.rewards.score_cache.SampleFailure` naming what went wrong. Retried (up to
``max_retries`` more attempts, sleeping ``backoff_s * 2**attempt``, or the server's
``Retry-After`` when it is shorter than 30 s): connection errors, timeouts, HTTP 408, 409, 429
and 5xx. Not retried: other 4xx (a wrong URL, model or key will not fix itself) and a reply
that is not the chat-completions JSON shape. At most ``max_concurrency`` requests are in
flight at once.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gdpo.rewards.score_cache import SampleFailure

RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class Endpoint:
    """Where and how to ask; ``api_key`` None = no Authorization header."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 2
    backoff_s: float = 0.5
    max_concurrency: int = 4
    max_tokens: int = 32
    temperature: float = 0.0

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


class _Retryable(Exception):
    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


def chat_once(endpoint: Endpoint, prompt: str) -> str:
    """One request; raises ``_Retryable`` or ``ValueError`` (not retryable) on failure."""
    body = json.dumps({"model": endpoint.model, "messages": [{"role": "user", "content": prompt}],
                       "temperature": endpoint.temperature, "max_tokens": endpoint.max_tokens}).encode()
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    request = urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode(errors="replace")
        message = f"HTTP {exc.code} from {endpoint.url}: {detail}"
        if exc.code in RETRY_STATUS:
            raise _Retryable(message, _retry_after(exc.headers.get("Retry-After"))) from None
        raise ValueError(message) from None
    except (TimeoutError, socket.timeout):
        raise _Retryable(f"no reply from {endpoint.url} within {endpoint.timeout_s} s (timeout_s)") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise _Retryable(f"no reply from {endpoint.url} within {endpoint.timeout_s} s (timeout_s)") from None
        raise _Retryable(f"cannot reach {endpoint.url}: {exc.reason}") from None
    except (ConnectionError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"connection to {endpoint.url} failed: {exc}") from None
    return reply_text(raw)


def reply_text(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat-completions reply; ValueError if not that shape."""
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        raise ValueError(f"reply is not chat-completions JSON: {raw[:120]!r}") from None
    if not isinstance(content, str):
        raise ValueError(f"reply's message content is {type(content).__name__}, not text")
    return content


def _retry_after(value: str | None) -> float | None:
    try:
        wait = float(value) if value is not None else None
    except ValueError:
        return None
    return wait if wait is not None and 0 <= wait < 30 else None


def chat_with_retries(endpoint: Endpoint, prompt: str, sleep=time.sleep) -> str | SampleFailure:
    """The reply text, or a SampleFailure after the retries are spent (or a non-retryable error)."""
    for attempt in range(endpoint.max_retries + 1):
        try:
            return chat_once(endpoint, prompt)
        except ValueError as exc:
            return SampleFailure(str(exc))
        except _Retryable as exc:
            if attempt == endpoint.max_retries:
                return SampleFailure(f"{exc} (after {attempt + 1} attempt(s))")
            sleep(exc.wait_s if exc.wait_s is not None else endpoint.backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


def chat_many(endpoint: Endpoint, prompts: list[str]) -> list[str | SampleFailure]:
    """Replies in prompt order, at most ``max_concurrency`` requests in flight."""
    if not prompts:
        return []
    workers = min(endpoint.max_concurrency, len(prompts))
    if workers == 1:
        return [chat_with_retries(endpoint, p) for p in prompts]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gdpo-judge") as pool:
        return list(pool.map(lambda p: chat_with_retries(endpoint, p), prompts))
