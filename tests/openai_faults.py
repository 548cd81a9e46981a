"""An OpenAI-format chat server that misbehaves on purpose, for the faults a real model server
does not produce on demand: a 503 before it answers, a stream cut mid-answer, a stream without
the usage chunk, a refusal that echoes the key, a stream that goes silent, a slow answer to
cancel. Answers follow the OpenAI streaming format (`data: {chunk}` lines, the usage chunk with
`choices: []`, then `data: [DONE]`). Each behaviour is chosen by the request's `model`; "once"
behaviours misbehave on the first request for a prompt and answer properly after that."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ["The", " stars", " are", " far", ",", " and", " the", " oracle", " is", " near", "."]


class Faults:
    def __init__(self, tls=None):
        """`tls`: a server-side ssl.SSLContext, to serve https."""
        self.requests = []  # (model, body, headers) of every request
        self.seen = {}
        self.closed = threading.Event()  # set when a client dropped a slow answer
        self.lock = threading.Lock()
        faults = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with faults.lock:
                    faults.requests.append((body["model"], body, dict(self.headers)))
                    key = (body["model"], json.dumps(body["messages"]))
                    first = key not in faults.seen
                    faults.seen[key] = True
                faults.answer(self, body, first)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, h, body, first):
        model = body["model"]
        if model == "flaky" and first:
            return self.refuse(h, 503, "overloaded, try again")
        if model == "bad":
            key = h.headers.get("authorization", "").removeprefix("Bearer ")
            return self.refuse(h, 400, f"unknown parameter for key {key}")
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.end_headers()
        words = WORDS[: max(1, min(len(WORDS), body["max_tokens"]))]
        pause = 0.3 if model == "slow" else 0.02
        try:
            for i, word in enumerate(words):
                if model == "cut" and first and i == 4:
                    return  # the connection closes mid-answer: no usage, no [DONE]
                if model == "idle" and i == 2:
                    time.sleep(30)
                    return
                chunk = {"id": "c1", "object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                self.send(h, chunk)
                time.sleep(pause)
            self.send(h, {"id": "c1", "object": "chat.completion.chunk", "model": model,
                          "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if model != "nousage":
                self.send(h, {"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [],
                              "usage": {"prompt_tokens": 17, "completion_tokens": len(words),
                                        "total_tokens": 17 + len(words)}})
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.closed.set()

    @staticmethod
    def send(h, chunk):
        h.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        h.wfile.flush()

    @staticmethod
    def refuse(h, status, message):
        data = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
