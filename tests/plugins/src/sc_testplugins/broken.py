"""A plugin whose import fails: the others must keep working."""

raise ImportError("sc_testplugins.broken needs a package that is not installed")
