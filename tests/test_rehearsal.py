"""The deployment rehearsal (SPEC §9.4): infra/template.yaml transformed by the SAM translator
(aws-sam-translator, what `sam deploy` runs) and created as a stack by a CloudFormation engine on
this machine (moto's) to CREATE_COMPLETE; then a user's whole flow runs through the functions —
the real binaries under the Lambda runtime emulator, each with the environment the stack gave
that function (read back with GetFunctionConfiguration) — against the table, bus, rule, bucket
and queues the stack made, named by its outputs and resources, not by test constants.

What moto's CloudFormation does not create (README "The deployment rehearsal" lists each with
what checks it instead): CloudFront, the HTTP API, Function URLs, bucket and queue policies and
Secrets Manager secrets. The secrets are made here as the template would (64 characters, no
punctuation) and put where the template names them."""
import io
import json
import os
import secrets
import string
import time
import zipfile

import boto3
import jwt
import pytest
from httpx_sse import connect_sse

from conftest import OUT, ON_DYNAMODB, ROOT, SESSION
from test_lambda_functions import Emulator

pytestmark = pytest.mark.skipif(not ON_DYNAMODB, reason="the engine is moto: the SPELLCAST_TEST_STORE=dynamodb pass")

# Resource types moto 5.2's CloudFormation skips (no error, no resource): checked instead by
# cfn-lint, `sam validate --lint`, checkov and tests/test_template.py.
NOT_CREATED_BY_THE_ENGINE = {
    "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage", "AWS::CloudFront::CachePolicy",
    "AWS::CloudFront::Distribution", "AWS::CloudFront::Function", "AWS::CloudFront::OriginAccessControl",
    "AWS::CloudFront::OriginRequestPolicy", "AWS::CloudFront::ResponseHeadersPolicy", "AWS::Lambda::Url",
    "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SecretsManager::Secret",
}


def clients():
    kw = dict(endpoint_url=os.environ["SPELLCAST_MOTO_ENDPOINT"], region_name="us-east-1",
              aws_access_key_id="test", aws_secret_access_key="test")
    return {n: boto3.client(n, **kw) for n in ("s3", "cloudformation", "lambda", "secretsmanager", "sqs", "events")}


def translated(aws, code_bucket):
    """The template as `sam deploy` hands it to CloudFormation (the code: a placeholder zip in S3,
    as `sam deploy` uploads the built one; the emulator runs the real binaries)."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        def load(self, *args, **kwargs):
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sam = yaml_parse((ROOT / "infra" / "template.yaml").read_text())
    aws["s3"].create_bucket(Bucket=code_bucket)
    zipped = io.BytesIO()
    zipfile.ZipFile(zipped, "w").writestr("bootstrap", "")
    aws["s3"].put_object(Bucket=code_bucket, Key="code.zip", Body=zipped.getvalue())
    sam["Globals"]["Function"]["CodeUri"] = f"s3://{code_bucket}/code.zip"
    return transform(sam, {}, NoManagedPolicies())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    aws = clients()
    name = f"rehearsal-{SESSION}"
    template = translated(aws, f"{name}-code")
    # Outputs of resources the engine skips would break describe_stacks: left out here.
    skipped = {k for k, r in template["Resources"].items() if r["Type"] in NOT_CREATED_BY_THE_ENGINE}
    template["Outputs"] = {k: v for k, v in template["Outputs"].items()
                           if not any(f'"{s}"' in json.dumps(v) or f"${{{s}" in json.dumps(v) for s in skipped)}
    aws["cloudformation"].create_stack(StackName=name, TemplateBody=json.dumps(template),
                                       Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"])
    described = aws["cloudformation"].describe_stacks(StackName=name)["Stacks"][0]
    resources = {r["LogicalResourceId"]: r for r in
                 aws["cloudformation"].describe_stack_resources(StackName=name)["StackResources"]
                 if "LogicalResourceId" in r}
    # The secrets the template generates, made as it would make them.
    alphabet = string.ascii_letters + string.digits
    secret_arns = {}
    for logical in ("TokenSecret", "InvoiceKeySecret", "OriginSecret", "WebhookSecret"):
        value = "".join(secrets.choice(alphabet) for _ in range(64))
        secret_arns[logical] = aws["secretsmanager"].create_secret(Name=f"{name}-{logical}", SecretString=value)["ARN"]
    yield {"aws": aws, "name": name, "template": template, "stack": described, "resources": resources,
           "secrets": secret_arns, "tmp": tmp_path_factory.mktemp("rehearsal")}


def outputs(stack):
    return {o["OutputKey"]: o["OutputValue"] for o in stack["stack"].get("Outputs", [])}


def function_env(stack, logical):
    """A function's environment as the stack configured it, with the secrets' ARNs the engine
    could not resolve put where the template names them."""
    aws = stack["aws"]
    physical = stack["resources"][logical]["PhysicalResourceId"]
    env = aws["lambda"].get_function_configuration(FunctionName=physical)["Environment"]["Variables"]
    declared = stack["template"]["Resources"][logical]["Properties"]["Environment"]["Variables"]
    for var, value in declared.items():
        text = json.dumps(value)
        for logical_secret, arn in stack["secrets"].items():
            if f'"Ref": "{logical_secret}"' in text:
                env[var] = arn
    return {k: str(v) for k, v in env.items()}


def test_the_template_creates_a_stack_on_a_cloudformation_engine(stack):
    assert stack["stack"]["StackStatus"] == "CREATE_COMPLETE"
    made = set(stack["resources"])
    wanted = {k for k, r in stack["template"]["Resources"].items() if r["Type"] not in NOT_CREATED_BY_THE_ENGINE}
    assert wanted <= made, wanted - made
    assert all(r["ResourceStatus"] == "CREATE_COMPLETE" for r in stack["resources"].values())
    out = outputs(stack)
    assert out["TableName"].startswith(stack["name"]) and out["EventBusName"] == f"{stack['name']}-spellcast"
    # The table with the index the runs' recovery reads, the bus, the rules, the queues.
    aws = stack["aws"]
    assert {r["LogicalResourceId"] for r in stack["resources"].values()
            if r["ResourceType"] == "AWS::Events::Rule"} >= {"RunnerFunctionExecutionStarted", "WebhookDueRule"}
    assert aws["sqs"].get_queue_url(QueueName=stack["resources"]["WebhooksQueue"]["PhysicalResourceId"]
                                    .rsplit("/", 1)[-1])


def test_a_user_casts_a_spell_through_the_functions_on_the_stacks_resources(stack):
    aws, out = stack["aws"], outputs(stack)
    session_key = aws["secretsmanager"].get_secret_value(SecretId=stack["secrets"]["TokenSecret"])["SecretString"]
    origin = aws["secretsmanager"].get_secret_value(SecretId=stack["secrets"]["OriginSecret"])["SecretString"]
    # The stack's rule for the runner targets the runner function, which moto's EventBridge cannot
    # invoke (a Lambda target fails its PutEvents): that target is swapped for a queue on the same
    # rule, and the runner function is invoked with what the rule delivers there.
    rule = stack["resources"]["RunnerFunctionExecutionStarted"]["PhysicalResourceId"]
    bus = out["EventBusName"]
    lambda_targets = [t["Id"] for t in aws["events"].list_targets_by_rule(Rule=rule, EventBusName=bus)["Targets"]
                      if ":lambda:" in t["Arn"]]
    assert lambda_targets, "the rule targets the runner function"
    aws["events"].remove_targets(Rule=rule, EventBusName=bus, Ids=lambda_targets)
    queue = aws["sqs"].create_queue(QueueName=f"{stack['name']}-executions")["QueueUrl"]
    queue_arn = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "rehearsal", "Arn": queue_arn}])

    emulators = {}
    try:
        for fn in ("BalanceFunction", "InvoiceFunction", "CastFunction", "RunnerFunction", "StreamFunction",
                   "RunsFunction"):
            env = dict(os.environ, **function_env(stack, fn), SPELLCAST_AWS_TIMEOUT_SECS="120")
            emulators[fn] = Emulator(env, headers={"x-spellcast-origin": origin},
                                     log=OUT / f"rehearsal-{fn}.log")
        assert function_env(stack, "CastFunction")["SPELLCAST_TABLE"] == out["TableName"]

        now = int(time.time())
        user = "rehearsal-" + secrets.token_hex(4)
        token = jwt.encode({"sub": user, "iat": now, "exp": now + 3600, "aud": "spellcast-session",
                            "iss": "spellcast"}, session_key, algorithm="HS256")
        auth = {"authorization": f"Bearer {token}"}

        def call(fn, method, path, **kw):
            e = emulators[fn]
            return e.http.request(method, e.url_of(binary_of(stack, fn), path), headers=auth, **kw)

        balance = call("BalanceFunction", "GET", "/api/v1/me/balance")
        assert balance.status_code == 200, balance.text
        welcome = int(stack["template"]["Parameters"]["WelcomePts"]["Default"])
        assert balance.json()["balances"]["PTS"] == welcome
        quote = call("InvoiceFunction", "POST", "/api/v1/payments/invoice", json={"spellSlug": "hello-sigil", "asset": "PTS"})
        assert quote.status_code == 201, quote.text
        invoice = quote.json()
        cast = call("CastFunction", "POST", "/api/v1/spells/cast",
                    json={"slug": "hello-sigil", "invoiceId": invoice["invoiceId"], "context": {"name": "Stack"}})
        assert cast.status_code == 202, cast.text
        cast = cast.json()

        event = None
        deadline = time.monotonic() + 30
        while event is None and time.monotonic() < deadline:
            for m in aws["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", []):
                body = json.loads(m["Body"])
                if body["detail"].get("runId") == cast["runId"]:
                    event = body
        assert event, "the stack's rule delivered no executionStarted"
        runner = emulators["RunnerFunction"]
        ran = runner.http.post(f"/2015-03-31/functions/{binary_of(stack, 'RunnerFunction')}/invocations", json=event)
        assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text

        stream = emulators["StreamFunction"]
        with connect_sse(stream.http, "GET", stream.url_of("stream", cast["streamUrl"]),
                         headers={"authorization": f"Bearer {invoice['invoiceId']}"}) as source:
            assert source.response.status_code == 200, source.response.read()
            kinds = [sse.event for sse in source.iter_sse() if sse.data]
        assert kinds[-1] == "executionFinished", kinds
        run = call("RunsFunction", "GET", f"/api/v1/runs/{cast['runId']}").json()
        assert run["status"] == "succeeded" and run["outputs"], run
        ledger = call("BalanceFunction", "GET", "/api/v1/me/ledger").json()["entries"]
        after = call("BalanceFunction", "GET", "/api/v1/me/balance").json()["balances"]["PTS"]
        assert after == sum(e["pts"] for e in ledger) == welcome - invoice["costPts"]
    finally:
        for e in emulators.values():
            e.stop()


def binary_of(stack, logical):
    return stack["template"]["Resources"][logical]["Metadata"]["BuildProperties"]["Binary"]
