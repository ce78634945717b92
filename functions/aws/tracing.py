"""X-Ray tracing (Powertools ``Tracer``) where a trace pays for itself: upload scoring and
retraining, whose time goes to S3, SQS and SageMaker calls that the tracer's patched botocore
shows as subsegments.

Not the HTTP handler: creating a ``Tracer`` imports the X-Ray SDK and patches botocore, which
costs cold-start time on the latency-critical path, so ``http.py`` never imports this module
(``tests/functions/aws/test_aws_tracing.py`` checks it). One shared instance, so that modules
are patched once. ``POWERTOOLS_TRACE_DISABLED=true`` turns it off (the tests do).
"""

from __future__ import annotations

from aws_lambda_powertools import Tracer
from functions.aws.common import SERVICE

tracer = Tracer(service=SERVICE)
