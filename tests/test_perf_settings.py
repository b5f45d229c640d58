"""CPU performance settings: ORT threads per role, backbone instances, generated into the cpu
repository; the benchmark scripts' pure parts. (The speed itself: benchmarks/bench_pipeline.py.)"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from vidcls.config import VidclsConfig
from vidcls.export.repository import build_repository, validate_repository
from vidcls.ort import session_threads, usable_cores
from vidcls.triton_models.onnx_models import instance_count

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _serving(**changes) -> VidclsConfig:
    base = VidclsConfig()
    return base.replace(serving=dataclasses.replace(base.serving, **changes))


def test_backbone_threads():
    cores = usable_cores()
    config = _serving(backbone_threads=0, ort_intra_op_threads=0)
    assert session_threads(config, "backbone", 1) == cores
    assert session_threads(config, "backbone", 2) == cores  # each instance may use every core
    split = _serving(backbone_threads=-1)
    assert session_threads(split, "backbone", 2) == max(1, cores // 2)
    assert session_threads(split, "backbone", 10 * cores) == 1
    assert session_threads(_serving(backbone_threads=3), "backbone", 2) == 3
    assert session_threads(_serving(backbone_threads=0, ort_intra_op_threads=5), "backbone", 2) == 5


def test_temporal_sessions_default_to_one_thread_without_spinning():
    config = VidclsConfig()
    assert session_threads(config, "temporal") == 1
    assert config.serving.ort_spinning is False
    # 0 everywhere = ONNX Runtime's own default (the settings before the CPU tuning)
    assert session_threads(_serving(temporal_threads=0, ort_intra_op_threads=0), "temporal") == 0


def test_instance_count_reads_the_model_config():
    assert instance_count({"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}) == 2
    assert instance_count({"instance_group": [{"count": 1}, {"count": 3}]}) == 4
    assert instance_count({}) == 1


def test_cpu_repository_backbone_instances(tmp_path):
    config = _serving(cpu_backbone_instances=3, cpu_instances=1)
    repo = build_repository(None, tmp_path / "r", target="cpu", configs_only=True, config=config)
    configs = validate_repository(repo, require_weights=False)
    s = config.serving
    assert configs[s.backbone].instance_group[0].count == 3
    assert all(configs[n].instance_group[0].count == 1 for n in config.temporal_model_names())
    repo = build_repository(None, tmp_path / "d", target="cpu", configs_only=True,
                            config=_serving(cpu_backbone_instances=0, cpu_instances=2))
    assert validate_repository(repo, require_weights=False)[s.backbone].instance_group[0].count == 2


@pytest.fixture
def bench_pipeline(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_pipeline

    yield bench_pipeline
    sys.modules.pop("bench_pipeline", None)


def test_bench_variants(bench_pipeline):
    name, before = bench_pipeline.variant_config("before")
    assert name == "before" and before.serving.ort_spinning and before.serving.temporal_threads == 0
    assert before.serving.cpu_backbone_instances == 1
    name, cfg = bench_pipeline.variant_config("t2:temporal_threads=2,ort_spinning=true")
    assert (name, cfg.serving.temporal_threads, cfg.serving.ort_spinning) == ("t2", 2, True)
    assert bench_pipeline.variant_config("default")[1] == VidclsConfig()
    with pytest.raises(SystemExit):
        bench_pipeline.variant_config("x:no_such_field=1")


def test_bench_load_accounting(bench_pipeline):
    with bench_pipeline.LoadMeter() as meter:
        sum(i * i for i in range(200_000))
    r = meter.result
    assert r["wall_s"] > 0 and 0 <= r["own_cpu_share"] <= 1.5 and r["other_cpu_share"] >= 0
    assert bench_pipeline.stub_cpu_s(None, ["backbone"]) == {"backbone": 0.0}


def test_gpu_bench_imports_and_parses_variants(bench_pipeline, monkeypatch):
    """benchmarks/gpu_bench.py runs only on a GPU machine; its settings parsing is checked here."""
    import gpu_bench

    base = VidclsConfig()
    assert gpu_bench.variant("default", base)[1] == base
    name, cfg = gpu_bench.variant("gpu_model_instances=2,max_queue_delay_us=500", base)
    assert (cfg.serving.gpu_model_instances, cfg.serving.max_queue_delay_us) == (2, 500)
    with pytest.raises(SystemExit):
        gpu_bench.variant("nope=1", base)
    sys.modules.pop("gpu_bench", None)
