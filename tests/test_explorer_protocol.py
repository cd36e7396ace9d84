"""The explorer's synced state is declared once per side and both agree: the Python traits of
``SimilarityExplorer`` tagged ``sync=True`` and ``ExplorerState`` in
``labextension/src/explorer/protocol.ts`` (the only place the TypeScript takes trait names
from) have the same names and the same coarse types (number, string, bool, list of ...,
dict, bytes). A trait added, renamed or retyped on one side only fails here.

protocol.ts is hand-written and parsed here rather than generated from the traits: its
types say more than the traits can (``Hit[]`` for ``List(Dict())``, documented fields), and
the check needs neither node nor a build step.
"""

from __future__ import annotations

import re
from pathlib import Path

import anywidget
import pytest
import traitlets

from jupyter_mlx_embed import SimilarityExplorer

PROTOCOL = Path(__file__).parents[1] / "labextension" / "src" / "explorer" / "protocol.ts"
STATE = "ExplorerState"


def python_kind(trait: traitlets.TraitType | None) -> str:
    """The coarse type of a traitlets trait: number, string, bool, bytes, dict, list[...]."""
    if trait is None:
        return "any"
    if isinstance(trait, traitlets.Bool):
        return "bool"
    if isinstance(trait, (traitlets.Int, traitlets.Float)):
        return "number"
    if isinstance(trait, traitlets.Unicode):
        return "string"
    if isinstance(trait, traitlets.Bytes):
        return "bytes"
    if isinstance(trait, traitlets.Dict):
        return "dict"
    if isinstance(trait, (traitlets.List, traitlets.Tuple)):
        return f"list[{python_kind(getattr(trait, '_trait', None))}]"
    if isinstance(trait, traitlets.Enum) and all(isinstance(v, str) for v in trait.values or ()):
        return "string"
    raise AssertionError(f"no coarse type for {type(trait).__name__}: add it to this test")


def python_state() -> dict[str, str]:
    """The explorer's own synced traits (not those every widget has) and their kinds."""
    inherited = anywidget.AnyWidget.class_traits(sync=True)
    return {
        name: python_kind(trait)
        for name, trait in SimilarityExplorer.class_traits(sync=True).items()
        if name not in inherited
    }


def strip_comments(source: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", source, flags=re.S))


def ts_kind(ts_type: str, interfaces: set[str]) -> str:
    """The coarse type of a TypeScript type as protocol.ts writes them."""
    ts_type = re.sub(r"^readonly\s+", "", ts_type.strip())
    array = re.fullmatch(r"(.+)\[\]|(?:Readonly)?Array<(.+)>", ts_type)
    if array:
        return f"list[{ts_kind(array.group(1) or array.group(2), interfaces)}]"
    alternatives = [part.strip() for part in ts_type.split("|")]
    if all(re.fullmatch(r"'[^']*'|\"[^\"]*\"", part) for part in alternatives):
        return "string"  # a union of string literals
    if ts_type in interfaces or ts_type.startswith("Record<"):
        return "dict"
    kinds = {
        "DataView": "bytes",
        "string": "string",
        "number": "number",
        "boolean": "bool",
        "unknown": "any",
        "any": "any",
    }
    if ts_type not in kinds:
        raise AssertionError(f"no coarse type for the TypeScript type {ts_type!r}")
    return kinds[ts_type]


def parse_state(source: str, name: str = STATE) -> dict[str, str]:
    """The fields of `interface <name> { ... }` in `source` and their coarse types."""
    source = strip_comments(source)
    interfaces = set(re.findall(r"\binterface\s+(\w+)", source))
    # Its body: no nested braces (inline object types), which this parser does not read.
    match = re.search(rf"\binterface\s+{name}\s*\{{([^{{}}]*)\}}", source)
    assert match, f"no `interface {name} {{ ... }}` without nested braces in protocol.ts"
    fields: dict[str, str] = {}
    for member in filter(None, (part.strip() for part in match.group(1).split(";"))):
        field = re.fullmatch(r"(?:readonly\s+)?(\w+)\s*:\s*(.+)", member, flags=re.S)
        assert field, f"cannot read the member {member!r} of {name}"
        assert field.group(1) not in fields, f"{field.group(1)} declared twice"
        fields[field.group(1)] = ts_kind(" ".join(field.group(2).split()), interfaces)
    return fields


def test_parser_reads_fields_types_and_comments() -> None:
    source = """
    export interface Item { index: number; }
    // The state.
    export interface ExplorerState {
      /** n x 2 float32; not `a: b;` */
      coords: DataView;
      level: 'info' | 'busy'; // a union of strings
      items: readonly Item[];
      fields: Record<string, string>;
      ok: boolean;
      names: Array<string>;
    }
    """
    assert parse_state(source) == {
        "coords": "bytes",
        "level": "string",
        "items": "list[dict]",
        "fields": "dict",
        "ok": "bool",
        "names": "list[string]",
    }


def test_parser_refuses_types_it_cannot_classify() -> None:
    with pytest.raises(AssertionError, match="Map<number, string>"):
        parse_state("interface ExplorerState {\n  rows: Map<number, string>;\n}")


def test_protocol_declares_every_synced_trait() -> None:
    declared = set(parse_state(PROTOCOL.read_text(encoding="utf-8")))
    synced = set(python_state())
    assert synced, "SimilarityExplorer has no synced traits of its own"
    assert not synced - declared, f"synced in Python, missing from protocol.ts: {synced - declared}"
    assert not declared - synced, f"in protocol.ts, not synced in Python: {declared - synced}"


def test_protocol_types_match_the_python_traits() -> None:
    declared = parse_state(PROTOCOL.read_text(encoding="utf-8"))
    synced = python_state()
    differ = {
        name: {"python": kind, "protocol.ts": declared[name]}
        for name, kind in synced.items()
        if name in declared and declared[name] != kind
    }
    assert not differ, f"types differ: {differ}"


def test_the_saved_map_mark_is_the_same_on_both_sides() -> None:
    # Python marks the explorer's outputs; the labextension shows their PNG by that mark.
    from jupyter_mlx_embed.explorer.widget import SNAPSHOT_MARK

    plugin = (PROTOCOL.parents[1] / "snapshot.ts").read_text()
    declared = re.search(r"export const SNAPSHOT_MARK = '([^']+)';", plugin)
    assert declared is not None and declared.group(1) == SNAPSHOT_MARK
