"""The saved chat templates, rendered in jinja2's sandbox on a small synthetic conversation.

A chat template is untrusted code from the folder. It is rendered the way transformers'
``apply_chat_template`` renders it (an ``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and
``lstrip_blocks``, the ``raise_exception`` / ``strftime_now`` helpers, the ``tojson`` filter, the
``{% generation %}`` tag, loop controls and the special tokens as variables), with bounds of its
own on top of the sandbox: ``*`` and ``**`` that would build a value over the output cap are
refused, the output stops at ``max_chars``, and on the main thread of a POSIX process a timer
stops a render that runs past ``max_seconds`` (a loop that writes nothing).

Each template is rendered three ways: the whole conversation (system, user, assistant, user,
assistant); the same without the system turn when the first raises (Gemma's and Mistral's
templates refuse a system role); and up to the last user turn with ``add_generation_prompt``.
"""

import contextlib
import json
import os
import signal
import threading

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
]
FIRST_ANSWER = CONVERSATION[1]["content"]
_DATE = "26 Jul 2024"   # strftime_now: a fixed date keeps renders reproducible


class RenderError(Exception):
    """The template could not be rendered; the message says why in one line."""


def compile_template(template: str, max_chars: int):
    """The template compiled in the bounded sandbox (no template code runs while compiling).

    Raises:
        RenderError: jinja2 missing or older than 3.1.6, a template over ``max_chars``, a syntax error.
    """
    try:
        import jinja2
    except ImportError:
        raise RenderError("jinja2 is not installed") from None
    if tuple(int(p) for p in jinja2.__version__.split(".")[:3] if p.isdigit()) < (3, 1, 6):
        raise RenderError(f"jinja2 {jinja2.__version__} has known sandbox escapes; 3.1.6 or later renders templates")
    if len(template) > max_chars:
        raise RenderError(f"the template is over the {max_chars} character cap")
    try:
        return _environment(max_chars).from_string(template)
    except Exception as e:  # noqa: BLE001 - any template error is a reason, never a crash
        raise RenderError(_why(e)) from None


def render(compiled, specials: dict, max_chars: int, max_seconds: float) -> list:
    """The renders of one compiled template: ``[{"variant", "text"}]``, at least one.

    Args:
        compiled: from ``compile_template``.
        specials: role -> token string (``bos_token`` etc. are passed as variables).
        max_chars: the longest output accepted.
        max_seconds: wall-clock bound of one render (main thread, POSIX only).

    Raises:
        RenderError: no variant rendered (the first variant's reason).
    """
    variables = {f"{role}_token": t for role, t in specials.items() if isinstance(t, str)}
    variables["additional_special_tokens"] = list(specials.get("additional") or ())
    attempts = [("conversation", [SYSTEM, *CONVERSATION], False),
                ("conversation without system", CONVERSATION, False),
                ("generation prompt", [SYSTEM, *CONVERSATION[:3]], True),
                ("generation prompt without system", CONVERSATION[:3], True)]
    out, first_error = [], None
    for variant, messages, prompt in attempts:
        if variant.endswith("without system") and out and out[-1]["variant"] == variant.replace(" without system", ""):
            continue   # the system turn was accepted: no need for the variant without it
        try:
            text = _render_one(compiled, messages, prompt, variables, max_chars, max_seconds)
        except Exception as e:  # noqa: BLE001
            first_error = first_error or _why(e)
            continue
        out.append({"variant": variant, "text": text})
    if not out:
        raise RenderError(first_error)
    return out


def turn_end(texts: list) -> str | None:
    """What the template writes right after the assistant's first answer (up to 40 characters)."""
    for text in texts:
        at = text.find(FIRST_ANSWER)
        if at >= 0:
            return text[at + len(FIRST_ANSWER):][:40]
    return None


def _environment(max_chars: int):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` (transformers' assistant mask): the body as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(("*", "**"))

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise RenderError("exponent over 64")
            if operator == "*" and isinstance(left, (str, list, tuple)) and isinstance(right, int) and len(left) * right > max_chars:
                raise RenderError(f"a repeated value over the {max_chars} character cap")
            if operator == "*" and isinstance(right, (str, list, tuple)) and isinstance(left, int) and len(right) * left > max_chars:
                raise RenderError(f"a repeated value over the {max_chars} character cap")
            return super().call_binop(context, operator, left, right)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = Bounded(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: _DATE)
    return env


def _render_one(compiled, messages, prompt, variables, max_chars, max_seconds) -> str:
    parts, size = [], 0
    with _deadline(max_seconds):
        for chunk in compiled.generate(messages=messages, add_generation_prompt=prompt, tools=None, documents=None,
                                       **variables):
            size += len(chunk)
            if size > max_chars:
                raise RenderError(f"output over the {max_chars} character cap")
            parts.append(chunk)
    return "".join(parts)


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise ``RenderError`` in the rendering code after ``seconds`` (main thread on POSIX; else no timer)."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise RenderError(f"rendering took over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _why(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return msg if isinstance(e, RenderError) else f"{type(e).__name__}: {msg}"
