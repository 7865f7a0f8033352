"""Build hooks; metadata lives in pyproject.toml.

- The quickstart's demo data (``calib_data/digits`` and ``eval_data/digits`` of the checkout) goes into
  the wheel as ``trtq/assets/demo_data.zip``, so that ``trtq quickstart`` runs from an installed wheel.
- The C binning kernel (trtq/calib/_binning.c) is an opt-in build: ``TRTQ_BUILD_KERNEL=1 pip install .``.
  The default wheel is pure Python (py3-none-any); numpy gives the same histograms. Why opt-in:
  ``scripts/bench_binning_kernel.py`` measures what it gains on a whole calibration.
"""

import os
import zipfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DEMO_FOLDERS = ("calib_data/digits", "eval_data/digits")


class BuildWithDemoData(build_py):
    """build_py, plus the demo data zipped into the built package (never into the source tree)."""

    def run(self):
        super().run()
        if not all((ROOT / folder).is_dir() for folder in DEMO_FOLDERS):
            return  # a source tree without the demo data: the wheel's quickstart says where to find it
        target = Path(self.build_lib) / "trtq" / "assets" / "demo_data.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs: compressed already
            for folder in DEMO_FOLDERS:
                for path in sorted((ROOT / folder).rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(ROOT).as_posix())


kernel = [Extension("trtq.calib._binning", ["trtq/calib/_binning.c"], optional=True, extra_compile_args=["-O3"])]
setup(ext_modules=kernel if os.environ.get("TRTQ_BUILD_KERNEL") == "1" else [],
      cmdclass={"build_py": BuildWithDemoData})
