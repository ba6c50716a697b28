"""The shipped operations files stay consistent with the code and with each other.

Alert rules and dashboard queries name metrics by string, so a renamed metric
would silently empty a panel or disarm an alert; these tests catch that.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import adapters.metrics  # noqa: F401  (registers every syncd metric)
from daemon.runtime.settings import ENV_PREFIX, Settings

OPS = Path(__file__).resolve().parents[2] / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
ALERT_TESTS = OPS / "prometheus" / "alerts.test.yml"
DASHBOARD = OPS / "grafana" / "syncd-dashboard.json"
UNIT = OPS / "systemd" / "syncd.service"
ENV_EXAMPLE = OPS / "systemd" / "syncd.env.example"
K8S = OPS / "k8s"

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right",
                   "and", "or", "unless", "offset", "bool", "inf", "nan"}


def exposed_metric_names() -> set[str]:
    """Sample names the registry exposes, including labelled metrics with no child yet."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["_sum", "_count"], "info": ["_info"], "gauge": [""]}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana variables allowed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, may hold anything
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations, $__rate_interval
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(\s*\()?", expr):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def k8s_objects() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        for path in sorted(K8S.glob("*.yaml"))
    }


def run_promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed; .ci/run installs Debian's prometheus package")
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_alert_rules() -> None:
    """promtool check rules accepts ops/prometheus/alerts.yml."""
    run_promtool("check", "rules", str(ALERTS))


def test_alerts_fire_as_their_unit_tests_expect() -> None:
    """promtool test rules passes ops/prometheus/alerts.test.yml."""
    run_promtool("test", "rules", str(ALERT_TESTS))


def test_metric_name_parser() -> None:
    """The PromQL scan finds metric names, not functions, labels, keywords or variables."""
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job", x="y z"}'
            '[$__rate_interval]))) > 0 and (sum(rate(b_total[5m])) or vector(0)) == 0'
            " unless on (instance) c")
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_alerts_and_dashboard_use_only_existing_metrics() -> None:
    """Every metric named in an alert or a dashboard query is one syncd exposes."""
    known = exposed_metric_names()
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += list(dashboard_exprs(json.loads(DASHBOARD.read_text())))
    assert len(exprs) > 20
    used = set().union(*(metric_names(e) for e in exprs))
    unknown = {n for n in used - known if n != "up" and not n.startswith("process_")}
    assert not unknown, f"not registered in adapters.metrics: {sorted(unknown)}"


def test_every_alert_is_labelled_annotated_and_has_a_runbook() -> None:
    """Each alert has a severity, summary, description and a runbook_url to an existing file."""
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        runbook = notes["runbook_url"].partition("/blob/main/")[2]
        assert runbook.startswith("ops/runbooks/"), rule["alert"]
        assert (OPS.parent / runbook).is_file(), f"{rule['alert']}: {runbook} missing"


def test_dashboard_is_portable() -> None:
    """The dashboard uses schemaVersion 39 and a Prometheus datasource variable everywhere."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_k8s_objects_are_well_formed() -> None:
    """Every manifest parses and names its apiVersion, kind and metadata.name."""
    objects = k8s_objects()
    kustomization = objects.pop("kustomization.yaml")[0]
    assert set(kustomization["resources"]) == set(objects)
    kinds = set()
    for name, docs in objects.items():
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), name
            assert doc.get("metadata", {}).get("name"), name
            kinds.add(doc["kind"])
    assert kinds >= {"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget",
                     "ServiceMonitor"}


def test_deployment_probes_and_shutdown_budget() -> None:
    """Probes hit /healthz and /readyz on the http port; the grace period outlasts the drain."""
    by_kind = {doc["kind"]: doc for docs in k8s_objects().values() for doc in docs}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    config = by_kind["ConfigMap"]["data"]
    assert config["SYNCD_HTTP_LISTEN"] == "0.0.0.0:8080"
    deadline = float(config["SYNCD_SHUTDOWN_DEADLINE"])
    assert pod["terminationGracePeriodSeconds"] > max(10, deadline)
    assert "SYNCD_DATABASE_URL" in by_kind["Secret"]["stringData"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert config["SYNCD_DATA_DIR"] in mounts


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_notify_and_hardened() -> None:
    """The unit uses Type=notify with a watchdog, a dedicated user and the hardening keys."""
    unit = unit_settings()
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30",
        "ExecStart": "/opt/syncd/.venv/bin/syncd run",
        "EnvironmentFile": "/etc/syncd/syncd.env", "User": "syncd", "Group": "syncd",
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/syncd", "StateDirectory": "syncd",
        "ProtectKernelTunables": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "Restart": "on-failure", "KillSignal": "SIGTERM",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key


def env_example() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                if line and not line.startswith("#"))


def assert_valid_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    known = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert set(env) <= known, f"not a setting: {sorted(set(env) - known)}"
    monkeypatch.delenv(f"{ENV_PREFIX}CONFIG", raising=False)  # load_settings leaves it set
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    Settings()


def test_systemd_stop_timeout_outlasts_the_drain() -> None:
    """TimeoutStopSec exceeds the shutdown deadline of the example environment file."""
    env = env_example()
    assert env["SYNCD_DATA_DIR"] == "/var/lib/syncd"
    assert float(unit_settings()["TimeoutStopSec"][0]) > float(env["SYNCD_SHUTDOWN_DEADLINE"])


def test_env_example_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable in syncd.env.example, commented or not, is a setting with a valid value."""
    commented = {line.lstrip("#").split("=", 1)[0]: line.lstrip("#").split("=", 1)[1]
                 for line in ENV_EXAMPLE.read_text().splitlines()
                 if line.startswith(f"#{ENV_PREFIX}")}
    assert_valid_settings(env_example() | commented, monkeypatch)


def test_k8s_environment_holds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap and Secret hold only settings, with valid values."""
    by_kind = {doc["kind"]: doc for docs in k8s_objects().values() for doc in docs}
    assert_valid_settings(by_kind["ConfigMap"]["data"] | by_kind["Secret"]["stringData"],
                          monkeypatch)
