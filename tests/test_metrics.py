"""Metrics and the Grafana dashboard, checked against the running stack.

The dashboard may only query names the code really exports: they are read from the
registry's and every agent's ``/metrics``, never listed here. Then one question through the
orchestrator moves the counters, histograms and gauges the dashboard shows.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol.settings import AGENT_NAMES
from scriptorium.corpora import DEMO_QUESTIONS
from scriptorium.launcher import Stack
from scriptorium.testing import answer, corpus, ingest, wait_for

pytestmark = pytest.mark.slow
DASHBOARD = Path(__file__).parents[1] / "compose" / "grafana" / "scriptorium.json"

Families = dict[str, Any]  # family name -> prometheus_client Metric


# --- scraping --------------------------------------------------------------------------------


def scrape(url: str) -> Families:
    """The families of ``url``'s ``/metrics``, by name."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    response.raise_for_status()
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def scrape_all(stack: Stack) -> dict[str, Families]:
    """The registry's families and each agent's, keyed ``registry`` or by agent name."""
    scraped = {"registry": scrape(stack.registry_url)}
    for name in AGENT_NAMES:
        scraped[name] = scrape(stack.url_of(name))
    return scraped


def series_names(families: Families) -> set[str]:
    """The names a PromQL query can select: the samples' own, and for families exported
    without samples yet the names their type gives them."""
    names: set[str] = set()
    for family in families.values():
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update({family.name, f"{family.name}_sum", f"{family.name}_count"})
        else:
            names.add(family.name)
    return names


def value(families: Families, sample: str, /, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels`` (0 if none)."""
    return sum(
        s.value
        for family in families.values()
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def samples(families: Families, sample: str) -> list[tuple[dict[str, str], float]]:
    """Every sample named ``sample``: its labels and value."""
    return [
        (s.labels, s.value)
        for family in families.values()
        for s in family.samples
        if s.name == sample
    ]


# --- PromQL ----------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    bare = _STRING.sub('""', expr)
    bare = _MATCHERS.sub("", bare)
    bare = _RANGE.sub("", bare)
    bare = _GROUPING.sub("", bare)
    return {n for n in _IDENTIFIER.findall(bare) if n.lower() not in _KEYWORDS}


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (agent, le) (rate(foo_seconds_bucket{agent=~"$agent",'
        'skill!="x"}[$__rate_interval]))) / on (agent) group_left (skill) vllm:bar_total > bool 1e3'
    )
    assert metric_names(expr) == {"foo_seconds_bucket", "vllm:bar_total"}


# --- the dashboard ---------------------------------------------------------------------------


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_dashboard_is_a_grafana_dashboard_over_a_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard_panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dashboard_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["refId"], panel["title"]
            assert metric_names(target["expr"]), (panel["title"], target["expr"])


def test_every_name_the_dashboard_queries_is_exported(
    stack: Stack, dashboard: dict[str, Any]
) -> None:
    exported = set().union(*(series_names(f) for f in scrape_all(stack).values()))
    queried = {
        name: panel["title"]
        for panel in dashboard_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        for name in metric_names(target["expr"])
    }
    unknown = {name: title for name, title in queried.items() if name not in exported}
    assert not unknown, f"queried but not exported (name: panel): {unknown}"
    # The relayed engine's metrics are among them (the dashboard shows vLLM's own view).
    assert any(name.startswith("vllm:") for name in queried)


def test_every_name_the_alert_rules_and_keda_query_is_exported(stack: Stack) -> None:
    """compose/k8s: the PrometheusRule and the KEDA triggers, against the live scrape (vLLM's
    relayed families included; tests/test_deploy.py checks ours in process, without vLLM)."""
    from tests.test_deploy import EXTERNAL_METRICS, keda_queries, rule_expressions

    exported = set().union(*(series_names(f) for f in scrape_all(stack).values()))
    expressions, recorded = rule_expressions()
    expressions |= keda_queries()
    unknown = {
        name: sorted(metric_names(expr) - exported - recorded - EXTERNAL_METRICS)
        for name, expr in expressions.items()
    }
    assert not {k: v for k, v in unknown.items() if v}, f"queried but not exported: {unknown}"
    assert any(n.startswith("vllm:") for e in expressions.values() for n in metric_names(e))


# --- one question moves the metrics ----------------------------------------------------------


@pytest.fixture(scope="module")
async def collection(stack: Stack) -> str:
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    await ingest(stack.registry_url, name, corpus())
    return name


def registry_settled(stack: Stack) -> bool:
    """No session open and no lease held, as the registry's /metrics says."""
    families = scrape(stack.registry_url)
    leases = samples(families, "scriptorium_registry_leases")
    return (
        value(families, "scriptorium_registry_sessions_active") == 0
        and bool(leases)
        and all(v == 0 for _, v in leases)
    )


async def test_one_question_moves_the_metrics(stack: Stack, collection: str) -> None:
    await wait_for(lambda: registry_settled(stack), 30, "sessions or leases still held")
    before = scrape_all(stack)

    result = await answer(stack, collection, DEMO_QUESTIONS[0], max_rounds=1, max_tokens=48)

    # The orchestrator counts its task once the task has ended, just after the reply.
    def answers(families: Families) -> float:
        return value(families, "scriptorium_agent_tasks_total", skill="answer", outcome="completed")

    def answered() -> bool:
        return answers(scrape(stack.url_of("orchestrator"))) > answers(before["orchestrator"])

    await wait_for(answered, 30, "the orchestrator did not count the answer")
    await wait_for(lambda: registry_settled(stack), 30, "sessions or leases not given back")
    after = scrape_all(stack)

    def delta(source: str, sample: str, /, **labels: str) -> float:
        return value(after[source], sample, **labels) - value(before[source], sample, **labels)

    # Orchestrator: one task, one answer, its rounds, its fallback.
    answer_task = {"agent": "orchestrator", "skill": "answer"}
    assert delta("orchestrator", "scriptorium_agent_tasks_total", **answer_task) == 1
    assert (
        delta("orchestrator", "scriptorium_agent_tasks_total", **answer_task, outcome="completed")
        == 1
    )
    assert delta("orchestrator", "scriptorium_agent_task_seconds_count", **answer_task) == 1
    seconds = delta("orchestrator", "scriptorium_agent_task_seconds_sum", **answer_task)
    assert seconds * 1000 >= result.timings_ms["total"] * 0.9
    assert value(after["orchestrator"], "scriptorium_agent_tasks_in_flight") == 0
    assert delta("orchestrator", "scriptorium_orchestrator_answer_rounds_count") == 1
    assert delta("orchestrator", "scriptorium_orchestrator_answer_rounds_sum") == result.rounds
    assert (
        delta("orchestrator", "scriptorium_orchestrator_answers_total", verdict=result.verdict) == 1
    )
    assert delta("orchestrator", "scriptorium_orchestrator_extractive_fallbacks_total") == int(
        result.extractive
    )
    assert delta("orchestrator", "scriptorium_orchestrator_abstentions_total") == int(
        result.abstained
    )

    # Critic: one critique per round, plus one of the fallback when the last round failed.
    assert len(result.history) == result.rounds
    fell_back = result.history[-1].critique.verdict != "accept"
    critiques = result.rounds + int(fell_back)
    assert delta("critic", "scriptorium_critic_verdicts_total") == critiques
    assert delta("critic", "scriptorium_agent_tasks_total", skill="critique") == critiques
    accepted = sum(r.critique.verdict == "accept" for r in result.history) + int(
        fell_back and result.verdict == "accept"
    )
    assert delta("critic", "scriptorium_critic_verdicts_total", verdict="accept") == accepted
    checked = sum(len(r.critique.sentences) for r in result.history)
    assert delta("critic", "scriptorium_critic_sentence_verdicts_total") >= checked
    for verdict in ("supported", "unsupported", "uncited", "bad_citation"):
        in_rounds = sum(s.verdict == verdict for r in result.history for s in r.critique.sentences)
        assert (
            delta("critic", "scriptorium_critic_sentence_verdicts_total", verdict=verdict)
            >= in_rounds
        )

    # Retriever searched; writer wrote; inference generated and counted its tokens.
    assert delta("retriever", "scriptorium_agent_tasks_total", skill="search") >= 1
    assert delta("writer", "scriptorium_agent_tasks_total", skill="write") == critiques
    assert delta("inference", "scriptorium_agent_tasks_total", skill="generate") >= 1
    assert delta("inference", "scriptorium_inference_tokens_total", kind="prompt") > 0
    assert delta("inference", "scriptorium_inference_tokens_total", kind="completion") > 0

    # Registry: the session and its leases are given back; every instance's heartbeat is
    # fresh (ages computed at scrape time from the registry's own records).
    registry = after["registry"]
    assert value(registry, "scriptorium_registry_sessions_active") == 0
    leases = samples(registry, "scriptorium_registry_leases")
    assert {labels["agent"] for labels, _ in leases} == set(AGENT_NAMES)
    assert all(v == 0 for _, v in leases)
    capacity = samples(registry, "scriptorium_registry_capacity")
    assert all(v >= 1 for _, v in capacity)
    ages = samples(registry, "scriptorium_registry_heartbeat_age_seconds")
    assert {labels["agent"] for labels, _ in ages} == set(AGENT_NAMES)
    ttl_s = stack.settings.heartbeat_ttl_s
    assert all(0 <= age < ttl_s for _, age in ages), ages
