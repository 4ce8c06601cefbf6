"""Utilities that are not part of a model: FLOPs counting (:mod:`kseg.utils.flops`) and the
progress display of long phases (:mod:`kseg.utils.progress`)."""

from kseg.utils.flops import FlopsReport, count_flops, count_graph_macs

__all__ = ["FlopsReport", "count_flops", "count_graph_macs"]
