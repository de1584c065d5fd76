"""Loading rule files: YAML with line numbers, validated into a :class:`RuleSet`.

A rule author's mistake must fail at load time and say exactly where:
``rules/thresholds.yaml:42: rule discharge_temp_high: warning: must be below critical (got 360
>= 350)``. The YAML is composed into nodes first (which carry their line), then constructed, so
every pydantic error location can be mapped back to the line of the offending key.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from altaviz.core.catalog import Catalog, builtin_catalog
from altaviz.core.errors import RuleError
from rules.schema import (
    OVERRIDABLE_KEYS,
    RULE_CLASSES,
    NoDataRule,
    Problem,
    Rule,
    RuleSet,
    check_rule,
)

DEFAULT_RULES = Path(__file__).resolve().parent / "thresholds.yaml"
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class RuleProblem:
    """One problem in a rule file, located to the line."""

    file: str
    line: int
    rule_id: str | None
    key_path: str
    message: str

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}"]
        if self.rule_id:
            parts.append(f"rule {self.rule_id}")
        if self.key_path:
            parts.append(self.key_path)
        parts.append(self.message)
        return ": ".join(parts)


class RuleFileError(RuleError):
    """A rule file is invalid; every problem is listed with its file and line."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line))
        lines = [str(p) for p in self.problems]
        more = f" (and {len(lines) - 1} more problem(s):\n  " + "\n  ".join(lines[1:]) + ")" \
            if len(lines) > 1 else ""
        super().__init__(lines[0] + more)


def format_path(path: Path_) -> str:
    """``("applies_to", "models", 0)`` -> ``applies_to.models[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class _Doc:
    """A parsed YAML document: its data plus the line of every key path."""

    def __init__(self, text: str, file: str, catalog: Catalog | None = None) -> None:
        self.file = file
        self.catalog = catalog or builtin_catalog()
        self.key_lines: dict[Path_, int] = {}
        self.problems: list[RuleProblem] = []
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                if node is not None:  # index first: constructing flattens '<<' merges in place
                    self._index(node, ())
                self.data: Any = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            raise RuleFileError([RuleProblem(file, line, None, "",
                                             f"invalid YAML: {exc.problem or exc}")]) from None
        except yaml.YAMLError as exc:
            raise RuleFileError([RuleProblem(file, 1, None, "", f"invalid YAML: {exc}")]) from None

    def _index(self, node: yaml.Node, path: Path_) -> None:
        self.key_lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                if key == "<<":
                    continue
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.problems.append(RuleProblem(
                        self.file, line, None, format_path((*path, key)),
                        f"duplicate key (first at line {seen[key]})"))
                    continue
                seen[key] = line
                self.key_lines[(*path, key)] = line
                self._index(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, (*path, i))

    def line(self, path: Path_) -> int:
        """Line of the deepest known prefix of ``path``."""
        p = tuple(path)
        while p and p not in self.key_lines:
            p = p[:-1]
        return self.key_lines.get(p, 1)


# --- pydantic errors -> messages ---------------------------------------------------------------

def _unwrap(tp: Any, part: str | int) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0], part)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            inner = _unwrap(arg, part)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return tp
    return tp


def _dict_value(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is dict:
        return typing.get_args(tp)[1]
    return None


def _resolve(cls: type[BaseModel], path: Path_) -> type[BaseModel] | None:
    current: Any = cls
    i = 0
    while i < len(path):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(path[i]))
        if field is None:
            return None
        tp = field.annotation
        dv = _dict_value(tp)
        if dv is not None:
            i += 1  # skip the dict key
            tp = dv
        current = _unwrap(tp, path[i] if i < len(path) else "")
        i += 1
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_EXPECTED = {"int": "an integer", "float": "a number", "string": "a string",
             "bool": "true or false", "tuple": "a list", "list": "a list",
             "dict": "a mapping", "model": "a mapping"}


def _message(err: Any, cls: type[BaseModel], loc: Path_) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        owner = _resolve(cls, loc[:-1]) if loc[:-1] else cls
        allowed = f" (expected one of: {', '.join(owner.model_fields)})" if owner else ""
        return f"unknown key{allowed}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"expected one of {err['ctx']['expected']} (got {got!r})"
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        base = kind.removesuffix("_type").removesuffix("_parsing")
        expected = _EXPECTED.get(base, "a " + base.replace("_", " "))
        return f"expected {expected} (got {type(got).__name__} {got!r})"
    return f"{err['msg']} (got {got!r})"


def _validate_rule(doc: _Doc, raw: Any, base: Path_, rule_id: str | None,
                   key_map: Any = None) -> Rule | None:
    """Validate one rule mapping; append located problems to ``doc.problems``.

    ``key_map(loc) -> path`` maps a location inside the rule to a document path (the default
    is ``base + loc``); org overrides use it to point into the override file.
    """
    def where(loc: Path_) -> Path_:
        return key_map(loc) if key_map is not None else (*base, *loc)

    if not isinstance(raw, dict):
        doc.problems.append(RuleProblem(doc.file, doc.line(base), rule_id, "",
                                        f"expected a mapping (a rule), got {type(raw).__name__}"))
        return None
    kind = raw.get("kind")
    cls = RULE_CLASSES.get(kind) if isinstance(kind, str) else None
    kind_ok = cls is not None
    if cls is None:
        doc.problems.append(RuleProblem(
            doc.file, doc.line(where(("kind",))), rule_id, "kind",
            f"expected one of {', '.join(repr(k) for k in RULE_CLASSES)} (got {kind!r})"))
        # go on as the kind the other keys suggest, so every other error shows now too
        guess = "no_data" if "warning_after_hours" in raw else "threshold"
        cls = RULE_CLASSES[guess]
        raw = {**raw, "kind": guess}
    raw, from_catalog = _with_catalog_limits(doc, raw, cls, rule_id)

    def problem(loc: Path_, message: str) -> RuleProblem:
        if len(loc) >= 2 and loc[0] == "models" and loc[1] in from_catalog:
            # a limit of the model catalog: point at the catalog's line
            cpath = ("compressors", loc[1], "limits", str(rule_id), *loc[2:])
            file, line = doc.catalog.locate(cpath)
            return RuleProblem(file, line, rule_id, format_path(cpath),
                               f"{message} (a limit of the model catalog for rule {rule_id})")
        return RuleProblem(doc.file, doc.line(where(loc)), rule_id, format_path(loc), message)

    context = {"models": doc.catalog.model_names}
    try:
        rule = cls.model_validate(raw, context=context)
    except ValidationError as exc:
        failed: set[str | int] = set()
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p != "[key]")
            doc.problems.append(problem(loc, _message(err, cls, loc)))
            if loc:
                failed.add(loc[0])
        # The cross-field checks of the keys that are valid, at once rather than after the
        # author fixed the rest: without the failing keys (when none is required), validate
        # again and keep what the checks say about the remaining keys.
        rest = {k: v for k, v in raw.items() if k not in failed}
        try:
            partial = cls.model_validate(rest, context=context)
        except ValidationError:
            return None
        for loc, msg in check_rule(partial):
            if loc and loc[0] not in failed:
                doc.problems.append(problem(loc, msg))
        return None
    problems: list[Problem] = check_rule(rule)
    for loc, msg in problems:
        doc.problems.append(problem(loc, msg))
    return None if problems or not kind_ok else rule


def _with_catalog_limits(doc: _Doc, raw: dict[str, Any], cls: type[BaseModel],
                         rule_id: str | None) -> tuple[dict[str, Any], set[str]]:
    """The rule with the model catalog's limits for it added as per-model overrides (a
    model the rule already overrides, or that its ``applies_to.models`` leaves out, keeps
    the rule's own), and the models added."""
    limits = doc.catalog.limits(rule_id) if rule_id is not None else {}
    if not limits:
        return raw, set()
    if issubclass(cls, NoDataRule):
        for model in limits:
            file, line = doc.catalog.locate(("compressors", model, "limits", str(rule_id)))
            doc.problems.append(RuleProblem(
                file, line, rule_id, f"compressors.{model}.limits.{rule_id}",
                f"a {raw.get('kind')} rule has no thresholds to set per model"))
        return raw, set()
    models = raw.get("models", {})
    applies = raw.get("applies_to")
    scope = applies.get("models") if isinstance(applies, dict) else None
    if not isinstance(models, dict) or (scope is not None and not isinstance(scope, list)):
        return raw, set()   # the rule's own validation reports it
    added = {m: lim.model_dump(exclude_none=True) for m, lim in limits.items()
             if m not in models and (scope is None or m in scope)}
    return ({**raw, "models": {**models, **added}}, set(added)) if added else (raw, set())


def _read(path: Path | str, text: str | None) -> tuple[str, str]:
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RuleFileError([RuleProblem(name, 0, None, "",
                                             f"cannot read: {exc.strerror}")]) from None
    return name, text


def _top_level(doc: _Doc, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(doc.data, dict):
        doc.problems.append(RuleProblem(doc.file, 1, None, "",
                                        "expected a mapping with a 'rules:' list"))
        return {}
    for key in doc.data:
        if key not in allowed:
            doc.problems.append(RuleProblem(
                doc.file, doc.line((key,)), None, str(key),
                f"unknown key (expected one of: {', '.join(sorted(allowed))})"))
    for key in sorted(required - set(doc.data)):
        doc.problems.append(RuleProblem(doc.file, 1, None, key, "required key is missing"))
    return doc.data


def _rules(doc: _Doc, raw_rules: Any, seen: dict[str, int]) -> list[Rule]:
    if not isinstance(raw_rules, list):
        doc.problems.append(RuleProblem(doc.file, doc.line(("rules",)), None, "rules",
                                        "expected a list of rules"))
        return []
    out: list[Rule] = []
    for i, raw in enumerate(raw_rules):
        rid = raw.get("id") if isinstance(raw, dict) else None
        rule_id = rid if isinstance(rid, str) else None
        if rule_id is not None:
            line = doc.line(("rules", i, "id"))
            if rule_id in seen:
                doc.problems.append(RuleProblem(
                    doc.file, line, rule_id, "id",
                    f"duplicate rule id (first defined at line {seen[rule_id]})"))
                continue
            seen[rule_id] = line
        rule = _validate_rule(doc, raw, ("rules", i), rule_id)
        if rule is not None:
            out.append(rule)
    return out


def _check_inhibits(doc: _Doc, rules: list[Rule], raw_rules: Any, ids: set[str]) -> None:
    """``inhibits:`` names rules of the same set, never the rule itself."""
    index = {r["id"]: i for i, r in enumerate(raw_rules)
             if isinstance(r, dict) and isinstance(r.get("id"), str)} \
        if isinstance(raw_rules, list) else {}
    for rule in rules:
        for j, target in enumerate(rule.inhibits):
            path: Path_ = ("rules", index.get(rule.id, 0), "inhibits", j)
            if target == rule.id:
                message = "a rule cannot inhibit itself"
            elif target not in ids:
                message = f"unknown rule {target!r} (no rule with this id in the file)"
            else:
                continue
            doc.problems.append(RuleProblem(doc.file, doc.line(path), rule.id,
                                            f"inhibits.{j}", message))


def load_rule_set(path: Path | str = DEFAULT_RULES, *, text: str | None = None,
                  catalog: Catalog | None = None) -> RuleSet:
    """Load and validate a rule file (the default set or any complete set).

    File format: ``format: 1`` (optional) and ``rules:``, a list of rules (see rules/schema.py).
    ``catalog``: the models rules may name and whose limits they take (default: the
    built-in catalog; pass ``settings.catalog``).

    Raises:
        RuleFileError: with every problem found, each naming file, line, rule and key path.
    """
    name, text = _read(path, text)
    doc = _Doc(text, name, catalog)
    data = _top_level(doc, {"format", "rules"}, {"rules"})
    if data.get("format", 1) != 1:
        doc.problems.append(RuleProblem(name, doc.line(("format",)), None, "format",
                                        f"expected 1 (got {data.get('format')!r})"))
    rules = _rules(doc, data.get("rules", []), {}) if data else []
    raw_rules = data.get("rules")
    ids = {r["id"] for r in raw_rules if isinstance(r, dict) and isinstance(r.get("id"), str)} \
        if isinstance(raw_rules, list) else set()
    _check_inhibits(doc, rules, raw_rules, ids)
    for model, entry in doc.catalog.compressors.items():
        for rule_id in entry.limits:
            if rule_id not in ids:
                file, line = doc.catalog.locate(("compressors", model, "limits", rule_id))
                doc.problems.append(RuleProblem(file, line, rule_id,
                                                f"compressors.{model}.limits.{rule_id}",
                                                f"no such rule in {name}"))
    if doc.problems:
        raise RuleFileError(doc.problems)
    return RuleSet(org_id=None, source=name, rules=tuple(rules))


def load_org_rule_set(path: Path | str, base: RuleSet, *, text: str | None = None,
                      catalog: Catalog | None = None) -> RuleSet:
    """Apply an organization's override file to ``base`` (normally the default set).

    File format::

        org: acme
        overrides:                 # change named rules for this org's units only
          discharge_temp_high:
            warning: 320           # replaces the key; 'models' merges per model
        disable: [vibration_skid_high]
        rules: []                  # optional org-only rules, same format as the default set

    Merged rules are validated exactly like rules of a complete file (against ``catalog``, as
    :func:`load_rule_set`), with errors located in the override file.

    Raises:
        RuleFileError: with every problem, located in the override file.
    """
    name, text = _read(path, text)
    doc = _Doc(text, name, catalog)
    data = _top_level(doc, {"org", "overrides", "disable", "rules"}, {"org"})
    org = data.get("org")
    if data and not (isinstance(org, str) and org):
        doc.problems.append(RuleProblem(name, doc.line(("org",)), None, "org",
                                        f"expected an organization id (got {org!r})"))
    by_id = {r.id: r for r in base.rules}
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        doc.problems.append(RuleProblem(name, doc.line(("overrides",)), None, "overrides",
                                        "expected a mapping of rule id to changed keys"))
        overrides = {}
    merged: dict[str, Rule] = {}
    for rule_id, changes in overrides.items():
        opath: Path_ = ("overrides", rule_id)
        if rule_id not in by_id:
            doc.problems.append(RuleProblem(
                name, doc.line(opath), str(rule_id), "",
                f"no such rule in {base.source} (overrides must name an existing rule id)"))
            continue
        if not isinstance(changes, dict):
            doc.problems.append(RuleProblem(name, doc.line(opath), rule_id, "",
                                            "expected a mapping of keys to change"))
            continue
        bad = [k for k in changes if k not in OVERRIDABLE_KEYS]
        for k in bad:
            doc.problems.append(RuleProblem(
                name, doc.line((*opath, k)), rule_id, str(k),
                f"cannot be overridden (overridable: {', '.join(sorted(OVERRIDABLE_KEYS))})"))
        if bad:
            continue
        raw = by_id[rule_id].model_dump(mode="json", exclude_none=True)
        for key, value in changes.items():
            if key == "models" and isinstance(value, dict) and isinstance(raw.get("models"), dict):
                raw["models"] = {**raw["models"], **value}
            else:
                raw[key] = value

        def key_map(loc: Path_, opath: Path_ = opath, changes: dict[str, Any] = changes) -> Path_:
            return (*opath, *loc) if loc and loc[0] in changes else opath

        rule = _validate_rule(doc, raw, opath, rule_id, key_map)
        if rule is not None:
            merged[rule_id] = rule
    disable = data.get("disable") or []
    if not isinstance(disable, list):
        doc.problems.append(RuleProblem(name, doc.line(("disable",)), None, "disable",
                                        "expected a list of rule ids"))
        disable = []
    for i, rule_id in enumerate(disable):
        if not isinstance(rule_id, str):
            doc.problems.append(RuleProblem(name, doc.line(("disable", i)), None,
                                            f"disable[{i}]",
                                            f"expected a rule id (text), got "
                                            f"{type(rule_id).__name__}"))
        elif rule_id not in by_id:
            doc.problems.append(RuleProblem(name, doc.line(("disable", i)), str(rule_id),
                                            f"disable[{i}]", "no such rule"))
    seen = {r.id: 0 for r in base.rules}
    extra = _rules(doc, data["rules"], seen) if data.get("rules") is not None else []
    for p in doc.problems:
        if p.message.startswith("duplicate rule id (first defined at line 0)"):
            object.__setattr__(p, "message", f"duplicate rule id (already in {base.source})")
    if doc.problems:
        raise RuleFileError(doc.problems)
    rules: list[Rule] = []
    for r in base.rules:
        rule = merged.get(r.id, r)
        if r.id in {d for d in disable if isinstance(d, str)}:
            rule = rule.model_copy(update={"enabled": False})
        rules.append(rule)
    return RuleSet(org_id=str(org), source=f"{base.source} + {name}", rules=(*rules, *extra))


def check_file(path: Path | str, base: RuleSet | None = None,
               catalog: Catalog | None = None) -> RuleSet:
    """Load a complete rule file or, if it has ``org:``, an override file against ``base``
    (default: the default set), against ``catalog``. Used by ``altaviz rules check``."""
    name, text = _read(path, None)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and "org" in data:
        return load_org_rule_set(name, base or load_rule_set(catalog=catalog), text=text,
                                 catalog=catalog)
    return load_rule_set(name, text=text, catalog=catalog)
