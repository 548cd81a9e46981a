"""Checks of infra/template.yaml that cfn-lint and `sam validate --lint` do not make: the runtime
and architecture of every function, the stream's invoke mode, the template and the function
crates naming the same functions, the cache behaviours SPEC §6 asks for, and the settings the
functions read."""
import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) kept as {tag: value}."""


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _tagged)


@pytest.fixture(scope="module")
def template():
    return yaml.load((ROOT / "infra" / "template.yaml").read_text(), Loader=CfnLoader)


def functions(template):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def setting(template, fn, key):
    """A function property, falling back to Globals as SAM does."""
    return fn["Properties"].get(key, template["Globals"]["Function"].get(key))


def crate_binaries():
    """{binary name: crate dir} of every Lambda crate under functions/ (a [[bin]] in its Cargo.toml)."""
    found = {}
    for manifest in (ROOT / "functions").glob("*/Cargo.toml"):
        if manifest.parent.name in ("local", "cli"):
            continue  # the local server and the terminal client, not Lambdas
        m = re.search(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', manifest.read_text())
        if m:
            found[m.group(1)] = manifest.parent.name
    return found


def test_every_function_is_rust_on_al2023_arm64_built_by_cargo_lambda(template):
    fns = functions(template)
    assert len(fns) >= 10
    for name, fn in fns.items():
        assert setting(template, fn, "Runtime") == "provided.al2023", name
        assert setting(template, fn, "Architectures") == ["arm64"], name
        assert setting(template, fn, "Handler") == "bootstrap", name
        assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda", name


def test_the_template_and_the_function_crates_name_the_same_functions(template):
    in_template = sorted(fn["Metadata"]["BuildProperties"]["Binary"] for fn in functions(template).values())
    assert in_template == sorted(crate_binaries()), "a function crate without a template entry, or the reverse"
    assert len(set(in_template)) == len(in_template), "two functions build the same binary"


def test_the_stream_streams_through_a_function_url(template):
    stream = [fn for fn in functions(template).values() if fn["Metadata"]["BuildProperties"]["Binary"] == "stream"]
    assert len(stream) == 1
    url = stream[0]["Properties"]["FunctionUrlConfig"]
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    assert url["AuthType"] == "AWS_IAM", "reachable only through CloudFront's origin access control"
    assert stream[0]["Properties"]["Timeout"] == 900
    limit = template["Parameters"]["StreamLimitSeconds"]
    assert limit["MaxValue"] < 900 and limit["Default"] < 900, "the stream must close before Lambda's limit"


def test_the_runner_has_its_rule_and_dead_letters_and_stats_its_schedule(template):
    by_binary = {fn["Metadata"]["BuildProperties"]["Binary"]: fn for fn in functions(template).values()}
    runner = by_binary["runner"]["Properties"]
    rule = next(e["Properties"] for e in runner["Events"].values() if e["Type"] == "EventBridgeRule")
    assert rule["Pattern"] == {"source": ["spellcast"], "detail-type": ["executionStarted"]}
    assert "DeadLetterConfig" in rule and runner["DeadLetterQueue"]["Type"] == "SQS"
    stats = by_binary["stats"]["Properties"]["Events"]
    assert any(e["Type"] == "Schedule" and e["Properties"]["Schedule"] == "rate(15 minutes)" for e in stats.values())
    # SPEC 5.8: recovery every minute, with the input the stats function takes for it.
    tick = next(e["Properties"] for e in stats.values()
                if e["Type"] == "Schedule" and e["Properties"]["Schedule"] == "rate(1 minute)")
    events_rs = (ROOT / "functions" / "lambda" / "src" / "events.rs").read_text()
    assert f'pub const RECOVERY_TICK: &str = r#"{tick["Input"]}"#;' in events_rs


def test_durable_waits_wake_their_runs_through_the_wake_ups_queue(template):
    """SPEC 8.2 on AWS: the runner sends a wake-up with the wait's delay to the wake-ups queue
    (and may send nothing else there), whose target is the runner itself; a message it fails
    on ends among the runner's dead letters; the queue outlives one runner invocation."""
    resources = template["Resources"]
    by_binary = {fn["Metadata"]["BuildProperties"]["Binary"]: fn for fn in functions(template).values()}
    runner = by_binary["runner"]["Properties"]
    source = next(e["Properties"] for e in runner["Events"].values() if e["Type"] == "SQS")
    assert source["Queue"] == {"GetAtt": "WakeUpsQueue.Arn"}
    assert source["BatchSize"] == 1, "one run per invocation: each hands over within its own time"
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = resources["WakeUpsQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * setting(template, by_binary["runner"], "Timeout")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"GetAtt": "RunnerDeadLetterQueue.Arn"}
    assert runner["Environment"]["Variables"]["SPELLCAST_WAKE_UPS_QUEUE_URL"] == {"Ref": "WakeUpsQueue"}
    sends = [st for p in runner["Policies"] for st in p["Statement"] if "sqs:SendMessage" in st["Action"]]
    assert [st["Resource"] for st in sends] == [{"GetAtt": "WakeUpsQueue.Arn"}]
    # No other function may put wake-ups on it.
    for binary, fn in by_binary.items():
        if binary != "runner":
            env = fn["Properties"].get("Environment", {}).get("Variables", {})
            assert "SPELLCAST_WAKE_UPS_QUEUE_URL" not in env, binary


def test_the_functions_that_count_limits_may_update_the_table(template):
    """Rate counters (invoice, cast) and open-stream counters (stream) are table updates."""
    by_binary = {fn["Metadata"]["BuildProperties"]["Binary"]: fn for fn in functions(template).values()}
    for binary in ("invoice", "cast", "stream"):
        actions = [a for p in by_binary[binary]["Properties"]["Policies"] for st in p["Statement"]
                   for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])]
        assert "dynamodb:UpdateItem" in actions, binary


def test_the_table_is_on_demand_with_ttl(template):
    tables = [r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    assert tables
    for t in tables:
        assert t["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
        assert t["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}


def test_the_tables_index_is_the_codes_keys_only_and_the_sweep_may_read_what_it_names(template):
    """The template's table has the index the store queries (name and keys as in
    `DynamoStore::create_table`), holding keys only (scripts/bench-cost: a run head's copy in an
    index with everything was written with every event); the stats function, which sweeps,
    may query it and read the items it names in batches."""
    table = next(r for r in template["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table")
    (index,) = table["Properties"]["GlobalSecondaryIndexes"]
    dynamo_rs = (ROOT / "functions" / "aws" / "src" / "dynamo.rs").read_text()
    assert f'const UNFINISHED_INDEX: &str = "{index["IndexName"]}";' in dynamo_rs
    assert "ProjectionType::KeysOnly" in dynamo_rs and index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["unfinished", "createdAt"]
    by_binary = {fn["Metadata"]["BuildProperties"]["Binary"]: fn for fn in functions(template).values()}
    reads = next(st for p in by_binary["stats"]["Properties"]["Policies"] for st in p["Statement"]
                 if "dynamodb:Query" in st["Action"])
    assert "dynamodb:BatchGetItem" in reads["Action"]
    assert {"Sub": "${Table.Arn}/index/" + index["IndexName"]} in reads["Resource"]


def test_cloudfront_caches_what_it_should_and_nothing_else(template):
    dist = next(r for r in template["Resources"].values() if r["Type"] == "AWS::CloudFront::Distribution")
    behaviours = {b["PathPattern"]: b for b in dist["Properties"]["DistributionConfig"]["CacheBehaviors"]}
    stream = behaviours["/api/v1/spells/*/stream"]
    assert stream["TargetOriginId"] == "stream" and stream["Compress"] is False
    assert stream["CachePolicyId"] == CACHING_DISABLED
    assert behaviours["/api/*"]["CachePolicyId"] == CACHING_DISABLED
    assert "POST" in behaviours["/api/*"]["AllowedMethods"]
    assert behaviours["/spells/*/og*"]["CachePolicyId"] != CACHING_DISABLED
    order = list(behaviours)
    assert order.index("/api/v1/spells/*/stream") < order.index("/api/*"), "the first matching pattern wins"
    assert order.index("/spells/*/og*") < order.index("/spells/*")
    assert order.index("/r/*/og*") < order.index("/r/*")
    origins = {o["Id"] for o in dist["Properties"]["DistributionConfig"]["Origins"]}
    assert {"static", "api", "stream"} <= origins
    assert "api" in (ROOT / "infra" / "edge" / "crawler-route.js").read_text(), "the viewer function names the API origin"


def test_cloudfront_adds_the_functions_security_headers_to_every_response(template):
    """SPEC 2: on AWS the security headers come from a response-headers policy as well, so the
    pages S3 serves have them too; its CSP is the functions' own."""
    dist = next(r for r in template["Resources"].values() if r["Type"] == "AWS::CloudFront::Distribution")
    config = dist["Properties"]["DistributionConfig"]
    for behaviour in [config["DefaultCacheBehavior"]] + config["CacheBehaviors"]:
        assert behaviour.get("ResponseHeadersPolicyId") == {"Ref": "SecurityHeadersPolicy"}, behaviour.get("PathPattern")
    policy = template["Resources"]["SecurityHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]
    headers = policy["SecurityHeadersConfig"]
    assert headers["ContentTypeOptions"]["Override"] is True
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "strict-origin-when-cross-origin"
    rust = (ROOT / "functions" / "http" / "src" / "lib.rs").read_text()
    const = re.search(r'pub const CONTENT_SECURITY_POLICY: &str = "(.*?)";', rust, re.S).group(1)
    const = re.sub(r"\\\n\s*", "", const)  # Rust's line continuations
    # The additions: large image outputs come from the outputs bucket by presigned URL, and the
    # page PUTs file inputs to it by presigned URL.
    bucket = "https://${OutputsBucket.RegionalDomainName}"
    with_outputs = const.replace("img-src 'self' blob:", f"img-src 'self' blob: {bucket}") \
        .replace("connect-src 'self'", f"connect-src 'self' {bucket}")
    assert headers["ContentSecurityPolicy"]["ContentSecurityPolicy"] == {"Sub": with_outputs}
    # An origin's own policy (an output file's sandbox) is kept.
    assert headers["ContentSecurityPolicy"]["Override"] is False


def test_the_outputs_bucket_is_private_written_by_the_runner_and_read_by_runs(template):
    """SPEC §5.7 and §7.3: large files live in S3; the runner writes outputs and reads file
    inputs, `runs` (which presigns the GETs) only reads, and the cast function (which presigns
    upload PUTs) reaches only uploads/ and writes only inputs/."""
    bucket = template["Resources"]["OutputsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    fns = functions(template)
    everything = {"Sub": "${OutputsBucket.Arn}/*"}
    wanted = {
        "RunnerFunction": [(["s3:PutObject", "s3:GetObject"], everything)],
        "RunsFunction": [("s3:GetObject", everything)],
        "CastFunction": [(["s3:PutObject", "s3:GetObject"], {"Sub": "${OutputsBucket.Arn}/uploads/*"}),
                         ("s3:PutObject", {"Sub": "${OutputsBucket.Arn}/inputs/*"})],
    }
    for name, grants in wanted.items():
        props = fns[name]["Properties"]
        assert props["Environment"]["Variables"]["SPELLCAST_OUTPUTS_BUCKET"] == {"Ref": "OutputsBucket"}
        statements = [st for p in props["Policies"] for st in p["Statement"]]
        s3 = [(st["Action"], st["Resource"]) for st in statements if str(st["Action"]).find("s3:") >= 0]
        assert s3 == grants, name
    for name, fn in fns.items():
        if name not in wanted:
            assert "SPELLCAST_OUTPUTS_BUCKET" not in fn["Properties"].get("Environment", {}).get("Variables", {})


def test_unused_uploads_expire_after_a_day_and_browsers_may_put_them(template):
    """SPEC §7.3: an upload no cast used is deleted after a day (the lifecycle rule on uploads/;
    a used one was copied to inputs/); the page PUTs straight to the presigned URL (CORS)."""
    bucket = template["Resources"]["OutputsBucket"]["Properties"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert [(r["Prefix"], r["ExpirationInDays"], r["Status"]) for r in rules] == [("uploads/", 1, "Enabled")]
    cors = bucket["CorsConfiguration"]["CorsRules"]
    assert [r["AllowedMethods"] for r in cors] == [["PUT"]]
    assert cors[0]["AllowedHeaders"] == ["content-type"]
    cast = functions(template)["CastFunction"]["Properties"]
    assert {e["Properties"]["Path"] for e in cast["Events"].values()} == {"/api/v1/spells/cast", "/api/v1/uploads"}


def test_every_setting_the_template_passes_is_one_the_functions_read(template):
    settings = (ROOT / "functions" / "lambda" / "src" / "settings.rs").read_text()
    read = set(re.findall(r'"(SPELLCAST_[A-Z_]+)"', settings))
    passed = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for fn in functions(template).values():
        passed |= set(fn["Properties"].get("Environment", {}).get("Variables", {}))
    passed = {p for p in passed if p.startswith("SPELLCAST_")}
    assert passed <= read, passed - read
    for required in ("SPELLCAST_TABLE", "SPELLCAST_EVENT_BUS", "SPELLCAST_SESSION_KEY_ARN",
                     "SPELLCAST_INVOICE_KEY_ARN"):
        assert required in passed


def test_webhooks_are_fed_by_their_queue_with_dead_letters_and_the_rule(template):
    """SPEC §3.13 on AWS: `webhookDue` events reach an SQS queue (the rule, allowed by the queue's
    policy), whose target is the webhooks function; failed messages end in a dead-letter queue."""
    resources = template["Resources"]
    by_binary = {fn["Metadata"]["BuildProperties"]["Binary"]: fn for fn in functions(template).values()}
    hooks = by_binary["webhooks"]["Properties"]
    source = next(e["Properties"] for e in hooks["Events"].values() if e["Type"] == "SQS")
    assert source["Queue"] == {"GetAtt": "WebhooksQueue.Arn"}
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"], "one bad message must not retry a batch"
    queue = resources["WebhooksQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"GetAtt": "WebhooksDeadLetterQueue.Arn"}
    assert queue["VisibilityTimeout"] >= 6 * setting(template, by_binary["webhooks"], "Timeout")
    assert hooks["Environment"]["Variables"]["SPELLCAST_WEBHOOKS_QUEUE_URL"] == {"Ref": "WebhooksQueue"}
    rule = resources["WebhookDueRule"]["Properties"]
    assert rule["EventPattern"] == {"source": ["spellcast"], "detail-type": ["webhookDue"]}
    assert rule["Targets"][0]["Arn"] == {"GetAtt": "WebhooksQueue.Arn"}
    eventbridge_rs = (ROOT / "functions" / "aws" / "src" / "eventbridge.rs").read_text()
    assert 'pub const WEBHOOK_DUE: &str = "webhookDue";' in eventbridge_rs
    # Every function that ends runs announces their deliveries.
    for binary in ("runner", "cancel", "stats"):
        actions = [a for p in by_binary[binary]["Properties"]["Policies"] for st in p["Statement"]
                   for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])]
        assert "events:PutEvents" in actions, binary


def test_a_custom_domain_a_web_acl_and_access_logs_are_the_deployers_to_set(template):
    """SPEC §9.3: optional DomainName + CertificateArn (viewers on TLS 1.2 or later), WebAclArn,
    and access logs on, for the edge and the API."""
    params = template["Parameters"]
    for name in ("DomainName", "CertificateArn", "WebAclArn"):
        assert params[name]["Default"] == "", f"{name} is optional"
    config = template["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    assert config["Aliases"] == {"If": ["HasDomain", [{"Ref": "DomainName"}], {"Ref": "AWS::NoValue"}]}
    with_domain, without = config["ViewerCertificate"]["If"][1:]
    assert with_domain == {"AcmCertificateArn": {"Ref": "CertificateArn"}, "SslSupportMethod": "sni-only",
                           "MinimumProtocolVersion": "TLSv1.2_2021"}
    assert without == {"CloudFrontDefaultCertificate": True}
    assert config["WebACLId"] == {"If": ["HasWebAcl", {"Ref": "WebAclArn"}, {"Ref": "AWS::NoValue"}]}
    # Both halves of the domain are needed: a name without a certificate changes nothing.
    assert template["Conditions"]["HasDomain"] == {"And": [{"Not": [{"Equals": [{"Ref": "DomainName"}, ""]}]},
                                                           {"Not": [{"Equals": [{"Ref": "CertificateArn"}, ""]}]}]}
    assert config["Logging"]["Bucket"] == {"GetAtt": "LogsBucket.RegionalDomainName"}
    logs = template["Resources"]["LogsBucket"]["Properties"]
    assert all(logs["PublicAccessBlockConfiguration"].values()), "the logs are private"
    assert logs["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 90
    api = template["Resources"]["Api"]["Properties"]["AccessLogSettings"]
    assert api["DestinationArn"] == {"GetAtt": "ApiAccessLogs.Arn"}
    assert '"status":"$context.status"' in api["Format"]


def statements(fn):
    """Every IAM statement of a function's inline policies."""
    return [st for policy in fn["Properties"].get("Policies", []) if isinstance(policy, dict)
            for st in policy.get("Statement", [])]


def as_list(v):
    return v if isinstance(v, list) else [v]


# The functions that verify or sign tokens (sessions, invoices, a run's watch token).
TOKEN_FUNCTIONS = {"InvoiceFunction", "CastFunction", "StreamFunction", "RunsFunction", "CancelFunction",
                   "BalanceFunction"}


def test_no_key_is_in_any_functions_environment_and_only_token_functions_read_the_keys(template):
    """SPEC §9.3: the functions name their keys' secrets and read them at start, so a role that may
    read function configurations learns no key; invoices have a key of their own."""
    text = (ROOT / "infra" / "template.yaml").read_text()
    # The one dynamic reference left: the LLM API key the runner's tools read from their
    # environment (README "Tool configuration"); no token or webhook key.
    # CloudFront's origin header value is in the distribution's configuration, not a function's.
    assert sorted(re.findall(r"\{\{resolve:secretsmanager:\$\{(\w+)\}", text)) == ["LlmApiKeySecretArn", "OriginSecret"]
    resources = template["Resources"]
    assert resources["InvoiceKeySecret"]["Type"] == "AWS::SecretsManager::Secret"
    for name, fn in functions(template).items():
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        reads = [st for st in statements(fn) if "secretsmanager:GetSecretValue" in as_list(st["Action"])
                 and st["Resource"] != {"Ref": "OriginSecret"}]
        if name in TOKEN_FUNCTIONS:
            assert env["SPELLCAST_INVOICE_KEY_ARN"] == {"Ref": "InvoiceKeySecret"}, name
            assert "SPELLCAST_SESSION_KEY_ARN" in env, name
            assert len(reads) == 1 and len(as_list(reads[0]["Resource"])) == 2, name
        elif name == "StatsFunction":
            assert "SPELLCAST_WEBHOOK_SECRET_ARN" in env and len(reads) == 1
        else:
            assert not reads and not any(k.endswith("_KEY_ARN") for k in env), name


def test_no_policy_grants_a_wildcard_action_or_resource(template):
    """Least privilege, read off the template: named actions only, on named resources (a key
    prefix of the table where a function writes only some of its items)."""
    found = []
    for name, fn in functions(template).items():
        for policy in fn["Properties"].get("Policies", []):
            if not isinstance(policy, dict):
                found.append(f"{name}: a managed policy {policy}")
                continue
            for st in policy.get("Statement", []):
                for action in as_list(st["Action"]):
                    if "*" in action:
                        found.append(f"{name}: action {action}")
                for resource in as_list(st.get("Resource", [])):
                    if resource == "*" or isinstance(resource, str) and resource.endswith(":*"):
                        found.append(f"{name}: resource {resource}")
    assert not found, found


def test_the_functions_that_must_not_touch_balances_are_fenced_by_key_prefix(template):
    """Every function writes only under the key prefixes it owns (SPEC §9.3). The webhooks function
    talks to the internet: it may write deliveries and webhook secrets, never a balance or the
    ledger; only the functions that move points may touch balances."""
    fns = functions(template)

    def writes(fn):
        out = []
        for st in statements(fn):
            acts = {a for a in as_list(st["Action"]) if a in ("dynamodb:PutItem", "dynamodb:UpdateItem",
                                                            "dynamodb:DeleteItem")}
            if acts:
                keys = st.get("Condition", {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
                out.append((acts, keys))
        return out

    for name, fn in fns.items():
        for acts, keys in writes(fn):
            assert keys, f"{name} may {sorted(acts)} any item"
    for _, keys in writes(fns["WebhooksFunction"]):
        assert not any(k.startswith(("USER#", "LEDGER#", "GRANT#")) for k in keys), keys
    movers = {name for name, fn in fns.items() for _, keys in writes(fn) if "USER#*" in keys}
    assert movers == {"InvoiceFunction", "CastFunction", "RunnerFunction", "StatsFunction", "CancelFunction",
                      "BalanceFunction", "AdminFunction"}, movers
    for acts, keys in writes(fns["CancelFunction"]):
        if "dynamodb:DeleteItem" in acts:
            assert set(keys) == {"SHARE#*", "RUNSHARE#*"}, "cancel deletes nothing but shares"
    admin = fns["AdminFunction"]["Properties"]
    assert admin["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"


def test_the_api_answers_only_requests_that_came_through_cloudfront(template):
    """SPEC §9.3: CloudFront sends a secret header to the HTTP API; every function behind the API
    reads the secret at start and refuses requests without it (the stream's Function URL is
    closed by origin access control, the admin URL by IAM)."""
    fns = functions(template)
    dist = template["Resources"]["Distribution"]["Properties"]["DistributionConfig"]
    api = next(o for o in dist["Origins"] if o["Id"] == "api")
    assert api["OriginCustomHeaders"] == [{"HeaderName": "x-spellcast-origin",
                                           "HeaderValue": {"Sub": "{{resolve:secretsmanager:${OriginSecret}:SecretString}}"}}]
    for name, fn in fns.items():
        on_api = any(e["Type"] == "HttpApi" for e in fn["Properties"].get("Events", {}).values())
        env = fn["Properties"].get("Environment", {}).get("Variables", {})
        reads = [st for st in statements(fn) if st["Resource"] == {"Ref": "OriginSecret"}]
        if on_api:
            assert env.get("SPELLCAST_ORIGIN_SECRET_ARN") == {"Ref": "OriginSecret"}, name
            assert [as_list(st["Action"]) for st in reads] == [["secretsmanager:GetSecretValue"]], name
        else:
            assert "SPELLCAST_ORIGIN_SECRET_ARN" not in env and not reads, name
    assert fns["StreamFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"


def test_the_functions_that_could_starve_the_rest_can_be_capped(template):
    """Open streams and runs hold an instance each for minutes: their reserved concurrency is a
    parameter (0 by default, since a new account's pool is too small to reserve from); webhook
    deliveries wait on the internet, so their queue lets at most 10 instances deliver at once."""
    fns = functions(template)
    for name, param in (("StreamFunction", "StreamConcurrency"), ("RunnerFunction", "RunnerConcurrency")):
        reserved = fns[name]["Properties"]["ReservedConcurrentExecutions"]
        assert reserved["If"][1] == {"Ref": param}, name
        assert template["Parameters"][param]["Default"] == 0
    due = fns["WebhooksFunction"]["Properties"]["Events"]["Due"]["Properties"]
    assert due["ScalingConfig"]["MaximumConcurrency"] == 10
