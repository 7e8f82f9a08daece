"""The man page (offsite(8): a root-only tool) and the bash completion, generated from the
CLI's own parser, so neither can list a command or an option the program does not have. `make deb` writes
both into the package (packaging/build-deb)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime

from offsite import __version__, cli


def _roff(text: str) -> str:
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in out.splitlines())


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public way to walk sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings
            and not isinstance(a, argparse._SubParsersAction)]


def _usage(name: str, sub: argparse.ArgumentParser) -> str:
    words = []
    for a in _positionals(sub):
        shown = "|".join(map(str, a.choices)) if a.choices else str(a.metavar or a.dest).upper()
        words.append(f"[{shown}]" if a.nargs in ("?", "*") else str(shown))
    return f"offsite {name} [OPTIONS] {' '.join(words)}".rstrip()


def _build_date() -> date:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else today."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.date()


def man(today: date | None = None) -> str:
    parser = cli.build_parser()
    when = (today or _build_date()).isoformat()
    lines = [
        f'.TH OFFSITE 8 "{when}" "offsite {__version__}" "System Administration"',
        ".SH NAME",
        "offsite \\- off\\-site backups with borg, run by systemd",
        ".SH SYNOPSIS",
        ".B offsite",
        "[\\fB\\-\\-config\\fR \\fIFILE\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff("offsite turns one YAML file (/etc/offsite/offsite.yaml) into systemd units: "
              "nightly borgmatic and weekly borg check from timers, an off-site copy that "
              "starts when an encrypted drive is plugged in, targets such as a RAID over "
              "cloud-sync folders, failure mail with the unit's journal, and an agent that "
              "shows on a BlinkStick LED what is happening."),
        ".SH COMMANDS",
    ]
    for name, sub in _subcommands(parser).items():
        lines += [".TP", f".B {_roff(_usage(name, sub))}", _roff(sub.description or "")]
        for a in _options(sub):
            if a.dest in ("config", "debug", "help"):
                continue
            flags = ", ".join(a.option_strings)
            value = f" {a.metavar or a.dest.upper()}" if a.nargs != 0 else ""
            lines += [".RS", ".TP", f".B {_roff(flags + value)}", _roff(a.help or ""), ".RE"]
    lines += [".SH OPTIONS"]
    for a in _options(parser):
        flags = ", ".join(a.option_strings)
        value = f" {a.metavar or a.dest.upper()}" if a.nargs != 0 else ""
        lines += [".TP", f".B {_roff(flags + value)}", _roff(a.help or "")]
    lines += [
        ".SH FILES",
        ".TP", ".I /etc/offsite/offsite.yaml", "The configuration (see config\\-reference.md).",
        ".TP", ".I /var/lib/offsite", "History, spool, drive records, SSH keys of pull jobs.",
        ".TP", ".I /etc/systemd/system/offsite\\-*", "The units offsite install writes.",
        ".SH EXIT STATUS",
        "0 success; 1 failure (the message says why); 2 bad usage; 10 a job finished with "
        "warnings; 11 a job was skipped (its drive not plugged in).",
        ".SH SEE ALSO",
        ".BR borg (1),", ".BR borgmatic (1),", ".BR systemd.unit (5),",
        ".BR journalctl (1)",
        "",
    ]
    return "\n".join(lines)


def bash_completion() -> str:
    parser = cli.build_parser()
    subs = _subcommands(parser)
    cases = []
    for name, sub in subs.items():
        words = [f for a in _options(sub) for f in a.option_strings]
        for a in _positionals(sub):
            if a.choices:
                words += [str(c) for c in a.choices]
        cases.append(f"        {name}) words=\"{' '.join(words)}\" ;;")
    top = [f for a in _options(parser) for f in a.option_strings]
    return "\n".join([
        "# bash completion for offsite (generated from its parser)",
        "_offsite() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} cmd='' i words",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        case ${COMP_WORDS[i]} in",
        "            -c|--config) ((i++)) ;;",
        "            -*) ;;",
        "            *) cmd=${COMP_WORDS[i]}; break ;;",
        "        esac",
        "    done",
        "    if [[ -z $cmd ]]; then",
        f"        words=\"{' '.join([*top, *subs])}\"",
        "    else",
        "        case $cmd in",
        *cases,
        "        *) words='' ;;",
        "        esac",
        "    fi",
        "    case ${COMP_WORDS[COMP_CWORD-1]} in",
        "        -c|--config|--keyfile|--passphrase-file) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;",
        "    esac",
        "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))",
        "}",
        "complete -F _offsite offsite",
        "",
    ])


if __name__ == "__main__":
    sys.stdout.write(bash_completion() if sys.argv[1:] == ["bash"] else man())
