"""``vrpsam app``: a local web page to annotate a reference and segment targets (optional: ``vrpsam[app]``).

Only :mod:`vrpsam.cli.app` imports this package, lazily, so the rest of vrpsam never needs Flask.
"""
