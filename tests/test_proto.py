"""The committed gRPC code matches the protos (regenerating gives no diff)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_up_to_date(tmp_path):
    # proto/google/ is googleapis' (imported; its Python code is googleapis-common-protos')
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "tokgen").rglob("*.proto"))
    assert protos, "no .proto files under proto/"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "proto")]
    out = ["--python_out", str(tmp_path), "--pyi_out", str(tmp_path), "--grpc_python_out", str(tmp_path)]
    subprocess.run([*cmd, *out, *protos], check=True, cwd=ROOT)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated
    for rel in generated:
        committed = ROOT / rel
        assert committed.is_file(), f"{rel} is not committed: run scripts/proto.sh gen"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), (
            f"{rel} is stale: run scripts/proto.sh gen"
        )


def test_api_round_trips():
    from tokgen.v1 import tokgen_pb2 as pb

    req = pb.ContinueRequest(prime_audio=b"RIFF", seconds=3.0, mode=pb.MODE_PRIMED)
    req.sampling.temperature = 0.9
    back = pb.ContinueRequest.FromString(req.SerializeToString())
    assert back.WhichOneof("source") == "prime_audio" and back.sampling.HasField("temperature")
    assert not back.sampling.HasField("top_p")  # unset means "default", not 0
