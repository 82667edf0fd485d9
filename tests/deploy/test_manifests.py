"""The rendered manifests: valid for Kubernetes and KEDA, and safe to operate."""

import copy
import re
import secrets

import kubernetes_validate
import pytest
from cloudcoil.models.keda import v1alpha1 as keda

from shared.config import Settings

from .conftest import BUILDS, K8S

# The oldest Kubernetes the manifests target, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.29", "1.37")
KEDA_MODELS = {
    "ScaledObject": keda.ScaledObject,
    "ScaledJob": keda.ScaledJob,
    "TriggerAuthentication": keda.TriggerAuthentication,
}
GPU_WORKERS = ("studio-worker-train", "studio-worker-generate")
WORKLOADS = ("Deployment", "Job")
FIELDS = set(Settings.model_fields)
# Read by KEDA (REDIS_*) or by uvicorn itself (FORWARDED_ALLOW_IPS), not by our settings.
EXTRA_KEYS = {"REDIS_ADDRESS", "REDIS_PASSWORD", "FORWARDED_ALLOW_IPS"}


def example_secrets() -> dict[str, str]:
    text = (K8S / "examples" / "secrets.env.example").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def of_kind(docs: list[dict], *kinds: str) -> list[dict]:
    return [d for d in docs if d["kind"] in kinds]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(doc)
    return spec["containers"] + (spec.get("initContainers") or [] if init else [])


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def keda_errors(doc: dict) -> list[str]:
    """Validate against KEDA's CRD models; a field the model drops on a round trip is unknown."""
    model = KEDA_MODELS[doc["kind"]].model_validate(doc)
    again = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [] if again == doc else [f"{doc['kind']} {doc['metadata']['name']}: unknown fields"]


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_validates(rendered, build):
    assert rendered[build], f"{build} rendered nothing"
    for doc in rendered[build]:
        if doc["apiVersion"].startswith("keda.sh/"):
            assert not keda_errors(doc)
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validators_reject_mistakes(rendered):
    """Guards the two checks above: a misspelt field must not pass."""
    deployment = copy.deepcopy(named(rendered["overlays/prod"], "Deployment", "studio-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    scaled = copy.deepcopy(named(rendered["overlays/prod"], "ScaledObject", "studio-worker-train"))
    scaled["spec"]["cooldownperiod"] = 10
    assert keda_errors(scaled)


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_containers_have_limits_and_probes(rendered, build):
    for doc in of_kind(rendered[build], *WORKLOADS):
        for c in containers(doc):
            for key in ("requests", "limits"):
                res = c.get("resources", {}).get(key, {})
                assert {"cpu", "memory"} <= res.keys(), f"{doc['metadata']['name']}/{c['name']}"
        if doc["kind"] == "Deployment":  # one-shot Jobs and init containers serve no probes
            for c in containers(doc, init=False):
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert probe in c, f"{doc['metadata']['name']}/{c['name']} lacks {probe}"


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_probes_match_the_health_endpoints(rendered, build):
    """Liveness never looks at a dependency (/healthz); readiness does (/readyz), and its timeout leaves
    room for the slowest dependency check (READINESS_TIMEOUT, checks run in parallel)."""
    for doc in of_kind(rendered[build], "Deployment"):
        for c in containers(doc, init=False):
            where = f"{doc['metadata']['name']}/{c['name']}"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            # A GPU worker has started once it is warm: models loaded and every shape bucket (the
            # training step) compiled or loaded from the compile cache (shared/warm.py).
            started = "/readyz" if doc["metadata"]["name"] in GPU_WORKERS else "/healthz"
            assert c["startupProbe"]["httpGet"]["path"] == started, where
            ready = c["readinessProbe"]
            assert ready["httpGet"]["path"] == "/readyz", where
            assert ready.get("timeoutSeconds", 1) >= Settings().readiness_timeout + 1, where


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_pods_run_unprivileged(rendered, build):
    for doc in of_kind(rendered[build], *WORKLOADS):
        assert pod_spec(doc)["securityContext"]["runAsNonRoot"] is True
        for c in containers(doc):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("build", ["base", "overlays/prod"])
def test_gpu_workers_get_one_gpu_each(rendered, build):
    for name in GPU_WORKERS:
        doc = named(rendered[build], "Deployment", name)
        (worker,) = containers(doc, init=False)
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert worker["args"][:2] == ["worker", name.removeprefix("studio-worker-")]
        assert "--concurrency" in worker["args"] and worker["args"][-1] == "1"
        spec = pod_spec(doc)
        assert spec["nodeSelector"], "GPU workers must land on the GPU pool"
        assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
        startup = worker["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "allow model loading"
        # a cold compile of every bucket (of the training step: 183 s on an H100): minutes
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
        assert any(m["mountPath"] == "/models" for m in worker["volumeMounts"])


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_the_training_step_is_compiled_only_where_the_compile_cache_persists(rendered, build):
    """TRAIN_COMPILE costs a cold compile (183 s on an H100) per pod whose compile cache is empty:
    never on where /models is an emptyDir. (Off in prod too until it has run on a GPU.)"""
    doc = named(rendered[build], "Deployment", "studio-worker-train")
    (worker,) = containers(doc, init=False)
    setting = env_of(worker).get("TRAIN_COMPILE", Settings().train_compile)
    models = next(v for v in pod_spec(doc)["volumes"] if v["name"] == "models")
    assert setting == "off" or "persistentVolumeClaim" in models, build


def test_dev_runs_the_tiny_models_without_gpus(rendered):
    docs = rendered["overlays/dev"]
    (config,) = of_kind(docs, "ConfigMap")
    assert config["data"]["MODEL_PRESET"] == "tiny"
    for name in GPU_WORKERS:
        doc = named(docs, "Deployment", name)
        assert "nvidia.com/gpu" not in str(doc)
        assert env_of(containers(doc)[0])["DEVICE"] == "cpu"
    assert not of_kind(docs, "ScaledObject"), "dev clusters need not run KEDA"
    pdb = named(docs, "PodDisruptionBudget", "studio-gateway")["spec"]
    assert "minAvailable" not in pdb and pdb["maxUnavailable"] == 1, "one replica, drains pass"


@pytest.mark.parametrize("build", ["base", "overlays/prod"])
def test_shutdown_outlasts_the_task_time_limit(rendered, build):
    """A SIGTERMed worker finishes its task (warm shutdown) before the kubelet may SIGKILL it."""
    for name in GPU_WORKERS:
        doc = named(rendered[build], "Deployment", name)
        limit = int(env_of(containers(doc, init=False)[0])["TASK_TIME_LIMIT"])
        assert pod_spec(doc)["terminationGracePeriodSeconds"] > limit


def setting(docs: list[dict], container: dict, name: str) -> int:
    """The value a container's process reads for `name`: its own env, else the ConfigMaps it
    loads (envFrom), else the Settings default."""
    if name in env_of(container):
        return int(env_of(container)[name])
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and name in (data := named(docs, "ConfigMap", ref["name"]).get("data") or {}):
            return int(data[name])
    return int(getattr(Settings(), name.lower()))


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_visibility_timeout_outlasts_the_longest_task(rendered, build):
    """Redis re-delivers an unacknowledged task after the visibility timeout: every process that
    talks to the broker must wait longer than the longest task any worker of the build may run."""
    docs = rendered[build]
    workers = [
        c
        for d in of_kind(docs, *WORKLOADS)
        for c in containers(d, init=False)
        if c.get("args", [""])[0] == "worker"
    ]
    assert len(workers) >= 4, "photos, notify, train and generate workers"
    longest = max(setting(docs, c, "TASK_TIME_LIMIT") for c in workers)
    for doc in of_kind(docs, *WORKLOADS):
        for c in containers(doc, init=False):
            timeout = setting(docs, c, "CELERY_VISIBILITY_TIMEOUT")
            assert timeout > longest, f"{doc['metadata']['name']}: {timeout} s <= a {longest} s task"


def test_keda_scale_down_waits_for_running_tasks(rendered):
    docs = rendered["overlays/prod"]
    for name in GPU_WORKERS:
        scaled = named(docs, "ScaledObject", name)
        worker = named(docs, "Deployment", name)
        limit = int(env_of(containers(worker, init=False)[0])["TASK_TIME_LIMIT"])
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert behavior["stabilizationWindowSeconds"] >= min(limit, 3600)  # the HPA maximum
        assert spec["cooldownPeriod"] >= limit
        assert behavior["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == name.removeprefix("studio-worker-")
        auth = named(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"][0]["name"] == "studio-secrets"
        assert "REDIS_ADDRESS" in of_kind(docs, "ConfigMap")[0]["data"]
    assert named(docs, "ScaledObject", "studio-worker-generate")["spec"]["minReplicaCount"] >= 1
    hpa = named(docs, "HorizontalPodAutoscaler", "studio-gateway")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_every_deployment_has_a_service_and_a_pdb(rendered, build):
    docs = rendered[build]
    for doc in of_kind(docs, "Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        for kind in ("Service", "PodDisruptionBudget"):
            selectors = [
                d["spec"]["selector"].get("matchLabels", d["spec"]["selector"]) for d in of_kind(docs, kind)
            ]
            assert any(sel.items() <= labels.items() for sel in selectors), (
                f"no {kind} selects {doc['metadata']['name']}"
            )


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_images_are_pinned(rendered, build):
    for doc in of_kind(rendered[build], *WORKLOADS):
        for c in containers(doc):
            image = c["image"]
            assert "@sha256:" in image or re.fullmatch(r"[^@]+:[\w.-]+", image), image
            assert not image.endswith(":latest"), image


@pytest.mark.parametrize("build", ["base", "overlays/dev", "overlays/prod"])
def test_settings_are_real_settings_and_secrets_are_referenced(rendered, build):
    docs = rendered[build]
    assert not of_kind(docs, "Secret"), "secrets are created by the operator, never committed"
    (config,) = of_kind(docs, "ConfigMap")
    known = {name.upper() for name in FIELDS} | EXTRA_KEYS
    assert set(config["data"]) <= known, set(config["data"]) - known
    for secret_like in ("SECRET_KEY", "S3_SECRET_ACCESS_KEY", "SMTP_PASSWORD", "DATABASE_URL"):
        assert secret_like not in config["data"]
    # The settings plus the example Secret (placeholders filled) make a valid configuration.
    filled = {k: v.replace("CHANGE-ME", secrets.token_urlsafe(32)) for k, v in example_secrets().items()}
    values = {**config["data"], **filled}
    Settings(_env_file=None, **{k.lower(): v for k, v in values.items() if k.lower() in FIELDS})
    for doc in of_kind(docs, *WORKLOADS):
        for c in containers(doc):
            refs = {next(iter(r)): next(iter(r.values()))["name"] for r in c["envFrom"]}
            assert refs == {"configMapRef": config["metadata"]["name"], "secretRef": "studio-secrets"}


def test_example_secret_is_only_an_example():
    keys = example_secrets()
    assert set(keys) <= {name.upper() for name in FIELDS} | EXTRA_KEYS
    assert all("CHANGE-ME" in value for value in keys.values()), "placeholders only"
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert "examples" not in kustomization.read_text(), kustomization


def test_migration_job_runs_studio_migrate(rendered):
    for build in ("base", "overlays/dev", "overlays/prod"):
        job = named(rendered[build], "Job", "studio-migrate")
        (c,) = containers(job)
        assert c["command"] + c["args"] == ["studio", "migrate"]
        assert pod_spec(job)["restartPolicy"] == "Never"


def test_ingress_streams_server_sent_events(rendered):
    (ingress,) = of_kind(rendered["overlays/prod"], "Ingress")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    named(rendered["overlays/prod"], "Service", backend["name"])


def test_gateway_metrics_are_scraped_on_the_health_port_only(rendered):
    """Prometheus reads the gateway's /metrics on HEALTH_PORT through a headless Service; the Service
    the Ingress routes to exposes only the public port (which answers /metrics with 404)."""
    for build in ("base", "overlays/dev", "overlays/prod"):
        docs = rendered[build]
        (c,) = containers(named(docs, "Deployment", "studio-gateway"))
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == int(of_kind(docs, "ConfigMap")[0]["data"]["HEALTH_PORT"])
        scrape = named(docs, "Service", "studio-gateway-metrics")
        assert scrape["spec"]["clusterIP"] == "None"
        assert [p["targetPort"] for p in scrape["spec"]["ports"]] == ["metrics"]
        (ingress,) = of_kind(docs, "Ingress")
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        assert [p["targetPort"] for p in named(docs, "Service", backend)["spec"]["ports"]] == ["http"]


def test_gateway_listens_on_all_interfaces(rendered):
    """`studio gateway` binds 127.0.0.1 by default, which a Service cannot reach."""
    (c,) = containers(named(rendered["base"], "Deployment", "studio-gateway"))
    assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("build", ["overlays/dev", "overlays/prod"])
def test_deploy_script_phases(rendered, build):
    """deploy/deploy.sh applies `setup`, then the `migrate` Jobs, then everything."""
    docs = rendered[build]
    phase = {
        (d["kind"], d["metadata"]["name"]): d["metadata"]["labels"].get("studio.deploy/phase") for d in docs
    }
    setup = {kind for (kind, _), p in phase.items() if p == "setup"}
    assert (
        {"Namespace", "ServiceAccount", "ConfigMap"}
        <= setup
        <= {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim"}
    )
    jobs = {name for (kind, name), p in phase.items() if p == "migrate"}
    assert jobs == {name for kind, name in phase if kind == "Job"}
    assert "studio-migrate" in jobs
    script = (K8S.parent / "deploy.sh").read_text()
    assert all(job in script for job in jobs)
    (namespace,) = of_kind(docs, "Namespace")
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]
    }


def test_readme_documents_every_setting():
    readme = (K8S.parent / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, re.MULTILINE))
    assert {name.upper() for name in FIELDS} <= documented, {n.upper() for n in FIELDS} - documented
