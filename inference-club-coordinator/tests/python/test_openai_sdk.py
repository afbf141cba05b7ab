"""The official OpenAI Python SDK against an Inference Club coordinator.

Run by `inference-club-coordinator/tests/openai_sdk.rs`, which starts a coordinator with a node serving the Echo
test engine (model `echo`, with a reasoning trace) and sets CLUB_URL and CLUB_API_KEY.
"""

import os

import openai
import pytest

BASE_URL = os.environ["CLUB_URL"] + "/v1"
API_KEY = os.environ["CLUB_API_KEY"]
MODEL = os.environ.get("CLUB_MODEL", "echo")


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)


def test_list_models(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL in ids
    model = next(m for m in models.data if m.id == MODEL)
    assert model.object == "model"
    assert isinstance(model.created, int)
    assert model.owned_by


def test_retrieve_model(client):
    listed = next(m for m in client.models.list().data if m.id == MODEL)
    model = client.models.retrieve(MODEL)
    assert model.model_dump() == listed.model_dump()
    # The SDK sends a `/` in an id as %2F; an id the list does not hold is model_not_found.
    for missing in ["no-such-model", "no/such-model"]:
        with pytest.raises(openai.NotFoundError) as error:
            client.models.retrieve(missing)
        assert error.value.code == "model_not_found"


def test_whole_chat(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}]
    )
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == "echo: hello there"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.prompt_tokens == 2
    # The reasoning trace comes through as an extra field of the message.
    assert response.choices[0].message.model_extra.get("reasoning_content") == "The user said 2 words."


def test_record_id_header_matches_completion_id(client):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "which record"}]
    )
    record_id = raw.headers["x-club-request-id"]
    completion = raw.parse()
    assert completion.id == "chatcmpl-" + record_id.replace("-", "")


def test_streamed_chat_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, reasoning, usage, finish = [], [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                reasoning.append(extra["reasoning_content"])
            if choice.finish_reason:
                finish = choice.finish_reason
    assert "".join(content) == "echo: stream me please"
    assert "".join(reasoning) == "The user said 3 words."
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens == 3 and usage.total_tokens > 3


def test_stream_without_usage_has_no_usage_chunk(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "no usage"}], stream=True
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_visibility_in_extra_body(client):
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "keep this private"}],
        extra_body={"visibility": "private"},
    )
    assert response.choices[0].message.content == "echo: keep this private"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert error.value.code == "model_not_found"


def test_bad_key_is_an_authentication_error():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="icl_not_a_real_key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])


def test_bad_request_is_a_bad_request_error(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
