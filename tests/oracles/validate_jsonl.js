// Validates every line of a JSONL file against a JSON Schema (draft 2020-12) with Ajv, an
// independent validator: `node validate_jsonl.js <oracle-dir> <schema.json> <file.jsonl>`.
// Prints one JSON object: {"lines": N, "errors": [{"line": i, "type": _type, "errors": [...]}]}.
// Exit status 0 when the schema compiled and every line was checked (valid or not), 1 otherwise.
'use strict';
const fs = require('fs');
const path = require('path');
const [oracleDir, schemaPath, jsonlPath] = process.argv.slice(2);
const Ajv2020 = require(path.join(oracleDir, 'node_modules', 'ajv', 'dist', '2020')).default;
const ajv = new Ajv2020({allErrors: true, strict: true, strictTypes: false, strictRequired: false});
const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
const validate = ajv.compile(schema);
const out = {lines: 0, errors: []};
fs.readFileSync(jsonlPath, 'utf8').split('\n').forEach((text, i) => {
  if (text === '') return;
  out.lines++;
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    out.errors.push({line: i + 1, type: null, errors: ['not JSON: ' + e.message]});
    return;
  }
  if (validate(value)) return;
  // The top level is a oneOf over the line types, which reports every branch; the line's own
  // branch ($defs/<_type>) gives the readable errors.
  const own = typeof value._type === 'string' && schema.$defs[value._type] ?
      ajv.getSchema(schema.$id + '#/$defs/' + value._type) : null;
  const errs = own && !own(value) ? own.errors : validate.errors;
  out.errors.push({line: i + 1, type: value._type === undefined ? null : value._type,
                   errors: errs.map(e => `${e.instancePath || '/'} ${e.message}` +
                       (e.params && Object.keys(e.params).length ? ' ' + JSON.stringify(e.params) : ''))});
});
process.stdout.write(JSON.stringify(out) + '\n');
