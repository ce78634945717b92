# The Lambda image of the upload, queue and quality-gate functions: python3.13 on Amazon Linux
# 2023 (the AWS base image), x86_64, with pyarrow for the fast CSV/Parquet path. `serverless
# deploy` builds it (provider.ecr.images.scoring, platform linux/amd64) and pushes it to the
# Framework's repository; the HTTP and retraining-policy functions stay on the small zip.
#
#   docker build --platform linux/amd64 -f infra/aws/scoring.Dockerfile -t skyscore-scoring .
#checkov:skip=CKV_DOCKER_2:Lambda never runs a Docker HEALTHCHECK; an invocation that fails is retried and alarmed
#checkov:skip=CKV_DOCKER_3:Lambda runs the image as its own non-root user whatever USER says
FROM --platform=linux/amd64 public.ecr.aws/lambda/python:3.13

# The same pinned wheels as the zip (requirements.txt) plus pyarrow; boto3 is in the base image.
COPY functions/aws/requirements.txt functions/aws/requirements-image.txt /tmp/requirements/
RUN pip install --no-cache-dir --no-compile --no-deps --only-binary=:all: \
        --target "${LAMBDA_TASK_ROOT}" -r /tmp/requirements/requirements-image.txt \
    && rm -rf /tmp/requirements "${LAMBDA_TASK_ROOT}"/pyarrow/include "${LAMBDA_TASK_ROOT}"/pyarrow/tests
COPY shared/skyscore ${LAMBDA_TASK_ROOT}/skyscore
COPY functions/aws/*.py ${LAMBDA_TASK_ROOT}/functions/aws/
RUN python -c "import pyarrow.csv, pyarrow.parquet, onnxruntime, skyscore.batch.scorer"

# Each function names its handler (serverless.yml image.command); this is the upload one.
CMD ["functions.aws.upload.handler"]
