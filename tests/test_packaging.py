"""The product installs as a wheel: a non-editable install, run from an unrelated directory, is complete
(campaigns, templates, policy, migrations, web assets) and adds one import name to site-packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import httpx
import pytest

from support.builders import ROOT
from support.live import free_port, wait_until

pytestmark = pytest.mark.slow


def _tracked_tree(destination: Path) -> Path:
    """Copy what git tracks (a clean checkout: no .venv, no stale build/ from an earlier wheel)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable). Its dependencies come from this test venv
    through one .pth line, so nothing is downloaded and this venv's editable hook is not active there."""
    base = tmp_path_factory.mktemp("wheel")
    source = _tracked_tree(base / "checkout")
    dist = base / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("patient_drip-*.whl"))
    installing = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                                 "--no-deps", str(wheel)], capture_output=True, text=True)
    if "no such option: --python" in installing.stderr:  # pip < 22.3
        installing = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--prefix",
                                     str(env_dir), str(wheel)], capture_output=True, text=True)
    assert installing.returncode == 0, installing.stderr
    return env_dir


def _site(env_dir: Path) -> Path:
    return next((env_dir / "lib").glob("python3*/site-packages"))


def test_the_wheel_adds_only_patient_drip_to_site_packages(installed: Path) -> None:
    record = next(_site(installed).glob("patient_drip-*.dist-info")) / "RECORD"
    top_level = {line.split(",", 1)[0].split("/", 1)[0] for line in record.read_text().splitlines() if line}
    top_level = {name for name in top_level if not name.startswith("..")}  # ../../bin/drip: the console script
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"patient_drip"}
    shipped = {line.split(",", 1)[0] for line in record.read_text().splitlines()}
    for expected in ("patient_drip/campaigns/ketamine-consult.yaml", "patient_drip/templates/email/_layout.html",
                     "patient_drip/templates/sms/01-welcome.txt", "patient_drip/policy/consent_wording.yaml",
                     "patient_drip/migrations/env.py", "patient_drip/migrations/versions/0001_initial_schema.py",
                     "patient_drip/web/templates/consult.html", "patient_drip/web/static/admin.css",
                     "patient_drip/web/locale/es/LC_MESSAGES/messages.po"):
        assert expected in shipped, f"{expected} is not in the wheel"
    assert not [name for name in shipped if name.startswith(("patient_drip/tests/", "patient_drip/bench/"))]


def _drip(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DRIP_", "PYTHON"))}
    env["DRIP_DATABASE_URL"] = f"sqlite:///{cwd / 'drip.db'}"
    return subprocess.run([str(installed / "bin" / "drip"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_installed_product_works_from_an_unrelated_directory(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import patient_drip; print(patient_drip.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert str(_site(installed)) in where, f"imported from {where}, not from the installed wheel"
    init = _drip(installed, tmp_path, "init", "--admin-email", "admin@example.com", "--admin-password",
                 "correct horse battery staple")
    assert init.returncode == 0, init.stderr + init.stdout
    simulated = _drip(installed, tmp_path, "simulate", "ketamine-consult", "--format", "json")
    assert simulated.returncode == 0, simulated.stderr
    messages = json.loads(simulated.stdout)
    assert [m["channel"] for m in messages].count("email") >= 5 and all(m["text"] for m in messages)
    checked = _drip(installed, tmp_path, "templates", "check")
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert (tmp_path / "drip.db").exists()


@pytest.mark.parametrize(("command", "path", "expect"), [
    (["serve", "--no-scheduler"], "/static/admin.css", "{"),
    (["serve", "--no-scheduler"], "/consult", "<form"),
    (["sandbox"], "/_sandbox/stats", "{"),
])
def test_the_installed_servers_answer(installed: Path, tmp_path: Path, command: list[str], path: str,
                                      expect: str) -> None:
    if command[0] == "serve":
        assert _drip(installed, tmp_path, "init").returncode == 0
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DRIP_", "PYTHON"))}
    env["DRIP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'drip.db'}"
    server = subprocess.Popen([str(installed / "bin" / "drip"), *command, "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        answer: dict[str, str | None] = {}

        def answered() -> bool:
            answer["body"] = _get(f"http://127.0.0.1:{port}{path}")
            return answer["body"] is not None or server.poll() is not None

        wait_until(answered, timeout=30)
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        assert expect in (answer["body"] or "")
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None
    return response.text if response.status_code == 200 else None
