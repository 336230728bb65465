"""The ``ringvisor`` subcommands, one module per family: running a VM (``run``),
working on saved VMs (``snapshots``), measuring (``measure``), and how they print
a report (``output``).  ``ringvisor.cli`` parses the command line
(``ringvisor.cliargs``) and calls them; they hold no logic of their own beyond
checking their options, as DESIGN.md asks of the command line."""
