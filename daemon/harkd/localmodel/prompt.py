"""Chat messages rendered as a few-shot transcript for a base (not instruction-tuned) model.

gemma-3-270m babbles through a chat template, but continues a transcript of short
"User: ... / Assistant: ..." exchanges well: the system text, a few fixed example
exchanges, the conversation, then an open "Assistant:" turn. Generation stops at the next
turn marker or blank line, which ends the model's answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_SYSTEM = "You are a helpful assistant. Answer in one short sentence."

#: Example exchanges after the system text; they set the length and tone of answers.
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is 2 + 2?", "4."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many days are in a week?", "There are seven days in a week."),
)

#: Where the model's answer ends: the next turn, or the blank line between exchanges.
STOP: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\n\n")

_ROLES = {"user": "User", "assistant": "Assistant", "tool": "Tool", "function": "Tool"}


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string or a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, Mapping) and part.get("type") == "text")
    return str(content)


def split_system(messages: Sequence[Mapping[str, Any]]
                 ) -> tuple[str, list[tuple[str, str]]]:
    """The joined system text and the other turns as ``(speaker, text)`` pairs."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in messages:
        role = str(message.get("role", "user"))
        text = content_text(message.get("content")).strip()
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append((_ROLES.get(role, "User"), text))
    return "\n".join(s for s in system if s) or DEFAULT_SYSTEM, turns


def render(system: str, turns: Sequence[tuple[str, str]]) -> str:
    """The transcript: system text, the examples, the turns and an open assistant turn."""
    parts = [system.strip(), ""]
    for question, answer in EXAMPLES:
        parts += [f"User: {question}", f"Assistant: {answer}", ""]
    for speaker, text in turns:
        parts.append(f"{speaker}: {text}")
        if speaker == "Assistant":
            parts.append("")
    parts.append("Assistant:")
    return "\n".join(parts)


def render_chat(messages: Sequence[Mapping[str, Any]], keep_last: int | None = None) -> str:
    """Render OpenAI chat ``messages``; ``keep_last`` drops all but the newest turns."""
    system, turns = split_system(messages)
    if keep_last is not None:
        turns = turns[-keep_last:] if keep_last > 0 else []
    return render(system, turns)
