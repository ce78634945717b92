"""Generated HTTP contract checks (schemathesis) for any served OpenAPI document: the local
server's and the Google Cloud function's run the same ones."""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

EXAMPLES = 25


def check_operations(
    api: schemathesis.BaseSchema,
    examples: int = EXAMPLES,
    *,
    front_end_rejects: Callable[[schemathesis.Response], bool] | None = None,
) -> list[str]:
    """Run generated cases, valid and invalid, against every operation; the failures, one
    line each. ``front_end_rejects`` names the answers that the web server in front of our
    code gives to malformed HTTP before our code runs (it is not ours to shape); every other
    answer must keep the contract."""
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()
        strategies = [operation.as_strategy(mode) for mode in GenerationMode]
        mixed = strategies[0] if len(strategies) == 1 else strategies[0] | strategies[1]

        @given(case=mixed)
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call()
            if front_end_rejects is not None and front_end_rejects(response):
                return
            case.validate_response(response)

        try:
            run()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # schemathesis raises a group of the failed checks
            first = str(error).strip().splitlines()[:30]
            failures.append(f"{operation.label}: {' / '.join(first)}")
    return failures
