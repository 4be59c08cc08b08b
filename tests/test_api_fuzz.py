"""The OpenAPI document checked by property-based fuzzing (schemathesis) of every operation
against the real server process (``qip serve``, one for the module): no answer is a 5xx, every
answer matches the document (status, content type, schema, headers), and a request that is
refused (any 4xx) changes no table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from conftest import contents
from hypothesis import HealthCheck, Phase, given, settings
from notify_servers import approve_and_start, load_examples, make_runtime
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from web_servers import running

from qip_flow.services import tokens
from qip_flow.store.db import Database

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = int(os.environ.get("QIP_FUZZ_EXAMPLES", "12"))
SECRET = "s" * 48


@dataclass
class Api:
    url: str
    db_file: Path
    headers: dict[str, str]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder = tmp_path_factory.mktemp("api-fuzz")
    db_file = folder / "qip.db"
    db = Database(f"sqlite:///{db_file}")
    db.init(simulation=True)
    os.environ["QIP_SECRET_KEY"] = SECRET  # for the tokens made here; the server gets it below
    try:
        rt = make_runtime(db, None)
        load_examples(rt)
        approve_and_start(rt)
        made, _ = tokens.create(rt, name="fuzz", scopes=sorted(tokens.SCOPES), plans=["all"],
                                by="cevans")
    finally:
        del os.environ["QIP_SECRET_KEY"]
    db.dispose()
    with running(db_file, env={"QIP_SECRET_KEY": SECRET, "QIP_API_RATE": "1000000",
                               "QIP_API_MAX_BODY": "1",
                               "QIP_EVIDENCE_DIR": str(folder / "evidence")}) as (url, _, _):
        yield Api(url, db_file, {"Authorization": f"Bearer {made}"})


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


def _changed(before: dict[str, list[tuple[object, ...]]],
             after: dict[str, list[tuple[object, ...]]]) -> list[str]:
    """The tables that differ (a token's last use, noted once a minute, aside)."""
    return [name for name in after if name != "apitoken" and before.get(name) != after[name]]


def test_every_operation_answers_by_its_document_and_a_refusal_changes_nothing(
        api: Api, subtests: pytest.Subtests) -> None:
    """Each operation in turn, with inputs that fit its document and inputs that do not."""
    document = schemathesis.openapi.from_url(f"{api.url}/api/v1/openapi.json")
    operations = [result.ok() for result in document.get_all_operations()]
    assert len(operations) >= 16
    for operation in operations:
        with subtests.test(operation=operation.label):
            strategy = (operation.as_strategy(GenerationMode.POSITIVE)
                        | operation.as_strategy(GenerationMode.NEGATIVE))

            @given(case=strategy)
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def answers_by_the_document(case: schemathesis.Case) -> None:
                before = contents(api.db_file)
                response = case.call_and_validate(base_url=f"{api.url}/api/v1",
                                                  headers=api.headers, checks=CHECKS, timeout=60)
                if 400 <= response.status_code < 500:
                    assert _changed(before, contents(api.db_file)) == [], (
                        f"{case.method} {case.formatted_path} was refused "
                        f"({response.status_code}) but changed the database: "
                        f"{response.text[:500]}")

            answers_by_the_document()
