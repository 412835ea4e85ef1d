"""The project's modules import each other without cycles, and install as one top-level package."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycles():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_imports.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""


def test_checker_finds_a_cycle(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_imports
    finally:
        sys.path.pop(0)
    assert check_imports.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert check_imports.cycles({"a": {"b"}, "b": set()}) == []


def test_packages_install_under_edge():
    import edge.apps
    import edge.converters
    import edge.models

    assert Path(edge.converters.__file__).parent == ROOT / "converters"
    assert Path(edge.apps.__file__).parent == ROOT / "apps"
    assert edge.models.default_model() in edge.models.catalog()
    assert "rules" in edge.models.rules()


def test_apps_use_only_the_public_api():
    import ast

    import edge

    public = {"edge", *edge.PUBLIC_MODULES}
    used = set()
    for path in (ROOT / "apps").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("edge"):
                used.add((node.module, path.name))
            elif isinstance(node, ast.Import):
                used |= {(a.name, path.name) for a in node.names if a.name.startswith("edge")}
    private = sorted((m, f) for m, f in used if m not in public and not m.startswith("edge.apps"))
    assert private == []
    assert ("edge.tools", "loop.py") in used  # the check sees the apps' imports
