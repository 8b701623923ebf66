"""python -m runtime answer: it warns on stderr when the answer repeats the question."""
from __future__ import annotations

import json

import pytest

import runtime
from runtime import __main__ as cli
from runtime.answer import Answer

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

    def answer(self, image, question, **kw):
        return Answer(text=self.text, token_ids=[1, 2], confidence=0.9, alpha=1.5, steering="adaptvis")


@pytest.mark.parametrize("text, warned", [(QUESTION, True), ("Under", False)])
def test_answer_command_warns_on_an_echo(monkeypatch, capsys, text, warned):
    monkeypatch.setattr(runtime, "load", lambda *a, **kw: _FakeVLM(text))
    assert cli.main(["answer", "--bundle", "b", "--image", "x.png", QUESTION, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["text"] == text                     # stdout stays the answer alone
    assert ("repeats the question" in err) is warned
