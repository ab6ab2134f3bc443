"""workload-tagger: a mutating admission webhook that writes each Pod's workload identity into its annotations."""

__version__ = "0.1.0"
