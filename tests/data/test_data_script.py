"""Loader scripts (Polygraphy's load_data() convention): batching by rank, limits, and errors in user code."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from trtq.data import DataSpec, open_source
from trtq.errors import DataError
from trtq.graph.model import TensorSpec

X = [TensorSpec("images", ("N", 3, 8, 8), np.dtype("float32"))]
TEXT = [TensorSpec("input_ids", ("batch", "seq"), np.dtype("int64")),
        TensorSpec("attention_mask", ("batch", "seq"), np.dtype("int64"))]


def script(tmp_path, body: str, name: str = "prep.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_single_samples_are_batched(tmp_path):
    path = script(tmp_path, """
        import numpy as np

        def load_data():
            for i in range(7):
                yield {"images": np.full((3, 8, 8), i, dtype=np.float64)}
    """)
    source = open_source(DataSpec(path, samples=None, batch_size=3), X)
    assert source.num_samples is None and source.num_batches is None
    with pytest.raises(TypeError, match="unknown until the loader script has run"):
        len(source)
    got = list(source.iter_with_ids())
    assert [len(ids) for ids, _ in got] == [3, 3, 1]
    assert got[0][0] == ["prep.py[0]", "prep.py[1]", "prep.py[2]"]
    assert got[1][1]["images"].dtype == np.float32 and got[1][1]["images"][:, 0, 0, 0].tolist() == [3, 4, 5]
    assert list(source.iter_with_ids())[2][0] == ["prep.py[6]"]  # every pass calls load_data() again
    assert source.num_samples == 7 and len(source) == 3  # known after a full pass


def test_whole_feeds_are_fed_as_they_are_and_limit_stops_reading(tmp_path):
    path = script(tmp_path, """
        import itertools
        import numpy as np

        CALLS = []

        def load_data():
            for i in itertools.count():          # endless: trtq must stop asking
                CALLS.append(i)
                yield {"input_ids": np.full((5, 4), i), "attention_mask": np.ones((5, 4), dtype=np.int32)}
    """)
    source = open_source(DataSpec(path, samples=12, batch_size=4), TEXT)
    assert source.num_samples == 12 and len(source) == 3
    assert source.description == f"up to 12 samples from loader script {path}"
    got = list(source)
    # feeds that fit the model are fed whole (Polygraphy's contract); the sample limit cuts the last
    assert [b["input_ids"].shape for b in got] == [(5, 4), (5, 4), (2, 4)]
    assert got[1]["input_ids"][:, 0].tolist() == [1] * 5
    assert got[2]["attention_mask"].dtype == np.int64
    assert len(source) == 3  # counted on the pass
    module = source._func.__globals__
    assert module["CALLS"] == [0, 1, 2]  # 3 yields of 5 cover 12 samples; no fourth yield was asked for


def test_custom_function_and_fewer_samples(tmp_path, data_logs):
    path = script(tmp_path, """
        import numpy as np

        class FakeTensor:                     # anything with .numpy(), e.g. torch tensors
            def __init__(self, a):
                self.a = a
            def numpy(self):
                return self.a

        def my_loader():
            return [{"images": FakeTensor(np.zeros((2, 3, 8, 8), np.float32))}]
    """)
    source = open_source(DataSpec(f"{path}:my_loader", samples=5), X)
    assert source.num_samples == 5
    assert [b["images"].shape for b in source] == [(2, 3, 8, 8)]
    assert source.num_samples == 2 and len(source) == 1
    assert "yielded 2 sample(s), fewer than the 5 asked for" in data_logs.text


def test_script_can_import_its_neighbours(tmp_path):
    (tmp_path / "helpers_for_trtq_test.py").write_text("import numpy as np\nSAMPLE = np.ones((3, 8, 8), np.float32)\n")
    path = script(tmp_path, """
        from helpers_for_trtq_test import SAMPLE

        def load_data():
            yield {"images": SAMPLE}
    """)
    assert next(iter(open_source(DataSpec(path), X)))["images"].shape == (1, 3, 8, 8)


@pytest.mark.parametrize("body, message", [
    ("import numpy as np\nimport no_such_module_for_trtq\n",
     r"loader script .*prep.py failed on import \(line 2\): ModuleNotFoundError: No module named 'no_such_module_for_trtq'"),
    ("def load_data(:\n    pass\n", r"loader script .*prep.py failed on import \(line 1\): SyntaxError"),
    ("raise SystemExit('no')\n", r"loader script .*prep.py \(on import\) called sys.exit\('no'\)"),
    ("def something_else():\n    pass\n", r"loader script .*prep.py defines no load_data\(\) function"),
    ("load_data = 3\n", r"loader script .*prep.py: load_data is not a function"),
])
def test_import_problems_name_the_script(tmp_path, body, message):
    path = script(tmp_path, body)
    with pytest.raises(DataError, match=message):
        open_source(DataSpec(path), X)


@pytest.mark.parametrize("body, message", [
    ("""
        import numpy as np

        def load_data():
            yield {"images": np.zeros((3, 8, 8))}
            raise RuntimeError("camera unplugged")
     """, r"loader script .*prep.py raised RuntimeError in load_data\(\) \(line 6\): camera unplugged"),
    ("""
        def load_data():
            yield [1, 2, 3]
     """, r"prep.py \(yield 1\): load_data\(\) must yield dicts \{input_name: array\}, got list"),
    ("""
        import numpy as np

        def load_data():
            yield {"images": np.zeros((3, 8, 8))}
            yield {"images": np.zeros((3, 9, 9))}
     """, r"prep.py \(yield 2\): input 'images' expects shape Nx3x8x8, got 1x3x9x9"),
    ("""
        import numpy as np

        def load_data():
            yield {"images": np.full((3, 8, 8), np.nan)}
     """, r"prep.py \(yield 1\): input 'images' holds 192 NaN values"),
    ("""
        def load_data():
            return 5
     """, r"load_data\(\) returned int; it must yield"),
])
def test_runtime_problems_name_the_script(tmp_path, body, message):
    path = script(tmp_path, body)
    source = open_source(DataSpec(path, batch_size=1), X)
    with pytest.raises(DataError, match=message):
        list(source)


def test_missing_script_and_multi_input_names(tmp_path):
    with pytest.raises(DataError, match=r"loader script .*nope.py does not exist"):
        open_source(DataSpec(str(tmp_path / "nope.py")), X)
    path = script(tmp_path, """
        import numpy as np

        def load_data():
            yield {"input_ids": np.zeros((1, 4), np.int64)}
    """)
    with pytest.raises(DataError, match=r"prep.py \(yield 1\): missing input 'attention_mask'.*found names 'input_ids'"):
        list(open_source(DataSpec(path), TEXT))


def test_fingerprint_follows_the_script(tmp_path):
    path = script(tmp_path, "def load_data():\n    return []\n")
    first = open_source(DataSpec(path), X).fingerprint()
    assert first == open_source(DataSpec(path), X).fingerprint()
    assert first != open_source(DataSpec(path, samples=10), X).fingerprint()
    script(tmp_path, "def load_data():\n    return [] \n")
    assert first != open_source(DataSpec(path), X).fingerprint()


def test_static_batch_model(tmp_path, data_logs):
    path = script(tmp_path, """
        import numpy as np

        def load_data():
            yield {"images": np.zeros((10, 3, 8, 8), np.float32)}
    """)
    fixed = [TensorSpec("images", (4, 3, 8, 8), np.dtype("float32"))]
    limited = open_source(DataSpec(path, samples=10, batch_size=32), fixed)
    assert limited.batch_size == 4 and limited.num_samples == 8
    assert [b["images"].shape[0] for b in limited] == [4, 4]
    everything = open_source(DataSpec(path, samples=None), fixed)
    assert [b["images"].shape[0] for b in everything] == [4, 4]
    assert "dropped the last 2 sample(s): the model takes batches of exactly 4" in data_logs.text
