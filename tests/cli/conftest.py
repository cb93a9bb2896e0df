"""Import Lightning when the tests are collected, as the test modules did when ``aras400k.cli.main`` imported it.

``aras400k.cli.main`` no longer imports Lightning (``--help`` and argument errors are
answered without it), so the first in-process ``cli()`` call of a test would import it
while pytest captures stderr, and Lightning's log handler would keep writing to that
captured stream after the test closed it ("I/O operation on closed file" in later
tests). Importing it here binds the handler to the real stderr. Subprocess tests
(``test_startup.py``, ``test_cli_fast.py``) are unaffected.
"""

import lightning.pytorch  # noqa: F401
