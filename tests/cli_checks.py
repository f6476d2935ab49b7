"""What the command-line tests share: the flags of a tiny run, and reading the one line a refused command prints."""

SMALL_RUN = ["--z-dim", "2", "--hidden", "16", "--k", "5", "--eval-particles", "2", "--no-progress"]
"""``ppl-vae train`` flags of a run that takes a second or two on the digits."""


def one_line(capsys) -> str:
    """What the command printed on stderr, which must be one line."""
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def one_error_line(capsys) -> str:
    """The one stderr line of a refused command, which must start with ``ppl-vae: error: ``."""
    line = one_line(capsys)
    assert line.startswith("ppl-vae: error: "), line
    return line
