import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';

describe('the seed demo (npm start)', () => {
  test('prints the stages and eight 5x5 heatmaps, and writes the SVG', () => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ak-demo-')), 'heads.svg');
    const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'examples', 'demo.js'), '--out', out], {
      encoding: 'utf8',
      env: { ...process.env, NO_COLOR: '1' },
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('我想吃汉堡, d_model 512, 8 heads of 64');
    expect(r.stdout).toContain('[1, 5, 512] → [1, 5, 8, 64] → [1, 8, 5, 64] → [1, 8, 5, 64] → [1, 5, 512] → [1, 5, 512]');
    for (let h = 1; h <= 8; ++h) expect(r.stdout).toContain(`head ${h}`);
    // Each heatmap row: a token label and five weights that sum to 1.
    const rows = r.stdout.split('\n').filter((l) => /^\s+[我想吃汉堡]\s/.test(l));
    expect(rows.length).toBe(20); // 5 rows x 4 lines of two heads
    for (const row of rows) {
      const nums = (row.match(/\.\d\d/g) ?? []).map(Number);
      expect(nums.length).toBe(10);
      expect(Math.abs(nums.slice(0, 5).reduce((a, b) => a + b, 0) - 1)).toBeLessThan(0.03);
    }
    const svg = fs.readFileSync(out, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect((svg.match(/>head \d</g) ?? []).length).toBe(8);
    expect((svg.match(/<rect x=/g) ?? []).length).toBe(8 * 25);
  });
});
