"""Lint, render and validate the Helm chart offline, with the real Helm engine.

Helm is the Helm v4 Go library bundled in the ``helm-python-sdk`` wheel
(import name ``helm_python``), so neither a ``helm`` binary nor a cluster is
needed. Confirmed in that package's documentation and source:
``Chart.load(path)``; ``chart.render(values, name=, namespace=)`` is
``helm template`` and returns ``{template path: manifest}``;
``chart.validate_schema(values)`` checks values against values.schema.json;
``lint(path, values, strict=, kube_version=)`` is ``helm lint`` and returns
``{"messages": [{"severity", "path", "error"}], "errors": [...]}``
(severity 1 info, 2 warning, 3 error).

Each scenario (the chart's defaults, every ``ci/*-values.yaml`` next to the
chart, every ``yaml`` block of docs/deploy.md) is

1. checked against values.schema.json with ``jsonschema`` (independently of Helm);
2. linted by Helm in strict mode for the oldest and the newest Kubernetes checked;
3. rendered by Helm, and every manifest validated against the Kubernetes
   OpenAPI schemas bundled in ``kubernetes-validate`` in strict mode (an
   unknown field is an error), for the same two Kubernetes versions;
4. held to the chart's policies: restrictive security contexts, probes on
   /healthz and /readyz, CPU and memory limits, a grace period longer than
   the drain, selectors that match what they should;
5. loaded by the service itself: the rendered config file plus each pod's
   environment (and the image's, from the Dockerfile) go through
   ``connector.config.load_settings`` in a child process, and the result must
   agree with the pod spec (port, polling, shards, secrets).

Usage::

    .venv/bin/python scripts/check_chart.py [--verbose]

Exit status 0 when every scenario passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockerfile
import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "helpdesk-triage"
DOCS = ROOT / "docs" / "deploy.md"
DOCKERFILE = ROOT / "Dockerfile"
RELEASE = "triage"
NAMESPACE = "helpdesk"
# The chart's kubeVersion floor and the newest Kubernetes kubernetes-validate knows.
KUBE_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Resources of CRDs: no schema in kubernetes-validate; checked structurally below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
DNS_LABEL_MAX = 63
# A StatefulSet's controller-revision-hash label is its name plus 11 characters.
STATEFULSET_NAME_MAX = 52
GRACE_MARGIN_SECONDS = 5
# The defaults of the service's settings the chart relies on (connector/config.py).
DEFAULT_PORT = 8080
DEFAULT_DRAIN_SECONDS = 20.0

Manifest = dict[str, Any]


@dataclass
class Scenario:
    name: str
    values: dict[str, Any]


@dataclass
class Report:
    scenario: str
    objects: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# -- scenarios -----------------------------------------------------------------------------


def scenarios(chart: Path = CHART, docs: Path = DOCS) -> list[Scenario]:
    """The defaults, every ci/*-values.yaml and every yaml block of the deploy guide."""
    found = [Scenario("defaults", {})]
    for path in sorted((chart / "ci").glob("*-values.yaml")):
        found.append(Scenario(f"ci/{path.name}", yaml.safe_load(path.read_text()) or {}))
    if docs.is_file():
        for number, block in enumerate(yaml_blocks(docs.read_text()), start=1):
            found.append(Scenario(f"{docs.name} yaml block {number}", yaml.safe_load(block) or {}))
    return found


def yaml_blocks(markdown: str) -> list[str]:
    """The bodies of the ```yaml fenced blocks of a Markdown text."""
    return re.findall(r"^```yaml\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


# -- Helm ----------------------------------------------------------------------------------


def render(values: dict[str, Any], chart: Path = CHART) -> list[tuple[str, Manifest]]:
    """``helm template``: (template path, manifest) for every rendered object."""
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=RELEASE, namespace=NAMESPACE)
    objects: list[tuple[str, Manifest]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append((path.split("/", 1)[1], document))
    return objects


def render_notes(values: dict[str, Any], chart: Path = CHART) -> str:
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def lint_problems(values: dict[str, Any], chart: Path = CHART) -> list[str]:
    """``helm lint --strict`` findings above info level, for each Kubernetes version."""
    problems = []
    for version in KUBE_VERSIONS:
        report = helm.lint(chart, values, strict=True, kube_version=f"v{version}")
        problems += [f"helm lint (k8s {version}): {error}" for error in report["errors"]]
        problems += [
            f"helm lint (k8s {version}): {message['path']}: {message['error']}"
            for message in report["messages"]
            if message["severity"] >= 2
        ]
    return problems


# -- values --------------------------------------------------------------------------------


@functools.cache
def values_schema(chart: Path = CHART) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((chart / "values.schema.json").read_text())
    return schema


def default_values(chart: Path = CHART) -> dict[str, Any]:
    defaults: dict[str, Any] = yaml.safe_load((chart / "values.yaml").read_text())
    return defaults


def merged_values(values: dict[str, Any], chart: Path = CHART) -> dict[str, Any]:
    """The values a release would use: the chart's defaults coalesced with ``values``."""
    with helm.Chart.load(chart) as loaded:
        return loaded.merge_values(values)


def schema_problems(values: dict[str, Any], chart: Path = CHART) -> list[str]:
    """Where the merged values break values.schema.json, one line per error."""
    validator = jsonschema.Draft7Validator(values_schema(chart))
    return [
        f"values.schema.json: {'.'.join(str(p) for p in error.absolute_path) or '<root>'}: "
        f"{error.message}"
        for error in sorted(validator.iter_errors(merged_values(values, chart)), key=str)
    ]


# -- Kubernetes schemas --------------------------------------------------------------------


def kubernetes_problems(objects: list[tuple[str, Manifest]]) -> list[str]:
    problems = []
    for path, manifest in objects:
        if (manifest.get("apiVersion"), manifest.get("kind")) in CUSTOM_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                problems.append(
                    f"{path}: {describe(manifest)} (k8s {version}) {where}: {error.message}"
                )
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{path}: {describe(manifest)}: no Kubernetes {version} schema")
    return problems


def describe(manifest: Manifest) -> str:
    return f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"


# -- chart policies ------------------------------------------------------------------------


def of_kind(objects: list[tuple[str, Manifest]], *kinds: str) -> list[Manifest]:
    return [manifest for _, manifest in objects if manifest.get("kind") in kinds]


def pod_specs(objects: list[tuple[str, Manifest]]) -> Iterator[tuple[Manifest, Manifest]]:
    """(owner, pod spec) for every workload's pod template and every bare Pod."""
    for manifest in of_kind(objects, *WORKLOAD_KINDS):
        yield manifest, manifest["spec"]["template"]["spec"]
    for manifest in of_kind(objects, "Pod"):
        yield manifest, manifest["spec"]


def config_map(objects: list[tuple[str, Manifest]]) -> Manifest:
    """The ConfigMap holding the service's config.yaml (the dashboard has its own)."""
    (configmap,) = [m for m in of_kind(objects, "ConfigMap") if "config.yaml" in m["data"]]
    return configmap


def config_file(objects: list[tuple[str, Manifest]]) -> dict[str, Any]:
    """The service's settings as the ConfigMap hands them over."""
    configmap = config_map(objects)
    loaded: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"]) or {}
    return loaded


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def security_problems(owner: Manifest, spec: Manifest) -> list[str]:
    name = describe(owner)
    problems = []
    pod = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken must be false")
    for container in spec["containers"]:
        where = f"{name} container {container['name']}"
        context = {**pod, **container.get("securityContext", {})}
        if context.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot must be true")
        if not isinstance(context.get("runAsUser"), int) or context["runAsUser"] <= 0:
            problems.append(f"{where}: runAsUser must be a numeric non-root UID")
        if not isinstance(context.get("runAsGroup"), int) or context["runAsGroup"] <= 0:
            problems.append(f"{where}: runAsGroup must be a numeric non-root GID")
        if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem must be true")
        dropped = container.get("securityContext", {}).get("capabilities", {}).get("drop", [])
        if "ALL" not in dropped:
            problems.append(f"{where}: capabilities must drop ALL")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile must be RuntimeDefault")
        limits = container.get("resources", {}).get("limits", {})
        if not {"cpu", "memory"} <= limits.keys():
            problems.append(f"{where}: needs CPU and memory limits")
    return problems


def workload_problems(workload: Manifest, settings: dict[str, Any]) -> list[str]:
    name = describe(workload)
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    problems = []
    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    if ports.get("http") != settings.get("server", {}).get("port", DEFAULT_PORT):
        problems.append(f"{name}: containerPort 'http' differs from config server.port")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "http":
            problems.append(f"{name}: {probe} must GET {path} on the http port")
    drain = float(settings.get("server", {}).get("drain_seconds", DEFAULT_DRAIN_SECONDS))
    pause = _prestop_sleep_seconds(container)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < pause + drain + GRACE_MARGIN_SECONDS:
        problems.append(
            f"{name}: terminationGracePeriodSeconds {grace} does not cover the preStop pause "
            f"({pause}) plus the drain ({drain}) plus {GRACE_MARGIN_SECONDS} s"
        )
    tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
        problems.append(f"{name}: /tmp must be an emptyDir (the root filesystem is read-only)")
    if "checksum/config" not in workload["spec"]["template"]["metadata"].get("annotations", {}):
        problems.append(f"{name}: the pod template needs the checksum/config annotation")
    if (
        workload["kind"] == "StatefulSet"
        and len(workload["metadata"]["name"]) > STATEFULSET_NAME_MAX
    ):
        problems.append(f"{name}: StatefulSet names must stay within {STATEFULSET_NAME_MAX}")
    return problems


def _prestop_sleep_seconds(container: Manifest) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def wiring_problems(objects: list[tuple[str, Manifest]]) -> list[str]:
    """Selectors and references between the objects point at what they should."""
    problems = []
    workloads = of_kind(objects, *WORKLOAD_KINDS)
    templates = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]
    services = of_kind(objects, "Service")
    for _, manifest in objects:
        name = manifest["metadata"]["name"]
        if len(name) > DNS_LABEL_MAX:
            problems.append(f"{describe(manifest)}: name longer than {DNS_LABEL_MAX}")
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        if not matches(selector, workload["spec"]["template"]["metadata"]["labels"]):
            problems.append(f"{describe(workload)}: selector does not match its own pods")
    for service in services:
        if not any(matches(service["spec"]["selector"], labels) for labels in templates):
            problems.append(f"{describe(service)}: selects no pods of the release")
    for statefulset in of_kind(objects, "StatefulSet"):
        governing = [
            s for s in services if s["metadata"]["name"] == statefulset["spec"]["serviceName"]
        ]
        if not governing or governing[0]["spec"].get("clusterIP") != "None":
            problems.append(f"{describe(statefulset)}: serviceName must be a headless Service")
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        if not any(matches(pdb["spec"]["selector"]["matchLabels"], labels) for labels in templates):
            problems.append(f"{describe(pdb)}: selects no pods of the release")
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        scaled = [
            w
            for w in workloads
            if (w["kind"], w["metadata"]["name"]) == (target["kind"], target["name"])
        ]
        if not scaled:
            problems.append(f"{describe(hpa)}: scales a workload the release does not have")
        elif "replicas" in scaled[0]["spec"]:
            problems.append(f"{describe(scaled[0])}: sets replicas while the HPA scales it")
    for policy in of_kind(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        if not all(matches(selector, labels) for labels in templates):
            problems.append(f"{describe(policy)}: does not cover every pod of the release")
    for monitor in of_kind(objects, "ServiceMonitor"):
        selected = [
            s
            for s in services
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        if not selected:
            problems.append(f"{describe(monitor)}: selects no Service")
        for endpoint in monitor["spec"]["endpoints"]:
            for service in selected:
                if endpoint["port"] not in {port["name"] for port in service["spec"]["ports"]}:
                    problems.append(
                        f"{describe(monitor)}: {describe(service)} has no port {endpoint['port']}"
                    )
    return problems


def policy_problems(objects: list[tuple[str, Manifest]]) -> list[str]:
    settings = config_file(objects)
    problems = wiring_problems(objects)
    for owner, spec in pod_specs(objects):
        problems += security_problems(owner, spec)
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        problems += workload_problems(workload, settings)
    return problems


# -- the service's own settings ------------------------------------------------------------

_LOAD_SETTINGS = (
    "import json; from connector.config import load_settings, redacted; "
    "print(json.dumps(redacted(load_settings())))"
)


def image_environment(path: Path = DOCKERFILE) -> dict[str, str]:
    """The TRIAGE_* variables the image's final stage sets (the pod inherits them)."""
    environment: dict[str, str] = {}
    if not path.is_file():
        return environment
    commands = dockerfile.parse_file(str(path))
    last_stage = max(i for i, command in enumerate(commands) if command.cmd.upper() == "FROM")
    for command in commands[last_stage:]:
        if command.cmd.upper() == "ENV":
            pairs = dict(zip(command.value[::2], command.value[1::2], strict=True))
            environment.update({k: v for k, v in pairs.items() if k.startswith("TRIAGE_")})
    return environment


def pod_environment(workload: Manifest, pod_index: int = 0) -> dict[str, str]:
    """The container's environment as the kubelet would set it, for pod ``pod_index``."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    environment = {}
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = str(variable["value"])
            continue
        field_path = variable["valueFrom"]["fieldRef"]["fieldPath"]
        if field_path != "metadata.labels['apps.kubernetes.io/pod-index']":
            raise ValueError(f"{describe(workload)}: unexpected env source {field_path}")
        environment[variable["name"]] = str(pod_index)
    return environment


def service_settings(
    objects: list[tuple[str, Manifest]], workload: Manifest, pod_index: int = 0
) -> dict[str, Any]:
    """The settings the service builds in pod ``pod_index`` of ``workload``.

    The config file, the mounted secrets and the environment are laid out in a
    temporary directory, the paths in the environment pointed there, and
    ``load_settings`` runs in a child process so nothing of this process's
    environment leaks in. Raises ``RuntimeError`` with the service's message
    when it refuses the configuration.
    """
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    configmap = config_map(objects)
    with tempfile.TemporaryDirectory() as scratch:
        relocated: dict[str, str] = {}
        for name, volume in volumes.items():
            if name not in mounts:
                continue
            target = Path(scratch) / name
            target.mkdir()
            if "configMap" in volume:
                for key, text in configmap["data"].items():
                    (target / key).write_text(text)
            elif "secret" in volume:
                for item in volume["secret"].get("items", []):
                    (target / item["path"]).write_text(f"placeholder-{item['key']}\n")
            relocated[mounts[name]] = str(target)
        environment = {**image_environment(), **pod_environment(workload, pod_index)}
        for key, value in environment.items():
            for mount, local in relocated.items():
                if value.startswith(mount + "/"):
                    environment[key] = local + value[len(mount) :]
        # The image's model lives at /app/model; the checkout's stands in for it here.
        if "TRIAGE_MODEL__PATH" in environment:
            environment["TRIAGE_MODEL__PATH"] = str(ROOT / "model")
        result = subprocess.run(
            [sys.executable, "-c", _LOAD_SETTINGS],
            env={"PATH": os.environ.get("PATH", ""), **environment},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        raise RuntimeError(lines[-1].strip())
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def settings_problems(objects: list[tuple[str, Manifest]]) -> list[str]:
    """The service accepts each pod's configuration, and it means what the chart intends."""
    problems = []
    poller_on = bool(of_kind(objects, "StatefulSet"))
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        name = describe(workload)
        shards = workload["spec"].get("replicas", 1) if workload["kind"] == "StatefulSet" else 1
        for index in sorted({0, shards - 1}):
            try:
                settings = service_settings(objects, workload, index)
            except RuntimeError as error:
                problems.append(f"{name} pod {index}: the service refuses its settings: {error}")
                continue
            (container,) = workload["spec"]["template"]["spec"]["containers"]
            if settings["server"]["port"] != container["ports"][0]["containerPort"]:
                problems.append(f"{name}: the service listens elsewhere than the containerPort")
            if settings["server"]["host"] != "0.0.0.0":
                problems.append(f"{name}: the service listens on {settings['server']['host']} only")
            ingest = settings["ingest"]
            if workload["kind"] == "StatefulSet":
                if not ingest["poll"] or ingest["webhooks"]:
                    problems.append(f"{name}: the poller must poll and refuse webhooks")
                if (ingest["shard_count"], ingest["shard_index"]) != (shards, index):
                    problems.append(
                        f"{name} pod {index}: shard {ingest['shard_index']}/{ingest['shard_count']}"
                    )
            elif poller_on and ingest["poll"]:
                problems.append(f"{name}: webhook pods must leave polling to the poller")
            missing = _unset_secret_files(container, settings)
            problems += [
                f"{name}: secret setting {key} is not filled from its file" for key in missing
            ]
    return problems


def _unset_secret_files(container: Manifest, settings: dict[str, Any]) -> list[str]:
    missing = []
    for variable in container.get("env", []):
        name = variable["name"]
        if (
            not (name.startswith("TRIAGE_") and name.endswith("_FILE"))
            or name == "TRIAGE_CONFIG_FILE"
        ):
            continue
        path = name[len("TRIAGE_") : -len("_FILE")].lower().split("__")
        value: Any = settings
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if not value:
            missing.append(".".join(path))
    return missing


# -- running -------------------------------------------------------------------------------


def check(scenario: Scenario) -> Report:
    report = Report(scenario.name)
    report.problems += schema_problems(scenario.values)
    report.problems += lint_problems(scenario.values)
    try:
        objects = render(scenario.values)
    except helm.HelmError as error:
        report.problems.append(f"helm template: {error}")
        return report
    report.objects = [describe(manifest) for _, manifest in objects]
    report.problems += kubernetes_problems(objects)
    report.problems += policy_problems(objects)
    report.problems += settings_problems(objects)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--verbose", action="store_true", help="list the objects of each scenario")
    args = parser.parse_args(argv)
    versions = ", ".join(KUBE_VERSIONS)
    print(f"helm {helm.helm_sdk_version()} (helm-python-sdk), Kubernetes schemas {versions}")
    failed = 0
    for scenario in scenarios():
        report = check(scenario)
        status = "FAIL" if report.problems else "ok"
        print(f"{status:4} {report.scenario}: {len(report.objects)} objects")
        if args.verbose:
            for name in report.objects:
                print(f"       {name}")
        for problem in report.problems:
            print(f"       {problem}")
        failed += bool(report.problems)
    total = len(scenarios())
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
