"""`just loadtest` with small numbers: a real server process on the tiny bundle, 3 clients for 3 s within
its capacity, then 16 clients for 3 s against a capacity of 3 (1 at once + 2 queued)."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from bench.loadtest import LoadTest, parse, run


def test_loadtest_small(bundle_dir, tmp_path):
    test = LoadTest(bundle=bundle_dir("tiny"), clients=3, seconds=3, overload_clients=16, overload_seconds=3,
                    max_concurrent=1, max_queue=2, max_tokens=8)
    out, log = tmp_path / "results" / "loadtest.json", io.StringIO()
    result = run(test, Console(file=log, width=150), out)
    assert result["passed"], log.getvalue()

    saved = json.loads(out.read_text())
    assert set(saved["verdicts"]) == {"phase1_no_failures", "phase1_answers_equal", "phase1_memory_flat",
                                      "phase2_refuses", "phase2_retry_after", "phase2_no_other_errors",
                                      "phase2_answers_equal", "healthy_after"}
    assert all(v["ok"] for v in saved["verdicts"].values())
    assert len(saved["requests"]) == 48                        # 8 scenes x 2 questions x 3 steerings

    one = saved["phase1"]
    assert one["requests"] > 0 and one["failed"] == 0 and one["mismatched"] == 0
    assert one["status_counts"] == {"200": one["requests"]}
    assert 0 < one["latency_ok_s"]["p50"] <= one["latency_ok_s"]["p95"] <= one["latency_ok_s"]["max"]
    assert one["throughput_ok_per_s"] > 0
    rss = one["rss"]
    assert len(rss["samples"]) >= 3 and 0 < rss["start_bytes"] <= rss["max_bytes"]
    assert rss["second_half_growth"] <= 0.10

    two = saved["phase2"]
    assert two["refused_503"] >= 1 and two["other"] == 0 and two["refused_without_retry_after"] == 0
    assert two["ok"] > 0 and two["mismatched"] == 0
    assert saved["after"]["drained"] and saved["after"]["equal"] == saved["after"]["checked"] == 3
    assert saved["server_log_errors"] == []
    assert "all verdicts hold" in log.getvalue()


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "unrecognized arguments"),                      # 127.0.0.1 only
    (["--clients", "40"], "must be at most"),                               # phase 1 above the queue bound
    (["--overload-clients", "30"], "must exceed"),                          # phase 2 that cannot overload
    (["--max-tokens", "0"], "--max-tokens"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
