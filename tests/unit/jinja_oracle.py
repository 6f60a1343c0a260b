#!/usr/bin/python3
# Oracle for the Jinja differential tests: renders each case with Python's jinja2 exactly as transformers'
# render_jinja_template does (ImmutableSandboxedEnvironment(trim_blocks, lstrip_blocks, extensions=[an
# AssistantTracker-style `generation` tag, loopcontrols]), its tojson filter, raise_exception and strftime_now).
# Input (argv[1]): a JSON list of {"template": str, "vars": {...}, "now": int|null}. Output (stdout): a JSON list
# of {"ok": true, "out": str} or {"ok": false, "type": exception class, "message": str, "raised": bool}.
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class RaisedByTemplate(TemplateError):
    pass


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker with tracking off: {% generation %}...{% endgeneration %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env(now):
    def raise_exception(message):
        raise RaisedByTemplate(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        t = datetime.fromtimestamp(now) if now is not None else datetime.now()
        return t.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    sys.setrecursionlimit(3000)
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    compiled = {}  # (template, now) -> compiled template or the exception compiling it raised
    for case in cases:
        try:
            key = (case["template"], case.get("now"))
            if key not in compiled:
                try:
                    compiled[key] = make_env(case.get("now")).from_string(case["template"])
                except Exception as e:
                    compiled[key] = e
            tmpl = compiled[key]
            if isinstance(tmpl, Exception):
                raise tmpl
            out = tmpl.render(**case["vars"])
            results.append({"ok": True, "out": out})
        except Exception as e:  # any failure is a result to compare, not a crash of the oracle
            results.append({"ok": False, "type": type(e).__name__, "message": str(e),
                            "raised": isinstance(e, RaisedByTemplate)})
    sys.stdout.write(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
