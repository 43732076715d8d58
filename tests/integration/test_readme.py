"""The README is a test: every ``fvdesk`` command that README.md and docs/*.md show runs.

Commands are read from the documents themselves, so a command added to them without a passing run
fails here.  What counts as a command: a line of a fenced code block that starts with ``fvdesk``
(or ``.venv/bin/fvdesk``, or that runs fvdesk through ``torchrun -m fvdesk`` or ``sbatch --wrap
"fvdesk ..."``), and an inline code span that starts with ``fvdesk`` and a space.

How a command is made runnable, and nothing else:

* placeholders (``MODEL``, ``L``, ``DIR``, ``GALLERY`` …) are replaced from ``PLACEHOLDERS``; an
  upper-case word the table does not know fails the command's case, naming it;
* optional groups ``[...]`` are kept (so the flags they show run too), with the first of their
  ``a|b`` alternatives; a standalone `` | `` between two flags makes one case per side;
* steps, canvas and units are cut down (``--steps 2 --size 32``, two units per atlas layer) and
  every run writes into a fresh temporary folder, on a copy of the demo model (``--remember``
  writes its sidecar beside that copy, never into the package);
* inputs a command reads are made first: a gallery for ``--from``, a sharded atlas for
  ``--merge``, a folder of generated pattern images for ``--images``, a labels file;
* ``torchrun``/``sbatch`` lines run their fvdesk part with the launcher's variables set
  (RANK/WORLD_SIZE, SLURM_ARRAY_TASK_ID/COUNT);
* commands that open the app run in a subprocess on Qt's offscreen platform, which closes the
  window once the model has loaded (``tests/integration/readme_support/sitecustomize.py``).

Not run here, each for its reason: the install lines (CI runs the test one, ``.ci/run``), the
developer lines of "Development" that are not fvdesk commands (ruff, benchmarks, the training
script, PyInstaller) and ``python tools/screenshot.py`` (it needs a real X server; the
GUI tests cover the scenes it draws).  Spans in ``DESCRIPTIVE`` name a command without being one
(a list of subcommands, a flag mentioned in a sentence); each is listed as it is written.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUPPORT = Path(__file__).resolve().parent / "readme_support"

LAYER = "/features/block4/relu/Relu"  # the demo model's deepest map (96 channels)

#: Inline spans that mention a command without being one to run, exactly as written.
DESCRIPTIVE = {
    "fvdesk layers | info | render | atlas": "a heading listing the headless subcommands",
    "fvdesk layers|info|render|atlas|examples ...": "the architecture's list of subcommands",
    "fvdesk render": "the render command named in a sentence (its forms are run elsewhere)",
    "fvdesk render --from": "the --from flag named in a sentence (GALLERY forms are run)",
}

#: Placeholder -> value; a callable gets the case's workspace.  Keys are whole tokens, or
#: ``(flag, token)`` when the value depends on the flag before it.
PLACEHOLDERS: dict[object, object] = {
    "MODEL": lambda ws: str(ws.model),
    "MODEL.onnx": lambda ws: str(ws.model),
    "L": LAYER,
    "0-63|all|3,7,9": "3,7,9",  # the listed form with the fewest units
    "U": "3",
    "NAME": LAYER,
    "TEXT": "relu",
    "PX": "32",
    "W": "0.01",
    "N": "2",
    "D": "cpu",
    "I/N": "0/2",
    "PRESET": "imagenet",
    "FILE": lambda ws: str(ws.labels),
    "X,Y": "1,1",
    "G": lambda ws: ws.fresh("gallery"),
    "ATLAS": lambda ws: ws.fresh("atlas"),
    ("--out", "DIR"): lambda ws: ws.fresh("out"),
    ("--images", "DIR"): lambda ws: str(ws.images),
    ("--merge", "DIR"): lambda ws: ws.sharded_atlas(),
    ("--out", "/shared/DIR"): lambda ws: ws.fresh("shared"),
    ("--merge", "/shared/DIR"): lambda ws: ws.sharded_atlas(),
    ("--from", "GALLERY"): lambda ws: ws.gallery(),
    ("--from", "GALLERY/gallery.json"): lambda ws: ws.gallery() + "/gallery.json",
    ("--item", "N"): "0",
    "IMAGE": lambda ws: ws.image(),
    "K": "2",
    "CLASS": "top",
    ("--to-layer", "L2"): "/features/block3/relu/Relu",
    ("--from", "ATLAS_DIR"): lambda ws: ws.activation_atlas(),
}
#: Flags whose value the test cuts down, and to what.
CUT = {"--steps": "2", "--size": "32", "--units-per-layer": "2"}
#: Commands that render get the cut flags added when they do not give them.
RENDERING = {"render", "atlas", "image", "activation-atlas"}
CAPS = re.compile(r"^[A-Z][A-Z0-9_]*(?:[./,][A-Z0-9_]+)*$|^/shared/DIR$")


@dataclass(frozen=True)
class Command:
    source: str  # "README.md:42"
    text: str  # the command as the document writes it (continuations joined, comment cut)
    env: tuple[tuple[str, str], ...] = ()
    gui: bool = False

    @property
    def id(self) -> str:
        return f"{self.source} {self.text}"[:120]


def _fenced_lines(text: str) -> list[tuple[int, str]]:
    out, inside, buf, start = [], False, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        if buf:
            buf += " " + line.strip()
        else:
            buf, start = line.strip(), n
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        out.append((start, buf))
        buf = ""
    return out


def _cut_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if ch in "\"'" and quote in (None, ch):
            quote = None if quote == ch else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line.strip()


def _from_block_line(source: str, line: str) -> Command | None:
    line = _cut_comment(line)
    if "&&" in line:  # the install line: its last step is the command shown
        line = line.split("&&")[-1].strip()
    if line.startswith(".venv/bin/fvdesk"):
        return Command(source, "fvdesk" + line[len(".venv/bin/fvdesk") :], gui=True)
    m = re.match(r"torchrun\s.*?-m fvdesk (.*)$", line)
    if m:
        env = (("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"))
        return Command(source, "fvdesk " + m.group(1), env)
    m = re.match(r'sbatch\s.*--wrap "(fvdesk [^"]*)"', line)
    if m:
        env = (("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "8"))
        return Command(source, m.group(1), env)
    if re.match(r"fvdesk(\s|$)", line):
        return Command(source, line)
    return None


def documented_commands() -> list[Command]:
    found: list[Command] = []
    for doc in DOCUMENTS:
        text = doc.read_text(encoding="utf-8")
        rel = doc.relative_to(ROOT)
        for n, line in _fenced_lines(text):
            cmd = _from_block_line(f"{rel}:{n}", line)
            if cmd is not None:
                found.append(cmd)
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for m in re.finditer(r"`((?:\.venv/bin/)?fvdesk (?!/)[^`]*)`", prose):
            span = " ".join(m.group(1).split())
            if span in DESCRIPTIVE:
                continue
            n = text[: text.find(m.group(0))].count("\n") + 1
            cmd = _from_block_line(f"{rel}:{n}", span)
            if cmd is not None:
                found.append(cmd)
    seen, unique = set(), []
    for c in found:  # the same command shown twice runs once
        if (c.text, c.env, c.gui) not in seen:
            seen.add((c.text, c.env, c.gui))
            unique.append(c)
    return unique


def _variants(text: str) -> list[str]:
    """Optional groups opened; one variant per side of a standalone ``|``."""
    while "[" in text:
        text = re.sub(r"\[([^\[\]]*)\]", r"\1", text)
    tokens = shlex.split(text)
    if "|" not in tokens:
        return [text]
    k = tokens.index("|")
    left = tokens[:k] + tokens[k + 2 :]
    right = tokens[: k - 1] + tokens[k + 1 :]
    return [shlex.join(t) for t in (left, right) for t in [t]]


@dataclass
class Workspace:
    root: Path
    model: Path
    images: Path
    labels: Path
    made: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return str(self.root / f"{stem}{self.count}")

    def run(self, argv: list[str]) -> None:
        from fvdesk.cli import main

        assert main(argv) == 0, argv

    def gallery(self) -> str:
        if "gallery" not in self.made:
            out = self.fresh("from")
            self.run(["render", str(self.model), "--layer", LAYER, "--units", "0,1", "--out", out,
                      "--steps", "2", "--size", "32", "--quiet"])  # fmt: skip
            self.made["gallery"] = out
        return self.made["gallery"]

    def image(self) -> str:
        """A pattern image to inspect (the first of the generated folder)."""
        return str(sorted(self.images.rglob("*.png"))[0])

    def sharded_atlas(self) -> str:
        if "atlas" not in self.made:
            out = self.fresh("sharded")
            for shard in ("0/2", "1/2"):
                self.run(["atlas", str(self.model), "--out", out, "--layers", LAYER,
                          "--units-per-layer", "3", "--steps", "2", "--size", "32",
                          "--shard", shard, "--quiet"])  # fmt: skip
            self.made["atlas"] = out
        return self.made["atlas"]

    def examples_shards(self, argv: list[str]) -> None:
        """``examples --merge`` summarizes what shards computed: run them into this cache."""
        base = [a for a in argv if a != "--merge"]
        if "--out" in base:
            k = base.index("--out")
            del base[k : k + 2]
        for shard in ("0/2", "1/2"):
            self.run([*base, "--shard", shard, "--quiet"])

    def activation_atlas(self) -> str:
        if "actatlas" not in self.made:
            out = self.fresh("actatlas")
            self.run(["activation-atlas", str(self.model), "--images", str(self.images), "--layer",
                      LAYER, "--out", out, "--grid", "2", "--per-image", "2", "--steps", "2",
                      "--size", "32", "--quiet"])  # fmt: skip
            self.made["actatlas"] = out
        return self.made["actatlas"]


def _substitute(text: str, ws: Workspace) -> list[str]:
    text = re.sub(r"\bL:(?=\d)", f"{LAYER}:", text)  # layer names inside objective expressions
    tokens = [t for t in shlex.split(text) if t not in ("…", "...")]
    out: list[str] = []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        value = PLACEHOLDERS.get((prev, tok), PLACEHOLDERS.get(tok))
        if value is None and "|" in tok and not tok.startswith(("{", "'")):
            first = tok.split("|")[0]
            value = PLACEHOLDERS.get((prev, first), PLACEHOLDERS.get(first, first))
        if value is None and CAPS.match(tok):
            raise AssertionError(f"no value for the placeholder {tok!r} in {text!r}")
        value = tok if value is None else value
        out.append(value(ws) if callable(value) else str(value))
    assert out[0] == "fvdesk", text
    argv = out[1:]
    for flag, cut in CUT.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = cut
    if argv and argv[0] in RENDERING and "--from" not in argv and "--merge" not in argv:
        for flag in ("--steps", "--size") + (("--units-per-layer",) if argv[0] == "atlas" else ()):
            if flag not in argv:
                argv += [flag, CUT[flag]]
    return argv


COMMANDS = documented_commands()


def test_the_documents_show_the_commands_this_test_expects() -> None:
    """The extraction itself: the command families the README teaches are all found."""
    texts = [c.text for c in COMMANDS]
    for needle in ("fvdesk layers", "fvdesk info", "fvdesk render", "fvdesk atlas",
                   "fvdesk examples", "fvdesk image", "--from", "--merge", "--cluster-facets", "--self-test"):  # fmt: skip
        assert any(needle in t for t in texts), needle
    assert any(c.gui for c in COMMANDS) and any(c.env for c in COMMANDS)
    assert len(COMMANDS) >= 20


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, demo_model_path: Path) -> Workspace:
    from tests.images import pattern_folder

    root = tmp_path_factory.mktemp("readme")
    model = root / "model" / "demo.onnx"
    model.parent.mkdir()
    shutil.copy(demo_model_path, model)
    labels = root / "labels.txt"
    shutil.copy(demo_model_path.with_name("demo.labels.txt"), labels)
    images = pattern_folder(root / "images", per_class=3, size=48)
    return Workspace(root, model, images, labels)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_runs(command: Command, workspace: Workspace, examples_cache,
                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # fmt: skip
    for key, value in command.env:
        monkeypatch.setenv(key, value)
    for variant in _variants(command.text):
        argv = _substitute(variant, workspace)
        if command.gui or not argv or not (argv[0].startswith("-") or argv[0] in SUBCOMMANDS):
            _run_app(argv, dict(command.env))
            continue
        from fvdesk.cli import main

        if argv[0] == "examples" and "--merge" in argv:
            workspace.examples_shards(argv)
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, f"{variant!r} exited {code}: {out.err.strip()[-600:]}"
        assert "internal error" not in out.err + out.out, out.err


SUBCOMMANDS = {"layers", "info", "render", "atlas", "examples", "image", "activation-atlas"}


def _run_app(argv: list[str], extra_env: dict[str, str]) -> None:
    """Start the app as the console script does; the support hook closes it once loaded."""
    env = dict(os.environ, **extra_env)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["FVDESK_TEST_CLOSE_WHEN_LOADED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), str(ROOT), env.get("PYTHONPATH", "")])
    script = Path(sys.executable).with_name("fvdesk")
    cmd = [str(script), *argv] if script.is_file() else [sys.executable, "-m", "fvdesk", *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, f"{argv}: {out.returncode}\n{out.stderr[-1500:]}"
    assert "fvdesk-test: loaded" in out.stdout, out.stdout + out.stderr[-1500:]
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
