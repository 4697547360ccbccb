"""CI config: YAML (``version: 1``) -> validated frozen dataclasses.

The only module that imports yaml. The file is composed into nodes (so every value keeps
its line) and converted by hand: only plain YAML types are accepted, so no tag can build
a Python object, and every error names the file, the line and the key path
(``checks[2].rtol``), with a "did you mean" where one fits.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gradcheck_cli.errors import ConfigError, UsageError, suggest
from gradcheck_cli.registry import table

PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}
OPTION_KEYS = ("seed", "trials", "shape", "method", "dtype", "edges", "fast", "rtol", "atol", "timeout")
CHECK_KEYS = ("spec", "name", "expect", "input", "target", *OPTION_KEYS)
TOP_KEYS = ("version", "defaults", "plugins", "functions", "checks")
# Convention keys come from the one table of conventions; each kind takes its own.
CONVENTION_KEYS = table.keywords(order=None)
KIND_CONVENTIONS = {kind: table.keywords(kind, order=None) for kind in ("activation", "loss", "layer")}
LAYER_KEYS = ("args", "kwargs", "outputs", "params", "stochastic")
FUNCTION_KEYS = ("kind", "forward", *CONVENTION_KEYS, "init", "target", "domain", "output_attr",
                 "grad_attr", "formula", "kinks", "reduction", "target_first", *LAYER_KEYS)
TARGET_KINDS = ("real", "onehot", "probabilities", "binary", "positive", "labels")
METHODS = ("central", "richardson", "complex")
# Bounds on what a config may stand for, far above any real suite (hundreds of values, a
# handful of levels) and far below what hurts: aliases let a 1 kB file name 9**9 values
# ("billion laughs"; an alias counts each time it is used), and both yaml's composer and
# the reader below recurse once per level.
# Numbers as they look: decimal digits, a fraction, an exponent, or .inf/.nan. YAML 1.1 also
# reads 010 as 8, 0x1F as 31, 1:20 as 80 (base 60) and 1_000 as 1000.
_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
MAX_VALUES = 100_000
MAX_DEPTH = 64
# A config of 100,000 short values is about 2 MB; reading 50 MB of YAML takes 20 s.
MAX_BYTES = 4 * 2**20


@dataclass(frozen=True)
class FunctionConfig:
    """A ``functions:`` entry: existing library code mapped to a registry entry."""

    name: str
    kind: str
    forward: str
    conventions: Mapping[str, str]
    init: Mapping[str, Any]
    target: str | None
    domain: str
    output_attr: str | None
    grad_attr: str | Mapping[str, str] | None
    formula: str
    kinks: tuple[float, ...]
    where: str
    key_lines: Mapping[str, str] = field(default_factory=dict)
    reduction: str | None = None
    target_first: bool = False
    args: Mapping[str, Any] = field(default_factory=dict)
    """Layers: argument name -> shape list, or {shape, domain}, in call order."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("out",)
    params: Mapping[str, str] = field(default_factory=dict)
    stochastic: bool = False

    def at(self, key: str) -> str:
        """``file:line: functions.NAME.key`` for a message about ``key``."""
        return f"{self.key_lines.get(key, self.where)}: functions.{self.name}.{key}"


@dataclass(frozen=True)
class CheckConfig:
    """One entry of ``checks:``; ``options`` holds only the keys it sets."""

    spec: str
    name: str
    expect: str
    options: Mapping[str, Any]
    where: str


@dataclass(frozen=True)
class Config:
    """A whole config file, validated."""

    path: Path
    defaults: Mapping[str, Any]
    plugins: tuple[str, ...]
    functions: tuple[FunctionConfig, ...]
    checks: tuple[CheckConfig, ...]
    lines: Mapping[str, int] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        """Where relative paths start: the folder of the real file, after following symlinks.

        A config linked into another folder (``ln -s ../ci/gradcheck.yaml``) keeps meaning
        the plugins and libraries beside it. A plain file keeps its path as given, so that
        origins in reports stay as short as the user wrote them.
        """
        return self.path.resolve().parent if self.path.is_symlink() else self.path.parent

    def where(self, key: str) -> str:
        """``file:line: key`` for messages."""
        return f"{self.path}:{self.lines.get(key, 1)}: {key}"


class _TooDeep(Exception):
    """Raised by :class:`_Loader` at the line where nesting passes MAX_DEPTH."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer stops at MAX_DEPTH levels instead of recursing until Python gives up."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.depth >= MAX_DEPTH:
            raise _TooDeep(self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call]
        self.depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self.depth -= 1


def _too_deep(path: Path, line: int | str) -> ConfigError:
    return ConfigError(f"{path}:{line}: lists and mappings are nested more than {MAX_DEPTH} levels deep here; "
                       f"a config needs a few levels. Flatten it (an alias to a deep value counts its depth "
                       f"where it is used).")


class _Reader:
    """Convert composed YAML nodes to plain values, remembering each key path's line.

    Aliases are expanded where they are used, so the reader counts every value it builds
    (MAX_VALUES), limits the depth (MAX_DEPTH) and refuses an alias inside its own anchor.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, int] = {}
        self.constructor = yaml.SafeLoader("")
        self.expanded = 0
        self.open: set[int] = set()
        """ids of the collection nodes being expanded: meeting one again is an alias cycle."""

    def fail(self, key: str, message: str) -> ConfigError:
        line = self.lines.get(key, 1)
        return ConfigError(f"{self.path}:{line}: {key}: {message}" if key else f"{self.path}:{line}: {message}")

    def value(self, node: yaml.Node, key: str, depth: int = 0) -> Any:
        self.lines[key] = node.start_mark.line + 1
        self.expanded += 1
        if self.expanded > MAX_VALUES:
            raise self.fail(key, f"the config stands for more than {MAX_VALUES:,} values once its aliases "
                                 f"(*name) are expanded, each use counted; a real suite holds a few hundred, and "
                                 f"nested aliases can make a few lines stand for billions. Use fewer aliases "
                                 f"(or shorter lists).")
        if depth > MAX_DEPTH:
            raise _too_deep(self.path, f"{self.lines[key]}: {key}")
        if id(node) in self.open:
            raise self.fail(key, "an alias (*name) is used inside the value its anchor (&name) marks, as in "
                                 "'a: &a [*a]', so the value would contain itself without end. Point the "
                                 "alias at a value defined before and outside it.")
        if node.tag not in PLAIN_TAGS:
            raise self.fail(key, f"the YAML tag '{node.tag}' is not allowed; configs hold plain "
                                 f"values only (strings, numbers, lists, mappings), never objects. "
                                 f"Remove the tag.")
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self.open.add(id(node))
            try:
                return self._collection(node, key, depth)
            finally:
                self.open.discard(id(node))
        if node.tag.endswith(":timestamp"):
            return str(node.value)
        if node.tag.endswith((":int", ":float")) and isinstance(node, yaml.ScalarNode) and node.style is None:
            self._plain_number(node, key)
        return self.constructor.construct_object(node, deep=True)

    def _merge(self, node: yaml.Node, key: str, depth: int, merged: dict[str, Any]) -> None:
        """A merge key ``<<: *base`` (or ``<<: [*a, *b]``): copy the keys not set yet; earlier mappings win."""
        sub = f"{key}.<<" if key else "<<"
        self.lines[sub] = node.start_mark.line + 1
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise self.fail(sub, "'<<' merges mappings into this one: give an alias to a mapping (<<: *base) "
                                     "or a list of them (<<: [*a, *b]).")
            for k, v in self.value(source, sub, depth + 1).items():
                merged.setdefault(k, v)

    def _plain_number(self, node: yaml.ScalarNode, key: str) -> None:
        """Refuse YAML 1.1's other spellings of numbers, which read as something else than they look."""
        text = str(node.value)
        if (_PLAIN_INT if node.tag.endswith(":int") else _PLAIN_FLOAT).fullmatch(text):
            return
        value = self.constructor.construct_object(node, deep=True)
        kind = ("a base-60 number" if ":" in text else "an octal number" if re.fullmatch(r"[-+]?0[0-7_]+", text)
                else "a hexadecimal number" if "x" in text.lower() else "a binary number" if "b" in text.lower()
                else "a number with '_' separators")
        meant = f", or {int(text.replace('_', ''), 10)} if you meant that" if kind == "an octal number" else ""
        raise self.fail(key, f"YAML 1.1 reads '{text}' as {kind}, {value!r}, which is not what it looks like. "
                             f"Write the number in plain decimal digits ({value!r}{meant}), or quote it if you "
                             f"mean text.")

    def _collection(self, node: yaml.MappingNode | yaml.SequenceNode, key: str, depth: int) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            merged: dict[str, Any] = {}
            for k_node, v_node in node.value:
                if k_node.tag == "tag:yaml.org,2002:merge":
                    self._merge(v_node, key, depth, merged)
                    continue
                if not isinstance(k_node, yaml.ScalarNode):
                    self.lines[key or "config"] = k_node.start_mark.line + 1
                    raise self.fail(key or "config", "mapping keys must be plain names, not lists or mappings")
                k = str(k_node.value)
                sub = f"{key}.{k}" if key else k
                if k in out:
                    self.lines[sub] = k_node.start_mark.line + 1
                    raise self.fail(sub, "this key appears twice in the same mapping; keep one")
                out[k] = self.value(v_node, sub, depth + 1)
                self.lines[sub] = k_node.start_mark.line + 1
            for k, v in merged.items():  # the mapping's own keys win over merged ones
                if k not in out:
                    out[k] = v
                    self.lines[f"{key}.{k}" if key else k] = self.lines.get(f"{key}.<<.{k}", 1)
            return out
        return [self.value(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(node.value)]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _keys(reader: _Reader, mapping: Any, key: str, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise reader.fail(key, f"expected a mapping ({what}); got {_type_name(mapping)} {mapping!r}")
    for k in mapping:
        if k not in allowed:
            sub = f"{key}.{k}" if key else k
            raise reader.fail(sub, f"unknown key '{k}' in {what}.{suggest(k, allowed)} "
                                   f"Allowed keys: {', '.join(allowed)}.")
    return mapping


def _int(reader: _Reader, value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise reader.fail(key, f"expected an integer >= {minimum}; got {_type_name(value)} {value!r}")
    return value


def _number(value: Any) -> float:
    # YAML 1.1 reads 1e-6 (no dot) as a string; accept a number in ASCII, NaN for anything else.
    from gradcheck_cli.inputs import ascii_float

    number = ascii_float(value)
    return math.nan if number is None else number


def _float(reader: _Reader, value: Any, key: str, positive: bool = False) -> float:
    number = _number(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise reader.fail(key, f"expected a finite number {bound}; got {_type_name(value)} {value!r}")
    return number


def _timeout(reader: _Reader, value: Any, key: str) -> float | None:
    # The same meaning as --timeout: seconds > 0; 0 and .inf mean no limit (None).
    from gradcheck_cli.inputs import parse_timeout

    try:
        return parse_timeout(value if isinstance(value, int | float | str) else repr(value), key)
    except UsageError:
        raise reader.fail(key, f"expected a number of seconds > 0, or 0 or .inf for no limit; got "
                               f"{_type_name(value)} {value!r}") from None


def _str(reader: _Reader, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        quote = (" (YAML 1.1 reads yes/no/on/off/y/n as true/false: quote the text, e.g. 'no')"
                 if isinstance(value, bool) else "")
        raise reader.fail(key, f"expected a non-empty string; got {_type_name(value)} {value!r}{quote}")
    if choices is not None and value not in choices:
        raise reader.fail(key, f"'{value}' is not one of {', '.join(choices)}.{suggest(value, choices)}")
    return value


def _matrix_text(reader: _Reader, value: Any, key: str) -> str:
    """``input``/``target``: "2,4,2,1", [2, 4, 2, 1] or [[1, 2], [3, 4]] -> CLI text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return ",".join(repr(float(v)) for v in value)
    if isinstance(value, list) and value and all(
            isinstance(r, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in r)
            for r in value):
        return ";".join(",".join(repr(float(v)) for v in row) for row in value)
    raise reader.fail(key, f"expected numbers as '2,4,2,1', a list [2, 4, 2, 1] or a list of rows "
                           f"[[1, 2], [3, 4]]; got {_type_name(value)} {value!r}")


def _shape(reader: _Reader, value: Any, key: str) -> tuple[int, ...]:
    # The same check as --shape's (ASCII digits, positive, size limit), reported at the key.
    from gradcheck_cli.inputs import parse_shape  # numpy: only once a shape is read

    try:
        return parse_shape(value, option="shape")
    except UsageError as exc:
        raise reader.fail(key, exc.message) from None


def _options(reader: _Reader, raw: dict[str, Any], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        sub = f"{key}.{k}"
        if k == "seed":
            out[k] = _int(reader, v, sub, 0)
        elif k == "trials":
            out[k] = _int(reader, v, sub, 1)
        elif k == "shape" and isinstance(v, dict):  # a layer's arguments by name: {x: [6, 5], w: [5, 5]}
            named = []
            for name, value in v.items():
                if not isinstance(name, str) or not name.isidentifier():
                    raise reader.fail(f"{sub}.{name}", f"'{name}' is not an argument name; write shape: {{x: [6, 5], "
                                                       f"w: [5, 3]}} (a layer's arguments) or shape: [4, 10]")
                named.append((name, _shape(reader, value, f"{sub}.{name}")))
            out["arg_shapes"] = tuple(named)
        elif k == "shape":
            out[k] = _shape(reader, v, sub)
        elif k == "method":
            out[k] = _str(reader, v, sub, METHODS)
        elif k in ("edges", "fast"):
            if not isinstance(v, bool):
                raise reader.fail(sub, f"expected true or false; got {_type_name(v)} {v!r}")
            out[k] = v
        elif k == "dtype":
            out[k] = _str(reader, v, sub, ("float64", "float32"))
        elif k in ("rtol", "atol"):
            out[k] = _float(reader, v, sub)
        elif k == "timeout":
            out[k] = _timeout(reader, v, sub)
        elif k in ("input", "target"):
            out[k] = _matrix_text(reader, v, sub)
    return out


def _function(reader: _Reader, name: str, raw: Any) -> FunctionConfig:
    key = f"functions.{name}"
    raw = _keys(reader, raw, key, FUNCTION_KEYS, f"function '{name}'")
    if "kind" not in raw:
        raise reader.fail(key, "missing 'kind': activation, loss or layer")
    kind = _str(reader, raw["kind"], f"{key}.kind", tuple(KIND_CONVENTIONS))
    conventions = {k: _str(reader, raw[k], f"{key}.{k}") for k in CONVENTION_KEYS if k in raw}
    allowed = KIND_CONVENTIONS[kind]
    for k in conventions:
        if k not in allowed:
            raise reader.fail(f"{key}.{k}", f"'{k}' is not a convention for a {kind}; use one of "
                                             f"{', '.join(allowed)}.")
    if "forward" not in raw and "value_and_grad" not in conventions:
        raise reader.fail(key, "missing 'forward': the function to check, as module:qualname or "
                               "path/file.py:qualname")
    first_order = tuple(a for a in allowed if a != "derivative2")
    if not any(k in conventions for k in first_order):
        raise reader.fail(key, f"no derivative to check: add one of {', '.join(first_order)}")
    article = "an" if kind == "activation" else "a"
    init = raw.get("init", {})
    if not isinstance(init, dict):
        raise reader.fail(f"{key}.init", f"expected a mapping of constructor keyword arguments; got "
                                         f"{_type_name(init)} {init!r}")
    if "target" in raw and kind != "loss":
        raise reader.fail(f"{key}.target", f"'target' is the kind of target a loss takes; {article} {kind} has "
                                           f"none. Remove it, or set 'kind: loss'.")
    for k in (*LAYER_KEYS, "reduction", "target_first"):
        for_loss = k in ("reduction", "target_first")
        if k in raw and kind != ("loss" if for_loss else "layer"):
            owner, fit = ("a loss", "loss") if for_loss else ("a layer", "layer")
            raise reader.fail(f"{key}.{k}", f"'{k}' belongs to {owner}, not to {article} {kind}. Remove it, or set "
                                            f"'kind: {fit}'.")
    for attr in ("output_attr", "grad_attr"):
        if attr in raw and "backward" not in conventions:
            raise reader.fail(f"{key}.{attr}", f"'{attr}' names where a stateful layer's backward convention "
                                               f"stores its result, but this function has no 'backward'. Remove "
                                               f"it, or add 'backward: module:Class.backward'.")
    if not isinstance(raw.get("formula", ""), str):
        raise reader.fail(f"{key}.formula", f"expected the formula as text, e.g. 'y * (1 - y)'; got "
                                            f"{_type_name(raw['formula'])} {raw['formula']!r}. Quote it.")
    kinks = raw.get("kinks", [])
    if not isinstance(kinks, list):
        raise reader.fail(f"{key}.kinks", f"expected a list of numbers; got {_type_name(kinks)}")
    if isinstance(raw.get("grad_attr"), dict) and kind != "layer":
        raise reader.fail(f"{key}.grad_attr", f"one attribute per input is for a layer's forward of several inputs; "
                                              f"{article} {kind} stores one gradient: name its attribute (dinputs)")
    layer = _layer_keys(reader, key, raw) if kind == "layer" else {}
    return FunctionConfig(
        name=name, kind=kind, forward=_str(reader, raw["forward"], f"{key}.forward") if "forward" in raw else "",
        conventions=conventions, init=init,
        target=_str(reader, raw["target"], f"{key}.target", TARGET_KINDS) if "target" in raw else None,
        domain=_str(reader, raw.get("domain", "real"), f"{key}.domain", ("real", "positive", "unit")),
        output_attr=_str(reader, raw["output_attr"], f"{key}.output_attr") if "output_attr" in raw else None,
        grad_attr=_grad_attr(reader, raw["grad_attr"], f"{key}.grad_attr") if "grad_attr" in raw else None,
        formula=str(raw.get("formula", "")),
        kinks=tuple(_kink(reader, v, f"{key}.kinks[{i}]") for i, v in enumerate(kinks)),
        where=f"{reader.path}:{reader.lines.get(key, 1)}",
        key_lines={k: f"{reader.path}:{reader.lines.get(f'{key}.{k}', 1)}" for k in raw},
        reduction=_str(reader, raw["reduction"], f"{key}.reduction", ("mean", "sum")) if "reduction" in raw else None,
        target_first=_bool(reader, raw.get("target_first", False), f"{key}.target_first"),
        **layer,
    )


def _bool(reader: _Reader, value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise reader.fail(key, f"expected true or false; got {_type_name(value)} {value!r}")
    return value


def _grad_attr(reader: _Reader, value: Any, key: str) -> str | dict[str, str]:
    """``grad_attr``: one attribute (``dinputs``), or per input of a layer's forward (``{x1: dx1, x2: dx2}``)."""
    if isinstance(value, dict):
        if not value or not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()):
            raise reader.fail(key, f"expected the attribute the gradient is stored in (dinputs), or one per input "
                                   f"of the forward, {{x1: dx1, x2: dx2}}; got {value!r}")
        return dict(value)
    return _str(reader, value, key)


def _layer_arg(reader: _Reader, sub: str, arg: Any, value: Any) -> Any:
    """One entry of a layer's ``args``: a shape, or ``{shape, domain, classes, scale, constant}``."""
    if not isinstance(arg, str) or not arg.isidentifier():
        raise reader.fail(sub, f"'{arg}' is not an argument name (a Python identifier such as x or prev_h)")
    if isinstance(value, dict):
        _keys(reader, value, sub, ("shape", "domain", "classes", "scale", "constant"),
              f"argument '{arg}': {{shape: [...], domain: ..., classes: N, scale: s, constant: true}}")
        if "shape" not in value:
            raise reader.fail(sub, "missing 'shape', e.g. {shape: [4, 5], domain: positive}")
        shaped: dict[str, Any] = {"shape": _shape(reader, value["shape"], f"{sub}.shape"),
                                  "domain": _str(reader, value.get("domain", "real"), f"{sub}.domain",
                                                 ("real", "positive", "unit", "labels", "mask"))}
        if (shaped["domain"] == "labels") != ("classes" in value):
            raise reader.fail(sub, "integer labels (domain: labels) take classes: N, the number of classes "
                                   "(indices drawn in [0, N)), and only they do")
        if "classes" in value:
            shaped["classes"] = _int(reader, value["classes"], f"{sub}.classes", 1)
        if "scale" in value:
            shaped["scale"] = _float(reader, value["scale"], f"{sub}.scale", positive=True)
        if "constant" in value:
            shaped["constant"] = _bool(reader, value["constant"], f"{sub}.constant")
        return shaped
    if value == []:  # a scalar argument
        return ()
    return _shape(reader, value, sub)


def _layer_keys(reader: _Reader, key: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``args``, ``kwargs``, ``outputs``, ``params`` and ``stochastic`` of a ``kind: layer`` entry."""
    given = [k for k in ("backward", "vjp", "value_and_grad") if k in raw]
    if len(given) > 1:
        raise reader.fail(f"{key}.{given[1]}", "give one of 'backward' (cache style, or a class's backward method), "
                                                "'vjp' (vjp(*args, *douts) -> one gradient per argument) and "
                                                "'value_and_grad' (f(*args) -> (scalar, its gradients)), not several")
    args = raw.get("args", {})
    if not isinstance(args, dict) or (not args and "params" not in raw):
        where = f"{key}.args" if "args" in raw else key
        raise reader.fail(where, f"expected a mapping of the forward's array arguments, in call order, to "
                                         f"their default shapes, e.g. {{x: [4, 5], w: [5, 3], b: [3]}}; got "
                                         f"{_type_name(args)} {args!r}")
    shaped = {arg: _layer_arg(reader, f"{key}.args.{arg}", arg, value) for arg, value in args.items()}
    kwargs = raw.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise reader.fail(f"{key}.kwargs", f"expected a mapping of keyword arguments passed to forward as they "
                                           f"are, e.g. {{conv_param: {{stride: 1, pad: 1}}}}; got "
                                           f"{_type_name(kwargs)} {kwargs!r}")
    outputs = raw.get("outputs", ["out"])
    if isinstance(outputs, str):
        outputs = [outputs]
    if (not isinstance(outputs, list) or not outputs or len(set(map(str, outputs))) != len(outputs)
            or not all(isinstance(o, str) and o.isidentifier() for o in outputs)):
        raise reader.fail(f"{key}.outputs", f"expected a list of distinct output names, e.g. [next_h, next_c]; "
                                            f"got {_type_name(outputs)} {outputs!r}")
    params = raw.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        raise reader.fail(f"{key}.params", f"expected a mapping from each parameter to its gradient, as attribute "
                                           f"paths of the layer, e.g. {{weights: dweights}} or {{'params[W]': "
                                           f"'grads[W]'}}; got {_type_name(params)} {params!r}")
    stochastic = raw.get("stochastic", False)
    if not isinstance(stochastic, bool):
        raise reader.fail(f"{key}.stochastic", f"expected true or false; got {_type_name(stochastic)} {stochastic!r}")
    return {"args": shaped, "kwargs": kwargs, "outputs": tuple(outputs), "params": params, "stochastic": stochastic}


def _kink(reader: _Reader, value: Any, key: str) -> float:
    # Any finite number (1e-6 without a dot is a YAML string); .nan or .inf marks no point.
    number = _number(value)
    if not math.isfinite(number):
        raise reader.fail(key, f"expected a finite number, an input where the function has no derivative; "
                               f"got {_type_name(value)} {value!r}. Remove it or write the point, e.g. 0.0.")
    return number


def _check(reader: _Reader, index: int, raw: Any) -> CheckConfig:
    key = f"checks[{index}]"
    where = f"{reader.path}:{reader.lines.get(key, 1)}"
    if isinstance(raw, str):
        return CheckConfig(spec=_str(reader, raw, key), name=raw, expect="pass", options={}, where=where)
    raw = _keys(reader, raw, key, CHECK_KEYS, "a check (or write the spec as a plain string)")
    if "spec" not in raw:
        raise reader.fail(key, "missing 'spec', e.g. {spec: softmax+mse}")
    spec = _str(reader, raw["spec"], f"{key}.spec")
    return CheckConfig(
        spec=spec, name=_str(reader, raw.get("name", spec), f"{key}.name"),
        expect=_str(reader, raw.get("expect", "pass"), f"{key}.expect", ("pass", "fail")),
        options=_options(reader, {k: v for k, v in raw.items() if k in OPTION_KEYS + ("input", "target")}, key),
        where=where,
    )


def _malformed(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    """The YAML parser's complaint as a config error naming the line, with what to do."""
    mark = getattr(exc, "problem_mark", None)
    position = getattr(exc, "position", None)  # a ReaderError (a forbidden character) has no mark
    line = f"{mark.line + 1}" if mark is not None else (
        f"{text.count(chr(10), 0, position) + 1}" if isinstance(position, int) else "?")
    problem = getattr(exc, "problem", None) or str(exc)
    if "another document" in problem:
        return ConfigError(f"{path}:{line}: the file holds a second YAML document (after '---'); a config is one "
                           f"document. Remove the second one, or the '---' line that starts it.")
    if "'\\t'" in problem:
        return ConfigError(f"{path}:{line}: malformed YAML: a tab character; YAML indents with spaces only. "
                           f"Replace the tabs with spaces.")
    context = getattr(exc, "context", None)
    problem = f"{context}, {problem}" if context and isinstance(exc, yaml.MarkedYAMLError) else problem
    return ConfigError(f"{path}:{line}: malformed YAML: {problem}. Fix the syntax "
                       f"(indentation, a missing ':' or an unclosed bracket).")


def text_line(data: bytes, offset: int) -> int:
    """1-based line number of byte ``offset``."""
    return data.count(b"\n", 0, offset) + 1


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, at most MAX_BYTES; a FIFO that nobody writes reads as empty instead of blocking."""
    try:
        # O_NONBLOCK only for the open: on a FIFO with no writer a plain open waits for ever,
        # while a read then sees end-of-file at once. Reads block as usual afterwards.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"Config file '{path}' does not exist. Give the path to a YAML file "
                          f"(see configs/example.yaml).") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file '{path}': {exc.strerror}. Give the path to a YAML "
                          f"file.") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise ConfigError(f"Config file '{path}' is a folder. Give the path to a YAML file in it "
                              f"(e.g. {path / 'gradcheck.yaml'}).")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"Cannot read config file '{path}': {exc.strerror}. Give the path to a YAML "
                          f"file.") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: the config is larger than {MAX_BYTES // 2**20} MB; a real suite takes a few "
                          f"kilobytes. Check that this is the config file (not a data file), or split it.")
    return data


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; any problem raises :class:`ConfigError`."""
    if not str(path).strip():
        raise ConfigError(f"gradcheck ci needs the path to a YAML config file; got {str(path)!r}.")
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = text_line(data, exc.start)
        raise ConfigError(f"{path}:{bad_line}: the config is not UTF-8 text (byte {data[exc.start]:#x} at "
                          f"offset {exc.start}); save it as UTF-8.") from None
    reader = _Reader(path)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except _TooDeep as exc:
        raise _too_deep(path, exc.line) from None
    except RecursionError:
        # Not expected below MAX_DEPTH, but the stack may already be deep when load_config is called.
        raise _too_deep(path, "?") from None
    except yaml.YAMLError as exc:
        raise _malformed(path, text, exc) from None
    if node is None:
        raise ConfigError(f"{path}:1: the config is empty; it needs at least 'version: 1' and 'checks:'.")
    raw = _keys(reader, reader.value(node, ""), "", TOP_KEYS, "the config's top level")
    if raw.get("version") != 1 or isinstance(raw.get("version"), bool):
        got = raw.get("version", "nothing")
        raise reader.fail("version", f"expected 'version: 1'; got {got!r}. Put 'version: 1' at the top.")
    defaults = _options(reader, _keys(reader, raw.get("defaults", {}), "defaults", OPTION_KEYS,
                                      "defaults"), "defaults")
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list):
        raise reader.fail("plugins", f"expected a list of plugin files or modules; got {_type_name(plugins)}")
    plugin_list = tuple(_str(reader, p, f"plugins[{i}]") for i, p in enumerate(plugins))
    functions_raw = raw.get("functions", {})
    if not isinstance(functions_raw, dict):
        raise reader.fail("functions", f"expected a mapping name -> function; got {_type_name(functions_raw)}")
    functions = tuple(_function(reader, str(n), v) for n, v in functions_raw.items())
    checks_raw = raw.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        got = "nothing" if "checks" not in raw else f"{_type_name(checks_raw)} {checks_raw!r}"[:200]
        raise reader.fail("checks", f"expected a non-empty list of checks, e.g. '- softmax+mse'; got {got}")
    checks = tuple(_check(reader, i, c) for i, c in enumerate(checks_raw))
    return Config(path=path, defaults=defaults, plugins=plugin_list, functions=functions, checks=checks,
                  lines=dict(reader.lines))
