"""Command-line options shared by the subcommands that read data (calibrate, eval, build, ...).

    add_data_arguments(parser)                      # --calib PATH, --samples, --batch-size, --seed, --size, ...
    spec = data_spec_from_args(args)                # -> trtq.data.spec.DataSpec

Option values are kept as given and parsed by :func:`data_spec_from_args`, which
raises :class:`OptionError` (a :class:`~trtq.errors.TrtqError`, printed as one line,
exit code 2) for values such as ``--size 32`` or ``--mean 1,2``.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import List, Optional, Sequence, Tuple

from .. import defaults
from ..data.spec import DataSpec, Preprocess
from ..errors import TrtqError

_UNSET = object()
_KEY = "_trtq_data_prefix_"
_DEFAULT = Preprocess()


class OptionError(TrtqError):
    """A command-line option has a value trtq cannot use."""


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


#: Each help text states its own default; this empty expansion of ``%(default)`` stops
#: ``argparse.ArgumentDefaultsHelpFormatter`` from appending a second "(default: ...)".
_OWN_DEFAULT = "%(default).0s"


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where the help text does not state its default already,
    and not for flags (False) or options without a default (None)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _add(group, *names, help: str, **kwargs):  # noqa: A002 -- argparse's keyword
    return group.add_argument(*names, help=help + _OWN_DEFAULT, **kwargs)


def add_data_arguments(parser: argparse.ArgumentParser, flag: str = "--calib", required: bool = True,
                       default_samples: Optional[int] = defaults.SAMPLES, help_text: Optional[str] = None,
                       prefix: str = "") -> argparse._ArgumentGroup:
    """Add ``flag PATH`` and the sample/batch/preprocessing options to ``parser``.

    ``prefix`` (e.g. ``"eval-"``) namespaces the other options (``--eval-samples``)
    when one parser takes two data paths. Returns the argument group.
    """
    dest = _dest(flag)
    p = f"--{prefix}"
    group = parser.add_argument_group(
        "calibration data" if dest == "calib" else f"data ({flag})",
        "Where samples come from and how images become model inputs. Preprocessing options apply to images; "
        ".npy/.npz files and loader scripts are fed as they are (floats cast to the input's float type).")
    samples_default = "all" if default_samples is None else str(default_samples)
    _add(group,
        flag, dest=dest, metavar="PATH", required=required,
        help=help_text or "a folder of images (.jpg .jpeg .png .bmp .webp, searched recursively) or of .npy/.npz "
                          "files, one such file, or a .py loader script whose load_data() yields "
                          "{input_name: array} dicts (script.py:func calls func instead)")
    _add(group,
        f"{p}samples", dest=_dest(f"{p}samples"), metavar="N", default=default_samples,
        help=(f"number of samples to use ('all': every one), picked at random with --{prefix}seed "
              if dest == "calib" else "number of samples to use ('all': every one), the first in sorted file "
              "order ") + f"(default: {samples_default})")
    _add(group,
        f"{p}batch-size", dest=_dest(f"{p}batch-size"), metavar="B", default=defaults.BATCH_SIZE,
        help=f"samples per inference batch; a model whose batch dim is fixed (e.g. 1) uses that instead "
             f"(default: {defaults.BATCH_SIZE})")
    _add(group,
        f"{p}seed", dest=_dest(f"{p}seed"), metavar="S", default=defaults.SEED,
        help=(f"random seed for picking samples: the same seed and files give the same selection "
              if dest == "calib" else "seed of the random sample choice where one is made (not here: samples are "
              "taken in sorted file order) ") + f"(default: {defaults.SEED})")
    _add(group,
        f"{p}size", dest=_dest(f"{p}size"), metavar="HxW", default=None,
        help="image height x width after resizing, e.g. 320x320 (default: the model input's height and width; "
             "required when they are dynamic)")
    _add(group,
        f"{p}resize", dest=_dest(f"{p}resize"), choices=("stretch", "shorter", "letterbox", "pad"),
        default=_DEFAULT.resize,
        help="stretch: resize straight to --size, ignoring aspect ratio; shorter: scale the image to cover "
             "--size, then center-crop it; letterbox: scale it to fit inside --size, aspect ratio kept, and pad "
             "the rest (YOLO); pad: keep its size (shrink only a larger image) and pad (default: "
             f"{_DEFAULT.resize})")
    _add(group,
        f"{p}pad-value", dest=_dest(f"{p}pad-value"), metavar="V", default=_DEFAULT.pad_value,
        help=f"letterbox / pad: the padding's 0-255 pixel value, before --scale (YOLO: 114; default: "
             f"{_DEFAULT.pad_value:g})")
    _add(group,
        f"{p}pad-position", dest=_dest(f"{p}pad-position"), choices=("center", "corner"),
        default=_DEFAULT.pad_position,
        help="letterbox / pad: center the image (pad both sides) or put it at the top left and pad right and "
             f"bottom, as text recognizers do (default: {_DEFAULT.pad_position})")
    _add(group,
        f"{p}crop-fraction", dest=_dest(f"{p}crop-fraction"), metavar="F", default=_DEFAULT.crop_fraction,
        help="resize to size/F, then center-crop --size; 0.875 with --resize shorter --size 224x224 is the "
             f"ImageNet 'resize 256, crop 224' recipe (default: {_DEFAULT.crop_fraction:g}, no crop)")
    _add(group,
        f"{p}scale", dest=_dest(f"{p}scale"), metavar="S", default=None,
        help="multiply 0-255 pixel values by S before mean/std; a fraction like 1/255 is fine "
             "(default: 1/255, giving 0-1)")
    _add(group,
        f"{p}mean", dest=_dest(f"{p}mean"), metavar="M[,M,M]", default=None,
        help="subtract from each channel after scaling: one value for all channels or one per channel, "
             "e.g. 0.485,0.456,0.406 (default: 0)")
    _add(group,
        f"{p}std", dest=_dest(f"{p}std"), metavar="S[,S,S]", default=None,
        help="then divide each channel by this: one value or one per channel, e.g. 0.229,0.224,0.225 "
             "(default: 1)")
    order = group.add_mutually_exclusive_group()
    _add(order,
        f"{p}bgr", dest=_dest(f"{p}channel-order"), action="store_const", const="BGR", default=None,
        help="feed color channels in BGR order, as OpenCV-trained models expect (default: RGB)")
    _add(order,
        f"{p}rgb", dest=_dest(f"{p}channel-order"), action="store_const", const="RGB",
        help="feed color channels in RGB order (the default)")
    _add(group,
        f"{p}layout", dest=_dest(f"{p}layout"), type=str.upper, choices=("NCHW", "NHWC"), default=None,
        help="image tensor layout (default: from the model input: 1, 3 or 4 channels at axis 1 -> NCHW, "
             "at the last axis -> NHWC)")
    _add(group,
        f"{p}dtype", dest=_dest(f"{p}dtype"), metavar="DTYPE", default=None,
        help="float type of the data fed, float32 or float16 (default: the model input's dtype)")
    if not prefix and not any("--batch-axis" in action.option_strings for action in parser._actions):
        add_batch_axis_argument(group)
    parser.set_defaults(**{_KEY + dest: prefix})
    return group


def add_batch_axis_argument(parser) -> None:
    """``--batch-axis NAME:AXIS`` (repeatable): the axis that counts samples for one input."""
    _add(parser, "--batch-axis", dest="batch_axis", metavar="NAME:AXIS", action="append", default=None,
         help="the axis of input NAME that counts samples, when trtq infers it wrongly (repeatable); NAME:none "
              "feeds the input unchanged with every batch (a scalar or configuration tensor, the same for every "
              "sample). Default: inferred from the graph: axis 1 for LSTM/GRU/RNN initial_h/initial_c "
              "[layers, batch, hidden], the axis carrying the batch's named dim, none for scalars and shape "
              "inputs, else axis 0")


def add_feedback_argument(parser) -> None:
    """``--feedback OUT=IN`` (repeatable): a streaming model's output fed back as an input on the next call."""
    _add(parser, "--feedback", dest="feedback", metavar="OUT=IN", action="append", default=None,
         help="a streaming model's output OUT fed back as its input IN on the next call, e.g. stateN=state "
              "(repeatable). The data are then sequences (sub-folders of step files, .npz files whose arrays have a "
              "leading time axis, or a loader script yielding one such dict per sequence); every model runs each "
              "sequence with its own state, and the verdict and --algo auto judge the outputs that are not fed "
              "back, over whole sequences (see docs/data_formats.md)")


def feedback_from_args(args: argparse.Namespace) -> list:
    """``--feedback`` values as :class:`~trtq.runtime.streaming.FeedbackPair` (:class:`~trtq.runtime.streaming.FeedbackError`, exit 2)."""
    from ..runtime.streaming import parse_feedback

    return parse_feedback(getattr(args, "feedback", None))


def batch_axes_from_args(args: argparse.Namespace) -> dict:
    """``--batch-axis`` values as ``{name: axis or None}`` (:class:`~trtq.graph.batch.BatchAxisError`, exit 2)."""
    from ..graph.batch import parse_batch_axes

    return parse_batch_axes(getattr(args, "batch_axis", None))


def _bad(option: str, message: str) -> OptionError:
    return OptionError(f"argument {option}: {message}")


def _number(value, option: str, allow_fraction: bool = False) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            if allow_fraction and "/" in text:
                numerator, denominator = text.split("/")
                number = float(numerator) / float(denominator)
            else:
                number = float(text)
        except (ValueError, ZeroDivisionError):
            what = "a number or a fraction like 1/255" if allow_fraction else "a number"
            raise _bad(option, f"expected {what}, got {text!r}") from None
    if not math.isfinite(number):
        raise _bad(option, f"must be a finite number, got {value!r}")
    return number


# ---------------------------------------------------------------------------------------------
# The one validation of option values: every command's parser, at parse time


class Value:
    """An argparse ``type`` that parses a number and checks its range (argparse turns its
    ``ArgumentTypeError`` into ``trtq CMD: error: argument --x: ...``, exit 2).

    Floats must be finite (no ``nan``, ``inf``); ``low_open``/``high_open`` exclude the bound.
    """

    def __init__(self, kind: type = float, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, hint: str = ""):
        self.kind, self.low, self.high, self.low_open, self.high_open, self.hint = \
            kind, low, high, low_open, high_open, hint
        self.__name__ = "an integer" if kind is int else "a number"  # argparse: "invalid <name> value"

    @staticmethod
    def _bound(value: float) -> str:
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"

    def range_text(self) -> str:
        low, high = (None if v is None else self._bound(v) for v in (self.low, self.high))
        if low is not None and high is not None:
            return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if low is not None:
            return f"{'greater than' if self.low_open else 'at least'} {low}"
        if high is not None:
            return f"{'less than' if self.high_open else 'at most'} {high}"
        return ""

    def __call__(self, text: str):
        try:
            value = int(str(text).strip()) if self.kind is int else float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.__name__}, got {text!r}") from None
        if self.kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if low_bad or high_bad:
            where = self.range_text()
            where = f"in {where}" if where.startswith(("(", "[")) else where
            raise argparse.ArgumentTypeError(f"must be {where}, got {text}{'; ' + self.hint if self.hint else ''}")
        return value


def names_list(text: str) -> str:
    """A comma-separated list that must name something (``--observe a,b``; 'all'/'qdq' pass as they are)."""
    if not [part for part in str(text).split(",") if part.strip()]:
        raise argparse.ArgumentTypeError(f"expected a non-empty comma-separated list, got {text!r}")
    return text


#: Ranges of every numeric option, by flag, in every command that has it. Applied by
#: :func:`validate_option_values` to the whole parser, so no command can forget one; an
#: int or float option not listed still gets "a finite number" / "an integer".
OPTION_VALUES = {
    "--threads": Value(int, 1, 4096),
    "--num-bins": Value(int, 128, defaults.MAX_NUM_BINS),
    "--percentile": Value(float, 0, 100, low_open=True),
    "--max-binned": Value(int, 1),
    "--min-snr": Value(float, -1000, 1000),
    "--min-cosine": Value(float, -1, 1),
    "--target-snr": Value(float, -1000, 1000),
    "--target-cosine": Value(float, -1, 1),
    "--target-agreement": Value(float, 0, 1, low_open=True),
    "--max-drop": Value(float, 0, 100, high_open=True),
    "--min-agreement": Value(float, 0, 1),
    "--max-batch": Value(int, 1, 2 ** 31 - 1),
    "--max-layers": Value(int, 0),
    "--sensitivity-samples": Value(int, 1),
    "--iterations": Value(int, 1),
    "--warmup": Value(int, 0),
    "--max-seconds": Value(float, 0, low_open=True),
    "--workspace": Value(float, 0, 1 << 20, low_open=True),
    "--opset": Value(int, 7, 64),
    "--tolerance": Value(float, 0, low_open=True),
    "--seed": Value(int, 0, 2 ** 32 - 1),
    "--samples": None,   # 'all' or a count: checked by parse_samples (data options); quickstart's: Value(int, 1)
    "--eval-samples": None,
}

#: Options that take a list which must not be empty.
LIST_OPTIONS = ("--observe",)


def validate_option_values(parser: argparse.ArgumentParser) -> None:
    """Give every numeric option of ``parser`` and its subcommands its range check (:data:`OPTION_VALUES`)."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps them here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                validate_option_values(sub)
            continue
        flags = [f for f in action.option_strings if f.startswith("--")]
        rule = next((OPTION_VALUES[f] for f in flags if f in OPTION_VALUES), False)
        if rule:
            if action.type in (int, float) or (action.type is None and action.nargs is None and action.const is None
                                               and not isinstance(action, argparse._StoreConstAction)):  # noqa: SLF001
                action.type = rule
        elif rule is False and action.type is float:
            action.type = Value(float)
        if any(f in LIST_OPTIONS for f in flags) and action.type is None:
            action.type = names_list


def _integer(value, option: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise _bad(option, f"expected an integer, got {value!r}")
    try:
        number = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise _bad(option, f"expected an integer, got {value!r}") from None
    if number < minimum:
        raise _bad(option, f"must be at least {minimum}, got {number}")
    return number


def parse_size(value, option: str = "--size") -> Optional[Tuple[int, int]]:
    """``"320x240"`` -> ``(320, 240)`` (height, width)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        height, width = (_integer(v, option, 1) for v in value)
        return height, width
    match = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(value))
    if not match:
        raise _bad(option, f"expected HEIGHTxWIDTH such as 320x320, got {str(value)!r}")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 1 or width < 1:
        raise _bad(option, f"height and width must be positive, got {value!r}")
    return height, width


def parse_channels(value, option: str) -> Optional[Tuple[float, ...]]:
    """``"0.485,0.456,0.406"`` -> three floats; one value is also fine (all channels)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = [p for p in re.split(r"[,\s]+", str(value).strip()) if p]
    if len(parts) not in (1, 3, 4):
        raise _bad(option, f"expected one value or one per channel (3, e.g. 0.485,0.456,0.406), "
                           f"got {len(parts)}: {value!r}")
    return tuple(_number(p, option) for p in parts)


def parse_samples(value, option: str = "--samples") -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    return _integer(value, option, 1)


def data_spec_from_args(args: argparse.Namespace, flag_dest: str = "calib", shuffle: bool = True) -> DataSpec:
    """Turn the options :func:`add_data_arguments` added into a :class:`DataSpec`."""
    prefix = getattr(args, _KEY + flag_dest, "") or ""
    option = lambda name: f"--{prefix}{name}"  # noqa: E731
    get = lambda name, default=None: getattr(args, _dest(f"{prefix}{name}"), default)  # noqa: E731

    path = getattr(args, flag_dest, None)
    if path is None or not str(path).strip():
        raise OptionError(f"argument --{flag_dest.replace('_', '-')}: a data path is required")
    samples = parse_samples(get("samples", defaults.SAMPLES), option("samples"))
    batch_size = _integer(get("batch_size", defaults.BATCH_SIZE), option("batch-size"), 1)
    seed = _integer(get("seed", defaults.SEED), option("seed"), 0)

    size = parse_size(get("size"), option("size"))
    crop = _number(get("crop_fraction", _DEFAULT.crop_fraction), option("crop-fraction"))
    if not 0 < crop <= 1:
        raise _bad(option("crop-fraction"), f"must be in (0, 1], e.g. 0.875; got {crop:g}")
    resize = get("resize", _DEFAULT.resize) or _DEFAULT.resize
    if resize not in ("stretch", "shorter", "letterbox", "pad"):
        raise _bad(option("resize"), f"expected stretch, shorter, letterbox or pad, got {resize!r}")
    pad_value = _number(get("pad_value", _DEFAULT.pad_value), option("pad-value"))
    if not 0 <= pad_value <= 255:
        raise _bad(option("pad-value"), f"is a 0-255 pixel value, got {pad_value:g}")
    pad_position = get("pad_position", _DEFAULT.pad_position) or _DEFAULT.pad_position
    if pad_position not in ("center", "corner"):
        raise _bad(option("pad-position"), f"expected center or corner, got {pad_position!r}")
    if resize in ("letterbox", "pad") and crop < 1:
        raise _bad(option("crop-fraction"), f"does not apply to {option('resize')} {resize}, which pads and "
                                             "does not crop")
    scale_arg = get("scale")
    scale = _DEFAULT.scale if scale_arg is None else _number(scale_arg, option("scale"), allow_fraction=True)
    if scale <= 0:
        raise _bad(option("scale"), f"must be positive, got {scale_arg!r}")
    mean = parse_channels(get("mean"), option("mean")) or _DEFAULT.mean
    std = parse_channels(get("std"), option("std")) or _DEFAULT.std
    if any(s == 0 for s in std):
        raise _bad(option("std"), "must not be 0")
    if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
        raise _bad(option("std"), f"has {len(std)} values but {option('mean')} has {len(mean)}")
    order = (get("channel_order") or _DEFAULT.channel_order).upper()
    layout = get("layout")
    if layout is not None:
        layout = str(layout).upper()
        if layout not in ("NCHW", "NHWC"):
            raise _bad(option("layout"), f"expected NCHW or NHWC, got {layout!r}")
    dtype = get("dtype")
    if dtype is not None:
        import numpy as np

        try:
            parsed = np.dtype(str(dtype))
        except TypeError:
            parsed = None
        if parsed is None or parsed.kind != "f":
            raise _bad(option("dtype"), f"expected a float type such as float32 or float16, got {dtype!r}")
        dtype = parsed.name
    preprocess = Preprocess(size=size, resize=resize, crop_fraction=crop, scale=scale, mean=mean, std=std,
                            channel_order=order, layout=layout, dtype=dtype, pad_value=pad_value,
                            pad_position=pad_position)
    return DataSpec(path=str(path), samples=samples, batch_size=batch_size, seed=seed, shuffle=shuffle,
                    preprocess=preprocess, batch_axes=batch_axes_from_args(args))


def add_algorithm_argument(parser, purpose: str = "") -> None:
    """``--algo``: how amax is chosen from the histograms (shared by calibrate, quantize, build, quickstart)."""
    parser.add_argument(
        "--algo", choices=defaults.ALGORITHMS, default=defaults.ALGORITHM,
        help=(purpose + " " if purpose else "") + "how each tensor's amax is chosen from its histogram: auto scores "
             "the TensorRT-form INT8 model of every algorithm on calibration samples held back from the statistics "
             "and keeps the best, refined per tensor where that measurably helps; entropy is TensorRT's "
             "EntropyCalibration2 exactly; minmax the largest |x|; percentile (--percentile) and mse in between "
             f"(default: {defaults.ALGORITHM})" + _OWN_DEFAULT)


def add_fidelity_arguments(parser, decisions: bool = True) -> None:
    """``--min-snr`` / ``--min-cosine`` / ``--min-agreement``: turn the INT8 verdict into a failure (exit 3, nothing
    written); with ``decisions``, also ``--metric`` and ``--class-output`` (what the model decides)."""
    group = parser.add_argument_group(
        "fidelity gate",
        "Every INT8 result ends with its fidelity against FP32 on calibration samples held back from the "
        "statistics: the decisions (top-1 agreement where an output has a class axis, every channel of a small "
        "feature axis, your --metric) and the worst output's SNR and cosine, with a warning when a decision "
        f"drops below {defaults.VERDICT_MIN_AGREEMENT:.0%} agreement, your --metric below --min-metric or the SNR "
        f"below {defaults.VERDICT_MIN_SNR_DB:g} dB (see docs/accuracy.md). These make it a failure for deployment "
        "pipelines: exit code 3, nothing written.")
    _add(group, "--min-snr", type=float, metavar="DB", default=None,
         help="fail unless the worst INT8 output SNR is at least DB (e.g. 25)")
    _add(group, "--min-cosine", type=float, metavar="C", default=None,
         help="fail unless the worst INT8 output cosine similarity is at least C (e.g. 0.99)")
    if not decisions:
        return
    _add(group, "--min-agreement", type=float, metavar="F", default=None,
         help="fail unless the lowest top-1 agreement per position of an output with a class axis is at least F "
              "(e.g. 0.99)")
    _add(group, "--metric", metavar="FILE.py:NAME", default=None,
         help="your own task metric, NAME(reference_outputs, candidate_outputs, inputs) -> float, higher is better, "
              "1.0 = identical, called per sample: auto ranks by it, the verdict reports it, --min-metric judges it")
    _add(group, "--min-metric", type=float, metavar="M", default=None,
         help="fail (and warn) unless your --metric scores at least M, on its own scale (e.g. 0.97 where rounding "
              "the weights alone scores 0.976); without it the metric is reported, not judged")
    _add(group, "--class-output", action="append", default=[], metavar="NAME[:AXIS]",
         help="an output holding class scores along AXIS (any rank; default: 1 for [N, C] and [N, C, H, W], the "
              "last for [N, T, C]), judged by top-1 agreement per position; repeatable. Softmax/LogSoftmax outputs "
              "and outputs an ArgMax/TopK reads are found without it")


def fidelity_options(args) -> dict:
    """The keyword arguments of calibrate/quantize/build for the fidelity options parsed by
    :func:`add_fidelity_arguments`."""
    if getattr(args, "min_metric", None) is not None and not getattr(args, "metric", None):
        raise OptionError("--min-metric judges your --metric FILE.py:NAME: add it")
    return {"min_snr": args.min_snr, "min_cosine": args.min_cosine,
            "min_agreement": getattr(args, "min_agreement", None), "min_metric": getattr(args, "min_metric", None),
            "metric": getattr(args, "metric", None), "class_outputs": getattr(args, "class_output", None) or None}


def add_target_arguments(parser) -> None:
    """``--target-snr`` / ``--target-cosine`` / ``--target-agreement`` / ``--max-drop`` / ``--max-layers``: mixed
    precision to a target or an accuracy budget.

    calibrate, quantize (with --calib) and build (with --calib) run the search of
    ``trtq eval --auto-exclude`` on the held-back calibration samples when the verdict is below the target.
    """
    group = parser.add_argument_group(
        "mixed precision to a target",
        "When the INT8 verdict on the held-back calibration samples is below the target, leave the layers whose "
        "quantization costs most in float, measuring every step, until it is met (the search of trtq eval "
        "--auto-exclude). The float layers are recorded in the cache's sidecar (mixed_precision), which quantize "
        "and build apply; an unmet target changes nothing and says so.")
    target = group.add_mutually_exclusive_group()
    _add(target, "--target-snr", type=float, metavar="DB", default=None,
         help="target: worst output and channel group SNR >= DB (any output)")
    _add(target, "--target-cosine", type=float, metavar="C", default=None,
         help="target: worst output cosine >= C (e.g. 0.99 for embeddings)")
    _add(target, "--target-agreement", type=float, metavar="F", default=None,
         help="target: top-1 agreement >= F on the first output shaped like class scores [N, C]")
    _add(target, "--max-drop", type=float, metavar="PTS", default=None,
         help="accuracy budget: the fewest layers in float that keep the decisions (your --metric, top-1 "
              "agreement, mask IoU) within PTS points of FP32: searched on the held-back samples, then checked on "
              "up to 192 more that the search never reads (a third of the data at most); the report gives the "
              "layers, the decisions reached and the CPU latency of float, INT8 and mixed")
    _add(group, "--max-layers", type=int, metavar="N", default=None,
         help=f"leave at most N layers in float (default: {defaults.AUTO_EXCLUDE_MAX_LAYERS} for a target, as many as "
              "the budget needs for --max-drop)")


def fidelity_target_from_args(args: argparse.Namespace):
    """The :class:`trtq.precision.targets.FidelityTarget` of :func:`add_target_arguments`' options (None when none given)."""
    from ..precision.targets import FidelityTarget

    values = {"snr_db": getattr(args, "target_snr", None), "cosine": getattr(args, "target_cosine", None),
              "agreement": getattr(args, "target_agreement", None), "max_drop": getattr(args, "max_drop", None)}
    max_layers = getattr(args, "max_layers", None)
    if all(v is None for v in values.values()):
        if max_layers is not None:
            raise OptionError("--max-layers belongs to --target-snr, --target-cosine, --target-agreement or "
                              "--max-drop")
        return None
    if values["agreement"] is not None and not 0.0 < values["agreement"] <= 1.0:
        raise _bad("--target-agreement", f"is a fraction in (0, 1], got {values['agreement']}")
    if values["cosine"] is not None and not -1.0 <= values["cosine"] <= 1.0:
        raise _bad("--target-cosine", f"is a cosine in [-1, 1], got {values['cosine']}")
    if values["max_drop"] is not None and not 0.0 <= values["max_drop"] < 100.0:
        raise _bad("--max-drop", f"is points of decisions in [0, 100), got {values['max_drop']}")
    if max_layers is not None and max_layers < 0:
        raise _bad("--max-layers", f"must be 0 or more, got {max_layers}")
    return FidelityTarget(**values, max_layers=max_layers)


def budget_command_from_args(args: argparse.Namespace, command: str) -> str:
    """The command the user ran, with ``--max-drop`` (printed when the decisions dropped): "" without
    calibration data or when a target or budget was already given. Every option the user gave is kept (the data
    options above all: another --size or --mean calibrates another model), except ``build``'s ``--cache``: the
    cache the run wrote exists now, and a build reads an existing cache as it is, so the budget would not run."""
    from ..report import budget_command

    calib = getattr(args, "calib", None)
    if not calib or any(getattr(args, name, None) is not None for name in
                        ("target_snr", "target_cosine", "target_agreement", "max_drop")):
        return ""
    return budget_command(command, args.model, calib,
                          extra=given_options(args, skip=("calib", "cache") if command == "build" else ("calib",)))


#: Where each command's parser leaves itself in the arguments it parsed (:func:`given_options` reads it).
COMMAND_PARSER = "_trtq_command_parser_"


def given_options(args: argparse.Namespace, skip: Sequence[str] = ()) -> List[str]:
    """The options whose values in ``args`` differ from their command parser's defaults, as words that parse back
    to those values (long flags, in the parser's order; ``-q``/``-v`` and the ``skip`` destinations left out);
    none for arguments no trtq parser made."""
    parser = getattr(args, COMMAND_PARSER, None)
    words: List[str] = []
    if parser is None:
        return words
    for action in parser._actions:
        if not action.option_strings or action.dest in (*skip, "help", "verbose", "quiet"):
            continue
        value = getattr(args, action.dest, action.default)
        flag = max(action.option_strings, key=len)
        if isinstance(action, (argparse._StoreConstAction, argparse._StoreTrueAction)):
            words += [flag] if value == action.const and value != action.default else []
        elif value != action.default and value is not None:
            values = value if isinstance(action, argparse._AppendAction) else [value]
            for item in values:
                words += [flag, _word(item)]
    return words


def _word(value) -> str:
    """An option's parsed value as a word it parses back from (floats without a needless ``.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def add_equalize_argument(parser, purpose: str = "") -> None:
    """``--equalize [STEPS]``: rewrite the float model before calibration (trtq/graph/equalize.py), shared by
    calibrate, quantize and build; ``purpose`` (e.g. ``"with --calib:"``) leads the help text."""
    _add(parser, "--equalize", nargs="?", const="all", default=None, metavar="STEPS",
         help=(purpose + " " if purpose else "") +
              "rewrite the float model before calibrating: cross-layer equalization of consecutive convolutions "
              "(cle), high-bias absorption (absorb), re-centring of asymmetric activations (HardSwish, Relu, Sigmoid) "
              "read by an unpadded Conv or a Gemm (centre), bias correction for int8 weight rounding (bias); "
              "alone: all four, or a comma-separated list. 'auto' (the default with --algo auto): each rewrite that would "
              "change the model is scored like auto's candidates, with its own statistics pass, and kept only when "
              "it wins beyond noise; 'off': never. It helps some nets and costs others (docs/accuracy.md). A "
              "rewrite used is written beside the cache as <model>.equalized.onnx, which the cache belongs to "
              "(quantize and build with the cache find it there)")
