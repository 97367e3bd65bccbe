"""The server's modules import only downward (scripts/layers, ARCHITECTURE.md)."""

import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ROOT / "scripts" / "layers"


def run(src):
    return subprocess.run(
        [sys.executable, str(LAYERS), str(src)], capture_output=True, text=True, check=False
    )


def test_the_server_has_no_circle_and_no_upward_import():
    result = run(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "circles: 0" in result.stdout
    assert "imports that run back up: 0" in result.stdout


def write(root, files):
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))


def test_a_circle_and_an_upward_import_are_found(tmp_path):
    write(
        tmp_path,
        {
            "lib.rs": "//! Lib.\npub mod domain;\npub mod store;\npub mod state;\n",
            # store (a lower layer) imports state (a higher one), and back.
            "store/mod.rs": "//! Store.\nuse crate::state::AppState;\n",
            "state.rs": "//! State.\nuse crate::store;\nuse crate::domain::{TenantId, ids::EventId};\n",
            "domain/mod.rs": "//! Domain.\nmod ids;\n",
            # No first line saying what it holds.
            "domain/ids.rs": "use super::TenantId;\n",
        },
    )
    result = run(tmp_path)
    assert result.returncode == 1
    assert "circles: 1" in result.stdout
    assert "circle of 2: state -> store" in result.stdout
    assert "store imports state" in result.stdout
    assert "files without a first //! line: 1" in result.stdout
    assert "domain/ids.rs" in result.stdout


def test_an_extractor_may_read_the_state(tmp_path):
    write(
        tmp_path,
        {
            "lib.rs": "//! Lib.\npub mod auth;\npub mod state;\n",
            "auth/mod.rs": "//! Auth.\nmod extractor;\npub struct Authenticator;\n",
            "auth/extractor.rs": "//! Extractor.\nuse crate::state::AppState;\nuse super::Authenticator;\n",
            "state.rs": "//! State.\nuse crate::auth::Authenticator;\n",
        },
    )
    result = run(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "circles: 0" in result.stdout
