""".npy / .npz sources: the rank rule, multi-input files, dtype rules, selection, streaming, errors."""

from __future__ import annotations

import numpy as np
import pytest

from trtq.data import DataSpec, Preprocess, open_source
from trtq.data import arrays as arrays_module
from trtq.errors import DataError
from trtq.graph.model import TensorSpec


def spec(name, shape, dtype="float32"):
    return TensorSpec(name, tuple(shape), np.dtype(dtype))


X = [spec("images", ("N", 3, 8, 8))]
TEXT = [spec("input_ids", ("batch", "seq"), "int64"), spec("attention_mask", ("batch", "seq"), "int64")]


def ids_and_batches(source):
    got = list(source.iter_with_ids())
    return [i for ids, _ in got for i in ids], [b for _, b in got]


def test_one_file_with_a_leading_sample_axis(tmp_path):
    data = np.random.default_rng(0).standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", data)
    source = open_source(DataSpec(str(tmp_path / "calib.npy"), samples=None, batch_size=4, shuffle=False), X)
    assert source.num_samples == 10 and len(source) == 3
    assert source.description == f"10 samples from {tmp_path / 'calib.npy'} (float32)"
    ids, batches = ids_and_batches(source)
    assert ids == [f"calib.npy[{i}]" for i in range(10)]
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in batches]), data)
    assert [b["images"].shape[0] for b in batches] == [4, 4, 2]
    assert all(type(b["images"]) is np.ndarray for b in batches)  # plain arrays, not views of the memory map


def test_shuffled_subset_of_one_big_file_is_seeded(tmp_path):
    data = np.arange(50, dtype=np.float32)[:, None, None, None] * np.ones((1, 3, 8, 8), np.float32)
    np.save(tmp_path / "big.npy", data)

    def pick(seed):
        source = open_source(DataSpec(str(tmp_path / "big.npy"), samples=12, seed=seed, batch_size=5), X)
        ids, batches = ids_and_batches(source)
        values = np.concatenate([b["images"][:, 0, 0, 0] for b in batches]).astype(int)
        assert ids == [f"big.npy[{v}]" for v in values]  # ids name the rows that were fed
        return ids

    assert pick(0) == pick(0)
    assert pick(0) != pick(1)
    assert pick(0) != [f"big.npy[{i}]" for i in range(12)]


def test_folder_of_single_samples_rank_r_minus_1_and_r(tmp_path):
    rng = np.random.default_rng(1)
    for index in range(5):
        np.save(tmp_path / f"s{index}.npy", rng.standard_normal((3, 8, 8)).astype(np.float32))
    np.save(tmp_path / "s5.npy", rng.standard_normal((1, 3, 8, 8)).astype(np.float32))  # a stack of one
    np.savez(tmp_path / "s6.npz", rng.standard_normal((3, 8, 8)).astype(np.float32))  # unnamed: arr_0
    source = open_source(DataSpec(str(tmp_path), samples=None, batch_size=3, shuffle=False), X)
    assert source.description == f"7 samples from {tmp_path}/ (6 .npy, 1 .npz files, float32)"
    ids, batches = ids_and_batches(source)
    assert ids == [f"s{i}.npy" for i in range(6)] + ["s6.npz"]
    np.testing.assert_array_equal(batches[0]["images"][1], np.load(tmp_path / "s1.npy"))
    one = next(iter(open_source(DataSpec(str(tmp_path / "s0.npy")), X)))["images"]
    assert one.flags.writeable and one.flags.owndata  # a copy, not a read-only view of the memory map
    assert [b["images"].shape for b in batches] == [(3, 3, 8, 8), (3, 3, 8, 8), (1, 3, 8, 8)]


def test_multi_input_npz_token_ids(tmp_path):
    rng = np.random.default_rng(2)
    for index, seq in enumerate((16, 16, 16, 24)):
        np.savez(tmp_path / f"b{index}.npz", input_ids=rng.integers(0, 30000, (2, seq)),
                 attention_mask=np.ones((2, seq), np.int64), extra=np.zeros(3))
    source = open_source(DataSpec(str(tmp_path), samples=None, batch_size=2, shuffle=False), TEXT)
    ids, batches = ids_and_batches(source)
    assert ids[:2] == ["b0.npz[0]", "b0.npz[1]"] and len(ids) == 8
    assert batches[0]["input_ids"].dtype == np.int64 and batches[-1]["input_ids"].shape == (2, 24)
    assert set(batches[0]) == {"input_ids", "attention_mask"}
    assert source.input_shapes() == {"input_ids": (2, 16), "attention_mask": (2, 16)}
    # dynamic dims come from the data; a batch must not mix sequence lengths
    ragged = open_source(DataSpec(str(tmp_path), samples=None, batch_size=4, shuffle=False), TEXT)
    with pytest.raises(DataError, match=rf"input 'input_ids': samples in one batch differ in shape: "
                                        rf"{tmp_path}/b2.npz has 1x16, {tmp_path}/b3.npz has 1x24"):
        list(ragged)


def test_int32_ids_are_widened_but_floats_are_refused(tmp_path):
    np.savez(tmp_path / "ok.npz", input_ids=np.ones((2, 5), np.int32), attention_mask=np.ones((2, 5), np.uint8))
    batch = next(iter(open_source(DataSpec(str(tmp_path / "ok.npz")), TEXT)))
    assert batch["input_ids"].dtype == np.int64 and batch["attention_mask"].dtype == np.int64
    np.savez(tmp_path / "bad.npz", input_ids=np.ones((2, 5), np.float32), attention_mask=np.ones((2, 5), np.int64))
    with pytest.raises(DataError, match=rf"{tmp_path / 'bad.npz'}: input 'input_ids' expects integers \(int64\), "
                                        r"got float32; save integer arrays"):
        open_source(DataSpec(str(tmp_path / "bad.npz")), TEXT)


def test_int_range_and_bool_inputs(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[1, 2**40]], np.int64))
    with pytest.raises(DataError, match=r"big.npy: input 'ids' is int32, but the int64 data spans 1..1099511627776"):
        list(open_source(DataSpec(str(tmp_path / "big.npy")), [spec("ids", ("N", 2), "int32")]))
    np.save(tmp_path / "mask.npy", np.array([[0, 1, 1]], np.int64))
    batch = next(iter(open_source(DataSpec(str(tmp_path / "mask.npy")), [spec("m", ("N", 3), "bool")])))
    assert batch["m"].dtype == np.bool_ and batch["m"].tolist() == [[False, True, True]]
    np.save(tmp_path / "mask2.npy", np.array([[0, 2, 1]], np.int64))
    with pytest.raises(DataError, match=r"mask2.npy: input 'm' expects bool, got integers other than 0 and 1"):
        list(open_source(DataSpec(str(tmp_path / "mask2.npy")), [spec("m", ("N", 3), "bool")]))


def test_floats_are_cast_to_the_model_float_type(tmp_path):
    np.save(tmp_path / "x.npy", np.full((2, 3, 8, 8), 0.5, np.float64))
    assert next(iter(open_source(DataSpec(str(tmp_path / "x.npy")), X)))["images"].dtype == np.float32
    half = [spec("images", ("N", 3, 8, 8), "float16")]
    assert next(iter(open_source(DataSpec(str(tmp_path / "x.npy")), half)))["images"].dtype == np.float16
    np.save(tmp_path / "huge.npy", np.full((1, 3, 8, 8), 1e6, np.float32))
    with pytest.raises(DataError, match=r"huge.npy: input 'images' holds values beyond float16 range \(max \|x\| = 1e\+06\)"):
        list(open_source(DataSpec(str(tmp_path / "huge.npy")), half))


def test_static_dims_message_names_file_and_shapes(tmp_path, yolo_static):
    _, inputs = yolo_static
    folder = tmp_path / "calib_data"
    folder.mkdir()
    np.save(folder / "x.npy", np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(DataError) as caught:
        open_source(DataSpec(str(folder)), inputs)
    assert str(caught.value) == f"{folder}/x.npy: input 'images' expects shape Nx3x320x320, got 1x3x224x224"
    np.save(folder / "x.npy", np.zeros((3, 320, 320), np.float32))
    source = open_source(DataSpec(str(folder)), inputs)  # one sample without the batch axis
    assert next(iter(source))["images"].shape == (1, 3, 320, 320)


def test_wrong_rank(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((192,), np.float32))
    with pytest.raises(DataError, match=r"flat.npy: input 'images' expects shape Nx3x8x8 \(a stack of samples, rank 4\) "
                                        r"or 3x8x8 \(one sample, rank 3\), got 192 \(rank 1\)"):
        open_source(DataSpec(str(tmp_path / "flat.npy")), X)


def test_nan_and_inf_name_the_file(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    good = np.zeros((3, 8, 8), np.float32)
    bad = good.copy()
    bad[0, 0, :2] = np.nan
    bad[1, 1, 1] = np.inf
    np.save(folder / "a.npy", good)
    np.save(folder / "b.npy", bad)
    source = open_source(DataSpec(str(folder), shuffle=False, batch_size=1), X)
    stream = iter(source)
    next(stream)
    with pytest.raises(DataError, match=rf"{folder}/b.npy: input 'images' holds 2 NaN and 1 Inf values"):
        next(stream)


def test_multi_input_errors(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((2, 5), np.int64))
    with pytest.raises(DataError, match=r"one.npy: a .npy file holds one array, but the model has 2 inputs "
                                        r"\(input_ids, attention_mask\); save .npz files"):
        open_source(DataSpec(str(tmp_path / "one.npy")), TEXT)
    np.savez(tmp_path / "missing.npz", input_ids=np.zeros((2, 5), np.int64))
    with pytest.raises(DataError, match=r"missing.npz: missing input 'attention_mask' \(model inputs: input_ids, "
                                        r"attention_mask; found keys 'input_ids'\)"):
        open_source(DataSpec(str(tmp_path / "missing.npz")), TEXT)
    np.savez(tmp_path / "uneven.npz", input_ids=np.zeros((2, 5), np.int64), attention_mask=np.zeros((3, 5), np.int64))
    with pytest.raises(DataError, match=r"uneven.npz: arrays hold different numbers of samples"):
        open_source(DataSpec(str(tmp_path / "uneven.npz")), TEXT)
    np.savez(tmp_path / "seq.npz", input_ids=np.zeros((2, 5), np.int64), attention_mask=np.zeros((2, 6), np.int64))
    with pytest.raises(DataError, match=r"seq.npz: inputs 'input_ids' and 'attention_mask' share dim 'seq' "
                                        r"but got 5 and 6"):
        list(open_source(DataSpec(str(tmp_path / "seq.npz")), TEXT))
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 8, 8)), b=np.zeros((3, 8, 8)))
    with pytest.raises(DataError, match=r"two.npz: holds keys 'a', 'b', but the model's input is named 'images'"):
        open_source(DataSpec(str(tmp_path / "two.npz")), X)


def test_unreadable_files(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"definitely not numpy")
    with pytest.raises(DataError, match=rf"{tmp_path / 'junk.npy'}: not readable as a .npy array"):
        open_source(DataSpec(str(tmp_path / "junk.npy")), X)
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match=rf"{tmp_path / 'junk.npz'}: not readable as a .npz archive"):
        open_source(DataSpec(str(tmp_path / "junk.npz")), X)
    np.save(tmp_path / "objects.npy", np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"objects.npy: input 'images' got an array of dtype object; save numeric"):
        open_source(DataSpec(str(tmp_path / "objects.npy")), [spec("images", ("N", 2))])


def test_npy_is_memory_mapped(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 8, 8), np.float32))
    arrays = arrays_module.read_arrays(tmp_path / "x.npy", {"images": ""}, "x.npy")
    assert isinstance(arrays["images"], np.memmap)


def test_selection_opens_only_needed_files(tmp_path, monkeypatch):
    for index in range(20):
        np.save(tmp_path / f"f{index:02d}.npy", np.full((3, 8, 8), index, np.float32))
    headers, reads = [], []
    real_headers, real_read = arrays_module.array_headers, arrays_module.read_arrays
    monkeypatch.setattr(arrays_module, "array_headers", lambda path, origin: headers.append(path.name) or real_headers(path, origin))
    monkeypatch.setattr(arrays_module, "read_arrays", lambda path, keys, origin: reads.append(path.name) or real_read(path, keys, origin))
    source = open_source(DataSpec(str(tmp_path), samples=3, seed=5, batch_size=2), X)
    assert len(headers) == 3 and reads == []
    stream = iter(source)
    first = next(stream)
    assert len(reads) == 2 and first["images"].shape[0] == 2  # one batch read, not the whole selection
    list(stream)
    assert sorted(reads) == sorted(headers) == sorted(source.sample_ids())


def test_static_batch_and_preprocess_warning(tmp_path, data_logs):
    np.save(tmp_path / "x.npy", np.zeros((10, 3, 8, 8), np.float32))
    source = open_source(DataSpec(str(tmp_path / "x.npy"), samples=None, preprocess=Preprocess(size=(8, 8))),
                         [spec("images", (4, 3, 8, 8))])
    assert source.batch_size == 4 and source.num_samples == 8
    assert "image preprocessing (size) applies to image files only" in data_logs.text


def test_fingerprint_and_labels_order(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 3, 8, 8), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((3, 8, 8), np.float32))
    source = open_source(DataSpec(str(tmp_path), shuffle=False, samples=None), X)
    assert source.all_ids() == ["a.npy[0]", "a.npy[1]", "a.npy[2]", "b.npy"]
    fingerprint = source.fingerprint()
    assert fingerprint == open_source(DataSpec(str(tmp_path), shuffle=False, samples=None), X).fingerprint()
    half = [spec("images", ("N", 3, 8, 8), "float16")]
    assert fingerprint != open_source(DataSpec(str(tmp_path), shuffle=False, samples=None), half).fingerprint()


def test_unfeedable_input_types(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match=r"input 's' has dtype <U1; trtq can only feed numeric and bool tensors"):
        open_source(DataSpec(str(tmp_path / "x.npy")), [spec("s", ("N", 3), "<U1")])
    with pytest.raises(DataError, match=r"input 't' has no batch axis and expects shape scalar"):
        open_source(DataSpec(str(tmp_path / "x.npy")), [spec("t", ())])  # a scalar takes a rank-0 array
    with pytest.raises(DataError, match=r"fix different batch sizes"):
        open_source(DataSpec(str(tmp_path / "x.npy")), [spec("a", (1, 3)), spec("b", (2, 3))])


def test_dtype_override_applies_to_float_inputs_only(tmp_path):
    np.savez(tmp_path / "x.npz", ids=np.ones((2, 4), np.int64), feats=np.ones((2, 4), np.float32))
    inputs = [spec("ids", ("N", 4), "int64"), spec("feats", ("N", 4), "float32")]
    batch = next(iter(open_source(DataSpec(str(tmp_path / "x.npz"), preprocess=Preprocess(dtype="float16")), inputs)))
    assert batch["ids"].dtype == np.int64 and batch["feats"].dtype == np.float16


def test_symlink_loop_is_walked_once(tmp_path):
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "a.npy", np.zeros((3, 8, 8), np.float32))
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)
    assert open_source(DataSpec(str(tmp_path), samples=None), X).all_ids() == ["sub/a.npy"]
