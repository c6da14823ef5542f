"""`dspex serve` as a user runs it: a real subprocess, real HTTP, a real LM server."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.testing import LMServer
from dspex.testing.server import Fault

from .conftest import Served, start_serve

jsonschema = pytest.importorskip("jsonschema")


def _events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


# ---------------------------------------------------------------- calls


def test_call_returns_outputs_and_usage(served: Served, lm: LMServer) -> None:
    response = served.call("qa", {"question": "What is 6 * 7?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["program"] == "qa"
    assert isinstance(body["outputs"]["answer"], int) and body["outputs"]["reasoning"]
    assert body["usage"]["openai/test"]["prompt_tokens"] > 0
    assert len(lm.requests) == 1 and "What is 6 * 7?" in lm.requests[0].last_user_message


def test_stream_sends_field_chunks_then_the_prediction(served: Served, lm: LMServer) -> None:
    response = served.call("predict", {"question": "Name a river"}, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["prediction", "done"] and kinds.count("chunk") >= 2
    chunks = [data for kind, data in events if kind == "chunk"]
    assert {c["field"] for c in chunks} == {"answer"} and chunks[-1]["is_last"]
    final = events[-2][1]["outputs"]["answer"]
    assert "".join(c["chunk"] for c in chunks) == final and final


def test_stream_of_a_module_without_astream_sends_the_prediction(served: Served) -> None:
    events = _events(served.call("echo", {"text": "ab", "times": 2}, stream=True).text)
    assert events[0] == (
        "prediction",
        {"program": "echo", "outputs": {"echo": "abab"}, "usage": {}},
    )


def test_concurrent_requests_keep_their_own_usage_and_settings(
    served: Served, lm: LMServer
) -> None:
    questions = [f"question {'x' * (i * 40)}?" for i in range(6)]
    alone = {q: served.call("qa", {"question": q}).json()["usage"] for q in questions}
    results: dict[str, Any] = {}

    def run(q: str) -> None:
        results[q] = served.call("qa", {"question": q}).json()["usage"]

    threads = [threading.Thread(target=run, args=(q,)) for q in questions * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == alone  # each call billed exactly its own LM request
    assert len({json.dumps(u) for u in alone.values()}) == len(questions)
    # a program that sets a settings scope and never resets it does not leak it
    assert served.call("leaky", {}).json()["outputs"]["model"] == "openai/leaked"
    assert served.call("which_lm", {}).json()["outputs"]["model"] == "openai/test"


# ---------------------------------------------------------------- programs


def test_list_programs_shows_signatures_and_implementations(served: Served) -> None:
    programs = {p["name"]: p for p in served.client.get("/v1/programs").json()["programs"]}
    assert set(programs) >= {"qa", "predict", "echo", "gate"}
    qa = programs["qa"]
    assert qa["signature"] == "question -> reasoning, answer"
    assert qa["outputs"][1] == {"name": "answer", "type": "int", "desc": None}
    assert {(m["path"], m["type"], m["implementation"]) for m in qa["modules"]} == {
        ("self", "ChainOfThought", "native"),
        ("self.predict", "Predict", "native"),
    }
    assert programs["echo"]["inputs"][1]["name"] == "times" and programs["echo"]["outputs"] is None


def test_load_saved_program_call_and_delete(served: Served, lm: LMServer, tmp_path: Path) -> None:
    program = dspex.Predict("topic -> summary")
    program.demos = [dspex.Example(topic="demo-topic-7", summary="demo-summary-7")]
    program.save(tmp_path / "p.json")
    state = json.loads((tmp_path / "p.json").read_text())
    spec = {"name": "summ", "class": "dspex:Predict", "args": {"signature": "topic -> summary"}}
    created = served.client.post("/v1/programs", json={**spec, "state": state})
    assert created.status_code == 201, created.text
    assert created.json()["origin"] == "loaded"
    assert served.client.post("/v1/programs", json=spec).status_code == 422  # name taken
    response = served.call("summ", {"topic": "rivers"})
    assert response.status_code == 200 and response.json()["outputs"]["summary"]
    assert "demo-topic-7" in json.dumps(lm.requests[-1].messages)  # the saved demos were loaded
    assert "/v1/programs/summ/call" in served.client.get("/openapi.json").json()["paths"]
    assert served.client.delete("/v1/programs/summ").json() == {"deleted": "summ"}
    gone = served.call("summ", {"topic": "rivers"})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "ProgramNotFound"
    assert served.client.delete("/v1/programs/summ").status_code == 404
    assert "/v1/programs/summ/call" not in served.client.get("/openapi.json").json()["paths"]


def test_load_refuses_classes_outside_the_allow_list(served: Served) -> None:
    for path in (
        "os:system",
        "subprocess:Popen",
        "dspex.settings:Settings",
        "dspex.modules.predict:logging.Logger",  # a walk through a re-exported module
        "dspex.modules.predict:_serialize",  # a private name
    ):
        response = served.client.post("/v1/programs", json={"name": "bad", "class": path})
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["type"] == "SecurityError"
    bad_state = {"name": "bad", "class": "dspex:Predict", "args": {"signature": "a -> b"},
                 "state": {"nope": {}}}  # fmt: skip
    assert served.client.post("/v1/programs", json=bad_state).status_code == 422
    assert served.client.post("/v1/programs", json={"name": "a/b", "class": "x"}).status_code == 422


def test_load_a_pipeline_spec(served: Served, lm: LMServer) -> None:
    spec = {
        "name": "pipe",
        "pipeline": [
            ["native", "dspy.Predict", {"signature": "question -> answer"}],
            {"template": "A: {{ answer }}", "output": "shown"},
        ],
    }
    assert served.client.post("/v1/programs", json=spec).status_code == 201
    try:
        body = served.call("pipe", {"question": "why?"}).json()
        assert body["outputs"]["shown"] == f"A: {body['outputs']['answer']}"
        assert body["usage"]["openai/test"]["prompt_tokens"] > 0
        bad = {"name": "pipe2", "pipeline": [["native", "os.system", {}]]}
        assert served.client.post("/v1/programs", json=bad).status_code == 403
        bad = {"name": "pipe2", "pipeline": [{"frobnicate": 1}]}
        assert served.client.post("/v1/programs", json=bad).status_code == 422
    finally:
        served.client.delete("/v1/programs/pipe")


# ---------------------------------------------------------------- errors


def test_bad_input_is_422(served: Served) -> None:
    missing = served.call("qa", {})
    assert missing.status_code == 422 and missing.json()["error"]["detail"][0]["loc"] == [
        "question"
    ]
    assert served.call("qa", {"question": "q", "extra": 1}).status_code == 422
    assert served.call("echo", {"text": "a", "times": "many"}).status_code == 422
    assert served.client.post("/v1/programs/qa/call", content=b"{not json").status_code == 422
    assert served.client.post("/v1/programs/qa/call", json={"input": {}}).status_code == 422
    assert served.call("qa", {"question": "q"}, timeout=-1).status_code == 422
    assert served.call("nope", {}).status_code == 404


@pytest.mark.parametrize(
    ("fault", "status", "error", "retry_after"),
    [
        (Fault(status=500), 502, "LMServerError", None),
        (Fault(status=401), 502, "LMAuthError", None),
        (Fault(status=429, headers={"retry-after": "7"}), 503, "LMRateLimitError", "7"),
        (Fault(body="[[ ## nothing ## ]]"), 502, "AdapterParseError", None),
    ],
)
def test_lm_errors_map_to_http(
    served: Served, lm: LMServer, fault: Fault, status: int, error: str, retry_after: str | None
) -> None:
    if fault.body is not None:
        lm.reply("no markers at all", "still nothing")
    else:
        lm.fault(fault)
    response = served.call("qa", {"question": "q"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error
    assert response.headers.get("retry-after") == retry_after


def test_deadline_is_504_and_the_call_is_cancelled(served: Served, lm: LMServer) -> None:
    lm.fault(Fault(hang=True))
    response = served.call("qa", {"question": "q"}, timeout=0.5)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "RequestDeadlineExceeded"
    served.wait_for(lambda h: h["in_flight"] == 0)  # the slot came back
    events = _events(served.call("gate", {"path": "/nonexistent"}, stream=True, timeout=0.3).text)
    assert events[0][0] == "error" and events[0][1]["error"]["status"] == 504


# ---------------------------------------------------------------- metrics, schema


def test_metrics_count_calls(served: Served) -> None:
    served.call("echo", {"text": "m"})
    text = served.client.get("/metrics").text
    assert 'dspex_server_requests_total{program="echo",status="200"}' in text
    assert "dspex_server_in_flight 0.0" in text
    assert "dspex_server_request_duration_seconds_bucket" in text


def test_openapi_schemas_validate_real_requests_and_responses(served: Served) -> None:
    doc = served.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/v1/programs/qa/call"]["post"]
    assert post["summary"] == "Call qa: question -> reasoning, answer"

    def validator(name: str) -> Any:
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        return jsonschema.Draft202012Validator(schema)

    request = {"inputs": {"question": "What is 2 + 2?"}}
    assert validator("program_qa__Request").is_valid(request)
    assert not validator("program_qa__Request").is_valid({"inputs": {}})
    assert not validator("program_echo__Request").is_valid({"inputs": {"text": "a", "times": "x"}})
    body = served.call("qa", request["inputs"]).json()
    validator("program_qa__Response").validate(body)
    body["outputs"]["answer"] = "four"
    assert not validator("program_qa__Response").is_valid(body)


# ---------------------------------------------------------------- limits and shutdown


def test_the_socket_listens_before_listening_on_is_printed() -> None:
    """A client that connects the moment it reads "listening on" waits in the backlog while
    the app starts up; it is not refused (this raced in CI before the socket listened early)."""
    import socket

    from dspex.server.cli import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            pass  # accepted into the backlog though nobody has called accept() yet
    finally:
        sock.close()


def test_concurrency_limit_refuses_with_429(lm_server: LMServer, tmp_path: Path) -> None:
    server = start_serve(lm_server, "--max-concurrency", "1", "--max-queue", "0")
    gate = tmp_path / "open"
    try:
        first: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: first.update(r=server.call("gate", {"path": str(gate)}))
        )
        thread.start()
        server.wait_for(lambda h: h["in_flight"] == 1)
        refused = server.call("echo", {"text": "x"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "ServerSaturated"
        gate.touch()
        thread.join(60)
        assert first["r"].status_code == 200
        assert server.call("echo", {"text": "x"}).status_code == 200
    finally:
        gate.touch()
        server.stop()


def test_graceful_shutdown_finishes_in_flight_and_refuses_new(
    lm_server: LMServer, tmp_path: Path
) -> None:
    server = start_serve(lm_server)
    gate = tmp_path / "open"
    first: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: first.update(r=server.call("gate", {"path": str(gate)}))
    )
    thread.start()
    try:
        server.wait_for(lambda h: h["in_flight"] == 1)
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(lambda h: h["status"] == "draining", status=503)
        refused = server.call("echo", {"text": "x"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "ServerDraining"
        gate.touch()
        thread.join(60)
        assert first["r"].status_code == 200
        assert first["r"].json()["outputs"] == {"opened": str(gate)}
        assert server.proc.wait(60) == 0
    finally:
        gate.touch()
        server.stop()
    output = []
    while not server.lines.empty():
        output.append(server.lines.get())
    assert "dspex serve: stopped\n" in output and not any("Traceback" in x for x in output)


def test_pool_status_url_reads_a_running_server(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    from dspex.cli import main

    assert main(["pool", "status", "--url", served.url, "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    assert main(["pool", "status", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err
