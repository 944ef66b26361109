"""The xinrong command speaks to a newcomer: every verb and option has help,
help renders without markup, -v works after the verb, --version answers, and
errors are one line without a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from xinrong.tools.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, path: str = "xinrong") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{path} {name}")


def test_every_verb_and_option_has_help() -> None:
    missing: list[str] = []
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                # Listed sub-commands need help; internal entry points are left out of the listing.
                missing += [f"{path} {a.dest}" for a in action._choices_actions if not a.help]
            elif action.help is None or not str(action.help).strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "no help text: " + ", ".join(missing)


def test_help_renders_without_markup_or_suppressed_entries() -> None:
    for path, parser in _walk(build_parser()):
        text = parser.format_help()
        assert "==SUPPRESS==" not in text, path
        assert "``" not in text, path


def test_version_and_verbose_after_the_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("xinrong ")
    args = build_parser().parse_args(["-v", "node", "audit", "verify", "--config", "x.toml", "-v"])
    assert args.verbose + args.verbose_after == 2


def test_errors_are_one_line(tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "consent.pb"  # type: ignore[operator]
    corrupt.write_bytes(b"\xff\x00 not a consent")
    assert main(["enterprise", "consent", "show", str(corrupt)]) == 1
    err = capsys.readouterr().err
    assert "not a signed consent" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_closed_pipe_is_not_a_traceback() -> None:
    code = "import sys\nfrom xinrong.tools.cli import main\nsys.exit(main(['keys', '--help']))\n"
    proc = subprocess.run(
        f'{sys.executable} -c "{code}" | head -c 1',
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
