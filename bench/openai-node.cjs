// Checks `peft serve` with the official OpenAI Node SDK; run by bench/openai-node.sh (args: base URL, SDK folder).
const sdk = require(process.argv[3]);
const OpenAI = sdk.default ?? sdk;
const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'sk-node', maxRetries: 0 });
const hi = [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }];
let failed = 0;

function assert(condition, message) { if (!condition) throw new Error(message); }
async function check(name, fn) {
  try { await fn(); console.log(`ok   ${name}`); }
  catch (e) { failed++; console.log(`FAIL ${name}: ${e.message}`); }
}
async function refused(fn, cls, status, code, param) {
  try { await fn(); } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${e.constructor.name}: ${e.message}`);
    assert(e.status === status, `status ${e.status}`);
    if (code !== undefined) assert(e.code === code, `code ${e.code}`);
    if (param !== undefined) assert(e.param === param, `param ${e.param}`);
    return;
  }
  throw new Error('no error raised');
}

(async () => {
  await check('models.list / models.retrieve', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert(ids.includes('lora'), `ids ${ids}`);
    assert((await client.models.retrieve('lora')).id === 'lora', 'retrieve');
  });
  await check('completions with logprobs', async () => {
    const r = await client.completions.create({ model: 'lora', prompt: 'hello', max_tokens: 6, temperature: 0, logprobs: 2 });
    const lp = r.choices[0].logprobs;
    assert(lp.tokens.length === r.usage.completion_tokens, `tokens ${lp.tokens.length} vs ${r.usage.completion_tokens}`);
    assert(lp.top_logprobs.every(t => Object.keys(t).length >= 1 && Object.keys(t).length <= 3), 'top_logprobs sizes');
    assert(lp.token_logprobs.every(v => v <= 0), 'logprobs <= 0');
  });
  await check('completions echo', async () => {
    const plain = await client.completions.create({ model: 'lora', prompt: 'echo', max_tokens: 4, temperature: 0 });
    const echoed = await client.completions.create({ model: 'lora', prompt: 'echo', max_tokens: 4, temperature: 0, echo: true });
    assert(echoed.choices[0].text === 'echo' + plain.choices[0].text, JSON.stringify(echoed.choices[0].text));
  });
  await check('chat, and streamed with include_usage equals it', async () => {
    const whole = await client.chat.completions.create({ model: 'lora', messages: hi, max_tokens: 10, temperature: 0 });
    const stream = await client.chat.completions.create({ model: 'lora', messages: hi, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '', usage = null;
    for await (const chunk of stream) {
      if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert(text === whole.choices[0].message.content, `${JSON.stringify(text)} vs ${JSON.stringify(whole.choices[0].message.content)}`);
    assert(usage && usage.completion_tokens === whole.usage.completion_tokens, `usage ${JSON.stringify(usage)}`);
  });
  await check('stop strings', async () => {
    const full = (await client.chat.completions.create({ model: 'lora', messages: hi, max_tokens: 20, temperature: 0 })).choices[0].message.content;
    assert(full.length >= 6, `completion too short to cut: ${JSON.stringify(full)}`);
    const stop = full.substring(3, 5);
    const r = await client.chat.completions.create({ model: 'lora', messages: hi, max_tokens: 20, temperature: 0, stop: [stop] });
    assert(r.choices[0].message.content === full.substring(0, full.indexOf(stop)) && r.choices[0].finish_reason === 'stop', JSON.stringify(r.choices[0]));
  });
  await check('seeded sampling repeats', async () => {
    const req = { model: 'lora', messages: hi, max_tokens: 16, temperature: 1, top_p: 0.9, seed: 11 };
    const a = await client.chat.completions.create(req), b = await client.chat.completions.create(req);
    assert(a.choices[0].message.content === b.choices[0].message.content, 'differs');
  });
  await check('chat logprobs', async () => {
    const r = await client.chat.completions.create({ model: 'lora', messages: hi, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = r.choices[0].logprobs.content;
    assert(content.length === r.usage.completion_tokens, 'one entry per token');
    assert(content.every(t => t.top_logprobs.length === 3 && Array.isArray(t.bytes) && Math.abs(t.logprob - t.top_logprobs[0].logprob) < 1e-5), 'entries');
  });
  await check('tool-call history accepted', async () => {
    const messages = [...hi,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny' }];
    const r = await client.chat.completions.create({ model: 'lora', messages, max_tokens: 3 });
    assert(typeof r.choices[0].message.content === 'string', 'content');
  });
  await check('errors: NotFound model_not_found, Authentication invalid_api_key, BadRequest context_length_exceeded / tools', async () => {
    await refused(() => client.chat.completions.create({ model: 'nope', messages: hi }), OpenAI.NotFoundError, 404, 'model_not_found', 'model');
    const wrongKey = new OpenAI({ baseURL: process.argv[2], apiKey: 'sk-wrong', maxRetries: 0 });
    await refused(() => wrongKey.chat.completions.create({ model: 'lora', messages: hi }), OpenAI.AuthenticationError, 401, 'invalid_api_key');
    await refused(() => client.chat.completions.create({ model: 'lora', messages: hi, max_tokens: 100000 }), OpenAI.BadRequestError, 400, 'context_length_exceeded', 'max_tokens');
    const tools = [{ type: 'function', function: { name: 'weather', parameters: { type: 'object', properties: {} } } }];
    await refused(() => client.chat.completions.create({ model: 'lora', messages: hi, tools }), OpenAI.BadRequestError, 400, 'unsupported_parameter', 'tools');
  });
  console.log(failed ? `${failed} check(s) failed` : 'all checks passed');
  process.exit(failed ? 1 : 0);
})();
