"""Subcommands of the ``poseviewer`` command line (see ``poseviewer.cli``)."""
