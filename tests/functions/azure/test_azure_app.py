"""The app as the Functions host indexes it: functions, triggers, routes and connections by
introspection (``get_functions()``), ``host.json`` and the package's requirements; and what the
app imports at start-up (its cold start)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from azfunc import APP_DIR, HOST_JSON, ROOT, functions

from skyscore.adapters import azure as adapter


def triggers() -> dict[str, dict[str, object]]:
    out = {}
    for name, function in functions().items():
        trigger = function.get_trigger().get_dict_repr()
        out[name] = {k: getattr(v, "value", v) for k, v in trigger.items() if k != "direction"}
        if "methods" in out[name]:
            out[name]["methods"] = sorted(getattr(m, "value", m) for m in trigger["methods"])
    return out


def test_registered_functions_and_triggers() -> None:
    found = triggers()
    assert found == {
        "http": {
            "type": "httpTrigger",
            "name": "req",
            "route": "{*path}",
            "authLevel": "function",
            "methods": sorted(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        },
        "alerts": {
            "type": "httpTrigger",
            "name": "req",
            "route": "hooks/azure-monitor",
            "authLevel": "function",
            "methods": ["POST"],
        },
        "upload_event": {"type": "eventGridTrigger", "name": "event"},
        "upload_blob": {
            "type": "blobTrigger",
            "name": "blob",
            "path": "%SKYSCORE_CONTAINER%/{name}",
            "connection": "SKYSCORE_STORAGE",
            "source": "EventGrid",
        },
        "work": {
            "type": "queueTrigger",
            "name": "msg",
            "queueName": "%SKYSCORE_QUEUE%",
            "connection": "SKYSCORE_STORAGE",
        },
        "retrain_schedule": {
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "0 */15 * * * *",
            "runOnStartup": False,
            "useMonitor": True,
        },
    }
    # only the HTTP functions have an output binding (their response)
    for name, function in functions().items():
        outputs = [b.get_dict_repr() for b in function.get_bindings()][1:]
        expected = (
            [{"direction": 1, "type": "http", "name": "$return"}]
            if name in ("http", "alerts")
            else []
        )
        assert [{k: getattr(v, "value", v) for k, v in b.items()} for b in outputs] == expected, (
            name
        )


def test_the_triggers_connection_is_the_one_the_core_reads() -> None:
    from functions.azure import function_app

    assert function_app.CONNECTION == adapter.CONNECTION == "SKYSCORE_STORAGE"


def test_host_json() -> None:
    assert HOST_JSON["version"] == "2.0"
    assert HOST_JSON["extensions"]["http"]["routePrefix"] == ""  # the local runtime's paths
    queues = HOST_JSON["extensions"]["queues"]
    assert queues["messageEncoding"] == "base64"  # what AzureQueue sends
    assert queues["maxDequeueCount"] == adapter.DEFAULT_MAX_DEQUEUE
    # a claim's lease is the longest run: an older claim belongs to a dead attempt
    hours, minutes, seconds = (int(x) for x in HOST_JSON["functionTimeout"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds == adapter.LEASE_SECONDS
    # metric records are traces: sampling must never drop them (the drift alert reads them)
    sampling = HOST_JSON["logging"]["applicationInsights"]["samplingSettings"]
    assert "Trace" in sampling["excludedTypes"].split(";")
    bundle = HOST_JSON["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert bundle["version"].startswith("[4.")  # blob source EventGrid needs bundle 4.x


def test_requirements_have_no_training_packages() -> None:
    lines = [
        line.split("#")[0].strip()
        for line in (APP_DIR / "requirements.txt").read_text().splitlines()
    ]
    names = {line.split("==")[0].lower() for line in lines if line}
    assert names == {
        "azure-functions",
        "azure-storage-blob",
        "azure-storage-queue",
        "azure-identity",
        "numpy",
        "onnxruntime",
        "msgspec",
    }
    assert all("==" in line for line in lines if line)
    from importlib.metadata import version

    for line in lines:
        if line:  # the tests run the versions the app deploys
            name, pinned = line.split("==")
            assert version(name) == pinned, name


def test_start_up_imports_only_azure_functions() -> None:
    """The host imports ``function_app`` when an instance starts: nothing of the core, the
    storage SDK or the inference stack may load before the first invocation."""
    script = textwrap.dedent(
        """
        import json, sys, time
        sys.path.insert(0, sys.argv[1])
        started = time.perf_counter()
        import function_app
        elapsed = time.perf_counter() - started
        heavy = [m for m in ("skyscore.runtime.core", "azure.storage.blob", "azure.identity",
                             "numpy", "onnxruntime", "msgspec") if m in sys.modules]
        print(json.dumps({"heavy": heavy, "seconds": elapsed}))
        """
    )
    answer = subprocess.run(
        [sys.executable, "-c", script, str(APP_DIR)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(answer.stdout)
    assert result["heavy"] == []


def test_funcignore_keeps_tools_out_of_the_package() -> None:
    ignored = (APP_DIR / ".funcignore").read_text().split()
    assert {"package.py", "local.settings.json", ".venv", "__pycache__/"} <= set(ignored)


def test_zip_package_layout(tmp_path: Path) -> None:
    """The zip's root is the app root: function_app.py beside host.json and the core."""
    import importlib.util
    import zipfile

    spec = importlib.util.spec_from_file_location("azure_package", APP_DIR / "package.py")
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    archive = package.build_zip(package.stage(tmp_path / "app"), tmp_path / "app.zip")
    names = zipfile.ZipFile(archive).namelist()
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(names)
    assert "skyscore/runtime/core.py" in names and "skyscore/adapters/azure.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("tests/", "functions/", "package.py"))]
    # the staged app imports from its own root, as the host imports it
    script = (
        "import sys; sys.path[:0] = [sys.argv[1]]; import function_app, skyscore.adapters.azure"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "app")], check=True, cwd=tmp_path)
