// The official OpenAI Node SDK against an Inference Club coordinator: chat, completions,
// embeddings, responses, audio transcriptions and speech, image generations.
//
// Run with `node --test` by inference-club-coordinator/tests/openai_sdk.rs, which starts a
// coordinator whose node serves the Echo test engine (CLUB_MODEL: chat only; CLUB_EMBED_MODEL:
// feature `embeddings`) and the fake media engine (testing::media_engine) as `stt`, `tts` and
// `image` services, and sets CLUB_URL, CLUB_API_KEY and CLUB_TEST_NODE_SDK (the directory
// scripts/node-sdk.sh installed the `openai` package into).

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';

const sdkDir = process.env.CLUB_TEST_NODE_SDK;
assert.ok(sdkDir, 'CLUB_TEST_NODE_SDK names the directory holding node_modules/openai');
const require = createRequire(join(sdkDir, 'package.json'));
const openai = require('openai');
const OpenAI = openai.OpenAI ?? openai.default;
const { toFile } = openai;
// Node 18 has no global File, which the SDK's uploads need.
if (typeof globalThis.File === 'undefined') {
  globalThis.File = (await import('node:buffer')).File;
}

const CLUB_URL = process.env.CLUB_URL;
const API_KEY = process.env.CLUB_API_KEY;
const CHAT_MODEL = process.env.CLUB_MODEL ?? 'echo';
const EMBED_MODEL = process.env.CLUB_EMBED_MODEL ?? 'echo-embed';
const EMBED_DIMENSIONS = Number(process.env.CLUB_EMBED_DIMENSIONS ?? '8');
const STT_MODEL = process.env.CLUB_STT_MODEL ?? 'whisper-1';
const TTS_MODEL = process.env.CLUB_TTS_MODEL ?? 'tts-1';
const IMAGE_MODEL = process.env.CLUB_IMAGE_MODEL ?? 'dall-e-test';
const SAMPLES_PER_CHAR = Number(process.env.CLUB_TTS_SAMPLES_PER_CHAR ?? '1200');
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const client = new OpenAI({ baseURL: `${CLUB_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });

function recordIdOf(response) {
  const id = response.headers.get('x-club-request-id');
  assert.ok(id, 'the answer names its record in x-club-request-id');
  assert.equal(id.replaceAll('-', '').length, 32, id);
  return id;
}

/** Echo::embedding: FNV-1a of the text, then SplitMix64; unit length. */
function echoEmbedding(text) {
  const mask = (1n << 64n) - 1n;
  let state = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(text, 'utf8')) {
    state = ((state ^ BigInt(byte)) * 0x100000001b3n) & mask;
  }
  const raw = [];
  for (let i = 0; i < EMBED_DIMENSIONS; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & mask;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask;
    z ^= z >> 31n;
    raw.push(Number(z >> 11n) / 2 ** 52 - 1);
  }
  const length = Math.sqrt(raw.reduce((sum, x) => sum + x * x, 0));
  return raw.map((x) => x / length);
}

function assertClose(actual, expected, tolerance) {
  assert.equal(actual.length, expected.length);
  actual.forEach((x, i) => assert.ok(Math.abs(x - expected[i]) <= tolerance, `${i}: ${x} vs ${expected[i]}`));
}

/** A real PCM WAV: `seconds` of a tone, 16-bit mono at 16 kHz. */
function wavOf(seconds) {
  const rate = 16000;
  const samples = Math.floor(seconds * rate);
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write('RIFF', 0);
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write('WAVEfmt ', 8);
  wav.writeUInt32LE(16, 16);
  wav.writeUInt16LE(1, 20);
  wav.writeUInt16LE(1, 22);
  wav.writeUInt32LE(rate, 24);
  wav.writeUInt32LE(rate * 2, 28);
  wav.writeUInt16LE(2, 32);
  wav.writeUInt16LE(16, 34);
  wav.write('data', 36);
  wav.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) {
    wav.writeInt16LE(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + 2 * i);
  }
  return wav;
}

function assertPng(bytes) {
  assert.ok(bytes.subarray(0, 8).equals(PNG_SIGNATURE), 'a PNG signature');
  assert.equal(bytes.subarray(12, 16).toString('latin1'), 'IHDR');
  assert.ok(bytes.readUInt32BE(16) > 0 && bytes.readUInt32BE(20) > 0);
  assert.equal(bytes.subarray(bytes.length - 8, bytes.length - 4).toString('latin1'), 'IEND');
}

function assertErrorShape(error) {
  assert.ok(error instanceof OpenAI.APIError, `${error}`);
  assert.equal(typeof error.error?.message, 'string', JSON.stringify(error.error));
  for (const key of ['type', 'param', 'code']) {
    assert.ok(key in error.error, `the error has \`${key}\`: ${JSON.stringify(error.error)}`);
  }
}

test('models, listed and retrieved', async () => {
  const models = await client.models.list();
  const listed = models.data.find((m) => m.id === CHAT_MODEL);
  assert.ok(listed, `${CHAT_MODEL} is listed`);
  assert.deepEqual(await client.models.retrieve(CHAT_MODEL), listed);
  // The SDK sends a `/` in an id as %2F; an id the list does not hold is model_not_found.
  for (const missing of ['no-such-model', 'no/such-model']) {
    await assert.rejects(client.models.retrieve(missing), (error) => {
      assert.ok(error instanceof OpenAI.NotFoundError, `${error}`);
      assert.equal(error.code, 'model_not_found');
      return true;
    });
  }
});

test('chat, whole and streamed', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'hello node' }] })
    .withResponse();
  const recordId = recordIdOf(response);
  assert.equal(data.id, `chatcmpl-${recordId.replaceAll('-', '')}`);
  assert.equal(data.choices[0].message.content, 'echo: hello node');
  const stream = await client.chat.completions.create({
    model: CHAT_MODEL,
    messages: [{ role: 'user', content: 'stream in node' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    usage = chunk.usage ?? usage;
  }
  assert.equal(text, 'echo: stream in node');
  assert.equal(usage?.prompt_tokens, 3);
});

test('completions, whole', async () => {
  const { data, response } = await client.completions
    .create({ model: CHAT_MODEL, prompt: 'the quick brown fox', max_tokens: 50 })
    .withResponse();
  const recordId = recordIdOf(response);
  assert.equal(data.object, 'text_completion');
  assert.ok(data.id.includes(recordId.replaceAll('-', '')), `${data.id} derives from ${recordId}`);
  assert.equal(data.choices[0].text, 'the quick brown fox');
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.deepEqual(
    [data.usage.prompt_tokens, data.usage.completion_tokens, data.usage.total_tokens],
    [4, 4, 8],
  );
});

test('completions, streamed with usage', async () => {
  const { data: stream, response } = await client.completions
    .create({
      model: CHAT_MODEL,
      prompt: 'node streams this back',
      stream: true,
      stream_options: { include_usage: true },
    })
    .withResponse();
  recordIdOf(response);
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    for (const choice of chunk.choices) {
      text += choice.text;
      finish = choice.finish_reason ?? finish;
    }
    usage = chunk.usage ?? usage;
  }
  assert.ok(chunks > 2, 'streamed piece by piece');
  assert.equal(text, 'node streams this back');
  assert.equal(finish, 'stop');
  assert.equal(usage?.prompt_tokens, 4);
});

test('embeddings: floats, base64, and the default the SDK decodes', async () => {
  const floats = await client.embeddings.create({
    model: EMBED_MODEL,
    input: ['one', 'two words'],
    encoding_format: 'float',
  });
  assert.equal(floats.object, 'list');
  assert.deepEqual(floats.data.map((d) => d.index), [0, 1]);
  assertClose(floats.data[0].embedding, echoEmbedding('one'), 1e-12);
  assertClose(floats.data[1].embedding, echoEmbedding('two words'), 1e-12);
  assert.equal(floats.usage.prompt_tokens, 3);

  const base64 = await client.embeddings.create({
    model: EMBED_MODEL,
    input: 'packed',
    encoding_format: 'base64',
  });
  assert.equal(typeof base64.data[0].embedding, 'string');
  const packed = Buffer.from(base64.data[0].embedding, 'base64');
  assert.equal(packed.length, 4 * EMBED_DIMENSIONS, 'little-endian float32');
  const decoded = Array.from({ length: EMBED_DIMENSIONS }, (_, i) => packed.readFloatLE(4 * i));
  assertClose(decoded, echoEmbedding('packed'), 1e-6);

  const { data: byDefault, response } = await client.embeddings
    .create({ model: EMBED_MODEL, input: 'default format' })
    .withResponse();
  recordIdOf(response);
  assert.equal(byDefault.data[0].embedding.length, EMBED_DIMENSIONS);
  assertClose(byDefault.data[0].embedding, echoEmbedding('default format'), 1e-6);
});

test('embeddings on a chat-only model are refused in OpenAI shape', async () => {
  await assert.rejects(
    client.embeddings.create({ model: CHAT_MODEL, input: 'x', encoding_format: 'float' }),
    (error) => {
      assertErrorShape(error);
      assert.ok([400, 404].includes(error.status), `${error.status}`);
      return true;
    },
  );
});

test('responses, whole', async () => {
  const { data, response } = await client.responses
    .create({ model: CHAT_MODEL, input: 'hello responses api' })
    .withResponse();
  recordIdOf(response);
  assert.equal(data.object, 'response');
  assert.equal(data.status, 'completed');
  assert.equal(data.output_text, 'echo: hello responses api');
  assert.equal(data.usage.input_tokens, 3);
  assert.ok(data.usage.output_tokens > 0);
});

test('responses, streamed', async () => {
  const { data: stream, response } = await client.responses
    .create({ model: CHAT_MODEL, input: 'stream the responses api', stream: true })
    .withResponse();
  recordIdOf(response);
  const events = [];
  for await (const event of stream) events.push(event);
  const types = events.map((e) => e.type);
  assert.equal(types[0], 'response.created', types.join(' '));
  assert.equal(types.at(-1), 'response.completed', types.join(' '));
  const deltas = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta);
  assert.ok(deltas.length > 1, 'streamed piece by piece');
  assert.equal(deltas.join(''), 'echo: stream the responses api');
  assert.equal(events.at(-1).response.status, 'completed');
});

test('responses, with the stream helper', async () => {
  const stream = client.responses.stream({ model: CHAT_MODEL, input: 'helper stream' });
  let text = '';
  for await (const event of stream) {
    if (event.type === 'response.output_text.delta') text += event.delta;
  }
  const final = await stream.finalResponse();
  assert.equal(text, 'echo: helper stream');
  // (This SDK's helper sets no `output_text` on a response it does not parse: read the output.)
  const message = final.output.find((item) => item.type === 'message');
  assert.equal(message?.content.map((part) => part.text).join(''), 'echo: helper stream');
  assert.equal(final.status, 'completed');
});

test('audio transcriptions with toFile: json and text', async () => {
  const audio = wavOf(0.25);
  const expected = `transcript of ${audio.length} bytes of audio/wav`;
  const { data: json, response } = await client.audio.transcriptions
    .create({
      model: STT_MODEL,
      file: await toFile(audio, 'speech.wav', { type: 'audio/wav' }),
      response_format: 'json',
    })
    .withResponse();
  recordIdOf(response);
  assert.equal(json.text, expected);
  const text = await client.audio.transcriptions.create({
    model: STT_MODEL,
    file: await toFile(audio, 'speech.wav', { type: 'audio/wav' }),
    response_format: 'text',
  });
  assert.equal(typeof text, 'string');
  assert.equal(text.trim(), expected);
});

test('audio speech is WAV', async () => {
  const input = 'Hello from node.';
  const { data, response } = await client.audio.speech
    .create({ model: TTS_MODEL, voice: 'alloy', input, response_format: 'wav' })
    .withResponse();
  recordIdOf(response);
  assert.equal(response.headers.get('content-type'), 'audio/wav');
  const audio = Buffer.from(await data.arrayBuffer());
  assert.equal(audio.subarray(0, 4).toString('latin1'), 'RIFF');
  assert.equal(audio.subarray(8, 12).toString('latin1'), 'WAVE');
  assert.equal(audio.readUInt32LE(24), 24000);
  assert.equal(audio.length, 44 + input.length * SAMPLES_PER_CHAR * 2);
});

test('audio speech in mp3, which the engine cannot make, is a bad request', async () => {
  await assert.rejects(
    client.audio.speech.create({ model: TTS_MODEL, voice: 'alloy', input: 'x', response_format: 'mp3' }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, `${error}`);
      assertErrorShape(error);
      return true;
    },
  );
});

test('images: b64_json and a url served by the coordinator', async () => {
  const prompt = 'a green triangle';
  const { data: b64, response } = await client.images
    .generate({ model: IMAGE_MODEL, prompt, n: 2, response_format: 'b64_json' })
    .withResponse();
  recordIdOf(response);
  assert.equal(b64.data.length, 2);
  const pngs = b64.data.map((d) => Buffer.from(d.b64_json, 'base64'));
  pngs.forEach(assertPng);
  assert.ok(!pngs[0].equals(pngs[1]));

  const byUrl = await client.images.generate({ model: IMAGE_MODEL, prompt, response_format: 'url' });
  const url = byUrl.data[0].url;
  assert.ok(url?.startsWith(`${CLUB_URL}/`), `${url} is served by the coordinator`);
  const fetched = await fetch(url, { headers: { Authorization: `Bearer ${API_KEY}` } });
  assert.equal(fetched.status, 200);
  assert.equal(fetched.headers.get('content-type'), 'image/png');
  const png = Buffer.from(await fetched.arrayBuffer());
  assertPng(png);
  assert.ok(png.equals(pngs[0]), 'the stored image is the one the engine made');
});

test('an unknown model is a NotFoundError', async () => {
  await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'hi' }), (error) => {
    assert.ok(error instanceof OpenAI.NotFoundError, `${error}`);
    assert.equal(error.code, 'model_not_found');
    return true;
  });
});
