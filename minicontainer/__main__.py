"""`python -m minicontainer` is the same as the `minicontainer` command."""

from minicontainer.cli import main

main()
