"""YAML as the kit's configs need it: UTF-8 text, no key given twice, `1e-3` read as a number.

PyYAML alone keeps the last of two equal keys (a second `train:` section silently replaces the
first) and, following YAML 1.1, reads `1e-3` as a string; both turn a typo into a run with other
settings than the file shows. Every problem is one KitError naming the file and the line.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from core.errors import fail, yaml_error_text


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice and reads YAML 1.2 floats (`1e-3`)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first
                except TypeError:  # an unhashable key: the constructor below says so
                    continue
                if seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first[key] + 1})", key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


# YAML 1.2's floats without a dot (1e-3, 5E+2), which YAML 1.1 leaves as strings
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, where: str) -> Any:
    """`text` parsed by ConfigLoader; `where` names it in the one-line error."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as err:
        fail(f"{where}: not valid YAML ({yaml_error_text(err)})")


def read_yaml(path: str | Path, what: str) -> Any:
    """The YAML file `path` (a `what`, for the messages): missing, a folder, not UTF-8 or not valid
    YAML are one-line errors."""
    path = Path(path)
    if path.is_dir():
        fail(f"{path}: {what} is a folder, not a file")
    if not path.is_file():
        fail(f"{path}: {what} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        fail(f"{path}: {what} is not UTF-8 text (byte offset {err.start})")
    except OSError as err:
        fail(f"{path}: cannot read {what}: {err.strerror or err}")
    return parse_yaml(text, str(path))
