"""The ``openai`` backend: views from an OpenAI-compatible completions server.

vLLM (``--enable-lora --lora-modules advisor-<hash16>=<adapter dir>``), SGLang and llama.cpp's server
all speak ``POST {base}/completions``. The prompt is sent already rendered in the model's chat
template, so the server sees exactly what the local backends see; the model named in each request
is the user's adapter (``server_adapter_prefix`` + the first 16 hex digits of its content hash) or
the base model. ``advisor model served-names`` prints those names for a server's command line.

Completions are idempotent, so a request that fails with a connection error, a timeout, 429 or a 5xx
is retried with exponential backoff (tenacity) up to ``server_retries`` attempts; anything else, or
a server that stays down, is an :class:`InferenceServerError` that says what to do. The early-stop
rules are applied to the returned text, so a view reads the same as from a local backend. An API key,
when the server needs one, comes from ``ADVISOR_INFERENCE_API_KEY`` (or ``OPENAI_API_KEY``) in the
environment only and is never printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from advisor.config import InferenceSettings
from advisor.errors import AdvisorError
from advisor.forecaster.backends import PromptJob, RawGeneration
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelHandle
from advisor.forecaster.views import answer_stop_reason

CONNECT_TIMEOUT_S = 5.0


class InferenceServerError(AdvisorError):
    """The inference server is unreachable, refused a request, or answered something unusable."""


class _Retryable(Exception):
    """A failure worth another attempt (connection, timeout, 429, 5xx)."""


def served_name(handle: ModelHandle, settings: InferenceSettings) -> str:
    """The model name a request for ``handle`` carries."""
    if handle.adapter_hash is not None:
        return f"{settings.server_adapter_prefix}{handle.adapter_hash[:16]}"
    from pathlib import Path

    return settings.server_model or Path(handle.base.base_id).name


def cut_at_stop(text: str) -> tuple[str, str | None]:
    """The text up to the line where :func:`answer_stop_reason` fires, and the reason (or None)."""
    position = 0
    while (newline := text.find("\n", position)) != -1:
        prefix = text[: newline + 1]
        reason = answer_stop_reason(prefix)
        if reason is not None:
            return prefix, reason
        position = newline + 1
    return text, None


class ServerBackend:
    name = "openai"
    grounds = False  # completions servers take no token-level constraint of ours; views are checked as usual

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.url = settings.server_url.rstrip("/") + "/completions"
        key = os.environ.get("ADVISOR_INFERENCE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})

    def generate(
        self, handle: ModelHandle, jobs: list[PromptJob], decoding: Decoding, on_done: Callable[[int], None]
    ) -> list[list[RawGeneration]]:
        import requests

        model = served_name(handle, self.settings)
        tokenizer = handle.tokenizer
        session = requests.Session()

        def one(index: int) -> list[RawGeneration]:
            job = jobs[index]
            body: dict[str, Any] = {
                "model": model,
                "prompt": job.text,
                "max_tokens": decoding.max_new_tokens,
                "n": decoding.num_candidates,
                "seed": job.seed,
            }
            if decoding.mode == "greedy":
                body.update(temperature=0.0, top_p=1.0)
            else:
                body.update(temperature=decoding.temperature, top_p=decoding.top_p)
            choices = self._complete(session, body, decoding.num_candidates)
            out = []
            for choice in choices:
                text = str(choice.get("text", ""))
                reason = "eos" if choice.get("finish_reason") == "stop" else "length"
                if decoding.early_stop:
                    text, early = cut_at_stop(text)
                    reason = early or reason
                text = text.strip()
                out.append(RawGeneration(text, len(tokenizer(text, add_special_tokens=False)["input_ids"]), reason, job.seed))
            on_done(index)
            return out

        try:
            with ThreadPoolExecutor(max_workers=self.settings.server_concurrency) as pool:
                return list(pool.map(one, range(len(jobs))))
        finally:
            session.close()

    def _complete(self, session: Any, body: dict[str, Any], expected: int) -> list[dict[str, Any]]:
        import requests
        from tenacity import RetryError, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

        @retry(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.settings.server_retries),
            wait=wait_exponential(multiplier=0.25, max=8.0),
            reraise=False,
        )
        def attempt() -> Any:
            try:
                response = session.post(
                    self.url, json=body, headers=self._headers, timeout=(CONNECT_TIMEOUT_S, self.settings.server_timeout_s)
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Retryable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
            return response

        try:
            response = attempt()
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise InferenceServerError(
                f"the inference server at {self.settings.server_url} did not answer after {self.settings.server_retries} "
                f"attempt(s) ({cause}); start it, or use another backend (--backend engine)"
            ) from exc
        if response.status_code == 404:
            raise InferenceServerError(
                f"the inference server at {self.settings.server_url} does not serve model '{body['model']}': "
                f"start it with that adapter (vLLM: --lora-modules {body['model']}=<adapter dir>; "
                "'advisor model served-names' lists them)"
            )
        if response.status_code >= 400:
            raise InferenceServerError(
                f"the inference server at {self.settings.server_url} refused the request: HTTP {response.status_code} {response.text[:300]}"
            )
        try:
            payload = response.json()
            choices = sorted(payload["choices"], key=lambda c: int(c.get("index", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise InferenceServerError(
                f"the inference server at {self.settings.server_url} answered something that is not an OpenAI completions response"
            ) from exc
        if len(choices) != expected or not all(isinstance(c, dict) for c in choices):
            raise InferenceServerError(
                f"the inference server at {self.settings.server_url} returned {len(choices)} completion(s), {expected} were asked for"
            )
        return choices
