"""Security defaults not covered elsewhere.

- ``vidcls serve`` / TritonServer bind to 127.0.0.1 unless told otherwise, and the running server
  listens on loopback only;
- model control mode stays ``none``: remote load/unload is refused over HTTP and gRPC, also with
  the operator key (the admin protocols themselves: tests/test_admin_protocols.py);
- nothing is ever fully unpickled: ``torch.load`` only with ``weights_only=True`` (the reference
  checkpoint import too; its own tests are in tests/test_import_checkpoint.py), no ``pickle`` /
  ``dill`` / ``joblib`` / ``np.load(allow_pickle=True)`` anywhere, and a booby-trapped pickle
  put where our loaders look is refused without running.

(gRPC TLS and client output paths are tested in tests/test_client.py.)
"""

from __future__ import annotations

import ast
import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("vidcls", "training", "export", "client", "benchmarks")
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _sources():
    for d in SOURCE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(), filename=str(path))


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


# ---- binding and model control ---------------------------------------------------------------------
def test_serve_defaults_to_loopback_and_no_model_control():
    from vidcls.launcher import TritonServer, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(ROOT)])  # the repository argument must be an existing folder
    assert args.host == "127.0.0.1" and args.model_control_mode == "none"
    server = TritonServer(ROOT)
    assert server.host == "127.0.0.1" and server.model_control_mode == "none"
    server.grpc_port, server.http_port, server.metrics_port = 1, 2, 3
    try:
        cmd = server.command()
    except Exception as exc:  # no tritonserver wheel here: the defaults above are what matters
        pytest.skip(f"no tritonserver to build a command for: {exc}")
    for flag in ("--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=127.0.0.1",
                 "--model-control-mode=none"):
        assert flag in cmd


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


@pytest.mark.server
def test_running_server_listens_on_loopback_only(triton_server):
    # 127.0.0.1, ::1, and ::ffff:127.0.0.1 (gRPC binds an IPv6 socket mapped to 127.0.0.1)
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    for port in (triton_server.grpc_port, triton_server.http_port, triton_server.metrics_port):
        addresses = _listening(port)
        assert addresses, f"nothing listens on {port}"
        assert set(addresses) <= loopback, f"port {port} listens on {addresses}"


@pytest.mark.server
def test_remote_model_load_and_unload_are_refused(triton_server, serving_config):
    """Two locks: the model-repository protocol needs the operator key, and even with the key model
    control mode 'none' refuses to load or unload."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from vidcls.admin_access import grpc_headers, http_headers, refused

    ensemble = serving_config.serving.ensemble
    for key, expected in ((None, "restricted"), (triton_server.admin_key, "not allowed")):
        for action in ("unload", "load"):
            req = urllib.request.Request(f"http://{triton_server.http_url}/v2/repository/models/{ensemble}/{action}",
                                         data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json", **http_headers(key)})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=30)
            body = err.value.read().decode(errors="replace")
            assert err.value.code >= 400 and expected in body.lower(), body
            assert refused(body) == (key is None)
        with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
            for call in (client.unload_model, client.load_model):
                with pytest.raises(InferenceServerException) as err:
                    call(serving_config.serving.decode, headers=grpc_headers(key))
                assert expected in err.value.message().lower()
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        assert client.is_model_ready(ensemble) and client.is_model_ready(serving_config.serving.decode)
        assert client.is_server_ready()


# ---- no implicit unpickling ------------------------------------------------------------------------
def test_torch_load_only_with_weights_only():
    offenders = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _dotted(node.func) not in ("torch.load", "load"):
                continue
            if _dotted(node.func) == "load" and not any(
                    isinstance(n, ast.ImportFrom) and n.module == "torch" and any(a.name == "load" for a in n.names)
                    for n in ast.walk(tree)):
                continue
            flag = _kw(node, "weights_only")
            safe = isinstance(flag, ast.Constant) and flag.value is True
            if not safe:
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_no_pickle_modules_and_no_allow_pickle():
    offenders = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                names = []
            offenders += [f"{rel}:{node.lineno} imports {n}" for n in names if n in UNPICKLERS]
            if isinstance(node, ast.Call):
                allow = _kw(node, "allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                    offenders.append(f"{rel}:{node.lineno} allow_pickle")
                if _dotted(node.func) in ("torch.jit.load", "pandas.read_pickle", "pd.read_pickle"):
                    offenders.append(f"{rel}:{node.lineno} {_dotted(node.func)}")
    assert not offenders, offenders


class _Trap:
    """Unpickling this creates the marker file: proof that a loader executed pickled code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_booby_trapped_pickles_are_refused_without_running(tmp_path):
    torch = pytest.importorskip("torch")
    from vidcls.checkpoint import CONFIG, WEIGHTS, load_model
    from vidcls.config import VidclsConfig
    from vidcls.models.backbone import build_backbone

    marker = tmp_path / "pwned"
    trap = {"model_state_dict": _Trap(marker), "model_config": {}}

    # 1. Our checkpoint folder with a pickle where the safetensors weights belong.
    model_dir = tmp_path / "model_0"
    model_dir.mkdir()
    torch.save(trap, model_dir / WEIGHTS)
    (model_dir / CONFIG).write_text(json.dumps({"vidcls": VidclsConfig.tiny().to_dict()}))
    with pytest.raises(Exception):
        load_model(model_dir)
    # 2. Backbone weights given as a .pt file: torch.load(weights_only=True) refuses the object.
    torch.save(trap, tmp_path / "weights.pt")
    with pytest.raises(Exception):
        build_backbone(VidclsConfig.tiny(), str(tmp_path / "weights.pt"))
    # 3. A reference checkpoint: read with the restricted unpickler, which refuses the object.
    from vidcls.training.import_checkpoint import CheckpointImportError, import_checkpoint

    torch.save(trap, tmp_path / "reference.pt")
    with pytest.raises(CheckpointImportError, match="refused"):
        import_checkpoint(tmp_path / "reference.pt", tmp_path / "imported")
    assert not marker.exists(), "a loader ran pickled code"


# ---- paths from feature files ----------------------------------------------------------------------
HOSTILE_IDS = ("../../vidcls_escape_a", "/tmp/vidcls_escape_b", "x/../../../vidcls_escape_c",
               "..\\..\\vidcls_escape_d", "Gaming/../../../../vidcls_escape_e")


def test_video_ids_from_feature_files_never_become_paths(tmp_path, tiny_config):
    """A feature file's video ids are data: train and evaluate write only into their output folders."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch")
    from vidcls.cli import main
    from vidcls.training.features_h5 import FeatureWriter, split_path

    work = tmp_path / "work"
    features = work / "features"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        with FeatureWriter(split_path(features, split), tiny_config, "none") as w:
            for c in range(tiny_config.num_classes):
                for j, vid in enumerate(HOSTILE_IDS[:3]):
                    seq = rng.normal(c, 1.0, (tiny_config.seq_len, tiny_config.feature_dim)).astype(np.float32)
                    w.append(f"{vid}_{split}_{c}_{j}", seq, c)
    top = tmp_path.parent  # where '../..' from the output folders would land
    before = {p for p in top.rglob("*")}
    assert main(["train", str(features), str(work / "ckpt"), "--models", "1", "--epochs", "1",
                 "--no-progress", "--threads", "1"]) == 0
    assert main(["evaluate", str(features), str(work / "ckpt"), "--out", str(work / "eval")]) == 0
    new = {p for p in top.rglob("*")} - before
    outside = [p for p in new if not (p.is_relative_to(work / "ckpt") or p.is_relative_to(work / "eval"))]
    assert not outside, outside
    assert not any("vidcls_escape" in p.name for p in new)
    assert not list(Path("/tmp").glob("vidcls_escape*"))
    rows = (work / "eval" / "predictions.csv").read_text()
    assert "../../vidcls_escape_a_test_0_0" in rows  # kept as data, verbatim
