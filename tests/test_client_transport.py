"""The transport seam under the model client: discovery and error mapping judged against a mock
transport (what the server would answer), and the answer's connection handle kept inside
sparkdocs (its header never leaves the process)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from sparkdocs.client import ANSWER_HEADER, ModelClient, ServerKind
from sparkdocs.config import Settings
from sparkdocs.errors import (
    AuthenticationError,
    ContextOverflowError,
    ModelNotFoundError,
    ServiceUnavailableError,
)
from sparkdocs.tokens import ChatMessage

MODEL = "nvidia/Llama-3.3-70B-Instruct-FP8"
MESSAGES = (ChatMessage("system", "s"), ChatMessage("user", "u"))


def _settings(tmp_path: Path) -> Settings:
    return Settings(base_url="http://engine.test/v1", cache_dir=tmp_path, max_retries=0)  # type: ignore[call-arg]


def _client(tmp_path: Path, chat) -> tuple[ModelClient, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"object": "list", "data": [
                {"id": MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 12_345}]})
        if request.url.path == "/v1/chat/completions":
            return chat(request)
        return httpx2.Response(404, json={"detail": "Not Found"})

    return ModelClient(_settings(tmp_path), transport=httpx2.MockTransport(handle)), seen


def _events(*chunks: dict) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def test_discovery_reads_the_served_model_and_context(tmp_path):
    client, _ = _client(tmp_path, lambda request: httpx2.Response(500))
    caps = client.capabilities()
    assert caps.reachable and caps.model == MODEL and caps.context_length == 12_345
    assert caps.context_from_server and caps.server_kind is ServerKind.VLLM


def test_an_answer_streams_and_its_handle_never_reaches_the_server(tmp_path):
    def chat(request: httpx2.Request) -> httpx2.Response:
        body = _events(
            {"choices": [{"index": 0, "delta": {"content": "Forty"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"content": "-two."}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                      "total_tokens": 11,
                                      "prompt_tokens_details": {"cached_tokens": 0}}})
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client, seen = _client(tmp_path, chat)
    result = client.stream(MESSAGES, max_tokens=8, model=MODEL).run()
    assert result.answer == "Forty-two." and result.prompt_tokens == 9
    sent = [r for r in seen if r.url.path == "/v1/chat/completions"]
    assert len(sent) == 1 and ANSWER_HEADER not in sent[0].headers
    assert len(client.connections) == 0  # released once the answer ended


@pytest.mark.parametrize("status, body, error", [
    (401, {"error": {"message": "bad key", "code": 401}}, AuthenticationError),
    (404, {"error": {"message": f"The model `{MODEL}x` does not exist.", "code": 404}},
     ModelNotFoundError),
    (400, {"error": {"message": "This model's maximum context length is 12345 tokens. However, "
                                "your request has 20000 input tokens.", "type": "BadRequestError",
                     "code": 400}}, ContextOverflowError),
    (503, {"error": {"message": "draining", "code": 503}}, ServiceUnavailableError),
])
def test_each_refusal_becomes_the_error_with_its_fix(tmp_path, status, body, error):
    client, _ = _client(tmp_path, lambda request: httpx2.Response(status, json=body))
    with pytest.raises(error), client.stream(MESSAGES, max_tokens=8, model=MODEL) as answer:
        list(answer)
