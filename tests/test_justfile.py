"""The justfile's recipes pass arguments through with their quoting (a question is one argument)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from tests.conftest import random_image

ROOT = Path(__file__).resolve().parents[1]


def _just() -> str:
    found = shutil.which("just") or shutil.which("just", path=str(Path(sys.executable).parent))
    assert found, "`just` (rust-just, a dev dependency) is not installed"
    return found


def test_answer_recipe_keeps_a_multi_word_question_whole(bundle_dir, tmp_path):
    image = tmp_path / "a scene.png"            # a space in the path too
    Image.fromarray(random_image(0)).save(image)
    question = "Where is the mug in relation to the plate?"
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run([_just(), "--justfile", str(ROOT / "justfile"), "--working-directory", str(ROOT),
                          "answer", "--bundle", str(bundle_dir("tiny")), "--image", str(image), question,
                          "--json", "--max-new-tokens", "3", "--steering", "none"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["steering"] == "none" and len(data["token_ids"]) == 3
    import runtime
    direct = runtime.load(bundle_dir("tiny")).answer(str(image), question, steering=None, max_new_tokens=3)
    assert data["token_ids"] == direct.token_ids          # the same question reached the model


def test_list_shows_one_line_for_setup_and_the_readme_names_what_it_installs():
    out = subprocess.run([_just(), "--justfile", str(ROOT / "justfile"), "--list"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    setup = next(line for line in out.stdout.splitlines() if line.split()[:1] == ["setup"])
    assert "# Create .venv" in setup, setup                     # the recipe's doc, not a continuation line
    recipe = (ROOT / "justfile").read_text()
    extras = recipe.split('-e ".[', 1)[1].split("]", 1)[0].split(",")
    readme = (ROOT / "README.md").read_text()
    claim = readme[readme.index("`just setup` makes `.venv`"):][:400]
    assert all(f"`{e}`" in claim for e in extras), (extras, claim)


def test_stopping_just_serve_by_its_pid_stops_the_server(tmp_path):
    """The recipe execs the server: the process `just` waits on is the server, and the signal reaches it."""
    pid_file = tmp_path / "server.pid"
    fake = tmp_path / "python"                 # stands in for the interpreter: it only stays up, as a server does
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    fake.chmod(0o755)
    just = subprocess.Popen([_just(), "--justfile", str(ROOT / "justfile"), "--working-directory", str(ROOT),
                             "serve", "bundles/none"], env={**os.environ, "PYTHON": str(fake)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            time.sleep(0.05)
        server = int(pid_file.read_text())
        just.terminate()
        just.wait(timeout=10)
        for _ in range(100):
            if not _alive(server):
                break
            time.sleep(0.05)
        assert not _alive(server), "the server outlived `just serve`"
    finally:
        if just.poll() is None:
            just.kill()
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:                      # a zombie has exited
        return f.read().split(")")[-1].split()[0] != "Z"
