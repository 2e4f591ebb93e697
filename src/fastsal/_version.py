"""fastsal's version, in a module that imports nothing: modules low in the layers (export, the
runtime cache, jobs, the server) read it here, not from the package face, which lazily imports
the modules above them (an import of ``fastsal.__version__`` from ``export`` closed a cycle)."""

__version__ = "0.1.0"
