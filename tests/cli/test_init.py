"""`mandate init DIR`: a config, the scope catalog, the agents and a policy (with its tests) to edit, used at once."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.cli.support import mandate


def test_init_writes_files_to_edit_and_a_config_that_points_at_them(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = mandate("init", str(site), data_dir=tmp_path / "unused")

    assert done.returncode == 0, done.stderr
    config = tomllib.loads((site / "mandate.toml").read_text())
    assert config["policy_path"] == str(site / "policy.toml")
    assert config["catalog_path"] == str(site / "catalog.toml")
    assert config["agents_path"] == str(site / "agents.toml")
    assert config["data_dir"] == str(site / "data")
    assert f"export MANDATE_CONFIG={site / 'mandate.toml'}" in done.stdout
    env = {"MANDATE_CONFIG": str(site / "mandate.toml")}
    tested = mandate("policy", "test", str(site / "policy-tests" / "default.toml"), data_dir=site / "data", env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    (site / "policy.toml").write_text((site / "policy.toml").read_text().replace('"100.00"', '"90.00"', 1))
    checked = mandate("policy", "check", data_dir=site / "data", env=env)
    assert checked.returncode == 0 and str(site / "policy.toml") in checked.stdout + checked.stderr


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "policy.toml").write_text("# mine\n")
    done = mandate("init", str(site), data_dir=tmp_path / "unused")

    assert done.returncode == 2
    assert "already has policy.toml" in done.stderr and "--force" in done.stderr
    assert (site / "policy.toml").read_text() == "# mine\n"
    assert not (site / "mandate.toml").exists()
    assert mandate("init", str(site), "--force", data_dir=tmp_path / "unused").returncode == 0
    assert (site / "policy.toml").read_text() != "# mine\n"
