"""`sparkdocs count` and the app agree on what fits (issue #22): with a model service
configured, count budgets against the served context in the served model's tokens, as the Ask
page does; without one it says it counts with Llama 3's tokenizer. Judges: the fake server's
advertised context and its own /tokenize counts (another tokenizer: 1.3 × Llama 3's), and the
budget the Ask page computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkdocs.tokens import Llama3Tokenizer

pytestmark = pytest.mark.integration
NOTE = "# Note\n" + "The supplier delivers the goods within thirty days. " * 40


def _count(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPARKDOCS_")}
    environment.update(SPARKDOCS_CACHE_DIR=str(tmp_path / "cache"), **env)
    return subprocess.run([sys.executable, "-m", "sparkdocs", "count", *args],
                          env=environment, capture_output=True, text=True, timeout=120)


def test_count_budgets_as_the_app_against_a_server_that_is_not_llama3(tmp_path):
    from fakeserver import FakeServer

    from sparkdocs.client import ModelClient
    from sparkdocs.config import build_settings
    from sparkdocs.qa import QuestionAnswering
    from sparkdocs.workspace import LoadRequest, Workspace

    note = tmp_path / "note.md"
    note.write_text(NOTE)
    with FakeServer() as server:
        server.behaviour.tokenize_scale = 1.3
        server.behaviour.max_model_len = 4096
        done = _count(tmp_path, str(note), "--json", SPARKDOCS_BASE_URL=server.base_url)
        assert done.returncode == 0, done.stderr
        budget = json.loads(done.stdout)["budget"]
        settings = build_settings(overrides={"base_url": server.base_url,
                                             "cache_dir": str(tmp_path / "cache")})
        workspace = Workspace(settings)
        document = workspace.load(LoadRequest((str(note),), (), (), None))
        shown = QuestionAnswering(workspace, ModelClient(settings)).budget(document)
        text = _count(tmp_path, str(note), SPARKDOCS_BASE_URL=server.base_url)
    assert budget["context"] == 4096  # the server's context, not the 65,536 default
    assert budget["counting"] == "server"
    llama3 = Llama3Tokenizer().count(NOTE)
    assert budget["used"] >= 1.25 * llama3, (budget, llama3)  # the server's tokens
    assert budget == shown.as_dict()  # what the Ask page shows
    assert "Counted with the server's tokenizer" in " ".join(text.stderr.split()), text.stderr


def test_count_without_a_server_says_it_counts_with_llama3s_tokenizer(tmp_path):
    note = tmp_path / "note.md"
    note.write_text(NOTE)
    alone = _count(tmp_path, str(note))
    unreachable = _count(tmp_path, str(note), SPARKDOCS_BASE_URL="http://127.0.0.1:9/v1")
    for done in (alone, unreachable):
        assert done.returncode == 0, done.stderr
        assert "Counted with Llama 3's tokenizer" in " ".join(done.stderr.split()), done.stderr
    assert "did not answer" in " ".join(unreachable.stderr.split())
