"""Typed tools: one Python function per tool, validated calls and OpenAI schemas from the signature.

A tool is a function whose first parameter is the :class:`~apigen_envs.db.DBView` (left out of the
schema) and whose other parameters are typed and described in a Google-style ``Args:`` section. The
docstring's text before ``Args:`` is the tool description the model sees; ``Literal[...]`` becomes an
enum. One pydantic model built from the signature both validates arguments and emits the schema.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from apigen_envs.db import DBView, dumps
from apigen_envs.errors import ApigenError, ToolCallError, ToolError, UnknownToolError, did_you_mean

_SECTION = re.compile(r"^\s*(Args|Arguments|Returns|Raises|Yields|Examples?|Notes?):\s*$")
_PARAM = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class ToolDefinitionError(ApigenError, TypeError):
    """A tool function cannot be registered (missing type hint, undescribed parameter, ...)."""


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into the description and per-parameter descriptions.

    Args:
        doc: The raw docstring.

    Returns:
        (description, {parameter: description}).

    """
    lines = inspect.cleandoc(doc or "").splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in lines:
        match = _SECTION.match(line)
        if match:
            section, current, arg_indent = match.group(1), None, None
            continue
        if section is None:
            description.append(line)
        elif section in ("Args", "Arguments"):
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            pmatch = _PARAM.match(line)
            if pmatch and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = pmatch.group(1).lstrip("*")
                params[current] = pmatch.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(" ".join(description).split()), params


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """Resolve ``$ref`` to ``$defs`` and drop pydantic's titles, for a compact schema models read well."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return _inline_refs({**target, **extra}, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k not in ("title", "$defs")}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


_REJECT = object()
"""A fast converter's answer for a value it cannot vouch for (pydantic then validates the call)."""
_REQUIRED = object()
_SCALARS = (str, int, float, bool)
_PLAIN_CONFIG = frozenset({"extra", "frozen", "title", "json_schema_extra"})


def _fast_converter(annotation: Any, metadata: Sequence[Any] = ()) -> Callable[[Any], Any] | None:
    """A converter giving exactly what pydantic's validate-and-dump gives, for values already of the type.

    Arguments are nearly always sent with their declared JSON types; for those, validating through the
    schema model and dumping it back returns the same values (fresh containers), so a few type tests do
    the same work. The converter returns :data:`_REJECT` for anything else (a value to coerce or refuse),
    and the caller falls back to pydantic. None: the type is not one handled here (always pydantic).
    """
    if metadata:
        return None
    if annotation is str or annotation is bool or annotation is int:
        kind = annotation
        return lambda v: v if type(v) is kind else _REJECT
    if annotation is float:
        # pydantic turns an int into the float of the same value; exactly so below 2**53.
        return lambda v: v if type(v) is float else float(v) if type(v) is int and -(2**53) <= v <= 2**53 else _REJECT
    origin = get_origin(annotation)
    if origin is Literal:
        values = get_args(annotation)
        if not all(type(v) is str for v in values):
            return None
        allowed = frozenset(values)
        return lambda v: v if type(v) is str and v in allowed else _REJECT
    if origin is list:
        items = get_args(annotation)
        item = _fast_converter(items[0]) if len(items) == 1 else None
        if item is None:
            return None

        def convert_list(value: Any) -> Any:
            if type(value) is not list:
                return _REJECT
            out = [item(v) for v in value]
            return _REJECT if any(v is _REJECT for v in out) else out

        return convert_list
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _fast_model(annotation)
    return None


def _fast_model(model: type[BaseModel]) -> Callable[[Any], Any] | None:
    """A fast converter for a plain record model (required fields of handled types, no validators)."""
    decorators = model.__pydantic_decorators__
    if any(
        getattr(decorators, kind)
        for kind in (
            "validators",
            "field_validators",
            "root_validators",
            "model_validators",
            "field_serializers",
            "model_serializers",
            "computed_fields",
        )
    ):
        return None
    if not set(model.model_config) <= _PLAIN_CONFIG or model.model_config.get("extra") == "allow":
        return None
    fields: list[tuple[str, Callable[[Any], Any]]] = []
    for name, info in model.model_fields.items():
        convert = _fast_converter(info.annotation, info.metadata)
        if convert is None or not info.is_required() or info.alias not in (None, name):
            return None
        fields.append((name, convert))
    names = frozenset(name for name, _ in fields)

    def convert_model(value: Any) -> Any:
        if type(value) is not dict or value.keys() != names:
            return _REJECT
        out = {}
        for name, convert in fields:
            converted = out[name] = convert(value[name])
            if converted is _REJECT:
                return _REJECT
        return out

    return convert_model


def _fast_arguments(model: type[BaseModel]) -> tuple[tuple[str, Callable[[Any], Any], Any], ...] | None:
    """Per parameter (name, converter, default or :data:`_REQUIRED`) when every parameter has a fast
    converter and an immutable default (if any); else None.
    """
    out = []
    for name, info in model.model_fields.items():
        convert = _fast_converter(info.annotation, info.metadata)
        if convert is None:
            return None
        if info.is_required():
            default = _REQUIRED
        elif info.default_factory is None and (info.default is None or type(info.default) in _SCALARS):
            default = info.default
        else:
            return None
        out.append((name, convert, default))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CallConvention:
    """How a call's arguments reach a tool function, and how a call that cannot be made is reported.

    Attributes:
        validate: Validate and coerce arguments with the tool's schema model before the call (clear
            errors for wrong types). When False the function receives the agent's values as sent, as both
            peers do, and only names are checked, with the error text Python itself would raise.
        label: Tool name -> the function name in Python's own call errors (``"RetailTools.x"``), so a
            missing or unexpected argument reads exactly as in the peer.
        reserved: Argument names that collide with the peer's own call plumbing (``data``, ``self``), each
            with the "got multiple values" error Python raises there (``{label}`` and ``{name}`` are filled in).
        unknown_tool: Tool name -> the full observation for a call to a tool that does not exist.
        python_errors: Any exception a tool raises is an error the agent sees (``Error: <exception>``), as
            in both peers, whose tools meet ill-typed arguments with Python's own errors. When False only
            :class:`~apigen_envs.errors.ToolError` is; anything else is a defect of the environment.

    """

    validate: bool = True
    label: Callable[[str], str] | None = None
    reserved: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    unknown_tool: Callable[[str], str] | None = None
    python_errors: bool = False


STRICT = CallConvention()
"""The default convention: arguments validated against the schema."""


def _quoted_list(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered tool.

    Attributes:
        name: The name the model calls.
        description: What the tool does, as shown to the model.
        fn: The implementation; called as ``fn(view, **arguments)``.
        args_model: The pydantic model validating the arguments.
        schema: The OpenAI ``{"type": "function", ...}`` schema.
        mutates: Whether the tool may write to the DB.
        terminal: Whether calling it ends the episode (e.g. transfer to a human).
        params: Parameter names in signature order.
        required: Parameters without a default.

    """

    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    schema: dict[str, Any]
    mutates: bool = False
    terminal: bool = False
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    _param_set: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _required_set: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _fast: tuple[tuple[str, Callable[[Any], Any], Any], ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Derived from the other fields, never set by callers: sets for the per-call name check, and the
        # fast converters that stand in for the schema model on arguments already of the declared types.
        object.__setattr__(self, "_param_set", frozenset(self.params))
        object.__setattr__(self, "_required_set", frozenset(self.required))
        object.__setattr__(self, "_fast", _fast_arguments(self.args_model))

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Validate arguments and return them coerced to the declared types.

        Raises:
            ToolCallError: When an argument is missing, unknown or of the wrong type.

        """
        fast = self._fast
        if fast is not None and type(arguments) is dict and arguments.keys() <= self._param_set:
            # The usual call: every value already of its declared type, so the model would return it as is.
            out: dict[str, Any] = {}
            for name, convert, default in fast:
                if name in arguments:
                    value = out[name] = convert(arguments[name])
                    if value is _REJECT:
                        break
                elif default is _REQUIRED:
                    break
                else:
                    out[name] = default
            else:
                return out
        try:
            model = self.args_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
            raise ToolCallError(f"invalid arguments for {self.name}: {problems}") from None
        except RecursionError:
            raise ToolCallError(f"invalid arguments for {self.name}: nested too deeply") from None
        # Plain JSON data, as the agent would have sent it once coerced: nested argument models become dicts.
        return model.model_dump()

    def bind(self, arguments: Mapping[str, Any], convention: CallConvention = STRICT) -> dict[str, Any]:
        """The keyword arguments to call :attr:`fn` with, under a calling convention.

        Raises:
            ToolCallError: When the call cannot be made (the message is the peer's, or ours when validating).

        """
        if convention.validate:
            return self.validate(arguments)
        keys = arguments.keys()
        if keys <= self._param_set and self._required_set <= keys:
            # The common case: two set operations, no error text built. No copy: the call unpacks it.
            return arguments if type(arguments) is dict else dict(arguments)
        label = convention.label(self.name) if convention.label else self.name
        for key in arguments:
            if key in convention.reserved:
                raise ToolCallError(convention.reserved[key].format(label=label, name=self.name))
            if key not in self.params:
                raise ToolCallError(f"{label}() got an unexpected keyword argument '{key}'")
        missing = [p for p in self.required if p not in arguments]
        noun = "argument" if len(missing) == 1 else "arguments"
        raise ToolCallError(f"{label}() missing {len(missing)} required positional {noun}: {_quoted_list(missing)}")


def build_tool(
    fn: Callable[..., Any], *, name: str | None = None, mutates: bool = False, terminal: bool = False
) -> Tool:
    """Build a :class:`Tool` from a typed, documented function.

    Args:
        fn: The implementation; first parameter is the DB view.
        name: Tool name (defaults to the function name).
        mutates: Whether the tool writes to the DB.
        terminal: Whether calling it ends the episode.

    Returns:
        The tool.

    Raises:
        ToolDefinitionError: When a parameter lacks a type hint or a description.

    """
    tool_name = name or fn.__name__
    description, param_docs = parse_docstring(fn.__doc__)
    if not description:
        raise ToolDefinitionError(f"tool {tool_name!r} has no description in its docstring")
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if not params:
        raise ToolDefinitionError(f"tool {tool_name!r} must take the DB view as its first parameter")
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for param in params[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name!r}: *args/**kwargs are not allowed")
        if param.name not in hints:
            raise ToolDefinitionError(f"tool {tool_name!r}: parameter {param.name!r} has no type hint")
        doc = param_docs.get(param.name)
        if not doc:
            raise ToolDefinitionError(f"tool {tool_name!r}: parameter {param.name!r} has no description in Args:")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], Field(default, description=doc))
    model = create_model(  # type: ignore[call-overload]
        f"{tool_name}_args", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )
    raw = model.model_json_schema()
    parameters = _inline_refs(raw, raw.get("$defs", {}))
    parameters.setdefault("properties", {})
    parameters["required"] = [p.name for p in params[1:] if p.default is inspect.Parameter.empty]
    parameters.pop("additionalProperties", None)
    schema = {
        "type": "function",
        "function": {"name": tool_name, "description": description, "parameters": parameters},
    }
    names = tuple(p.name for p in params[1:])
    return Tool(tool_name, description, fn, model, schema, mutates, terminal, names, tuple(parameters["required"]))


def to_jsonable(value: Any) -> Any:
    """Convert a tool's return value (rows, pydantic models, tuples) to plain JSON data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def render_result(value: Any) -> str:
    """The text the model sees for a tool's return value: strings as they are, everything else as JSON.

    JSON is written with ``json.dumps``' defaults (ASCII-escaped, ``", "`` and ``": "`` separators), the
    way both peers write their tool results, so the text an agent sees is the text it was trained on.
    """
    if isinstance(value, str):
        return value
    try:
        return dumps(value)
    except TypeError:
        return dumps(to_jsonable(value))


def parse_arguments(arguments: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Accept arguments as a dict or JSON text (as models emit them).

    Raises:
        ToolCallError: When the text is not a JSON object.

    """
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        text = arguments.strip()
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ToolCallError(f"arguments are not valid JSON ({exc.msg} at position {exc.pos})") from None
        except RecursionError:
            raise ToolCallError("arguments are nested too deeply") from None
        if not isinstance(parsed, dict):
            raise ToolCallError(f"arguments must be a JSON object, got {type(parsed).__name__}")
        return parsed
    if not isinstance(arguments, Mapping):
        raise ToolCallError(f"arguments must be an object, got {type(arguments).__name__}")
    return dict(arguments)


@dataclass(slots=True)
class CallOutcome:
    """What one tool call produced.

    Attributes:
        content: The observation text (the result, or the error message).
        error: Whether the call failed (a tool error, a call that could not be made).
        tool: The tool called, or None when no such tool exists.
        bug: Set when the tool raised an unexpected exception under a convention that treats those as
            defects of the environment (the episode then ends as ``env_error``).

    """

    content: str
    error: bool
    tool: Tool | None = None
    bug: str | None = None


def execute(tools: ToolSet, view: Any, name: str, arguments: Any, *, atomic: bool) -> CallOutcome:
    """Run one tool call the way episodes and gold replays both run it.

    Args:
        tools: The domain's tools (their calling convention decides validation and error texts).
        view: The DB view to run on.
        name: The tool name.
        arguments: Arguments as a dict or JSON text.
        atomic: Undo every write of a call that fails (else partial writes stay, as in the peers).

    Returns:
        The outcome; never raises for anything the call's arguments or the tool do.

    """
    tool: Tool | None = None
    try:
        tool = tools[name]
        # Arguments as the agent's dict are used as they are: the call unpacks them into fresh keywords.
        kwargs = tool.bind(arguments if type(arguments) is dict else parse_arguments(arguments), tools.convention)
        if atomic and tool.mutates:
            with view.transaction():
                value = tool.fn(view, **kwargs)
        else:
            value = tool.fn(view, **kwargs)
        if type(value) is str:
            return CallOutcome(value, False, tool)
        cached = view.json_text(value) if type(value) is dict and isinstance(view, DBView) else None
        return CallOutcome(cached if cached is not None else render_result(value), False, tool)
    except UnknownToolError as exc:
        return CallOutcome(str(exc), True)
    except (ToolError, ToolCallError) as exc:
        return CallOutcome(f"Error: {exc}", True, tool)
    except Exception as exc:
        if tools.convention.python_errors:
            return CallOutcome(f"Error: {exc}", True, tool)
        return CallOutcome(
            f"Error: internal error in tool {name!r}",
            True,
            tool,
            bug=f"tool {name!r} raised {type(exc).__name__}: {exc}",
        )


class ToolSet:
    """An ordered collection of tools with a decorator to register them.

    Example:
        tools = ToolSet()

        @tools.tool(mutates=True)
        def rename(db: DBView, user_id: str, name: str) -> str:
            '''Rename a user.

    Args:
                user_id: The user's id.
                name: The new name.
            '''

    """

    def __init__(self, tools: Sequence[Tool] = (), convention: CallConvention = STRICT) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: tuple[dict[str, Any], ...] | None = None
        self.convention = convention
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> Tool:
        """Register a built tool.

        Raises:
            ToolDefinitionError: When a tool of that name already exists.

        """
        if tool.name in self._tools:
            raise ToolDefinitionError(f"duplicate tool name {tool.name!r}")
        self._tools[tool.name] = tool
        self._schemas = None
        return tool

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        mutates: bool = False,
        terminal: bool = False,
    ) -> Any:
        """Decorator registering a function as a tool (usable bare or with options).

        Args:
            fn: The function when used bare as ``@tools.tool``.
            name: Tool name override.
            mutates: Whether the tool writes to the DB.
            terminal: Whether calling it ends the episode.

        Returns:
            The original function (so it stays directly callable), or a decorator.

        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.add(build_tool(func, name=name, mutates=mutates, terminal=terminal))
            return func

        return register(fn) if fn is not None else register

    def __getitem__(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except (KeyError, TypeError):
            if self.convention.unknown_tool is not None:
                raise UnknownToolError(self.convention.unknown_tool(str(name))) from None
            raise ToolCallError(f"unknown tool {name!r}.{did_you_mean(str(name), self._tools)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> tuple[str, ...]:
        """Tool names in registration order."""
        return tuple(self._tools)

    def schemas(self) -> tuple[dict[str, Any], ...]:
        """OpenAI tool schemas, built once."""
        if self._schemas is None:
            self._schemas = tuple(t.schema for t in self._tools.values())
        return self._schemas

    def subset(self, names: Sequence[str]) -> ToolSet:
        """A new ToolSet holding only the named tools (same calling convention)."""
        return ToolSet([self[n] for n in names], self.convention)

    def call(self, view: Any, name: str, arguments: Mapping[str, Any] | str | None = None) -> Any:
        """Validate and run one tool call.

        Args:
            view: The DB view to run against.
            name: Tool name.
            arguments: Arguments as a dict or JSON text.

        Returns:
            The tool's return value.

        Raises:
            ToolCallError: Unknown tool, bad JSON or invalid arguments (shown to the agent as an error).
            ToolError: The tool refused for a business reason (shown to the agent).

        """
        tool = self[name]
        return tool.fn(view, **tool.bind(parse_arguments(arguments), self.convention))
