"""python -m quantize: writes the bundle and prints its folder; bad input is one line on stderr and exit 2."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from quantize.__main__ import main


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    return main(argv, out=out, err=err), out.getvalue(), err.getvalue()


def test_cli_writes_a_bundle_with_a_report(bundle_dir, tmp_path):
    code, out, err = _run([str(bundle_dir("tiny-mha")), "--to", "int8", "--block-size", "64", "--symmetric",
                           "--out", str(tmp_path / "q"), "--report", "--report-items", "8"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str((tmp_path / "q").resolve()) and "max |dlogits|" in lines[1] and "quantization.md" in lines[1]
    assert "[quantize] decoder: 14 of 15 weight MatMuls -> MatMulNBits" in err
    q = json.loads((tmp_path / "q" / "manifest.json").read_text())["quantization"]
    assert (q["precision"], q["block_size"], q["symmetric"]) == ("int8", 64, True) and q["accuracy"]


@pytest.mark.parametrize("argv,match", [
    (["--to", "int4", "--block-size", "16"], "argument --block-size: invalid choice: 16"),
    (["--to", "int2"], "argument --to: invalid choice"),
    ([], "the following arguments are required: --to"),
    (["--to", "int4", "--embed"], "--embed works with --to fp16 only"),
    (["--to", "int8-dynamic", "--block-size", "64"], "--block-size and --accuracy-level are MatMulNBits settings"),
])
def test_cli_usage_errors_are_one_line(bundle_dir, tmp_path, capsys, argv, match):
    try:
        code, _, err = _run([str(bundle_dir("tiny")), *argv, "--out", str(tmp_path / "q")])
    except SystemExit as e:          # argparse's own checks
        code, err = e.code, capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and match in err
    assert not (tmp_path / "q").exists()


def test_cli_refuses_a_quantized_source_in_one_line(bundle_dir, tmp_path):
    assert _run([str(bundle_dir("tiny")), "--to", "fp16", "--out", str(tmp_path / "a"), "--quiet"])[0] == 0
    code, out, err = _run([str(tmp_path / "a"), "--to", "int4", "--out", str(tmp_path / "b")])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("python -m quantize: error: ") and "already quantized" in err
    assert not (tmp_path / "b").exists()


def test_python_dash_m_quantize_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "quantize", str(tmp_path / "nothing"), "--to", "fp16"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_help_states_the_int8_default_and_its_trade_off():
    from quantize.__main__ import parser

    text = " ".join(parser().format_help().split())
    assert "int8 default 4" in text and "slower than the fp32 bundle" in text and "docs/quantize-speed.md" in text
