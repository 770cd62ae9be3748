"""Subcommands of the ``flmr-rag`` command line, one module each (see ``flmr_rag.cli``)."""
