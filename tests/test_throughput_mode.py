"""Throughput mode: the python temporal models wait for the views of several videos and run them in
one execution; off by default (a lone video never waits). Exact either way (equal to the reference)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.test_serving import ATOL, _send_concurrently
from vidcls.config import VidclsConfig
from vidcls.export.pbtxt import model_config
from vidcls.export.wiring import pipeline


def _temporal(config: VidclsConfig, target: str = "cpu"):
    model = next(m for m in pipeline(config, target) if m.role == "temporal")
    return model, model_config(model, config, target)


def test_off_by_default_and_rendered_when_on():
    config = VidclsConfig()
    model, rendered = _temporal(config)
    assert config.serving.temporal_preferred_videos == 0
    assert rendered["dynamic_batching"] == {"max_queue_delay_microseconds": config.serving.max_queue_delay_us}
    assert not model.inputs[0].ragged  # Triton's equal-shape batches: the same answer whatever the traffic

    on = config.replace(serving=dataclasses.replace(config.serving, temporal_preferred_videos=2,
                                                    temporal_queue_delay_us=3_000_000))
    on_model, rendered = _temporal(on)
    assert on_model.inputs[0].ragged  # views of all lengths, of several videos, in one execution
    assert rendered["dynamic_batching"] == {"max_queue_delay_microseconds": 3_000_000,
                                            "preferred_batch_size": [2 * len(config.tta_views)]}
    # Triton's own backends batch equal shapes only: the gpu temporal models keep plain batching.
    gpu_model, gpu = _temporal(on, "gpu")
    assert "preferred_batch_size" not in gpu["dynamic_batching"] and not gpu_model.inputs[0].ragged


@pytest.mark.server
def test_two_videos_share_one_temporal_execution(cpu_repository, serving_config, reference_pipeline,
                                                 tmp_path_factory, video_factory):
    import shutil

    import tritonclient.grpc as grpcclient

    from tests.fixtures.serving import running_server
    from vidcls.admin_access import grpc_headers
    from vidcls.export.repository import build_repository

    repo = tmp_path_factory.mktemp("throughput") / "repo"
    shutil.copytree(cpu_repository, repo)
    config = serving_config.replace(serving=dataclasses.replace(
        serving_config.serving, temporal_preferred_videos=2, temporal_queue_delay_us=20_000_000))
    build_repository(None, repo, target="cpu", configs_only=True, config=config)
    videos = [video_factory("tp_a.mp4", n=50, size=(128, 96), seed=31),
              video_factory("tp_b.webm", n=30, size=(96, 96), codec="libvpx-vp9", seed=32)]
    gen = running_server(repo, tmp_path_factory, name="throughput")
    server = next(gen)
    def counts(client, name):
        (m,) = client.get_inference_statistics(name, headers=grpc_headers(server.admin_key), as_json=True)["model_stats"]
        return np.array([int(m["inference_count"]), int(m["execution_count"])])

    try:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            before = {name: counts(client, name) for name in config.temporal_model_names()}  # warm-up runs
        results = _send_concurrently(server.grpc_url, config, videos)
        for path, result in zip(videos, results):
            assert not isinstance(result, Exception), result
            np.testing.assert_allclose(result.as_numpy(config.serving.probabilities)[0],
                                       reference_pipeline.classify(path), atol=ATOL, rtol=0)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            for name in config.temporal_model_names():
                # 2 videos x 4 views, 20 s to meet: one execution.
                assert list(counts(client, name) - before[name]) == [8, 1], name
    finally:
        gen.close()
