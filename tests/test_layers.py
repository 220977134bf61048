"""The house rules of the package: subpackages stacked in lifecycle order, imports pointing down only, no cycles.

Every import of a medwb module by another is read from the source (function-level imports included) and must
point down: to a lower layer in `LAYERS`, or, inside one subpackage, to a module of an earlier notebook (the order
of `nbs/`). A package `__init__` may import its own submodules (it re-exports them). With imports that only point
down there can be no cycle; the shared cycle finder runs as well, and a planted cycle must make both fail.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# lower layers first; a module may import from its own layer or the ones before it. Layers still to come keep their place.
LAYERS = ["core", "data", "quality", "privacy", "models", "evaluation", "imaging", "explain", "robustness", "scenarios",
          "datasets", "reports", "serve", "run"]


def module_order(nbs: Path = ROOT / "nbs") -> list[str]:
    "Module names in reading order: the `default_exp` of every stage notebook, folder by folder."
    out = []
    for nb in sorted(nbs.glob("[0-9]*/*.ipynb")):
        for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            s = "".join(c["source"])
            if s.startswith("#| default_exp"): out.append("medwb." + s.split()[-1].removesuffix(".__init__")); break
    return out


def imports(pkg: Path) -> dict[str, set[str]]:
    "Module -> the medwb modules it imports anywhere in its source."
    mods = {}
    for p in pkg.rglob("*.py"):
        if p.name == "_modidx.py": continue
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__": parts = parts[:-1]
        mods[".".join(parts)] = p
    edges = {m: set() for m in mods}
    for m, p in mods.items():
        base_pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import): targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = base_pkg[:len(base_pkg) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{name}.{a.name}" for a in node.names]
                targets = subs if all(t in mods for t in subs) else [name] + subs   # `from pkg import module` imports the module
            else: continue
            for t in targets:
                while t not in mods and "." in t: t = t.rsplit(".", 1)[0]
                if t in mods and t != m and t != "medwb": edges[m].add(t)
    return edges


def violations(pkg: Path, order: list[str]) -> list[str]:
    "Every import that points up a layer, or forward in reading order inside a subpackage."
    rank = {m: i for i, m in enumerate(order)}
    bad = []
    for m, targets in sorted(imports(pkg).items()):
        if m == "medwb": continue
        layer = m.split(".")[1]
        if layer not in LAYERS: bad.append(f"{m}: subpackage {layer!r} is not in LAYERS"); continue
        for t in sorted(targets):
            tl = t.split(".")[1]
            if LAYERS.index(tl) > LAYERS.index(layer): bad.append(f"{m} imports {t}: {tl} is above {layer}")
            elif tl == layer and t != f"medwb.{layer}" and not (m == f"medwb.{layer}"):
                if t not in rank or m not in rank: bad.append(f"{m} imports {t}: not a notebook module"); continue
                if rank[t] >= rank[m]: bad.append(f"{m} imports {t}, which comes later in nbs/")
            elif t == f"medwb.{tl}" and m != t: bad.append(f"{m} imports the package {t}: import its module instead")
    return bad


def test_every_module_has_a_notebook():
    order = module_order()
    mods = {m for m in imports(ROOT / "medwb") if m != "medwb"}
    assert mods == set(order), f"modules without a notebook: {sorted(mods - set(order))}; notebooks without a module: {sorted(set(order) - mods)}"
    assert len(order) == len(set(order)), "two notebooks export the same module"


def test_imports_point_down():
    bad = violations(ROOT / "medwb", module_order())
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_no_import_cycle():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.exists(): pytest.skip("../shared/tools/import_cycles.py is not beside the checkout")
    r = subprocess.run([sys.executable, str(tool), "medwb"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_planted_cycle_fails(tmp_path):
    "data.dataset importing quality.cleaning (which imports data.dataset) must be caught."
    pkg = shutil.copytree(ROOT / "medwb", tmp_path / "medwb")
    assert not violations(pkg, module_order())
    f = pkg / "data" / "dataset.py"
    f.write_text(f.read_text(encoding="utf-8") + "\n\ndef _planted():\n    from medwb.quality.cleaning import clean\n", encoding="utf-8")
    assert any("medwb.data.dataset imports medwb.quality.cleaning" in v for v in violations(pkg, module_order()))
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if tool.exists():
        r = subprocess.run([sys.executable, str(tool), "medwb"], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 1 and "medwb.data.dataset" in r.stdout, r.stdout
    # a forward import inside one subpackage is refused too
    g = pkg / "core" / "settings.py"
    g.write_text(g.read_text(encoding="utf-8") + "\n\ndef _planted():\n    from medwb.core.store import MANIFEST\n", encoding="utf-8")
    assert any("medwb.core.settings imports medwb.core.store, which comes later" in v for v in violations(pkg, module_order()))
