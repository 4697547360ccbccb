"""Terminal report: text from plugins is escaped, Rich's own styling is not."""

from __future__ import annotations

import io

from rich.text import Text

from gradcheck_cli.report.terminal import SafeConsole, clean


def test_clean_escapes_c0_del_and_c1_but_keeps_newlines_and_unicode() -> None:
    assert clean("a\x1b[2Jb\nc\x00\x07\t\r\x7f\x9b\x80 σ✓") == "a\\x1b[2Jb\nc\\x00\\x07\\x09\\x0d\\x7f\\x9b\\x80 σ✓"


def test_safe_console_escapes_strings_and_keeps_its_own_colours() -> None:
    buffer = io.StringIO()
    out = SafeConsole(file=buffer, force_terminal=True, color_system="standard", width=80, markup=False,
                      highlight=False)
    out.print("name \x1b[2J", style="red")
    out.print(Text("FAIL", style="bold red"))
    written = buffer.getvalue()
    assert "name \\x1b[2J" in written and "\x1b[2J" not in written
    assert "\x1b[31m" in written and "\x1b[1;31mFAIL" in written  # Rich's styling still reaches a terminal
