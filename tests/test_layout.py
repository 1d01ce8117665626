"""The layering: ``nrc`` is the research library and loads nothing of the companion above it."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("matplotlib", "seaborn", "papermill", "jupyter_book", "myst_nb", "nbformat", "IPython",
             "nrc_companion")


def test_import_nrc_and_every_export_loads_no_plotting_notebook_or_book_module():
    # A fresh interpreter: this test process has long imported the companion.
    code = ("import sys, nrc\n"
            "for name in nrc.__all__: getattr(nrc, name)\n"
            f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_no_library_module_imports_the_companion():
    # The static counterpart: no import of nrc_companion (or plotting) anywhere in nrc/, also
    # inside functions, where the run-time test above would not look.
    offenders = []
    for path in sorted((REPO / "nrc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_design_md_names_every_module_of_both_packages():
    # DESIGN.md describes the layout module by module; a module added or renamed without it fails.
    text = (REPO / "DESIGN.md").read_text()
    missing = []
    for pkg in ("nrc", "nrc_companion"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO / pkg)
            if rel.name == "__init__.py" and rel.parent == Path("."):
                continue
            if len(rel.parts) > 1:  # a subpackage: its folder is named, and each module in its row
                folder, name = rel.parts[0], rel.stem
                if f"`{folder}/`" not in text or (name != "__init__" and f"`{name}`" not in text):
                    missing.append(f"{pkg}/{rel}")
            elif f"`{rel.stem}`" not in text:
                missing.append(f"{pkg}/{rel}")
    assert not missing, f"DESIGN.md does not describe: {missing}"


def test_tests_use_only_public_names_of_both_packages():
    # Tests exercise what users can call: no ``from nrc.x import _y``, no ``nrc.x._y`` and no
    # ``module._y`` on a module imported from either package, so a private rename breaks no test
    # and a behaviour worth testing has a public name.
    offenders = []
    for path in sorted((REPO / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        ours = set()  # local names bound to modules of nrc / nrc_companion
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in (
                    "nrc", "nrc_companion"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        offenders.append(f"{path.name}:{node.lineno} from {node.module} import {a.name}")
                    ours.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in ("nrc", "nrc_companion"):
                        ours.add((a.asname or a.name).split(".")[0])
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, (ast.Name, ast.Attribute))):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in ours:
                    offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not offenders, offenders
