"""Builds trtq's optional C kernel (trtq/calib/_binning.c); metadata lives in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and trtq uses
its pure-numpy binning, which gives the same histograms (only slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("trtq.calib._binning", ["trtq/calib/_binning.c"], optional=True,
                             extra_compile_args=["-O3"])])
