"""The layering rules of STYLE.md and docs/layout.md, checked with `ast` over the source tree.

Only the registry imports exporters/; a feature package imports only the processors it runs;
model.py imports nothing of ours; processors are pure (no store, no network, no files).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("collector", "processors", "exporters")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


# The processor families each part of collector/ runs (and may import): a feature imports its
# processor instead of a stand-in Protocol; the registry builds every component from YAML, and
# its worker half (chains.py) the ingest processors a decode worker runs; service.py, the
# composition root, builds the run assembler and the output-rule engine.
RUNS = {
    "collector/registry.py": {"processors", "exporters"},
    "collector/chains.py": {"processors.cost", "processors.normalise", "processors.redact"},
    "collector/service.py": {"processors.output_rules", "processors.runs"},
    "collector/runs": {"processors.runs"},
    "collector/alerts": {"processors.alerts"},
    "collector/evals": {"processors.output_rules", "processors.redact"},
    "collector/mcp": {"processors.redact"},
    "collector/roi": {"processors.redact"},
}


def _allowed(path: Path) -> set[str]:
    rel = path.relative_to(ROOT).as_posix()
    return RUNS.get(rel) or RUNS.get(rel.rsplit("/", 1)[0]) or set()


def test_only_the_registry_imports_exporters_and_features_their_processors() -> None:
    offenders = []
    for path in _modules("collector"):
        allowed = _allowed(path)
        for name in _imports(path):
            if name.split(".")[0] not in ("processors", "exporters"):
                continue
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_model_imports_nothing_of_ours() -> None:
    ours = {n for n in _imports(ROOT / "collector" / "model.py") if n.split(".")[0] in OURS}
    assert ours == set()


def test_processors_are_pure() -> None:
    allowed = {
        "collector.model",
        "collector.store.schema",
        "collector.prices.book",
        "collector.prices.pricing",  # the pure lookup the cost processor is handed
    }
    forbidden_stdlib = {
        "socket",
        "urllib",
        "http",
        "requests",
        "httpx",
        "duckdb",
        "os",
        "subprocess",
    }
    offenders = []
    for path in _modules("processors"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "collector" and name not in allowed:
                offenders.append(f"{path.name} imports {name}")
            if top == "exporters" or top in forbidden_stdlib:
                offenders.append(f"{path.name} imports {name}")
    assert offenders == []


# What exporters may import of collector/ (STYLE: model.py, the vocabulary), and the few
# definitions they are built on: the store exporter appends to the store's writer and the OTLP
# forwarder reads what it committed (its columns and data folder); component configs are parsed
# with the config helpers. Anything else (a feature, the outbound client, receivers) is not an
# exporter's business: notification channels live in collector/outbound/notify.py.
EXPORTERS_MAY_IMPORT = {
    "collector.model",
    "collector.store.writer",
    "collector.store.schema",
    "collector.configparse",
}


def test_exporters_import_only_the_vocabulary_and_the_store() -> None:
    offenders = []
    for path in _modules("exporters"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "processors" or (top == "collector" and name not in EXPORTERS_MAY_IMPORT):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


# Packages of collector/ that every feature may import: the endpoint wrapper (api/), the store,
# SSRF-guarded HTTP and the outbox (outbound/), runs and the change feed (runs/), and auth/, which
# every API authenticates through. A feature package imports no other feature package: what it
# needs of another's data it reads from the store's tables. The web UI is the exception by
# design: it is another face of the features and writes through their own code (docs/ui.md).
# prices/ is reference data as well (the price book and the FX table, which ROI converts
# with), importing no feature itself, as the task-type catalogue would be. cluster/ is how
# nodes of a shared store coordinate (leases, shared rate limits, idempotency claims): the
# APIs take its limiters and claims, and it imports no feature either.
SHARED = {"api", "store", "outbound", "runs", "auth", "prices", "cluster"}
FACES = {"ui"}


def _package_of(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "collector" or len(parts) < 2:
        return None
    return parts[1] if (ROOT / "collector" / parts[1] / "__init__.py").exists() else None


def test_feature_packages_import_each_other_only_through_shared_packages() -> None:
    offenders = []
    for path in _modules("collector"):
        rel = path.relative_to(ROOT)
        if len(rel.parts) < 3:
            continue  # the core at collector/'s root (config, registry, service) composes features
        own = rel.parts[1]
        if own in FACES:
            continue
        for name in _imports(path):
            other = _package_of(name)
            if other is not None and other != own and other not in SHARED:
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_no_proto_python_package() -> None:
    # A top-level `proto` package would shadow proto-plus's `proto` module.
    assert not (ROOT / "proto" / "__init__.py").exists()
    assert list((ROOT / "proto").glob("*.py")) == []


def test_every_module_starts_with_a_docstring() -> None:
    missing = []
    for package in (*OURS, "tests", "bench"):
        for path in _modules(package):
            if path.stat().st_size == 0:
                continue
            doc = ast.get_docstring(ast.parse(path.read_text()))
            if not doc or len(doc.strip()) < 20:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_no_module_reads_a_file_beside_its_source() -> None:
    # An installed wheel has no config/ beside collector/: data comes from the installed package
    # (collector/resources.py). Another package's `__file__` (an extension's folder) is fine.
    offenders = []
    for package in OURS:
        for path in _modules(package):
            tree = ast.parse(path.read_text(), str(path))
            if any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(tree)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# Two classes of one name are either one concept written twice or two concepts that need their
# own names. The one left: `Window`, a time range in `collector/store/query.py` and a snapshot
# range in `collector/runs/feed.py` (whose owner renames it).
KNOWN_TWICE = {"Window"}


def test_no_class_name_is_defined_twice() -> None:
    homes: dict[str, list[str]] = {}
    for package in OURS:
        for path in _modules(package):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    homes.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    twice = {name: where for name, where in homes.items() if len(where) > 1}
    assert set(twice) <= KNOWN_TWICE, {k: v for k, v in twice.items() if k not in KNOWN_TWICE}
