"""When llama.cpp's chat parser refuses a tool turn, the turn is generated again as plain text from the same chat
template (rendered by transformers' jinja renderer) and parsed by zhrag; the stand-in runtime records the requests."""

from __future__ import annotations

from typing import Any

from zhrag.models.llamacpp import LlamaCppLLM

# A ChatML template with Hermes tool calls, shaped like Qwen2.5's.
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{{ messages[0]['content'] }}\n<tools>\n"
    "{%- for tool in tools %}{{ tool | tojson }}{%- endfor %}\n</tools><|im_end|>\n{%- endif %}"
    "{%- for message in messages[1:] %}<|im_start|>{{ 'user' if message['role'] == 'tool' else message['role'] }}\n"
    "{%- if message['role'] == 'tool' %}<tool_response>\n{{ message['content'] }}\n</tool_response>"
    "{%- else %}{{ message['content'] }}{%- endif %}"
    "{%- for call in message.get('tool_calls', []) %}<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}\n</tool_call>'
    "{%- endfor %}{%- if not (loop.last and message['role'] == 'assistant') %}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "qdrant-find", "parameters": {}}}]


class RefusingRuntime:
    """llama.cpp whose chat endpoint refuses the output; its completion endpoint returns ``text``."""

    is_chat = True
    chat_template = TEMPLATE

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[dict[str, Any]] = []

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(body)
        if "messages" in body:
            raise RuntimeError("The model produced output that does not match the expected peg-native format")
        return {"text": self.text}


def llm(runtime: RefusingRuntime) -> LlamaCppLLM:
    model = LlamaCppLLM.__new__(LlamaCppLLM)  # no model file: the runtime stands in for llama.cpp
    model.runtime, model.is_chat, model.load_info = runtime, True, {"model": "stand-in"}
    return model


def test_a_refused_auto_turn_is_generated_again_as_text_from_the_template() -> None:
    runtime = RefusingRuntime('\n{"name": "qdrant-find", "arguments": {"query": "九命奇冤"}}')
    history = [
        {"role": "system", "content": "S"}, {"role": "user", "content": "问题？"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "qdrant-find", "arguments": '{"query": "甲"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "[1] 甲城"},
    ]
    reply = llm(runtime).call_tools(history, TOOLS, max_new_tokens=16)
    [call] = reply.calls
    assert (call.name, call.arguments, call.well_formed) == ("qdrant-find", {"query": "九命奇冤"}, False)
    chat, completion = runtime.requests
    assert "messages" in chat and completion["max_tokens"] == 16
    prompt = completion["prompt"]
    assert prompt.startswith("<|im_start|>system\nS\n<tools>") and prompt.endswith("<|im_start|>assistant")
    # the earlier call's arguments are rendered as an object (OpenAI messages hold a JSON string)
    assert '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "甲"}}\n</tool_call>' in prompt


def test_a_refused_prefilled_turn_continues_the_prefilled_call() -> None:
    runtime = RefusingRuntime('query": "九命奇冤"}}\n</tool_call>')
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "问题？"}]
    reply = llm(runtime).call_tools(messages, TOOLS, tool_choice="required")
    [call] = reply.calls
    assert (call.arguments, call.well_formed) == ({"query": "九命奇冤"}, True)
    prompt = runtime.requests[1]["prompt"]
    assert prompt.endswith('<|im_start|>assistant<tool_call>\n{"name": "qdrant-find", "arguments": {"')


def test_a_base_model_asks_the_completion_endpoint_for_its_alternatives_as_logprobs() -> None:
    runtime = RefusingRuntime("")
    model = llm(runtime)
    model.is_chat = False
    body = model._body("问题：", 1, (), logprobs=True, top_logprobs=20)
    assert body["prompt"] == "问题：" and body["logprobs"] == 20 and "top_logprobs" not in body
    model.is_chat = True
    body = model._body("问题", 1, (), logprobs=True, top_logprobs=20)
    assert body["logprobs"] is True and body["top_logprobs"] == 20
