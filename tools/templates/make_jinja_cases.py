#!/usr/bin/env python3
"""Expected renders for the Jinja-subset interpreter's edge cases (tests/IlgpuTune.Data.Tests/Fixtures/expected-jinja-cases.json).

Renders each case with Jinja2 configured as transformers' apply_chat_template configures it: ImmutableSandboxedEnvironment
(trim_blocks, lstrip_blocks, loopcontrols), tojson = json.dumps(ensure_ascii=False, ...), raise_exception. A case that
raises is recorded as {"error": true}. With the npm tokenizer folder (.cache/tokenizers) it also renders Qwen3's own
chat_template on a tool-calling conversation (tools, tool_calls, tool role, reasoning_content).
Usage: python3 make_jinja_cases.py OUT.json [TOKENIZERS_DIR]   (needs jinja2 >= 3.1)
"""
import json
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


VARS = {
    "messages": [
        {"role": "system", "content": "  Sys prompt \n"},
        {"role": "user", "content": "Hi <b>'there'</b>\tand \"you\""},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello 🙂 世界", "tool_calls": [
            {"function": {"name": "f", "arguments": {"a": 1, "b": [1.5, None, True], "c": "ü\n"}}}]},
        {"role": "user", "content": "x"},
    ],
    "bos_token": "<s>",
    "eos_token": "</s>",
    "n": 7,
    "f": 2.5,
    "s": "a,b,,c",
    "empty": [],
    "none": None,
}

CASES = [
    # whitespace control: trim_blocks, lstrip_blocks, '-' and '+'
    "{% if true %}\nA\n{% endif %}\nB",
    "  {% if true %}\n  A\n  {% endif %}\nB",
    "x  {% if true %}y{% endif %}  z",
    "a\n  {%- if true -%}  \n b \n {%- endif %}\nc",
    "a\n  {%+ if true %}b{% endif +%}\nc",
    "  {{ 'v' }}  \n  {# comment #}\n  w",
    "{% for m in messages %}\n  {{- m.role }}\n{% endfor %}",
    "line1\r\nline2\rline3\n",
    "{{ 'a' }}\n\n",
    # expressions and precedence
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 / 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1 ~ 2 }}",
    "{{ 'a' + 'b' | upper }} {{ ('a' + 'b') | upper }} {{ -n | abs }} {{ not true or true }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}",
    "{{ 'x' if n > 5 else 'y' }} {{ 'x' if n > 50 }}|{{ none }} {{ true }} {{ f }} {{ 1e-5 }} {{ 1e16 }} {{ 123456789.0 }} {{ 0.1 + 0.2 }}",
    "{{ [1, 'a', none, true, 2.0] }} {{ {'k': 'v', 'n': [1]} }} {{ (1, 2) }} {{ \"it's\" }} {{ ['it\\'s', \"q\\\"\"] }}",
    "{{ 'ab' in 'cabd' }} {{ 2 in [1, 2] }} {{ 'role' in messages[0] }} {{ 'zz' not in messages[0] }} {{ 3 not in [1] }}",
    "{{ n is defined }} {{ nope is defined }} {{ none is none }} {{ n is number }} {{ f is float }} {{ n is integer }} {{ s is string }} {{ messages is sequence }} {{ messages[0] is mapping }} {{ n is odd }} {{ n is divisibleby 7 }} {{ n is not even }} {{ true is sameas true }} {{ 'a' is lower }}",
    # indexing, slicing
    "{{ messages[-1].content }} {{ s[1:] }} {{ s[::-1] }} {{ s[-3:-1] }} {{ s[::2] }} {{ messages[1:3] | length }} {{ messages[::-1][0].role }} {{ 'héllo🙂x'[5] }} {{ 'héllo🙂x'[-2:] }}",
    # string methods
    "{{ s.split(',') }} {{ s.split(',', 1) }} {{ s.rsplit(',', 1) }} {{ '  a  b \\n c '.split() }} {{ '  a  b  '.split(none, 1) }} {{ 'xxaxx'.strip('x') }} {{ '\\n\\nq\\n'.lstrip('\\n') }}|{{ '\\n\\nq\\n'.rstrip() }}|",
    "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'aXbXc'.replace('X', '-') }} {{ 'aXbXc'.replace('X', '-', 1) }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.count('bc') }} {{ '-'.join(['a', 'b']) }} {{ 'A b'.upper() }}{{ 'A b'.lower() }}",
    # filters
    "{{ '  x  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ nope | default('d') }}|{{ '' | default('d', true) }}|{{ none | default('d') }}|{{ messages | length }}|{{ 'héllo🙂' | length }}|{{ n | string }}{{ 'ab' | list }}",
    "{{ messages[2].tool_calls[0].function.arguments | tojson }} {{ messages[1] | tojson }} {{ {'b': 1, 'a': [2, {}] } | tojson(indent=2) }} {{ [] | tojson }} {{ 'é\\u0001' | tojson }}",
    "{{ [3, 1, 2] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ messages | map(attribute='role') | join(',') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list }} {{ [1, 2, 3] | sum }} {{ [1, 1, 2] | unique | list }} {{ [1, 2] | first }}{{ [1, 2] | last }} {{ [1, 5, 2] | max }} {{ [1, 2] | reverse | list }} {{ 'ab' | reverse }}",
    "{{ '3' | int + 1 }} {{ 'x' | int }} {{ 2.7 | int }} {{ '2.5' | float }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 'a\\nb\\n\\nc' | indent(2) }} {{ 'a\\nb' | indent(2, true) }} {{ '<&>\"' | e }} {{ 'AbC' | lower }}{{ 'AbC' | upper }} {{ {'b': 1, 'a': 2} | items | list }} {{ [0, 1, '', 'a'] | select | list }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }}",
    # loops
    "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}{% if not loop.first %}{{ loop.previtem.role }}{% endif %}{% if not loop.last %}{{ loop.nextitem.role }}{% endif %}{{ loop.cycle('a', 'b') }};{% endfor %}",
    "{% for m in messages if m.role == 'user' %}{{ loop.index }}{{ m.content[0] }}{{ loop.last }};{% endfor %}",
    "{% for x in empty %}no{% else %}empty{% endfor %}{% for k, v in messages[0].items() %}{{ k }}={{ v | trim }};{% endfor %}{% for k in messages[0] %}{{ k }}{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %} {{ range(3) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }}",
    "{% set x = 1 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.found }}{{ ns.n }}",
    "{% for a in [[1, 2], [3]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }}|{% endfor %}",
    # set forms, if/elif/else, macros
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (3, 4) %}{% set c, d = t %}{{ c }}{{ d }}{% set blk %}in {{ a }} block{% endset %}[{{ blk }}]{% set up | upper %}shout{% endset %}{{ up }}",
    "{% if n < 5 %}a{% elif n < 8 %}b{% elif n < 10 %}c{% else %}d{% endif %}{% if none %}x{% else %}y{% endif %}{% if empty %}e{% endif %}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C') }}",
    "{{ messages[0]['content'] }}|{{ messages[0].get('role') }}|{{ messages[0].get('x', 'dflt') }}|{{ messages[0].keys() | list }}|{{ messages[0].missing }}|{{ (messages[0].missing is defined) }}",
    # errors
    "{{ raise_exception('bad role') }}",
    "{{ nope.attr }}",
    "{{ 'a' + 1 }}",
    "{{ nope + 'a' }}",
    "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 1) %}{{ raise_exception('alternate') }}{% endif %}{% endfor %}ok",
]


QWEN3_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1.5}},
        "required": ["city"]}}}]
QWEN3_TOOL_MESSAGES = [
    {"role": "system", "content": "Be nice."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "<think>\nneed tool\n</think>\n\nLet me check.", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}},
        {"function": {"name": "x", "arguments": "{\"a\": 1}"}}]},
    {"role": "tool", "content": "sunny"},
    {"role": "tool", "content": "ok"},
    {"role": "assistant", "content": "It is sunny.", "reasoning_content": "The tool said sunny."},
]


def main():
    out = sys.argv[1]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    cases = []
    for src in CASES:
        case = {"template": src}
        try:
            case["text"] = env.from_string(src).render(**VARS)
        except Exception as ex:  # noqa: BLE001 - every failure is the expected outcome of that case
            case["error"] = True
            case["python_error"] = f"{type(ex).__name__}: {ex}"
        cases.append(case)
    result = {"versions": {"jinja2": jinja2.__version__}, "variables": VARS, "cases": cases}
    if len(sys.argv) > 2:
        import os
        cfg = json.load(open(os.path.join(sys.argv[2], "qwen3", "tokenizer_config.json"), encoding="utf-8"))
        result["qwen3_tools"] = {"messages": QWEN3_TOOL_MESSAGES, "tools": QWEN3_TOOLS, "text": env.from_string(cfg["chat_template"]).render(
            messages=QWEN3_TOOL_MESSAGES, tools=QWEN3_TOOLS, documents=None, add_generation_prompt=True,
            eos_token=cfg["eos_token"], pad_token=cfg["pad_token"])}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
