"""`make package`: `chalice package` for the Lambda runtime we deploy, whatever Python runs it.

Chalice takes the Lambda runtime from the interpreter that packages (3.11 here), and python3.11
on Lambda sits on Amazon Linux 2. We deploy on python3.13 (Amazon Linux 2023, supported longest).
Two adjustments make Chalice package for it from any Python: the runtime it writes into the
template, and the Python version pip is told when it fetches wheels of compiled dependencies
(brotli) for the Lambda's ABI and architecture. Arguments are `chalice package`'s.

Then the template gets the DSN host's entry point: a second function of the same bundle, role,
runtime and memory, behind a Lambda Function URL (no price per request, where API Gateway's REST
API bills $3.50 a million), serving only the ingestion routes (chalicelib/ingest/function_url.py).
The API's DSNs lead there (ERRORTRACKING_INGEST_URL); the API Gateway routes keep working for DSNs
handed out before.

Then the webhooks' function is wired to the table's stream (add_hooks_wiring).

Then the bundle gets bytecode. Lambda's `/var/task` is read-only, so without `.pyc` every cold
start compiles every module it imports. Bytecode is specific to a Python version, so it is
compiled by the runtime's own interpreter when one is found (`LAMBDA_PYTHON`, `python3.13` on
PATH, or pyenv's), as unchecked-hash `.pyc`: valid whatever the files' times after unzipping.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

LAMBDA_RUNTIME = "python3.13"
VERSION = LAMBDA_RUNTIME.removeprefix("python")


def chalice_package(args: list[str]) -> int:
    from chalice.cli import main as chalice_main
    from chalice.config import Config
    from chalice.deploy.packager import PipRunner

    Config.lambda_python_version = property(lambda self: LAMBDA_RUNTIME)  # type: ignore[method-assign,assignment]
    execute = PipRunner._execute

    def execute_for_lambda(self: Any, command: str, args: list[str], *rest: Any, **kw: Any) -> Any:
        if command == "download" and "--abi" in args:
            # pip otherwise assumes the running interpreter's version and finds no cp313 wheel.
            args = [*args[:-1], "--python-version", VERSION, args[-1]]
        return execute(self, command, args, *rest, **kw)

    PipRunner._execute = execute_for_lambda  # type: ignore[method-assign]
    sys.argv = ["chalice", "package", *args]
    try:
        return int(chalice_main() or 0)
    except SystemExit as exit:  # click ends with SystemExit even on success
        return int(exit.code or 0)


def runtime_python() -> str | None:
    """An interpreter of the Lambda's Python version, or None when this machine has none."""
    candidates = [os.environ.get("LAMBDA_PYTHON", ""), shutil.which(f"python{VERSION}") or ""]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates += sorted(str(p) for p in pyenv.glob(f"{VERSION}*/bin/python{VERSION}"))[::-1]
    for candidate in filter(None, candidates):
        # A pyenv shim is on PATH even when its version is not selected; only running it tells.
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == VERSION:
            return candidate
    return None


def add_bytecode(bundle: Path, python: str) -> int:
    """Add ``__pycache__/*.cpython-313.pyc`` for every module in ``bundle``; returns how many."""
    with tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(bundle) as archive:
            sources = [name for name in archive.namelist() if name.endswith(".py")]
            archive.extractall(work, members=sources)
        # -q: a module this Python cannot compile (none today) is left to compile at import.
        subprocess.run(
            [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", work],
            capture_output=True,
        )
        compiled = sorted(Path(work).rglob(f"__pycache__/*.cpython-{VERSION.replace('.', '')}.pyc"))
        with zipfile.ZipFile(bundle, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in compiled:
                archive.write(path, path.relative_to(work).as_posix())
    return len(compiled)


INGEST_URL = {"Fn::GetAtt": ["IngestHandlerUrl", "FunctionUrl"]}  # SAM names the URL <function>Url


def add_ingest_function(template_path: Path) -> None:
    """IngestHandler: APIHandler's copy with the Function URL handler, its errors alarmed alike."""
    template = json.loads(template_path.read_text())
    resources = template["Resources"]
    api = resources["APIHandler"]
    ingest = copy.deepcopy(api)
    ingest["Properties"]["Handler"] = "app.ingest_handler"
    # Public, as a DSN is: the client key in each request is what ingestion checks.
    ingest["Properties"]["FunctionUrlConfig"] = {"AuthType": "NONE", "InvokeMode": "BUFFERED"}
    resources["IngestHandler"] = ingest
    # Since October 2025 a public Function URL needs both grants (Lambda's "Control access to
    # function URLs"); lambda:InvokeFunction only through the URL, not Lambda's own Invoke API.
    for name, grant in (
        ("IngestUrlPublicInvokeUrl", {"Action": "lambda:InvokeFunctionUrl", "FunctionUrlAuthType": "NONE"}),
        ("IngestUrlPublicInvoke", {"Action": "lambda:InvokeFunction", "InvokedViaFunctionUrl": True}),
    ):
        resources[name] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {"FunctionName": {"Ref": "IngestHandler"}, "Principal": "*", **grant},
        }
    api["Properties"]["Environment"]["Variables"]["ERRORTRACKING_INGEST_URL"] = INGEST_URL
    alarm = copy.deepcopy(resources["LambdaErrorsAlarm"])
    alarm["Properties"]["AlarmDescription"] = "The ingestion Lambda failed (timeouts, out of memory, import errors)."
    alarm["Properties"]["Dimensions"] = [{"Name": "FunctionName", "Value": {"Ref": "IngestHandler"}}]
    resources["IngestErrorsAlarm"] = alarm
    template.setdefault("Outputs", {})["IngestUrl"] = {"Value": INGEST_URL}
    template_path.write_text(json.dumps(template, indent=2) + "\n")


# The stream's event source: a failing batch is halved until the failing record is alone, tried
# at most three times, given up after an hour; what is given up lands in HooksFailedQueue.
STREAM_RETRIES = 3
STREAM_MAX_RECORD_AGE = 3600
FAILED_BATCH_RETENTION = 14 * 24 * 3600  # SQS's longest
ITERATOR_AGE_ALARM_MS = 5 * 60 * 1000


def add_hooks_wiring(template_path: Path) -> None:
    """The webhooks' function (``@app.on_dynamodb_record`` in app.py) on the table's own stream:
    Chalice knows the stream only as a placeholder ARN; the event source gets the real one, the
    filter to error items, bounded retries and a failure queue; the function gets the API's
    settings; alarms watch its errors, its lag behind the stream and the failure queue."""
    from chalicelib.hooks.stream import STREAM_FILTER

    template = json.loads(template_path.read_text())
    resources = template["Resources"]
    hooks = resources["Hooks"]
    source = hooks["Properties"]["Events"]["HooksDynamodbEventSource"]["Properties"]
    source.update(
        {
            "Stream": {"Fn::GetAtt": ["Table", "StreamArn"]},
            "StartingPosition": "LATEST",
            "MaximumBatchingWindowInSeconds": 1,  # notified within seconds, in fewer invocations
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": STREAM_RETRIES,
            "MaximumRecordAgeInSeconds": STREAM_MAX_RECORD_AGE,
            "DestinationConfig": {
                "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": ["HooksFailedQueue", "Arn"]}}
            },
            "FilterCriteria": {"Filters": [{"Pattern": json.dumps(STREAM_FILTER, separators=(",", ":"))}]},
        }
    )
    resources["HooksFailedQueue"] = {
        "Type": "AWS::SQS::Queue",
        "Properties": {"MessageRetentionPeriod": FAILED_BATCH_RETENTION, "SqsManagedSseEnabled": True},
    }
    env = copy.deepcopy(resources["APIHandler"]["Properties"]["Environment"])
    # Links in notifications: the public URL, or else the API Gateway URL (a stream has no request).
    template.setdefault("Conditions", {})["HasPublicUrl"] = {"Fn::Not": [{"Fn::Equals": [{"Ref": "PublicUrl"}, ""]}]}
    env["Variables"]["ERRORTRACKING_PUBLIC_URL"] = {
        "Fn::If": [
            "HasPublicUrl",
            {"Ref": "PublicUrl"},
            {"Fn::Sub": "https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api"},
        ]
    }
    env["Variables"].pop("ERRORTRACKING_INGEST_URL", None)
    hooks["Properties"]["Environment"] = env

    def alarm(description: str, **properties: Any) -> dict[str, Any]:
        """LambdaErrorsAlarm's copy (period, threshold, topic) watching the webhooks' function."""
        made: dict[str, Any] = copy.deepcopy(resources["LambdaErrorsAlarm"])
        made["Properties"]["Dimensions"] = [{"Name": "FunctionName", "Value": {"Ref": "Hooks"}}]
        made["Properties"].update(AlarmDescription=description, **properties)
        return made

    resources["HooksErrorsAlarm"] = alarm("The webhooks Lambda failed (batches are retried, then queued).")
    resources["HooksIteratorAgeAlarm"] = alarm(
        "Webhooks lag more than 5 minutes behind the table's stream.",
        MetricName="IteratorAge",
        Statistic="Maximum",
        Threshold=ITERATOR_AGE_ALARM_MS,
    )
    resources["HooksFailedQueueAlarm"] = alarm(
        "Stream records the webhooks gave up on are waiting in HooksFailedQueue.",
        Namespace="AWS/SQS",
        MetricName="ApproximateNumberOfMessagesVisible",
        Statistic="Maximum",
        Dimensions=[{"Name": "QueueName", "Value": {"Fn::GetAtt": ["HooksFailedQueue", "QueueName"]}}],
    )
    template.setdefault("Outputs", {})["HooksFailedQueueUrl"] = {"Value": {"Ref": "HooksFailedQueue"}}
    template_path.write_text(json.dumps(template, indent=2) + "\n")


def main() -> int:
    args = sys.argv[1:]
    status = chalice_package(args)
    if status or not args or args[-1].startswith("-"):
        return status
    add_ingest_function(Path(args[-1]) / "sam.json")
    add_hooks_wiring(Path(args[-1]) / "sam.json")
    bundle = Path(args[-1]) / "deployment.zip"
    python = runtime_python()
    if python is None:
        print(
            f"No Python {VERSION} found (set LAMBDA_PYTHON=/path/to/python{VERSION}): the bundle ships "
            f"without .pyc, so each cold start compiles the modules it imports."
        )
        return 0
    count = add_bytecode(bundle, python)
    print(f"Compiled {count} modules to .pyc with {python} (Python {VERSION}, the Lambda runtime's).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
