"""The committed stubs are exactly what `python -m controlplane.api.generate` produces."""
from __future__ import annotations


from controlplane.api import generate


def test_committed_stubs_are_up_to_date(tmp_path):
    generate.generate(tmp_path)
    produced = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert produced, "protoc produced nothing"
    committed_dir = generate.API_DIR.relative_to(generate.ROOT)
    committed = {p.relative_to(generate.ROOT) for p in (generate.ROOT / committed_dir).glob("*_pb2*.py*")}
    assert set(produced) == committed, "run: python -m controlplane.api.generate"
    for path in produced:
        assert (tmp_path / path).read_bytes() == (generate.ROOT / path).read_bytes(), \
            f"{path} is stale: run python -m controlplane.api.generate"
