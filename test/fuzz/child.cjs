// Runs fuzz cases [from, to) of a seed: logs each call before it starts (so a
// crash is attributed to it), runs it, reports what is wrong with the outcome.
//   node test/fuzz/child.cjs <seed> <from> <to>
// Output lines: "S <i> <call>" started, "F <json>" a finding, "D <i>" done,
// "E <count>" the batch finished.
'use strict';
const fs = require('node:fs');
const { makeCase } = require('./cases.cjs');

const write = (line) => fs.writeSync(1, `${line}\n`);

async function main() {
  const [seed, from, to] = process.argv.slice(2).map(Number);
  let count = 0;
  for (let i = from; i < to; ++i) {
    write(`S ${i} (making the case)`);
    let c;
    let problem = null;
    try {
      c = makeCase(seed, i);
      write(`S ${i} ${c.name} ${c.what}`);
      problem = await c.run();
    } catch (err) {
      problem = `the case itself failed: ${err && err.stack ? err.stack : String(err)}`;
    }
    if (problem) write(`F ${JSON.stringify({ i, kind: 'wrong', call: c ? `${c.name} ${c.what}` : '(making the case)', detail: problem })}`);
    write(`D ${i}`);
    ++count;
  }
  write(`E ${count}`);
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack}\n`);
  process.exitCode = 1;
});
