"""The official OpenAI Python SDK against an Inference Club coordinator, on the endpoints beyond chat:
completions, embeddings, responses, audio transcriptions and speech, image generations.

Run by `inference-club-coordinator/tests/openai_sdk.rs`, which starts a coordinator whose node serves
- the Echo test engine as `llm` services: CLUB_MODEL (chat only, with a reasoning trace) and
  CLUB_EMBED_MODEL (feature `embeddings`); Echo answers a completion with the prompt itself and an
  embedding with `echo_embedding` below;
- the fake media engine (`inference_club_coordinator::testing::media_engine`) behind the
  OpenAI-compatible backend as `stt` (CLUB_STT_MODEL), `tts` (CLUB_TTS_MODEL) and `image`
  (CLUB_IMAGE_MODEL) services;
and sets CLUB_URL and CLUB_API_KEY.
"""

import base64
import io
import json
import math
import os
import re
import struct
import urllib.error
import urllib.request

import openai
import pytest

CLUB_URL = os.environ["CLUB_URL"]
BASE_URL = CLUB_URL + "/v1"
API_KEY = os.environ["CLUB_API_KEY"]
CHAT_MODEL = os.environ.get("CLUB_MODEL", "echo")
EMBED_MODEL = os.environ.get("CLUB_EMBED_MODEL", "echo-embed")
EMBED_DIMENSIONS = int(os.environ.get("CLUB_EMBED_DIMENSIONS", "8"))
STT_MODEL = os.environ.get("CLUB_STT_MODEL", "whisper-1")
TTS_MODEL = os.environ.get("CLUB_TTS_MODEL", "tts-1")
IMAGE_MODEL = os.environ.get("CLUB_IMAGE_MODEL", "dall-e-test")
# The fake media engine's speech: 24 kHz mono 16-bit, this many samples per input character.
SAMPLES_PER_CHAR = int(os.environ.get("CLUB_TTS_SAMPLES_PER_CHAR", "1200"))
# An upload larger than the coordinator accepts (default: past OpenAI's own 25 MB; the Rust harness
# sets a small limit and this one past it).
OVERSIZE_UPLOAD_BYTES = int(os.environ.get("CLUB_OVERSIZE_UPLOAD_BYTES", str(26 * 1024 * 1024)))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)


def record_id_of(raw):
    """The record id the answer names; a UUID (36 characters with dashes)."""
    record_id = raw.headers.get("x-club-request-id")
    assert record_id, f"no x-club-request-id in {dict(raw.headers)}"
    assert len(record_id.replace("-", "")) == 32, record_id
    return record_id


def assert_recorded(record_id, model):
    """The club API shows the request's record, final and succeeded (records are final before the
    answer ends)."""
    request = urllib.request.Request(
        f"{CLUB_URL}/api/v1/requests/{record_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        record = json.load(answer)
    assert record["id"] == record_id, record
    assert record["model_requested"] == model, record
    assert record["status"] == "succeeded", record
    return record


def echo_embedding(text):
    """Echo::embedding: FNV-1a of the text, then SplitMix64, 8 floats in [-1, 1), unit length."""
    mask = (1 << 64) - 1
    state = 0xCBF29CE484222325
    for byte in text.encode():
        state = ((state ^ byte) * 0x100000001B3) & mask
    raw = []
    for _ in range(EMBED_DIMENSIONS):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        raw.append((z >> 11) / (1 << 52) - 1.0)
    length = math.sqrt(sum(x * x for x in raw))
    return [x / length for x in raw]


def wav_of(seconds, rate=16000):
    """A real PCM WAV file: `seconds` of a 440 Hz tone, 16-bit mono."""
    samples = int(seconds * rate)
    pcm = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(samples)
    )
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", len(pcm))
    return header + pcm


def assert_openai_error_shape(error):
    body = error.response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def assert_png(data):
    assert data.startswith(PNG_SIGNATURE), data[:16]
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0
    assert data.endswith(b"IEND\xaeB`\x82")


# --- completions ------------------------------------------------------------------------------


def test_whole_completion(client):
    raw = client.completions.with_raw_response.create(
        model=CHAT_MODEL, prompt="the quick brown fox", max_tokens=50
    )
    record_id = record_id_of(raw)
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert record_id.replace("-", "") in completion.id, (completion.id, record_id)
    assert completion.model == CHAT_MODEL
    assert isinstance(completion.created, int)
    assert len(completion.choices) == 1
    assert completion.choices[0].index == 0
    assert completion.choices[0].text == "the quick brown fox"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == 8
    assert_recorded(record_id, CHAT_MODEL)


def test_completion_max_tokens_stops_for_length(client):
    completion = client.completions.create(model=CHAT_MODEL, prompt="one two three four five", max_tokens=2)
    assert completion.choices[0].text == "one two"
    assert completion.choices[0].finish_reason == "length"


def test_streamed_completion_with_usage(client):
    with client.completions.with_streaming_response.create(
        model=CHAT_MODEL,
        prompt="stream this prompt back",
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        record_id = record_id_of(raw)
        assert raw.headers["content-type"].startswith("text/event-stream")
        texts, finish, usage, chunks = [], None, None, 0
        for chunk in raw.parse():
            chunks += 1
            assert chunk.object == "text_completion"
            assert chunk.model == CHAT_MODEL
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                texts.append(choice.text)
                if choice.finish_reason:
                    finish = choice.finish_reason
    assert chunks > 2, "the completion was not streamed piece by piece"
    assert "".join(texts) == "stream this prompt back"
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens == 4 and usage.total_tokens == 8
    assert_recorded(record_id, CHAT_MODEL)


def test_streamed_completion_without_usage(client):
    chunks = list(client.completions.create(model=CHAT_MODEL, prompt="no usage here", stream=True))
    assert chunks
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "no usage here"


def test_completion_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.completions.create(model="no-such-model", prompt="hi")
    assert error.value.code == "model_not_found"
    assert_openai_error_shape(error.value)


# --- embeddings -------------------------------------------------------------------------------


def test_embeddings_of_one_string_as_floats(client):
    raw = client.embeddings.with_raw_response.create(
        model=EMBED_MODEL, input="embed me", encoding_format="float"
    )
    record_id = record_id_of(raw)
    answer = raw.parse()
    assert answer.object == "list"
    assert answer.model == EMBED_MODEL
    assert len(answer.data) == 1
    assert answer.data[0].object == "embedding"
    assert answer.data[0].index == 0
    assert answer.data[0].embedding == pytest.approx(echo_embedding("embed me"), abs=1e-12)
    assert answer.usage.prompt_tokens == 2
    assert answer.usage.total_tokens == 2
    assert_recorded(record_id, EMBED_MODEL)


def test_embeddings_of_an_array_as_floats(client):
    texts = ["first text", "the second one", "3"]
    answer = client.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    assert [d.index for d in answer.data] == [0, 1, 2]
    for text, item in zip(texts, answer.data):
        assert len(item.embedding) == EMBED_DIMENSIONS
        assert item.embedding == pytest.approx(echo_embedding(text), abs=1e-12)
    assert answer.usage.prompt_tokens == 6


def test_embeddings_as_base64_explicitly(client):
    raw = client.embeddings.with_raw_response.create(
        model=EMBED_MODEL, input=["alpha", "beta"], encoding_format="base64"
    )
    record_id_of(raw)
    body = json.loads(raw.text)
    assert [d["index"] for d in body["data"]] == [0, 1]
    for text, item in zip(["alpha", "beta"], body["data"]):
        assert isinstance(item["embedding"], str), item
        packed = base64.b64decode(item["embedding"], validate=True)
        assert len(packed) == 4 * EMBED_DIMENSIONS, "base64 embeddings are little-endian float32"
        floats = struct.unpack(f"<{EMBED_DIMENSIONS}f", packed)
        assert list(floats) == pytest.approx(echo_embedding(text), abs=1e-6)


def test_embeddings_default_is_base64_decoded_by_the_sdk(client):
    # The SDK asks for base64 when no encoding_format is given, and decodes it.
    raw = client.embeddings.with_raw_response.create(model=EMBED_MODEL, input="default format")
    assert json.loads(raw.http_response.request.content)["encoding_format"] == "base64"
    assert isinstance(json.loads(raw.text)["data"][0]["embedding"], str), "base64 was asked for"
    answer = raw.parse()
    assert answer.data[0].embedding == pytest.approx(echo_embedding("default format"), abs=1e-6)


def test_embeddings_on_a_chat_only_model_are_refused(client):
    with pytest.raises(openai.APIStatusError) as error:
        client.embeddings.create(model=CHAT_MODEL, input="no embeddings here", encoding_format="float")
    assert error.value.status_code in (400, 404), error.value
    assert_openai_error_shape(error.value)


def test_embeddings_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.embeddings.create(model="no-such-model", input="x", encoding_format="float")
    assert_openai_error_shape(error.value)


# --- responses --------------------------------------------------------------------------------


def test_whole_response(client):
    raw = client.responses.with_raw_response.create(model=CHAT_MODEL, input="hello responses api")
    record_id = record_id_of(raw)
    response = raw.parse()
    assert response.object == "response"
    assert response.id.startswith("resp")
    assert response.status == "completed"
    assert response.model == CHAT_MODEL
    assert response.output_text == "echo: hello responses api"
    messages = [item for item in response.output if item.type == "message"]
    assert len(messages) == 1 and messages[0].role == "assistant"
    assert response.usage is not None
    assert response.usage.input_tokens == 3
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert_recorded(record_id, CHAT_MODEL)


def test_response_with_instructions_and_message_list(client):
    response = client.responses.create(
        model=CHAT_MODEL,
        instructions="be brief",
        input=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
    )
    assert response.output_text == "echo: second question"


def test_streamed_response(client):
    with client.responses.with_streaming_response.create(
        model=CHAT_MODEL, input="stream the responses api", stream=True
    ) as raw:
        record_id_of(raw)
        assert raw.headers["content-type"].startswith("text/event-stream")
        events = list(raw.parse())
    types = [e.type for e in events]
    assert types[0] == "response.created", types
    assert types[-1] == "response.completed", types
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1, "the text was not streamed piece by piece"
    assert "".join(deltas) == "echo: stream the responses api"
    done = [e for e in events if e.type == "response.output_text.done"]
    assert done and done[0].text == "echo: stream the responses api"
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == "echo: stream the responses api"
    assert completed.usage is not None and completed.usage.input_tokens == 4
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_streamed_response_with_the_stream_helper(client):
    with client.responses.stream(model=CHAT_MODEL, input="helper stream") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "echo: helper stream"
    assert final.output_text == "echo: helper stream"


def test_response_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.responses.create(model="no-such-model", input="hi")
    assert_openai_error_shape(error.value)


# --- audio transcriptions ---------------------------------------------------------------------


def test_transcription_as_json(client):
    audio = wav_of(0.25)
    raw = client.audio.transcriptions.with_raw_response.create(
        model=STT_MODEL, file=("speech.wav", audio, "audio/wav"), response_format="json"
    )
    record_id = record_id_of(raw)
    transcription = raw.parse()
    assert transcription.text == f"transcript of {len(audio)} bytes of audio/wav"
    assert_recorded(record_id, STT_MODEL)


def test_transcription_as_text(client):
    audio = wav_of(0.1)
    raw = client.audio.transcriptions.with_raw_response.create(
        model=STT_MODEL, file=("clip.wav", io.BytesIO(audio), "audio/wav"), response_format="text"
    )
    record_id_of(raw)
    assert raw.headers["content-type"].startswith("text/plain")
    text = raw.parse()
    assert isinstance(text, str)
    assert text.strip() == f"transcript of {len(audio)} bytes of audio/wav"


def test_transcription_as_verbose_json(client):
    audio = wav_of(0.5)
    transcription = client.audio.transcriptions.create(
        model=STT_MODEL,
        file=("long.wav", audio, "audio/wav"),
        response_format="verbose_json",
        language="en",
    )
    assert transcription.text == f"transcript of {len(audio)} bytes of audio/wav"
    assert transcription.duration == pytest.approx(0.5, abs=0.01)
    assert transcription.segments and transcription.segments[0].text == transcription.text


def test_transcription_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.audio.transcriptions.create(model="no-such-model", file=("a.wav", wav_of(0.05), "audio/wav"))
    assert_openai_error_shape(error.value)


def test_a_large_upload_within_the_limit_arrives_whole(client):
    audio = wav_of(0.01) + bytes(range(256)) * (OVERSIZE_UPLOAD_BYTES // 2 // 256)
    transcription = client.audio.transcriptions.create(
        model=STT_MODEL, file=("large.wav", audio, "audio/wav")
    )
    assert transcription.text == f"transcript of {len(audio)} bytes of audio/wav"


def test_oversize_upload_is_refused_with_413(client):
    with pytest.raises(openai.APIStatusError) as error:
        client.audio.transcriptions.create(
            model=STT_MODEL, file=("huge.wav", b"\0" * OVERSIZE_UPLOAD_BYTES, "audio/wav")
        )
    assert error.value.status_code == 413, error.value
    assert_openai_error_shape(error.value)


# --- audio speech -----------------------------------------------------------------------------


def test_speech_is_wav(client):
    text = "Hello from the club."
    raw = client.audio.speech.with_raw_response.create(
        model=TTS_MODEL, voice="alloy", input=text, response_format="wav"
    )
    record_id = record_id_of(raw)
    assert raw.headers["content-type"] == "audio/wav"
    audio = raw.content
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE", audio[:16]
    channels, rate = struct.unpack("<HI", audio[22:28])
    assert (channels, rate) == (1, 24000)
    assert audio[36:40] == b"data"
    (data_len,) = struct.unpack("<I", audio[40:44])
    assert data_len == len(text) * SAMPLES_PER_CHAR * 2
    assert len(audio) == 44 + data_len
    assert_recorded(record_id, TTS_MODEL)


def test_speech_length_follows_the_input(client):
    short = client.audio.speech.create(model=TTS_MODEL, voice="alloy", input="hi", response_format="wav")
    longer = client.audio.speech.create(
        model=TTS_MODEL, voice="alloy", input="hi there, a longer one", response_format="wav"
    )
    assert len(longer.content) > len(short.content)


def test_speech_streamed_to_a_file(client, tmp_path):
    target = tmp_path / "speech.wav"
    with client.audio.speech.with_streaming_response.create(
        model=TTS_MODEL, voice="alloy", input="to a file", response_format="wav"
    ) as raw:
        record_id_of(raw)
        raw.stream_to_file(target)
    data = target.read_bytes()
    assert data[:4] == b"RIFF" and len(data) == 44 + len("to a file") * SAMPLES_PER_CHAR * 2


def test_speech_as_pcm(client):
    raw = client.audio.speech.with_raw_response.create(
        model=TTS_MODEL, voice="alloy", input="pcm", response_format="pcm"
    )
    assert raw.headers["content-type"].startswith("audio/pcm")
    assert len(raw.content) == 3 * SAMPLES_PER_CHAR * 2


def test_speech_in_a_format_the_engine_cannot_make_is_a_bad_request(client):
    # The engine refuses mp3 with a 400 in OpenAI's shape; the club passes the refusal on.
    with pytest.raises(openai.BadRequestError) as error:
        client.audio.speech.create(model=TTS_MODEL, voice="alloy", input="no mp3", response_format="mp3")
    assert_openai_error_shape(error.value)


# --- images -----------------------------------------------------------------------------------


def test_images_as_b64_json(client):
    raw = client.images.with_raw_response.generate(
        model=IMAGE_MODEL, prompt="a red square", n=2, response_format="b64_json"
    )
    record_id = record_id_of(raw)
    images = raw.parse()
    assert isinstance(images.created, int)
    assert len(images.data) == 2
    pngs = [base64.b64decode(item.b64_json, validate=True) for item in images.data]
    for png in pngs:
        assert_png(png)
    assert pngs[0] != pngs[1], "each image of the answer is its own"
    assert_recorded(record_id, IMAGE_MODEL)


def test_images_as_url_served_by_the_coordinator(client):
    prompt = "a blue circle"
    images = client.images.generate(model=IMAGE_MODEL, prompt=prompt, response_format="url")
    assert len(images.data) == 1
    url = images.data[0].url
    assert url, images
    assert images.data[0].b64_json is None
    assert url.startswith(CLUB_URL + "/"), f"{url} is not served by the coordinator at {CLUB_URL}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["content-type"] == "image/png"
        png = answer.read()
    assert_png(png)
    # The same engine makes the same image for the same prompt: the stored image is the engine's.
    again = client.images.generate(model=IMAGE_MODEL, prompt=prompt, response_format="b64_json")
    assert base64.b64decode(again.data[0].b64_json) == png


def test_image_url_of_an_unknown_image_is_not_found(client):
    images = client.images.generate(model=IMAGE_MODEL, prompt="exists", response_format="url")
    url = images.data[0].url
    # The last path segment names the stored image; the same name with its digits zeroed is none.
    head, last = url.rsplit("/", 1)
    stem, dot, extension = last.partition(".")
    unknown = head + "/" + re.sub("[0-9]", "0", stem) + dot + extension
    assert unknown != url
    request = urllib.request.Request(unknown, headers={"Authorization": f"Bearer {API_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 404


def test_images_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.images.generate(model="no-such-model", prompt="x", response_format="b64_json")
    assert_openai_error_shape(error.value)


# --- a model on an endpoint its service does not answer ---------------------------------------


def test_speech_model_on_chat_is_refused(client):
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model=TTS_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code in (400, 404), error.value
    assert_openai_error_shape(error.value)


def test_chat_model_on_speech_is_refused(client):
    with pytest.raises(openai.APIStatusError) as error:
        client.audio.speech.create(model=CHAT_MODEL, voice="alloy", input="hi", response_format="wav")
    assert error.value.status_code in (400, 404), error.value
    assert_openai_error_shape(error.value)
