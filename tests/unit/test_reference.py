"""The API reference in docs/: the generated files match their generator, the OpenAPI document passes an OpenAPI
validator, and every reference in the AsyncAPI document resolves to a schema that exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from openapi_spec_validator import validate

from callpulse.reference import ASYNCAPI_PATH, OPENAPI_PATH, render_all
from callpulse.settings import Settings
from monitor import openapi
from streams.eventtypes import EVENT_TYPES, TOPIC_TYPES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_generated_reference_files_match_the_generator() -> None:
    stale = [
        rel
        for rel, text in render_all(Settings()).items()
        if not (ROOT / rel).exists() or (ROOT / rel).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"{stale} differ from the code's declarations: run `make docs` and commit the result"


def test_no_stale_event_schema_is_left_in_docs() -> None:
    expected = {f"{t.name}.schema.json" for t in EVENT_TYPES}
    assert {p.name for p in (DOCS / "events").glob("*.schema.json")} == expected


def test_openapi_document_is_valid_openapi_3_1() -> None:
    document = openapi.document(Settings())
    assert document["openapi"] == "3.1.0"
    validate(document)
    validate(orjson.loads((ROOT / OPENAPI_PATH).read_bytes()))


def test_openapi_windows_follow_the_settings() -> None:
    document = openapi.document(Settings(windows_s=(300, 3600)))
    [window] = [p for p in document["paths"]["/api/snapshot"]["get"]["parameters"] if p["name"] == "window"]
    assert window["schema"] == {"enum": ["5m", "1h"], "default": "5m"}


def _resolve(ref: str, here: Path, root_doc: dict[str, Any]) -> Any:
    """Follow one $ref ('#/a/b', 'file.json', 'file.json#/a/b') relative to the file `here`."""
    target, _, pointer = ref.partition("#")
    doc: Any = root_doc
    if target:
        path = here.parent / target
        assert path.exists(), f"{ref}: no file {path}"
        doc = orjson.loads(path.read_bytes())
    for part in [p for p in pointer.split("/") if p]:
        assert isinstance(doc, dict) and part in doc, f"{ref}: no {part!r}"
        doc = doc[part]
    return doc


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_asyncapi_reference_resolves() -> None:
    path = ROOT / ASYNCAPI_PATH
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert document["asyncapi"].startswith("3.")
    refs = _refs(document)
    assert len(refs) > 20
    for ref in refs:
        assert _resolve(ref, path, document) is not None, ref


def test_asyncapi_names_every_topic_and_event_type() -> None:
    document = yaml.safe_load((ROOT / ASYNCAPI_PATH).read_text(encoding="utf-8"))
    channels = document["channels"]
    assert set(TOPIC_TYPES) | {"alerts", "deadletter", "feed"} == set(channels)
    for topic, types in TOPIC_TYPES.items():
        payloads = {
            document["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]["name"]
            for ref in channels[topic]["messages"].values()
        }
        assert payloads == set(types), topic
    assert channels["feed"]["address"] == "/ws"


def test_readme_links_the_reference_and_not_the_private_contract() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "shared/CONTRACT.md" not in readme
    for target in ("docs/api.md", "docs/openapi.json", "docs/asyncapi.yaml", "docs/events.md", "docs/wallboard.md"):
        assert f"]({target})" in readme, target
        assert (ROOT / target).exists(), target
