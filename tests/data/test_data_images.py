"""Image folders: formats, preprocessing against hand-computed references, the real YOLOv8n input, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trtq.data import DataSpec, Preprocess, open_source
from trtq.data import images as images_module
from trtq.errors import DataError
from trtq.graph.model import TensorSpec


def spec(name, shape, dtype="float32"):
    return TensorSpec(name, tuple(shape), np.dtype(dtype))


RGB_64 = [spec("x", ("N", 3, 64, 64))]


def batches(source):
    return list(source.iter_with_ids())


def test_every_format_case_insensitive_recursive_sorted(format_folder):
    source = open_source(DataSpec(str(format_folder), samples=None, shuffle=False, batch_size=3), RGB_64)
    ids = [i for ids, _ in batches(source) for i in ids]
    assert ids == ["astronaut.jpg", "camera.png", "coffee.png", "color.PNG", "ihc.jpeg", "motorcycle_left.JPEG",
                   "nested/chelsea.bmp", "rocket.webp"]
    assert ids == source.sample_ids() == source.all_ids()
    assert source.num_samples == 8 and len(source) == 3
    assert [b["x"].shape for _, b in batches(source)] == [(3, 3, 64, 64), (3, 3, 64, 64), (2, 3, 64, 64)]
    assert source.description == f"8 images from {format_folder}/ (resized to 64x64, RGB, NCHW float32)"


def test_real_yolo_static_input(yolo_static, photo_folder, data_logs):
    import onnxruntime as ort

    model_path, inputs = yolo_static
    assert inputs[0].shape == (1, 3, 320, 320)
    source = open_source(DataSpec(str(photo_folder), samples=3, batch_size=32), inputs)
    assert source.batch_size == 1  # the model fixes batch 1: the request for 32 is overridden and logged
    assert "fixed batch of 1" in data_logs.text and "asked for 32" in data_logs.text
    assert source.input_shapes() == {"images": (1, 3, 320, 320)}
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    seen = 0
    for feed in source:
        assert feed["images"].shape == (1, 3, 320, 320) and feed["images"].dtype == np.float32
        assert 0.0 <= feed["images"].min() and feed["images"].max() <= 1.0
        (out,) = session.run(None, feed)
        assert np.isfinite(out).all()
        seen += 1
    assert seen == len(source) == 3


def test_real_yolo_dynamic_input_needs_size(yolo_inputs, photo_folder):
    assert yolo_inputs[0].shape == ("batch", 3, "height", "width")
    with pytest.raises(DataError, match=r"input 'images' .* dynamic height or width: give the image size \(--size"):
        open_source(DataSpec(str(photo_folder)), yolo_inputs)
    source = open_source(DataSpec(str(photo_folder), samples=5, batch_size=4,
                                  preprocess=Preprocess(size=(256, 320))), yolo_inputs)
    shapes = [b["images"].shape for b in source]
    assert shapes == [(4, 3, 256, 320), (1, 3, 256, 320)]


def test_size_that_contradicts_static_model(yolo_static, photo_folder):
    _, inputs = yolo_static
    with pytest.raises(DataError, match=r"fixed height of 320; image size 224x224 does not fit"):
        open_source(DataSpec(str(photo_folder), preprocess=Preprocess(size=(224, 224))), inputs)


def _reference(path, size, mode="RGB"):
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert(mode).resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)


def test_stretch_scale_mean_std_match_hand_computation(tmp_path, photo, save_image):
    path = save_image(photo("chelsea.png"), tmp_path / "cat.png")
    pre = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    (feed,) = list(open_source(DataSpec(str(path), preprocess=pre), [spec("x", ("N", 3, 48, 64))]))
    expected = (_reference(path, (48, 64)) / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(feed["x"][0], expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_bgr_and_nhwc(tmp_path, photo, save_image):
    path = save_image(photo("coffee.png"), tmp_path / "coffee.png")
    nchw = next(iter(open_source(DataSpec(str(path)), [spec("x", (1, 3, 32, 40))])))["x"]
    nhwc_bgr = open_source(DataSpec(str(path), preprocess=Preprocess(channel_order="BGR")), [spec("x", (1, 32, 40, 3))])
    assert "BGR, NHWC float32" in nhwc_bgr.description
    got = next(iter(nhwc_bgr))["x"]
    assert got.shape == (1, 32, 40, 3)
    np.testing.assert_array_equal(got[0], nchw[0].transpose(1, 2, 0)[:, :, ::-1])
    # an explicit layout wins over inference
    explicit = open_source(DataSpec(str(path), preprocess=Preprocess(layout="NHWC", size=(32, 40))),
                           [spec("x", ("N", "h", "w", "c"))])
    assert next(iter(explicit))["x"].shape == (1, 32, 40, 3)


def test_grayscale_model_gets_luma(format_folder):
    source = open_source(DataSpec(str(format_folder), samples=2, shuffle=False), [spec("x", ("N", 1, 28, 28))])
    feed = next(iter(source))["x"]
    assert feed.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(feed[0, 0], _reference(format_folder / "astronaut.jpg", (28, 28), "L") / 255.0, atol=1e-6)
    assert "grayscale" in source.description


def test_grayscale_photo_into_rgb_model(tmp_path, photo, save_image):
    path = save_image(photo("camera.png"), tmp_path / "camera.png")
    feed = next(iter(open_source(DataSpec(str(path)), RGB_64)))["x"][0]
    np.testing.assert_array_equal(feed[0], feed[1])
    np.testing.assert_array_equal(feed[0], feed[2])


def test_shorter_side_center_crop_imagenet_recipe(tmp_path, photo, save_image):
    from PIL import Image

    path = save_image(photo("coffee.png"), tmp_path / "coffee.png")  # 600x400, landscape
    pre = Preprocess(size=(224, 224), resize="shorter", crop_fraction=0.875)
    source = open_source(DataSpec(str(path), preprocess=pre), [spec("x", ("N", 3, "h", "w"))])
    assert "center-cropped to 224x224" in source.description
    got = next(iter(source))["x"][0].transpose(1, 2, 0)
    with Image.open(path) as image:  # torchvision: Resize(256) then CenterCrop(224)
        resized = image.convert("RGB").resize((384, 256), Image.BILINEAR)
        left, top = (384 - 224) // 2, (256 - 224) // 2
        expected = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_float16_input(format_folder):
    source = open_source(DataSpec(str(format_folder), samples=2), [spec("x", ("N", 3, 16, 16), "float16")])
    assert next(iter(source))["x"].dtype == np.float16
    override = open_source(DataSpec(str(format_folder), samples=2, preprocess=Preprocess(dtype="float16")), RGB_64)
    assert next(iter(override))["x"].dtype == np.float16


def test_uint8_input_gets_raw_pixels(tmp_path, photo, save_image):
    path = save_image(photo("astronaut.png"), tmp_path / "a.png")
    source = open_source(DataSpec(str(path)), [spec("x", (1, 64, 64, 3), "uint8")])
    feed = next(iter(source))["x"]
    assert feed.dtype == np.uint8
    np.testing.assert_array_equal(feed[0], _reference(path, (64, 64)).astype(np.uint8))
    with pytest.raises(DataError, match="raw pixel values, so scale, mean and std cannot be applied"):
        open_source(DataSpec(str(path), preprocess=Preprocess(mean=(0.5,))), [spec("x", (1, 64, 64, 3), "uint8")])


@pytest.mark.parametrize("shape, message", [
    (("N", 3, 64), r"image data needs a 4-D input"),
    (("N", 5, 64, 64), r"no channel axis of size 1, 3 or 4"),
])
def test_inputs_that_take_no_images(format_folder, shape, message):
    with pytest.raises(DataError, match=message):
        open_source(DataSpec(str(format_folder)), [spec("x", shape)])


def test_multi_input_model_rejects_images(format_folder):
    with pytest.raises(DataError, match=r"single-input models, but this model has 2 inputs \('a', 'b'\)"):
        open_source(DataSpec(str(format_folder)), [spec("a", ("N", 3, 8, 8)), spec("b", ("N", 3, 8, 8))])


@pytest.mark.parametrize("pre, message", [
    (Preprocess(mean=(1.0, 2.0)), r"mean has 2 values, but input 'x' has 3 channel\(s\)"),
    (Preprocess(std=(0.0,)), r"std must not be 0"),
    (Preprocess(resize="fit"), r"resize must be one of stretch, shorter, letterbox, pad; got 'fit'"),
    (Preprocess(crop_fraction=1.5), r"crop fraction must be in \(0, 1\]"),
    (Preprocess(channel_order="RBG"), r"channel order must be RGB or BGR"),
    (Preprocess(dtype="int8"), r"input 'x' is float32; data of dtype int8 cannot be fed"),
])
def test_bad_preprocessing(format_folder, pre, message):
    with pytest.raises(DataError, match=message):
        open_source(DataSpec(str(format_folder), preprocess=pre), RGB_64)


def test_corrupt_image_names_the_file(tmp_path, many_images):
    folder = tmp_path / "calib"
    folder.mkdir()
    for name in ("img_00.png", "img_01.png"):
        (folder / name).write_bytes((many_images / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    truncated = (many_images / "img_02.png").read_bytes()
    (folder / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    for name in ("broken.jpg", "truncated.png"):
        source = open_source(DataSpec(str(folder / name)), RGB_64)
        with pytest.raises(DataError, match=rf"{folder / name}: cannot read image"):
            list(source)
    source = open_source(DataSpec(str(folder), batch_size=2, shuffle=False), RGB_64)
    with pytest.raises(DataError, match=rf"{folder}/broken.jpg: cannot read image \((UnidentifiedImageError|OSError)"):
        list(source)


def test_missing_empty_and_unsupported_paths(tmp_path):
    with pytest.raises(DataError, match=rf"data path {tmp_path / 'nope'} does not exist"):
        open_source(DataSpec(str(tmp_path / "nope")), RGB_64)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    (empty / "labels.csv").write_text("x")
    with pytest.raises(DataError) as caught:
        open_source(DataSpec(str(empty)), RGB_64)
    message = str(caught.value)
    assert str(empty) in message and "found 2 other file(s) (.csv, .txt)" in message
    for ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".npy", ".npz", ".py"):
        assert ext in message
    with pytest.raises(DataError, match=r"unsupported data file type '.txt'"):
        open_source(DataSpec(str(empty / "notes.txt")), RGB_64)


def test_mixed_folder_is_rejected(tmp_path, many_images):
    (tmp_path / "a.png").write_bytes((many_images / "img_00.png").read_bytes())
    np.save(tmp_path / "b.npy", np.zeros((3, 64, 64), np.float32))
    with pytest.raises(DataError, match=r"mixes images \(1\) and .npy/.npz files \(1\)"):
        open_source(DataSpec(str(tmp_path)), RGB_64)


def test_selection_is_seeded_and_reproducible(many_images, data_logs):
    def ids(**kw):
        return open_source(DataSpec(str(many_images), **kw), RGB_64).sample_ids()

    first = ids(samples=6, seed=1)
    assert first == ids(samples=6, seed=1)
    assert first != ids(samples=6, seed=2)
    assert len(set(first)) == 6 and first != sorted(first)
    assert ids(samples=6, shuffle=False) == [f"img_{i:02d}.png" for i in range(6)]
    # the ids the iteration reports are the ones selected
    source = open_source(DataSpec(str(many_images), samples=6, seed=1, batch_size=4), RGB_64)
    assert [i for ids_, _ in source.iter_with_ids() for i in ids_] == first
    assert not data_logs.records or "fewer" not in data_logs.text
    everything = ids(samples=100, seed=3)
    assert sorted(everything) == [f"img_{i:02d}.png" for i in range(24)]
    assert "holds 24 sample(s), fewer than the 100 asked for: using all of them" in data_logs.text


def test_static_batch_drops_remainder(many_images, data_logs):
    source = open_source(DataSpec(str(many_images), samples=10), [spec("x", (4, 3, 16, 16))])
    assert source.batch_size == 4 and source.num_samples == 8 and len(source) == 2
    assert [b["x"].shape[0] for b in source] == [4, 4]
    assert "using 8 of 10 samples: the model takes batches of exactly 4" in data_logs.text
    with pytest.raises(DataError, match=r"3 sample\(s\) found, but the model takes batches of exactly 4"):
        open_source(DataSpec(str(many_images), samples=3), [spec("x", (4, 3, 16, 16))])


def test_streaming_reads_one_batch_at_a_time(many_images, monkeypatch):
    loaded = []
    real = images_module.load_image

    def counting(path, plan, origin, *rest):
        loaded.append(Path(path).name)
        return real(path, plan, origin, *rest)

    monkeypatch.setattr(images_module, "load_image", counting)
    source = open_source(DataSpec(str(many_images), samples=20, batch_size=4), RGB_64)
    assert loaded == []  # opening reads no image
    stream = source.iter_with_ids()
    for number in range(1, 4):
        ids, batch = next(stream)
        assert len(loaded) == 4 * number  # only this batch's images were decoded
        assert [Path(i).name for i in ids] == loaded[-4:]
    stream.close()
    # only the selected files are ever opened
    loaded.clear()
    list(open_source(DataSpec(str(many_images), samples=5, seed=7), RGB_64))
    assert sorted(loaded) == sorted(open_source(DataSpec(str(many_images), samples=5, seed=7), RGB_64).sample_ids())


def test_fingerprint_is_cheap_and_sensitive(many_images, tmp_path, monkeypatch):
    def boom(*args):
        raise AssertionError("fingerprint must not decode images")

    def fp(folder=many_images, **kw):
        pre = kw.pop("preprocess", Preprocess())
        return open_source(DataSpec(str(folder), preprocess=pre, **kw), RGB_64).fingerprint()

    monkeypatch.setattr(images_module, "load_image", boom)
    base = fp(samples=8)
    assert len(base) == 64 and base == fp(samples=8)
    assert base == fp(samples=8, batch_size=2)  # batching is not part of the data
    assert base != fp(samples=8, seed=1)
    assert base != fp(samples=9)
    assert base != fp(samples=8, preprocess=Preprocess(channel_order="BGR"))
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in many_images.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
        stat = path.stat()
        os.utime(copy / path.name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fp(copy, samples=8) == base  # same names, sizes and times
    target = copy / open_source(DataSpec(str(copy), samples=8), RGB_64).sample_ids()[0]
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 10**9))
    assert fp(copy, samples=8) != base


def _wide_red(width=20, height=10):
    from PIL import Image

    return Image.new("RGB", (width, height), (255, 0, 0))


def test_letterbox_keeps_the_aspect_ratio_and_centers_the_image_on_the_pad_value():
    out = np.asarray(images_module.resize_crop(_wide_red(), 32, 32, "letterbox", pad_value=114))
    assert out.shape == (32, 32, 3)
    # 20x10 scaled by 1.6 to 32x16: 8 rows of padding above and below
    assert (out[:8] == 114).all() and (out[24:] == 114).all()
    assert (out[8:24, :, 0] == 255).all() and (out[8:24, :, 1] == 0).all()


def test_letterbox_at_the_corner_pads_right_and_bottom_as_a_text_line_is_fed():
    tall = np.asarray(images_module.resize_crop(_wide_red(10, 20), 32, 64, "letterbox", pad_position="corner"))
    assert tall.shape == (32, 64, 3)
    # 10x20 scaled by 1.6 to 16x32: the image fills columns 0-15, zeros to the right
    assert (tall[:, :16, 0] == 255).all() and (tall[:, 16:] == 0).all()


def test_pad_does_not_enlarge_and_only_shrinks_a_larger_image():
    small = np.asarray(images_module.resize_crop(_wide_red(8, 4), 16, 16, "pad", pad_value=7))
    assert (small[6:10, 4:12, 0] == 255).all() and (small[:6] == 7).all() and (small[10:] == 7).all()
    large = np.asarray(images_module.resize_crop(_wide_red(64, 32), 16, 16, "pad"))
    assert large.shape == (16, 16, 3) and (large[4:12, :, 0] == 255).all() and (large[:4] == 0).all()


def test_letterbox_is_planned_recorded_and_refused_where_it_cannot_apply():
    model = RGB_64[0]
    plan = images_module.plan_images(Preprocess(resize="letterbox", pad_value=114, pad_position="corner"), model)
    assert plan.to_dict()["pad_value"] == 114 and plan.to_dict()["pad_position"] == "corner"
    assert "letterboxed to 64x64 (aspect kept, at the top left, padded with 114)" in plan.summary()
    for bad, message in ((Preprocess(resize="letterbox", crop_fraction=0.875), "does not crop"),
                         (Preprocess(resize="pad", pad_value=300), "0-255"),
                         (Preprocess(resize="letterbox", pad_position="left"), "center' or 'corner")):
        with pytest.raises(DataError, match=message):
            images_module.plan_images(bad, model)


def test_a_letterboxed_folder_feeds_the_padded_pixels(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 20), (255, 255, 255)).save(tmp_path / "wide.png")
    pre = Preprocess(resize="letterbox", pad_value=114)
    model = [spec("x", ("N", 3, 32, 32))]
    (feed,) = [f for _, f in batches(open_source(DataSpec(str(tmp_path), samples=None, preprocess=pre), model))]
    x = feed["x"][0]
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, :8], 114 / 255, rtol=1e-6)  # padding, scaled like every pixel
    np.testing.assert_allclose(x[:, 8:24], 1.0, rtol=1e-6)
