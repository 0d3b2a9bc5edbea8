"""Check a manifest against the model classes of an OpenAPI-generated SDK, strictly.

The Kubeflow training SDK (``KubeflowOrgV1TFJob`` ...), the KServe SDK (``V1beta1InferenceService``
...) and the Kubernetes client (``V1PodTemplateSpec`` ...) are generated from their APIs' OpenAPI
schemas: each model class lists its fields (``attribute_map``: Python name -> JSON key) and their types
(``openapi_types``: ``str``, ``int``, ``list[V1Container]``, ``dict(str, str)``, another model). The
SDKs' own deserialiser silently drops fields it does not know, which is exactly the mistake a hand-written
manifest makes (``replica:`` for ``replicas:``), so this walks the document itself and refuses unknown
fields and values of the wrong type, and builds each model object so that the classes' own checks
(required fields, allowed values) run too.

A ``Models`` resolves a type name to its (openapi_types, attribute_map, class or None); the classes can
come from imported SDK modules or from a table extracted from an SDK that cannot be installed here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from types import ModuleType

PRIMITIVES: dict[str, Callable[[object], bool]] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "date": lambda v: isinstance(v, str),
    "datetime": lambda v: isinstance(v, str),
    "object": lambda v: True,  # IntOrString, free-form
    "ResourceQuantity": lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
}
_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(([^,]+), (.+)\)$")


class SchemaError(ValueError):
    """The document does not fit the models: ``path`` says where."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<root>'}: {message}")
        self.path = path


class Models:
    """Type name -> (openapi_types, attribute_map, class or None), searched in order."""

    def __init__(self, modules: Iterable[ModuleType] = (), tables: dict[str, dict] | None = None) -> None:
        self.modules = list(modules)
        self.tables = tables or {}

    def lookup(self, name: str) -> tuple[dict[str, str], dict[str, str], type | None]:
        if name in self.tables:
            entry = self.tables[name]
            return entry["openapi_types"], entry["attribute_map"], None
        for module in self.modules:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and hasattr(cls, "openapi_types"):
                return cls.openapi_types, cls.attribute_map, cls
        raise KeyError(name)


def check(document: object, type_name: str, models: Models, path: str = "") -> object:
    """The document as model objects (or plain values); SchemaError at the first thing that does not fit."""
    if type_name in PRIMITIVES:
        if not PRIMITIVES[type_name](document):
            raise SchemaError(path, f"expected {type_name}, got {type(document).__name__} {document!r:.60}")
        return document
    if match := _LIST.match(type_name):
        if not isinstance(document, list):
            raise SchemaError(path, f"expected a list ({type_name}), got {type(document).__name__}")
        return [check(item, match.group(1), models, f"{path}[{i}]") for i, item in enumerate(document)]
    if match := _DICT.match(type_name):
        if not isinstance(document, dict):
            raise SchemaError(path, f"expected a map ({type_name}), got {type(document).__name__}")
        return {key: check(value, match.group(2), models, f"{path}.{key}") for key, value in document.items()}
    try:
        types, attributes, cls = models.lookup(type_name)
    except KeyError:
        raise SchemaError(path, f"no model {type_name} in the SDKs given") from None
    if not isinstance(document, dict):
        raise SchemaError(path, f"expected an object ({type_name}), got {type(document).__name__}")
    by_json = {json_key: name for name, json_key in attributes.items()}
    values = {}
    for key, value in document.items():
        if key not in by_json:
            raise SchemaError(f"{path}.{key}".lstrip("."), f"unknown field of {type_name}")
        name = by_json[key]
        values[name] = check(value, types[name], models, f"{path}.{key}".lstrip("."))
    if cls is None:  # a table: its required fields are listed
        missing = [attributes[name] for name in models.tables[type_name].get("required", []) if name not in values]
        if missing:
            raise SchemaError(path, f"{type_name}: required fields missing: {missing}")
        return values
    try:
        return cls(**values)  # the class's own checks: required fields, allowed values
    except (ValueError, TypeError) as exc:
        raise SchemaError(path, f"{type_name}: {exc}") from None
