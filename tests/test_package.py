"""The deployable stack, proven offline: what `make package` produces is what the code needs.

One `make package` run per stage and session, in a clean copy (conftest's ``packaged``): cfn-lint, the table
against the PynamoDB models, the gateway's GitLab-shaped errors and binary media types, the
environment wiring, and the IAM policy against every AWS call the test suite saw the app make.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chalicelib import config, models
from tests.conftest import REQUEST_AWS_CALLS, STREAM_AWS_CALLS

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("dev", "prod")


@pytest.fixture(scope="module")
def templates(packaged: Callable[[str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {stage: packaged(stage) for stage in STAGES}


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


@pytest.mark.parametrize("stage", STAGES)
def test_template_passes_cfn_lint(templates: dict[str, dict[str, Any]], stage: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", templates[stage]["__path__"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    assert result.returncode in (0, 4, 8) and not errors, result.stdout + result.stderr  # 4/8: warnings/info


@pytest.mark.parametrize("stage", STAGES)
def test_table_is_exactly_what_the_models_declare(templates: dict[str, dict[str, Any]], stage: str) -> None:
    tables = resources(templates[stage], "AWS::DynamoDB::Table")
    assert list(tables) == ["Table"]
    table = tables["Table"]
    props = table["Properties"]
    schema = models.Entity._get_schema()

    def defs(items: Any) -> set[tuple[str, str]]:
        return {(d["AttributeName"], d["AttributeType"]) for d in items}

    def keys(items: Any) -> list[tuple[str, str]]:
        # HASH then RANGE, as CloudFormation wants them (PynamoDB lists them in declaration order).
        return sorted(((k["AttributeName"], k["KeyType"]) for k in items), key=lambda k: k[1])

    assert defs(props["AttributeDefinitions"]) == defs(schema["attribute_definitions"])
    assert keys(props["KeySchema"]) == keys(schema["key_schema"])
    declared = {
        i["index_name"]: (keys(i["key_schema"]), i["projection"]["ProjectionType"])
        for i in schema["global_secondary_indexes"]
    }
    templated = {
        i["IndexName"]: (keys(i["KeySchema"]), i["Projection"]["ProjectionType"])
        for i in props.get("GlobalSecondaryIndexes", [])
    }
    assert templated == declared
    assert not schema["local_secondary_indexes"] and "LocalSecondaryIndexes" not in props
    from pynamodb.attributes import TTLAttribute

    ttl = [
        name for name, attribute in models.RateWindow.get_attributes().items() if isinstance(attribute, TTLAttribute)
    ]
    assert len(ttl) == 1
    assert props["TimeToLiveSpecification"] == {"AttributeName": ttl[0], "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    # The webhooks read what an error was and is now (chalicelib/hooks/stream.py).
    assert props["StreamSpecification"] == {"StreamViewType": models.Entity.Meta.stream_view_type}
    assert models.Entity.Meta.stream_view_type == "NEW_AND_OLD_IMAGES"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("stage", STAGES)
def test_lambda_reads_its_settings_from_the_stack(templates: dict[str, dict[str, Any]], stage: str) -> None:
    function = templates[stage]["Resources"]["APIHandler"]["Properties"]
    assert function["Environment"]["Variables"] == {
        "ERRORTRACKING_TABLE": {"Ref": "Table"},
        "ERRORTRACKING_KMS_KEY_ID": {"Fn::GetAtt": ["SentryTokenKey", "Arn"]},
        "ERRORTRACKING_PUBLIC_URL": {"Ref": "PublicUrl"},
        "ERRORTRACKING_INGEST_URL": {"Fn::GetAtt": ["IngestHandlerUrl", "FunctionUrl"]},  # where DSNs lead
    }
    # Packaged from any Python 3.11+ for python3.13 on Graviton (scripts/package.py): the runtime
    # with the longest support, on the cheaper architecture; compiled wheels match it (below).
    assert (function["Runtime"], function["Architectures"]) == ("python3.13", ["arm64"])
    assert function["MemorySize"] == {"dev": 512, "prod": 1024}[stage]
    key = templates[stage]["Resources"]["SentryTokenKey"]
    assert key["DeletionPolicy"] == "Retain" and key["Properties"]["EnableKeyRotation"] is True


@pytest.mark.parametrize("stage", STAGES)
def test_the_dsn_host_is_a_public_function_url_of_the_same_bundle(
    templates: dict[str, dict[str, Any]], stage: str
) -> None:
    """API Gateway's REST API bills $3.50 a million requests: the DSNs lead to a Function URL
    (no price per request) of a second function, the same bundle behind another handler."""
    import app

    template = templates[stage]["Resources"]
    api, ingest = template["APIHandler"]["Properties"], template["IngestHandler"]["Properties"]
    assert ingest["Handler"] == "app.ingest_handler" and callable(app.ingest_handler)
    different = {"Handler", "FunctionUrlConfig", "Environment"}
    assert {k: v for k, v in ingest.items() if k not in different} == {
        k: v for k, v in api.items() if k not in different
    }
    variables = dict(api["Environment"]["Variables"])
    del variables["ERRORTRACKING_INGEST_URL"]  # the API's alone: its DSNs lead to the URL
    assert ingest["Environment"]["Variables"] == variables
    assert ingest["FunctionUrlConfig"] == {"AuthType": "NONE", "InvokeMode": "BUFFERED"}
    # Public, as a DSN is; since October 2025 a public URL needs both grants, the second only via the URL.
    grants = {
        r["Properties"]["Action"]: r["Properties"]
        for r in resources(templates[stage], "AWS::Lambda::Permission").values()
        if r["Properties"]["FunctionName"] == {"Ref": "IngestHandler"}
    }
    assert grants["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    assert grants["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True
    assert {g["Principal"] for g in grants.values()} == {"*"}
    watched = [
        a["Properties"]["Dimensions"]
        for a in resources(templates[stage], "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "Errors"
    ]
    assert [{"Name": "FunctionName", "Value": {"Ref": "IngestHandler"}}] in watched
    assert templates[stage]["Outputs"]["IngestUrl"] == {"Value": {"Fn::GetAtt": ["IngestHandlerUrl", "FunctionUrl"]}}


@pytest.mark.parametrize("stage", STAGES)
def test_webhooks_run_off_the_tables_stream_with_bounded_retries(
    templates: dict[str, dict[str, Any]], stage: str
) -> None:
    from chalicelib.hooks.stream import STREAM_FILTER, passes_filter

    template = templates[stage]
    hooks = template["Resources"]["Hooks"]["Properties"]
    assert hooks["Handler"] == "app.deliver_hooks"
    assert (hooks["Runtime"], hooks["Architectures"], hooks["Timeout"]) == ("python3.13", ["arm64"], 120)
    (source,) = hooks["Events"].values()
    props = source["Properties"]
    assert source["Type"] == "DynamoDB" and props["Stream"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    assert props["StartingPosition"] == "LATEST" and props["BatchSize"] == 100
    assert props["BisectBatchOnFunctionError"] is True
    assert props["MaximumRetryAttempts"] == 3 and props["MaximumRecordAgeInSeconds"] == 3600
    assert props["DestinationConfig"] == {
        "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": ["HooksFailedQueue", "Arn"]}}
    }
    # Only error items start the function; the pattern is the one the local pump applies.
    (pattern,) = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    assert pattern == STREAM_FILTER
    error_record = {"dynamodb": {"Keys": {"pk": {"S": "error#1#2"}, "sk": {"S": "error"}}}}
    shard_record = {"dynamodb": {"Keys": {"pk": {"S": "errorshard#1#2#3"}, "sk": {"S": "shard"}}}}
    assert passes_filter(error_record) and not passes_filter(shard_record)
    assert template["Resources"]["HooksFailedQueue"]["Type"] == "AWS::SQS::Queue"
    variables = hooks["Environment"]["Variables"]
    assert variables["ERRORTRACKING_TABLE"] == {"Ref": "Table"}
    assert variables["ERRORTRACKING_PUBLIC_URL"]["Fn::If"][0] == "HasPublicUrl"
    # Its own role, with its own policy: the API's role reads no stream and queues nothing.
    assert hooks["Role"] == {"Fn::GetAtt": ["HooksRole", "Arn"]}
    (policy,) = template["Resources"]["HooksRole"]["Properties"]["Policies"]
    assert policy["PolicyDocument"] == _policy(f"hooks-{stage}")
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    watched = {(a["Properties"]["MetricName"], json.dumps(a["Properties"]["Dimensions"])) for a in alarms}
    assert ("IteratorAge", json.dumps([{"Name": "FunctionName", "Value": {"Ref": "Hooks"}}])) in watched
    assert any(metric == "ApproximateNumberOfMessagesVisible" and "HooksFailedQueue" in d for metric, d in watched)


@pytest.mark.parametrize("stage", STAGES)
def test_gateway_answers_like_gitlab(templates: dict[str, dict[str, Any]], stage: str) -> None:
    template = templates[stage]
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in resources(template, "AWS::ApiGateway::GatewayResponse").values()
    }
    # A page on another origin reads every answer, the gateway's own too: without the header the
    # browser shows a CORS failure in place of a 413, a 429 (and its Retry-After) or a 5xx.
    for kind, response in responses.items():
        assert response["ResponseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'", kind
    throttled = responses["THROTTLED"]["ResponseParameters"]
    assert throttled["gatewayresponse.header.Access-Control-Expose-Headers"] == "'Retry-After'"
    missing = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert missing["StatusCode"] == "404"
    assert json.loads(missing["ResponseTemplates"]["application/json"]) == {"error": "404 Not Found"}
    assert missing["RestApiId"] == {"Ref": "RestAPI"}


@pytest.mark.parametrize("stage", STAGES)
def test_gateway_hands_every_body_over_as_sent(templates: dict[str, dict[str, Any]], stage: str) -> None:
    from app import INGEST, app

    body = templates[stage]["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    # Every content type binary, so API Gateway base64s each request body instead of reading it as
    # UTF-8 text (tests/test_apigateway.py sends every body SDKs send through it).
    assert body["x-amazon-apigateway-binary-media-types"] == ["*/*"]
    # Not in Chalice's own list: Chalice would answer its JSON as binary, 400 without an Accept.
    assert "*/*" not in app.api.binary_types
    # With */*, a CORS preflight's mock integration must turn the (binary) request into text, or
    # API Gateway answers it 500 instead of the browser SDKs' preflight 200.
    preflights = {path: methods["options"] for path, methods in body["paths"].items() if "options" in methods}
    # Every path has one: the GitLab API's (CORS for any origin, as GitLab) and ingestion's.
    assert set(preflights) == set(body["paths"])
    assert {INGEST + "/envelope", INGEST + "/store"} <= set(preflights)
    for path, preflight in preflights.items():
        integration = preflight["x-amazon-apigateway-integration"]
        assert (integration["type"], integration["contentHandling"]) == ("mock", "CONVERT_TO_TEXT"), path
        answered = integration["responses"]["default"]["responseParameters"]
        assert answered["method.response.header.Access-Control-Allow-Origin"] == "'*'", path
        assert "method.response.header.Access-Control-Allow-Credentials" not in answered, path
        if path.startswith("/api/v4/"):
            allowed = answered["method.response.header.Access-Control-Allow-Headers"].strip("'").lower().split(",")
            assert {"private-token", "authorization", "content-type"} <= set(allowed), path
    # And the Lambda gets each (binary) body as base64 text, with isBase64Encoded: true.
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            integration = operation["x-amazon-apigateway-integration"]
            if method != "options":
                assert (integration["type"], integration["contentHandling"]) == ("aws_proxy", "CONVERT_TO_TEXT"), path


@pytest.mark.parametrize("stage", STAGES)
def test_alarms_watch_5xx_lambda_errors_and_throttling(templates: dict[str, dict[str, Any]], stage: str) -> None:
    alarms = resources(templates[stage], "AWS::CloudWatch::Alarm").values()
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert {
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/Lambda", "Errors"),
        ("AWS/DynamoDB", "ReadThrottleEvents"),
        ("AWS/DynamoDB", "WriteThrottleEvents"),
    } <= watched


@pytest.mark.parametrize("stage", STAGES)
def test_bundle_holds_runtime_code_built_for_the_lambda(templates: dict[str, dict[str, Any]], stage: str) -> None:
    import zipfile

    names = zipfile.ZipFile(Path(templates[stage]["__path__"]).parent / "deployment.zip").namelist()
    assert "app.py" in names and "chalicelib/authorizer.py" in names and "pynamodb/models.py" in names
    compiled = [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
    assert compiled == ["_brotli.cpython-313-aarch64-linux-gnu.so"]
    top = {n.split("/")[0] for n in names}
    assert not top & {"pytest", "_pytest", "moto", "mypy", "ruff", "cfnlint", "gitlab", "tests", "scripts"}
    chalice = {n.replace("__pycache__/", "").split(".")[0] for n in names if n.startswith("chalice/")}
    assert chalice == {"chalice/__init__", "chalice/app"}


@pytest.mark.parametrize("stage", STAGES)
def test_bundle_ships_bytecode_of_the_runtime_python(templates: dict[str, dict[str, Any]], stage: str) -> None:
    """Lambda's /var/task is read-only: a module without a matching .pyc is compiled at every cold start."""
    import zipfile

    from scripts.package import runtime_python

    runtime = templates[stage]["Resources"]["APIHandler"]["Properties"]["Runtime"]
    python = runtime_python()
    if python is None:
        assert f"No Python {runtime.removeprefix('python')} found" in templates[stage]["__output__"]
        pytest.skip(f"no {runtime} on this machine, so `make package` (as it said) ships no .pyc")
    bundle = zipfile.ZipFile(Path(templates[stage]["__path__"]).parent / "deployment.zip")
    tag = "cpython-" + runtime.removeprefix("python").replace(".", "")
    modules = {n for n in bundle.namelist() if n.endswith(".py")}
    compiled = {n for n in bundle.namelist() if n.endswith(".pyc")}
    expected = {f"{os.path.dirname(m)}/__pycache__/{os.path.basename(m)[:-3]}.{tag}.pyc".lstrip("/") for m in modules}
    assert compiled == expected and "__pycache__/app.cpython-313.pyc" in compiled
    magic = subprocess.run(
        [python, "-c", "import importlib.util, sys; sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in compiled:
        header = bundle.read(name)[:16]
        # Magic of the runtime's Python; flags 0b01: hash-based and unchecked, so valid whatever the
        # files' times after Lambda unzips them.
        assert header[:4].hex() == magic and int.from_bytes(header[4:8], "little") == 0b01, name
    assert f"Compiled {len(compiled)} modules to .pyc" in templates[stage]["__output__"]


def test_requirements_txt_is_generated_from_pyproject() -> None:
    from scripts import requirements

    assert (ROOT / "requirements.txt").read_text() == requirements.render(), "run `make requirements`"
    runtime = {
        line.split(">")[0].split("=")[0].split("<")[0]
        for line in requirements.render().splitlines()
        if line and not line.startswith("#")
    }
    assert not runtime & {"chalice", "moto", "pytest", "ruff", "mypy", "cfn-lint"}


# The IAM policy, against what the code really did.


def _policy(stage: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text()))


def _resource_of(service: str, params: dict[str, Any], table: str, key: str) -> str:
    """The policy's name for what a call touched: the template's logical resources."""
    if service == "kms":
        assert params.get("KeyId") == key, params
        return "SentryTokenKey"
    assert params.get("TableName", table) == table, params
    return "Table/index/" + params["IndexName"] if "IndexName" in params else "Table"


def _needed(calls: list[tuple[str, str, dict[str, Any]]]) -> set[tuple[str, str]]:
    """(IAM action, resource) for each call; transactions need each item's own action."""
    table, key = models.Entity.Meta.table_name, config.get_config().kms_key_id
    needed: set[tuple[str, str]] = set()
    for service, operation, params in calls:
        if operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, body),) = item.items()
                action = {
                    "Put": "PutItem",
                    "Update": "UpdateItem",
                    "Delete": "DeleteItem",
                    "ConditionCheck": "ConditionCheckItem",
                }[kind]
                needed.add((f"dynamodb:{action}", _resource_of(service, body, table, key)))
        elif operation in ("BatchGetItem", "BatchWriteItem"):
            for name in params["RequestItems"]:
                needed.add((f"dynamodb:{operation}", _resource_of(service, {"TableName": name}, table, key)))
        else:
            needed.add((f"{service}:{operation}", _resource_of(service, params, table, key)))
    return needed


def _allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        names = []
        for target in targets:
            if isinstance(target, dict) and "Fn::GetAtt" in target:
                names.append(target["Fn::GetAtt"][0])
            elif isinstance(target, dict) and "Fn::Sub" in target:
                names.append(target["Fn::Sub"].replace("${Table.Arn}", "Table"))
            elif isinstance(target, str) and (target.startswith("arn:*:logs") or target == "*"):
                names.append(target)
        if (
            statement["Effect"] == "Allow"
            and action in actions
            and any(fnmatch.fnmatchcase(resource, n) for n in names)
        ):
            return True
    return False


POLICIES = [*STAGES, *(f"hooks-{stage}" for stage in STAGES)]


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_is_least_privilege(policy: str) -> None:
    hooks = policy.startswith("hooks-")
    for statement in _policy(policy)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
        resource = json.dumps(statement["Resource"])
        stream = resource == json.dumps({"Fn::Sub": "${Table.Arn}/stream/*"})  # the table's streams only
        # dynamodb:ListStreams names no resource (IAM's "Actions defined by Amazon DynamoDB").
        unscoped = actions == ["dynamodb:ListStreams"]
        if not all(a.startswith("logs:") for a in actions) and not stream and not unscoped:
            assert statement["Resource"] != "*" and "*" not in resource, statement
        for action in actions:
            # Only the webhooks' function queues what it gives up on; nothing else reaches SQS.
            assert action.split(":")[0] in ("dynamodb", "kms", "logs", *(["sqs"] if hooks else [])), action
            if action.startswith("kms:"):
                assert action in ("kms:Encrypt", "kms:Decrypt"), action
            if action == "kms:Decrypt":  # hook secrets only: no Lambda may read a Sentry token
                assert statement["Condition"] == {
                    "StringEquals": {"kms:EncryptionContext:errortracking:purpose": "hook"}
                }, statement
            if hooks:  # the stream's function never deletes and never encrypts
                assert action not in ("dynamodb:DeleteItem", "kms:Encrypt"), action


@pytest.mark.last
@pytest.mark.parametrize("stage", STAGES)
def test_policy_allows_every_call_the_suite_saw(stage: str) -> None:
    needed = _needed(REQUEST_AWS_CALLS)
    if not needed:
        pytest.fail("no request made an AWS call: run the whole suite, not this file alone")
    policy = _policy(stage)
    missing = sorted(item for item in needed if not _allows(policy, *item))
    assert not missing, f"policy-{stage}.json lacks {missing}"


# What Lambda's event source mapping does with the webhooks function's role (AWS's "Using AWS Lambda
# with Amazon DynamoDB": reading the stream, and sending what it gives up on to the failure queue).
EVENT_SOURCE_NEEDS = {
    ("dynamodb:DescribeStream", "Table/stream/x"),
    ("dynamodb:GetRecords", "Table/stream/x"),
    ("dynamodb:GetShardIterator", "Table/stream/x"),
    ("dynamodb:ListStreams", "Table/stream/x"),
    ("sqs:SendMessage", "HooksFailedQueue"),
}


@pytest.mark.last
@pytest.mark.parametrize("stage", STAGES)
def test_hooks_policy_allows_every_call_the_stream_handler_made(stage: str) -> None:
    needed = _needed(STREAM_AWS_CALLS)
    if not needed:
        pytest.fail("the stream handler made no AWS call: run the whole suite, not this file alone")
    policy = _policy(f"hooks-{stage}")
    missing = sorted(item for item in needed | EVENT_SOURCE_NEEDS if not _allows(policy, *item))
    assert not missing, f"policy-hooks-{stage}.json lacks {missing}"
