"""The Helm chart: rendered by the real Helm engine, validated against Kubernetes.

Every scenario that scripts/check_chart.py knows (defaults, the chart's ci
values, the deploy guide's examples) must pass all of its checks; the tests
below pin the chart's behaviour value by value, and show that each check
does catch what it is there to catch.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "helpdesk-triage"


def _load_check_chart() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_chart", ROOT / "scripts" / "check_chart.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_chart = _load_check_chart()
Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[tuple[str, Manifest]]:
    result: list[tuple[str, Manifest]] = check_chart.render(values or {})
    return result


def kinds(objects: list[tuple[str, Manifest]]) -> set[str]:
    return {manifest["kind"] for _, manifest in objects}


def one(objects: list[tuple[str, Manifest]], kind: str, component: str | None = None) -> Manifest:
    found = [
        manifest
        for _, manifest in objects
        if manifest["kind"] == kind
        and (
            component is None
            or manifest["metadata"]["labels"].get("app.kubernetes.io/component") == component
        )
    ]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(workload: Manifest) -> Manifest:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    result: Manifest = only
    return result


def env(workload: Manifest) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom"))
        for item in container(workload)["env"]
    }


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    return str(caught.value)


# -- every scenario passes every check -----------------------------------------------------


@pytest.mark.parametrize("scenario", check_chart.scenarios(), ids=lambda scenario: scenario.name)
def test_scenario_passes_every_check(scenario: Any) -> None:
    report = check_chart.check(scenario)
    assert report.problems == []
    assert "ConfigMap/triage-helpdesk-triage" in report.objects


def test_the_scenarios_include_the_deploy_guide_and_every_optional_feature() -> None:
    names = [scenario.name for scenario in check_chart.scenarios()]
    assert "ci/full-values.yaml" in names
    assert sum(name.startswith("deploy.md yaml block") for name in names) >= 3
    full = render(yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text()))
    assert {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
        "Ingress",
        "Secret",
        "StatefulSet",
    } <= kinds(full)


# -- the checks catch what they are for ----------------------------------------------------


def test_kubernetes_validation_rejects_an_unknown_field() -> None:
    objects = render(
        {
            "extraVolumeMounts": [{"name": "x", "mountPath": "/x", "readonly": True}],
            "extraVolumes": [{"name": "x", "emptyDir": {}}],
        }
    )
    problems = check_chart.kubernetes_problems(objects)
    assert any("'readonly' was unexpected" in problem for problem in problems)


def test_policy_check_flags_a_weakened_security_context() -> None:
    objects = render(
        {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "readOnlyRootFilesystem": False,
                "allowPrivilegeEscalation": True,
                "capabilities": {"drop": ["NET_RAW"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }
        }
    )
    problems = "\n".join(check_chart.policy_problems(objects))
    assert "readOnlyRootFilesystem must be true" in problems
    assert "allowPrivilegeEscalation must be false" in problems
    assert "capabilities must drop ALL" in problems


def test_settings_check_reports_what_the_service_refuses() -> None:
    objects = render({"config": {"ingest": {"poll_every": 5}}})
    problems = check_chart.settings_problems(objects)
    assert problems and all("ingest.poll_every" in problem for problem in problems)


def test_schema_check_rejects_unknown_and_out_of_range_values() -> None:
    problems = "\n".join(
        check_chart.schema_problems({"image": {"tagg": "x"}, "poller": {"shards": 0}})
    )
    assert "'tagg' was unexpected" in problems
    assert "poller.shards" in problems


def test_helm_itself_refuses_values_the_schema_rejects() -> None:
    assert "replicas" in render_error({"replicas": 3})
    # null removes a default in Helm; the CPU limit is required, so that is refused.
    assert "cpu" in render_error({"resources": {"limits": {"cpu": None}}})


# -- the values file and the schema agree --------------------------------------------------


def _schema_paths(schema: dict[str, Any], node: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the chart's own values the schema describes (not free objects)."""
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    paths = set()
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        paths |= _schema_paths(schema, child, f"{path}.")
    return paths


def _value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and value and path not in FREE_MAPS:
            paths |= _value_paths(value, f"{path}.")
    return paths


# Maps whose keys belong to someone else: the service's settings and Kubernetes objects.
FREE_MAPS = {"config", "autoscaling.behavior"}


def test_every_key_of_values_yaml_is_in_the_schema() -> None:
    schema = check_chart.values_schema()
    described = _schema_paths(schema, schema)
    assert _value_paths(check_chart.default_values()) - described == set()


def test_every_value_the_templates_read_exists_in_values_yaml() -> None:
    defaults = check_chart.default_values()
    referenced = set()
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            referenced |= set(
                re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", template.read_text())
            )
    assert referenced, "no .Values references found"
    for reference in sorted(referenced):
        node: Any = defaults
        for part in reference.strip(".").split("."):
            assert isinstance(node, dict) and part in node, (
                f".Values{reference} is not in values.yaml"
            )
            node = node[part]


def test_the_chart_and_the_image_carry_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG VERSION={version}\n" in dockerfile


# -- behaviour, value by value -------------------------------------------------------------


def test_defaults_are_restrictive() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(deployment)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= container(deployment)["resources"]["limits"].keys()
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert not {
        "ServiceMonitor",
        "NetworkPolicy",
        "Ingress",
        "HorizontalPodAutoscaler",
        "Secret",
    } & kinds(objects)


def test_probes_check_liveness_and_readiness_separately() -> None:
    deployment = one(render(), "Deployment")
    assert container(deployment)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container(deployment)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container(deployment)["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_replicas_are_left_to_the_autoscaler_when_it_is_on() -> None:
    assert one(render({"replicaCount": 3}), "Deployment")["spec"]["replicas"] == 3
    objects = render({"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5}})
    assert "replicas" not in one(objects, "Deployment")["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 1}, False),
        ({"replicaCount": 2}, True),
        ({"replicaCount": 2, "podDisruptionBudget": {"enabled": False}}, False),
        ({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}}, False),
        ({"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}, True),
    ],
)
def test_disruption_budget_only_with_more_than_one_pod(
    values: dict[str, Any], expected: bool
) -> None:
    assert ("PodDisruptionBudget" in kinds(render(values))) is expected


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = one(render(values), "Deployment")["spec"]["template"]["metadata"][
            "annotations"
        ]
        value: str = annotations["checksum/config"]
        return value

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"policy": {"mode": "shadow"}}})


def test_config_is_rendered_verbatim_as_the_config_file() -> None:
    config = {
        "helpdesk": "rt",
        "rt": {"url": "https://rt.example.com"},
        "policy": {"mode": "shadow"},
    }
    objects = render({"config": config, "replicaCount": 1, "poller": {"enabled": False}})
    rendered = check_chart.config_file(objects)
    assert rendered["rt"] == config["rt"] and rendered["policy"] == config["policy"]
    assert rendered["server"] == {"port": 8080, "drain_seconds": 20}
    variables = env(one(objects, "Deployment"))
    assert variables["TRIAGE_CONFIG_FILE"] == "/etc/helpdesk-triage/config.yaml"


def test_the_configured_port_is_the_container_port() -> None:
    objects = render({"config": {"server": {"port": 9000}}})
    deployment = one(objects, "Deployment")
    assert container(deployment)["ports"] == [
        {"name": "http", "containerPort": 9000, "protocol": "TCP"}
    ]
    assert one(objects, "Service", "webhook")["spec"]["ports"][0]["targetPort"] == "http"


def test_grace_period_must_outlast_the_drain() -> None:
    message = render_error({"config": {"server": {"drain_seconds": 60}}})
    assert "shutdown.terminationGracePeriodSeconds (40)" in message
    objects = render(
        {
            "config": {"server": {"drain_seconds": 60}},
            "shutdown": {"preStopSleepSeconds": 5, "terminationGracePeriodSeconds": 70},
        }
    )
    assert (
        one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        == 70
    )


def test_the_grace_margin_covers_what_the_service_takes_after_its_drain() -> None:
    from connector.service import EXIT_SECONDS

    # The service exits at most EXIT_SECONDS after the drain (HTTP server stop);
    # the margin the chart adds must leave room for that and the interpreter's exit.
    assert check_chart.GRACE_MARGIN_SECONDS >= EXIT_SECONDS + 1
    deployment = one(render({}), "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    pause = int(container(deployment)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] >= pause + 20 + EXIT_SECONDS + 1


def test_secrets_are_refused_in_the_config_map() -> None:
    message = render_error({"config": {"zammad": {"token": "abc"}}})
    assert "config.zammad.token is a secret" in message
    assert "abc" not in message


def test_settings_owned_by_image_or_chart_are_refused_in_config() -> None:
    assert "config.server.host" in render_error({"config": {"server": {"host": "127.0.0.1"}}})
    assert "config.ingest.shard_index" in render_error({"config": {"ingest": {"shard_index": 1}}})


def test_secret_settings_come_from_mounted_files() -> None:
    objects = render(
        {
            "secrets": {
                "existingSecret": "triage",
                "keys": {"zammad.token": "token", "zammad.webhook_secret": "hook"},
            }
        }
    )
    deployment = one(objects, "Deployment")
    variables = env(deployment)
    assert variables["TRIAGE_ZAMMAD__TOKEN_FILE"] == "/var/run/secrets/triage/token"
    assert variables["TRIAGE_ZAMMAD__WEBHOOK_SECRET_FILE"] == "/var/run/secrets/triage/hook"
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"
    )
    assert volume["secret"]["secretName"] == "triage"
    assert [item["key"] for item in volume["secret"]["items"]] == ["hook", "token"]
    assert "Secret" not in kinds(objects)


def test_chart_created_secret_holds_the_given_values_and_rolls_the_pods() -> None:
    values = {"secrets": {"keys": {"rt.token": "rt-token"}, "values": {"rt-token": "s3cret"}}}
    objects = render(values)
    secret = one(objects, "Secret")
    assert secret["data"] == {"rt-token": "czNjcmV0"}
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" in annotations
    assert "secrets.keys.rt.token" in render_error(
        {"secrets": {"keys": {"rt.token": "missing"}, "values": {"other": "x"}}}
    )


def test_poller_statefulset_shards_by_pod_ordinal() -> None:
    objects = render({"poller": {"enabled": True, "shards": 3}})
    poller = one(objects, "StatefulSet")
    assert poller["spec"]["replicas"] == 3
    variables = env(poller)
    assert variables["TRIAGE_INGEST__SHARD_COUNT"] == "3"
    assert variables["TRIAGE_INGEST__SHARD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert variables["TRIAGE_INGEST__WEBHOOKS"] == "false"
    assert env(one(objects, "Deployment"))["TRIAGE_INGEST__POLL"] == "false"
    # Webhooks reach only the webhook pods; the poller's Service is headless.
    assert (
        one(objects, "Service", "webhook")["spec"]["selector"]["app.kubernetes.io/component"]
        == "webhook"
    )
    assert one(objects, "Service", "poller")["spec"]["clusterIP"] == "None"


def test_the_service_sees_each_shard_with_its_own_index() -> None:
    objects = render({"poller": {"enabled": True, "shards": 2}})
    poller = one(objects, "StatefulSet")
    shards = [check_chart.service_settings(objects, poller, index)["ingest"] for index in (0, 1)]
    assert [(s["shard_index"], s["shard_count"], s["poll"]) for s in shards] == [
        (0, 2, True),
        (1, 2, True),
    ]


def test_without_the_poller_one_pod_does_everything() -> None:
    objects = render({"replicaCount": 1, "poller": {"enabled": False}})
    assert "StatefulSet" not in kinds(objects)
    assert "TRIAGE_INGEST__POLL" not in env(one(objects, "Deployment"))
    message = render_error({"replicaCount": 2, "poller": {"enabled": False}})
    assert "poller.enabled=false" in message
    webhooks_only = {
        "replicaCount": 2,
        "poller": {"enabled": False},
        "config": {"ingest": {"poll": False}},
    }
    assert one(render(webhooks_only), "Deployment")["spec"]["replicas"] == 2


def test_network_policy_admits_the_http_port_and_lets_out_dns_and_the_helpdesk() -> None:
    objects = render(
        {
            "networkPolicy": {
                "enabled": True,
                "egress": {
                    "dns": {"enabled": True},
                    "helpdesk": {"ports": [443], "cidrs": ["192.0.2.10/32"]},
                },
            }
        }
    )
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    dns, helpdesk = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert helpdesk == {
        "ports": [{"port": 443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}],
    }
    # Both workloads are covered; the helm test pod is not (it must reach the Service).
    selector = policy["podSelector"]["matchLabels"]
    assert "app.kubernetes.io/component" not in selector
    test_pod = one(objects, "Pod")
    assert not check_chart.matches(selector, test_pod["metadata"]["labels"])


def test_service_monitor_scrapes_webhook_and_poller_pods() -> None:
    objects = render({"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}})
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    selected = {
        manifest["metadata"]["labels"]["app.kubernetes.io/component"]
        for _, manifest in objects
        if manifest["kind"] == "Service"
        and check_chart.matches(
            monitor["spec"]["selector"]["matchLabels"], manifest["metadata"]["labels"]
        )
    }
    assert selected == {"webhook", "poller"}


def test_ingress_publishes_only_the_webhooks() -> None:
    objects = render({"ingress": {"enabled": True, "host": "triage.example.com"}})
    (rule,) = one(objects, "Ingress")["spec"]["rules"]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/webhooks/", "Prefix")]
    assert "host" in render_error({"ingress": {"enabled": True}})


def test_image_digest_pins_the_image() -> None:
    digest = "sha256:" + "ab" * 32
    deployment = one(
        render({"image": {"repository": "r.example/triage", "tag": "1.2.3", "digest": digest}}),
        "Deployment",
    )
    assert container(deployment)["image"] == f"r.example/triage:1.2.3@{digest}"
    assert container(one(render(), "Deployment"))["image"] == "helpdesk-triage:0.1.0"


def test_long_release_names_stay_within_kubernetes_limits() -> None:
    objects = render({"fullnameOverride": "a" * 63})
    assert len(one(objects, "StatefulSet")["metadata"]["name"]) <= check_chart.STATEFULSET_NAME_MAX
    assert all(len(manifest["metadata"]["name"]) <= 63 for _, manifest in objects)


def test_notes_name_the_webhook_url_of_the_configured_helpdesk() -> None:
    notes = check_chart.render_notes({"config": {"helpdesk": "znuny"}})
    assert "http://triage-helpdesk-triage.helpdesk.svc:8080/webhooks/znuny" in notes


def test_the_dashboard_ships_in_the_chart_and_names_only_metrics_the_service_exports() -> None:
    import json

    from connector.metrics import Metrics

    objects = render({"grafanaDashboard": {"enabled": True}})
    dashboards = [
        m
        for _, m in objects
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")
    ]
    (configmap,) = dashboards
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["helpdesk-triage.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "helpdesk-triage.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 20
    metrics = Metrics()
    metrics.preinitialise("zammad", ["queue"])
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    exported = {
        family.name + suffix for family in metrics.registry.collect() for suffix in suffixes
    }
    named = {name for expr in exprs for name in re.findall(r"helpdesk_triage_\w+", expr)}
    assert named and not named - exported, f"not exported: {sorted(named - exported)}"
    assert not [m for _, m in render() if m["metadata"]["name"].endswith("-dashboard")]
