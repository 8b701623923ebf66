"""The ONNX parser's operator support per TensorRT target, as data: what ``graphs check --target`` reads.

    graphs/tensorrt_ops/trt-10.1-GA.operators.md    onnx-tensorrt docs/operators.md, raw (see SOURCES)
    graphs/tensorrt_ops/trt-10.15-GA.operators.md   the same file at the 10.15 GA release, raw
    graphs/tensorrt_ops/targets.json                 parsed per target, written by
                                                     ``python -m graphs.tensorrt_tables`` (a test
                                                     checks it matches the raw tables)

A target is one TensorRT release: a raw table, minus the operators the parser gained after
that release (the onnx-tensorrt changelog names them), with the restrictions it lifted after
the table's release dropped.  ``DEFAULT_TARGET`` is jetpack6: TensorRT 10.3 is the oldest
parser of the three, so a bundle that passes it passes the others.

Restrictions of the form "`axes` must be an initializer / a constant tensor / a build-time
constant / resolvable to a constant" become ``constant_inputs`` {op: [input names]}; other
restrictions are kept as text (shown with a problem, not checked).  Supported types are not
checked: the exporter's dtypes (fp32, fp16, int64, bool) are in every table.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TABLES = Path(__file__).parent / "tensorrt_ops"
TARGETS_FILE = TABLES / "targets.json"
DEFAULT_TARGET = "jetpack6"

_REPO = "https://github.com/onnx/onnx-tensorrt"
SOURCES = {
    "trt-10.1-GA.operators.md": {
        "repository": _REPO, "path": "docs/operators.md", "ref": "tag release/10.1-GA",
        "commit": "96e781103cfc4adf4a6bb557e94bac8e693f6f4c", "commit_date": "2024-06-17",
        "url": f"{_REPO}/blob/96e781103cfc4adf4a6bb557e94bac8e693f6f4c/docs/operators.md",
        "obtained": "git show release/10.1-GA:docs/operators.md from a mirror of onnx/onnx-tensorrt, 2026-11-24",
    },
    "trt-10.15-GA.operators.md": {
        "repository": _REPO, "path": "docs/operators.md", "ref": "10.15 GA release (changelog: 2026-02-02)",
        "commit": None, "commit_date": "2026-02-02",
        "url": f"{_REPO}/blob/main/docs/operators.md",
        "obtained": "a stored copy of onnx/onnx-tensorrt docs/operators.md whose header reads 'TensorRT 10.15'; "
                    "the store does not give its commit, 2026-11-24",
    },
}


@dataclass(frozen=True)
class TargetSpec:
    tensorrt: str
    table: str
    opset_max: int
    parser_added_after: tuple[str, ...] = ()            # in the table, but not yet in this release
    lifted: tuple[tuple[str, str], ...] = ()            # (op, input) constant-input restrictions lifted by this release
    note: str = ""


TARGETS = {
    "jetpack6": TargetSpec(
        "10.3", "trt-10.1-GA.operators.md", 20, lifted=(("Slice", "axes"),),
        note="JetPack 6.1/6.2 (Jetson Orin). onnx-tensorrt has no release/10.3 tag in the mirror that could be "
             "had here; its changelog (docs/Changelog.md) lists no operator added or removed in 10.2 and 10.3, "
             "only 'Added support for tensor axes inputs for Slice nodes' (10.3): the 10.1 GA table with that "
             "restriction lifted. Opset 9..20 as the 10.1 table states."),
    "jetpack7": TargetSpec(
        "10.13", "trt-10.15-GA.operators.md", 20,
        parser_added_after=("Attention", "RotaryEmbedding", "RMSNormalization", "TensorScatter"),
        note="JetPack 7.x (Thor; Orin from 7.2) ships TensorRT 10.13 or later: the 10.15 GA table without "
             "what the changelog says 10.14 (Attention) and 10.15 (RotaryEmbedding, RMSNormalization, "
             "TensorScatter) added. No 10.13 table header was obtained: the opset bound stays at 20, the "
             "highest confirmed for every 10.x (10.15's table reads 24)."),
    "desktop": TargetSpec(
        "10.15", "trt-10.15-GA.operators.md", 24,
        note="The newest 10.x table that could be had here (10.15 GA)."),
}

_ROW = re.compile(r"^\|\s*([A-Za-z0-9]+)\s*\|\s*([YN])[^|]*(?:\|([^|]*))?(?:\|(.*))?$")
_OPSET = re.compile(r"inclusive range of opset (\d+) to opset (\d+)")
_CONSTANT = re.compile(r"`(\w+)`\s*(?:input\s+)?must be (?:an initializer|a constant tensor|a build-time constant"
                       r"|resolvable to a constant)")


def parse_table(text: str) -> dict:
    """operators.md -> {"opset": [lo, hi], "supported": {op: {"types", "restrictions"}}, "unsupported": [...]}."""
    m = _OPSET.search(text)
    supported, unsupported = {}, []
    for line in text.splitlines():
        row = _ROW.match(line.strip())
        if not row or row.group(1) == "Operator":
            continue
        op, yes, types, restrictions = row.groups()
        if yes == "N":
            unsupported.append(op)
            continue
        supported[op] = {"types": [t.strip() for t in (types or "").split(",") if t.strip()],
                         "restrictions": (restrictions or "").strip().rstrip("|").strip()}
    return {"opset": [int(m.group(1)), int(m.group(2))] if m else None,
            "supported": supported, "unsupported": sorted(unsupported)}


def build_targets() -> dict:
    """Every target's parsed table, from the raw files: what ``targets.json`` holds."""
    out = {}
    for name, spec in TARGETS.items():
        table = parse_table((TABLES / spec.table).read_text())
        ops = {op: row for op, row in table["supported"].items() if op not in spec.parser_added_after}
        constant_inputs = {}
        for op, row in sorted(ops.items()):
            names = sorted(set(_CONSTANT.findall(row["restrictions"])) - {i for o, i in spec.lifted if o == op})
            if names:
                constant_inputs[op] = names
        out[name] = {
            "tensorrt": spec.tensorrt, "table": spec.table, "source": SOURCES[spec.table],
            "table_opset": table["opset"], "opset_max": spec.opset_max, "note": spec.note,
            "parser_added_after": list(spec.parser_added_after), "lifted": [list(x) for x in spec.lifted],
            "supported": dict(sorted(ops.items())), "constant_inputs": constant_inputs,
            "unsupported": sorted(set(table["unsupported"]) | set(spec.parser_added_after)),
        }
    return out


@dataclass(frozen=True)
class Target:
    name: str
    tensorrt: str
    opset_max: int
    supported: dict            # op -> {"types", "restrictions"}
    constant_inputs: dict      # op -> input names that must be constant


def load_target(name: str = DEFAULT_TARGET) -> Target:
    data = json.loads(TARGETS_FILE.read_text())
    if name not in data:
        raise ValueError(f"unknown TensorRT target {name!r}; known: {', '.join(data)}")
    t = data[name]
    return Target(name, t["tensorrt"], t["opset_max"], t["supported"], t["constant_inputs"])


def write_targets() -> Path:
    TARGETS_FILE.write_text(json.dumps(build_targets(), indent=1, sort_keys=True) + "\n")
    return TARGETS_FILE


if __name__ == "__main__":
    print(write_targets(), file=sys.stderr)
