"""What the atomic writers leave behind has the permissions a plain write would give."""

import os
import stat

from llmkit.files import atomic_write_json, atomic_write_text, make_temp_dir


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_files_and_temp_dirs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        umask = 0o022
        import importlib

        import llmkit.files

        importlib.reload(llmkit.files)  # the module reads the umask once, at import
        llmkit.files.atomic_write_text(tmp_path / "a.txt", "你好\n")
        assert _mode(tmp_path / "a.txt") == 0o666 & ~umask
        d = llmkit.files.make_temp_dir(tmp_path, ".x-")
        assert _mode(d) == 0o777 & ~umask
    finally:
        os.umask(old)
        importlib.reload(llmkit.files)


def test_atomic_write_json_keeps_chinese_readable(tmp_path):
    atomic_write_json(tmp_path / "b.json", {"诗": "床前明月光"})
    assert "床前明月光" in (tmp_path / "b.json").read_text(encoding="utf-8")
    atomic_write_text(tmp_path / "b.json", "x")
    assert (tmp_path / "b.json").read_text() == "x" and not list(tmp_path.glob(".b.json.tmp-*"))
    assert make_temp_dir(tmp_path, ".y-").is_dir()
