"""deploy/grafana/tokgen.json, checked offline: its structure, every expression's PromQL
syntax (``promtool check rules``) and every metric name it uses against those tokgen exports.

``exported_metric_names()`` is importable, for checking other PromQL (alert rules) too."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import tokgen.monitoring.metrics  # noqa: F401  (registers every tokgen series)

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "tokgen.json"
PROMTOOL = "/usr/bin/promtool"

# sample-name suffixes per metric family type, as the exposition format writes them
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}

METRIC_NAME = re.compile(r"\b((?:tokgen|process|python)_[A-Za-z0-9_]*)")
# Grafana's built-in interval variables become a fixed duration
BUILTIN_INTERVAL = re.compile(r"\$\{?__(?:rate_interval|interval|range)\b\}?")
VARIABLE = re.compile(r"\$\{?\w+(?::\w+)?\}?")
REGEX_MATCHER = re.compile(r'(=~|!~)\s*"((?:[^"\\]|\\.)*)"')

KEY_METRICS = {
    "tokgen_requests_total",
    "tokgen_time_to_first_audio_seconds_bucket",
    "tokgen_jobs_queued",
    "tokgen_jobs_dead_letter",
    "tokgen_engine_kv_cache_usage_ratio",
    "tokgen_engine_step_seconds_bucket",
    "tokgen_redis_up",
    "tokgen_build_info",
    "tokgen_worker_leases_held",
}
# cluster-wide gauges: every process reports the same value, so only max/min may aggregate them
CLUSTER_WIDE = ("tokgen_jobs_queued", "tokgen_jobs_running", "tokgen_jobs_delayed", "tokgen_jobs_dead_letter")


def exported_metric_names() -> set[str]:
    """Every sample name the default registry can expose once tokgen's metrics are imported,
    derived from each family's type and name (labelled metrics without children yet have no
    samples), plus the samples present now."""
    from prometheus_client import REGISTRY

    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Top-level panels and those nested in collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def variable_queries(dashboard: dict) -> list[str]:
    queries = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def to_promql(expr: str) -> str:
    """Grafana variables substituted: intervals become ``1m``; template variables, allowed
    only inside regex matchers, match anything."""
    expr = BUILTIN_INTERVAL.sub("1m", expr)
    expr = REGEX_MATCHER.sub(lambda m: f'{m.group(1)}"{VARIABLE.sub(".*", m.group(2))}"', expr)
    assert "$" not in expr, f"a variable outside a regex matcher: {expr}"
    return expr


def test_dashboard_structure():
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == "tokgen-overview"
    assert dashboard["title"] == "tokgen"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    level = variables["level"]
    assert level["multi"] and level["includeAll"]
    assert "label_values(tokgen_engine_generated_tokens_total, level)" in variable_queries(dashboard)

    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [panel["title"] for panel in panels if panel["type"] == "row"]
    assert {"Service", "Jobs", "Engine", "Build"} <= set(rows)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == datasource, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == datasource, variable["name"]


def test_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_expressions_are_valid_promql(tmp_path: Path):
    promtool = shutil.which("promtool") or (PROMTOOL if Path(PROMTOOL).exists() else None)
    if promtool is None:
        pytest.skip("promtool is not installed (./scripts/install.sh installs Debian's prometheus package)")
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": to_promql(expr)}
        for i, expr in enumerate(expressions(load_dashboard()))
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metric_names_are_exported():
    dashboard = load_dashboard()
    referenced = {
        name
        for text in expressions(dashboard) + variable_queries(dashboard)
        for name in METRIC_NAME.findall(text)
    }
    unknown = referenced - exported_metric_names()
    assert not unknown, f"not exported by tokgen: {sorted(unknown)}"
    missing = KEY_METRICS - referenced
    assert not missing, f"the dashboard does not show: {sorted(missing)}"


def test_cluster_wide_gauges_are_not_summed():
    for expr in expressions(load_dashboard()):
        for name in CLUSTER_WIDE:
            if re.search(rf"\b{name}\b", expr):
                assert re.search(rf"\b(?:max|min)\s*(?:by\s*\([^)]*\)\s*)?\(\s*{name}\b", expr), expr
                assert "sum" not in expr, expr
