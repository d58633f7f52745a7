// HF tokenizers (the Rust crate through @anush008/tokenizers) on one corpus: the first tenth of the strings warms up,
// the rest is encoded once, without special tokens. Threads: RAYON_NUM_THREADS (set by run-tokenize.sh).
// Prints one JSON line: {impl, tokenizer, corpus, mode, threads, strings, chars, tokens, seconds, cpu_seconds}.
import fs from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const { Tokenizer } = require('@anush008/tokenizers');

const [tokenizerDir, corpusFile, mode] = process.argv.slice(2);
const tok = Tokenizer.fromFile(`${tokenizerDir}/tokenizer.json`);
const all = JSON.parse(fs.readFileSync(corpusFile, 'utf8'));
const warm = all.slice(0, Math.ceil(all.length / 10)), work = all.slice(warm.length);
const opts = { addSpecialTokens: false };
const batch = 256;   // encodeBatch in slices, as a data loader feeds it
async function run(xs) {
  let tokens = 0;
  if (mode === 'single') for (const s of xs) tokens += (await tok.encode(s, null, opts)).getLength();
  else for (let i = 0; i < xs.length; i += batch)
    for (const e of await tok.encodeBatch(xs.slice(i, i + batch), opts)) tokens += e.getLength();
  return tokens;
}
await run(warm);
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
const tokens = await run(work);
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
// FNV-1a over every id of every string in order (FreshTokenize computes the same), to show the outputs are identical.
let h = 14695981039346656037n;
for (let i = 0; i < work.length; i += batch)
  for (const e of await tok.encodeBatch(work.slice(i, i + batch), opts))
    for (const id of e.getIds()) h = BigInt.asUintN(64, (h ^ BigInt(id)) * 1099511628211n);
console.log(JSON.stringify({ impl: 'hf-tokenizers', tokenizer: tokenizerDir.split('/').pop(), corpus: corpusFile.split('/').pop().replace('.json', ''),
  mode, threads: Number(process.env.RAYON_NUM_THREADS ?? 0), strings: work.length, chars: work.reduce((a, s) => a + s.length, 0), tokens, seconds, cpu_seconds: (cpu.user + cpu.system) / 1e6,
  ids_fnv: h.toString(16).padStart(16, '0') }));
