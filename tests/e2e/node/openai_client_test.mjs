// Drives `kiln serve` with the official `openai` npm client, unmodified, to
// prove that what the server says parses as the OpenAI API.
//
//   node openai_client_test.mjs CHAT_URL [COMPLETIONS_URL] [--api-key KEY]
//
// CHAT_URL is a server whose model has a chat template (e.g.
// http://127.0.0.1:8080/v1); COMPLETIONS_URL one for /v1/completions (default:
// CHAT_URL). With --api-key the chat server is expected to require that key.
// Prints one line per case and exits 1 if any failed.
import OpenAI from 'openai';

const args = process.argv.slice(2);
let apiKey = null;
const urls = [];
for (let i = 0; i < args.length; ++i) {
  if (args[i] === '--api-key') apiKey = args[++i];
  else urls.push(args[i]);
}
if (urls.length < 1 || urls.length > 2 || (apiKey !== null && !apiKey)) {
  console.error('usage: node openai_client_test.mjs CHAT_URL [COMPLETIONS_URL] [--api-key KEY]');
  process.exit(2);
}
const withV1 = (u) => (u.replace(/\/+$/, '').endsWith('/v1') ? u.replace(/\/+$/, '') : u.replace(/\/+$/, '') + '/v1');
const chatUrl = withV1(urls[0]);
const completionsUrl = withV1(urls[1] ?? urls[0]);

// No retries: a failure should show at once, as it is.
const options = { maxRetries: 0, timeout: 120_000 };
const chat = new OpenAI({ baseURL: chatUrl, apiKey: apiKey ?? 'unused', ...options });
const plain = new OpenAI({ baseURL: completionsUrl, apiKey: 'unused', ...options });

class Failure extends Error {}
function check(cond, what, detail) {
  if (!cond) throw new Failure(detail === undefined ? what : `${what}: ${JSON.stringify(detail)}`);
}
const isStr = (x) => typeof x === 'string';
const isInt = (x) => Number.isInteger(x);

async function onlyModel(client) {
  const page = await client.models.list();
  const ids = [];
  for await (const m of page) ids.push(m.id);
  check(ids.length === 1, 'models.list() should list exactly one model', ids);
  return ids[0];
}

// The fields every chat.completion carries, and a well-formed message.
function checkChatCompletion(r, model) {
  check(isStr(r.id) && r.id.length > 0, 'chat.completion id', r.id);
  check(r.object === 'chat.completion', "object should be 'chat.completion'", r.object);
  check(isInt(r.created), 'created should be an integer', r.created);
  check(r.model === model, 'model should echo the served model', r.model);
  check(Array.isArray(r.choices) && r.choices.length === 1, 'one choice', r.choices);
  const c = r.choices[0];
  check(c.index === 0, 'choice index 0', c.index);
  check(['stop', 'length', 'tool_calls'].includes(c.finish_reason), 'finish_reason', c.finish_reason);
  check(c.message.role === 'assistant', "message role 'assistant'", c.message.role);
  check(c.message.content === null || isStr(c.message.content), 'content is a string or null', c.message.content);
  const u = r.usage;
  check(u && isInt(u.prompt_tokens) && u.prompt_tokens > 0, 'usage.prompt_tokens', u);
  check(isInt(u.completion_tokens) && u.completion_tokens > 0, 'usage.completion_tokens', u);
  check(u.total_tokens === u.prompt_tokens + u.completion_tokens, 'usage.total_tokens adds up', u);
  if (c.message.tool_calls) checkToolCalls(c.message.tool_calls, c.finish_reason);
  return c;
}

function checkToolCalls(calls, finishReason) {
  check(Array.isArray(calls) && calls.length > 0, 'tool_calls is a non-empty list', calls);
  for (const t of calls) {
    check(isStr(t.id) && t.id.length > 0, 'tool call id', t);
    check(t.type === 'function', "tool call type 'function'", t);
    check(isStr(t.function?.name) && t.function.name.length > 0, 'tool call function.name', t);
    check(isStr(t.function.arguments), 'tool call function.arguments is a string', t);
    let parsed;
    try {
      parsed = JSON.parse(t.function.arguments);
    } catch (e) {
      throw new Failure(`tool call arguments are not JSON: ${t.function.arguments}`);
    }
    check(parsed !== null && typeof parsed === 'object', 'tool call arguments are a JSON object', parsed);
  }
  check(finishReason === 'tool_calls', "finish_reason 'tool_calls' with tool calls", finishReason);
}

// Streams a chat request and glues the deltas together as a client would.
async function streamChat(client, params) {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const out = { content: '', reasoning: '', role: null, finish: null, chunks: 0, usage: null, ids: new Set(), tools: [] };
  for await (const chunk of stream) {
    out.ids.add(chunk.id);
    check(chunk.object === 'chat.completion.chunk', "object 'chat.completion.chunk'", chunk.object);
    if (chunk.usage) out.usage = chunk.usage;
    if (chunk.choices.length === 0) {
      check(chunk.usage, 'a chunk without choices carries usage', chunk);
      continue;
    }
    ++out.chunks;
    const c = chunk.choices[0];
    const d = c.delta ?? {};
    if (d.role) out.role = d.role;
    if (d.content) out.content += d.content;
    if (d.reasoning_content) out.reasoning += d.reasoning_content;
    for (const t of d.tool_calls ?? []) {
      check(isInt(t.index), 'streamed tool call index', t);
      const cur = (out.tools[t.index] ??= { id: '', type: '', function: { name: '', arguments: '' } });
      if (t.id) cur.id = t.id;
      if (t.type) cur.type = t.type;
      if (t.function?.name) cur.function.name += t.function.name;
      if (t.function?.arguments) cur.function.arguments += t.function.arguments;
    }
    if (c.finish_reason) {
      check(out.finish === null, 'finish_reason arrives once', c.finish_reason);
      out.finish = c.finish_reason;
    }
  }
  check(out.ids.size === 1, 'every chunk has the same id', [...out.ids]);
  check(out.role === 'assistant', "the stream names the role 'assistant'", out.role);
  check(out.finish !== null, 'the stream ends with a finish_reason');
  return out;
}

const messages = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Name three colours.' },
];
const greedy = { temperature: 0, seed: 42, max_tokens: 24 };

const cases = [];
const test = (name, fn) => cases.push({ name, fn });
let chatModel, textModel;

test('models.list', async () => {
  chatModel = await onlyModel(chat);
  textModel = await onlyModel(plain);
  const m = await chat.models.retrieve(chatModel);
  check(m.id === chatModel && m.object === 'model', 'models.retrieve returns the model', m);
});

test('chat.completions.create', async () => {
  const r = await chat.chat.completions.create({ model: chatModel, messages, ...greedy });
  const c = checkChatCompletion(r, chatModel);
  check((c.message.content ?? '') + (c.message.reasoning_content ?? '') !== '', 'some text came back', c);
});

test('chat.completions.create stream equals non-stream (greedy, same seed)', async () => {
  const whole = await chat.chat.completions.create({ model: chatModel, messages, ...greedy });
  const m = whole.choices[0].message;
  const s = await streamChat(chat, {
    model: chatModel, messages, ...greedy, stream_options: { include_usage: true },
  });
  check(s.content === (m.content ?? ''), 'streamed content equals the whole answer', { streamed: s.content, whole: m.content });
  check(s.reasoning === (m.reasoning_content ?? ''), 'streamed reasoning equals the whole answer',
    { streamed: s.reasoning, whole: m.reasoning_content });
  check(s.finish === whole.choices[0].finish_reason, 'same finish_reason', { streamed: s.finish, whole: whole.choices[0].finish_reason });
  check(s.usage && s.usage.completion_tokens === whole.usage.completion_tokens, 'include_usage: the same token count', { streamed: s.usage, whole: whole.usage });
});

test('chat.completions.stream helper (final message)', async () => {
  // The SDK's own accumulator, which checks the chunks' shape strictly.
  const runner = chat.chat.completions.stream({ model: chatModel, messages, ...greedy });
  const final = await runner.finalChatCompletion();
  check(final.choices[0].message.role === 'assistant', 'final message role', final.choices[0]);
  check(['stop', 'length', 'tool_calls'].includes(final.choices[0].finish_reason), 'final finish_reason', final.choices[0]);
});

test('chat: content as a list of parts, logprobs, stop, max_completion_tokens', async () => {
  const r = await chat.chat.completions.create({
    model: chatModel,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Say hi.' }] }],
    temperature: 0, seed: 1, max_completion_tokens: 6, logprobs: true, top_logprobs: 2, stop: ['\n\n\n'],
  });
  const c = checkChatCompletion(r, chatModel);
  const lp = c.logprobs?.content;
  check(Array.isArray(lp) && lp.length === r.usage.completion_tokens, 'one logprob entry per token', c.logprobs);
  for (const e of lp) {
    check(isStr(e.token) && typeof e.logprob === 'number' && e.logprob <= 0, 'logprob entry', e);
    check(Array.isArray(e.bytes) && Array.isArray(e.top_logprobs) && e.top_logprobs.length === 2, 'top_logprobs', e);
  }
  check(r.usage.completion_tokens <= 6, 'max_completion_tokens is honoured', r.usage);
});

test('chat: response_format json_object', async () => {
  const r = await chat.chat.completions.create({
    model: chatModel, messages: [{ role: 'user', content: 'Reply in JSON.' }],
    response_format: { type: 'json_object' }, temperature: 0, seed: 3, max_tokens: 48,
  });
  const c = checkChatCompletion(r, chatModel);
  if (c.finish_reason === 'stop') {
    try {
      JSON.parse(c.message.content);
    } catch (e) {
      throw new Failure(`json_object answer is not JSON: ${c.message.content}`);
    }
  }
});

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

test('chat: tools (non-streamed and streamed)', async () => {
  const ask = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const r = await chat.chat.completions.create({ model: chatModel, messages: ask, tools, tool_choice: 'auto', ...greedy });
  const c = checkChatCompletion(r, chatModel);
  const s = await streamChat(chat, { model: chatModel, messages: ask, tools, ...greedy });
  check(s.content === (c.message.content ?? ''), 'streamed content equals the whole answer with tools', { streamed: s.content, whole: c.message.content });
  if (s.tools.length) checkToolCalls(s.tools, s.finish);
  check(s.tools.length === (c.message.tool_calls?.length ?? 0), 'the same number of tool calls streamed', { streamed: s.tools, whole: c.message.tool_calls });
  const helper = await chat.chat.completions.stream({ model: chatModel, messages: ask, tools, ...greedy }).finalChatCompletion();
  if (helper.choices[0].message.tool_calls?.length) checkToolCalls(helper.choices[0].message.tool_calls, helper.choices[0].finish_reason);
});

test('chat: a conversation with a tool call and its result', async () => {
  // The shape a client sends back after running a tool: the assistant's
  // call (content null, arguments as a JSON string) and a 'tool' message.
  const r = await chat.chat.completions.create({
    model: chatModel, tools, ...greedy,
    messages: [
      { role: 'user', content: 'What is the weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temperature_c": 21}' },
    ],
  });
  checkChatCompletion(r, chatModel);
});

test('completions.create (stream equals non-stream)', async () => {
  const params = { model: textModel, prompt: 'Once upon a time', temperature: 0, seed: 7, max_tokens: 24 };
  const r = await plain.completions.create(params);
  check(r.object === 'text_completion', "object 'text_completion'", r.object);
  check(r.model === textModel && isStr(r.id) && isInt(r.created), 'completion header fields', r);
  check(r.choices.length === 1 && isStr(r.choices[0].text) && r.choices[0].text.length > 0, 'completion text', r.choices);
  check(['stop', 'length'].includes(r.choices[0].finish_reason), 'completion finish_reason', r.choices[0]);
  check(r.usage.completion_tokens > 0 && r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, 'completion usage', r.usage);
  let text = '', finish = null;
  for await (const chunk of await plain.completions.create({ ...params, stream: true })) {
    check(chunk.object === 'text_completion', "stream chunk object 'text_completion'", chunk.object);
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  check(text === r.choices[0].text, 'streamed completion equals the whole one', { streamed: text, whole: r.choices[0].text });
  check(finish === r.choices[0].finish_reason, 'same completion finish_reason', { streamed: finish, whole: r.choices[0].finish_reason });
  const lp = await plain.completions.create({ ...params, max_tokens: 4, logprobs: 3 });
  const l = lp.choices[0].logprobs;
  check(l && l.tokens.length === lp.usage.completion_tokens && l.token_logprobs.length === l.tokens.length &&
    l.top_logprobs.length === l.tokens.length && l.text_offset.length === l.tokens.length, 'completion logprobs', l);
});

test('errors: unknown model is a 404 APIError', async () => {
  for (const call of [
    (m) => chat.chat.completions.create({ model: m, messages, max_tokens: 4 }),
    (m) => plain.completions.create({ model: m, prompt: 'Hi', max_tokens: 4 }),
  ]) {
    let err = null;
    try {
      await call('no-such-model');
    } catch (e) {
      err = e;
    }
    check(err instanceof OpenAI.APIError, 'a bad model name throws an APIError', String(err));
    check(err.status === 404 || err.status === 400, 'status 404 or 400', err.status);
    check(err instanceof OpenAI.NotFoundError || err instanceof OpenAI.BadRequestError, 'the matching error class', err.constructor.name);
    check(isStr(err.message) && err.message.includes('no-such-model'), 'the message names the model', err.message);
    check(err.code === 'model_not_found' || err.param === 'model', 'error code or param', { code: err.code, param: err.param });
  }
});

test('errors: a bad parameter is a 400 BadRequestError', async () => {
  let err = null;
  try {
    await chat.chat.completions.create({ model: chatModel, messages, temperature: 5 });
  } catch (e) {
    err = e;
  }
  check(err instanceof OpenAI.BadRequestError && err.status === 400, 'temperature 5 is a 400', String(err));
  check(err.param === 'temperature', "param 'temperature'", err.param);
});

if (apiKey !== null) {
  test('errors: a wrong API key is a 401 AuthenticationError', async () => {
    const wrong = new OpenAI({ baseURL: chatUrl, apiKey: apiKey + '-wrong', ...options });
    let err = null;
    try {
      await wrong.models.list();
    } catch (e) {
      err = e;
    }
    check(err instanceof OpenAI.AuthenticationError && err.status === 401, 'a wrong key is a 401', String(err));
  });
}

let failed = 0;
for (const { name, fn } of cases) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`PASS ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    ++failed;
    const kind = e instanceof Failure ? 'wrong answer' : `${e?.constructor?.name ?? 'error'} thrown`;
    console.log(`FAIL ${name}: ${kind}: ${e?.message ?? e}`);
    if (!(e instanceof Failure) && e?.stack) console.log(e.stack);
  }
}
console.log(failed ? `${failed} of ${cases.length} cases failed` : `all ${cases.length} cases passed`);
process.exit(failed ? 1 : 0);
