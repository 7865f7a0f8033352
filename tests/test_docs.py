"""Every command and Python block in README.md and docs/*.md runs as written.

Fenced blocks are read by their info string:

- ``sh`` / ``bash`` / ``console``: each command runs in a copy of a fresh clone after one
  ``trtq quickstart`` (shared by the whole module), in the order the document shows them;
- ``python``: the block runs as a script there;
- ``sh gpu`` / ``python gpu``: needs TensorRT and an NVIDIA GPU (run only where both are present);
- ``sh template``: placeholder files (a YOLO model, your images): the ``trtq`` lines are parsed
  by trtq's own command-line parser, so a renamed or removed option fails here;
- ``sh fresh-clone``: the README's install commands; CI (.ci/run) runs them, checked below;
- ``text`` or no info string: printed output, not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"sh", "bash", "shell", "console"}
COMMAND_TIMEOUT_S = 300


@dataclass
class Block:
    document: Path
    line: int           # 1-based line of the opening fence
    language: str
    markers: List[str]
    text: str

    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks(document: Path) -> List[Block]:
    text = document.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        words = match.group(1).split()
        found.append(Block(document, text.count("\n", 0, match.start()) + 1, words[0] if words else "",
                           words[1:], match.group(2)))
    return found


def commands(block: Block) -> List[str]:
    """The block's command lines: continuations joined, comments and blank lines dropped."""
    lines, pending = [], ""
    for raw in block.text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _runnable(block: Block, gpu: bool) -> bool:
    return (block.language in SHELLS or block.language == "python") and ("gpu" in block.markers) == gpu \
        and not {"template", "fresh-clone"} & set(block.markers)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone's files (linked, read-only use) and one `trtq quickstart` run in it."""
    where = tmp_path_factory.mktemp("clone")
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".venv", "out", "build", "dist"} and not entry.name.endswith(".egg-info"):
            (where / entry.name).symlink_to(entry)
    result = _shell("trtq quickstart", where)
    assert result.returncode == 0, result.stdout + result.stderr
    return where


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["COLUMNS"] = "80"
    return env


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT_S)


def _run_block(block: Block, cwd: Path) -> None:
    if block.language == "python":
        script = cwd / f"_block_{block.document.stem}_{block.line}.py"
        script.write_text(block.text, encoding="utf-8")
        result = subprocess.run([sys.executable, str(script)], cwd=cwd, env=_env(), capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT_S)
        assert result.returncode == 0, f"{block.where()}: python block failed\n{result.stdout}{result.stderr}"
        return
    for command in commands(block):
        result = _shell(command, cwd)
        assert result.returncode == 0, \
            f"{block.where()}: `{command}` exited {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_and_python_block_runs(document, clone):
    for block in blocks(document):
        if _runnable(block, gpu=False):
            _run_block(block, clone)


def _gpu_blocks():
    return [pytest.param(b, id=b.where()) for d in DOCUMENTS for b in blocks(d) if _runnable(b, gpu=True)]


@pytest.mark.gpu
@pytest.mark.parametrize("block", _gpu_blocks())
def test_gpu_blocks_run_where_tensorrt_and_a_gpu_are(block, request):
    if subprocess.run([sys.executable, "-m", "trtq", "info", "--require"], capture_output=True).returncode != 0:
        pytest.skip("needs TensorRT and an NVIDIA GPU (trtq info --require failed)")
    _run_block(block, request.getfixturevalue("clone"))  # the quickstart runs only where the block can


def _template_lines():
    lines = []
    for document in DOCUMENTS:
        for block in blocks(document):
            if "template" in block.markers or "gpu" in block.markers:
                for command in commands(block):
                    words = shlex.split(command, comments=True)
                    if words[:1] == ["trtq"]:
                        lines.append(pytest.param(words[1:], id=f"{block.where()}:{' '.join(words[1:3])}"))
                    elif words[:3] == ["python", "-m", "trtq"]:
                        lines.append(pytest.param(words[3:], id=f"{block.where()}:{' '.join(words[3:5])}"))
    return lines


@pytest.mark.parametrize("argv", _template_lines())
def test_template_and_gpu_commands_parse(argv):
    """Commands on placeholder files cannot run here, but their options must exist as written."""
    from trtq.cli import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"trtq {' '.join(argv)}: the parser refused it (exit {exc.code})")


def test_the_fresh_clone_commands_are_what_ci_runs():
    """README's two commands: the test command's install and pytest steps are .ci/run's, and the first
    ends in `trtq quickstart`, which the fixture above runs in a fresh clone's files."""
    readme = [b for b in blocks(ROOT / "README.md") if "fresh-clone" in b.markers]
    assert len(readme) == 2
    quickstart, tests = (commands(b)[0] for b in readme)
    assert quickstart.endswith(".venv/bin/trtq quickstart")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for step in tests.split(" && "):
        assert step in ci, f".ci/run does not run the README's step `{step}`"


_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_name_files_that_exist(document):
    text = document.read_text(encoding="utf-8")
    missing = [target for target, _ in _LINK.findall(text)
               if "://" not in target and not (document.parent / target).exists()]
    assert not missing, f"{document.relative_to(ROOT)} links to missing files: {missing}"
