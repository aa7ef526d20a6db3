#!/usr/bin/env python3
"""Golden ids for the pre-tokenizers that have no released full tokenizer in
tests/data: the full Qwen3 vocabulary with the Qwen3.5 pattern, the full Llama 3
vocabulary with SmolLM's (Digits + GPT-2) and GPT-2's pre-tokenizers, and the
tiny fixture tokenizers. Needs the `tokenizers` package.

Usage: gen_variant_goldens.py tests/data/tokenizers > variants.tokenize.json
The variants are built exactly as variant_json() in tests/tokenizer does.
"""
import gzip
import json
import sys

from tokenizers import Tokenizer

data = sys.argv[1]
QWEN35 = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}|"
          " ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
SMOLLM = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
GPT2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
EXTRA = [
    "cafe\u0301 e\u0301te\u0301 x\u0300\u0301y \u0301abc",
    "\u0e01\u0e48\u0e2d\u0e19 \u0e44\u0e1b",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e 123",
    "'S 'LL 'Ve \u017f '\u017f 'x it's",
    "a  1  b\n\n 2\r\n\r\n  \t x",
    "12345 \u0663\u0664\u0665 \u00bd\u2167 x\u00b2",
    "  \n  end  ",
    "!!  ??\n\n(a)[b]{c}",
]

def load(name):
    with gzip.open(f"{data}/{name}.tokenizer.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)

def variants():
    q = load("qwen3")
    q["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN35
    yield "qwen35_full", q
    for name, pre in (("smollm_full", SMOLLM), ("gpt2_full", GPT2)):
        l = load("llama3")
        l["pre_tokenizer"] = pre
        l["model"]["ignore_merges"] = False
        yield name, l

corpus = [c["text"] for c in json.load(open(f"{data}/qwen3.tokenize.json"))] + EXTRA
out = {"strings": corpus, "ids": {}}
for name, tj in variants():
    tok = Tokenizer.from_str(json.dumps(tj))
    out["ids"][name] = [tok.encode(s, add_special_tokens=False).ids for s in corpus]
for name, path in (("qwen35_tiny", f"{data}/../hf/qwen3_5_text/tokenizer.json"),
                   ("smollm_tiny", f"{data}/smollm.tiny.tokenizer.json"),
                   ("gpt2_tiny", f"{data}/gpt2.tiny.tokenizer.json")):
    tok = Tokenizer.from_file(path)
    out["ids"][name] = [tok.encode(s, add_special_tokens=False).ids for s in corpus]
json.dump(out, sys.stdout, ensure_ascii=False)
