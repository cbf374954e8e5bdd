"""Helpers shared by the CLI tests."""

from vrpsam.cli.main import main


def error_of(argv, capsys):
    """Run the CLI on ``argv``; assert a user error: exit 2, one ``error:`` line, no traceback. Returns it."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err
