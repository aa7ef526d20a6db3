#!/usr/bin/env python3
"""Writes jinja_cases.json: templates, their variables, and what Python Jinja2
renders for them in the environment transformers uses for chat templates
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its
tojson and globals). strftime_now is pinned to a fixed date so that the
expectation does not depend on the day. A case whose rendering raises keeps
"error": true and the start of the message.

Run: python3 make_jinja_cases.py  (needs jinja2; writes next to this file)
"""
import json
import os

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: "01 January 2025"
    return env


MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Tell me a joke."},
]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city, ünïcode",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}]
TOOL_MSGS = [
    {"role": "system", "content": "You help."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Nice\"}"}},
    ]},
    {"role": "tool", "content": "{\"temp\": 21.5}"},
    {"role": "tool", "content": "{\"temp\": 24}"},
    {"role": "assistant", "content": "<think>\nlooked it up\n</think>\n\nSunny, 21.5 C."},
    {"role": "user", "content": "Thanks"},
]
REASONING_MSGS = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "simple sum"},
    {"role": "user", "content": "3+3?"},
    {"role": "assistant", "content": "<think>\nagain\n</think>\n\n6"},
]
VL_MSGS = [
    {"role": "user", "content": [
        {"type": "image", "image": "cat.png"},
        {"type": "text", "text": "What is this?"},
    ]},
    {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    {"role": "user", "content": "And now?"},
]

# A multimodal template in the style of the Qwen-VL family: content is a
# string or a list of parts, rendered by a macro.
VL_TEMPLATE = """{%- set image_count = namespace(value=0) -%}
{%- macro render_content(content, do_vision_count) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is iterable and content is not mapping -%}
        {%- for item in content -%}
            {%- if 'image' in item or 'image_url' in item or item.type == 'image' -%}
                {%- if do_vision_count -%}{%- set image_count.value = image_count.value + 1 -%}{%- endif -%}
                Picture {{ image_count.value }}: <|vision_start|><|image_pad|><|vision_end|>
            {%- elif 'text' in item -%}
                {{- item.text -}}
            {%- endif -%}
        {%- endfor -%}
    {%- elif content is none or content is undefined -%}
    {%- else -%}
        {{- raise_exception('Unexpected content type.') -}}
    {%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
<|im_start|>{{ message.role }}
{{ render_content(message.content, true) }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}<|im_start|>assistant
{% endif -%}"""

CASES = [
    # ---- whitespace control
    ("text only\n", {}),
    ("a\n  {% if true %}\n    b\n  {% endif %}\nc", {}),
    ("a  {% if true %}b{% endif %}  c", {}),
    ("a\n  {%+ if true %}b{% endif +%}\nc", {}),
    ("x {{- ' y ' -}} z", {}),
    ("x\n\n{%- if true -%}\n\n y \n\n{%- endif -%}\n\nz", {}),
    ("{# comment #}\nA\n  {# indented comment #}\nB", {}),
    ("{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("{% raw %}{{ not parsed }}{% endraw %}", {}),
    ("line1\r\nline2{% if true %}\r\nx{% endif %}", {}),
    ("{% for i in range(3) %}\n  {{ i }}\n{% endfor %}\n", {}),
    # ---- literals, output of values
    ("{{ 1 }} {{ 1.5 }} {{ 2.0 }} {{ 1e20 }} {{ 0.0001 }} {{ 1e-5 }} {{ -3 }}", {}),
    ("{{ true }} {{ none }} {{ [1, 'a', none, true] }} {{ {'k': 'v', 'n': 1} }}", {}),
    ("{{ \"it's\" }} {{ ['it\\'s', \"q\\\"q\"] }} {{ 'tab\\tnew\\nline' }}", {}),
    ("{{ '\\u00e9\\x41' }} {{ 'a' 'b' }}", {}),
    ("{{ undefined_var }}|{{ undefined_var is defined }}|{{ x.y is defined }}", {"x": {}}),
    ("{{ data }}", {"data": {"a": [1, 2.5, {"b": None}], "c": "d'e"}}),
    # ---- operators
    ("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }}", {}),
    ("{{ 'a' + 'b' }} {{ 'a' ~ 1 ~ none }} {{ [1] + [2] }} {{ 'ab' * 3 }}", {}),
    ("{{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 2 >= 3 }} {{ 1 != 2 }}", {}),
    ("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }}", {}),
    ("{{ 1 and 'x' }} {{ 0 or 'y' }} {{ not 0 }} {{ none or [] }} {{ '' and 1 }}", {}),
    ("{{ 'yes' if x else 'no' }} {{ 'only' if false }}|", {"x": [0]}),
    ("{{ -x|abs }} {{ (1, 2)|length }} {{ ()|length }} {% for a in (1, 2) %}{{ a }}{% endfor %}", {"x": 3}),
    # ---- subscripts and slices
    ("{{ m[0].role }} {{ m[-1]['content'] }} {{ m.0.role }} {{ m[9] is defined }}", {"m": MSGS}),
    ("{{ s[::-1] }} {{ s[1:3] }} {{ s[-2:] }} {{ s[::2] }} {{ l[::-1] }} {{ l[1:] }} {{ l[:-1] }}",
     {"s": "héllo", "l": [1, 2, 3]}),
    ("{{ s[0] }}{{ s[-1] }} {{ l[5:] }} {{ l[::-2] }}", {"s": "日本語", "l": [1, 2, 3, 4]}),
    # ---- string methods
    ("{{ s.startswith('ab') }} {{ s.endswith(('x', 'yz')) }} {{ s.upper() }} {{ s.lower() }}",
     {"s": "abXyz"}),
    ("{{ s.split('</think>')[-1].lstrip('\\n') }}|{{ s.split('</think>')[0].rstrip('\\n') }}",
     {"s": "<think>\nr\n</think>\n\nanswer"}),
    ("{{ s.split() }} {{ s.split(' ', 1) }} {{ s.rsplit(' ', 1) }} {{ s.strip() }}|",
     {"s": "  a b  c "}),
    ("{{ s.replace('a', 'o') }} {{ s.replace('a', 'o', 1) }} {{ s.strip('ab') }} {{ s.title() }}",
     {"s": "banana split"}),
    ("{{ s.find('n') }} {{ s.count('an') }} {{ s.capitalize() }} {{ '-'.join(['a', 'b']) }}",
     {"s": "bAnana"}),
    ("{{ '{} and {}'.format('x', 1) }} {{ '%s=%d' % ('a', 3) }}", {}),
    # ---- filters
    ("{{ s|trim }}|{{ s|length }} {{ l|length }} {{ d|length }} {{ u|length }}",
     {"s": "  héllo  ", "l": [1, 2], "d": {"a": 1}}),
    ("{{ l|first }} {{ l|last }} {{ l|join(', ') }} {{ l|reverse|list }} {{ 'abc'|reverse }}",
     {"l": ["x", "y", "z"]}),
    ("{{ u|default('dflt') }} {{ ''|default('e', true) }} {{ none|default('n') }} {{ u|d('D') }}", {}),
    ("{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %} {% for k, v in d.items() %}{{ k }}{% endfor %}",
     {"d": {"b": 1, "a": [2]}}),
    ("{{ d|tojson }}\n{{ d|tojson(indent=2) }}\n{{ s|tojson }} {{ 1.0|tojson }} {{ none|tojson }}",
     {"d": {"z": "é\"\n\t\u0001", "a": [1, 2.5, True, None], "e": {}, "l": []}, "s": "x"}),
    ("{{ t|tojson }}", {"t": TOOLS}),
    ("{{ t|string }} {{ 1|string }} {{ none|string }}", {"t": TOOLS}),
    ("{{ l|selectattr('role', 'equalto', 'user')|map(attribute='content')|join('|') }}",
     {"l": MSGS}),
    ("{{ l|rejectattr('role', 'eq', 'user')|list|length }} {{ l|selectattr('x')|list }}",
     {"l": MSGS}),
    ("{{ n|select('odd')|list }} {{ n|reject('even')|list }} {{ n|map('string')|join }}",
     {"n": [1, 2, 3, 4]}),
    ("{{ n|sort }} {{ n|sort(reverse=true) }} {{ w|sort }} {{ n|unique|list }} {{ n|min }} {{ n|max }} {{ n|sum }}",
     {"n": [3, 1, 2, 3], "w": ["b", "A", "c"]}),
    ("{{ 'Hello World'|upper }} {{ 'ABC'|lower }} {{ 'hello world'|capitalize }} {{ 'hello-world foo'|title }}", {}),
    ("{{ 'a b a'|replace('a', 'x') }} {{ '3'|int + 1 }} {{ 'x'|int }} {{ '2.5'|float }} {{ 2.567|round(2) }} {{ 2.5|round }}", {}),
    ("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}", {}),
    ("{{ '<a&b>'|e }} {{ '%s-%s'|format('a', 1) }} {% for k, v in d|dictsort %}{{ k }}{{ v }}{% endfor %} {{ d|attr('k') }}", {"d": {"k": 2, "a": 1}}),
    ("{{ d|list }} {{ 'ab'|list }} {{ range(2, 8, 3)|list }} {{ dict(a=1)|tojson }}",
     {"d": {"x": 1, "y": 2}}),
    # ---- tests
    ("{{ x is string }} {{ x is mapping }} {{ x is iterable }} {{ x is sequence }} {{ x is number }}",
     {"x": "s"}),
    ("{{ d is mapping }} {{ d is iterable }} {{ l is iterable }} {{ l is mapping }} {{ n is none }}",
     {"d": {}, "l": [], "n": None}),
    ("{{ b is boolean }} {{ b is true }} {{ b is false }} {{ 1 is integer }} {{ 1.0 is float }} {{ b is number }}",
     {"b": False}),
    ("{{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 2 is in [1, 2] }} {{ x is sameas none }}",
     {"x": None}),
    ("{{ 'a' is eq 'a' }} {{ 3 is gt 2 }} {{ 3 is lt 2 }} {{ 'ab' is lower }} {{ u is undefined }} {{ u is not defined }}", {}),
    # ---- statements
    ("{% for m in msgs %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}"
     "{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %} {% endfor %}", {"msgs": MSGS}),
    ("{% for m in msgs[::-1] %}{{ loop.index0 }}{{ loop.revindex }}{{ m.role[0] }}{% endfor %}",
     {"msgs": MSGS}),
    ("{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("{% for x in l if x > 1 %}{{ loop.index }}{{ x }}{% endfor %}", {"l": [1, 2, 3]}),
    ("{% for x in l %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
     {"l": [1, 2, 3, 4, 5]}),
    ("{% for x in l %}{{ loop.previtem }}-{{ loop.nextitem }}{{ loop.cycle('a', 'b') }} {% endfor %}",
     {"l": [1, 2, 3]}),
    ("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %} {% for c in 'ab' %}{{ c }}{% endfor %}", {}),
    ("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}|{{ x }}", {}),
    ("{% set ns = namespace(total=0, found=false) %}{% for i in [1, 2, 3] %}"
     "{% set ns.total = ns.total + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}"
     "{{ ns.total }} {{ ns.found }}", {}),
    ("{% if x %}{% set y = 'in if' %}{% endif %}{{ y }}", {"x": True}),
    ("{% if a %}A{% elif b %}B{% elif c %}C{% else %}D{% endif %}", {"a": 0, "b": "", "c": 1}),
    ("{% set a, b = [1, 2] %}{{ b }}{{ a }} {% set block %}in {{ 'block' }}{% endset %}{{ block|upper }}", {}),
    ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
     "{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(punct='.', name='Cy') }}", {}),
    ("{% macro outer(x) %}[{{ inner(x) }}]{% endmacro %}{% macro inner(y) %}{{ y * 2 }}{% endmacro %}{{ outer(3) }}", {}),
    ("{% filter upper %}shout {{ 'this' }}{% endfilter %}", {}),
    ("{{ strftime_now('%d %B %Y') }}", {}),
    ("{% if messages[0]['role'] != 'system' %}{{ raise_exception('System message required') }}{% endif %}",
     {"messages": [{"role": "user", "content": "x"}]}),
    ("{{ x + 1 }}", {}),
    ("{{ x.y.z }}", {"x": {}}),
    # ---- more whitespace control
    ("a\n\t{% if true %}x{% endif %}\n\tb", {}),
    ("{% if true %}  \nx{% endif %}", {}),
    ("a {# c #}\nb\n  {#- c2 #}\nc", {}),
    ("{{ 'x' }}  {%- if true %}y{% endif %}", {}),
    ("{% for a in [1, 2] %}{% for b in [1, 2, 3] %}{{ loop.index }}{% endfor %}:{{ loop.index }} {% endfor %}", {}),
    ("{% set x = 1 %}{% macro f() %}{{ x }}{{ bos }}{% endmacro %}{{ f() }}", {"bos": "<s>"}),
    ("{% for k in d %}{{ k }}{% endfor %} {{ d|tojson(indent=4) }}", {"d": {"b": [1], "a": {}}}),
    # ---- constructs of other families' templates
    ("{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
     "{% endif %}{{ message['role'][0] }}{% endfor %}", {"messages": MSGS[1:]}),
    ("{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('Conversation roles must alternate') }}{% endif %}{% endfor %}", {"messages": MSGS}),
    ("{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
     "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
     "[{{ system_message }}]{% for m in loop_messages %}{{ m.content }};{% endfor %}", {"messages": MSGS}),
    ("{{ builtin_tools | reject('equalto', 'code_interpreter') | join(', ') }}",
     {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}),
    ("{%- for tool_call in calls %}<function={{ tool_call.name }}>\n"
     "{%- for args_name, args_value in tool_call.arguments|items %}"
     "<parameter={{ args_name }}>\n"
     "{%- set args_value = args_value | tojson | safe if args_value is mapping or "
     "(args_value is sequence and args_value is not string) else args_value | string %}"
     "{{ args_value }}\n</parameter>\n{% endfor %}</function>{% endfor %}",
     {"calls": [{"name": "f", "arguments": {"city": "Paris", "days": 3, "opts": {"u": "C"},
                                            "tags": ["a", "b"], "flag": True, "none": None}}]}),
    ("{% if x is not none and x|length > 0 %}{{ x|length }}{% endif %}{{ y is none }}", {"x": "abc"}),
    ("{% set content = message.content if message.content is string else '' %}[{{ content }}]",
     {"message": {"content": [{"type": "text", "text": "t"}]}}),
    ("{{ content is iterable and content is not mapping }} {{ d is iterable and d is not mapping }}",
     {"content": [], "d": {}}),
    ("{% set reasoning = m.reasoning_content|default('')|trim %}[{{ reasoning }}]", {"m": {}}),
    ("{{ 'é'|upper }}{{ 'x\u00e9y'|length }}{{ '日本'[1] }}", {}),
    ("{% if true %}{% set ns = namespace() %}{% set ns.a = 1 %}{{ ns.a }}{% endif %}", {}),
    ("{{ ''.join(['a', 'b']) }}{{ ' '.join(l) }}", {"l": ["x", "y"]}),
    ("{{ messages | selectattr('role', 'in', ['user', 'system']) | list | length }}", {"messages": MSGS}),
    # ---- whole templates
    (VL_TEMPLATE, {"messages": VL_MSGS, "add_generation_prompt": True}),
]


def main():
    env = make_env()
    with open(os.path.join(HERE, "qwen3.tokenizer_config.json")) as f:
        qwen3 = json.load(f)["chat_template"]
    with open(os.path.join(HERE, "smollm3-3b.chat_template.jinja")) as f:
        smol = f.read()
    # SmolLM3's {% generation %} tag belongs to transformers; for Jinja2 here
    # it is dropped (it only marks a span and renders its body).
    smol_plain = smol.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    cases = list(CASES)
    for msgs in (MSGS, TOOL_MSGS, REASONING_MSGS):
        for extra in ({"add_generation_prompt": True}, {"add_generation_prompt": False},
                      {"add_generation_prompt": True, "enable_thinking": False}):
            cases.append((qwen3, dict(messages=msgs, tools=None, **extra)))
    cases.append((qwen3, dict(messages=TOOL_MSGS, tools=TOOLS, add_generation_prompt=True)))
    cases.append((qwen3, dict(messages=MSGS, tools=TOOLS, add_generation_prompt=True)))
    for msgs in (MSGS, MSGS[1:], [{"role": "system", "content": "Short. /no_think"}] + MSGS[1:]):
        for extra in ({"add_generation_prompt": True}, {"enable_thinking": False}):
            cases.append((smol_plain, dict(messages=msgs, tools=None, **extra)))
    cases.append((smol_plain, dict(messages=MSGS, tools=TOOLS, add_generation_prompt=True)))
    cases.append((smol_plain, dict(messages=MSGS, xml_tools=TOOLS, python_tools=TOOLS,
                                   add_generation_prompt=True)))

    out = []
    for template, context in cases:
        # Whole model templates are named by their file, not repeated.
        if template is smol_plain:
            case = {"template_file": "smollm3-3b.chat_template.jinja", "context": context}
        elif template is qwen3:
            case = {"template_file": "qwen3.tokenizer_config.json", "context": context}
        else:
            case = {"template": template, "context": context}
        try:
            case["rendered"] = env.from_string(template).render(**context)
        except Exception as e:  # noqa: BLE001 - the expectation is that it fails
            case["error"] = True
            case["message"] = str(e)
        out.append(case)
    with open(os.path.join(HERE, "jinja_cases.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False)
    print(f"{len(out)} cases")


if __name__ == "__main__":
    main()
