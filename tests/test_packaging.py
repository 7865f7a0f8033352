"""What a user installs: the wheel's demo data, the published metadata."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from trtq import quickstart

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_wheels_demo_data_unpacks_once_beside_the_quickstarts_output(tmp_path, monkeypatch):
    """Outside a checkout, the quickstart reads the demo data the wheel carries (setup.py zips the checkout's
    folders into trtq/assets/demo_data.zip): unpacked whole into OUT/demo_data/, reused by the next run."""
    archive = tmp_path / "demo_data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for folder in ("calib_data/digits", "eval_data/digits"):
            for path in sorted((ROOT / folder).iterdir())[:20] + [ROOT / "eval_data/digits/labels.csv"]:
                z.write(path, f"{folder}/{path.name}")
    monkeypatch.setattr(quickstart, "DEMO_ARCHIVE", archive)
    monkeypatch.setattr(quickstart, "_checkouts", lambda: (tmp_path / "not-a-checkout",))
    with pytest.raises(quickstart.DataError, match="not found"):
        quickstart.bundled_data()  # nowhere to unpack: says where the data comes from
    calib, held_out = quickstart.bundled_data(unpack_into=tmp_path / "out")
    assert calib == tmp_path / "out" / "demo_data" / "calib_data" / "digits"
    assert (held_out / "labels.csv").read_bytes() == (ROOT / "eval_data/digits/labels.csv").read_bytes()
    first = sorted(p.name for p in calib.iterdir())
    assert first and (calib / first[0]).read_bytes() == (ROOT / "calib_data/digits" / first[0]).read_bytes()
    archive.unlink()  # the second run reuses the unpacked folders
    assert quickstart.bundled_data(unpack_into=tmp_path / "out") == (calib, held_out)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".demo_data")]


def test_the_published_metadata_names_the_license_and_no_ci_pins():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert not [r for r in requirements if r.startswith("torch") and "<" in r], requirements


def test_the_c_kernel_is_an_opt_in_build():
    """The default wheel is pure Python; TRTQ_BUILD_KERNEL=1 builds the optional kernel."""
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert 'os.environ.get("TRTQ_BUILD_KERNEL") == "1"' in setup
    manifest = (ROOT / "MANIFEST.in").read_text(encoding="utf-8")
    assert "prune tests" in manifest and "graft calib_data" in manifest
