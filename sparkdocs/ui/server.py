"""The Server page: what the model service serves, its cache and queue, the doctor's checks."""

from __future__ import annotations

import logging

import streamlit as st

from ..client import Capabilities
from ..cluster import engine_row
from ..local_model import log_excerpt
from ..safe_text import safe_markdown
from ..views import code_span
from . import team
from .common import active_session
from .services import Services

log = logging.getLogger(__name__)


def _active_document_fit(svc: Services, caps: Capabilities) -> None:
    """How the open document sits in the KV cache: copies of it, or (read in parts) how many of
    its parts stay cached at once and what each question re-reads."""
    from ..views import kv_fit, parts_fit

    active = active_session(svc)
    if not active:
        return
    document, session = active
    fit = kv_fit(caps, document.section_tokens)
    if fit:
        st.caption(fit)
    if not svc.qa.budget(document).fits and caps.metrics is not None:
        st.caption(safe_markdown(parts_fit(svc.qa.whole_parts(document).parts,
                                           caps.metrics.kv_capacity_tokens,
                                           svc.qa.prefill_speed(session.owner))))


def server_status(svc: Services) -> None:
    """What the service is and serves, its cache, its queue, and each doctor check."""
    from ..doctor import run_checks

    st.caption(team.isolation_caption(svc.settings))
    caps = svc.client.capabilities(refresh=st.button("Refresh"))
    demo_log = svc.settings.local_model_log
    tail = log_excerpt(demo_log) if demo_log is not None else None
    if tail is not None:  # first when the demo model is down: its log says why
        with st.expander("Demo model log (last lines)", expanded=not caps.reachable):
            st.caption(safe_markdown(str(demo_log)))
            st.code(tail or "(empty)", language=None)
    if not caps.reachable:
        st.error(safe_markdown(caps.error or "The model service is not reachable."))
        return
    # Names as text (a metric cuts a long model name to "nvidia/Llama-3.3-…"), figures as metrics.
    st.markdown(safe_markdown(f"**Model:** {code_span(caps.model or 'none')} · **Server:** "
                              f"{caps.server_kind.value} · **Tokenize endpoint:** "
                              f"{code_span(svc.client.tokenize_path() or 'none')}"))
    st.metric("Context (tokens)", f"{caps.context_length:,}",
              help="from the server" if caps.context_from_server else "from configuration")
    if caps.model_note:
        st.warning(safe_markdown(caps.model_note))
    if caps.engines:  # behind vLLM's router: every engine it lists, each asked itself
        up = sum(1 for e in caps.engines if e.up)
        st.markdown(safe_markdown(f"**Engines behind the router:** {up} of {len(caps.engines)} "
                                  "serve; the figures below are their sum."))
        st.dataframe([engine_row(e) for e in caps.engines], hide_index=True)
    metrics = caps.metrics
    if metrics is None:
        st.info("This server publishes no vLLM metrics: no prefix-cache hit rate or queue to show.")
    else:
        cols = st.columns(4)
        rate = metrics.prefix_hit_rate
        cols[0].metric("Prefix-cache hit rate", "—" if rate is None else f"{rate:.0%}")
        cols[1].metric("KV cache used", "—" if metrics.kv_cache_usage is None else f"{metrics.kv_cache_usage:.0%}")
        cols[2].metric("Running", f"{metrics.running or 0:.0f}")
        cols[3].metric("Waiting", f"{metrics.waiting or 0:.0f}")
        if metrics.kv_capacity_tokens:
            st.bar_chart({"tokens": {"KV capacity": metrics.kv_capacity_tokens,
                                     "in use": int(metrics.kv_capacity_tokens * (metrics.kv_cache_usage or 0))}},
                         horizontal=True, height=120)
        _active_document_fit(svc, caps)
    if st.button("Run all checks (sends one tiny request)"):
        marks = {"ok": ":green[:material/check_circle:]", "warn": ":orange[:material/warning:]",
                 "fail": ":red[:material/cancel:]", "unknown": ":gray[:material/help:]"}
        for check in run_checks(svc.client):
            fix = f"  \nfix: {check.fix}" if check.fix and check.status != "ok" else ""
            # the mark is the app's own; the check's words are the server's text, made safe
            st.markdown(f"{marks[check.status]} "
                        + safe_markdown(f"**{check.name}**: {check.detail}{fix}"))
    bench_dir = svc.settings.cache_dir / "bench"
    report = bench_dir / "report.md"
    if report.exists():
        with st.expander("Latest `sparkdocs bench` report", expanded=True):
            text = report.read_text(encoding="utf-8")
            st.markdown(safe_markdown("\n".join(line for line in text.splitlines()
                                                 if not line.startswith("!["))))
            for chart in sorted(bench_dir.glob("*.png")):
                st.image(str(chart))
    else:
        st.caption("Run `sparkdocs bench` to measure this server; its latest report appears here.")
