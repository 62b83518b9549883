"""deploy/k8s: both overlays render with `kubectl kustomize`, core kinds pass strict schema validation
(`kubernetes-validate`), CRDs are checked structurally against what they point at, and the catalog
Indexed Job's own command line (and its join Job's) runs end to end on a synthetic title against a
real Triton.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from preedit.cli import main as cli_main
from preedit.paths import REPO_ROOT

from test_segment import facts, ffmpeg_clean, key_frames, make_clip

K8S = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
CORE_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2")
KUBERNETES_VERSION = "1.32.0"  # oldest API level the manifests use (Job backoffLimitPerIndex, sleep preStop)

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl not on PATH (install kubectl to render kustomize offline)")


def render(path: Path) -> list:
    proc = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def docs(request):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not on PATH (install kubectl to render kustomize offline)")
    return request.param, render(K8S / "overlays" / request.param)


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def container(obj, index=0):
    return obj["spec"]["template"]["spec"]["containers"][index]


def test_core_kinds_validate_strictly(docs):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (the test extra)")
    _, items = docs
    core = [d for d in items if d["apiVersion"] in CORE_GROUPS]
    assert {d["kind"] for d in core} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "Job",
                                         "PodDisruptionBudget", "PersistentVolumeClaim", "Namespace"}
    for d in core:
        kv.validate(d, KUBERNETES_VERSION, strict=True)  # raises ValidationError
    others = {d["kind"] for d in items if d["apiVersion"] not in CORE_GROUPS}
    assert others == {"ServiceMonitor"}  # CRD: no schema in kubernetes-validate; checked below


def test_strict_validation_catches_a_misspelt_field(docs):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed (the test extra)")
    dep = one(docs[1], "Deployment", "preedit-triton")
    bad = yaml.safe_load(yaml.safe_dump(dep))
    container(bad)["readinesProbe"] = container(bad).pop("readinessProbe")
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)


def test_triton_deployment_probes_secret_metrics_and_shutdown(docs):
    overlay, items = docs
    dep = one(items, "Deployment", "preedit-triton")
    c = container(dep)
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert c[probe]["httpGet"]["path"] == path
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    key = next(e for e in c["env"] if e["name"] == "RESTRICTED_KEY")
    assert key["valueFrom"]["secretKeyRef"]["name"] == "preedit-triton-restricted"
    args = " ".join(c["args"])
    for flag in ("--grpc-restricted-protocol=", "--http-restricted-api="):
        match = re.search(re.escape(flag) + r"([a-z,-]+):preedit-admin-key=\$\(RESTRICTED_KEY\)", args)
        assert match and {"shared-memory", "model-repository"} <= set(match.group(1).split(","))
    assert "requests" in c["resources"] and dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    assert c["lifecycle"]["preStop"]
    gpu = c["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpu == "1") == (overlay == "gpu")
    image = c["image"]
    assert image.startswith("nvcr.io/nvidia/tritonserver:") == (overlay == "gpu")
    if overlay == "cpu":
        assert c["command"] == ["preedit", "serve"] and "--host=0.0.0.0" in c["args"]
        from preedit.serve import setup_args  # every argument must be one `preedit serve` accepts
        import argparse

        expanded = [a.replace("$(", "").replace(")", "") for a in c["args"]]
        setup_args(argparse.ArgumentParser(exit_on_error=False)).parse_args(expanded)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-repository"]["persistentVolumeClaim"]["claimName"] == "preedit-model-repository"


def test_service_pdb_hpa_and_servicemonitor_point_at_triton(docs):
    _, items = docs
    dep = one(items, "Deployment", "preedit-triton")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = one(items, "Service", "preedit-triton")
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == 8001
    pdb = one(items, "PodDisruptionBudget")
    assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    hpa = one(items, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "preedit-triton"}
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "rules.yaml").read_text())["rules"]["external"]
    assert [r["name"]["as"] for r in rules] == [metric]
    assert "nv_inference_queue_duration_us" in rules[0]["metricsQuery"]
    sm = one(items, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_catalog_job_is_indexed_and_its_n_matches_segment_and_join(docs):
    _, items = docs
    job = one(items, "Job", "preedit-catalog")
    n = job["spec"]["completions"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] <= n
    args = container(job)["args"]
    assert args[args.index("--segment") + 1] == f"$(JOB_COMPLETION_INDEX)/{n}"
    assert args[args.index("--url") + 1] == "$(TRITON_URL)" and args[args.index("--transport") + 1] == "grpc"
    assert args[args.index("--keyint") + 1] == "$(KEYINT)" and "--closed-gop" in args  # cuts on the GOP grid
    join = container(one(items, "Job", "preedit-catalog-join"))["args"]
    parts = join[1:join.index("-o")]
    out = args[args.index("-o") + 1]
    assert parts == [out.replace("$(JOB_COMPLETION_INDEX)", str(i)) for i in range(n)]
    live = container(one(items, "Deployment", "preedit-live"))["args"]
    assert float(live[live.index("--latency-budget-ms") + 1]) > 0
    assert one(items, "Deployment", "preedit-live")["spec"]["replicas"] == 1


@needs_kubectl
def test_object_store_component_renders(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    overlay = copy / "overlays" / "s3"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("resources: [../gpu]\ncomponents: [../../components/object-store]\n")
    dep = one(render(overlay), "Deployment", "preedit-triton")
    c = container(dep)
    assert next(e for e in c["env"] if e["name"] == "MODEL_REPOSITORY")["value"].startswith("s3://")
    assert "model-repository" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}


def packets(path):
    import av

    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def expand(args, env_list, overrides):
    """Kubernetes `$(VAR)` expansion of container args (env values, then the overrides)."""
    env = {e["name"]: e["value"] for e in env_list if "value" in e}
    env.update(overrides)
    return [re.sub(r"\$\(([A-Z_][A-Z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


@needs_kubectl
@pytest.mark.needs_triton
def test_the_catalog_job_command_line_runs_and_joins(tmp_path):
    """Every pod of the Indexed Job, as rendered (cpu overlay), then the join Job, on a synthetic title."""
    from preedit.paths import model_repository
    from preedit.serve import ServerConfig, TritonServer

    items = render(K8S / "overlays" / "cpu")
    job, join_job = one(items, "Job", "preedit-catalog"), one(items, "Job", "preedit-catalog-join")
    n = job["spec"]["completions"]
    title = make_clip(tmp_path / "title.mp4", frames=6 * n, gop=6, size=(64, 48))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    c, jc = container(job), container(join_job)
    assert c["command"] == ["preedit"] and jc["command"] == ["preedit"]
    with TritonServer(ServerConfig(model_repository=model_repository(), http_port=0, grpc_port=0,
                                   metrics_port=0, models=("preedit",))) as server:
        server.wait_model_ready("preedit")
        for i in range(n):
            argv = expand(c["args"], c["env"], {"TITLE": str(title), "OUTPUT_DIR": str(out_dir),
                                                "TRITON_URL": server.grpc_url, "JOB_COMPLETION_INDEX": str(i),
                                                "KEYINT": "6"})
            assert cli_main(argv) == 0, argv
        # The in-band gRPC transport the pods use gives the same frames as system shm on one host.
        shm = [a if a != "grpc" else "shm" for a in argv]
        shm[shm.index("-o") + 1] = str(tmp_path / "shm.mp4")
        assert cli_main(shm) == 0
        assert packets(tmp_path / "shm.mp4") == packets(Path(argv[argv.index("-o") + 1]))
    argv = expand(jc["args"], jc["env"], {"OUTPUT_DIR": str(out_dir)})
    assert cli_main(argv) == 0
    joined = Path(argv[argv.index("-o") + 1])
    f, src = facts(joined), facts(title)
    assert f["pts"] == src["pts"] and len(f["audio"]) == len(src["audio"]) and ffmpeg_clean(joined)
    assert key_frames(joined) == list(range(0, 6 * n, 6))  # KEYINT 6: one IDR per GOP, none extra
