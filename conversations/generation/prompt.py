"""What a request asks: the provider and model, and the prompt (the branch trimmed to the context window).

`build_prompt()` takes the branch up to a reply, in the API's format (an assistant message with its
`tool_calls`, a `tool` message with its `tool_call_id`; reasoning is never sent back), and drops
the oldest turns that do not fit. `continuation_prompt()` asks the model to go on with a reply
cut off by max_tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.utils.translation import gettext as _

from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm

# Tokens a chat template adds around each message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 6

# Sent (to the model, not shown) when the user asks to continue a reply cut off by max_tokens.
CONTINUE_INSTRUCTION = (
    "Your previous message was cut off. Continue it exactly where it stopped, without repeating "
    "anything and without any preamble."
)


@dataclasses.dataclass
class Prompt:
    messages: list[dict[str, Any]]
    context_start_id: int | None  # the oldest message kept, when older ones were left out
    text: str  # all of it as text, for counting its tokens


def usable_provider(conversation: Conversation) -> Provider:
    """The conversation's provider, or a ProviderError the user can act on."""
    provider = conversation.provider
    if provider is None or not provider.enabled:
        raise llm.ProviderError(_("This conversation's provider is gone or disabled; pick another model."))
    return provider


async def model_to_ask(conversation: Conversation, provider: Provider, model: str) -> str:
    """`model` if set, else the conversation's, the provider's default, or the first it lists."""
    if model:
        return model
    if conversation.model or provider.default_model:
        return conversation.model or provider.default_model
    models = await llm.list_models(provider)
    if not models:
        raise llm.ProviderError(_("The provider lists no models."))
    return models[0]


async def tokens_in(provider: Provider, text: str) -> int:
    """Tokens in `text`: counted by the provider when it can (the bundled llama.cpp server), else estimated."""
    counted = await llm.count_tokens(provider, text)
    return counted if counted is not None else llm.estimate_tokens(text)


async def build_prompt(
    conversation: Conversation, provider: Provider, branch: list[Message], context_length: int
) -> Prompt:
    """The branch up to a reply (`Conversation.branch_to(reply.parent_id)`), trimmed oldest-first to
    fit the model's context window of `context_length` tokens (`Provider.context_length_for()`).

    The system prompt and the newest message are always kept. Token counts come from the
    model's own tokenizer when the provider can count (the bundled llama.cpp server), else
    from a cautious estimate with a safety margin.
    """
    history = [
        m
        for m in branch
        if m.role in (Message.Role.USER, Message.Role.ASSISTANT, Message.Role.TOOL)
        and (m.content or m.tool_calls or m.role != Message.Role.ASSISTANT)
    ]
    system = [{"role": "system", "content": conversation.system_prompt}] if conversation.system_prompt else []

    async def cost(text: str) -> int:
        return await tokens_in(provider, text) + MESSAGE_OVERHEAD_TOKENS

    max_tokens = conversation.params.get("max_tokens")
    reserve = int(max_tokens) if max_tokens else min(512, context_length // 4)
    budget = int(context_length * 0.95) - reserve - sum([await cost(m["content"]) for m in system])
    kept: list[Message] = []
    for message in reversed(history):
        needed = await cost(prompt_text(message))
        if not kept and needed > budget:
            raise llm.ProviderError(
                _(
                    "This message is about %(needed)s tokens, more than fits in the model's context window "
                    "(%(context)s tokens, with %(reserve)s kept for the reply). Shorten it, lower "
                    "max_tokens, or pick a model with a larger context."
                )
                % {"needed": f"{needed:,}", "context": f"{context_length:,}", "reserve": f"{reserve:,}"}
            )
        if kept and needed > budget:
            break
        budget -= needed
        kept.append(message)
    kept.reverse()
    trimmed = len(kept) < len(history)
    # In the API's format: tool calls and tool results included, reasoning never sent back.
    messages = system + [api_message(m) for m in kept]
    return Prompt(
        messages=messages,
        context_start_id=kept[0].pk if trimmed and kept else None,
        text="\n".join(api_text(m) for m in messages),
    )


def continuation_prompt(prompt: Prompt, reply: Message) -> Prompt:
    """The prompt of a reply cut off by max_tokens, then the reply so far and a request to go on."""
    extra = [
        {"role": "assistant", "content": reply.content},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    return dataclasses.replace(
        prompt,
        messages=prompt.messages + extra,
        text=prompt.text + "\n" + "\n".join(m["content"] for m in extra),
    )


def asks_for_json(params: dict[str, Any]) -> bool:
    """The settings ask for a JSON answer (the reply is shown as JSON)."""
    response_format = params.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def api_message(message: Message) -> dict[str, Any]:
    """A saved message as the chat API wants it (never with its reasoning)."""
    if message.role == Message.Role.TOOL:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == Message.Role.ASSISTANT and message.tool_calls:
        calls = [
            {
                "id": call.get("id") or "",
                "type": call.get("type") or "function",
                "function": {
                    "name": (call.get("function") or {}).get("name") or "",
                    "arguments": (call.get("function") or {}).get("arguments") or "",
                },
            }
            for call in message.tool_calls
            if isinstance(call, dict)
        ]
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    return {"role": message.role, "content": message.content}


def api_text(message: dict[str, Any]) -> str:
    """The text of an API message, for counting its tokens."""
    calls = "".join(c["function"]["name"] + c["function"]["arguments"] for c in message.get("tool_calls") or [])
    return (message.get("content") or "") + calls


def prompt_text(message: Message) -> str:
    return api_text(api_message(message))
