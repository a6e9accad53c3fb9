"""`python -m klaxon` is the same as the `klaxon` command."""

from klaxon.cli import main

raise SystemExit(main())
