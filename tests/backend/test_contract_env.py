"""The contract environment is reused by a second test run in the same checkout, whatever its wheels ship."""

from __future__ import annotations

from conftest import BINDINGS, CONTRACT_DIR, CUDA_BINDINGS, PYCUDA_SDIST, installed, move_into_place  # noqa: E402


def test_every_cached_install_is_recognised(trt_contract, cuda_contract):
    """After the contract runs, every site it installed is recognised as installed, so the next run reuses it
    instead of reinstalling (cuda-bindings 13.5.0 ships no runtime.pyx, only the compiled module and .pxd)."""
    sites = {f"site-{version}": [requirement] for version, requirement in BINDINGS.items()}
    sites.update({f"site-cuda-bindings-{version}": list(requirements) for version, requirements in CUDA_BINDINGS.items()})
    missing = [name for name, requirements in sites.items() if not installed(CONTRACT_DIR / name, requirements)]
    assert not missing, missing
    assert not installed(CONTRACT_DIR / "site-10.3.0", ["tensorrt-cu12-bindings==10.3.1"]), "pinned versions only"
    assert PYCUDA_SDIST.startswith("pycuda==")


def test_a_leftover_site_folder_does_not_block_the_install(tmp_path):
    site = tmp_path / "site-10.3.0"
    (site / "tensorrt_bindings").mkdir(parents=True)  # an interrupted run's half install
    (site / "tensorrt_bindings" / "__init__.py").write_text("")
    staging = tmp_path / ".staging-10.3.0-x"
    (staging / "tensorrt_bindings").mkdir(parents=True)
    (staging / "tensorrt_bindings" / "new.py").write_text("")
    move_into_place(staging, site)
    assert sorted(p.name for p in (site / "tensorrt_bindings").iterdir()) == ["new.py"]
    assert [p.name for p in tmp_path.iterdir()] == ["site-10.3.0"], "nothing left aside"
