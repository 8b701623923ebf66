"""demo on the random tiny model: it ends with the bundle and the next commands, and a rerun reuses it."""
from __future__ import annotations

import shlex

from demo import scene_demo as demo


def test_demo_ends_with_the_next_commands_and_reuses_its_bundle(tmp_path, capsys):
    bundle = tmp_path / "bundles" / "tiny"
    argv = ["--size", "tiny", "--checkpoint", str(tmp_path / "ckpt"), "--bundle", str(bundle),
            "--workdir", str(tmp_path / "work")]
    assert demo.main(argv) == 0
    first = capsys.readouterr().out
    assert f"exported the bundle to {bundle}" in first and "reusing" not in first
    note = first.index("(the AdaptVis answer reused the plain one's image features")
    assert first.index("-- plain") < first.index("-- AdaptVis") < note < first.index("-- blind test")
    tail = first.rstrip().splitlines()[-5:]
    assert tail[0] == f"The bundle: {bundle}. Next:"
    commands = [shlex.split(line) for line in tail[1:]]
    assert [c[:2] for c in commands] == [["just", "answer"], ["just", "explain"], ["just", "quantize"],
                                         ["just", "serve"]]
    answer = commands[0]
    assert answer[answer.index("--bundle") + 1] == str(bundle) and all(c[2] == str(bundle) for c in commands[1:])
    image, question = answer[answer.index("--image") + 1], answer[-1]
    assert (tmp_path / "work" / "scenes").as_posix() in image and question.endswith("Answer with left, right, on or under.")
    assert commands[1][3:] == [image, question]              # explain: the same scene and question

    assert demo.main(argv) == 0
    second = capsys.readouterr().out
    assert f"reusing the bundle in {bundle}" in second and "exported the bundle" not in second
    assert second.rstrip().splitlines()[-5:] == tail


def test_the_spatial_demo_says_which_question_form_it_reads():
    assert demo.QUESTION.format(a="<A>", b="<B>") == ("Where is the <A> in relation to the <B>? "
                                                      "Answer with left, right, on or under.")
