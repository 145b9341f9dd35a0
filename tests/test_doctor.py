"""`sparkdocs doctor` against servers that answer, but wrongly (fake server)."""

from __future__ import annotations

import time

import pytest
from fakeserver import FakeServer, StreamFault

from sparkdocs.client import ModelClient
from sparkdocs.config import Settings
from sparkdocs.doctor import CheckStatus, run_checks

pytestmark = pytest.mark.integration


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


def checks_for(server: FakeServer, **overrides) -> dict[str, object]:
    settings = Settings(**{"base_url": server.base_url, "max_retries": 0, **overrides})
    return {check.name: check for check in run_checks(ModelClient(settings))}


def test_a_healthy_server_passes_and_the_completion_is_checked(server):
    checks = checks_for(server)
    assert all(isinstance(c.status, CheckStatus) for c in checks.values())
    assert checks["completion"].status is CheckStatus.OK
    assert not [c for c in checks.values() if c.status is CheckStatus.FAIL]


@pytest.mark.parametrize("fault, said", [
    (StreamFault.HTML, "text/html"),
    (StreamFault.NOT_JSON, "not JSON"),
    (StreamFault.ERROR_EVENT, "EngineCore encountered an issue"),
    (StreamFault.NO_FINISH, "before its end"),
])
def test_a_chat_that_is_not_a_good_stream_fails_the_completion_check(server, fault, said):
    server.behaviour.stream_fault = fault
    checks = checks_for(server)
    assert checks["completion"].status is CheckStatus.FAIL and said in checks["completion"].detail
    assert "cached-token reporting" not in checks  # nothing to judge it from


def test_a_server_that_ignores_max_tokens_fails_quickly(server):
    server.behaviour.stream_fault = StreamFault.ENDLESS
    started = time.perf_counter()
    checks = checks_for(server)
    assert time.perf_counter() - started < 15
    completion = checks["completion"]
    assert completion.status is CheckStatus.FAIL and "max_tokens=1" in completion.detail


def test_a_probe_that_never_answers_fails_at_the_doctors_own_deadline(server, monkeypatch):
    import sparkdocs.doctor

    monkeypatch.setattr(sparkdocs.doctor, "PROBE_DEADLINE_S", 1.0)
    server.behaviour.stream_fault = StreamFault.KEEPALIVE_ONLY
    started = time.perf_counter()
    checks = checks_for(server)
    assert time.perf_counter() - started < 10
    assert checks["completion"].status is CheckStatus.FAIL
    assert "no answer within 1 s" in checks["completion"].detail


def test_a_wrong_key_fails_the_key_check_with_the_fix(server):
    server.behaviour.api_key = "right"
    checks = checks_for(server, api_key="wrong")
    assert checks["api key"].status is CheckStatus.FAIL
    assert "refused the API key" in checks["api key"].detail and "model" not in checks


@pytest.mark.parametrize("body", [[{"id": "m"}], None])
def test_models_that_are_not_a_model_list_fail_with_the_fix(server, body):
    server.behaviour.models_body = body
    checks = checks_for(server)
    assert checks["models endpoint"].status is CheckStatus.FAIL
    assert "SPARKDOCS_BASE_URL" in checks["models endpoint"].detail + checks["models endpoint"].fix


def test_a_context_length_that_is_not_a_number_is_a_warning_with_the_fix(server):
    server.behaviour.models_body = {"data": [{"id": server.behaviour.model, "max_model_len": "abc"}]}
    check = checks_for(server)["context length"]
    assert check.status is CheckStatus.WARN and "'abc'" in check.detail
    assert "SPARKDOCS_CONTEXT_LENGTH" in check.fix


def test_credentials_in_the_base_url_are_not_shown(server):
    url = server.base_url.replace("http://", "http://alice:s3cret@")
    checks = checks_for(server, base_url=url)
    text = " ".join(f"{c.detail} {c.fix}" for c in checks.values())
    assert "s3cret" not in text and "***@127.0.0.1" in text
    unreachable = run_checks(ModelClient(Settings(base_url="http://bob:hunter2@127.0.0.1:9/v1",
                                                  max_retries=0)))
    assert unreachable[0].status is CheckStatus.FAIL and "hunter2" not in unreachable[0].detail


@pytest.mark.e2e
def test_the_real_llama_cpp_server_passes_the_completion_check(real_server, tmp_path):
    checks = {c.name: c for c in run_checks(ModelClient(real_server.settings(tmp_path)))}
    assert checks["completion"].status is CheckStatus.OK, checks["completion"].detail
    assert not [c for c in checks.values() if c.status is CheckStatus.FAIL]
