// Feature-by-feature differential tests of our Jinja interpreter against Python jinja2 set up as transformers
// sets it up (see test_text_jinja_oracle.h). Each template exercises one construct; the whole corpus must render
// byte-identically (or fail on both sides). Plus the checks jinja2 cannot judge: error positions, limits.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "test_text_jinja_oracle.h"
#include "text/jinja/jinja.h"

namespace vlm {
namespace {

Json standard_vars() {
  return parse_json(R"({
    "s": "Hello World", "n": 5, "f": 2.5, "neg": -3, "big": 1234567, "t": true, "fa": false, "nothing": null,
    "lst": [3, 1, 2], "strs": ["b", "A", "c", "a"], "d": {"b": 2, "a": 1, "C": 3}, "empty": [], "edict": {},
    "nested": {"x": {"y": [1, {"z": "deep"}]}}, "uni": "héllo wörld ñ 日本語 😀 ǅ", "ws": "  padded \t\n",
    "floats": [0.1, 1e-7, 1e22, 3.0, -0.5, 123456789.125, 1e16, 1e15],
    "users": [{"name": "bob", "age": 30, "admin": true}, {"name": "alice", "age": 25},
              {"name": "Carl", "age": 30, "admin": false}],
    "msgs": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "yo"}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}],
    "quote": "it's \"quoted\" <b>&</b>", "multiline": "line1\nline2\n\nline4\r\nline5",
    "csv": "a,b,,c", "path": "a/b/c.txt", "num_str": "42", "float_str": " 3.75 ", "bad_num": "x12"
  })", "vars");
}

// Small templates, one construct each. Grouped loosely; order does not matter.
const std::vector<std::string> kTemplates = {
    // output and literals
    "plain text only", "{{ s }}", "{{ n }} {{ f }} {{ neg }} {{ t }} {{ fa }} {{ nothing }}", "{{ lst }} {{ d }}",
    "{{ strs }} {{ nested }}", "{{ 'a' 'b' \"c\" }}", "{{ (1, 2) }} {{ (1,) }} {{ () }}", "{{ [1, [2, (3,)], {'k': None}] }}",
    "{{ 1.0 }} {{ 1.5e3 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 10 / 5 }} {{ 2 ** 62 }}", "{{ floats }}",
    "{% for x in floats %}{{ x }}|{% endfor %}", "{{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }}",
    "{{ 'esc\\tape\\n\\x41\\u00e9\\\\' }}", "{{ \"it's\" }} {{ ['it\\'s', 'q\"x', 'both\\'\"'] }}", "{{ uni }}",
    "{{ [uni, 'tab\\there', '\\x07bell', '\\u200b'] }}", "{{ quote }}", "{{ s, n }}", "{{ none }}{{ None }}{{ True }}",
    // arithmetic
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "{{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2.0 ** 3 }} {{ -2 ** 2 }} {{ 2 ** 3 ** 2 }}", "{{ 1 + 2 * 3 - 4 / 2 }}",
    "{{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 3 }} {{ 'a' * 0 }}", "{{ 'a' + 'b' }} {{ [1] + [2] }} {{ (1,) + (2,) }}",
    "{{ t + 1 }} {{ t * 3 }} {{ fa - 1 }}", "{{ 1 / 0 }}", "{{ 'a' + 1 }}", "{{ n - 'x' }}", "{{ -n }} {{ +f }} {{ - - n }}",
    "{{ -s }}", "{{ 5 // 0 }}", "{{ 5.0 % 0 }}", "{{ 'x' ~ 1 ~ none ~ t ~ lst }}", "{{ undefined_thing ~ 'x' }}",
    "{{ '%s and %s' % ('a', 'b') }} {{ '%d%%' % 50 }} {{ '%5.2f|' % 3.14159 }} {{ '%-4s|' % 'a' }} {{ '%r' % 'x' }}",
    "{{ '%(a)s-%(b)s' % {'a': 1, 'b': 2} }} {{ '%x %X %o' % (255, 255, 8) }} {{ '%s' % [1, 2] }}",
    // comparisons and logic
    "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ t == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }}",
    "{{ 1 != 2 }} {{ 'a' == 'a' }} {{ none == none }} {{ d == {'a': 1, 'b': 2, 'C': 3} }} {{ lst == [3, 1, 2] }}",
    "{{ 1 < 'a' }}", "{{ 2 >= 2 }} {{ 3 <= 2 }} {{ 'B' > 'a' }}", "{{ n and s }} {{ 0 and s }} {{ 0 or '' or 'x' }} {{ empty or 'fallback' }}",
    "{{ not t }} {{ not empty }} {{ not not s }}", "{{ 'a' in 'cat' }} {{ 2 in lst }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in lst }}",
    "{{ 1 in 'abc' }}", "{{ 'x' in nothing }}", "{{ 'x' in undefined_thing }}",
    "{{ 'yes' if t else 'no' }} {{ 'yes' if fa else 'no' }} [{{ 'only' if fa }}]", "{{ 'a' if fa else 'b' if t else 'c' }}",
    "{{ (1 if t else 2) + 10 }}", "{{ n if n > 3 else -n }}",
    // attributes, items, slicing
    "{{ nested.x.y[1].z }} {{ nested['x']['y'][0] }} {{ lst.1 }} {{ msgs[0].role }}", "{{ d.a }} {{ d['b'] }} {{ d.missing }}|",
    "{{ lst[-1] }} {{ lst[5] }}| {{ s[0] }}{{ s[-1] }} {{ uni[1] }} {{ uni[-3] }}",
    "{{ lst[1:] }} {{ lst[:1] }} {{ lst[::-1] }} {{ lst[::2] }} {{ lst[-2:] }} {{ lst[5:] }} {{ lst[1:-1] }}",
    "{{ s[::-1] }} {{ s[2:5] }} {{ uni[::-1] }} {{ uni[3:8] }} {{ s[-3:] }} {{ s[:-3] }} {{ s[10:2:-2] }}",
    "{{ lst[::0] }}", "{{ msgs[1:] | map(attribute='role') | join(',') }}", "{{ (1, 2, 3)[1:] }}",
    "{{ d.items is callable }}{{ d.keys() }} {{ d.values() }} {{ d.items() }} {{ d.copy() }}", "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }}",
    "{{ nothing.attr }}|", "{{ undefined_thing.attr }}", "{{ undefined_thing['k'] }}", "{{ d.missing.deeper }}",
    "{{ n.real }}|{{ s.nope }}|", "{{ d['items'] is callable }}", "{{ lst['append'] }}|",
    // strings methods
    "{{ s.upper() }} {{ s.lower() }} {{ s.title() }} {{ 'hello wORLD-x y_z'.title() }} {{ s.capitalize() }} {{ s.swapcase() }}",
    "{{ s.startswith('Hell') }} {{ s.startswith(('x', 'He')) }} {{ s.endswith('ld') }} {{ s.startswith('World', 6) }}",
    "{{ csv.split(',') }} {{ csv.split(',', 1) }} {{ csv.rsplit(',', 1) }} {{ '  a  b c '.split() }} {{ ' a b c '.split(None, 1) }} {{ ' a b c '.rsplit(None, 1) }}",
    "[{{ ws.strip() }}] [{{ ws.lstrip() }}] [{{ ws.rstrip() }}] [{{ 'xxhixx'.strip('x') }}] [{{ path.rstrip('.txt') }}]",
    "{{ s.replace('o', '0') }} {{ s.replace('l', 'L', 2) }} {{ 'abc'.replace('', '-') }}",
    "{{ s.count('o') }} {{ s.find('o') }} {{ s.rfind('o') }} {{ s.find('zz') }} {{ s.index('W') }} {{ uni.find('日') }}",
    "{{ s.index('zz') }}", "{{ '-'.join(strs) }} {{ ''.join(['a', 'b']) }}", "{{ '-'.join([1, 2]) }}",
    "{{ multiline.splitlines() }} {{ multiline.splitlines(True) }}",
    "{{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ 'a1'.isalnum() }} {{ '  '.isspace() }} {{ 'abc'.islower() }} {{ 'ABC'.isupper() }} {{ ''.isdigit() }}",
    "{{ '42'.zfill(5) }} {{ '-42'.zfill(5) }} {{ 'ab'.center(7, '*') }} {{ 'ab'.ljust(5, '.') }} {{ 'ab'.rjust(5) }}",
    "{{ 'a=b=c'.partition('=') }} {{ 'a=b=c'.rpartition('=') }} {{ 'abc'.partition('x') }}",
    "{{ 'prefix_body'.removeprefix('prefix_') }} {{ 'file.txt'.removesuffix('.txt') }}",
    "{{ '{} and {}'.format('a', 'b') }} {{ '{1}{0}'.format('a', 'b') }} {{ '{name}!'.format(name='x') }} {{ '{:>5}|{:<5}|{:^5}|'.format('a', 'b', 'c') }}",
    "{{ '{:.2f} {:5d} {:05d} {:+d} {:x} {}'.format(3.14159, 42, 42, 7, 255, 2.5) }} {{ '{0[a]} {0.a}'.format(d) }} {{ '{!r}'.format('q') }}",
    "{{ '{{literal}} {}'.format(1) }}", "{{ s.nosuchmethod() }}", "{{ s.split(',', maxsplit=0) }}",
    // filters: strings
    "{{ s|upper }} {{ s|lower }} {{ 'hello world-foo(bar)[baz] <x>'|title }} {{ 'hELLO'|capitalize }}", "[{{ ws|trim }}] [{{ 'xxhixx'|trim('x') }}]",
    "{{ s|replace('o', '0') }} {{ s|replace('l', '', 1) }} {{ n|replace('5', 'five') }}", "{{ s|length }} {{ uni|length }} {{ lst|count }} {{ d|length }}",
    "{{ quote|e }} {{ quote|escape }} {{ quote|safe }}", "{{ 'a b  c\nd'|wordcount }} {{ uni|wordcount }}", "{{ s|center(20) }}|{{ 'ab'|center(5) }}|",
    "{{ multiline|indent }}|{{ multiline|indent(2, true) }}|{{ multiline|indent('> ', blank=true) }}", "{{ 5|string }} {{ lst|string }} {{ nothing|string }}",
    "{{ '%s-%d'|format('a', 3) }} {{ '%(x)s'|format(x=1) }}", "{{ s|reverse }} {{ lst|reverse|list }}", "{{ s|first }} {{ s|last }} {{ s|list }}",
    // filters: numbers
    "{{ num_str|int }} {{ float_str|int }} {{ float_str|float }} {{ bad_num|int }} {{ bad_num|int(7) }} {{ f|int }} {{ '0x1A'|int(0, 16) }} {{ '1_000'|int }}",
    "{{ n|float }} {{ 'inf'|float }} {{ 'nan'|float }} {{ bad_num|float }} {{ t|int }} {{ none|int }}", "{{ neg|abs }} {{ -2.5|abs }} {{ (-2.5)|abs }}",
    "{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 1234.5678|round(-2) }} {{ 3|round }} {{ 2.5|round(0, 'floor') }} {{ 2.1|round(0, 'ceil') }} {{ 1.15|round(1) }}",
    "{{ lst|sum }} {{ floats|sum }} {{ users|sum(attribute='age') }} {{ lst|sum(start=10) }}", "{{ lst|min }} {{ lst|max }} {{ strs|min }} {{ strs|max }} {{ strs|max(case_sensitive=true) }} {{ empty|min }}|",
    "{{ users|max(attribute='age') }} {{ users|min(attribute='name') }}",
    // filters: sequences
    "{{ lst|first }} {{ lst|last }} {{ empty|first }}|{{ d|first }} {{ d|list }} {{ d|items|list }}", "{{ lst|sort }} {{ lst|sort(reverse=true) }} {{ strs|sort }} {{ strs|sort(case_sensitive=true) }}",
    "{{ users|sort(attribute='age')|map(attribute='name')|join(',') }} {{ users|sort(attribute='age,name')|map(attribute='name')|join(',') }} {{ users|sort(attribute='age', reverse=true)|map(attribute='name')|join(',') }}",
    "{{ d|dictsort }} {{ d|dictsort(true) }} {{ d|dictsort(by='value', reverse=true) }}", "{{ [1, 2, 1, 3, 2]|unique|list }} {{ ['a', 'A', 'b']|unique|list }} {{ ['a', 'A']|unique(true)|list }}",
    "{{ users|unique(attribute='age')|map(attribute='name')|list }}", "{{ range(7)|batch(3)|list }} {{ range(7)|batch(3, 'x')|list }}",
    "{{ users|map(attribute='name')|list }} {{ users|map(attribute='admin', default='?')|list }} {{ strs|map('upper')|list }} {{ lst|map('string')|join }}",
    "{{ lst|select('odd')|list }} {{ lst|reject('odd')|list }} {{ [0, 1, '', 'a', none]|select|list }} {{ lst|select('greaterthan', 1)|list }} {{ lst|select('>', 1)|list }}",
    "{{ users|selectattr('admin')|map(attribute='name')|list }} {{ users|rejectattr('admin')|map(attribute='name')|list }} {{ users|selectattr('age', 'equalto', 30)|map(attribute='name')|list }}",
    "{{ users|selectattr('admin', 'defined')|list|length }} {{ users|selectattr('admin', 'undefined')|list|length }} {{ msgs|selectattr('role', 'in', ['user', 'system'])|list|length }}",
    "{{ msgs|selectattr('role', 'equalto', 'user')|list|length }}", "{{ msgs|selectattr('role', 'equalto', 'user')|length }}", "{{ msgs|selectattr('role', 'equalto', 'x')|first }}|",
    "{% if msgs|selectattr('role', 'equalto', 'nobody') %}gen-truthy{% endif %}", "{{ msgs|selectattr('role', 'equalto', 'user')|last }}",
    "{{ 'xyz'|list }} {{ (1, 2)|list }} {{ d.items()|list }} {{ d.keys()|list }}", "{{ lst|join(', ') }} {{ users|join('/', attribute='name') }} {{ d|join }}",
    "{{ nested|tojson }} {{ uni|tojson }} {{ quote|tojson }} {{ floats|tojson }} {{ nothing|tojson }} {{ t|tojson }}", "{{ d|tojson(indent=2) }}",
    "{{ msgs|tojson(indent=4) }}", "{{ {'a': [], 'b': {}, 'c': [1]}|tojson(indent=1) }}", "{{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }} {{ uni|tojson(ensure_ascii=true) }}",
    "{{ 'a\\u0001b\\x7f\\n\\\"'|tojson }}", "{{ undefined_thing|tojson }}", "{{ {1: 'int key', none: 'none key', 2.5: 'f'}|tojson }}", "{{ (1, 'x')|tojson }}",
    "{{ d|items|list }} {{ undefined_thing|items|list }}", "{{ lst|items|list }}", "{{ undefined_thing|default('dflt') }} {{ ''|default('dflt') }} {{ ''|default('dflt', true) }} {{ none|d('x') }} {{ none|d('x', boolean=true) }}",
    "{{ users[0]|attr('name') }} {{ d|attr('missing') }}|", "{{ lst|length }} {{ 'abc'|count }} {{ n|length }}",
    "{{ undefined_thing|length }} {{ undefined_thing|list }} {{ undefined_thing|join(',') }} [{{ undefined_thing|trim }}] {{ undefined_thing|upper }} {{ undefined_thing|first }}|",
    "{{ undefined_thing|abs }}", "{{ undefined_thing|int }}", "{{ undefined_thing|float }}", "{{ undefined_thing|indent }}", "{{ undefined_thing|dictsort }}", "{{ u|first }}|{{ u|last }}|{{ u|min }}|{{ u|center }}|{{ u|sum }}", "{{ undefined_thing|sort }}", "{{ range(5)|list }} {{ range(2, 8, 2)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }}", "{{ range(100001)|length }}",
    // tests
    "{{ n is defined }} {{ zz is defined }} {{ zz is undefined }} {{ nothing is none }} {{ nothing is not none }} {{ n is number }} {{ f is number }} {{ t is number }}",
    "{{ n is integer }} {{ f is integer }} {{ t is integer }} {{ f is float }} {{ t is boolean }} {{ n is boolean }} {{ t is true }} {{ 1 is true }} {{ fa is false }} {{ 0 is false }}",
    "{{ s is string }} {{ lst is string }} {{ d is mapping }} {{ lst is mapping }} {{ lst is sequence }} {{ s is sequence }} {{ d is sequence }} {{ n is sequence }} {{ zz is sequence }}",
    "{{ lst is iterable }} {{ n is iterable }} {{ zz is iterable }} {{ d is iterable }} {{ s is iterable }}",
    "{{ n is odd }} {{ n is even }} {{ 10 is divisibleby 5 }} {{ 10 is divisibleby(3) }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'aBc' is lower }}",
    "{{ 'x' is in 'xyz' }} {{ 2 is in lst }} {{ n is eq 5 }} {{ n is equalto 5 }} {{ n is ne 4 }} {{ n is gt 4 }} {{ n is lt 4 }} {{ n is ge 5 }} {{ n is le 4 }} {{ n is == 5 }}",
    "{{ s is callable }} {{ s.upper is callable }} {{ range is callable }} {{ none is sameas none }} {{ t is sameas true }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ 'nope' is filter }}",
    "{{ not n is defined }} {{ n is defined and s is defined }} {{ zz is defined or 'fallback' }}", "{{ 'x' is odd }}", "{{ n is divisibleby 0 }}",
    // for loops
    "{% for x in lst %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}:{{ x }} {% endfor %}",
    "{% for x in lst %}{{ loop.previtem }}>{{ x }}<{{ loop.nextitem }} {% endfor %}", "{% for x in lst %}{{ loop.cycle('odd', 'even') }} {% endfor %}",
    "{% for x in empty %}never{% else %}empty!{% endfor %}", "{% for x in lst if x > 1 %}{{ x }}{{ loop.length }}{{ loop.last }} {% else %}none{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "{% for k in d %}{{ k }}{% endfor %}", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}",
    "{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %}", "{% for a, b in [(1, 2, 3)] %}{{ a }}{% endfor %}", "{% for x in n %}{% endfor %}",
    "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for row in [[1, 2], [3, 4]] %}{% for c in row %}{{ loop.index }}/{{ c }} {% endfor %}|{% endfor %}", "{% for x in lst %}{{ loop.changed(x > 1) }} {% endfor %}",
    "{% for x in undefined_thing %}x{% else %}undefined iterates empty{% endfor %}", "{% for x in nothing %}{% endfor %}",
    "{% for i in range(3) %}{% set inner = i * 2 %}{{ inner }}{% endfor %}[{{ inner }}]", "{% set x = 1 %}{% for i in range(3) %}{{ x }}{% set x = i + 10 %}{{ x }} {% endfor %}{{ x }}",
    "{% for i in range(3) %}{% if not loop.first %}{{ prev }}{% endif %}{% set prev = i %}{% endfor %}", "{{ loop }}|",
    "{% for item in [{'c': [{'c': []}, {'c': [1]}]}] recursive %}<{{ loop.depth }}{% if item.c %}{{ loop(item.c) }}{% endif %}>{% endfor %}",
    // set, namespace, with
    "{% set a = 1 %}{% set b, c = 2, 3 %}{{ a }}{{ b }}{{ c }}", "{% set t2 = 1, 2 %}{{ t2 }}", "{% set blk %}inside {{ n }}{% endset %}[{{ blk }}]",
    "{% set blk | upper %}shout {{ s }}{% endset %}{{ blk }}", "{% set ns = namespace(found=false, count=0) %}{% for x in lst %}{% if x > 1 %}{% set ns.found = true %}{% set ns.count = ns.count + 1 %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.count }}",
    "{% set ns = namespace() %}{% set ns.x = 'late' %}{{ ns.x }} {{ ns.missing }}|", "{% set ns = namespace(d) %}{{ ns.a }}{{ ns.b }}", "{% set notns = 5 %}{% set notns.x = 1 %}",
    "{% if t %}{% set leaked = 'yes' %}{% endif %}{{ leaked }}", "{% with a = 5, b = 6 %}{{ a * b }}{% endwith %}[{{ a }}]", "{% set d2 = dict(x=1, y=[2]) %}{{ d2 }} {{ dict(d, z=0) }}",
    "{% set x = {'k': 1} %}{{ x.k }} {{ {'a': 1, 'a': 2} }}", "{% set lst2 = lst + [9] %}{{ lst2 }} {{ lst }}",
    // sandbox: mutation is refused
    "{% set l = [1] %}{{ l.append(2) }}", "{% set m = {} %}{{ m.update({'a': 1}) }}", "{% set l = [1, 2, 3, 4] %}{{ l.pop() }}{{ l }}{{ l.pop(0) }}{{ l }}{{ l.clear() }}{{ l }}", "{{ [].pop() }}", "{{ n.real }} {{ f.imag }} {{ t.numerator }}", "{{ lst.index(2) }} {{ lst.count(3) }} {{ (1, 2).index(2) }}",
    "{{ lst.append }}|{{ lst.__class__ }}|",
    // macros and call blocks
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C') }} {{ greet(punct='.', name='D') }}",
    "{% macro m(a, b=a ~ '2') %}{{ a }}{{ b }}{% endmacro %}{{ m('x') }}", "{% macro m(a) %}[{{ a }}]{% endmacro %}{{ m() }}",
    "{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=2) }}",
    "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ s }}{% endcall %}",
    "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each(lst) %}<{{ x }}>{% endcall %}",
    "{% macro rec(k) %}{% if k > 0 %}{{ k }}{{ rec(k - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}", "{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}",
    "{% macro m() %}{{ caller is defined }}{% endmacro %}{{ m() }}", "{% macro m() %}x{% endmacro %}{{ m is callable }} {{ m.name }}",
    // filter blocks, raw, comments, generation
    "{% filter upper %}shout {{ s }}{% endfilter %}", "{% filter replace('a', 'b')|upper %}banana{% endfilter %}", "{% raw %}{{ not rendered }}{% endraw %}",
    "a{# comment #}b{#- trimmed -#}  c", "{% generation %}gen {{ n }}{% endgeneration %}",
    // raise_exception and strftime_now
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}", "{% if n > 3 %}{{ raise_exception('n too big: ' ~ n) }}{% endif %}after",
    "{{ strftime_now('%Y-%m-%d %H:%M:%S %d %b %Y %A %j') }}",
    // whitespace control, trim_blocks, lstrip_blocks
    "a\n{% if t %}\nyes\n{% endif %}\nb", "a\n    {% if t %}\n    yes\n    {% endif %}\nb", "a  {%- if t -%}  yes  {%- endif -%}  b", "a\n  {{- s -}}\n  b",
    "  {%+ if t %}keep-left{% endif %}", "{% if t +%}\nkept newline{% endif %}", "x\n  {# comment #}\ny", "x  {# comment #}  y", "  {% if t %}a{% endif %}  \n  {% if t %}b{% endif %}",
    "{% for x in lst %}\n  {{ x }}\n{% endfor %}\n", "{% for x in lst -%}\n  {{ x }}\n{%- endfor %}", "text\n\n", "line\r\nwindows\rold mac\n", "{%- if t %}\n\tindented{% endif -%}\n\n  end",
    "\t{% if t %}\ttab{% endif %}", "{{ s }}\n{{ n }}\n", "  {% raw %}  raw  {% endraw %}  ", "{% raw -%}  \n  trimmed raw {%- endraw %}", "{{- '  left' }}", "a {%- raw %} b {% endraw -%} c",
    "{% if t %}{% endif %}\n{% if t %}x{% endif %}\n\n", "   \n  {%- if t %}x{% endif %}",
    // scoping subtleties
    "{% set x = 'outer' %}{% for i in [1] %}{% set x = 'inner' %}{{ x }}{% endfor %}{{ x }}", "{% for i in [1, 2] %}{% set y = (y | default(0)) + i %}{{ y }}{% endfor %}",
    "{% set ns = namespace(items=[]) %}{% for i in lst %}{% set ns.items = ns.items + [i * 2] %}{% endfor %}{{ ns.items }}",
    "{% macro m() %}{% set inner = 1 %}{{ inner }}{% endmacro %}{{ m() }}{{ inner }}|",
    // errors that must be errors on both sides
    "{% if %}{% endif %}", "{% for x in %}{% endfor %}", "{{ 1 + }}", "{% if t %}unclosed", "{{ s|nosuchfilter }}", "{{ s is nosuchtest }}", "{% endfor %}",
    "{{ 'unterminated }}", "{% break %}", "{{ x.0.1 }}", "{{ [1, 2 }}", "{% set 1 = 2 %}", "{% nosuchtag %}", "{{ {'a': 1 }} }}", "{{ lst[1:2:3:4] }}", "{#", "text {# unterminated", "{% raw %}", "{% raw %}unterminated raw", "{{ a b }}",
    "{% macro m(a=1, b) %}{% endmacro %}", "{{ 1 is is }}", "{{ ()|length }} {{ (1)|string }}",
    // templates cannot touch files (transformers gives jinja2 no loader; we have no such tags)
    "{% include '/etc/passwd' %}", "{% import 'macros.j2' as m %}{{ m.x() }}", "{% extends 'base.html' %}", "{% from 'x' import y %}",
    // integer edges (each was undefined behaviour or an unbounded allocation before; see JinjaLimits)
    "{{ range(-9223372036854775807 - 1, 9223372036854775807, 4611686018427387904)|list }}",
    "{{ range(0, -10, -9223372036854775807 - 1)|list }} {{ range(5, 0, -9223372036854775807)|list }}",
    "{{ 123|round(-400) }} {{ -5|round(-1) }} {{ 15|round(-1) }} {{ 25|round(-1) }}",
    "{{ '%99999999999999999999d' % 1 }}", "{{ '{:99999999999999999999999}'.format(1) }}",
    "{{ '{:.99999999999999999999999f}'.format(1.5) }}", "{{ '%.99999999999999999999f' % 1.5 }}",
};

TEST(JinjaDifferential, FeatureCorpusMatchesJinja2) {
  Json cases = Json::array();
  Json vars = standard_vars();
  for (const auto& t : kTemplates) cases.push_back({{"template", t}, {"vars", vars}, {"now", 1700000000}});
  auto st = test::compare_with_oracle(cases, "feature");
  std::printf("feature corpus: %zu cases (%zu render, %zu error on both sides), %zu mismatches\n", st.cases,
              st.rendered, st.errors, st.mismatches);
  EXPECT_EQ(st.mismatches, 0u);
  EXPECT_EQ(st.cases, kTemplates.size());
  EXPECT_GT(st.rendered, st.cases * 3 / 4);  // the corpus mostly exercises working features
}

// Errors carry origin:line:col of the failing construct.
TEST(JinjaErrors, PositionsAreReported) {
  try {
    jinja::Template t("line one\n  {{ 1 +  }}", "tmpl.jinja");
    FAIL() << "expected a syntax error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("tmpl.jinja:2:"), std::string::npos) << e.what();
  }
  try {
    jinja::Template t("ok\nok\n   {{ raise_exception('bad input') }}", "t2");
    t.render(Json::object());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("t2:3:7"), std::string::npos) << m;
    EXPECT_NE(m.find("bad input"), std::string::npos) << m;
  }
}

TEST(JinjaLimits, LoopsRecursionAndOutputAreBounded) {
  jinja::RenderOptions small;
  small.limits.max_iterations = 1000;
  small.limits.max_output_bytes = 1 << 16;
  small.limits.max_call_depth = 50;
  auto expect_resource = [&](const std::string& src) {
    try {
      jinja::Template(src, "limits").render(Json::object(), small);
      ADD_FAILURE() << "no resource error for " << src;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kResource) << src << ": " << e.what();
    }
  };
  expect_resource("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}");
  expect_resource("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}");
  expect_resource("{{ 'x' * 100000 }}");
  expect_resource("{% set s = namespace(v='ab') %}{% for i in range(20) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}");
  // Sizes that come from numbers in the template are checked before anything is allocated, and products of
  // them saturate instead of wrapping around (4 * 2**62 is 0 in 64 bits).
  expect_resource("{{ 'abcd' * 4611686018427387904 }}");
  expect_resource("{{ [1, 2, 3, 4] * 4611686018427387904 }}");
  expect_resource("{{ 'x'|indent(10**15) }}");
  expect_resource("{{ ('x\n' * 1000)|indent(1000) }}");
  expect_resource("{{ 'x'|center(10**15) }}");
  expect_resource("{{ 'x'.zfill(10**15) }}");
  expect_resource("{{ 'x'.center(10**15) }}");
  expect_resource("{{ {'a': 1}|tojson(indent=10**15) }}");
  expect_resource("{{ [1]|batch(10**15, 0)|list }}");
  // Python's integers are unbounded; ours stop at 64 bits with an error rather than a wrong number.
  try {
    jinja::Template("{{ 9223372036854775807|round(-1) }}", "round").render(Json::object());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << e.what();
  }
  // Deeply nested syntax is refused before it can exhaust the stack.
  std::string deep(5000, '(');
  EXPECT_THROW(jinja::Template("{{ " + deep + "1" + std::string(5000, ')') + " }}", "deep"), Error);
  std::string chain = "{{ 1";
  for (int i = 0; i < 20000; ++i) chain += " + 1";
  EXPECT_THROW(jinja::Template(chain + " }}", "chain"), Error);
}

TEST(JinjaSafety, MalformedTemplatesNeverCrash) {
  // Truncations of a real-looking template at every byte: each either parses or throws Error.
  const std::string src =
      "{%- set ns = namespace(a=1) -%}{% for m in messages if m.role != 'x' %}{{ m.content|trim|tojson }}"
      "{%- if loop.last and add_generation_prompt %}{{ '<|im_start|>' ~ m['role'][1:] }}{% endif %}{% endfor %}"
      "{% macro f(x, y=2) %}{{ caller(x) }}{% endmacro %}{% call(v) f(1) %}{{ v }}{% endcall %}{# c #}{% raw %}r{% endraw %}";
  Json vars = {{"messages", Json::array({{{"role", "user"}, {"content", " hi "}}})}, {"add_generation_prompt", true}};
  size_t parsed = 0;
  for (size_t cut = 0; cut <= src.size(); ++cut) {
    try {
      jinja::Template t(src.substr(0, cut), "cut");
      t.render(vars);
      ++parsed;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 0u);
  EXPECT_THROW(jinja::Template(std::string("{{ '\xff' }}"), "bad-utf8"), Error);
  // Found by fuzz_jinja: slices inside a tuple subscript left the slices without their object.
  EXPECT_THROW(jinja::Template("{{ lst[1:2:,:4] }}", "slice-tuple"), Error);
  EXPECT_THROW(jinja::Template("{{ lst[1, :4] }}", "slice-tuple"), Error);
  EXPECT_EQ(jinja::Template("{{ d[1, 2] }}", "tuple-key").render({{"d", Json::object()}}), "");
}

}  // namespace
}  // namespace vlm
