"""``converge events schema|asyncapi`` cover every registered event type; log formats."""

from __future__ import annotations

import logging

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from converge.cli import app
from events.codec import default_registry

runner = CliRunner()

REGISTERED = set(default_registry.types())


def test_schema_lists_every_registered_type_with_its_version() -> None:
    result = runner.invoke(app, ["events", "schema"])
    assert result.exit_code == 0, result.output
    entries = orjson.loads(result.stdout)
    assert {e["type"] for e in entries} == REGISTERED
    for entry in entries:
        cls = default_registry.get(entry["type"])
        assert cls is not None and entry["version"] == cls.version
        schema = entry["schema"]
        assert schema["type"] == "object" and "id" in schema["properties"]
        assert schema["x-converge-type"] == entry["type"]
        assert set(cls.model_fields) | {"type", "version"} == set(schema["properties"])
        assert schema["properties"]["type"]["const"] == cls.type  # a body names its type


def test_schema_of_one_type() -> None:
    result = runner.invoke(app, ["events", "schema", "--type", "task.claimed"])
    assert result.exit_code == 0, result.output
    [entry] = orjson.loads(result.stdout)
    assert "agent_id" in entry["schema"]["properties"]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_asyncapi_document_has_the_3_0_fields_and_every_type(fmt: str) -> None:
    result = runner.invoke(app, ["events", "asyncapi", "--format", fmt, "--namespace", "shop"])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout) if fmt == "yaml" else orjson.loads(result.stdout)
    assert doc["asyncapi"] == "3.0.0"
    for key in ("info", "channels", "operations", "components"):
        assert doc[key], key
    assert doc["info"]["title"] and doc["info"]["version"]
    messages = doc["components"]["messages"]
    assert {m["name"] for m in messages.values()} == REGISTERED
    in_channels = {
        ref["$ref"].rsplit("/", 1)[1]
        for channel in doc["channels"].values()
        for ref in channel["messages"].values()
    }
    assert in_channels == set(messages)
    assert doc["channels"]["tasks"]["address"] == "shop.tasks.{id}"
    assert doc["channels"]["tasks"]["title"] == "SHOP_TASKS"
    for op in doc["operations"].values():
        assert op["action"] in ("send", "receive")
        assert op["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]
    for message in messages.values():
        ref = message["payload"]["$ref"].removeprefix("#/components/schemas/")
        assert ref in doc["components"]["schemas"]


def test_log_format_json_writes_json_records(capsys: pytest.CaptureFixture[str]) -> None:
    from converge._cli.common import set_log_format, setup

    try:
        set_log_format("json")
        setup(None, log_level="INFO")
        logging.getLogger("converge.test").info("hello %s", "there")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = orjson.loads(line)
        assert record["message"] == "hello there"
        set_log_format(None)
        setup(None, log_level="INFO", log_format="text")
        logging.getLogger("converge.test").info("plain")
        assert not capsys.readouterr().err.strip().startswith("{")
    finally:
        set_log_format(None)
        setup(None)


def test_log_format_from_the_environment() -> None:
    from converge.config import load_config

    assert load_config(None, env={"CONVERGE_LOG_FORMAT": "JSON"}).log_format == "json"
