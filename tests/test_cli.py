"""Issue 12, item 4: the terminal client `spellcast` end to end against the real local server:
login, quote, cast with outputs saved, plain progress lines when piped, exit codes for failure,
bad input and cancel, cancel from another terminal, and resuming after the connection is cut
mid-run without losing or repeating an event."""
import json
import os
import pathlib
import re
import shlex
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import binary


def cli_binary():
    return pathlib.Path(binary()).parent / "spellcast"


class Cli:
    def __init__(self, url, home):
        self.env = dict(os.environ, SPELLCAST_URL=url, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
        self.env.pop("SPELLCAST_TOKEN", None)
        self.home = home

    def run(self, *args, timeout=60):
        return subprocess.run([str(cli_binary()), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.home)

    def start(self, *args):
        return subprocess.Popen([str(cli_binary()), *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.home)

    def json(self, *args, code=0, timeout=60):
        r = self.run("--json", *args, timeout=timeout)
        assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout)


@pytest.fixture
def cli(server, tmp_path):
    c = Cli(server.url, tmp_path)
    session = c.json("login", "--dev", "--grant", "500")
    assert session["balancePts"] == 500
    return c


def test_login_quote_cast_and_the_outputs_saved(cli, tmp_path):
    token = tmp_path / ".config" / "spellcast" / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600, "the saved session is its owner's only"
    spells = {s["slug"]: s for s in cli.json("spells")["spells"]}
    assert {"hello-sigil", "slow-scroll", "fizzle"} <= set(spells)
    quote = cli.json("quote", "hello-sigil")
    assert quote["costPts"] == spells["hello-sigil"]["avgCostPtsCached"]
    assert quote["costPts"] > 0 and quote["invoiceId"]

    run = cli.json("cast", "hello-sigil", "--input", "name=Ada", "--input", "mood=calm")
    assert run["status"] == "succeeded" and run["refundedPts"] == 0
    assert run["events"] == run["lastEventId"] > 2, "every event once"
    files = [tmp_path / p for p in run["outputs"]]  # relative to where it ran
    assert files and all(f.parent == tmp_path / "spellcast-outputs" / run["runId"] for f in files)
    pngs = [f for f in files if f.suffix == ".png"]
    assert pngs and pngs[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert any("Ada" in f.read_text(errors="replace") for f in files if f.suffix == ".txt")

    runs = cli.json("runs")["runs"]
    assert [(r["runId"], r["status"]) for r in runs] == [(run["runId"], "succeeded")]
    listed = cli.run("runs")
    assert listed.returncode == 0 and run["runId"] in listed.stdout and "succeeded" in listed.stdout
    balance = cli.json("balance")
    assert balance["balances"]["PTS"] == 500 - run["costPts"]
    ledger = cli.json("ledger")["entries"]
    assert [e["kind"] for e in ledger][:2] == ["debit", "grant"]
    assert sum(e["pts"] for e in ledger) == balance["balances"]["PTS"]


def test_progress_is_plain_lines_when_piped(cli):
    r = cli.run("cast", "slow-scroll", "-i", "topic=owls", "-i", "lines=2")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert not any("\x1b[" in line for line in lines), "no terminal escapes in a pipe"
    for i, title in enumerate(["Unroll the scroll", "Read the runes", "Copy the lines", "Seal it with wax",
                               "File the record"], start=1):
        done = [line for line in lines if line.startswith(f"[{i}/5] {title}: succeeded")]
        assert len(done) == 1, (title, lines)
    assert any(line.startswith("[2/5] Read the runes: running") for line in lines), lines
    assert "Done: 2 output(s)" in r.stdout


def test_a_models_answer_is_printed_as_it_comes_and_carried_by_json(cli, tmp_path):
    r = cli.run("cast", "oracle", "-i", "question=What do owls eat?", timeout=120)
    assert r.returncode == 0, r.stderr
    run_dir = next((tmp_path / "spellcast-outputs").iterdir())
    answer = (run_dir / "0.txt").read_text() if (run_dir / "0.txt").exists() else None
    saved = sorted(p.name for p in run_dir.iterdir())
    assert answer is not None, saved
    # Piped: the answer streams to stdout (ended by a newline when the step ends), progress to stderr.
    assert r.stdout.startswith(answer + "\n"), (r.stdout, answer)
    assert "Done: 3 output(s)" in r.stdout
    assert any(line.startswith("[1/3] Consult the oracle: succeeded") for line in r.stderr.splitlines())
    doc = cli.json("cast", "oracle", "-i", "question=Is the moon cheese?", timeout=120)
    assert doc["status"] == "succeeded"
    streamed = doc["streamed"]["answer"]
    assert streamed.strip()
    first = pathlib.Path(doc["outputs"][0])
    assert (first if first.is_absolute() else tmp_path / first).read_text() == streamed


def test_a_token_file_that_was_readable_by_others_is_narrowed_at_login(server, tmp_path):
    kept = tmp_path / ".config" / "spellcast" / "token"
    kept.parent.mkdir(parents=True)
    kept.write_text("old")
    kept.chmod(0o644)
    c = Cli(server.url, tmp_path)
    assert c.json("login", "--dev")["balancePts"] >= 0
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600, "the session is its owner's only"
    assert kept.read_text() != "old"


def test_a_file_input_is_uploaded_from_a_path(cli, tmp_path):
    from test_uploads import png
    picture = png(6, 4, seed=9)
    (tmp_path / "pic.png").write_bytes(picture)
    doc = cli.json("cast", "looking-glass", "-i", "picture=@pic.png", "-i", "caption=@@home")
    assert doc["status"] == "succeeded", doc
    first = pathlib.Path(doc["outputs"][0])
    assert (first if first.is_absolute() else tmp_path / first).read_bytes() == picture, "the picture came back"
    reading = next(pathlib.Path(p) for p in doc["outputs"] if str(p).endswith(".txt"))
    text = (reading if reading.is_absolute() else tmp_path / reading).read_text()
    assert text.startswith(f"@home: image/png, {len(picture)} bytes"), text
    # A file that is not there, and one whose bytes are not a picture: bad input, nothing paid.
    missing = cli.run("cast", "looking-glass", "-i", "picture=@nowhere.png")
    assert missing.returncode == 2 and "nowhere.png" in missing.stderr, missing
    (tmp_path / "fake.png").write_text("not a picture at all")
    fake = cli.run("cast", "looking-glass", "-i", "picture=@fake.png")
    assert fake.returncode == 2 and "/context/picture" in fake.stderr and "text/plain" in fake.stderr, fake
    assert cli.json("balance")["balances"]["PTS"] == 500 - doc["costPts"]


def test_failure_bad_input_and_refusals_have_their_exit_codes(cli, tmp_path):
    failed = cli.run("cast", "fizzle", "-i", "wish=gold")
    assert failed.returncode == 3, failed
    assert "refunded" in failed.stdout and "spark" in failed.stderr
    assert "Failed at “Strike the spark”: The spark fizzled" in failed.stderr, failed.stderr
    failure = [line for line in failed.stderr.splitlines() if line.startswith("Failed")]
    assert len(failure) == 1 and failure[0].count("Strike the spark") == 1, "the step is named once"
    missing = cli.run("cast", "slow-scroll")  # topic is required
    assert missing.returncode == 2 and "/context/topic" in missing.stderr, missing
    assert cli.run("cast", "slow-scroll", "--input", "topic").returncode == 2
    (tmp_path / "inputs.json").write_text("[1, 2]")
    assert cli.run("cast", "slow-scroll", "--input-json", "inputs.json").returncode == 2
    unknown = cli.run("cast", "no-such-spell")
    assert unknown.returncode == 1 and "spell_not_found" in unknown.stderr
    hook = cli.run("cast", "hello-sigil", "-i", "name=Ada", "--webhook", "http://hooks.example/in")
    assert hook.returncode == 2 and "invalid_webhook" in hook.stderr and "https" in hook.stderr, hook
    events = cli.run("cast", "hello-sigil", "-i", "name=Ada", "--webhook", "https://hooks.example/in",
                     "--webhook-event", "finished")
    assert events.returncode == 2 and "finished" in events.stderr, events
    balance = cli.json("balance")["balances"]["PTS"]
    assert balance == 500, "nothing was spent by what failed or was refused"
    anonymous = Cli(cli.env["SPELLCAST_URL"], tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    r = anonymous.run("balance")
    assert r.returncode == 1 and "login" in r.stderr
    assert Cli("http://127.0.0.1:9", tmp_path).run("balance", "--token", "x").returncode == 1


def test_a_run_canceled_from_another_terminal_ends_the_cast_with_its_code(cli):
    cast = cli.start("cast", "long-wait")
    try:
        first = cast.stderr.readline()
        assert "run " in first, first
        run_id = first.strip().rsplit(" ", 1)[1]
        time.sleep(1.0)  # inside the 30 s wait
        canceled = cli.json("cancel", run_id)
        assert canceled["status"] in ("canceling", "canceled")
        out, err = cast.communicate(timeout=30)
    finally:
        cast.kill()
    assert cast.returncode == 4, (out, err)
    assert "Canceled" in out
    again = cli.run("cancel", run_id)
    assert again.returncode == 0 and "Canceled" in again.stdout


class CuttableProxy:
    """A TCP forwarder to the server whose open connections can be cut at once."""

    def __init__(self, target):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open = []

    def close(self):
        self.listener.close()
        self.cut()


def test_a_cut_connection_is_resumed_without_losing_or_repeating_an_event(cli, server):
    proxy = CuttableProxy(server.url)
    cli.env["SPELLCAST_URL"] = proxy.url
    cast = cli.start("--json", "cast", "slow-scroll", "-i", "topic=cuts")
    try:
        time.sleep(1.5)  # mid-run: a step or two done
        proxy.cut()
        time.sleep(1.0)
        proxy.cut()  # and once more, after it resumed
        out, err = cast.communicate(timeout=60)
    finally:
        cast.kill()
        proxy.close()
    assert cast.returncode == 0, (out, err)
    run = json.loads(out)
    assert run["status"] == "succeeded"
    assert "connection lost" in err and "resuming" in err, err
    assert run["events"] == run["lastEventId"], "each event once: none lost, none repeated"


def test_a_terminal_shows_a_bar_per_step_and_one_overall(cli, tmp_path):
    """On a terminal (tmux gives it one) the cast draws indicatif bars, redrawn in place."""
    session = f"spellcast-{os.getpid()}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cli.env.items()
                   if k in ("SPELLCAST_URL", "HOME", "XDG_CONFIG_HOME"))
    command = f"cd {shlex.quote(str(tmp_path))} && env {env} {shlex.quote(str(cli_binary()))} cast slow-scroll -i topic=tty; sleep 60"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True)
    screens = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True, check=True).stdout
            screens.append(screen)
            if "Done:" in screen:
                break
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    out = pathlib.Path(os.environ.get("SPELLCAST_TEST_OUTPUT", "test-output"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli-tmux-screens.txt").write_text("\n----\n".join(screens))
    final = screens[-1]
    assert "Done: 2 output(s)" in final, final
    bar = re.compile(r"^\s*(.+?) \[([=> ]{30})\]\s+(\d+)%", re.M)
    mid = [dict((m.group(1).strip(), int(m.group(3))) for m in bar.finditer(s)) for s in screens]
    # Some screen showed the run part way: the overall bar between 0 and 100 % with its steps.
    partial = [m for m in mid if "overall" in m and 0 < m["overall"] < 100]
    assert partial, screens[:3]
    assert {"Unroll the scroll", "Read the runes", "Copy the lines", "Seal it with wax", "File the record"} <= set(partial[-1])
    done = mid[-1]
    assert done.get("overall") == 100 and all(v == 100 for v in done.values()), final
    # Redrawn in place: each bar is on the final screen once.
    assert final.count("Read the runes") == 1, final


def test_a_cast_can_name_a_webhook_receiver(start, tmp_path):
    from test_webhooks import FAST, Receiver
    server = start(*FAST)
    hook = Receiver()
    try:
        c = Cli(server.url, tmp_path)
        c.json("login", "--dev", "--grant", "100")
        run = c.json("cast", "hello-sigil", "-i", "name=Ada", "--webhook", hook.url,
                     "--webhook-event", "start", "--webhook-event", "completed")
        got = hook.wait_for(2)
        assert [json.loads(g["body"])["type"] for g in got] == ["run.started", "run.completed"]
        assert json.loads(got[1]["body"])["data"]["runId"] == run["runId"]
    finally:
        hook.close()
