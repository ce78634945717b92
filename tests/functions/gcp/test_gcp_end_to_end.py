"""End to end on real parts, no hand-made event in between: a file uploaded with the real
google-cloud-storage client → fake-gcs-server's finalize notification → the gcloud Pub/Sub
emulator → a push subscription → the running ``upload`` function → predictions in the bucket.
The same notification delivered again gives no second run and the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

from gcpfunc import GcpApp, GcpCloud, statuses, wait_until

from demo_table import cancer_csv
from skyscore.batch.pipeline import score_path
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry


def test_upload_notification_push_function_predictions(
    gcp_cloud: GcpCloud,
    gcp_app: GcpApp,
    cancer: ModelRegistry,
    demo_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    pubsub, store = gcp_cloud.pubsub, gcp_app.store
    upload = gcp_app.server("upload")
    # a pull subscription keeps a copy of what the storage server published
    tap = pubsub.new_subscription(gcp_cloud.topic)
    push = pubsub.new_subscription(gcp_cloud.topic, push_endpoint=upload.url + "/")
    try:
        data = cancer_csv(data_dir)
        blob = gcp_cloud.gcs.client().bucket(gcp_app.bucket).blob("incoming/cancer/e2e.csv")
        blob.upload_from_string(data, content_type="text/csv")
        out = "predictions/cancer/e2e.predictions.csv"
        try:
            wait_until(lambda: store.exists(out + ".manifest.json"), 60, "predictions")
        except AssertionError as error:  # say what the function saw
            raise AssertionError(f"{error}\n{upload.log()[-4000:]}") from None
        source = tmp_path / "e2e.csv"
        source.write_bytes(data)
        score_path(source, tmp_path / "e2e.predictions.csv", demo_predictor)
        assert store.read_bytes(out) == (tmp_path / "e2e.predictions.csv").read_bytes()
        manifest = json.loads(store.read_bytes(out + ".manifest.json"))
        assert manifest["input_version"] == str(blob.generation)
        assert (manifest["rows_scored"], manifest["rows_failed"]) == (567, 2)
        wait_until(lambda: "scored" in statuses(upload), 10, "the function's log line")

        # what arrived: a real OBJECT_FINALIZE notification with string int64 fields
        subscriber = pubsub.subscriber()
        pulled = wait_until(
            lambda: [
                r
                for r in subscriber.pull(
                    request={"subscription": pubsub.subscription_path(tap), "max_messages": 10},
                    timeout=5,
                ).received_messages
                if r.message.attributes.get("bucketId") == gcp_app.bucket
            ],
            what="the notification on the tap",
        )
        message = pulled[0].message
        assert message.attributes["eventType"] == "OBJECT_FINALIZE"
        assert message.attributes["objectGeneration"] == str(blob.generation)
        assert json.loads(message.data)["size"] == str(len(data))

        # the same notification again (Pub/Sub delivers at least once): one output
        before = {k: store.stat(out + k) for k in ("", ".errors.jsonl", ".manifest.json")}
        pubsub.publisher().publish(
            pubsub.topic_path(gcp_cloud.topic), message.data, **dict(message.attributes)
        ).result(timeout=30)
        wait_until(lambda: "duplicate" in statuses(upload), 30, "the duplicate delivery")
        assert {k: store.stat(out + k) for k in before} == before
        manifests = [i.key for i in store.list("predictions/") if i.key.endswith("manifest.json")]
        assert manifests == [out + ".manifest.json"]
    finally:
        pubsub.delete_subscription(push)
        pubsub.delete_subscription(tap)
