"""`siamdiff doctor`: the default DVC remote check, and exit 1 when any check fails."""

from __future__ import annotations

import pytest

from siamdiff import doctor


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A DVC project folder, isolated from this machine's global/system DVC config."""
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(tmp_path / "global"))
    monkeypatch.setenv("DVC_SYSTEM_CONFIG_DIR", str(tmp_path / "system"))
    root = tmp_path / "proj"
    (root / ".dvc").mkdir(parents=True)
    return root


def _config(root, text):
    (root / ".dvc" / "config").write_text(text)


def test_missing_local_remote_folder_says_what_to_configure(project, tmp_path):
    store = tmp_path / "cache" / "dvc-remote"
    _config(project, f"[core]\n    remote = local\n['remote \"local\"']\n    url = {store}\n")
    with pytest.raises(FileNotFoundError) as e:
        doctor.dvc_remote(project)
    msg = str(e.value)
    assert str(store) in msg and f"mkdir -p {store}" in msg and "dvc remote add -d" in msg
    store.mkdir(parents=True)
    assert "local folder, 0 objects" in doctor.dvc_remote(project)


def test_relative_local_remote_is_read_relative_to_dvc_folder(project):
    _config(project, "[core]\n    remote = here\n['remote \"here\"']\n    url = ../store\n")
    with pytest.raises(FileNotFoundError, match="store"):
        doctor.dvc_remote(project)
    (project / "store" / "files" / "md5" / "ab").mkdir(parents=True)
    (project / "store" / "files" / "md5" / "ab" / "cdef").write_text("x")
    assert "1 objects" in doctor.dvc_remote(project)


def test_no_default_remote_and_undefined_remote(project, tmp_path):
    _config(project, "[core]\n    autostage = true\n")
    with pytest.raises(LookupError, match="no default DVC remote"):
        doctor.dvc_remote(project)
    _config(project, "[core]\n    remote = gone\n")
    with pytest.raises(LookupError, match="'gone'"):
        doctor.dvc_remote(project)
    with pytest.raises(FileNotFoundError, match="no .dvc/"):
        doctor.dvc_remote(tmp_path / "not-a-project")


def test_doctor_exits_nonzero_when_a_check_fails(monkeypatch, capsys):
    def bad():
        raise FileNotFoundError("nothing here")

    monkeypatch.setattr(doctor, "_checks", lambda: [("good", lambda: "fine"), ("bad", bad)])
    with pytest.raises(SystemExit) as e:
        doctor.run_doctor()
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "ok    good: fine" in out and "FAIL  bad: nothing here" in out and "some checks failed" in out
    monkeypatch.setattr(doctor, "_checks", lambda: [("good", lambda: "fine")])
    doctor.run_doctor()  # no exit
    assert "all checks passed" in capsys.readouterr().out
