"""Loop detection within one run: the same tool called with the same arguments, or the same LLM
input sent again, `threshold` times. Pure; `runs.py` calls it with the calls it assigned to a run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable


def canonical_args(args: str | None) -> str | None:
    """Tool arguments in one spelling: JSON objects with sorted keys, other text as it is."""
    if args is None or args == "":
        return None
    try:
        return json.dumps(json.loads(args), sort_keys=True, separators=(",", ":"), default=str)
    except ValueError:
        return args  # not JSON (or cut at the excerpt limit): compare the text itself


def detect_loop(
    tool_calls: Iterable[tuple[str | None, str | None]],
    llm_inputs: Iterable[str | None],
    *,
    threshold: int,
    excerpt_chars: int,
) -> str | None:
    """What repeated `threshold` or more times in a run, or None.

    `tool_calls` are (tool name, arguments); a call without recorded arguments is not compared,
    since "no arguments known" is not evidence of equal arguments. An LLM input counts only when
    shorter than `excerpt_chars`: agents resend a long shared prefix (system prompt, history) on
    every turn, so two excerpts cut at the limit say nothing about the whole inputs being equal.
    """
    tool_calls, llm_inputs = list(tool_calls), list(llm_inputs)
    if len(tool_calls) < threshold and len(llm_inputs) < threshold:
        return None  # nothing can repeat often enough
    tools: Counter[tuple[str, str]] = Counter()
    for name, args in tool_calls:
        canonical = canonical_args(args)
        if name and canonical is not None:
            tools[(name, canonical)] += 1
    prompts: Counter[str] = Counter(
        text for text in llm_inputs if text and len(text) < excerpt_chars
    )
    # The most repeated key wins; ties break on the key text so the answer ignores span order.
    best_tool = min(tools.items(), key=lambda kv: (-kv[1], kv[0]), default=None)
    best_prompt = min(prompts.items(), key=lambda kv: (-kv[1], kv[0]), default=None)
    tool_n = best_tool[1] if best_tool else 0
    prompt_n = best_prompt[1] if best_prompt else 0
    if best_tool and tool_n >= threshold and tool_n >= prompt_n:
        return f"tool {best_tool[0][0]} called {tool_n} times with the same arguments"
    if best_prompt and prompt_n >= threshold:
        return f"the same LLM input sent {prompt_n} times"
    return None
