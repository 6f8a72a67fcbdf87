"""Chat messages rendered as a few-shot transcript for the base model."""

from __future__ import annotations

from harkd.localmodel import prompt


def test_transcript_has_system_examples_and_an_open_assistant_turn() -> None:
    text = prompt.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    assert text.startswith(prompt.DEFAULT_SYSTEM + "\n\n")
    for question, answer in prompt.EXAMPLES:
        assert f"User: {question}\nAssistant: {answer}\n\n" in text
    assert text.endswith("\n\nUser: What is the capital of France?\nAssistant:")


def test_system_messages_replace_the_default_system_text() -> None:
    text = prompt.render_chat([{"role": "system", "content": "Be terse."},
                               {"role": "user", "content": "Hi"}])
    assert text.startswith("Be terse.\n\n")
    assert prompt.DEFAULT_SYSTEM not in text


def test_conversation_turns_keep_their_order_and_content_parts_join() -> None:
    text = prompt.render_chat([
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": [{"type": "text", "text": "What is "},
                                     {"type": "image_url", "image_url": {"url": "x"}},
                                     {"type": "text", "text": "my name?"}]},
    ])
    assert text.endswith("User: My name is Ada.\nAssistant: Hello Ada.\n\n"
                         "User: What is my name?\nAssistant:")


def test_keep_last_drops_the_oldest_turns() -> None:
    messages = [{"role": "system", "content": "S"},
                {"role": "user", "content": "old"},
                {"role": "assistant", "content": "older answer"},
                {"role": "user", "content": "new"}]
    text = prompt.render_chat(messages, keep_last=1)
    assert "old" not in text.replace("new", "")
    assert text.startswith("S\n\n") and text.endswith("User: new\nAssistant:")


def test_stop_ends_the_answer_at_the_next_turn() -> None:
    assert "\nUser:" in prompt.STOP
