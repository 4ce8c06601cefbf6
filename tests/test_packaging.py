"""Install metadata: every third-party module kseg and its tools import is a pinned runtime
requirement (or an optional import with a clear error), and every console script names a
callable that exists."""

import ast
import importlib
import importlib.metadata
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Imported only inside a try/except with an explanatory error (torch: .pth checkpoints and
# bfloat16 safetensors; keras_hub: the peer model of tools/benchmark.py, dev extra).
OPTIONAL = {"torch", "keras_hub"}


def _imported_modules(folder):
    found = {}
    for dirpath, _, names in os.walk(os.path.join(REPO, folder)):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    found.setdefault(top, os.path.relpath(path, REPO))
    return found


def _requirements():
    with open(os.path.join(REPO, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return {re.split(r"[=<>!~ ]", line)[0].lower().replace("_", "-") for line in lines if line}


def test_every_runtime_import_is_a_requirement():
    required = _requirements()
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for folder in ("kseg", "tools"):
        for module, where in sorted(_imported_modules(folder).items()):
            if module in sys.stdlib_module_names or module in OPTIONAL or module in ("kseg", "__future__"):
                continue
            dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            if not dists & required:
                missing.append(f"{module} ({where}; distribution {sorted(dists)})")
    assert not missing, "imported but not in requirements.txt: " + ", ".join(missing)


def test_console_scripts_name_existing_callables():
    with open(os.path.join(REPO, "setup.py")) as f:
        scripts = dict(re.findall(r'"(kseg-[a-z]+)=([\w.]+:\w+)"', f.read()))
    assert set(scripts) >= {"kseg-train", "kseg-evaluate", "kseg-predict", "kseg-export"}, scripts
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
