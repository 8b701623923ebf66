"""python -m runtime answer: it warns on stderr when the answer repeats the question or is none of the options
the question lists; it says which decoder graph ran; text and JSON give the timings in milliseconds."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import runtime
from runtime import __main__ as cli
from runtime.answer import Answer, Timings
from runtime.decoders import DecoderChoice

QUESTION = "Where is the yellow ball in relation to the blue box?"


@pytest.mark.parametrize("answer, echoed", [
    ("Where is the yellow ball in relation to the blue box?", True),
    ("where is the yellow ball in relation", True),            # cut short by max_new_tokens, other case
    ("The question: Where is the yellow ball in", True),
    ("Under", False),
    ("The yellow ball is under the blue box.", False),         # shares words, not a run of five
    ("", False),
])
def test_echoes_question(answer, echoed):
    assert cli.echoes_question(QUESTION, answer) is echoed


def test_a_short_question_echoes_when_repeated_whole():
    assert cli.echoes_question("Where?", "Where") and not cli.echoes_question("Where?", "Left")


class _FakeVLM:
    default_steering = runtime.AdaptVis(0.5, 1.5, 0.4)

    def __init__(self, text):
        self.text = text
        self.sessions = SimpleNamespace(decoder_choice=DecoderChoice("fused", "decoder_fused_fp32.onnx", "fp32"))

    def answer(self, image, question, **kw):
        return Answer(text=self.text, token_ids=[1, 2], confidence=0.9, alpha=1.5, steering="adaptvis",
                      timings=Timings(vision=0.0125, prefill=0.25, decode=0.5))


@pytest.mark.parametrize("text, warned", [(QUESTION, True), ("Under", False)])
def test_answer_command_warns_on_an_echo(monkeypatch, capsys, text, warned):
    monkeypatch.setattr(runtime, "load", lambda *a, **kw: _FakeVLM(text))
    assert cli.main(["answer", "--bundle", "b", "--image", "x.png", QUESTION, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["text"] == text                     # stdout stays the answer alone
    assert ("repeats the question" in err) is warned


FORM = "Where is the yellow ball in relation to the blue box? Answer with left, right, on or under."


@pytest.mark.parametrize("question, options", [
    (FORM, ("left", "right", "on", "under")),
    ("Is the red ball on the blue box? Answer yes or no.", ("yes", "no")),
    ("Where is the mug? answer with left, right, on, or under", ("left", "right", "on", "under")),
    ("Is the cup left of the plate?", ()),
    ("Answer the question in a detailed way.", ()),
])
def test_listed_options(question, options):
    assert cli.listed_options(question) == options


@pytest.mark.parametrize("answer, warned", [("Under", False), (" left.", False), ("Premise", True),
                                            ("Under the box", True)])
def test_an_answer_none_of_the_listed_options_is_warned_of(answer, warned):
    warning = cli.answer_warning(FORM, answer)
    assert (warning is not None) is warned
    assert warning is None or f"{answer!r} is none of the options the question lists (left, right, on, under)" in warning


@pytest.mark.parametrize("text, warned", [("Premise", True), ("Left", False)])
def test_answer_command_warns_on_an_answer_off_the_list(monkeypatch, capsys, text, warned):
    monkeypatch.setattr(runtime, "load", lambda *a, **kw: _FakeVLM(text))
    assert cli.main(["answer", "--bundle", "b", "--image", "x.png", FORM]) == 0
    out, err = capsys.readouterr()
    assert ("none of the options the question lists" in err) is warned and "repeats the question" not in err


def test_text_and_json_give_milliseconds_and_the_decoder_that_ran(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "load", lambda *a, **kw: _FakeVLM("Under"))
    assert cli.main(["answer", "--bundle", "b", "--image", "x.png", FORM]) == 0
    text = capsys.readouterr().out
    assert "vision 12.5 | prefill 250.0" in text and "total 762.5" in text
    assert "decoder:    decoder_fused_fp32.onnx (fused, fp32)" in text
    assert cli.main(["answer", "--bundle", "b", "--image", "x.png", FORM, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "timings" not in data
    assert data["timings_ms"]["vision"] == pytest.approx(12.5) and data["timings_ms"]["total"] == pytest.approx(762.5)
    assert data["decoder"] == {"file": "decoder_fused_fp32.onnx", "flavour": "fused", "dtype": "fp32"}
