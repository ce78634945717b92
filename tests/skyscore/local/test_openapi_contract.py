"""The HTTP API matches its contract (issue 18.2): schemathesis generates requests from the
OpenAPI document the running local server serves (valid and invalid bodies, paths, headers) and
checks every response: no 5xx, status codes and content types the document declares, bodies
that validate against its schemas. Bounded in examples and time, so it runs in ``make test``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis

from openapi_contract import check_operations
from skyscore.adapters.local import LocalBlobStore
from skyscore.local.runtime import LocalRuntime
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_model: TrainResult) -> Iterator[str]:
    home = tmp_path_factory.mktemp("contract") / "home"
    registry = ModelRegistry(LocalBlobStore(home), refresh_seconds=0)
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    with LocalRuntime(
        home, host="127.0.0.1", port=0, default_model="cancer", registry=registry
    ) as runtime:
        yield runtime.url


@pytest.fixture(scope="module")
def api(served: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{served}/openapi.json")


def test_every_operation_keeps_its_contract(api: schemathesis.BaseSchema) -> None:
    assert check_operations(api) == []


def test_the_document_lists_the_routes(api: schemathesis.BaseSchema) -> None:
    """The generated cases above cover the real routes (an empty document would pass them)."""
    paths = {result.ok().path for result in api.get_all_operations()}
    assert {"/v1/models/{name}/predict", "/v2/models/{name}/infer", "/v2/health/ready"} <= paths


def test_a_broken_contract_is_found(served: str) -> None:
    """The check can fail: a document that leaves the 4xx answers out of the predict route is
    contradicted by the server (it answers generated bad bodies with 400 problems)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{served}/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    predict = document["paths"]["/v1/models/{name}/predict"]["post"]
    predict["responses"] = {k: v for k, v in predict["responses"].items() if k.startswith("2")}
    document["paths"] = {"/v1/models/{name}/predict": {"post": predict}}
    broken = schemathesis.openapi.from_dict(document)
    broken.config.update(base_url=served)
    failures = check_operations(broken, examples=10)
    assert failures and "predict" in failures[0], failures
