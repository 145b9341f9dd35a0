"""Citation verification, measured: precision and recall per class of quote over the labelled
corpus (PDF, extracted-PDF text, DOCX, Markdown, a codebase), the same with three answers joined
into one (each quote must keep its own reference), the verification time on a 65K-token
document, and what the line anchors cost in tokens.

    python tests/benchmarks/bench_citations.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

from corpus import (  # noqa: E402
    _window,
    big_document,
    citation_cases,
    citation_documents,
    format_score,
    meaning_change,
    run_cases,
    score,
)

from sparkdocs.citations import CitationIndex, index_for, verify_answer  # noqa: E402
from sparkdocs.documents import SectionKind, anchor_lines  # noqa: E402
from sparkdocs.prompts import prepare_document  # noqa: E402
from sparkdocs.tokens import llama3  # noqa: E402


def timing(quotes: int = 12, repeat: int = 15) -> None:
    document = big_document(65_000)
    prepared = prepare_document(document)
    rng = random.Random(1)
    parts = []
    for number in range(quotes):
        page = rng.randrange(len(document.sections))
        quote = _window(document.sections[page].text, rng)
        if number % 3 == 0:
            quote = meaning_change(quote, rng) or quote  # not found: the slowest path
        elif number % 4 == 1:
            quote = quote.replace(" the ", " ", 1)  # a near match
        cited = page + 1 if number % 5 else page + 3  # some on the wrong page
        parts.append(f'"{quote}" (p. {cited})')
    answer = "\n\n".join(parts)
    builds = []
    for _ in range(5):
        start = time.perf_counter()
        CitationIndex(prepared)
        builds.append(time.perf_counter() - start)
    index_for(prepared)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        citations = verify_answer(answer, prepared)
        runs.append(time.perf_counter() - start)
    verdicts = ", ".join(sorted({c.status.value for c in citations}))
    print(f"\n65K-token document: {prepared.block_tokens:,} tokens, {len(document.sections)} pages")
    print(f"  index build (once per prepared document): median {statistics.median(builds) * 1000:.1f} ms")
    print(f"  verify an answer with {quotes} quotes ({verdicts}): median "
          f"{statistics.median(runs) * 1000:.1f} ms, max {max(runs) * 1000:.1f} ms "
          f"(target ≤ 50 ms)")


def anchor_cost() -> None:
    tok = llama3()
    root = HERE.parent.parent / "sparkdocs"
    texts = [p.read_text() for p in sorted(root.rglob("*.py"))]
    docs = citation_documents()
    texts += [s.text for s in docs["code"].sections if s.kind is SectionKind.FILE]
    plain = sum(tok.count(t) for t in texts)
    anchored = sum(tok.count(anchor_lines(t)) for t in texts)
    print(f"\nline anchors in files: +{anchored - plain:,} tokens on {plain:,} "
          f"({(anchored - plain) / plain:.2%}; target < 3%)")


def main() -> None:
    documents = citation_documents()
    cases = citation_cases(documents)
    for combine in (1, 3):
        start = time.perf_counter()
        outcomes = run_cases(cases, documents, combine=combine)
        elapsed = time.perf_counter() - start
        title = "one quote per answer" if combine == 1 else "three answers joined into one"
        print(f"\n== {len(cases)} labelled quotes, {title} ({elapsed:.2f} s) ==")
        print(format_score(score(outcomes)))
    timing()
    anchor_cost()


if __name__ == "__main__":
    main()
