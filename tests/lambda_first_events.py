"""Every Lambda function of the template, the first event each is given when it is started on its
own (scripts/bench-lambda times start to first answer with these), and the environment it starts
with. Shared by the benchmark and by the test that starts every function with it
(test_lambda_functions.py), so the benchmark cannot stop running unseen."""

# The template's functions (BuildProperties: Binary), checked against infra/template.yaml.
FUNCTIONS = ["meta", "og", "invoice", "cast", "stream", "runs", "balance", "cancel", "stats", "runner",
             "webhooks", "removed", "admin"]


def http_event(method, path):
    """An HTTP API (payload 2.0) request as the function gets it."""
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"host": "bench.example", "user-agent": "bench"},
            "requestContext": {"accountId": "1", "apiId": "a", "domainName": "bench.example", "domainPrefix": "bench",
                               "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                                        "userAgent": "bench"},
                               "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "t", "timeEpoch": 0},
            "isBase64Encoded": False}


# The first request each function answers: unauthenticated where it needs a caller (the answer is
# a 401 or 403 after the whole start); meta and the runner read DynamoDB.
FIRST_EVENTS = {
    "meta": http_event("GET", "/api/v1/spells/hello-sigil/meta"),
    "og": http_event("GET", "/spells/hello-sigil/og"),
    "invoice": http_event("POST", "/api/v1/payments/invoice"),
    "cast": http_event("POST", "/api/v1/spells/cast"),
    "stream": http_event("GET", "/api/v1/spells/hello-sigil/stream"),
    "runs": http_event("GET", "/api/v1/runs/r1"),
    "balance": http_event("GET", "/api/v1/me/balance"),
    "cancel": http_event("POST", "/api/v1/runs/r1/cancel"),
    "stats": http_event("POST", "/api/v1/internal/stats/refresh"),
    "runner": {"detail-type": "executionStarted", "source": "spellcast", "detail": {"runId": "none", "slug": "x"}},
    "webhooks": {"Records": []},
    "removed": http_event("POST", "/api/v1/payments/confirm"),
    "admin": http_event("POST", "/api/v1/admin/grants"),
}


def function_env(base, runtime_api, table):
    """The environment a function starts with: `base` (the AWS endpoint and credentials), the
    emulator's runtime API, and the names of the table, bus, bucket and queues it reads at start."""
    return dict(base, AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
                AWS_LAMBDA_RUNTIME_API=runtime_api, AWS_LAMBDA_FUNCTION_NAME="_",
                SPELLCAST_TABLE=table, SPELLCAST_EVENT_BUS=table, SPELLCAST_OUTPUTS_BUCKET=table,
                SPELLCAST_WEBHOOKS_QUEUE_URL=f"http://127.0.0.1:9/queue/{table}",
                SPELLCAST_TOKEN_SECRET="b" * 32, RUST_LOG="warn")
