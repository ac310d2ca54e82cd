// The JavaScript file framing and name rules against the vectors the Rust
// peer is tested with (peer/vectors/transfer-v1.json), so that web/ and
// peer/ cannot drift apart: every sanitised name and every control frame
// must come out the same in both languages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { FramingError, parseControl } from '../src/framing.js';
import { sanitizeName } from '../src/names.js';

const vectors = JSON.parse(readFileSync(new URL('../../peer/vectors/transfer-v1.json', import.meta.url), 'utf8'));

test('the vectors are the version this client speaks', () => {
  assert.equal(vectors.version, 1);
  assert.ok(vectors.sanitize.length > 20 && vectors.control.length > 20);
});

test('names are sanitised exactly as in Rust', () => {
  for (const { input, output } of vectors.sanitize) {
    assert.equal(sanitizeName(input), output, `sanitizeName(${JSON.stringify(input)})`);
  }
});

test('control frames parse, or fail with the same kind, exactly as in Rust', () => {
  for (const v of vectors.control) {
    let got;
    try {
      got = { parsed: parseControl(v.text) };
    } catch (e) {
      assert.ok(e instanceof FramingError, `${JSON.stringify(v.text)}: ${e}`);
      got = { error: e.kind };
    }
    if ('parsed' in v) {
      assert.deepEqual(got, { parsed: v.parsed }, JSON.stringify(v.text));
    } else {
      assert.deepEqual(got, { error: v.error }, JSON.stringify(v.text));
    }
  }
});
