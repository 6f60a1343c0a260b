// Oracle for the tokenizer tests: runs Hugging Face's `tokenizers` (the Rust library through its
// official Node binding) on a request file and writes the results as JSON.
// Usage: node hf_tokenizer_oracle.js <oracle_dir> <request.json> <result.json>
// request: {"tokenizer": path, "texts": [string], "decode": [[id]], "bench": {"text_file": path, "reps": n}}
// result:  {"ids": [[id]], "ids_special": [[id]], "decoded": [string], "decoded_skip": [string],
//           "vocab_size": n, "bench": {"load_ms": [..], "encode_s": [..]}}
'use strict';
const fs = require('fs');
const path = require('path');

async function main() {
  const [oracleDir, requestPath, resultPath] = process.argv.slice(2);
  const { Tokenizer } = require(path.join(oracleDir, 'node_modules', 'tokenizers'));
  const req = JSON.parse(fs.readFileSync(requestPath, 'utf8'));
  const tok = Tokenizer.fromFile(req.tokenizer);
  const out = { ids: [], ids_special: [], decoded: [], decoded_skip: [], vocab_size: tok.getVocabSize(true) };
  for (const text of req.texts || []) {
    out.ids.push((await tok.encode(text, null, { addSpecialTokens: false })).getIds());
    out.ids_special.push((await tok.encode(text, null, { addSpecialTokens: true })).getIds());
  }
  for (const ids of req.decode || []) {
    out.decoded.push(await tok.decode(ids, false));
    out.decoded_skip.push(await tok.decode(ids, true));
  }
  if (req.bench) {
    const text = fs.readFileSync(req.bench.text_file, 'utf8');
    // Wall time and process CPU time (user + system; CPU time is robust on a shared machine).
    const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
    const b = { load_ms: [], load_cpu_ms: [], encode_s: [], encode_cpu_s: [], bytes: Buffer.byteLength(text, 'utf8'), tokens: 0 };
    out.bench = b;
    for (let r = 0; r < req.bench.reps; ++r) {
      let t0 = process.hrtime.bigint(), c0 = cpu();
      Tokenizer.fromFile(req.tokenizer);
      b.load_ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      b.load_cpu_ms.push((cpu() - c0) * 1e3);
      t0 = process.hrtime.bigint(); c0 = cpu();
      const enc = await tok.encode(text, null, { addSpecialTokens: false });
      b.encode_s.push(Number(process.hrtime.bigint() - t0) / 1e9);
      b.encode_cpu_s.push(cpu() - c0);
      b.tokens = enc.getIds().length;
    }
    // The same text as a sequence of ~1 KB prompts (sequential awaits: one encode at a time).
    if (req.bench.chunks) {
      b.chunks_s = []; b.chunks_cpu_s = [];
      for (let r = 0; r < req.bench.reps; ++r) {
        const t0 = process.hrtime.bigint(), c0 = cpu();
        for (const c of req.bench.chunks) await tok.encode(c, null, { addSpecialTokens: false });
        b.chunks_s.push(Number(process.hrtime.bigint() - t0) / 1e9);
        b.chunks_cpu_s.push(cpu() - c0);
      }
    }
  }
  fs.writeFileSync(resultPath, JSON.stringify(out));
}

main().catch((e) => {
  console.error('hf_tokenizer_oracle.js:', e && e.stack ? e.stack : e);
  process.exit(1);
});
