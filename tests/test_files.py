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


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from llmkit.devices import cpu_has_native_bf16

    (tmp_path / "amd").write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    (tmp_path / "old").write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    (tmp_path / "none").write_text("processor\t: 0\n")
    assert cpu_has_native_bf16(tmp_path / "amd") and cpu_has_native_bf16(tmp_path / "arm")
    assert cpu_has_native_bf16(tmp_path / "old") is False
    assert cpu_has_native_bf16(tmp_path / "none") is None and cpu_has_native_bf16(tmp_path / "missing") is None
