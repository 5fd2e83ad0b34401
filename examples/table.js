'use strict';
// Prints rows as a Markdown table with right-aligned columns (the load test's
// and the benchmark's output).

/** @param {string[]} header @param {unknown[][]} rows */
function table(header, rows) {
  const all = [header, ...rows].map((r) => r.map(String));
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r) => '| ' + r.map((c, i) => c.padStart(widths[i])).join(' | ') + ' |';
  console.log(line(all[0]));
  console.log('|' + widths.map((w) => '-'.repeat(w + 1) + ':').join('|') + '|');
  for (const r of all.slice(1)) console.log(line(r));
}

module.exports = { table };
