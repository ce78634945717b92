"""What every AWS handler shares: Powertools' logger and metrics, and the core for this
container (built once from the environment by :func:`skyscore.runtime.wiring.core_for`; the
settings it reads are documented on :class:`skyscore.adapters.aws.AwsBackend`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from skyscore.runtime.core import Core

SERVICE = "skyscore"
# botocore.auth (the canonical request) and botocore.endpoint (the signed request) log the
# X-Amz-Security-Token header at DEBUG: with the function's log level at DEBUG
# (AWS_LAMBDA_LOG_LEVEL) the role's session token would reach the logs. Those two stay at INFO
# whatever the root level is (tests/hardening/test_secrets.py).
for _name in ("botocore.auth", "botocore.endpoint"):
    logging.getLogger(_name).setLevel(logging.INFO)
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=SERVICE, service=SERVICE)


def core() -> Core:
    """The core over the data bucket, the work queue and SageMaker."""
    from skyscore.adapters.aws import AWS
    from skyscore.runtime.wiring import core_for

    return core_for(AWS)


def reset() -> None:
    """Forget the built core (tests switch buckets and endpoints between cases)."""
    from skyscore.runtime.wiring import reset_cores

    reset_cores()
