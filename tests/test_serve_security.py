"""TLS and mutual TLS round trips with a CA made here, and where the server may listen."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tokgen.codec import load_codec
from tokgen.errors import TokgenError
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import LevelPrior
from tokgen.serve.admission import Admission
from tokgen.serve.security import TlsFiles, check_exposure, tls_files
from tokgen.serve.server import build_server, mark_ready
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, issuer_key, issuer: x509.Name | None, ca: bool, san: list | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(path: Path, key, cert) -> tuple[Path, Path]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path / "cert.pem", path / "key.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    root = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _issue("tokgen test CA", None, None, ca=True)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_key, server_cert = _issue("localhost", ca_key, ca_cert.subject, ca=False, san=san)
    client_key, client_cert = _issue("a client", ca_key, ca_cert.subject, ca=False)
    ca, _ = _write(root / "ca", ca_key, ca_cert)
    server, server_key_path = _write(root / "server", server_key, server_cert)
    client, client_key_path = _write(root / "client", client_key, client_cert)
    return {
        "ca": ca,
        "server_cert": server,
        "server_key": server_key_path,
        "client_cert": client,
        "client_key": client_key_path,
    }


@pytest.fixture
def start_tls_server(loop_thread, engine, tiny_model_dir):
    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32)]
    servers = []

    def start(tls: TlsFiles) -> int:
        async def go():
            server, servicer, health, port = build_server("127.0.0.1:0", Admission(2, 0), tls=tls)
            await server.start()
            await mark_ready(servicer, health, Generator(codec, priors))
            return server, port

        server, port = loop_thread.run(go())
        servers.append(server)
        return port

    yield start
    for server in servers:
        loop_thread.run(server.stop(None))


def _credentials(pki, with_client_cert: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].read_bytes(),
        private_key=pki["client_key"].read_bytes() if with_client_cert else None,
        certificate_chain=pki["client_cert"].read_bytes() if with_client_cert else None,
    )


def test_tls_round_trip_and_plaintext_is_refused(pki, start_tls_server):
    port = start_tls_server(TlsFiles(pki["server_cert"], pki["server_key"]))
    with grpc.secure_channel(f"localhost:{port}", _credentials(pki, False)) as channel:
        stub = pb_grpc.TokgenServiceStub(channel)
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30).sample_rate == 16000
        replies = list(stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.05), timeout=60))
        assert replies[-1].WhichOneof("event") == "summary"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.TokgenServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki, start_tls_server):
    port = start_tls_server(TlsFiles(pki["server_cert"], pki["server_key"], client_ca=pki["ca"]))
    with grpc.secure_channel(f"localhost:{port}", _credentials(pki, True)) as channel:
        stub = pb_grpc.TokgenServiceStub(channel)
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30).sample_rate == 16000
    with grpc.secure_channel(f"localhost:{port}", _credentials(pki, False)) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.TokgenServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_python_client_speaks_mutual_tls(pki, start_tls_server, tmp_path, tone):
    import asyncio

    import soundfile as sf

    from tokgen.client import AsyncTokgenClient, TlsOptions, continue_request

    port = start_tls_server(TlsFiles(pki["server_cert"], pki["server_key"], client_ca=pki["ca"]))
    sf.write(tmp_path / "prime.wav", tone[:1600], 16000)
    tls = TlsOptions(pki["ca"], pki["client_cert"], pki["client_key"])

    async def run():
        async with AsyncTokgenClient(f"localhost:{port}", tls=tls) as client:
            request = continue_request(prime=tmp_path / "prime.wav", seconds=0.1, seed=2)
            return await client.continue_to_file(request, tmp_path / "out.flac", timeout=60)

    result = asyncio.run(run())
    assert sf.info(str(result.out)).frames == 1600 and result.time_to_first_audio_s > 0


def test_listening_beyond_loopback_needs_tls_and_keys_unless_insecure(pki):
    tls = TlsFiles(pki["server_cert"], pki["server_key"])
    check_exposure("127.0.0.1", None, False, False)
    check_exposure("::1", None, False, False)
    with pytest.raises(TokgenError, match="without TLS and API keys"):
        check_exposure("0.0.0.0", None, False, False)
    with pytest.raises(TokgenError, match="without API keys"):
        check_exposure("0.0.0.0", tls, False, False)
    with pytest.raises(TokgenError, match="without TLS:"):
        check_exposure("10.0.0.5", None, True, False)
    check_exposure("0.0.0.0", tls, True, False)
    check_exposure("0.0.0.0", None, False, True)


def test_tls_files_are_checked_before_listening(pki, tmp_path):
    with pytest.raises(TokgenError, match="both a certificate and a key"):
        tls_files(pki["server_cert"], None, None)
    with pytest.raises(TokgenError, match="client CA needs"):
        tls_files(None, None, pki["ca"])
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TokgenError, match="not a PEM file"):
        TlsFiles(tmp_path / "junk.pem", pki["server_key"]).server_credentials()
    with pytest.raises(TokgenError, match="cannot read TLS key"):
        TlsFiles(pki["server_cert"], tmp_path / "missing.pem").server_credentials()
    assert tls_files(None, None, None) is None
