"""Same seed -> identical bytes; another seed -> different data."""

from __future__ import annotations

from pathlib import Path

from altaviz.simulator import SimulationConfig, simulate


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = simulate(SimulationConfig(compressors=40, days=2, seed=123, out=tmp_path / "a"))
    b = simulate(SimulationConfig(compressors=40, days=2, seed=123, out=tmp_path / "b"))
    fa, fb = _files(a.out), _files(b.out)
    assert len(fa) > 50
    assert fa.keys() == fb.keys()
    assert [k for k in fa if fa[k] != fb[k]] == []


def test_other_seed_other_data(tmp_path: Path) -> None:
    a = simulate(SimulationConfig(compressors=40, days=1, seed=1, out=tmp_path / "a"))
    b = simulate(SimulationConfig(compressors=40, days=1, seed=2, out=tmp_path / "b"))
    fa, fb = _files(a.out), _files(b.out)
    assert fa["fleet.json"] != fb["fleet.json"]
    common = set(fa) & set(fb)
    assert all(fa[k] != fb[k] for k in common)
