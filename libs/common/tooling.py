"""Tools and structured output in a request: what the model may call and how it must answer.

The shapes are OpenAI's, validated and bounded here, and handed to an upstream model
as they are (:class:`ToolParams`); the simulated model answers ``tools`` with a call
of its own. Messages carry earlier calls (``tool_calls``) and their results
(``tool_call_id``) in :class:`~libs.common.api.Message`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

FunctionName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
CallId = Annotated[str, Meta(min_length=1, max_length=256)]
Description = Annotated[str, Meta(max_length=4096)]
MAX_TOOLS = 128


class FunctionDef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: FunctionName
    description: Description | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    function: FunctionDef
    type: Literal["function"] = "function"


class FunctionRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: FunctionName


class NamedToolChoice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    function: FunctionRef
    type: Literal["function"] = "function"


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchema(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: FunctionName
    description: Description | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    pass


class JsonObjectFormat(msgspec.Struct, frozen=True, tag_field="type", tag="json_object"):
    pass


class JsonSchemaFormat(
    msgspec.Struct, frozen=True, tag_field="type", tag="json_schema", forbid_unknown_fields=True
):
    json_schema: JsonSchema


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat


class FunctionCall(msgspec.Struct, frozen=True):
    name: FunctionName
    arguments: Annotated[str, Meta(max_length=1_000_000)]


class MessageToolCall(msgspec.Struct, frozen=True):
    """A call the assistant made earlier in the conversation.

    Extra fields are ignored, as on a message: agents send back the answer's message as
    their SDK dumped it (with a streamed call's ``index``, say).
    """

    id: CallId
    function: FunctionCall
    type: Literal["function"] = "function"


class ToolParams(msgspec.Struct, frozen=True, omit_defaults=True):
    """The request's tool and output fields, handed to an upstream model as they are."""

    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def calls_tool(self) -> FunctionDef | None:
        """The function the model should call, if it should call one: the named, else the first."""
        if not self.tools or self.tool_choice == "none":
            return None
        if isinstance(self.tool_choice, NamedToolChoice):
            wanted = self.tool_choice.function.name
            return next(tool.function for tool in self.tools if tool.function.name == wanted)
        return self.tools[0].function


Tools = Annotated[list[Tool], Meta(max_length=MAX_TOOLS)]


def check_tools(tools: list[Tool] | None, tool_choice: ToolChoice | None) -> None:
    """Refuse a ``tool_choice`` the ``tools`` cannot meet (a ValueError, so decoding fails)."""
    names = [tool.function.name for tool in tools or ()]
    if len(set(names)) != len(names):
        raise ValueError("`tools` names a function twice")
    if isinstance(tool_choice, NamedToolChoice) and tool_choice.function.name not in names:
        raise ValueError(f"`tool_choice` names {tool_choice.function.name!r}, not in `tools`")
    if tool_choice == "required" and not names:
        raise ValueError("`tool_choice` is 'required' but there are no `tools`")


def tool_params(
    tools: list[Tool] | None,
    tool_choice: ToolChoice | None,
    parallel_tool_calls: bool | None,
    response_format: ResponseFormat | None,
) -> ToolParams | None:
    """The fields as one :class:`ToolParams`, or None when the request sets none of them."""
    if (tools, tool_choice, parallel_tool_calls, response_format) == (None, None, None, None):
        return None
    return ToolParams(tools, tool_choice, parallel_tool_calls, response_format)
