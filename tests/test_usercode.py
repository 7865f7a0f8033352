"""User code runs inside trtq without ending or redirecting it."""

from __future__ import annotations

import io
import os
import sys

import pytest

from trtq.errors import DataError
from trtq.usercode import user_code


def test_exit_becomes_one_error_naming_the_code():
    with pytest.raises(DataError, match=r"prep.py: load_data\(\) called sys.exit\(3\)"):
        with user_code("prep.py: load_data()", error=DataError):
            sys.exit(3)


def test_working_folder_and_streams_are_put_back(tmp_path):
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("trtq").addHandler(handler)
    here, out, err = os.getcwd(), sys.stdout, sys.stderr
    try:
        with user_code("m.py:score"):
            os.chdir(tmp_path)
            sys.stdout = io.StringIO()
            sys.stderr = io.StringIO()
    finally:
        logging.getLogger("trtq").removeHandler(handler)
    assert (os.getcwd(), sys.stdout, sys.stderr) == (here, out, err)
    warned = " ".join(r.getMessage() for r in records)
    assert "m.py:score changed the working directory" in warned and "replaced sys.stdout" in warned
