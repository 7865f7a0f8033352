"""Label files aligned to sample ids: keyed id,label files and positional lists."""

from __future__ import annotations

import numpy as np
import pytest

from trtq.data import DataSpec, load_labels, open_source
from trtq.errors import DataError
from trtq.graph.model import TensorSpec

IDS = ["cats/001.jpg", "dogs/002.jpg", "x.npy[3]"]


def test_keyed_csv_with_header_and_every_id_form(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\n# a comment\n./cats/001.jpg,3\n002,7\nx[3],1\nunused.jpg,9\n")
    labels = load_labels(path, IDS)
    assert labels.dtype == np.int64 and labels.tolist() == [3, 7, 1]


@pytest.mark.parametrize("text", ["001.jpg\t3\ndogs/002\t7\nx.npy[3]\t1\n", "001 3\n002.jpg 7\nx.npy[3] 1\n"])
def test_keyed_tsv_and_whitespace(tmp_path, text):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    assert load_labels(path, IDS).tolist() == [3, 7, 1]


def test_missing_ids_are_listed(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a.jpg,1\n")
    ids = [f"img{i}.jpg" for i in range(8)]
    with pytest.raises(DataError, match=r"labels.csv has no label for 8 of 8 samples: img0.jpg, img1.jpg, img2.jpg, "
                                        r"img3.jpg, img4.jpg \.\.\."):
        load_labels(path, ids)


def test_positional_text_and_npy(tmp_path):
    order = ["a.png", "b.png", "c.png", "d.png"]
    (tmp_path / "labels.txt").write_text("label\n5\n6\n7\n8\n")
    assert load_labels(tmp_path / "labels.txt", ["c.png", "a.png"], order=order).tolist() == [7, 5]
    np.save(tmp_path / "labels.npy", np.array([5, 6, 7, 8], np.int32))
    assert load_labels(tmp_path / "labels.npy", order).tolist() == [5, 6, 7, 8]
    with pytest.raises(DataError, match=r"labels.npy lists 4 labels \(one per line, in sorted file order\), "
                                        r"but the data holds 2 samples"):
        load_labels(tmp_path / "labels.npy", ["a.png", "b.png"])


@pytest.mark.parametrize("text, message", [
    ("a.jpg,cat\nb.jpg,dog\n", r"line 2: label 'dog' is not an integer class index"),
    ("a.jpg,1\na.jpg,2\n", r"line 2: id 'a.jpg' is listed twice with different labels"),
    ("", r"holds no labels"),
    ("a.jpg,1\n2\n", r"line 2: expected 'id,label', got one field"),
])
def test_bad_label_files(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_labels(path, ["a.jpg"])
    with pytest.raises(DataError, match="does not exist"):
        load_labels(tmp_path / "none.csv", ["a.jpg"])


def test_labels_follow_a_shuffled_selection(tmp_path):
    for index in range(10):
        np.save(tmp_path / f"s{index}.npy", np.full((3, 4, 4), index, np.float32))
    (tmp_path / "labels.txt").write_text("\n".join(str(100 + i) for i in range(10)))
    inputs = [TensorSpec("x", ("N", 3, 4, 4), np.dtype("float32"))]
    source = open_source(DataSpec(str(tmp_path), samples=4, seed=3, batch_size=4), inputs)
    labels = source.labels(str(tmp_path / "labels.txt"))
    ((_, batch),) = list(source.iter_with_ids())
    assert labels.tolist() == (batch["x"][:, 0, 0, 0] + 100).astype(int).tolist()


def test_positional_labels_for_a_stream_of_samples(tmp_path):
    (tmp_path / "labels.txt").write_text("\n".join(str(i * 10) for i in range(6)))
    assert load_labels(tmp_path / "labels.txt", ["prep.py[4]", "prep.py[5]"]).tolist() == [40, 50]
    with pytest.raises(DataError, match=r"lists 6 labels .* has more samples: prep.py\[6\]"):
        load_labels(tmp_path / "labels.txt", ["prep.py[5]", "prep.py[6]"])
