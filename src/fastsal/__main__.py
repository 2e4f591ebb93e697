from fastsal.cli import entry

entry()
