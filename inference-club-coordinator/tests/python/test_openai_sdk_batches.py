"""The official OpenAI Python SDK's Files and Batch APIs against a club.

Uploads a JSONL file of CLUB_BATCH_LINES chat requests (`client.files.create`, purpose `batch`),
makes a batch of it (`client.batches.create`), polls it (`client.batches.retrieve`) until it
ends, downloads its output (`client.files.content`) and checks every line against OpenAI's
output format, each `custom_id` of the input answered exactly once. Then counts, through the
club API, the records linked to the batch: one succeeded record per output line (the one the
line names), whatever else failed.

The harness running it (examples/tests/batches/) may kill a node half-way through: every line
must still be answered, once. It reads CLUB_URL, CLUB_API_KEY, CLUB_MODEL, CLUB_ANSWER (what
each answer says), CLUB_BATCH_LINES and CLUB_BATCH_TIMEOUT_SECS; it writes the batch id to the
file CLUB_BATCH_ID_FILE as soon as it has one.
"""

import json
import os
import time
import urllib.parse
import urllib.request

from openai import OpenAI

BASE = os.environ["CLUB_URL"].rstrip("/")
KEY = os.environ["CLUB_API_KEY"]
MODEL = os.environ["CLUB_MODEL"]
ANSWER = os.environ["CLUB_ANSWER"]
LINES = int(os.environ.get("CLUB_BATCH_LINES", "1000"))
TIMEOUT = float(os.environ.get("CLUB_BATCH_TIMEOUT_SECS", "120"))
ENDED = {"completed", "failed", "expired", "cancelled"}


def client() -> OpenAI:
    return OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=2, timeout=30)


def input_lines():
    return [
        {
            "custom_id": f"line-{n:04d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"request number {n}"}],
            },
        }
        for n in range(LINES)
    ]


def records_of_batch(batch_id):
    """Every record of the caller linked to the batch, through the club API."""
    records, cursor = [], None
    while True:
        params = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        request = urllib.request.Request(
            f"{BASE}/api/v1/requests?{urllib.parse.urlencode(params)}",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            page = json.load(response)
        records.extend(r for r in page["data"] if r.get("batch") == batch_id)
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return records


def test_a_batch_through_the_sdk_answers_every_line_once_in_openai_format():
    openai = client()
    lines = input_lines()
    data = "\n".join(json.dumps(line) for line in lines).encode()

    uploaded = openai.files.create(file=("requests.jsonl", data), purpose="batch")
    assert uploaded.object == "file"
    assert uploaded.purpose == "batch"
    assert uploaded.bytes == len(data)
    assert uploaded.filename == "requests.jsonl"
    assert openai.files.retrieve(uploaded.id).id == uploaded.id

    batch = openai.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"suite": "sdk"},
    )
    assert batch.object == "batch"
    assert batch.input_file_id == uploaded.id
    assert batch.endpoint == "/v1/chat/completions"
    assert batch.completion_window == "24h"
    assert batch.status in ("validating", "in_progress")
    assert batch.metadata == {"suite": "sdk"}
    if os.environ.get("CLUB_BATCH_ID_FILE"):
        with open(os.environ["CLUB_BATCH_ID_FILE"], "w") as out:
            out.write(batch.id)

    deadline = time.monotonic() + TIMEOUT
    seen = set()
    while True:
        batch = openai.batches.retrieve(batch.id)
        seen.add(batch.status)
        counts = batch.request_counts
        assert counts.total == LINES, batch
        assert counts.completed + counts.failed <= LINES, batch
        if batch.status in ENDED:
            break
        assert time.monotonic() < deadline, f"the batch did not end within {TIMEOUT}s: {batch}"
        time.sleep(0.25)
    assert batch.status == "completed", batch
    assert "in_progress" in seen, seen
    assert batch.request_counts.completed == LINES, batch
    assert batch.request_counts.failed == 0, batch
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert isinstance(getattr(batch, stamp), int), (stamp, batch)
    assert batch.output_file_id, batch
    assert batch.error_file_id is None, batch
    assert any(b.id == batch.id for b in openai.batches.list(limit=10).data)

    output_file = openai.files.retrieve(batch.output_file_id)
    assert output_file.purpose == "batch_output"
    text = openai.files.content(batch.output_file_id).text
    output = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(output) == LINES, len(output)

    answered = {}
    for line in output:
        assert set(line) == {"id", "custom_id", "response", "error"}, line
        assert line["id"].startswith("batch_req_"), line
        assert line["error"] is None, line
        custom_id = line["custom_id"]
        assert custom_id not in answered, f"{custom_id} answered twice"
        response = line["response"]
        assert set(response) == {"status_code", "request_id", "body"}, line
        assert response["status_code"] == 200, line
        assert isinstance(response["request_id"], str) and response["request_id"], line
        body = response["body"]
        assert body["object"] == "chat.completion", line
        assert body["id"].startswith("chatcmpl-"), line
        assert isinstance(body["created"], int), line
        assert body["model"], line
        choice = body["choices"][0]
        assert choice["index"] == 0, line
        assert choice["message"]["role"] == "assistant", line
        assert choice["message"]["content"] == ANSWER, line
        assert choice["finish_reason"] == "stop", line
        answered[custom_id] = response["request_id"]
    assert set(answered) == {line["custom_id"] for line in lines}, "custom_ids map one to one"
    request_ids = set(answered.values())
    assert len(request_ids) == LINES, "each line names a record of its own"
    # The lines of the output come in input order.
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]

    # One succeeded record per line — the one its output line names — and whatever else is
    # linked to the batch (a line cut off with its node) failed.
    records = records_of_batch(batch.id)
    succeeded = {r["id"] for r in records if r["status"] == "succeeded"}
    assert succeeded == request_ids, (
        f"{len(succeeded)} succeeded records for {LINES} lines: "
        f"{len(succeeded - request_ids)} not in the output, {len(request_ids - succeeded)} missing"
    )
    others = [r for r in records if r["status"] != "succeeded"]
    assert all(r["status"] == "failed" for r in others), others
    print(f"BATCH {batch.id}: {LINES} lines, {len(others)} failed attempts recorded")
