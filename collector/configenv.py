"""Reading config text: YAML with duplicate keys refused, and the OpenTelemetry Collector's value
references: `${env:NAME}`, `${NAME}` (both with `:-default`) and `${file:PATH}` — the only place
agentledger reads its environment mapping or a file a config points at.

`collector/config.py` calls `load_yaml` then `expand_env`; the result goes to `parse_dataclass`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import yaml

from collector.configparse import ConfigError, ConfigIssue, EnvStr, Expanded, describe, join


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a repeated key, which PyYAML would silently resolve to the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {describe(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, source: str) -> object:
    """Parse one YAML document; a syntax error becomes a ConfigError at `source` with its line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # Only PyYAML's problem text: its str() quotes the offending line, which may hold a key.
        problem = e.problem or e.context or "syntax error"
        raise ConfigError([ConfigIssue(source, f"invalid YAML{where}: {problem}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([ConfigIssue(source, f"invalid YAML: {e}")]) from None


# --- ${env:…} expansion -------------------------------------------------------------------------


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(
    r"\$\$\{"
    r"|\$\{(?:env:)?(" + _NAME + r")(?::-([^}]*))?\}"
    r"|\$\{file:([^}]+)\}"
    r"|\$\{"
)
_WHOLE = re.compile(r"\$\{(?:(?:env:)?" + _NAME + r"(?::-[^}]*)?|file:[^}]+)\}")
FileReader = Callable[[str], str]


def read_secret_file(path: str) -> str:
    """A `${file:PATH}` value: the file's text without its final line break (secret files made
    with `echo` end in one; the value never includes it)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text.removesuffix("\n").removesuffix("\r")


def expand_env(
    raw: object,
    env: Mapping[str, str],
    path: str,
    errors: list[ConfigIssue],
    read_file: FileReader = read_secret_file,
) -> object:
    """Expand `${env:NAME}`, `${NAME}` (each optionally `:-default`) and `${file:PATH}` in every
    string value (not in keys), as the OpenTelemetry Collector does.

    `$${` is a literal `${`. A default applies only when NAME is unset (set-but-empty stays
    empty). A file reference is the file's text (container secrets are files); an unreadable
    file is an error that names the file, never its content. Expanded text is not expanded again.
    """
    if isinstance(raw, str):
        return _expand_str(raw, env, path, errors, read_file)
    if isinstance(raw, list):
        return [expand_env(v, env, f"{path}[{i}]", errors, read_file) for i, v in enumerate(raw)]
    if isinstance(raw, dict):
        return {
            k: expand_env(v, env, join(path, str(k)), errors, read_file) for k, v in raw.items()
        }
    return raw


def _expand_str(
    text: str,
    env: Mapping[str, str],
    path: str,
    errors: list[ConfigIssue],
    read_file: FileReader,
) -> str:
    if "${" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        token, name, default, file = match.group(0), match.group(1), match.group(2), match.group(3)
        if token == "$${":
            return "${"
        if file is not None:
            try:
                return read_file(file.strip())
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
                errors.append(ConfigIssue(path, f"cannot read ${{file:{file}}}: {reason}"))
                return ""
        if name is None:
            errors.append(
                ConfigIssue(
                    path,
                    "invalid '${' reference (expected ${env:NAME}, ${NAME}, ${env:NAME:-default} "
                    "or ${file:PATH}; write $${ for a literal '${')",
                )
            )
            return token
        if default is not None and "${" in default:
            errors.append(ConfigIssue(path, f"nested '${{' in the default of ${{env:{name}}}"))
        if name in env:
            return env[name]
        if default is not None:
            return default
        errors.append(
            ConfigIssue(
                path,
                f"environment variable {name} is not set and has no default "
                f"(write ${{env:{name}:-value}} to give one)",
            )
        )
        return ""

    expanded = _TOKEN.sub(substitute, text)
    return EnvStr(expanded) if _WHOLE.fullmatch(text) else Expanded(expanded)


# --- typed parsing ------------------------------------------------------------------------------
