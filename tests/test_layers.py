"""The package's layers only look down: a module may import its own package and the
layers below it, never one above (nor a sibling on the same layer). Read from the source
with ``ast``, so lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import tokgen

ROOT = Path(tokgen.__file__).parent

# Lower number = lower layer. Packages on one layer do not import each other.
LAYERS: dict[str, int] = {
    "errors": 0,
    "settings": 1,
    "assets": 1,
    "v1": 1,  # generated protobuf code
    "audio": 2,
    "names": 2,  # the API's enum names (one table each): below the server and the client alike
    "loudness": 3,  # BS.1770 loudness: measured on audio resampled by ``audio``
    "monitoring": 2,  # metric definitions and health: imported by every layer above
    "logs": 2,  # logging set-up (by the CLI) and the request id of the call being served
    "training": 2,
    "data": 3,
    "codec": 4,
    "engine": 5,  # generic over causal LMs: knows nothing of codecs or priors
    "prior": 5,  # models and their training
    "generation": 6,
    "jobs": 7,
    "eval": 7,
    "client": 7,  # speaks to the service over gRPC: only v1 below it
    "serve": 8,
    "bench": 9,
    "cli": 10,
    "__main__": 11,
}
# Higher and lower, but never one through the other: the server and its client both speak
# the wire API (v1, names) and neither may depend on the other's code.
APART = {("serve", "client"), ("client", "serve")}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tokgen" and len(parts) > 1 else None


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in LAYERS, f"{rel}: package {own!r} has no layer in LAYERS"
        for module in imports_of(path):
            other = package_of(module)
            if other is None or other == own:
                continue
            assert other in LAYERS, f"{rel} imports {module}: package {other!r} has no layer"
            if LAYERS[other] >= LAYERS[own] or (own, other) in APART:
                bad.append(f"{rel} ({own}, layer {LAYERS[own]}) imports {module} (layer {LAYERS[other]})")
    return bad


def test_imports_only_look_down():
    assert violations() == []


def test_the_check_catches_a_climbing_import(tmp_path, monkeypatch):
    """The checker itself: a codec module importing generation is reported."""
    fake = tmp_path / "codec"
    fake.mkdir()
    (fake / "bad.py").write_text("from tokgen.generation.generator import Generator\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert violations() == ["codec/bad.py (codec, layer 4) imports tokgen.generation.generator (layer 6)"]


def test_only_prior_and_generation_build_a_token_layout():
    builders = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if "TokenLayout.for_levels(" in p.read_text()
        and p.relative_to(ROOT).parts[0] not in ("prior", "generation")
    ]
    assert builders == []
