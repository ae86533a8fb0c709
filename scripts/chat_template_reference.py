#!/usr/bin/env python3
"""Renders runtime/tests/chat_templates/*.jinja over fixed conversations with Python's jinja2,
set up the way Hugging Face `transformers` sets it up for `apply_chat_template`
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, raise_exception,
strftime_now, json.dumps-style tojson), and writes runtime/tests/chat_templates/reference.json.
`runtime/tests/chat_templates.rs` renders the same cases with engram's minijinja set-up and
compares. Needs only jinja2 (any venv with it, e.g. the llama.cpp one):

    /work/venv-llamacpp/bin/python scripts/chat_template_reference.py
"""
import datetime
import json
import pathlib

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = pathlib.Path(__file__).resolve().parent.parent / "runtime" / "tests" / "chat_templates"
# A fixed "now" for strftime_now, so the reference is reproducible: 2026-12-06 13:35:56 UTC.
NOW = 1_796_564_156
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}

CONVERSATIONS = {
    "one_user": [{"role": "user", "content": "What is the capital of France?"}],
    "system_and_turns": [
        {"role": "system", "content": "  You are terse.  "},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "  Hello!  "},
        {"role": "user", "content": "Name a colour?"},
    ],
    "no_system_turns": [
        {"role": "user", "content": "Hi, what's new?"},
        {"role": "assistant", "content": "<think>the user greets</think> Not much. And you?"},
        {"role": "user", "content": "Ünïcode ‘quotes’ & <tags> \"dq\" \\ back\tslash"},
    ],
    "bad_alternation": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ],
}


class TemplateError(Exception):
    pass


def environment():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    env = environment()
    cases = []
    for path in sorted(HERE.glob("*.jinja")):
        template = env.from_string(path.read_text())
        for name, messages in CONVERSATIONS.items():
            for gen in (True, False):
                case = {"template": path.name, "conversation": name, "add_generation_prompt": gen}
                try:
                    case["output"] = template.render(messages=messages, add_generation_prompt=gen,
                                                     **SPECIALS)
                except TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    out = {
        "generator": "scripts/chat_template_reference.py",
        "jinja2": jinja2.__version__,
        "now": NOW,
        "specials": SPECIALS,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    (HERE / "reference.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    errors = sum("error" in c for c in cases)
    print(f"{len(cases)} cases ({errors} raise_exception) -> {HERE / 'reference.json'}")


if __name__ == "__main__":
    main()
